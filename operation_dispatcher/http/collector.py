"""DispatcherCollector: one app's metrics, read at each scrape (see :mod:`.metrics`).

This module imports prometheus_client at the top: only :func:`.metrics.install_metrics` imports
it, once it knows the library is installed. The core never imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..models import utcnow
from ..reasons import blocked_counts
from ..timings import HistogramSnapshot
from .metrics import EventCounts, request_kind
from .schemas import BridgeCounters

if TYPE_CHECKING:
    from .state import ApiState

log = logging.getLogger(__name__)

#: ``blocked_operations`` looks at the first this many queued operations (one ``explain()`` each):
#: a scrape of a 100,000-operation queue must not hold up the dispatcher.
MAX_EXPLAINED = 1000
#: The bridge counters reported (``firmware_bridges.base.BaseBridge.counters``); others ignored.
BRIDGE_COUNTERS = tuple(BridgeCounters.model_fields)  # the counters every bridge reports
_PREFIX = "operation_dispatcher_"


class DispatcherCollector(Collector):
    """A prometheus_client collector reading one app's state at each scrape."""

    def __init__(self, state: ApiState, counts: EventCounts) -> None:
        self._state = state
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        yield from self._dispatcher_metrics()
        yield from self._event_metrics()
        yield from self._blocked_metrics()
        yield from self._request_metrics()
        yield from self._bridge_metrics()
        yield from self._journal_metrics()

        yield GaugeMetricFamily(
            _PREFIX + "event_stream_clients", "Open GET /events/stream clients of this app",
            value=self._state.streams.client_count,
        )

    def _dispatcher_metrics(self) -> Iterator[Metric]:

        state = self._state.dispatcher.get_state()
        yield GaugeMetricFamily(_PREFIX + "running", "1 while the dispatcher loop runs",
                                value=int(state.is_running))
        yield GaugeMetricFamily(_PREFIX + "paused", "1 while the dispatcher is paused",
                                value=int(state.is_paused))
        yield GaugeMetricFamily(_PREFIX + "queue_length", "Queued operations (not the current)",
                                value=state.queue_size)
        current = GaugeMetricFamily(
            _PREFIX + "current_operation_duration_seconds",
            "Seconds since the current (RUNNING or PAUSED) operation started; no sample if none",
            labels=["state"],
        )
        op = state.current_operation
        if op is not None and op.start_time is not None:
            seconds = max(0.0, (utcnow() - op.start_time).total_seconds())
            current.add_metric([op.state.value], seconds)
        yield current

    def _event_metrics(self) -> Iterator[Metric]:

        started, finished, waits = self._counts.snapshot()
        yield CounterMetricFamily(_PREFIX + "operations_started",
                                  "Operations started since the app was created", value=started)
        done = CounterMetricFamily(
            _PREFIX + "operations_finished",
            "Operations finished since the app was created, by outcome and termination reason",
            labels=["outcome", "termination_reason"],
        )
        for (outcome, reason), count in sorted(finished.items()):
            done.add_metric([outcome, reason], count)
        yield done
        wait = HistogramMetricFamily(
            _PREFIX + "approval_wait_seconds",
            "From a request (start, cancel, pause, resume) to its answer or expiry",
            labels=["kind"],
        )
        for kind, snap in sorted(waits.items()):
            wait.add_metric([kind], _buckets(snap), snap.total_seconds)
        yield wait

    def _blocked_metrics(self) -> Iterator[Metric]:
        by_kind, examined = blocked_counts(self._state.dispatcher, MAX_EXPLAINED)
        blocked = GaugeMetricFamily(
            _PREFIX + "blocked_operations",
            f"Queued operations waiting, by blocker kind (explain); only the first "
            f"{MAX_EXPLAINED} in dispatch order are examined",
            labels=["blocker"],
        )
        for kind, count in sorted(by_kind.items()):
            blocked.add_metric([kind], count)
        yield blocked
        yield GaugeMetricFamily(
            _PREFIX + "blocked_operations_examined",
            "Queued operations explain() was asked about for blocked_operations",
            value=examined,
        )

    def _request_metrics(self) -> Iterator[Metric]:

        pending = self._state.dispatcher.pending_requests()
        count = GaugeMetricFamily(_PREFIX + "pending_requests",
                                  "Approval requests waiting for an answer", labels=["kind"])
        oldest = GaugeMetricFamily(
            _PREFIX + "pending_request_oldest_seconds",
            "How long the oldest open request of each kind has waited", labels=["kind"],
        )
        now = utcnow()
        by_kind: dict[str, tuple[int, float]] = {}
        for request in pending:
            kind = request_kind(request.event_type)
            waited = max(0.0, (now - request.created_at).total_seconds())
            n, longest = by_kind.get(kind, (0, 0.0))
            by_kind[kind] = (n + 1, max(longest, waited))
        for kind, (n, longest) in sorted(by_kind.items()):
            count.add_metric([kind], n)
            oldest.add_metric([kind], longest)
        yield count
        yield oldest

    def _bridge_metrics(self) -> Iterator[Metric]:

        online = GaugeMetricFamily(_PREFIX + "bridge_online",
                                   "1 while the bridge's device is connected and answering",
                                   labels=["bridge", "kind"])
        running = GaugeMetricFamily(_PREFIX + "bridge_running",
                                    "1 while the bridge thread is alive", labels=["bridge", "kind"])
        counters = {
            name: CounterMetricFamily(_PREFIX + f"bridge_{name}",
                                      f"The bridge's {name} counter", labels=["bridge"])
            for name in BRIDGE_COUNTERS
        }
        for name, bridge in self._state.bridges.items():
            status = _bridge_status(name, bridge)
            labels = [name, str(status.get("kind", ""))]
            online.add_metric(labels, int(status.get("online") is True))
            running.add_metric(labels, int(status.get("running") is True))
            values = status.get("counters")
            for counter, family in counters.items():
                value = values.get(counter) if isinstance(values, dict) else None
                if type(value) is int:
                    family.add_metric([name], value)
        yield online
        yield running
        yield from counters.values()

    def _journal_metrics(self) -> Iterator[Metric]:

        journal = self._state.dispatcher.journal
        if journal is None:
            return  # in memory only: nothing is written
        snap = journal.write_times.snapshot()
        family = HistogramMetricFamily(
            _PREFIX + "journal_write_seconds",
            "Time of each committed journal write (one unit of work, one SQLite transaction)",
        )
        family.add_metric([], _buckets(snap), snap.total_seconds)
        yield family


def _bridge_status(name: str, bridge: Any) -> dict[str, Any]:
    """A bridge's status(); a bridge whose status() fails is reported offline (fail safe)."""
    try:
        status = bridge.status()
    except Exception:
        log.exception("bridge %s: status() failed; reported offline in /metrics", name)
        return {}
    return status if isinstance(status, dict) else {}


def _buckets(snap: HistogramSnapshot) -> list[tuple[str, float]]:
    """Prometheus's cumulative buckets (``le`` bounds, then ``+Inf``) from per-bucket counts."""
    out: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip((*snap.bounds, float("inf")), snap.counts, strict=True):
        total += count
        out.append(("+Inf" if bound == float("inf") else repr(bound), total))
    return out


def new_registry(state: ApiState, counts: EventCounts) -> CollectorRegistry:
    """A registry of its own for one app (never the global one: apps must not mix)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DispatcherCollector(state, counts))
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in the Prometheus text format, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


__all__ = ["BRIDGE_COUNTERS", "MAX_EXPLAINED", "DispatcherCollector", "new_registry", "render"]

"""``GET /metrics``: the app's dispatcher, bridges and streams in the Prometheus text format.

Needs the ``metrics`` extra (``prometheus-client``); nothing else imports this library, and
without it ``create_app`` still works and ``/metrics`` answers 501 saying what to install.

Each app gets its own :class:`~prometheus_client.CollectorRegistry` holding one
:class:`~.collector.DispatcherCollector` (never the library's global registry: two apps in one process must
not mix). Almost everything is read at scrape time from public APIs: ``get_state()``,
``get_schedule()`` and ``explain()``, ``pending_requests()``, each bridge's ``status()``, the
journal's write times. What the dispatcher only reports as events (finished operations by outcome
and reason, approval wait times) is counted by :class:`EventCounts`, fed by one dispatcher
subscription per app made when the app is created: its counters start at zero then.

The subscription holds the counts only through a weak reference: once the app is gone, the
handler unsubscribes itself at the next event, so discarded apps cannot pile up subscribers.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from flask import Flask, Response, current_app
from flask_openapi3 import APIBlueprint, Tag

from ..models import FINISHED_OUTCOMES, DispatchEvent, EventType, finished_outcome, utcnow
from ..timings import DurationHistogram, HistogramSnapshot
from .errors import ApiError
from .schemas import ErrorResponse
from .state import ApiState, api_blueprint, api_state

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from ..dispatcher import OperationDispatcher

log = logging.getLogger(__name__)
TAG = Tag(name="Metrics", description="Prometheus metrics (extra 'metrics')")

#: The key of an app's :class:`AppMetrics` in ``app.extensions`` (absent: no prometheus_client).
METRICS_KEY = "operation_dispatcher.metrics"
#: Upper bounds (seconds) of the approval wait histogram: an automatic answer takes
#: milliseconds, an operator's seconds to hours.
APPROVAL_WAIT_BUCKETS = (0.01, 0.1, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
_STARTED = EventType.OPERATION_STARTED.value
#: the finishing event types' plain values (compared without enum hashing)
_FINISHED_VALUES = frozenset(kind.value for kind in FINISHED_OUTCOMES)
_REQUEST_VALUES = frozenset(kind.value for kind in EventType if kind.is_request)
_INSTALL = "pip install 'operation-dispatcher[metrics]'"


class EventCounts:
    """What only events tell: finished operations by outcome and reason, approval waits.

    Updated on the dispatcher's event thread, read by scrapes: one small lock. Memory is bounded
    by the label values (outcomes x reasons, four request kinds), not by the number of events.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._finished: dict[tuple[str, str], int] = {}
        self._started = 0
        self._waits: dict[str, DurationHistogram] = {}

    def on_event(self, event: DispatchEvent) -> None:
        """On the event thread, for every event: plain string compares, no enum hashing."""
        value = event.event_type._value_
        if value == _STARTED:
            with self._lock:
                self._started += 1
        elif value in _FINISHED_VALUES:
            key = finished_outcome(event)
            with self._lock:
                self._finished[key] = self._finished.get(key, 0) + 1
        elif value in _REQUEST_VALUES:
            self._record_wait(event)

    def _record_wait(self, event: DispatchEvent) -> None:
        """A *_REQUESTED event is published once its request is answered (or expired): the
        wait is from its creation to now (plus the event thread's delay, milliseconds)."""
        kind = request_kind(event.event_type)
        seconds = (utcnow() - event.created_at).total_seconds()
        with self._lock:
            histogram = self._waits.get(kind)
            if histogram is None:
                histogram = self._waits[kind] = DurationHistogram(APPROVAL_WAIT_BUCKETS)
        histogram.observe(seconds)

    def snapshot(self) -> tuple[int, dict[tuple[str, str], int], dict[str, HistogramSnapshot]]:
        with self._lock:
            started, finished, waits = self._started, dict(self._finished), dict(self._waits)
        return started, finished, {kind: h.snapshot() for kind, h in waits.items()}


def request_kind(event_type: EventType) -> str:
    """``operation_start_requested`` -> ``start``."""
    return event_type.value.removeprefix("operation_").removesuffix("_requested")


def _subscribe(dispatcher: OperationDispatcher, counts: EventCounts) -> Callable[[], None]:
    """Feed ``counts`` from the dispatcher's events, holding it weakly (see the module doc)."""
    ref = weakref.ref(counts)
    unsubscribe: list[Callable[[], None]] = []

    def handler(event: DispatchEvent) -> None:
        target = ref()
        if target is not None:
            target.on_event(event)
        elif unsubscribe:
            unsubscribe.pop()()  # the app is gone: stop listening (event thread, no lock held)

    unsubscribe.append(dispatcher.subscribe(handler, include_requests=True))
    return lambda: unsubscribe.pop()() if unsubscribe else None


class AppMetrics:
    """One app's registry (with its collector) and event subscription."""

    def __init__(self, state: ApiState) -> None:
        from .collector import new_registry

        self.counts = EventCounts()
        self.registry: CollectorRegistry = new_registry(state, self.counts)
        #: ends the subscription now (else it ends itself once this object is gone)
        self.close = _subscribe(state.dispatcher, self.counts)

    def render(self) -> tuple[bytes, str]:
        from .collector import render

        return render(self.registry)


def install_metrics(app: Flask, state: ApiState) -> None:
    """Give ``app`` its metrics, unless prometheus_client is not installed (then /metrics
    answers 501)."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return
    app.extensions[METRICS_KEY] = AppMetrics(state)


#: ``GET /metrics``, shared by every app; the view reads its app's registry.
metrics_blueprint: APIBlueprint = api_blueprint("metrics", __name__, TAG)


@metrics_blueprint.get(
    "/metrics", operation_id="get_metrics",
    summary="Prometheus metrics (text format; needs the 'metrics' extra)",
    responses={
        200: {
            "description": "the Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        501: ErrorResponse,
    },
)
def get_metrics() -> Response:
    api_state()  # the same app state every route reads (and a clear error if it is missing)
    metrics: AppMetrics | None = current_app.extensions.get(METRICS_KEY)
    if metrics is None:
        raise ApiError(
            501, "metrics_unavailable",
            f"GET /metrics needs the prometheus-client library (the 'metrics' extra): {_INSTALL}",
        )
    body, content_type = metrics.render()
    return Response(body, status=200, content_type=content_type)


__all__ = [
    "APPROVAL_WAIT_BUCKETS",
    "METRICS_KEY",
    "AppMetrics",
    "EventCounts",
    "install_metrics",
    "request_kind",
    "metrics_blueprint",
]

"""``GET /metrics``: scraped through the app and parsed by prometheus_client's own text parser,
with real dispatchers, a real journal file, a real serial bridge and a real event stream."""

from __future__ import annotations

import gc
import sys
import uuid
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_error, wait_until
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from firmware_bridges.serial_line import SerialLineBridge
from firmware_bridges.simulators.serial_device import SerialDeviceSimulator
from operation_dispatcher import (
    PENDING,
    DispatchEvent,
    EventType,
    Operation,
    OperationDispatcher,
    TerminationReason,
)
from operation_dispatcher.http import ApiServer, collector, create_app
from operation_dispatcher.http.metrics import METRICS_KEY

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
P = "operation_dispatcher_"


def scrape(api: Any, **headers: str) -> tuple[Samples, dict[str, str]]:
    """GET /metrics parsed: every sample by (name, labels), and every family's type."""
    response = api.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(response.text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((P + name, frozenset(labels.items())))


def settled(api: Any) -> Samples:
    """A scrape after every event so far has reached the app's counters."""
    assert api.dispatcher.drain_events(5.0)
    return scrape(api)[0]


def test_operations_by_outcome_queue_blockers_and_running_duration(
    make_client: Callable[..., Any],
) -> None:
    api = make_client()
    samples, types = scrape(api)
    assert value(samples, "queue_length") == 0
    assert value(samples, "running") == 1 and value(samples, "paused") == 0
    assert types[P + "operations_finished"] == "counter"
    assert types[P + "approval_wait_seconds"] == "histogram"
    assert types[P + "blocked_operations"] == "gauge"
    assert P + "journal_write_seconds" not in types  # no journal: nothing is written

    first = api.add({"payload": {"n": 1}, "priority": 9})[0]
    provider = api.add({"payload": {"n": 2}, "release_conditions": {"door.closed": True}})[0]
    api.add({"payload": {"n": 3}, "dependencies": [
        {"depends_on_operation_id": provider["id"], "dependency_type": "FINISH_TO_START"}]})
    samples = settled(api)
    assert value(samples, "queue_length") == 2
    assert value(samples, "operations_started_total") == 1
    running = value(samples, "current_operation_duration_seconds", state="RUNNING")
    assert running is not None and running >= 0
    assert value(samples, "blocked_operations", blocker="resource_busy") == 2
    assert value(samples, "blocked_operations", blocker="release_condition") == 1
    assert value(samples, "blocked_operations", blocker="dependency") == 1
    assert value(samples, "blocked_operations_examined") == 2

    dispatcher = api.dispatcher
    dispatcher.complete_operation(first["id"])
    wait_until(lambda: dispatcher.current_operation is None, what="the queue to block")
    assert api.put("/signals/door.closed", json={"value": True}).status_code == 200
    wait_until(lambda: dispatcher.current_operation is not None, what="the provider to start")
    dispatcher.fail_operation(provider["id"], termination_reason=TerminationReason.TIMEOUT)
    # the dependent fails with its provider (DEPENDENCY_FAILED)
    wait_until(lambda: not dispatcher.get_schedule(), what="the dependent to fail")
    cancelled = api.add({"payload": {"n": 4}, "release_conditions": {"never": True}})[0]
    assert api.post(f"/operations/{cancelled['id']}/cancel",
                    json={"termination_reason": "USER_REQUEST"}).status_code == 200

    samples = settled(api)
    finished = {
        (dict(labels)["outcome"], dict(labels)["termination_reason"]): count
        for (name, labels), count in samples.items() if name == P + "operations_finished_total"
    }
    assert finished == {
        ("SUCCESS", "NONE"): 1,
        ("FAILURE", "TIMEOUT"): 1,
        ("FAILURE", "DEPENDENCY_FAILED"): 1,
        ("CANCELLED", "USER_REQUEST"): 1,
    }
    assert value(samples, "queue_length") == 0
    assert value(samples, "current_operation_duration_seconds", state="RUNNING") is None
    assert not [key for key in samples if key[0] == P + "blocked_operations"]


def test_pending_request_and_approval_wait(
    make_client: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    def on_request(event: DispatchEvent) -> Any:
        return PENDING if event.event_type is EventType.OPERATION_START_REQUESTED else True

    api = make_client(make_dispatcher(on_request_callback=on_request))
    api.add({"payload": {}})
    dispatcher = api.dispatcher
    wait_until(dispatcher.pending_requests, what="the start request")
    samples = settled(api)
    assert value(samples, "pending_requests", kind="start") == 1
    waited = value(samples, "pending_request_oldest_seconds", kind="start")
    assert waited is not None and waited >= 0
    assert value(samples, "approval_wait_seconds_count", kind="start") is None  # not answered

    request_id = dispatcher.pending_requests()[0].request_id
    assert api.post(f"/requests/{request_id}/approve").status_code == 200
    wait_until(lambda: dispatcher.current_operation is not None, what="the start")
    samples = settled(api)
    assert value(samples, "pending_requests", kind="start") is None
    assert value(samples, "approval_wait_seconds_count", kind="start") == 1
    total = value(samples, "approval_wait_seconds_sum", kind="start")
    assert total is not None and total >= waited  # it waited at least as long as seen pending
    assert value(samples, "approval_wait_seconds_bucket", kind="start", le="+Inf") == 1


@pytest.fixture
def device() -> Iterator[SerialDeviceSimulator]:
    simulator = SerialDeviceSimulator(run_seconds=None, signals={"ready": True}, repeat_seconds=0.05)
    simulator.listen_tcp("127.0.0.1")
    simulator.start()
    yield simulator
    simulator.stop()


def test_bridge_status(
    make_client: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher],
    device: SerialDeviceSimulator,
) -> None:
    dispatcher = make_dispatcher()
    bridge = SerialLineBridge(dispatcher, "mcu", device.url, reconnect_initial=0.02,
                              reconnect_max=0.1)
    api = make_client(dispatcher, bridges=[bridge])
    samples = scrape(api)[0]
    assert value(samples, "bridge_online", bridge="mcu", kind="serial") == 0
    assert value(samples, "bridge_running", bridge="mcu", kind="serial") == 0
    bridge.start()
    try:
        def reading() -> Samples | None:
            found = scrape(api)[0]
            reads = value(found, "bridge_reads_total", bridge="mcu")
            return found if reads and value(found, "bridge_online", bridge="mcu",
                                            kind="serial") == 1 else None

        samples = wait_until(reading, what="the bridge online and reading")
        assert value(samples, "bridge_running", bridge="mcu", kind="serial") == 1
        counters = bridge.status()["counters"]
        assert value(samples, "bridge_errors_total", bridge="mcu") == counters["errors"]
        assert value(samples, "bridge_reconnects_total", bridge="mcu") is not None
    finally:
        bridge.stop()


def test_journal_write_time(make_client: Callable[..., Any], make_dispatcher: Callable[..., Any],
                            tmp_path: Path) -> None:
    api = make_client(make_dispatcher(journal=tmp_path / "journal.db"))
    before = value(settled(api), "journal_write_seconds_count")
    assert before is not None
    api.add({"payload": {}}, {"payload": {}})
    samples = settled(api)
    count = value(samples, "journal_write_seconds_count")
    assert count is not None and count > before
    assert value(samples, "journal_write_seconds_bucket", le="+Inf") == count
    total = value(samples, "journal_write_seconds_sum")
    assert total is not None and total > 0


def test_event_stream_clients(make_api: Callable[..., Any]) -> None:
    api = make_api(heartbeat_seconds=0.05)
    assert value(scrape(api)[0], "event_stream_clients") == 0
    stream = api.get("/events/stream", stream=True)
    try:
        assert stream.status_code == 200
        assert value(scrape(api)[0], "event_stream_clients") == 1
    finally:
        stream.close()
    wait_until(lambda: value(scrape(api)[0], "event_stream_clients") == 0,
               what="the stream client to leave")


def test_under_the_token_like_every_route_but_health(make_client: Callable[..., Any]) -> None:
    api = make_client(token="s3cret")
    assert_error(api.get("/metrics"), 401, "unauthorized")
    assert api.get("/health").status_code == 200
    samples = scrape(api, Authorization="Bearer s3cret")[0]
    assert value(samples, "queue_length") == 0
    spec = api.get("/openapi.json", headers={"Authorization": "Bearer s3cret"}).json()
    assert spec["paths"]["/metrics"]["get"]["security"] == [{"bearerAuth": []}]


def test_blocked_operations_examines_only_the_first_ones(
    make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(collector, "MAX_EXPLAINED", 3)
    api = make_client(start=False)
    api.add(*[{"payload": {"n": n}} for n in range(5)])
    samples = scrape(api)[0]
    assert value(samples, "queue_length") == 5
    assert value(samples, "blocked_operations_examined") == 3
    assert value(samples, "blocked_operations", blocker="dispatcher_not_running") == 3


def test_two_apps_in_one_process_do_not_mix(
    make_client: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    busy, idle = make_client(), make_client()
    same_dispatcher = make_client(busy.dispatcher)
    op = busy.add({"payload": {}})[0]
    busy.dispatcher.complete_operation(op["id"])
    assert value(settled(busy), "operations_finished_total", outcome="SUCCESS",
                 termination_reason="NONE") == 1
    assert value(settled(same_dispatcher), "operations_finished_total", outcome="SUCCESS",
                 termination_reason="NONE") == 1
    assert not [k for k in settled(idle) if k[0] == P + "operations_finished_total"]
    assert busy.app.extensions[METRICS_KEY].registry is not idle.app.extensions[
        METRICS_KEY].registry
    assert REGISTRY.get_sample_value(P + "queue_length") is None  # not the global registry


def test_a_discarded_app_leaves_no_subscription(make_dispatcher: Callable[..., Any]) -> None:
    dispatcher = make_dispatcher()
    dispatcher.start()
    subscribers = len(dispatcher._bus._subscribers)
    app = create_app(dispatcher)
    counts = weakref.ref(app.extensions[METRICS_KEY].counts)
    assert len(dispatcher._bus._subscribers) == subscribers + 1
    del app
    gc.collect()
    assert counts() is None  # the subscription does not keep the app's counters alive
    dispatcher.add_operation(Operation(resource_id=dispatcher.resource_id))
    assert dispatcher.drain_events(5.0)
    assert len(dispatcher._bus._subscribers) == subscribers  # removed itself at that event

    closed = create_app(dispatcher)
    closed.extensions[METRICS_KEY].close()
    closed.extensions[METRICS_KEY].close()  # twice is fine
    assert len(dispatcher._bus._subscribers) == subscribers


def test_stopping_the_server_ends_the_metrics_subscription(
    make_dispatcher: Callable[..., Any],
) -> None:
    """The dispatcher may outlive its server: the stopped app's counters must not go on
    hearing every event (nor wait for the app's garbage collection)."""
    dispatcher = make_dispatcher()
    dispatcher.start()
    subscribers = len(dispatcher._bus._subscribers)
    app = create_app(dispatcher)
    server = ApiServer(app, port=0)
    server.start()
    assert len(dispatcher._bus._subscribers) == subscribers + 1
    server.stop()
    assert len(dispatcher._bus._subscribers) == subscribers  # app is still referenced here


def test_without_prometheus_client_the_app_works_and_metrics_says_why(
    make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    api = make_client()
    body = assert_error(api.get("/metrics"), 501, "metrics_unavailable")
    assert "pip install 'operation-dispatcher[metrics]'" in body["message"]
    assert api.add({"payload": {}})[0]["id"]
    assert METRICS_KEY not in api.app.extensions  # and no subscription was made
    assert uuid.UUID(api.get("/operations").json()[0]["operation"]["id"])


class BrokenBridge:
    """A plug-in bridge whose status() raises: /metrics must still answer, and say offline."""

    name = "broken"

    def status(self) -> dict[str, Any]:
        raise RuntimeError("device driver crashed")


def test_a_bridge_whose_status_fails_is_reported_offline(
    make_client: Callable[..., Any], caplog: pytest.LogCaptureFixture,
) -> None:
    api = make_client(bridges=[BrokenBridge()])
    samples = scrape(api)[0]
    assert value(samples, "bridge_online", bridge="broken", kind="") == 0
    assert value(samples, "bridge_reads_total", bridge="broken") is None
    assert "bridge broken: status() failed" in caplog.text

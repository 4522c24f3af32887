"""Progress of the running operation (issue 12, item 3): Python, REST, events, journal.

``report_progress`` stores the latest report on the operation and emits OPERATION_PROGRESS
events at most once per PROGRESS_EVENT_INTERVAL per operation; a held value is emitted when the
interval ends, before the operation's end and when the dispatcher stops, and it is journaled.
Bridges (serial PROG lines, the Modbus progress register) are in test_progress_bridges.py.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from conftest import RESOURCE, EventRecorder, assert_error, op, wait_until
from test_http_api import open_stream

from operation_dispatcher import (
    EventType,
    ExecutionState,
    Operation,
    OperationDispatcher,
    OperationProgress,
    TerminationReason,
)
from operation_dispatcher._checks import MAX_PROGRESS_MESSAGE
from operation_dispatcher.errors import OperationNotCurrent, OperationNotFound, ValidationError
from operation_dispatcher.progress import PROGRESS_EVENT_INTERVAL, ProgressThrottle

PROGRESS = EventType.OPERATION_PROGRESS


def running(make_dispatcher: Callable[..., OperationDispatcher], **kwargs: Any) -> tuple[
    OperationDispatcher, EventRecorder, Operation
]:
    """A started dispatcher, its recorder, and an operation it is running."""
    dispatcher = make_dispatcher(**kwargs)
    recorder = EventRecorder(dispatcher)
    dispatcher.start()
    added = dispatcher.add_operation(op(payload={"task": "weld"}, planned_duration=60))
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=added.id)
    return dispatcher, recorder, added


# ------------------------------------------------------------------------------ the throttle


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_emits_one_report_per_interval_and_holds_the_rest() -> None:
    clock = FakeClock()
    throttle = ProgressThrottle(0.5, clock)
    a, b = uuid4(), uuid4()
    assert throttle.offer(a) is None  # the first report goes out at once
    assert throttle.offer(b) is None  # per operation: b is not limited by a
    clock.now += 0.1
    assert throttle.offer(a) == pytest.approx(1000.5)  # held until the interval ends
    assert throttle.offer(a) == pytest.approx(1000.5)  # still one held value, not two
    assert throttle._held == {a}
    clock.now = 1000.5
    assert throttle.take_held(a) is True  # emitted by the deadline
    assert throttle.take_held(a) is False  # once only
    clock.now += 0.2
    assert throttle.offer(a) == pytest.approx(1001.0)  # the interval counts from that emission
    clock.now = 1001.0
    assert throttle.offer(a) is None  # a report at the end of the interval goes out itself
    assert not throttle._held
    throttle.forget(a)
    throttle.forget(b)
    assert throttle.offer(a) is None  # forgotten: like new
    assert PROGRESS_EVENT_INTERVAL == 0.5


def test_the_throttle_keeps_state_only_for_what_it_was_told() -> None:
    clock = FakeClock()
    throttle = ProgressThrottle(0.5, clock)
    for _ in range(10_000):
        clock.now += 0.001
        throttle.offer(uuid4())
        throttle.forget(next(iter(throttle._last)))
    assert len(throttle._last) == 0 and not throttle._held


# ------------------------------------------------------------------------------ Python API


def test_a_report_is_on_the_operation_and_in_an_event(make_dispatcher) -> None:
    dispatcher, recorder, added = running(make_dispatcher)
    snapshot = dispatcher.report_progress(added.id, 0.25, "heating up")
    assert snapshot.progress.fraction == 0.25 and snapshot.progress.message == "heating up"
    event = recorder.wait_for(PROGRESS, operation_id=added.id)[0]
    assert event.meta_data == {"fraction": 0.25, "message": "heating up"}
    data = dispatcher.get_operation(added.id).to_dict()["progress"]
    assert data["fraction"] == 0.25 and data["message"] == "heating up"
    assert data["updated_at"].endswith("Z")
    assert dispatcher.current_operation.progress == snapshot.progress
    # a snapshot is a copy: the caller cannot change the stored progress through it
    with pytest.raises(AttributeError):
        snapshot.progress.fraction = 0.9  # type: ignore[misc]


def test_each_report_replaces_the_last_and_an_integer_fraction_is_taken(make_dispatcher) -> None:
    dispatcher, recorder, added = running(make_dispatcher)
    dispatcher.report_progress(added.id, 1)
    assert dispatcher.get_operation(added.id).progress.fraction == 1.0
    dispatcher.report_progress(str(added.id), message="waiting for the clamp")
    progress = dispatcher.get_operation(added.id).progress
    assert progress.fraction is None and progress.message == "waiting for the clamp"


def test_a_flood_of_reports_is_rate_limited_and_the_last_value_is_not_lost(make_dispatcher) -> None:
    dispatcher, recorder, added = running(make_dispatcher)
    began = time.monotonic()
    for step in range(2001):
        dispatcher.report_progress(added.id, step / 2000, f"step {step}")
    elapsed = time.monotonic() - began
    assert dispatcher.get_operation(added.id).progress.message == "step 2000"  # always the latest
    dispatcher.complete_operation(added.id)
    recorder.wait_for(EventType.OPERATION_COMPLETED, operation_id=added.id)
    events = recorder.matching(PROGRESS, added.id)
    # one at once, one per interval of the flood, and the held one before the end
    assert 2 <= len(events) <= 2 + math.ceil(elapsed / PROGRESS_EVENT_INTERVAL), (len(events), elapsed)
    assert events[0].meta_data == {"fraction": 0.0, "message": "step 0"}
    assert events[-1].meta_data == {"fraction": 1.0, "message": "step 2000"}
    types = recorder.types(added.id)
    assert types.index(EventType.OPERATION_COMPLETED) > types.index(PROGRESS)
    assert types[-1] is EventType.OPERATION_COMPLETED
    assert dispatcher.get_operation(added.id).progress.fraction == 1.0  # kept after the end


def test_reports_within_the_interval_are_held_on_an_injected_clock(make_dispatcher) -> None:
    """Deterministic, whatever the machine's speed: the throttle's clock is the test's.

    The clock stands an hour ahead of the dispatcher's deadlines, so a held report is never
    emitted by the dispatcher thread here: only by the next report after the interval, or by
    the operation's end.
    """
    dispatcher, recorder, added = running(make_dispatcher)
    clock = FakeClock()
    clock.now = time.monotonic() + 3600
    dispatcher._engine.progress.clock = clock
    for step in range(100):
        dispatcher.report_progress(added.id, step / 100)
        clock.now += 0.004  # 100 reports in 0.4 s (on the test's clock)
    dispatcher.drain_events(5)
    assert [e.meta_data["fraction"] for e in recorder.matching(PROGRESS, added.id)] == [0.0]
    clock.now += 0.1  # 0.5 s after the first event
    dispatcher.report_progress(added.id, 0.995)
    dispatcher.report_progress(added.id, 0.999)  # held again
    dispatcher.drain_events(5)
    assert [e.meta_data["fraction"] for e in recorder.matching(PROGRESS, added.id)] == [0.0, 0.995]
    dispatcher.complete_operation(added.id)  # the held 0.999 goes out before the end
    recorder.wait_for(EventType.OPERATION_COMPLETED, operation_id=added.id)
    events = [e for e in recorder.events if e.operation_id == added.id]
    assert [e.meta_data["fraction"] for e in events if e.event_type is PROGRESS] == [0.0, 0.995, 0.999]
    assert events[-2].event_type is PROGRESS and events[-1].event_type is EventType.OPERATION_COMPLETED


def test_a_held_report_is_emitted_when_the_interval_ends(make_dispatcher) -> None:
    dispatcher, recorder, added = running(make_dispatcher)
    dispatcher.report_progress(added.id, 0.1)
    dispatcher.report_progress(added.id, 0.2)  # within the interval: held
    first = recorder.wait_for(PROGRESS, operation_id=added.id)[0]
    # no further report: the dispatcher thread wakes for the held one
    events = recorder.wait_for(PROGRESS, count=2, operation_id=added.id, timeout=5)
    assert [e.meta_data["fraction"] for e in events] == [0.1, 0.2]
    gap = (events[1].created_at - first.created_at).total_seconds()
    assert gap >= PROGRESS_EVENT_INTERVAL - 0.05
    assert dispatcher.current_operation.state is ExecutionState.RUNNING  # nothing else happened


def test_a_paused_operation_takes_progress(make_dispatcher) -> None:
    dispatcher, recorder, added = running(make_dispatcher)
    assert dispatcher.pause_operation(added.id)
    snapshot = dispatcher.report_progress(added.id, 0.4, "paused at the second seam")
    assert snapshot.state is ExecutionState.PAUSED and snapshot.progress.fraction == 0.4
    recorder.wait_for(PROGRESS, operation_id=added.id)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"fraction": True}, "fraction"),  # not 100 %
        ({"fraction": False}, "fraction"),
        ({"fraction": math.nan}, "fraction"),
        ({"fraction": math.inf}, "fraction"),
        ({"fraction": -math.inf}, "fraction"),
        ({"fraction": -0.01}, "fraction"),
        ({"fraction": 1.0000001}, "fraction"),
        ({"fraction": 2}, "fraction"),
        ({"fraction": 10**5000}, "fraction"),
        ({"fraction": "0.5"}, "fraction"),
        ({"fraction": [0.5]}, "fraction"),
        ({"message": 42}, "message"),
        ({"message": b"bytes"}, "message"),
        ({"message": "x" * (MAX_PROGRESS_MESSAGE + 1)}, "message"),
        ({"message": "half \ud800 done"}, "message"),
        ({}, "fraction"),  # neither: nothing to report
        ({"fraction": None, "message": None}, "fraction"),
    ],
)
def test_bad_reports_are_refused_and_change_nothing(make_dispatcher, kwargs, field) -> None:
    dispatcher, recorder, added = running(make_dispatcher)
    dispatcher.report_progress(added.id, 0.5, "before")
    recorder.wait_for(PROGRESS, operation_id=added.id)
    with pytest.raises(ValidationError) as caught:
        dispatcher.report_progress(added.id, **kwargs)
    assert caught.value.field == field
    assert dispatcher.get_operation(added.id).progress.message == "before"
    dispatcher.drain_events(5)
    assert len(recorder.matching(PROGRESS, added.id)) == 1


def test_the_longest_message_is_taken(make_dispatcher) -> None:
    dispatcher, _, added = running(make_dispatcher)
    text = "é" * MAX_PROGRESS_MESSAGE
    assert dispatcher.report_progress(added.id, message=text).progress.message == text


def test_only_the_current_operation_takes_progress(make_dispatcher) -> None:
    dispatcher, recorder, added = running(make_dispatcher)
    queued = dispatcher.add_operation(op())
    with pytest.raises(OperationNotFound):
        dispatcher.report_progress(uuid4(), 0.5)
    with pytest.raises(ValidationError) as caught:
        dispatcher.report_progress("not-a-uuid", 0.5)
    assert caught.value.field == "operation_id"
    with pytest.raises(OperationNotCurrent, match="it is QUEUED"):
        dispatcher.report_progress(queued.id, 0.5)
    dispatcher.complete_operation(added.id)
    with pytest.raises(OperationNotCurrent, match="it is COMPLETED"):
        dispatcher.report_progress(added.id, 0.5)
    dispatcher.drain_events(5)
    assert recorder.matching(PROGRESS) == []
    assert dispatcher.get_operation(queued.id).progress is None


def test_a_new_operation_cannot_bring_its_own_progress(make_dispatcher) -> None:
    with pytest.raises(ValidationError) as caught:
        Operation(resource_id=RESOURCE, progress={"fraction": 0.5})
    assert caught.value.field == "progress"
    with pytest.raises(ValidationError) as caught:
        OperationProgress(fraction=math.nan)
    assert caught.value.field == "progress.fraction"


def test_progress_round_trips_through_json() -> None:
    started = Operation(resource_id=RESOURCE, state="RUNNING", start_time="2026-01-01T00:00:00Z",
                        progress={"fraction": 0.5, "message": "m",
                                  "updated_at": "2026-01-01T00:00:01Z"})
    again = Operation.from_dict(json.loads(json.dumps(started.to_dict())))
    assert again == started and again.progress.fraction == 0.5
    assert list(started.to_dict())[-1] == "progress"
    with pytest.raises(ValidationError):
        Operation.from_dict({**started.to_dict(), "progress": {"fraction": 0.5, "percent": 50}})
    with pytest.raises(ValidationError):
        Operation.from_dict({**started.to_dict(), "progress": "half"})


# ------------------------------------------------------------------------------ journal


def test_the_latest_progress_survives_a_restart(make_dispatcher, tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    dispatcher, recorder, added = running(make_dispatcher, journal=str(path))
    dispatcher.report_progress(added.id, 0.3, "first")  # emitted and journaled
    dispatcher.report_progress(added.id, 0.6, "latest")  # held: journaled when the loop stops
    dispatcher.close(timeout=5)

    again = make_dispatcher(journal=str(path))  # recovery "fail": the job was interrupted
    restored = again.get_operation(added.id)
    assert restored.termination_reason is TerminationReason.INTERRUPTED
    assert restored.progress.fraction == 0.6 and restored.progress.message == "latest"
    events = [e for e in again.list_events(added.id) if e.event_type is PROGRESS]
    assert [e.meta_data["message"] for e in events] == ["first", "latest"]


def test_a_journal_without_progress_loads(make_dispatcher, tmp_path: Path) -> None:
    """Journals written before progress existed hold operations without the key."""
    path = tmp_path / "old.db"
    dispatcher = make_dispatcher(journal=str(path))
    queued = dispatcher.add_operation(op(payload={"n": 1}))
    dispatcher.close()
    conn = sqlite3.connect(path)
    try:
        with conn:
            rows = conn.execute("SELECT id, data FROM operations").fetchall()
            for op_id, data in rows:
                fields = json.loads(data)
                fields.pop("progress")
                conn.execute("UPDATE operations SET data = ? WHERE id = ?",
                             (json.dumps(fields), op_id))
    finally:
        conn.close()
    again = make_dispatcher(journal=str(path))
    assert again.get_operation(queued.id).progress is None
    assert [o.id for o in again.get_schedule()] == [queued.id]


# ------------------------------------------------------------------------------ REST


def test_progress_over_http_in_the_status_and_the_event_stream(make_api) -> None:
    api = make_api()
    reader = open_stream(api)
    try:
        added = api.add({"payload": {"task": "weld"}, "planned_duration": 30})[0]
        wait_until(lambda: api.dispatcher.current_operation is not None, what="the start")
        response = api.post(f"/operations/{added['id']}/progress",
                            json={"fraction": 0.4, "message": "seam 2 of 5"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["is_current_operation"] is True
        assert body["operation"]["progress"]["fraction"] == 0.4
        assert 0 <= body["elapsed_seconds"] < 30
        status = api.get(f"/operations/{added['id']}").json()
        assert status["operation"]["progress"]["message"] == "seam 2 of 5"
        assert status["elapsed_seconds"] >= body["elapsed_seconds"]
        assert status["operation"]["planned_duration"] == 30
        listed = api.get("/operations").json()[0]
        assert listed["operation"]["progress"]["fraction"] == 0.4 and listed["elapsed_seconds"] >= 0
        reader.wait_for(lambda: bool(reader.events("operation_progress")))
        event = reader.events("operation_progress")[0]
        assert event["operation_id"] == added["id"]
        assert event["meta_data"] == {"fraction": 0.4, "message": "seam 2 of 5"}
        queued = api.add({"payload": {}})[0]
        assert api.get(f"/operations/{queued['id']}").json()["elapsed_seconds"] is None
        api.dispatcher.complete_operation(added["id"])
        finished = api.get(f"/operations/{added['id']}").json()
        assert finished["elapsed_seconds"] is None
        assert finished["operation"]["progress"]["fraction"] == 0.4
    finally:
        reader.close()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"fraction": True}, "fraction"),
        ({"fraction": "0.5"}, "fraction"),
        ({"fraction": -0.1}, "fraction"),
        ({"fraction": 1.5}, "fraction"),
        ({"fraction": 1e308 * 10}, "fraction"),  # inf: json sends Infinity, refused as JSON
        ({"message": 5}, "message"),
        ({"message": "x" * (MAX_PROGRESS_MESSAGE + 1)}, "message"),
        ({"fraction": 0.5, "percent": 50}, "percent"),
        ({}, "fraction"),
        ({"fraction": None, "message": None}, "fraction"),
        ([0.5], None),
        ("half", None),
    ],
)
def test_bad_progress_bodies_get_400(make_client, body, field) -> None:
    api = make_client()
    added = api.add({"payload": {}})[0]
    wait_until(lambda: api.dispatcher.current_operation is not None, what="the start")
    if isinstance(body, dict) and any(isinstance(v, float) and math.isinf(v) for v in body.values()):
        response = api.post(f"/operations/{added['id']}/progress", data='{"fraction": 1e999}',
                            content_type="application/json")
    else:
        response = api.post(f"/operations/{added['id']}/progress", json=body)
    details = {} if field is None else {"field": field}
    assert_error(response, 400, "invalid_progress", **details)
    assert api.dispatcher.get_operation(added["id"]).progress is None


def test_progress_for_an_operation_that_is_not_running_gets_404_or_409(make_client) -> None:
    api = make_client()
    running_op = api.add({"payload": {}})[0]
    wait_until(lambda: api.dispatcher.current_operation is not None, what="the start")
    queued = api.add({"payload": {}})[0]
    assert_error(api.post(f"/operations/{uuid4()}/progress", json={"fraction": 0.1}),
                 404, "operation_not_found")
    assert_error(api.post("/operations/nope/progress", json={"fraction": 0.1}),
                 400, "invalid_operation_id")
    assert_error(api.post(f"/operations/{queued['id']}/progress", json={"fraction": 0.1}),
                 409, "operation_not_running", state="QUEUED")
    api.dispatcher.complete_operation(running_op["id"])
    assert_error(api.post(f"/operations/{running_op['id']}/progress", json={"fraction": 0.1}),
                 409, "operation_not_running", state="COMPLETED")


def test_progress_needs_the_operate_scope(make_client) -> None:
    tokens = {"mes": {"token": "mes-secret", "scopes": ["read", "submit"]},
              "operator": {"token": "op-secret", "scopes": ["read", "operate"]}}
    api = make_client(tokens=tokens)
    response = api.post("/operations/add", json=[{"payload": {}}],
                        headers={"Authorization": "Bearer mes-secret"})
    op_id = response.json()[0]["operation"]["id"]
    wait_until(lambda: api.dispatcher.current_operation is not None, what="the start")
    path = f"/operations/{op_id}/progress"
    assert_error(api.post(path, json={"fraction": 0.5},
                          headers={"Authorization": "Bearer mes-secret"}),
                 403, "insufficient_scope", scope="operate")
    ok = api.post(path, json={"fraction": 0.5}, headers={"Authorization": "Bearer op-secret"})
    assert ok.status_code == 200, ok.text


def test_the_progress_route_and_shapes_are_in_the_openapi_document(make_client) -> None:
    spec = make_client(start=False).get("/openapi.json").json()
    post = spec["paths"]["/operations/{operation_id}/progress"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ProgressReport"}
    schemas = spec["components"]["schemas"]
    fraction = schemas["ProgressReport"]["properties"]["fraction"]["anyOf"][0]
    assert fraction["minimum"] == 0 and fraction["maximum"] == 1
    assert "progress" in schemas["Operation"]["properties"]
    assert "elapsed_seconds" in schemas["OperationStatus"]["properties"]
    assert set(post["responses"]) >= {"200", "400", "404", "409"}


def test_metrics_and_history_take_progress_events(make_client) -> None:
    """The new event type goes through the metrics subscription and the history unharmed."""
    from prometheus_client.parser import text_string_to_metric_families

    from operation_dispatcher import HistoryAnalyzer

    api = make_client()
    added = api.add({"payload": {}})[0]
    wait_until(lambda: api.dispatcher.current_operation is not None, what="the start")
    for step in range(50):
        api.dispatcher.report_progress(added["id"], step / 50)
    api.dispatcher.complete_operation(added["id"])
    api.dispatcher.drain_events(5)
    response = api.get("/metrics")
    assert response.status_code == 200, response.text
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    finished = [s for f in families.values() for s in f.samples
                if s.labels.get("outcome") == "SUCCESS"]
    assert finished and finished[0].value == 1
    history = api.dispatcher.get_history(resolve_operations=True)
    assert any(e.event_type is PROGRESS for e in history.events)
    assert HistoryAnalyzer(history).completed_operation_count() == 1
    body = api.get("/operations/history").json()
    assert any(e["event_type"] == "operation_progress" for e in body["events"])

"""The REST API through Flask's test client (``make_client``); the event streams, which need the
server's streaming and disconnects, against a real waitress server on a loopback port, through
``requests`` (``make_api``).

Every route's happy path and its error paths, with the original's status codes, JSON shapes and
error envelope ``{"error", "message", "code", "details"?}``.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from conftest import assert_error

from operation_dispatcher import (
    PENDING,
    DispatchEvent,
    EventType,
    OperationDispatcher,
    RequestDecision,
)
from operation_dispatcher import models as core
from operation_dispatcher.http import schemas

UNKNOWN = "12345678-1234-5678-1234-567812345678"


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------- POST add


def test_add_returns_201_with_operation_statuses(make_client: Callable[..., Any]) -> None:
    api = make_client(start=False)
    release = datetime.now(UTC) + timedelta(hours=1)
    response = api.post("/operations/add", json=[
        {"payload": {"task": "pick"}, "priority": 7, "job_id": "order-1",
         "release_date": iso(release), "planned_duration": 2.5,
         "due_date": iso(release + timedelta(hours=1)),
         "release_conditions": {"plc.ready": True}, "timeout_seconds": 30},
        {"payload": {"task": "place"}},
    ])
    assert response.status_code == 201, response.text
    body = response.json()
    assert [item["is_current_operation"] for item in body] == [False, False]
    first, second = (item["operation"] for item in body)
    assert set(first) == {f.name for f in dataclasses.fields(core.Operation)}
    assert first["resource_id"] == "robot-1" and first["state"] == "QUEUED"
    assert first["priority"] == 7 and first["job_id"] == "order-1"
    assert first["release_conditions"] == {"plc.ready": True}
    assert first["timeout_seconds"] == 30 and first["planned_duration"] == 2.5
    assert first["release_date"].endswith("Z")
    assert second["payload"] == {"task": "place"} and second["priority"] == 0
    stored = api.dispatcher.get_operation(first["id"])
    assert stored is not None and stored.release_conditions == {"plc.ready": True}
    assert [op.payload["task"] for op in api.dispatcher.get_schedule()] == ["pick", "place"]


def test_add_with_dependencies_on_each_other_and_a_running_dispatcher(
    make_client: Callable[..., Any],
) -> None:
    api = make_client()
    first = api.add({"payload": {"n": 1}})[0]
    assert first["state"] == "RUNNING"  # no request callback: approved and started at once
    second = api.add({"payload": {"n": 2}, "dependencies": [
        {"depends_on_operation_id": first["id"], "dependency_type": "FINISH_TO_START"}]})[0]
    assert second["dependencies"][0]["depends_on_operation_id"] == first["id"]
    assert second["dependencies"][0]["dependency_type"] == "FINISH_TO_START"


BIG = "x" * (1024 * 1024)
FAR = iso(datetime.now(UTC) + timedelta(days=365 * 150))


@pytest.mark.parametrize(
    ("body", "status", "code", "details"),
    [
        ({}, 400, "invalid_operations", {}),
        ("text", 400, "invalid_operations", {}),
        (None, 400, "invalid_operations", {}),
        ([], 400, "missing_operations", {}),
        ([1], 400, "invalid_operations", {"index": 0}),
        ([{"payload": {}}, "x"], 400, "invalid_operations", {"index": 1}),
        ([{"payload": {}, "resource_id": "robot-1"}], 400, "resource_id_not_allowed", {"index": 0}),
        ([{"priority": 1}], 400, "missing_payload", {"index": 0, "field": "payload"}),
        ([{"payload": "x"}], 400, "invalid_payload", {"index": 0}),
        ([{"payload": {}, "priority": "3"}], 400, "invalid_operation", {"field": "priority"}),
        ([{"payload": {}, "priority": 1.5}], 400, "invalid_operation", {"field": "priority"}),
        ([{"payload": {}, "priority": True}], 400, "invalid_operation", {"field": "priority"}),
        ([{"payload": {}, "state": "COMPLETED"}], 400, "invalid_operation", {"field": "state"}),
        ([{"payload": {}, "id": UNKNOWN}], 400, "invalid_operation", {"field": "id"}),
        ([{"payload": {}, "release_date": "2026-01-01T08:00:00"}], 400, "invalid_operation",
         {"field": "release_date"}),
        ([{"payload": {}, "release_date": "yesterday"}], 400, "invalid_operation",
         {"field": "release_date"}),
        ([{"payload": {}, "release_date": 1767254400}], 400, "invalid_operation",
         {"field": "release_date"}),
        ([{"payload": {}, "release_date": FAR}], 400, "invalid_operation",
         {"field": "release_date"}),
        ([{"payload": {}, "due_date": "0001-01-01T00:00:00+14:00"}], 400, "invalid_operation",
         {"field": "due_date"}),
        ([{"payload": {}, "planned_duration": 0}], 400, "invalid_operation",
         {"field": "planned_duration"}),
        ([{"payload": {}, "timeout_seconds": -1}], 400, "invalid_operation",
         {"field": "timeout_seconds"}),
        ([{"payload": {}, "timeout_seconds": 1e12}], 400, "invalid_operation",
         {"field": "timeout_seconds"}),
        ([{"payload": {}, "release_conditions": []}], 400, "invalid_operation",
         {"field": "release_conditions"}),
        ([{"payload": {}, "release_date": "2026-01-02T00:00:00Z",
           "due_date": "2026-01-01T00:00:00Z"}], 400, "invalid_operation",
         {"field": "due_date", "index": 0}),
        ([{"payload": {}, "dependencies": [{"depends_on_operation_id": "nope",
                                            "dependency_type": "FINISH_TO_START"}]}],
         400, "invalid_operation", {"field": "dependencies[0].depends_on_operation_id"}),
        ([{"payload": {}, "dependencies": [{"depends_on_operation_id": UNKNOWN,
                                            "dependency_type": "SOMETIME"}]}],
         400, "invalid_operation", {"field": "dependencies[0].dependency_type"}),
        ([{"payload": {}, "dependencies": [{"depends_on_operation_id": UNKNOWN,
                                            "dependency_type": "FINISH_TO_START"}]}],
         400, "operation_rejected", {"index": 0}),
        ([{"payload": {}}] * 1001, 400, "too_many_operations", {}),
        ([{"payload": {"blob": BIG}}], 413, "request_too_large", {}),
    ],
)
def test_add_rejects_bad_input(
    make_client: Callable[..., Any], body: Any, status: int, code: str, details: dict[str, Any]
) -> None:
    api = make_client(start=False)
    kwargs: dict[str, Any] = {} if body is None else {"json": body}
    assert_error(api.post("/operations/add", **kwargs), status, code, **details)
    assert api.dispatcher.get_schedule() == []  # all or nothing


def test_add_names_the_field_and_is_all_or_nothing(make_client: Callable[..., Any]) -> None:
    api = make_client(start=False)
    body = assert_error(
        api.post("/operations/add", json=[{"payload": {}}, {"payload": {}, "prioriti": 1}]),
        400, "invalid_operation", index=1, field="prioriti",
    )
    assert "prioriti" in body["message"]
    assert api.dispatcher.get_schedule() == []


def test_add_refuses_wrong_content_type_and_malformed_json(make_client: Callable[..., Any]) -> None:
    api = make_client(start=False)
    body = assert_error(
        api.post("/operations/add", data='[{"payload": {}}]',
                 headers={"Content-Type": "text/plain"}),
        415, "unsupported_media_type",
    )
    assert "application/json" in body["message"]
    assert_error(
        api.post("/operations/add", data="[{", headers={"Content-Type": "application/json"}),
        400, "invalid_operations",
    )
    assert_error(
        api.post("/operations/add", data=b"\xff\xfe", headers={"Content-Type": "application/json"}),
        400, "invalid_operations",
    )
    for constant in ("NaN", "Infinity", "-Infinity"):  # Python's json would take them
        body = assert_error(
            api.post("/operations/add", data=f'[{{"payload": {{"x": {constant}}}}}]',
                     headers={"Content-Type": "application/json"}),
            400, "invalid_operations",
        )
        assert constant in body["message"]
    for depth in (65, 5000):  # deep nesting would only exhaust the stack
        nested = "[" * depth + "]" * depth
        body = assert_error(
            api.post("/operations/add", data=f'[{{"payload": {{"x": {nested}}}}}]',
                     headers={"Content-Type": "application/json"}),
            400, "invalid_operations",
        )
        assert "nested deeper than 64 levels" in body["message"]
    nested = "[" * 60 + "]" * 60
    assert api.post("/operations/add", data=f'[{{"payload": {{"x": {nested}}}}}]',
                    headers={"Content-Type": "application/json"}).status_code == 201


# -------------------------------------------------------------------------- GET reads


def test_list_operations_current_first_then_dispatch_order(make_client: Callable[..., Any]) -> None:
    api = make_client()
    running = api.add({"payload": {"n": 0}})[0]
    low, high = api.add({"payload": {"n": 1}, "priority": 1}, {"payload": {"n": 2}, "priority": 9})
    response = api.get("/operations")
    assert response.status_code == 200
    listed = [(s["operation"]["id"], s["is_current_operation"]) for s in response.json()]
    assert listed == [(running["id"], True), (high["id"], False), (low["id"], False)]
    queued = api.get("/operations", params={"state": "QUEUED"}).json()
    assert [s["operation"]["id"] for s in queued] == [high["id"], low["id"]]
    assert [s["operation"]["id"] for s in api.get("/operations?state=RUNNING").json()] == [
        running["id"]
    ]
    assert api.get("/operations?state=PAUSED").json() == []
    api.dispatcher.complete_operation(running["id"])
    ids = [s["operation"]["id"] for s in api.get("/operations").json()]
    assert running["id"] not in ids  # finished operations are not listed


@pytest.mark.parametrize("state", ["COMPLETED", "queued", "FAILED", ""])
def test_list_operations_rejects_other_states(make_client: Callable[..., Any], state: str) -> None:
    api = make_client(start=False)
    body = assert_error(api.get("/operations", params={"state": state}), 400, "invalid_state",
                        valid_states=["PAUSED", "QUEUED", "RUNNING"])
    assert body["message"] == f"invalid state {state!r}"


def test_current_operation(make_client: Callable[..., Any]) -> None:
    api = make_client()
    assert_error(api.get("/operations/current"), 404, "no_running_operation")
    op = api.add({"payload": {}})[0]
    body = api.get("/operations/current").json()
    assert body["operation"]["id"] == op["id"] and body["is_current_operation"] is True
    assert api.post(f"/operations/{op['id']}/pause").status_code == 200
    assert_error(api.get("/operations/current"), 404, "no_running_operation")  # paused


def test_get_operation_queued_current_and_finished(make_client: Callable[..., Any]) -> None:
    api = make_client()
    current, queued = api.add({"payload": {"n": 0}}, {"payload": {"n": 1}})
    body = api.get(f"/operations/{current['id']}").json()
    assert body["is_current_operation"] is True and body["operation"]["state"] == "RUNNING"
    braces = "{" + queued["id"] + "}"  # any form the UUID parser accepts
    body = api.get(f"/operations/{braces}").json()
    assert body == {"operation": queued, "is_current_operation": False, "elapsed_seconds": None}
    api.dispatcher.complete_operation(current["id"])
    body = api.get(f"/operations/{current['id']}").json()
    assert body["operation"]["outcome"] == "SUCCESS" and body["is_current_operation"] is False


@pytest.mark.parametrize("suffix", ["", "/events", "/explain"])
def test_operation_routes_reject_bad_and_unknown_ids(
    make_client: Callable[..., Any], suffix: str
) -> None:
    api = make_client(start=False)
    body = assert_error(api.get(f"/operations/not-a-uuid{suffix}"), 400, "invalid_operation_id",
                        field="operation_id")
    assert "operation_id" in body["message"]
    body = assert_error(api.get(f"/operations/{UNKNOWN}{suffix}"), 404, "operation_not_found",
                        operation_id=UNKNOWN)  # every route names the id (one helper builds it)
    assert body["message"] == "operation not found"


@pytest.mark.parametrize("action", ["update", "cancel", "pause", "resume", "complete", "fail"])
def test_every_post_route_names_the_unknown_operation(
    make_client: Callable[..., Any], action: str
) -> None:
    api = make_client(start=False)
    body = {"priority": 1} if action == "update" else {}
    answer = assert_error(api.post(f"/operations/{UNKNOWN}/{action}", json=body), 404,
                          "operation_not_found", operation_id=UNKNOWN)
    assert answer["message"] == "operation not found"


def test_operation_events_in_order(make_client: Callable[..., Any]) -> None:
    api = make_client()
    op = api.add({"payload": {}})[0]
    api.dispatcher.complete_operation(op["id"])
    events = api.get(f"/operations/{op['id']}/events").json()
    types = [e["event_type"] for e in events]
    assert types == ["operation_added", "operation_start_requested", "operation_started",
                     "operation_completed"]
    assert set(events[0]) == {f.name for f in dataclasses.fields(core.DispatchEvent)}
    assert all(e["operation_id"] == op["id"] for e in events)


def test_explain_names_the_blockers(make_client: Callable[..., Any]) -> None:
    api = make_client()
    op = api.add({"payload": {}, "release_conditions": {"door.closed": True}})[0]
    body = api.get(f"/operations/{op['id']}/explain").json()
    details = body.pop("details")
    assert body == {"operation_id": op["id"], "state": "QUEUED",
                    "blocked_by": ["release_condition:door.closed"]}
    assert [(d["blocker"], d["kind"], d["text"]) for d in details] == [(
        "release_condition:door.closed", "release_condition",
        "waiting for door.closed = true, but nothing has ever set door.closed (a typo?)",
    )]
    assert api.put("/signals/door.closed", json={"value": True}).status_code == 200
    body = api.get(f"/operations/{op['id']}/explain").json()
    assert body == {"operation_id": op["id"], "state": "RUNNING", "blocked_by": [], "details": []}


# -------------------------------------------------------------------------- history


def test_history_defaults_and_window(make_client: Callable[..., Any]) -> None:
    api = make_client()
    before = datetime.now(UTC)
    for _ in range(30):
        op = api.add({"payload": {}})[0]
        api.dispatcher.complete_operation(op["id"])
    body = api.get("/operations/history").json()
    assert set(body) == {"resource_id", "window", "events", "operations", "created_at"}
    assert len(body["events"]) == 50  # the HTTP default limit
    assert body["operations"] is not None  # resolve_operations defaults to true over HTTP
    assert {op["id"] for op in body["operations"]} == {
        e["operation_id"] for e in body["events"] if e["operation_id"]
    }
    body = api.get("/operations/history", params={
        "limit": 3, "resolve_operations": "no", "from_time": iso(before),
        "to_time": iso(datetime.now(UTC) + timedelta(seconds=5)),
    }).json()
    assert len(body["events"]) == 3 and body["operations"] is None
    assert body["window"]["start"].startswith(iso(before)[:19])
    later = (datetime.now(UTC) + timedelta(hours=1)).astimezone(timezone(timedelta(hours=2)))
    offset = api.get("/operations/history", params={"from_time": later.isoformat()}).json()
    assert offset["events"] == []
    # "+02:00" not URL-encoded arrives as " 02:00" and is taken as meant
    unencoded = api.get("/operations/history?from_time=" + later.isoformat()).json()
    assert unencoded["window"]["start"] == offset["window"]["start"]


@pytest.mark.parametrize(
    ("params", "code", "message"),
    [
        ({"limit": "abc"}, "invalid_limit", "limit must be an integer"),
        ({"limit": "0"}, "invalid_limit", "limit must be greater than 0"),
        ({"limit": "-5"}, "invalid_limit", "limit must be greater than 0"),
        ({"limit": "1001"}, "invalid_limit", "limit must be less than or equal to 1000"),
        ({"from_time": "nope"}, "invalid_from_time", None),
        ({"from_time": "2026-01-01T00:00:00"}, "invalid_from_time", None),  # naive
        ({"to_time": "2026-13-01T00:00:00Z"}, "invalid_to_time", None),
        ({"to_time": "12345"}, "invalid_to_time", None),
        ({"from_time": "2026-01-02T00:00:00Z", "to_time": "2026-01-01T00:00:00Z"},
         "invalid_time_range", "from_time must be less than or equal to to_time"),
        ({"resolve_operations": "maybe"}, "invalid_resolve_operations",
         "resolve_operations must be a boolean"),
        ({"limit": "0", "from_time": "nope"}, "invalid_limit", None),  # the original's order
        ({"limits": "5"}, "invalid_request", None),
    ],
)
def test_history_rejects_bad_parameters(
    make_client: Callable[..., Any], params: dict[str, str], code: str, message: str | None
) -> None:
    api = make_client(start=False)
    body = assert_error(api.get("/operations/history", params=params), 400, code)
    if message is not None:
        assert body["message"] == message
    else:
        assert next(iter(params)) in body["message"]


# --------------------------------------------------------------------- update / cancel


def test_update_operation(make_client: Callable[..., Any], make_recorder: Callable) -> None:
    api = make_client(start=False)
    op = api.add({"payload": {"a": 1}, "priority": 1})[0]
    response = api.post(f"/operations/{op['id']}/update", json={
        "priority": 5, "payload": {"a": 2}, "release_date": None, "timeout_seconds": 9,
    })
    assert response.status_code == 200, response.text
    updated = response.json()["operation"]
    assert (updated["priority"], updated["payload"], updated["timeout_seconds"]) == (5, {"a": 2}, 9)
    events = api.get(f"/operations/{op['id']}/events").json()
    assert events[-1]["event_type"] == "operation_updated"
    assert {c["field"] for c in events[-1]["changes"]} == {"priority", "payload", "timeout_seconds"}
    assert api.post(f"/operations/{op['id']}/update", json={}).json()["operation"] == updated


def test_update_errors(make_client: Callable[..., Any]) -> None:
    api = make_client()
    running = api.add({"payload": {}})[0]
    queued = api.add({"payload": {}})[0]
    url = f"/operations/{queued['id']}/update"
    body = assert_error(api.post(url, json={"colour": "red"}), 400, "invalid_updates")
    assert body["message"] == "unsupported operation update fields: ['colour']"
    body = assert_error(api.post(url, json={"state": "COMPLETED"}), 400, "invalid_updates",
                        field="state")
    assert "lifecycle" in body["message"]
    assert_error(api.post(url, json={"priority": "high"}), 400, "invalid_updates",
                 field="priority")
    assert_error(api.post(url, json={"payload": None}), 400, "invalid_updates", field="payload")
    assert_error(api.post(url, json=[1, 2]), 400, "invalid_updates")
    assert_error(api.post(url, data="{", headers={"Content-Type": "application/json"}),
                 400, "invalid_updates")
    assert_error(api.post(url, json={"dependencies": [
        {"depends_on_operation_id": UNKNOWN, "dependency_type": "START_TO_START"}]}),
        400, "invalid_updates")
    assert_error(api.post(f"/operations/{UNKNOWN}/update", json={"priority": 1}),
                 404, "operation_not_found", operation_id=UNKNOWN)
    assert_error(api.post("/operations/x/update", json={"priority": 1}),
                 400, "invalid_operation_id")
    body = assert_error(api.post(f"/operations/{running['id']}/update", json={"priority": 1}),
                        409, "operation_update_denied")
    assert body["message"] == "cannot update a running operation"
    api.dispatcher.complete_operation(running["id"])
    assert_error(api.post(f"/operations/{running['id']}/update", json={"priority": 1}),
                 409, "operation_update_denied")


def test_cancel_operation(make_client: Callable[..., Any]) -> None:
    api = make_client(start=False)
    first, second = api.add({"payload": {}}, {"payload": {}})
    response = api.post(f"/operations/{first['id']}/cancel")  # no body: the defaults
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["is_current_operation"] is False
    assert body["operation"]["state"] == "COMPLETED"
    assert body["operation"]["outcome"] == "CANCELLED"
    assert body["operation"]["termination_reason"] == "INTERNAL_ERROR"
    response = api.post(f"/operations/{second['id']}/cancel", json={
        "termination_reason": "USER_REQUEST", "meta_data": {"by": "operator"}})
    assert response.json()["operation"]["termination_reason"] == "USER_REQUEST"
    events = api.get(f"/operations/{second['id']}/events").json()
    assert events[-1]["meta_data"] == {"by": "operator"}
    assert_error(api.post(f"/operations/{second['id']}/cancel"), 409,
                 "operation_cancellation_denied")


def test_cancel_errors(make_client: Callable[..., Any]) -> None:
    api = make_client(start=False)
    op = api.add({"payload": {}})[0]
    url = f"/operations/{op['id']}/cancel"
    body = assert_error(api.post(url, json={"termination_reason": "BORED"}), 400,
                        "invalid_termination_reason")
    assert body["details"]["valid_termination_reasons"] == [r.value for r in core.TerminationReason]
    assert_error(api.post(url, json={"meta_data": "x"}), 400, "invalid_meta_data")
    assert_error(api.post(url, json={"meta_data": None}), 400, "invalid_meta_data")
    assert_error(api.post(url, json=[1]), 400, "invalid_request_body")
    assert_error(api.post(url, json={"reason": "x"}), 400, "invalid_request_body", field="reason")
    assert_error(api.post(url, data="{oops", headers={"Content-Type": "application/json"}),
                 400, "invalid_request_body")
    assert_error(api.post(f"/operations/{UNKNOWN}/cancel"), 404, "operation_not_found")
    assert_error(api.post("/operations/1234/cancel"), 400, "invalid_operation_id")
    assert api.dispatcher.get_operation(op["id"]).state is core.ExecutionState.QUEUED


def test_cancel_denied_by_the_business_logic(
    make_client: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher]
) -> None:
    def on_request(event: DispatchEvent) -> Any:
        if event.event_type is EventType.OPERATION_CANCEL_REQUESTED:
            return RequestDecision(False, "not now")
        return True

    api = make_client(make_dispatcher(on_request_callback=on_request), start=False)
    op = api.add({"payload": {}})[0]
    assert_error(api.post(f"/operations/{op['id']}/cancel"), 409, "operation_cancellation_denied")


# ----------------------------------------------------------------------- pause / resume


def test_pause_and_resume_operation(make_client: Callable[..., Any]) -> None:
    api = make_client()
    running, queued = api.add({"payload": {}}, {"payload": {}})
    url = f"/operations/{running['id']}"
    response = api.post(url + "/pause", json={"meta_data": {"why": "jam"}})
    assert response.status_code == 200, response.text
    assert response.json()["operation"]["state"] == "PAUSED"
    assert response.json()["is_current_operation"] is True
    assert_error(api.post(url + "/pause"), 409, "operation_not_running")
    response = api.post(url + "/resume")
    assert response.json()["operation"]["state"] == "RUNNING"
    assert_error(api.post(url + "/resume"), 409, "operation_not_paused")
    assert_error(api.post(f"/operations/{queued['id']}/pause"), 409, "operation_not_running")
    assert_error(api.post(f"/operations/{queued['id']}/resume"), 409, "operation_not_paused")
    assert_error(api.post(f"/operations/{UNKNOWN}/pause"), 404, "operation_not_found")
    assert_error(api.post("/operations/zz/resume"), 400, "invalid_operation_id")
    assert_error(api.post(url + "/pause", json={"meta_data": 3}), 400, "invalid_meta_data")
    events = api.get(f"/operations/{running['id']}/events").json()
    paused = [e for e in events if e["event_type"] == "operation_paused"]
    assert paused[0]["meta_data"] == {"why": "jam"}


def test_pause_denied(
    make_client: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher]
) -> None:
    def on_request(event: DispatchEvent) -> Any:
        return event.event_type is not EventType.OPERATION_PAUSE_REQUESTED

    api = make_client(make_dispatcher(on_request_callback=on_request))
    op = api.add({"payload": {}})[0]
    deadline = time.monotonic() + 10
    while api.dispatcher.current_operation is None:  # the start is approved off-thread
        assert time.monotonic() < deadline
        api.dispatcher.drain_events(1.0)
    assert_error(api.post(f"/operations/{op['id']}/pause"), 409, "operation_pause_denied")


# ------------------------------------------------------------------ dispatcher runtime


def test_dispatcher_state_and_runtime_control(
    make_client: Callable[..., Any], make_recorder: Callable
) -> None:
    api = make_client()
    recorder = make_recorder(api.dispatcher)
    state = api.get("/dispatcher").json()
    expected = {f.name for f in dataclasses.fields(core.OperationDispatcherState)}
    assert set(state) == expected | {"runtime_thread_alive", "runtime_last_error"}
    assert state["is_running"] is True and state["runtime_thread_alive"] is True
    assert state["runtime_last_error"] is None and state["uptime_seconds"] >= 0

    response = api.post("/dispatcher/pause")
    assert response.status_code == 200
    assert response.json()["message"] == "operation dispatcher paused"
    assert response.json()["state"]["is_paused"] is True
    response = api.post("/dispatcher/pause")
    assert response.status_code == 409
    assert response.json()["message"] == "operation dispatcher is already paused"
    assert response.json()["state"]["is_paused"] is True
    assert api.post("/dispatcher/resume").json()["message"] == "operation dispatcher resumed"
    response = api.post("/dispatcher/resume")
    assert (response.status_code, response.json()["message"]) == (
        409, "operation dispatcher is not paused")

    response = api.post("/dispatcher/stop")
    assert response.status_code == 202
    assert response.json()["message"] == "operation dispatcher stopped"
    assert response.json()["state"]["is_running"] is False
    assert response.json()["state"]["runtime_thread_alive"] is False
    response = api.post("/dispatcher/stop")
    assert (response.status_code, response.json()["message"]) == (
        409, "operation dispatcher is not running")
    assert response.json()["code"] == "dispatcher_not_running"
    op = api.add({"payload": {}})[0]
    assert op["state"] == "QUEUED"  # nothing starts while the loop is stopped

    response = api.post("/dispatcher/start")
    assert response.status_code == 202
    assert response.json()["message"] == "operation dispatcher started"
    assert response.json()["state"]["is_running"] is True
    # the loop starts it on its own thread, a moment after the answer
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=uuid.UUID(op["id"]))
    assert api.get(f"/operations/{op['id']}").json()["operation"]["state"] == "RUNNING"
    response = api.post("/dispatcher/start")
    assert (response.status_code, response.json()["message"]) == (
        409, "operation dispatcher is already running")


# ------------------------------------------------------------------------- approvals


def test_pending_requests_approve_and_deny(
    make_client: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher],
    make_recorder: Callable,
) -> None:
    def on_request(event: DispatchEvent) -> Any:
        return PENDING if event.event_type is EventType.OPERATION_START_REQUESTED else True

    dispatcher = make_dispatcher(
        on_request_callback=on_request, start_request_retry_cooldown_seconds=60,
    )
    recorder = make_recorder(dispatcher)
    api = make_client(dispatcher)
    first, second = api.add({"payload": {"n": 1}, "priority": 5}, {"payload": {"n": 2}})
    pending = api.get("/requests").json()
    assert len(pending) == 1
    request = pending[0]
    assert set(request) == {"request_id", "event_type", "operation_id", "created_at",
                            "deadline", "waiting_for"}
    assert request["operation_id"] == first["id"]
    assert request["event_type"] == "operation_start_requested"

    response = api.post(f"/requests/{request['request_id']}/deny",
                        json={"reasoning": "tool change", "data": {"tool": 3}})
    assert response.status_code == 200, response.text
    assert response.json() == {"message": "request denied", "request_id": request["request_id"],
                               "accepted": False, "reasoning": "tool change"}
    denied = recorder.wait_for(EventType.OPERATION_START_DENIED)[0]
    assert denied.meta_data["reasoning"] == "tool change"
    assert denied.meta_data["decision_data"] == {"tool": 3}
    assert_error(api.post(f"/requests/{request['request_id']}/approve"), 409, "request_closed")

    # the denied one cools down; the other is asked for next
    recorder.wait_for(EventType.OPERATION_START_REQUESTED, count=1)
    deadline = time.monotonic() + 10
    while not (pending := api.get("/requests").json()):
        assert time.monotonic() < deadline
    assert pending[0]["operation_id"] == second["id"]
    response = api.post(f"/requests/{pending[0]['request_id']}/approve")
    assert response.status_code == 200 and response.json()["accepted"] is True
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=uuid.UUID(second["id"]))
    history = api.get("/operations/history", params={"limit": 1000}).json()
    decisions = [e["meta_data"]["request_decision"] for e in history["events"]
                 if e["event_type"] == "operation_start_requested"]
    assert decisions[:2] == [
        {"accepted": False, "reasoning": "tool change", "data": {"tool": 3}},
        {"accepted": True, "reasoning": None, "data": {}},
    ]


def test_request_errors(make_client: Callable[..., Any]) -> None:
    api = make_client()
    assert api.get("/requests").json() == []
    assert_error(api.post(f"/requests/{UNKNOWN}/approve"), 404, "request_not_found")
    assert_error(api.post(f"/requests/{UNKNOWN}/deny"), 404, "request_not_found")
    assert_error(api.post("/requests/nope/approve"), 400, "invalid_request_id")
    assert_error(api.post(f"/requests/{UNKNOWN}/approve", json={"reasoning": 5}), 400,
                 "invalid_request_body", field="reasoning")
    assert_error(api.post(f"/requests/{UNKNOWN}/deny", json="yes"), 400, "invalid_request_body")
    assert_error(api.post(f"/requests/{UNKNOWN}/deny", json={"data": [1]}), 400,
                 "invalid_request_body", field="data")


# --------------------------------------------------------------------------- signals


def test_signals(make_client: Callable[..., Any]) -> None:
    api = make_client()
    assert api.get("/signals").json() == []
    response = api.put("/signals/plc.ready", json={"value": True, "max_age_seconds": 30})
    assert response.status_code == 200, response.text
    signal = response.json()
    assert set(signal) == {"name", "value", "updated_at", "max_age_seconds", "stale"}
    assert (signal["name"], signal["value"], signal["stale"]) == ("plc.ready", True, False)
    api.put("/signals/mode", json={"value": {"speed": "slow", "zones": [1, 2]}})
    listed = api.get("/signals").json()
    assert [s["name"] for s in listed] == ["mode", "plc.ready"]
    assert listed[0]["value"] == {"speed": "slow", "zones": [1, 2]}
    assert listed[0]["max_age_seconds"] == 60.0  # the default for HTTP writes without one


def test_signal_releases_an_operation(make_client: Callable[..., Any]) -> None:
    api = make_client()
    op = api.add({"payload": {}, "release_conditions": {"plc.ready": True}})[0]
    assert op["state"] == "QUEUED"
    api.put("/signals/plc.ready", json={"value": 1})  # 1 is not True
    assert api.get(f"/operations/{op['id']}").json()["operation"]["state"] == "QUEUED"
    api.put("/signals/plc.ready", json={"value": True})
    assert api.get(f"/operations/{op['id']}").json()["operation"]["state"] == "RUNNING"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"max_age_seconds": 5}, "value"),
        ({"value": 1, "max_age_seconds": 0}, "max_age_seconds"),
        ({"value": 1, "max_age_seconds": "5"}, "max_age_seconds"),
        ({"value": 1, "ttl": 5}, "ttl"),
        (None, None),
        ([1], None),
    ],
)
def test_signal_errors(make_client: Callable[..., Any], body: Any, field: str | None) -> None:
    api = make_client(start=False)
    kwargs = {} if body is None else {"json": body}
    details = {} if field is None else {"field": field}
    assert_error(api.put("/signals/plc.ready", **kwargs), 400, "invalid_signal", **details)
    assert api.get("/signals").json() == []


# ------------------------------------------------------------------------ event stream


class SseReader:
    """Reads Server-Sent Events from a streaming ``requests`` response on a thread of its own."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self._cond = threading.Condition()
        self.messages: list[dict[str, str]] = []
        self.comments: list[str] = []
        self._thread = threading.Thread(target=self._read, name="sse-reader")
        self._thread.start()

    def _read(self) -> None:
        message: dict[str, str] = {}
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                with self._cond:
                    if line == "":
                        if "event" in message:
                            self.messages.append(message)
                        message = {}
                    elif line.startswith(":"):
                        self.comments.append(line[1:].strip())
                    else:
                        key, _, value = line.partition(":")
                        message[key] = value.strip()
                    self._cond.notify_all()
        except Exception:  # closed under our feet: the test ended the stream
            pass
        with self._cond:
            self.messages.append({"event": "<end>"})
            self._cond.notify_all()

    def wait_for(self, test: Callable[[], bool], timeout: float = 10.0) -> None:
        with self._cond:
            assert self._cond.wait_for(test, timeout), (self.messages, self.comments)

    def events(self, name: str) -> list[dict[str, Any]]:
        with self._cond:
            return [json.loads(m["data"]) for m in self.messages if m.get("event") == name]

    def close(self) -> None:
        self.response.close()
        self._thread.join(10)


def open_stream(api: Any, **params: Any) -> SseReader:
    response = api.get("/events/stream", params=params, stream=True)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return SseReader(response)


def test_event_stream_delivers_events_and_heartbeats(make_api: Callable[..., Any]) -> None:
    api = make_api(heartbeat_seconds=0.05)
    reader = open_stream(api)
    try:
        reader.wait_for(lambda: "heartbeat" in reader.comments)
        op = api.add({"payload": {"task": "pick"}})[0]
        api.dispatcher.complete_operation(op["id"])
        reader.wait_for(lambda: bool(reader.events("operation_completed")))
        names = [m.get("event") for m in reader.messages]
        assert names == ["operation_added", "operation_started", "operation_completed"]
        added = reader.events("operation_added")[0]
        assert added["operation_id"] == op["id"]
        assert reader.messages[0]["id"] == added["id"]
        assert "operation_start_requested" not in names  # only with include_requests
    finally:
        reader.close()


def test_event_stream_with_requests(make_api: Callable[..., Any]) -> None:
    api = make_api()
    reader = open_stream(api, include_requests="true")
    try:
        api.add({"payload": {}})
        reader.wait_for(lambda: bool(reader.events("operation_started")))
        assert [m["event"] for m in reader.messages] == [
            "operation_added", "operation_start_requested", "operation_started"]
    finally:
        reader.close()
    assert_error(api.get("/events/stream", params={"include_requests": "perhaps"}), 400,
                 "invalid_request", field="include_requests")


def test_event_stream_client_that_leaves_is_unsubscribed(make_api: Callable[..., Any]) -> None:
    api = make_api(heartbeat_seconds=0.05, max_event_streams=2)
    first, second = open_stream(api), open_stream(api)
    assert api.get("/health").json()["event_stream_clients"] == 2
    assert_error(api.get("/events/stream"), 503, "too_many_event_streams")
    first.close()
    second.close()
    deadline = time.monotonic() + 10
    while api.get("/health").json()["event_stream_clients"]:  # noticed at the next heartbeat
        assert time.monotonic() < deadline, "a client that left is still subscribed"
    reader = open_stream(api)  # room again
    reader.close()


def test_server_stop_ends_open_streams(make_api: Callable[..., Any]) -> None:
    api = make_api(heartbeat_seconds=60)  # no heartbeat would come in time
    reader = open_stream(api)
    reader.wait_for(lambda: bool(reader.comments))
    started = time.monotonic()
    api.server.stop()
    reader.wait_for(lambda: reader.messages[-1:] == [{"event": "<end>"}])
    assert time.monotonic() - started < 5
    reader.close()


# -------------------------------------------------------------------- token and docs


def spec_requests(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(method, path) of every operation in the spec, path parameters filled in."""
    calls = []
    for path, item in spec["paths"].items():
        concrete = path.replace("{operation_id}", UNKNOWN).replace(
            "{request_id}", UNKNOWN).replace("{name}", "plc.ready")
        for method in item:
            calls.append((method.upper(), concrete))
    return calls


def test_token_guards_every_route_but_health(make_client: Callable[..., Any]) -> None:
    api = make_client(token="s3cret")
    spec = api.app.api_doc
    calls = spec_requests(spec) + [("GET", "/openapi.json"), ("GET", "/apidocs"),
                                   ("GET", "/nowhere")]
    assert len(calls) > 20
    for method, path in calls:
        if path == "/health":
            continue
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
                        {"Authorization": "Basic s3cret"}):
            if path == "/auth/whoami" and not headers:
                continue  # it answers "a token is needed" and no scope (test_dashboard_http.py)
            response = api.request(method, path, headers=headers, json={})
            assert_error(response, 401, "unauthorized")
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert api.get("/health").status_code == 200
    assert api.dispatcher.get_schedule() == []  # nothing got through
    good = {"Authorization": "Bearer s3cret"}
    assert api.get("/operations", headers=good).status_code == 200
    assert api.get("/openapi.json", headers=good).status_code == 200
    assert api.post("/operations/add", json=[{"payload": {}}], headers=good).status_code == 201
    assert spec["components"]["securitySchemes"] == {
        "bearerAuth": {"type": "http", "scheme": "bearer"}}
    assert spec["paths"]["/operations"]["get"]["security"] == [{"bearerAuth": []}]
    assert "security" not in spec["paths"]["/health"]["get"]


def test_without_token_everything_is_open(make_client: Callable[..., Any]) -> None:
    api = make_client()
    assert api.get("/operations").status_code == 200
    assert "securitySchemes" not in api.app.api_doc.get("components", {})


def test_openapi_document(make_client: Callable[..., Any]) -> None:
    api = make_client(start=False)
    spec = api.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    routes = {(m, p) for m, p in ((m.upper(), p) for p, item in spec["paths"].items()
                                  for m in item)}
    assert routes >= {
        ("GET", "/operations"), ("GET", "/operations/current"), ("GET", "/operations/history"),
        ("GET", "/operations/{operation_id}"), ("GET", "/operations/{operation_id}/events"),
        ("GET", "/operations/{operation_id}/explain"), ("POST", "/operations/add"),
        ("POST", "/operations/{operation_id}/update"), ("POST", "/operations/{operation_id}/cancel"),
        ("POST", "/operations/{operation_id}/pause"), ("POST", "/operations/{operation_id}/resume"),
        ("GET", "/dispatcher"), ("POST", "/dispatcher/start"), ("POST", "/dispatcher/stop"),
        ("POST", "/dispatcher/pause"), ("POST", "/dispatcher/resume"), ("GET", "/requests"),
        ("POST", "/requests/{request_id}/approve"), ("POST", "/requests/{request_id}/deny"),
        ("GET", "/signals"), ("PUT", "/signals/{name}"), ("GET", "/events/stream"),
        ("GET", "/health"),
    }
    components = spec["components"]["schemas"]
    for name in ("ErrorResponse", "Operation", "OperationStatus", "OperationDependency",
                 "ChangeRecord", "DispatchEvent", "TimeWindow", "History",
                 "OperationDispatcherState", "OperationDispatcherRuntimeActionResponse",
                 "AddOperationItem", "UpdateOperationItem", "LifecycleCommand",
                 "CancelOperationCommand"):
        assert name in components, name
    add = spec["paths"]["/operations/add"]["post"]
    body_schema = add["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema == {"$ref": "#/components/schemas/AddOperationItems"}
    item = components["AddOperationItem"]
    assert item["required"] == ["payload"] and item["additionalProperties"] is False
    assert {"release_conditions", "timeout_seconds"} <= set(item["properties"])
    assert "resource_id" not in item["properties"]
    assert add["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"}


@pytest.mark.parametrize(
    ("response_model", "core_model", "extra"),
    [
        (schemas.Operation, core.Operation, set()),
        (schemas.OperationProgress, core.OperationProgress, set()),
        (schemas.OperationDependency, core.OperationDependency, set()),
        (schemas.DispatchEvent, core.DispatchEvent, set()),
        (schemas.ChangeRecord, core.ChangeRecord, set()),
        (schemas.TimeWindow, core.TimeWindow, set()),
        (schemas.History, core.History, set()),
        (schemas.OperationDispatcherState, core.OperationDispatcherState,
         {"runtime_thread_alive", "runtime_last_error"}),
    ],
)
def test_response_models_describe_the_wire_form(
    response_model: Any, core_model: Any, extra: set[str]
) -> None:
    """The documented response fields are exactly the ones ``to_dict()`` produces."""
    assert set(response_model.model_fields) == {
        f.name for f in dataclasses.fields(core_model)} | extra


def test_response_models_validate_real_answers(make_client: Callable[..., Any]) -> None:
    api = make_client()
    api.put("/signals/x", json={"value": 1, "max_age_seconds": 9})
    op = api.add({"payload": {"a": [1]}, "release_conditions": {"x": 1},
                  "dependencies": []}, {"payload": {}})[0]
    api.dispatcher.report_progress(op["id"], 0.5, "half")
    schemas.OperationStatusList.model_validate(api.get("/operations").json())
    schemas.OperationStatus.model_validate(
        api.post(f"/operations/{op['id']}/progress", json={"fraction": 0.75}).json())
    api.dispatcher.complete_operation(op["id"])
    schemas.OperationStatusList.model_validate(api.get("/operations").json())
    schemas.History.model_validate(api.get("/operations/history").json())
    schemas.DispatchEventList.model_validate(api.get(f"/operations/{op['id']}/events").json())
    schemas.OperationDispatcherState.model_validate(api.get("/dispatcher").json())
    schemas.SignalList.model_validate(api.get("/signals").json())
    schemas.Health.model_validate(api.get("/health").json())
    schemas.ApiIndex.model_validate(api.get("/").json())


def test_swagger_ui_is_served_from_installed_files(make_client: Callable[..., Any]) -> None:
    from html.parser import HTMLParser
    from urllib.parse import urlsplit

    class Links(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.urls: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.urls += [v for k, v in attrs if k in ("src", "href") and v]

    api = make_client(start=False)
    for path in ("/apidocs", "/apidocs/"):
        page = api.get(path)
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    parser = Links()
    parser.feed(page.text)
    assert len(parser.urls) == 4  # icon, css, two scripts
    for url in parser.urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, url  # same origin: no CDN
        asset = api.get(url)
        assert asset.status_code == 200 and len(asset.content) > 1000, url
    assert "http://" not in page.text and "https://" not in page.text
    assert 'url: "/openapi.json"' in page.text
    assert "validatorUrl: null" in page.text  # the online validator badge would call out


def test_index_health_and_unknown_routes(make_client: Callable[..., Any]) -> None:
    api = make_client()
    index = api.get("/").json()
    assert index["resource_id"] == "robot-1"
    assert index["links"]["apidocs"] == "/apidocs"
    assert api.get("/health").json() == {"status": "ok", "dispatcher_running": True,
                                         "event_stream_clients": 0}
    assert_error(api.get("/operation_dispatcher/queue"), 404, "not_found")
    assert_error(api.post("/operations:batch"), 404, "not_found")
    body = assert_error(api.post("/operations", json=[]), 405, "method_not_allowed")
    assert "GET" in body["message"]
    assert_error(api.request("DELETE", "/signals/plc.ready"), 405, "method_not_allowed")

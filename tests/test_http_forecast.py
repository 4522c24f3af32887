"""``GET /forecast`` over the REST API: its shape, its order, its scope and its documentation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from conftest import EventRecorder, assert_error

from operation_dispatcher import EventType

KEYS = {
    "operation_id", "job_id", "state", "expected_start", "expected_end", "blocked_by",
    "misses_due_date", "due_date", "overrun",
}


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_forecast_lists_the_running_operation_then_the_queue(
    make_client: Callable[..., Any],
) -> None:
    api = make_client()
    recorder = EventRecorder(api.dispatcher)
    (first,) = api.add({"payload": {"task": "a"}, "planned_duration": 60, "job_id": "j1"})
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=UUID(first["id"]))
    second, blocked, third = api.add(
        {"payload": {"task": "b"}, "planned_duration": 30, "job_id": "j2"},
        {"payload": {"task": "c"}, "planned_duration": 5,
         "release_conditions": {"plc.ready": True}},
        {"payload": {}, "planned_duration": 5},
    )
    response = api.get("/forecast")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"generated_at", "operations"}
    generated = parse(body["generated_at"])
    assert body["generated_at"].endswith("Z")
    ops = body["operations"]
    assert [o["operation_id"] for o in ops] == [first["id"], second["id"], blocked["id"],
                                                 third["id"]]
    assert all(set(o) == KEYS for o in ops)
    current = ops[0]
    assert current["state"] == "RUNNING" and current["job_id"] == "j1"
    started = parse(api.get(f"/operations/{first['id']}").json()["operation"]["start_time"])
    assert parse(current["expected_start"]) == started
    assert parse(current["expected_end"]) == started + timedelta(seconds=60)
    assert generated >= started
    assert parse(ops[1]["expected_start"]) == parse(current["expected_end"])
    assert ops[2]["blocked_by"] == "release_condition:plc.ready"
    assert ops[2]["expected_start"] is None and ops[2]["misses_due_date"] is None
    # the blocked one is passed (no strict order): the third follows the second
    assert ops[3]["expected_start"] == ops[1]["expected_end"]


def test_forecast_flags_a_due_date_it_will_miss(make_client: Callable[..., Any]) -> None:
    api = make_client()
    now = datetime.now().astimezone()
    late, in_time = api.add(
        {"payload": {}, "planned_duration": 3600, "due_date": (now + timedelta(minutes=1)).isoformat()},
        {"payload": {}, "planned_duration": 10, "due_date": (now + timedelta(hours=2)).isoformat()},
    )
    ops = {o["operation_id"]: o for o in api.get("/forecast").json()["operations"]}
    assert ops[late["id"]]["misses_due_date"] is True
    assert ops[in_time["id"]]["misses_due_date"] is False
    assert ops[in_time["id"]]["due_date"] == in_time["due_date"]


def test_a_held_dispatcher_is_the_blocker(make_client: Callable[..., Any]) -> None:
    api = make_client(start=False)
    soon = (datetime.now().astimezone() + timedelta(hours=1)).isoformat()
    api.add({"payload": {}, "planned_duration": 10, "due_date": soon})
    (entry,) = api.get("/forecast").json()["operations"]
    assert entry["blocked_by"] == "dispatcher_not_running"
    assert entry["expected_start"] is None
    assert entry["misses_due_date"] is None  # not started, due in an hour: unknown
    api.dispatcher.pause_dispatcher_runtime()
    api.dispatcher.start()
    (entry,) = api.get("/forecast").json()["operations"]
    assert entry["blocked_by"] == "dispatcher_paused"


def test_forecast_of_an_empty_dispatcher(make_client: Callable[..., Any]) -> None:
    body = make_client().get("/forecast").json()
    assert body["operations"] == []


def test_forecast_needs_only_the_read_scope(make_client: Callable[..., Any]) -> None:
    api = make_client(tokens={"viewer": {"token": "view-secret", "scopes": ["read"]}})
    assert_error(api.get("/forecast"), 401, "unauthorized")
    ok = api.get("/forecast", headers={"Authorization": "Bearer view-secret"})
    assert ok.status_code == 200, ok.text


def test_forecast_is_documented(make_client: Callable[..., Any]) -> None:
    spec = make_client(start=False).get("/openapi.json").json()
    route = spec["paths"]["/forecast"]["get"]
    assert route["operationId"] == "get_forecast"
    schema_ref = route["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    name = schema_ref.rsplit("/", 1)[-1]
    schema = spec["components"]["schemas"][name]
    assert set(schema["properties"]) == {"generated_at", "operations"}
    item = spec["components"]["schemas"]["ForecastOperation"]
    assert set(item["properties"]) == KEYS

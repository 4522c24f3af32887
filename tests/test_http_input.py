"""Hostile input over HTTP: non-finite and huge numbers, lone surrogates, broken UTF-8, and a
journal that fails under every write route (issue 10, D.13, D.14, E.21).

Through Flask's test client (the app parses and answers; the server adds nothing); answers are
parsed with a strict JSON reader that refuses NaN and Infinity, as a browser or any other
language would.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import EventRecorder, assert_error

from operation_dispatcher import EventType, OperationDispatcher
from operation_dispatcher.errors import JournalError

JSON = {"Content-Type": "application/json"}
HUGE = "9" * 5000  # json and str() refuse ints over 4,300 digits


def strict_json(text: str) -> Any:
    """Parse as every non-Python client does: NaN and Infinity are not JSON."""
    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def post_raw(api: Any, path: str, text: str | bytes) -> Any:
    return api.post(path, data=text, headers=JSON)


# ----------------------------------------------------------------- D.13 non-finite numbers


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('[{"payload": {"x": 1e400}}]', "[0].payload.x"),
        ('[{"payload": {"x": -1e400}}]', "[0].payload.x"),
        ('[{"payload": {"a": [1, {"b": 1e999}]}}]', "[0].payload.a[1].b"),
        ('[{"payload": {}, "release_conditions": {"plc.speed": 1e400}}]',
         "[0].release_conditions.plc.speed"),
        ('[{"payload": {}, "timeout_seconds": 1e400}]', "[0].timeout_seconds"),
        ('[{"payload": {}, "planned_duration": -1e400}]', "[0].planned_duration"),
        (f'[{{"payload": {{"n": {HUGE}}}}}]', "[0].payload.n"),
        (f'[{{"payload": {{}}, "priority": -{HUGE}}}]', "[0].priority"),
    ],
)
def test_add_refuses_non_finite_and_huge_numbers_naming_the_field(
    make_client: Callable[..., Any], body: str, field: str
) -> None:
    api = make_client(start=False)
    reply = assert_error(post_raw(api, "/operations/add", body), 400, "invalid_operations",
                         field=field)
    assert field in reply["message"]
    assert api.dispatcher.get_schedule() == []
    for path in ("/operations", "/operations/history", "/signals"):
        response = api.get(path)
        assert response.status_code == 200
        strict_json(response.text)  # still standard JSON for every client


def test_every_body_refuses_non_finite_numbers(make_client: Callable[..., Any]) -> None:
    api = make_client(start=False)
    op = api.add({"payload": {}})[0]
    cases = [
        ("PUT", "/signals/plc.speed", '{"value": 1e400}', "invalid_signal", "value"),
        ("PUT", "/signals/plc.speed", '{"value": [1e400]}', "invalid_signal", "value[0]"),
        ("PUT", "/signals/plc.speed", '{"value": 1, "max_age_seconds": 1e400}',
         "invalid_signal", "max_age_seconds"),
        ("PUT", "/signals/plc.speed", f'{{"value": {HUGE}}}', "invalid_signal", "value"),
        ("POST", f"/operations/{op['id']}/update", '{"payload": {"x": 1e400}}',
         "invalid_updates", "payload.x"),
        ("POST", f"/operations/{op['id']}/update", '{"priority": 1e400}',
         "invalid_updates", "priority"),
        ("POST", f"/operations/{op['id']}/cancel", '{"meta_data": {"x": -1e400}}',
         "invalid_request_body", "meta_data.x"),
        ("POST", f"/operations/{op['id']}/pause", '{"meta_data": {"x": 1e400}}',
         "invalid_request_body", "meta_data.x"),
        ("POST", f"/requests/{op['id']}/approve", '{"data": {"x": 1e400}}',
         "invalid_request_body", "data.x"),
    ]
    for method, path, body, code, field in cases:
        response = api.request(method, path, data=body, headers=JSON)
        assert_error(response, 400, code, field=field)
    assert api.dispatcher.signals.get("plc.speed") is None
    assert api.dispatcher.get_operation(op["id"]).payload == {}
    strict_json(api.get("/signals").text)


def test_a_non_finite_value_that_got_in_anyway_is_a_500_not_invalid_json(
    make_client: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenBridge:  # a user's bridge whose status holds an infinite number
        name = "plc"

        def status(self) -> dict[str, Any]:
            return {"name": "plc", "kind": "modbus", "endpoint": "tcp://x", "running": True,
                    "online": True, "counters": {"reads": math.inf}}

    api = make_client(start=False, bridges=[BrokenBridge()])
    response = api.get("/bridges")
    assert_error(response, 500, "internal_error")
    strict_json(response.text)
    assert any("GET /bridges failed" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ E.21 lone surrogates


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('[{"payload": {"x": "\\ud800"}}]', "[0].payload.x"),
        ('[{"payload": {"\\udfff": 1}}]', "[0].payload"),
        ('[{"payload": {}, "job_id": "job-\\ud800"}]', "[0].job_id"),
        ('[{"payload": {}, "release_conditions": {"plc.\\ud800": true}}]',
         "[0].release_conditions"),
        ('[{"payload": {}, "release_conditions": {"plc.mode": "\\udc00"}}]',
         "[0].release_conditions.plc.mode"),
    ],
)
def test_add_refuses_lone_surrogates(make_client: Callable[..., Any], body: str, field: str) -> None:
    api = make_client(start=False)
    reply = assert_error(post_raw(api, "/operations/add", body), 400, "invalid_operations")
    assert reply["details"]["field"].startswith(field), reply
    assert "surrogate" in reply["message"]
    assert api.dispatcher.get_schedule() == []


def test_other_bodies_refuse_lone_surrogates_and_broken_utf8(
    make_client: Callable[..., Any]
) -> None:
    api = make_client(start=False)
    op = api.add({"payload": {}})[0]
    cases = [
        ("PUT", "/signals/plc.mode", '{"value": "\\ud800"}', "invalid_signal"),
        ("POST", f"/operations/{op['id']}/update", '{"payload": {"k": "\\ud800"}}',
         "invalid_updates"),
        ("POST", f"/operations/{op['id']}/cancel", '{"meta_data": {"why": "\\ud800"}}',
         "invalid_request_body"),
        ("POST", f"/requests/{op['id']}/deny", '{"reasoning": "\\ud800"}',
         "invalid_request_body"),
    ]
    for method, path, body, code in cases:
        reply = assert_error(api.request(method, path, data=body, headers=JSON), 400, code)
        assert "surrogate" in reply["message"]
    # raw bytes: a UTF-8-encoded surrogate (what Python's json would decode with surrogatepass),
    # a lone continuation byte and a truncated sequence
    for raw in (b"\xed\xa0\x80", b"\x80", b"\xe2\x82"):
        body = b'[{"payload": {"x": "' + raw + b'"}}]'
        reply = assert_error(post_raw(api, "/operations/add", body), 400, "invalid_operations")
        assert "not UTF-8" in reply["message"]
        reply = assert_error(api.put("/signals/plc.mode", data=b'{"value": "' + raw + b'"}',
                                     headers=JSON), 400, "invalid_signal")
    assert api.dispatcher.signals.get("plc.mode") is None
    assert len(api.dispatcher.get_schedule()) == 1
    # a signal name with a surrogate in the path is not a name that can be stored either
    for name in ("plc.%ED%A0%80", "plc.%FF"):
        reply = assert_error(api.put(f"/signals/{name}", json={"value": 1}), 400,
                             "invalid_signal_name", field="name")
        assert "UTF-8" in reply["message"]
    assert api.dispatcher.signals.snapshot() == []
    strict_json(api.get("/operations").text)


def test_valid_unicode_is_kept(make_client: Callable[..., Any]) -> None:
    api = make_client(start=False)
    text = "Grüße ✓ 🤖 \u00e9"
    op = api.add({"payload": {text: text}, "job_id": text})[0]
    assert op["payload"] == {text: text} and op["job_id"] == text
    assert api.put("/signals/plc.mode", json={"value": text}).json()["value"] == text


# -------------------------------------------------------------- D.14 one table of statuses


def break_journal(dispatcher: OperationDispatcher) -> None:
    """From now on every journal write fails in SQLite (reads still work), as on a full disk.

    The loop is stopped first: what its own thread does with a failing journal is another
    item of the issue (C.7); here only the answers of the routes count.
    """
    dispatcher.stop(timeout=5.0)
    dispatcher.journal._conn.execute("PRAGMA query_only = ON")


def test_a_failing_journal_is_503_journal_unavailable_on_every_write_route(
    make_client: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher],
    tmp_path: Path,
) -> None:
    dispatcher = make_dispatcher(journal=tmp_path / "journal.db")
    recorder = EventRecorder(dispatcher)
    api = make_client(dispatcher)
    running = api.add({"payload": {"n": 1}})[0]
    assert running["state"] == "RUNNING"
    queued = api.add({"payload": {"n": 2}})[0]
    assert api.post(f"/operations/{running['id']}/pause").status_code == 200
    recorder.wait_for(EventType.OPERATION_PAUSED)

    break_journal(dispatcher)

    def journal_down(response: Any) -> None:
        body = assert_error(response, 503, "journal_unavailable")
        assert "journal" in body["message"]

    journal_down(api.post("/operations/add", json=[{"payload": {}}]))
    journal_down(api.post(f"/operations/{queued['id']}/update", json={"priority": 5}))
    journal_down(api.post(f"/operations/{running['id']}/resume"))
    journal_down(api.post(f"/operations/{queued['id']}/cancel"))
    started = api.post("/dispatcher/start")  # the runtime routes keep the original's shape
    assert started.status_code == 503 and started.json()["code"] == "journal_unavailable"
    assert not dispatcher.is_running
    for finish in (dispatcher.complete_operation, dispatcher.fail_operation):
        with pytest.raises(JournalError):  # the Python API says the same, by its class
            finish(running["id"])


def test_pause_with_a_failing_journal_is_503(
    make_client: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher],
    tmp_path: Path,
) -> None:
    dispatcher = make_dispatcher(journal=tmp_path / "journal.db")
    api = make_client(dispatcher)
    running = api.add({"payload": {"n": 1}})[0]
    assert running["state"] == "RUNNING"
    break_journal(dispatcher)
    assert_error(api.post(f"/operations/{running['id']}/pause"), 503, "journal_unavailable")


def test_views_choose_codes_never_statuses() -> None:
    """Every status a view answers for a dispatcher error is the table's."""
    source = "".join(
        (Path(__file__).parents[1] / "operation_dispatcher" / "http" / name).read_text()
        for name in ("operations.py", "signals.py", "approvals.py")
    )
    assert "RuntimeError" not in source
    assert "except DispatcherError" not in source


# ------------------------------------------------- issue 11: one validation, errors by type


def test_error_messages_come_from_the_error_type_and_ctx_never_pydantic_english() -> None:
    """pydantic's ``msg`` may change with any release: the envelope is built without it."""
    from operation_dispatcher.errors import ValidationError
    from operation_dispatcher.http.schemas import describe_error

    garbage = "Eingabe sollte größer sein"  # what a changed or translated pydantic might say
    cases = [
        ({"type": "greater_than", "ctx": {"gt": 0.0}, "input": 0},
         "timeout_seconds must be greater than 0 (got 0)"),
        ({"type": "less_than_equal", "ctx": {"le": 1e9}, "input": 2e9},
         "timeout_seconds must be less than or equal to 1000000000 (got 2000000000.0)"),
        ({"type": "too_long", "ctx": {"max_length": 1000, "actual_length": 1001}},
         "timeout_seconds must have at most 1000 items"),
        ({"type": "value_error",
          "ctx": {"error": ValidationError("release_date", "must be less than 100 years from now")}},
         "timeout_seconds must be less than 100 years from now"),
        ({"type": "some_future_type"}, "timeout_seconds is invalid (some_future_type)"),
    ]
    for error, message in cases:
        assert describe_error("timeout_seconds", {**error, "msg": garbage}) == message


@pytest.mark.parametrize(
    ("item", "field", "reason"),
    [
        ({"release_date": "2226-01-01T00:00:00Z"}, "release_date", "less than 100 years"),
        ({"timeout_seconds": 1e9 + 1}, "timeout_seconds", "less than or equal to 1000000000"),
        ({"planned_duration": 0}, "planned_duration", "greater than 0"),
    ],
)
def test_http_refuses_what_the_core_refuses_with_the_same_limits(
    make_api: Callable[..., Any], item: dict[str, Any], field: str, reason: str
) -> None:
    """One set of limits: HTTP and the Python API refuse the same values by the same field."""
    from operation_dispatcher import Operation, ValidationError

    api = make_api(start=False)
    reply = assert_error(api.post("/operations/add", json=[{"payload": {}, **item}]), 400,
                         "invalid_operation", field=field, index=0)
    assert reason in reply["message"]
    with pytest.raises(ValidationError) as raised:
        Operation(resource_id="robot-1", **item)
    assert raised.value.field == field


def test_request_schemas_accept_exactly_what_the_core_accepts() -> None:
    """The HTTP field types are the core's rules: same fields, same bounds, same verdicts."""
    from datetime import UTC, datetime, timedelta

    from pydantic import TypeAdapter
    from pydantic import ValidationError as PydanticError

    from operation_dispatcher import _checks
    from operation_dispatcher.errors import ValidationError
    from operation_dispatcher.http.schemas import (
        AddOperationItem,
        ReleaseDate,
        Seconds,
        UpdateOperationItem,
    )
    from operation_dispatcher.models import UPDATABLE_FIELDS

    assert set(UpdateOperationItem.model_fields) == UPDATABLE_FIELDS
    assert set(AddOperationItem.model_fields) == UPDATABLE_FIELDS | {"job_id"}

    def verdicts(type_: Any, check: Callable[[Any], Any], values: list[Any]) -> None:
        adapter = TypeAdapter(type_)
        for value in values:
            try:
                check(value)
            except ValidationError:
                core = False
            else:
                core = True
            try:
                adapter.validate_python(value)
            except PydanticError:
                http = False
            else:
                http = True
            assert http is core, (value, http, core)

    verdicts(Seconds, lambda v: _checks.seconds(v, "s"),
             [0, -1, 0.1, 5, 1e9, 1e9 + 1, math.nan, math.inf, True, "5"])
    now = datetime.now(UTC)
    verdicts(ReleaseDate, lambda v: _checks.not_too_far(v, "release_date"),
             [now, now + timedelta(days=365 * 99), now + timedelta(days=365 * 101)])


def test_an_error_of_a_model_without_describe_is_still_built_from_type_and_loc() -> None:
    """No client ever sees pydantic's own text, not even for a model no view claims."""
    from flask import Flask
    from pydantic import BaseModel, StrictInt
    from pydantic import ValidationError as PydanticError

    from operation_dispatcher.http.errors import validation_error_response

    class Unlisted(BaseModel):
        count: StrictInt

    try:
        Unlisted.model_validate({"count": "3"})
    except PydanticError as exc:
        with Flask(__name__).app_context():
            response = validation_error_response(exc)
    body = response.get_json()
    assert response.status_code == 400
    assert body == {"error": "count must be an integer (got '3')",
                    "message": "count must be an integer (got '3')",
                    "code": "invalid_request", "details": {"field": "count"}}

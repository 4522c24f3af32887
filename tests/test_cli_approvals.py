"""``[approvals]`` in ``serve``: a start held for the operator over real HTTP (serve in a
subprocess), the "deny" and "auto" policies, the operator's timeout, a restart with a request
open, and ``check-config`` against bad tables."""

from __future__ import annotations

import queue
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import assert_error, wait_until
from served import Served

from operation_dispatcher.cli import main

Serve = Callable[..., Served]


def _config(tmp_path: Path, approvals: str, dispatcher: str = "") -> str:
    path = tmp_path / "cell.toml"
    path.write_text(
        f"[dispatcher]\nresource_id = \"cell-1\"\n{dispatcher}\n"
        # a heartbeat (a comment line) every second lets the test close its stream promptly
        "[http]\nheartbeat_seconds = 1\n"
        f"[approvals]\n{approvals}\n",
        encoding="utf-8",
    )
    return str(path)


@contextmanager
def _event_stream(server: Served) -> Iterator[queue.Queue[str]]:
    """The event types ``GET /events/stream`` sends, as they arrive, on a queue."""
    response = server.session.get(server.url + "/events/stream", stream=True, timeout=60)
    assert response.status_code == 200
    types: queue.Queue[str] = queue.Queue()

    def read() -> None:
        try:
            for line in response.iter_lines(decode_unicode=True):
                if line.startswith("event: "):
                    types.put(line[len("event: "):])
        except Exception:  # closed under the reader at the end of the test
            pass

    reader = threading.Thread(target=read, name="test-event-stream-reader", daemon=True)
    reader.start()
    try:
        yield types
    finally:
        response.close()
        reader.join(10)


def _next_event(types: queue.Queue[str], wanted: str, timeout: float) -> bool:
    """Wait up to ``timeout`` s for event ``wanted`` (others are skipped); False if none came."""
    import time

    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            if types.get(timeout=remaining) == wanted:
                return True
        except queue.Empty:
            return False
    return False


def _pending(server: Served, other_than: str | None = None) -> dict[str, Any]:
    def find() -> list[dict[str, Any]]:
        return [r for r in server.get("/requests").json() if r["request_id"] != other_than]

    return wait_until(find, timeout=10, what="an open request")[0]


def _add(server: Served, **fields: Any) -> dict[str, Any]:
    response = server.post("/operations/add", json=[{"payload": {"task": "weld"}, **fields}])
    assert response.status_code == 201, response.text
    return response.json()[0]["operation"]


def _state(server: Served, operation_id: str) -> str:
    return server.get(f"/operations/{operation_id}").json()["operation"]["state"]


@pytest.mark.slow
def test_operator_start_waits_ten_seconds_then_starts(serve: Serve, tmp_path: Path) -> None:
    config = _config(tmp_path, 'start = "operator"', "start_request_max_retries = 1")
    server = serve("--config", config, "--journal", ":memory:")
    with _event_stream(server) as events:
        op = _add(server)
        assert op["state"] == "QUEUED"
        request = _pending(server)
        assert request["operation_id"] == op["id"]
        assert (request["waiting_for"], request["deadline"]) == ("operator", None)
        # ten seconds of real time with no start (nor denial, nor pause) on the event stream
        assert not _next_event(events, "operation_started", timeout=10)
        assert server.get("/requests").json() == [request]
        assert _state(server, op["id"]) == "QUEUED"
        assert server.get("/dispatcher").json()["is_paused"] is False
        explain = server.get(f"/operations/{op['id']}/explain").json()
        assert explain["blocked_by"] == ["awaiting_approval"]
        approved = server.post(f"/requests/{request['request_id']}/approve",
                               json={"reasoning": "operator on site"})
        assert approved.status_code == 200, approved.text
        assert _next_event(events, "operation_started", timeout=10)
    assert _state(server, op["id"]) == "RUNNING"
    assert server.stop()[0] == 0


def test_operator_deny_over_rest(serve: Serve, tmp_path: Path) -> None:
    config = _config(tmp_path, 'start = "operator"', "start_request_retry_cooldown_seconds = 60")
    server = serve("--config", config, "--journal", ":memory:")
    with _event_stream(server) as events:
        op = _add(server)
        request = _pending(server)
        denied = server.post(f"/requests/{request['request_id']}/deny",
                             json={"reasoning": "no material"})
        assert denied.status_code == 200 and denied.json()["accepted"] is False
        assert _next_event(events, "operation_start_denied", timeout=10)
    assert _state(server, op["id"]) == "QUEUED"
    history = server.get(f"/operations/{op['id']}/events").json()
    denial = [e for e in history if e["event_type"] == "operation_start_denied"][0]
    assert denial["meta_data"]["reasoning"] == "no material"
    assert server.get(f"/operations/{op['id']}/explain").json()["blocked_by"] == ["cooldown"]
    again = server.post(f"/requests/{request['request_id']}/approve", json={})
    assert assert_error(again, 409, "request_closed")["details"]["status"] == "denied"
    assert server.stop()[0] == 0


def test_deny_and_auto_policies(serve: Serve, tmp_path: Path) -> None:
    config = _config(tmp_path, 'start = "auto"\ncancel = "deny"')
    server = serve("--config", config, "--journal", ":memory:")
    op = _add(server)
    assert op["state"] == "RUNNING"  # "auto" with no callback: approved at once
    assert server.get("/requests").json() == []
    refused = server.post(f"/operations/{op['id']}/cancel", json={})
    assert_error(refused, 409, "operation_cancellation_denied")
    history = server.get(f"/operations/{op['id']}/events").json()
    denial = [e for e in history if e["event_type"] == "operation_cancel_denied"][0]
    assert denial["meta_data"]["reasoning"] == "approval_policy"
    assert denial["meta_data"]["decision_data"] == {"policy": 'approvals.cancel = "deny"'}
    assert _state(server, op["id"]) == "RUNNING"
    assert server.stop()[0] == 0


def test_deny_policy_never_starts(serve: Serve, tmp_path: Path) -> None:
    config = _config(tmp_path, 'start = "deny"', "start_request_retry_cooldown_seconds = 60")
    server = serve("--config", config, "--journal", ":memory:")
    with _event_stream(server) as events:
        op = _add(server)
        assert _next_event(events, "operation_start_denied", timeout=10)
    assert _state(server, op["id"]) == "QUEUED"
    assert server.get("/requests").json() == []
    assert server.stop()[0] == 0


def test_operator_timeout_expires_and_a_late_approval_is_refused(
    serve: Serve, tmp_path: Path
) -> None:
    config = _config(
        tmp_path, 'start = "operator"\noperator_timeout_seconds = 0.5',
        "start_request_max_retries = 1\nstart_request_retry_cooldown_seconds = 0.2",
    )
    server = serve("--config", config, "--journal", ":memory:")
    with _event_stream(server) as events:
        op = _add(server)
        first = _pending(server)
        assert first["deadline"] is not None
        for _ in range(2):  # two expiries, with max retries 1: never paused
            assert _next_event(events, "operation_start_denied", timeout=10)
    late = server.post(f"/requests/{first['request_id']}/approve", json={})
    assert assert_error(late, 409, "request_closed")["details"]["status"] == "expired"
    assert _state(server, op["id"]) == "QUEUED"
    assert server.get("/dispatcher").json()["is_paused"] is False
    history = server.get(f"/operations/{op['id']}/events").json()
    expiry = [e for e in history if e["event_type"] == "operation_start_denied"][0]
    assert expiry["meta_data"]["reasoning"] == "timeout"
    assert expiry["meta_data"]["counted"] is False
    assert server.stop()[0] == 0


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL])
def test_a_restart_asks_again(serve: Serve, tmp_path: Path, stop_signal: int) -> None:
    config = _config(tmp_path, 'start = "operator"')
    journal = str(tmp_path / "cell.db")
    server = serve("--config", config, "--journal", journal)
    op = _add(server)
    before = _pending(server)
    server.stop(stop_signal)

    again = serve("--config", config, "--journal", journal)
    after = _pending(again)
    assert after["operation_id"] == op["id"] and after["request_id"] != before["request_id"]
    assert _state(again, op["id"]) == "QUEUED"  # never treated as approved
    old = again.post(f"/requests/{before['request_id']}/approve", json={})
    assert_error(old, 404, "request_not_found")
    assert _state(again, op["id"]) == "QUEUED"
    assert again.post(f"/requests/{after['request_id']}/approve", json={}).status_code == 200
    wait_until(lambda: _state(again, op["id"]) == "RUNNING", timeout=10, what="the start")
    assert again.stop()[0] == 0


# ------------------------------------------------------------------------------ check-config


def test_check_config_reports_every_approvals_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[approvals]\nstart = "operatr"\ncancel = "operator"\npause = 3\nstop = "deny"\n'
        'operator_timeout_seconds = "5"\noperator_when_payload = "needs_operator"\n',
        encoding="utf-8",
    )
    assert main(["check-config", str(bad)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{bad}: approvals.start: must be one of 'auto', 'operator', 'mqtt', 'deny'",
        f"{bad}: approvals.pause: must be one of 'auto', 'operator', 'mqtt', 'deny'",
        f"{bad}: approvals.stop: unknown key (known: start, cancel, pause, resume, "
        "operator_timeout_seconds, operator_when_payload)",
        f"{bad}: approvals.operator_timeout_seconds: must be a number > 0 and <= 1e+09",
        f"{bad}: approvals.operator_when_payload: must be a list of payload keys, "
        'e.g. ["needs_operator"]',
    ]


@pytest.mark.parametrize(
    ("toml", "error"),
    [
        ("approvals = 3", "approvals: must be a table ([approvals])"),
        ("[approvals]\noperator_timeout_seconds = -1", "must be a number > 0"),
        ("[approvals]\noperator_timeout_seconds = 0", "must be a number > 0"),
        ("[approvals]\noperator_timeout_seconds = nan", "must be a number > 0"),
        ("[approvals]\noperator_timeout_seconds = inf", "must be a number > 0"),
        ("[approvals]\noperator_timeout_seconds = true", "must be a number > 0"),
        ("[approvals]\nstart = true", "approvals.start: must be one of"),
        ("[approvals]\nresume = \"Operator\"", "approvals.resume: must be one of"),
        ("[approvals]\noperator_when_payload = [1]", "each payload key must be a non-empty"),
        ('[approvals]\noperator_when_payload = [""]', "each payload key must be a non-empty"),
        ("[approvals]\noperator_when_payload = [" + ", ".join(f'"k{i}"' for i in range(40)) +
         "]", "at most 32 payload keys"),
        ('[approvals]\npause = "operator"',
         'approvals.pause: "operator" needs approvals.operator_timeout_seconds'),
        ('[approvals]\ncancel = "operator"\nresume = "operator"',
         'approvals.resume: "operator" needs approvals.operator_timeout_seconds'),
    ],
)
def test_check_config_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, error: str
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(toml + "\n", encoding="utf-8")
    assert main(["check-config", str(bad)]) == 1
    assert error in capsys.readouterr().out
    assert main(["serve", "--config", str(bad)]) == 2  # serve refuses it too, before starting
    assert error in capsys.readouterr().err


def test_check_config_accepts_a_full_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        '[approvals]\nstart = "operator"\ncancel = "operator"\npause = "deny"\n'
        'resume = "auto"\noperator_timeout_seconds = 600\n'
        'operator_when_payload = ["needs_operator"]\n',
        encoding="utf-8",
    )
    assert main(["check-config", str(good)]) == 0
    assert capsys.readouterr().out == f"{good}: OK\n"


def test_demo_operator_answers_only_the_auto_kinds(serve: Serve, tmp_path: Path) -> None:
    """With --demo the simulated operator is the request callback: "operator" starts wait for
    a person even so."""
    config = _config(tmp_path, 'start = "operator"')
    server = serve("--demo", "--config", config, "--journal", ":memory:")
    request = _pending(server)  # the demo feeds an operation every ~2 s
    assert request["waiting_for"] == "operator"
    running = server.get("/operations", params={"state": "RUNNING"}).json()
    assert running == []
    assert server.post(f"/requests/{request['request_id']}/approve", json={}).status_code == 200
    wait_until(lambda: _state(server, request["operation_id"]) != "QUEUED", timeout=10,
               what="the approved start")
    assert server.stop()[0] == 0


def test_operator_cancel_is_answered_while_its_http_request_waits(
    serve: Serve, tmp_path: Path
) -> None:
    config = _config(tmp_path, 'cancel = "operator"\noperator_timeout_seconds = 60')
    server = serve("--config", config, "--journal", ":memory:")
    op = _add(server)
    assert op["state"] == "RUNNING"  # start is "auto"
    answers: list[Any] = []
    caller = threading.Thread(
        target=lambda: answers.append(
            requests.post(f"{server.url}/operations/{op['id']}/cancel", json={}, timeout=30)
        ),
        name="test-cancel-over-http",
    )
    caller.start()
    request = _pending(server)
    assert request["event_type"] == "operation_cancel_requested"
    assert request["waiting_for"] == "operator" and request["deadline"] is not None
    assert caller.is_alive()  # the cancel waits for the operator inside its HTTP request
    assert server.post(f"/requests/{request['request_id']}/approve", json={}).status_code == 200
    caller.join(30)
    assert answers[0].status_code == 200, answers[0].text
    assert server.get(f"/operations/{op['id']}").json()["operation"]["outcome"] == "CANCELLED"
    assert server.stop()[0] == 0

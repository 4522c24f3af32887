"""The MCP server over real transports: streamable HTTP on a loopback port behind the REST API's
tokens and scopes, ``serve --mcp-port``, and ``operation-dispatcher mcp`` over stdio."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import requests
from conftest import EventRecorder, PendingCallback, op, wait_until
from mcp.client.streamable_http import streamable_http_client
from mcp_support import Session, run

from operation_dispatcher import PENDING, EventType, ExecutionState, OperationDispatcher
from operation_dispatcher.credentials import Credentials
from operation_dispatcher.mcp import TOOL_SCOPES, McpHttpServer, create_mcp_server

TOKENS = {
    "reader": {"token": "reader-token", "scopes": ["read"]},
    "shift-lead": {"token": "operator-token", "scopes": ["read", "operate"]},
    "mes": {"token": "mes-token", "scopes": ["submit"]},
}
UNKNOWN = "6f1c7a0e-2d4b-4c59-9a57-0b6b1f4a9e11"


def transport(url: str, token: str | None) -> Any:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers))


@pytest.fixture
def make_mcp_http(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> Iterator[Callable[..., McpHttpServer]]:
    """``make_mcp_http(dispatcher, **kwargs)`` -> a started McpHttpServer on a free port."""
    made: list[McpHttpServer] = []

    def factory(dispatcher: OperationDispatcher, **kwargs: Any) -> McpHttpServer:
        server = McpHttpServer(create_mcp_server(dispatcher), port=0, **kwargs)
        made.append(server)
        server.start()
        return server

    yield factory
    for server in made:
        server.stop()


def post(url: str, body: Any, token: str | None = None, raw: str | None = None) -> requests.Response:
    headers = {"Accept": "application/json, text/event-stream",
               "Content-Type": "application/json", "MCP-Protocol-Version": "2025-11-25"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else json.dumps(body)
    return requests.post(url, data=data, headers=headers, timeout=30)


# ------------------------------------------------------------------------ streamable HTTP


def test_streamable_http_with_a_token(
    make_dispatcher: Callable[..., OperationDispatcher],
    make_mcp_http: Callable[..., McpHttpServer],
) -> None:
    dispatcher = make_dispatcher()
    dispatcher.add_operation(op())
    server = make_mcp_http(dispatcher, credentials=Credentials.build("all-token", TOKENS))
    assert server.url.startswith("http://127.0.0.1:") and server.url.endswith("/mcp")
    assert server.is_alive

    async def body(s: Session) -> None:
        state = await s.ok("dispatcher_get_state")
        assert state["queue_size"] == len(dispatcher.get_schedule())
        added = await s.ok("dispatcher_add_operation", payload={"via": "http"})
        assert added["operation"]["payload"] == {"via": "http"}
        assert (await s.read("dispatcher://queue"))["total"] == state["queue_size"] + 1

    run(transport(server.url, "all-token"), body)
    run(transport(server.url, "all-token"), body, "legacy")
    for token in (None, "wrong-token", "all-token2", "Basic all-token"):
        refused = post(server.url, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, token)
        if token == "Basic all-token":  # the right token under the wrong scheme
            refused = requests.post(server.url, json={}, timeout=30,
                                    headers={"Authorization": token})
        assert refused.status_code == 401, refused.text
        assert refused.json()["code"] == "unauthorized"
        assert refused.headers["WWW-Authenticate"] == "Bearer"
    no_read = post(server.url, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, "mes-token")
    assert no_read.status_code == 403 and no_read.json()["code"] == "insufficient_scope"
    assert len(dispatcher.get_schedule()) == 3  # nothing was added by a refused request


MINIMAL_ARGUMENTS: dict[str, dict[str, Any]] = {
    "dispatcher_get_operation": {"operation_id": UNKNOWN},
    "dispatcher_explain_operation": {"operation_id": UNKNOWN},
    "dispatcher_add_operation": {"payload": {}},
    "dispatcher_update_operation": {"operation_id": UNKNOWN, "updates": {}},
    "dispatcher_cancel_operation": {"operation_id": UNKNOWN},
    "dispatcher_pause_operation": {"operation_id": UNKNOWN},
    "dispatcher_resume_operation": {"operation_id": UNKNOWN},
    "dispatcher_report_progress": {"operation_id": UNKNOWN, "fraction": 0.5},
    "dispatcher_complete_operation": {"operation_id": UNKNOWN},
    "dispatcher_fail_operation": {"operation_id": UNKNOWN},
    "dispatcher_approve_request": {"request_id": UNKNOWN, "reasoning": "r"},
    "dispatcher_deny_request": {"request_id": UNKNOWN, "reasoning": "r"},
}


@pytest.mark.parametrize("mode", ["auto", "legacy"])  # stateless calls, and a session
def test_each_tool_needs_the_scope_of_its_rest_route(
    make_dispatcher: Callable[..., OperationDispatcher],
    make_mcp_http: Callable[..., McpHttpServer],
    mode: str,
) -> None:
    dispatcher = make_dispatcher()
    server = make_mcp_http(dispatcher, credentials=Credentials.build(None, TOKENS))

    async def body(s: Session) -> dict[str, str]:
        answers = {}
        for tool in TOOL_SCOPES:
            result = await s.client.call_tool(tool, MINIMAL_ARGUMENTS.get(tool, {}))
            answers[tool] = result.content[0].text if result.is_error else "ok"
        return answers

    answers = run(transport(server.url, "reader-token"), body, mode)
    for tool, scope in TOOL_SCOPES.items():
        refused = f"this token lacks the scope {scope!r} that the tool {tool} needs" in answers[tool]
        assert refused is (scope != "read"), (tool, answers[tool])
    assert dispatcher.get_schedule() == [] and not dispatcher.is_paused


def test_an_operator_token_approves_over_http_and_its_name_is_recorded(
    make_dispatcher: Callable[..., OperationDispatcher],
    make_mcp_http: Callable[..., McpHttpServer],
) -> None:
    callback = PendingCallback()
    dispatcher = make_dispatcher(on_request_callback=callback, request_event_timeout_seconds=60.0)
    recorder = EventRecorder(dispatcher)
    dispatcher.start()
    added = dispatcher.add_operation(op())
    callback.wait_for()
    server = make_mcp_http(dispatcher, credentials=Credentials.build(None, TOKENS))

    async def body(s: Session) -> None:
        (request,) = (await s.ok("dispatcher_list_requests"))["requests"]
        decision = await s.ok("dispatcher_approve_request", request_id=request["request_id"],
                              reasoning="checked the fixture")
        assert decision["decided_by"] == "shift-lead"

    run(transport(server.url, "operator-token"), body)
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=added.id)
    assert dispatcher.get_operation(added.id).state is ExecutionState.RUNNING  # type: ignore[union-attr]
    (requested,) = [e for e in dispatcher.list_events(added.id)
                    if e.event_type is EventType.OPERATION_START_REQUESTED]
    assert requested.meta_data["request_decision"]["data"] == {
        "approved_by": "shift-lead", "channel": "mcp",
    }


MODERN = "2026-07-28"
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {}}


def raw_tool_call(url: str, tool: str, arguments: str) -> requests.Response:
    """One stateless tools/call of the current protocol, its arguments written by hand."""
    body = ('{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": '
            f'"{tool}", "arguments": {arguments}, "_meta": {json.dumps(ENVELOPE)}}}}}')
    headers = {"Accept": "application/json, text/event-stream",
               "Content-Type": "application/json", "MCP-Protocol-Version": MODERN,
               "Mcp-Method": "tools/call", "Mcp-Name": tool}
    return requests.post(url, data=body, headers=headers, timeout=30)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"payload": {}, "planned_duration": NaN}', "planned_duration"),
        ('{"payload": {}, "planned_duration": Infinity}', "planned_duration"),
        ('{"payload": {}, "timeout_seconds": -Infinity}', "timeout_seconds"),
        ('{"payload": {}, "priority": 1e400}', "priority"),
        ('{"payload": {}, "priority": 99999999999999999999999999999999999999}', "priority"),
        ('{"payload": {"x": NaN}}', "payload"),
        ('{"payload": {"x": [1, 2, Infinity]}}', "payload"),
    ],
)
def test_raw_json_with_nan_or_huge_numbers_is_refused(
    make_dispatcher: Callable[..., OperationDispatcher],
    make_mcp_http: Callable[..., McpHttpServer],
    raw: str,
    field: str,
) -> None:
    """Sent as a client writing non-standard JSON would (the SDK's client turns NaN into null)."""
    dispatcher = make_dispatcher()
    server = make_mcp_http(dispatcher)
    answer = raw_tool_call(server.url, "dispatcher_add_operation", raw)
    assert answer.status_code == 200, answer.text
    result = answer.json()["result"]
    assert result["isError"] is True and field in result["content"][0]["text"], result
    assert dispatcher.get_schedule() == []
    good = raw_tool_call(server.url, "dispatcher_add_operation", '{"payload": {"x": 1.5}}')
    assert good.json()["result"]["isError"] is False
    assert len(dispatcher.get_schedule()) == 1


def test_a_body_over_the_limit_is_refused(
    make_dispatcher: Callable[..., OperationDispatcher],
    make_mcp_http: Callable[..., McpHttpServer],
) -> None:
    dispatcher = make_dispatcher()
    server = make_mcp_http(dispatcher, max_body_bytes=10_000)
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "dispatcher_add_operation", "arguments": {"payload": {"x": "y" * 20_000}}}}
    answer = post(server.url, call)
    assert answer.status_code == 413, answer.text
    assert dispatcher.get_schedule() == []


def test_stop_ends_the_mcp_thread_within_a_second_even_with_a_session_open(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher()
    server = McpHttpServer(create_mcp_server(dispatcher), port=0)
    server.start()
    name = f"operation-dispatcher-mcp[127.0.0.1:{server.port}]"
    assert name in {t.name for t in threading.enumerate()}
    took: list[float] = []

    async def body(s: Session) -> None:
        await s.ok("dispatcher_get_state")  # a session is open, its client still connected
        started = time.monotonic()
        await anyio.to_thread.run_sync(server.stop)
        took.append(time.monotonic() - started)

    try:
        run(transport(server.url, None), body)
    except Exception:  # the client may complain that its server went away: not the point here
        pass
    assert took and took[0] < 1.0, took
    assert not server.is_alive
    assert name not in {t.name for t in threading.enumerate()}
    server.stop()  # twice is harmless


def test_answers_are_not_held_back_by_nagle(
    make_dispatcher: Callable[..., OperationDispatcher],
    make_mcp_http: Callable[..., McpHttpServer],
) -> None:
    """asyncio turns TCP_NODELAY on only for sockets whose proto is IPPROTO_TCP; an accepted
    socket inherits the listening one's, and without it every answer waited ~40 ms for the
    client's delayed ACK. Checked on a connection the server accepted."""
    import socket

    server = make_mcp_http(make_dispatcher())
    with socket.create_connection((server.host, server.port)) as client:
        client.sendall(b"GET /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert client.recv(100).startswith(b"HTTP/1.1 ")
        accepted = [s for s in _server_sockets(server) if s.getpeername() == client.getsockname()]
        assert accepted and accepted[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def _server_sockets(server: McpHttpServer) -> list[Any]:
    """The sockets of the server's open connections (uvicorn keeps their transports)."""
    return [c.transport.get_extra_info("socket")
            for c in server._uvicorn.server_state.connections]


def test_a_port_in_use_fails_in_the_constructor(
    make_dispatcher: Callable[..., OperationDispatcher],
    make_mcp_http: Callable[..., McpHttpServer],
) -> None:
    dispatcher = make_dispatcher()
    first = make_mcp_http(dispatcher)
    with pytest.raises(OSError):
        McpHttpServer(create_mcp_server(dispatcher), port=first.port)


# ------------------------------------------------------------------------ the CLI


@pytest.mark.slow
def test_serve_serves_mcp_beside_rest(serve: Callable[..., Any], tmp_path: Path) -> None:
    """The cell's operator policy leaves a start PENDING; an agent (a token with read and
    operate) approves it over MCP and the operation runs; its name is in the history."""
    config = tmp_path / "cell.toml"
    config.write_text(
        '[approvals]\nstart = "operator"\n'
        '[http]\ntokens = { agent = { token = "agent-token", scopes = ["read", "operate"] } }\n'
        '[mcp]\nport = 0\n', encoding="utf-8")
    served = serve("--journal", ":memory:", "--config", str(config), "--token", "all-token")
    line = served._read_line(30)
    assert "MCP (streamable HTTP) on http://127.0.0.1:" in line, (line, served._rest())
    url = line.rsplit(" on ", 1)[1].strip()
    admin = {"Authorization": "Bearer all-token"}
    added = served.post("/operations/add", json=[{"payload": {"recipe": "A"}}], headers=admin)
    assert added.status_code == 201, added.text
    op_id = added.json()[0]["operation"]["id"]
    wait_until(lambda: served.get("/requests", headers=admin).json(), timeout=20,
               what="a pending start")

    async def body(s: Session) -> None:
        (request,) = (await s.ok("dispatcher_list_requests"))["requests"]
        assert request["operation_id"] == op_id
        decision = await s.ok("dispatcher_approve_request", request_id=request["request_id"],
                              reasoning="fixture checked")
        assert decision["decided_by"] == "agent"
        message = await s.error("dispatcher_pause_runtime")
        assert "lacks the scope 'admin'" in message

    run(transport(url, "agent-token"), body)
    state = wait_until(
        lambda: (served.get(f"/operations/{op_id}", headers=admin).json()["operation"]["state"]
                 == "RUNNING"), timeout=20, what="the approved operation running")
    assert state
    events = served.get(f"/operations/{op_id}/events", headers=admin).json()
    (requested,) = [e for e in events if e["event_type"] == "operation_start_requested"]
    assert requested["meta_data"]["request_decision"]["data"] == {
        "approved_by": "agent", "channel": "mcp"}
    assert post(url, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, "nope").status_code == 401
    status, _out, err = served.stop()
    assert status == 0, err
    assert "did not stop" not in err


@pytest.mark.slow
def test_serve_mcp_port_flag_is_checked(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "operation_dispatcher", "serve", "--journal", ":memory:",
         "--port", "0", "--mcp-port", "70000"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "--mcp-port must be from 0 to 65535" in result.stderr


def _stdio_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OPERATION_DISPATCHER_TOKEN"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    return env


@pytest.mark.slow
def test_stdio_subprocess_speaks_only_json_rpc_on_stdout(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "operation_dispatcher", "mcp", "--journal", "cell.db",
         "--resource-id", "press-1"],
        cwd=tmp_path, env=_stdio_env(tmp_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None

    def send(message: dict[str, Any]) -> None:
        proc.stdin.write(json.dumps(message) + "\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]

    def answer() -> dict[str, Any]:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line, proc.stderr.read() if proc.poll() is not None else "no answer"  # type: ignore[union-attr]
        return dict(json.loads(line))

    try:
        send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"}}})
        init = answer()
        assert init["id"] == 1 and "tools" in init["result"]["capabilities"]
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "dispatcher_add_operation", "arguments": {"payload": {"recipe": "B"}}}})
        added = answer()
        assert added["id"] == 2 and added["result"]["isError"] is False
        send({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
              "params": {"name": "dispatcher_get_state", "arguments": {}}})
        state = answer()["result"]["structuredContent"]
        assert state["resource_id"] == "press-1" and state["is_running"] is True
        send({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
              "params": {"name": "dispatcher_get_history", "arguments": {"limit": 10001}}})
        refused = answer()["result"]
        assert refused["isError"] is True and "10000" in refused["content"][0]["text"]
        proc.stdin.close()  # the agent goes away
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.stdout.read() == ""  # nothing but the answers above
    err = proc.stderr.read()  # type: ignore[union-attr]
    assert "MCP over stdio for 'press-1'" in err  # the log went to stderr
    assert "operation" in err and "started" in err
    assert (tmp_path / "cell.db").exists()  # its own journal


def test_a_loopback_server_refuses_foreign_host_and_origin(
    make_dispatcher: Callable[..., OperationDispatcher],
    make_mcp_http: Callable[..., McpHttpServer],
) -> None:
    """DNS rebinding: a web page cannot reach the loopback MCP server through a browser."""
    server = make_mcp_http(make_dispatcher())
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    accept = {"Accept": "application/json, text/event-stream"}
    host = requests.post(server.url, json=call, headers={**accept, "Host": "evil.example"},
                         timeout=30)
    assert host.status_code == 421
    origin = requests.post(server.url, json=call,
                           headers={**accept, "Origin": "http://evil.example"}, timeout=30)
    assert origin.status_code == 403


@pytest.mark.slow
def test_stdio_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-m", "operation_dispatcher", "mcp", "--journal", ":memory:"],
        cwd=tmp_path, env=_stdio_env(tmp_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"}}}) + "\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["id"] == 1  # serving
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        _out, err = proc.communicate(timeout=30)
    assert "Traceback" not in err and "stopped" in err


# ------------------------------------------------------------------------ hostile sockets


def test_silent_and_half_sent_sockets_are_closed(
    make_dispatcher: Callable[..., OperationDispatcher],
    make_mcp_http: Callable[..., McpHttpServer],
) -> None:
    """uvicorn alone keeps a silent socket, or half a request, open forever."""
    import socket

    dispatcher = make_dispatcher()
    server = make_mcp_http(dispatcher, idle_timeout_seconds=0.5)
    silent = socket.create_connection((server.host, server.port))
    half = socket.create_connection((server.host, server.port))
    half.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
    started = time.monotonic()
    for sock in (silent, half):
        sock.settimeout(10)
        with sock:
            assert sock.recv(100) == b""  # closed by the server
    assert time.monotonic() - started < 5

    async def body(s: Session) -> None:  # the server serves on
        await s.ok("dispatcher_get_state")

    run(transport(server.url, None), body)


def test_a_call_that_waits_longer_than_the_idle_timeout_is_answered(
    make_dispatcher: Callable[..., OperationDispatcher],
    make_mcp_http: Callable[..., McpHttpServer],
) -> None:
    """A cancel waits for the operator; its socket is silent meanwhile, but not idle."""
    asked: list[Any] = []
    cond = threading.Condition()

    def callback(event: Any) -> Any:
        with cond:
            asked.append(event)
            cond.notify_all()
        return True if event.event_type is EventType.OPERATION_START_REQUESTED else PENDING

    dispatcher = make_dispatcher(on_request_callback=callback, request_event_timeout_seconds=60.0)
    recorder = EventRecorder(dispatcher)
    dispatcher.start()
    running = dispatcher.add_operation(op())
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=running.id)
    server = make_mcp_http(dispatcher, idle_timeout_seconds=0.3)
    answers: list[requests.Response] = []
    caller = threading.Thread(target=lambda: answers.append(raw_tool_call(
        server.url, "dispatcher_cancel_operation", json.dumps({"operation_id": str(running.id)})
    )), name="test-mcp-cancel")
    caller.start()
    with cond:
        assert cond.wait_for(lambda: len(asked) == 2, 10)  # the start, then the cancel
    assert not threading.Event().wait(1.0)  # > 3 idle timeouts pass while the call waits
    dispatcher.decide(asked[1].id, True, reasoning="operator agrees")
    caller.join(30)
    (answer,) = answers
    assert answer.status_code == 200, answer.text
    result = answer.json()["result"]
    assert result["isError"] is False, result
    assert result["structuredContent"]["operation"]["outcome"] == "CANCELLED"


def test_sockets_beyond_the_connection_limit_are_closed(
    make_dispatcher: Callable[..., OperationDispatcher],
    make_mcp_http: Callable[..., McpHttpServer],
) -> None:
    import socket

    server = make_mcp_http(make_dispatcher(), connection_limit=2)
    kept = [socket.create_connection((server.host, server.port)) for _ in range(2)]
    try:
        wait_until(lambda: len(server._uvicorn.server_state.connections) == 2, what="2 sockets")
        with socket.create_connection((server.host, server.port)) as third:
            third.settimeout(10)
            assert third.recv(100) == b""
        assert len(server._uvicorn.server_state.connections) == 2
    finally:
        for sock in kept:
            sock.close()


def test_a_flood_of_sessions_is_refused_beyond_the_limit(
    make_dispatcher: Callable[..., OperationDispatcher],
    make_mcp_http: Callable[..., McpHttpServer],
) -> None:
    server = make_mcp_http(make_dispatcher(), max_sessions=2)
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "flood", "version": "1"}}}
    answers = [post(server.url, initialize) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 503]
    assert all(a.headers.get("mcp-session-id") for a in answers[:2])

    async def body(s: Session) -> None:  # stateless calls of the current protocol still work
        await s.ok("dispatcher_get_state")

    run(transport(server.url, None), body)

"""A PLC that refuses the connection, or accepts it and drops it at once, is reported as such:
in the bridge's ``last_error``, its log and ``GET /bridges``, on the first try and on every
retry, never as pymodbus' "Connection unexpectedly closed 0.000 seconds into read". Real
sockets on 127.0.0.1: a port nobody listens on, and a listener that closes what it accepts."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import wait_until

from firmware_bridges.base import BaseBridge
from firmware_bridges.modbus import ModbusBridge
from firmware_bridges.modbus_tcp import connect_failure
from firmware_bridges.simulators.plc import free_port
from operation_dispatcher import OperationDispatcher

HOST = "127.0.0.1"
PYMODBUS_TEXT = "unexpectedly closed"


@pytest.fixture
def bridges() -> Iterator[list[BaseBridge]]:
    made: list[BaseBridge] = []
    yield made
    for bridge in made:
        bridge.stop()


@pytest.fixture
def closing_listener() -> Iterator[int]:
    """A port that accepts every connection and closes it at once (a PLC at its client limit)."""
    server = socket.create_server((HOST, 0))
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:  # the listener was closed: the test is over
                return
            conn.close()

    thread = threading.Thread(target=run, name="test-closing-listener", daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    with socket.create_connection(server.getsockname(), timeout=5):  # wakes accept(): it sees stop
        pass
    thread.join(5)
    server.close()
    assert not thread.is_alive()


def modbus_bridge(dispatcher: OperationDispatcher, port: int) -> ModbusBridge:
    return ModbusBridge(
        dispatcher, "plc", HOST, port, poll_interval=0.01, timeout=0.5,
        reconnect_initial=0.01, reconnect_max=0.02,
        signals={"ready": {"kind": "discrete_input", "address": 0}},
    )


def after_retries(api: Any, retries: int) -> dict[str, Any]:
    """``GET /bridges/plc`` once the bridge has retried ``retries`` times (pymodbus logs a
    repeated reason as "Repeating...." and then not at all: the reason must survive that)."""
    return wait_until(
        lambda: (s := api.get("/bridges/plc").json())["counters"]["reconnects"] >= retries and s,
        what=f"{retries} reconnects",
    )


def test_a_closed_port_is_reported_as_connection_refused_on_every_retry(
    make_client: Callable[..., Any],
    make_dispatcher: Callable[..., OperationDispatcher],
    bridges: list[BaseBridge],
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port(HOST)  # bound then closed: nothing listens there
    dispatcher = make_dispatcher()
    bridge = modbus_bridge(dispatcher, port)
    bridges.append(bridge)
    api = make_client(dispatcher, bridges=bridges)
    caplog.set_level(logging.DEBUG, logger="firmware_bridges")
    bridge.start()

    status = after_retries(api, 3)
    expected = f"connection refused by {HOST}:{port}"
    assert status["online"] is False
    assert status["last_error"].startswith(expected), status
    assert PYMODBUS_TEXT not in status["last_error"]
    assert bridge.last_error == status["last_error"]
    assert api.get("/bridges").json()[0]["last_error"].startswith(expected)
    # the log: one WARNING for the outage, then DEBUG per retry, each naming the refusal
    warnings = [r for r in caplog.records
                if r.levelno == logging.WARNING and r.name == "firmware_bridges.modbus"]
    assert len(warnings) == 1 and expected in warnings[0].getMessage()
    retries = [r.getMessage() for r in caplog.records if "still unreachable" in r.getMessage()]
    assert len(retries) >= 2 and all(expected in message for message in retries)
    assert not any(PYMODBUS_TEXT in r.getMessage() for r in caplog.records)
    assert dispatcher.signals.get("plc.online").value is False


def test_a_listener_that_drops_the_connection_is_named_not_a_read_that_closed_unexpectedly(
    make_client: Callable[..., Any],
    make_dispatcher: Callable[..., OperationDispatcher],
    bridges: list[BaseBridge],
    closing_listener: int,
) -> None:
    dispatcher = make_dispatcher()
    bridge = modbus_bridge(dispatcher, closing_listener)
    bridges.append(bridge)
    api = make_client(dispatcher, bridges=bridges)
    bridge.start()

    status = after_retries(api, 3)
    assert status["online"] is False
    assert status["last_error"].startswith(
        f"tcp://{HOST}:{closing_listener} closed the connection without answering"
    ), status
    assert PYMODBUS_TEXT not in status["last_error"]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "connection refused by plc.local:502 ("),
        (TimeoutError("timed out"), "no answer from plc.local:502 while connecting"),
        (socket.gaierror(-2, "Name or service not known"),
         "cannot resolve the host name 'plc.local' (Name or service not known)"),
        (OSError(113, "No route to host"), "cannot connect to plc.local:502 (No route to host)"),
        (None, "cannot connect to plc.local:502"),
    ],
)
def test_each_connect_failure_has_its_own_sentence(error: OSError | None, expected: str) -> None:
    assert connect_failure("plc.local", 502, error).startswith(expected)


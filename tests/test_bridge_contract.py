"""The BaseBridge contract, asserted once for every bridge kind against a real peer.

Every kind brings a *peer*: a device simulator on 127.0.0.1 that can start, vanish (stop) and
come back on the same port, and that always reports ``ready = True`` (the Modbus PLC through
its ready input, the serial firmware through a ``SIG ready=true`` line repeated every 50 ms).
The peer also builds a bridge of its kind pointed at it, with a ``ready`` signal, so every
test below runs unchanged for every kind: a new bridge kind only adds a peer class to PEERS.

Waits are on dispatcher events or signal-board notifications; where the thing awaited has no
notification (a counter, a signal going stale), a condition is polled with a deadline.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import RESOURCE, EventRecorder, wait_signal, wait_until

from firmware_bridges.base import COUNTER_NAMES, BaseBridge
from firmware_bridges.modbus import ModbusBridge
from firmware_bridges.serial_line import SerialLineBridge
from firmware_bridges.simulators.plc import PlcSimulator
from firmware_bridges.simulators.serial_device import SerialDeviceSimulator
from operation_dispatcher import EventType, ExecutionState, Operation, OperationDispatcher
from operation_dispatcher.errors import ValidationError
from operation_dispatcher.signals import Signal

HOST = "127.0.0.1"
STOP_BOUND_SECONDS = 2.0  # a behaviour bound ("promptly"), not a benchmark
#: what an operation needs for either kind: the serial executor sends payload["command"]
PAYLOAD = {"command": "noop", "program": 1}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------------ peers


class ModbusPeer:
    """pymodbus' own TCP server (the PLC simulator), ready input set, restartable on its port."""

    kind = "modbus"

    def __init__(self) -> None:
        self.plc = PlcSimulator(HOST, cycle_time=0.05, ready=True)
        self.port = self.plc.port

    def start(self) -> None:
        self.plc.start()

    def stop(self) -> None:
        self.plc.stop()

    @staticmethod
    def bridge_at(dispatcher: OperationDispatcher, name: str, port: int, **kwargs: Any) -> BaseBridge:
        kwargs.setdefault("poll_interval", 0.01)
        kwargs.setdefault("timeout", 0.5)
        kwargs.setdefault("signals", {"ready": {"kind": "discrete_input", "address": 0}})
        return ModbusBridge(dispatcher, name, HOST, port, **kwargs)


class SerialPeer:
    """The serial firmware simulator behind ``socket://``, restartable on the same port."""

    kind = "serial"

    def __init__(self) -> None:
        self.port = free_port()
        self.device = SerialDeviceSimulator(
            run_seconds=None, signals={"ready": True}, repeat_seconds=0.05
        )

    def start(self) -> None:
        self.device.listen_tcp(HOST, self.port)
        self.device.start()

    def stop(self) -> None:
        self.device.stop()

    @staticmethod
    def bridge_at(dispatcher: OperationDispatcher, name: str, port: int, **kwargs: Any) -> BaseBridge:
        return SerialLineBridge(dispatcher, name, f"socket://{HOST}:{port}", **kwargs)


PEERS: dict[str, type[ModbusPeer] | type[SerialPeer]] = {"modbus": ModbusPeer, "serial": SerialPeer}


class DroppingListener:
    """A TCP port that accepts every connection and closes it at once (a full device)."""

    def __init__(self) -> None:
        self.server = socket.create_server((HOST, 0))
        self.server.setblocking(False)
        self.port = int(self.server.getsockname()[1])
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._accepted: list[float] = []  # time.monotonic() of every accept
        self._thread = threading.Thread(target=self._run, name=f"dropping-listener[{self.port}]")
        self._thread.start()

    @property
    def accepted(self) -> list[float]:
        with self._lock:
            return list(self._accepted)

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.server], [], [], 0.02)
            if ready:
                try:
                    conn, _ = self.server.accept()
                except BlockingIOError:
                    continue
                conn.close()
                with self._lock:
                    self._accepted.append(time.monotonic())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.server.close()


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(params=sorted(PEERS))
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def peer(kind: str) -> Iterator[ModbusPeer | SerialPeer]:
    """A running peer of the kind under test; stopped (again: stop is idempotent) at teardown."""
    device = PEERS[kind]()
    device.start()
    yield device
    device.stop()


@pytest.fixture
def make_bridge(
    kind: str, make_dispatcher: Callable[..., OperationDispatcher]
) -> Iterator[Callable[..., BaseBridge]]:
    """``make_bridge(port, name="dev1", dispatcher=None, **kwargs)`` -> an unstarted bridge.

    Fast reconnects by default; every bridge made is stopped at teardown (before its peer).
    """
    made: list[BaseBridge] = []

    def factory(
        port: int, name: str = "dev1", dispatcher: OperationDispatcher | None = None, **kwargs: Any
    ) -> BaseBridge:
        kwargs.setdefault("reconnect_initial", 0.02)
        kwargs.setdefault("reconnect_max", 0.05)
        bridge = PEERS[kind].bridge_at(dispatcher or make_dispatcher(), name, port, **kwargs)
        made.append(bridge)
        return bridge

    yield factory
    for bridge in made:
        bridge.stop()


# ------------------------------------------------------------------------------ helpers


def bridge_threads(bridge: BaseBridge) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == bridge.thread_name]


def timed_stop(bridge: BaseBridge) -> float:
    begun = time.monotonic()
    bridge.stop()
    return time.monotonic() - begun


def bridge_records(caplog: pytest.LogCaptureFixture, bridge: BaseBridge, level: int) -> list[str]:
    """Messages the bridge's module logger emitted at exactly ``level``."""
    return [
        r.getMessage() for r in caplog.records
        if r.name == type(bridge).__module__ and r.levelno == level
    ]


def gone_or_stale(signal: Signal | None) -> bool:
    return signal is None or signal.is_stale()


# ------------------------------------------------------------------------------ the thread


def test_the_thread_is_named_after_kind_and_name_and_is_gone_after_stop(peer, make_bridge) -> None:
    bridge = make_bridge(peer.port, name="cell-7")
    assert bridge.kind == peer.kind
    assert bridge.thread_name == f"bridge-{peer.kind}[cell-7]"
    assert bridge_threads(bridge) == []

    bridge.start()
    assert len(bridge_threads(bridge)) == 1
    assert bridge.is_running
    wait_signal(bridge.dispatcher, "cell-7.online", True)

    assert timed_stop(bridge) < STOP_BOUND_SECONDS
    assert bridge_threads(bridge) == []
    assert not bridge.is_running
    assert not bridge.is_online
    bridge.stop()  # twice is fine
    assert bridge_threads(bridge) == []


def test_stop_before_start_is_harmless(peer, make_bridge) -> None:
    bridge = make_bridge(peer.port)
    bridge.stop()
    bridge.stop()
    assert not bridge.is_running
    assert bridge_threads(bridge) == []


def test_start_while_running_raises_and_leaves_the_running_bridge_alone(peer, make_bridge) -> None:
    bridge = make_bridge(peer.port)
    bridge.start()
    wait_signal(bridge.dispatcher, "dev1.online", True)
    with pytest.raises(RuntimeError, match="already running"):
        bridge.start()
    assert len(bridge_threads(bridge)) == 1
    assert bridge.is_running and bridge.is_online
    assert timed_stop(bridge) < STOP_BOUND_SECONDS
    assert bridge_threads(bridge) == []


def test_the_context_manager_starts_and_stops(peer, make_bridge) -> None:
    bridge = make_bridge(peer.port)
    with bridge as entered:
        assert entered is bridge
        assert bridge.is_running
        assert len(bridge_threads(bridge)) == 1
        wait_signal(bridge.dispatcher, "dev1.online", True)
    assert not bridge.is_running
    assert bridge_threads(bridge) == []
    assert bridge.dispatcher.signals.value("dev1.online") is False


def test_a_stopped_bridge_can_be_started_again(peer, make_bridge) -> None:
    bridge = make_bridge(peer.port)
    with bridge:
        wait_signal(bridge.dispatcher, "dev1.online", True)
    assert bridge.dispatcher.signals.value("dev1.online") is False
    with bridge:
        wait_signal(bridge.dispatcher, "dev1.online", True)
        assert len(bridge_threads(bridge)) == 1
    assert bridge_threads(bridge) == []


# ------------------------------------------------------------------------------ status()


def test_status_of_a_bridge_that_never_ran(peer, make_bridge) -> None:
    bridge = make_bridge(peer.port, name="idle")
    status = bridge.status()
    assert status["name"] == "idle"
    assert status["kind"] == peer.kind
    assert status["endpoint"] and str(peer.port) in status["endpoint"]
    assert status["running"] is False
    assert status["online"] is False
    assert set(COUNTER_NAMES) <= set(status["counters"])
    assert all(status["counters"][counter] == 0 for counter in COUNTER_NAMES)


def test_status_follows_a_connected_bridge_and_its_stop(peer, make_bridge) -> None:
    bridge = make_bridge(peer.port, name="cell")
    board = bridge.dispatcher.signals
    bridge.start()
    wait_signal(bridge.dispatcher, "cell.ready", True)
    wait_until(lambda: bridge.counters["reads"] > 0, what="a read")

    status = bridge.status()
    assert status["name"] == "cell"
    assert status["kind"] == peer.kind
    assert status["endpoint"] == bridge.endpoint
    assert str(peer.port) in status["endpoint"]
    assert status["running"] is True
    assert status["online"] is True
    assert board.holds("cell.online", True)
    counters = status["counters"]
    assert set(COUNTER_NAMES) <= set(counters)
    assert counters["reads"] > 0
    assert counters["errors"] == counters["reconnects"] == counters["malformed"] == 0
    counters["reads"] = -1  # a copy: the bridge's own counters are untouched
    assert bridge.counters["reads"] > 0

    bridge.stop()
    status = bridge.status()
    assert status["running"] is False
    assert status["online"] is False
    assert board.value("cell.online") is False
    assert status["counters"]["errors"] == 0


# ------------------------------------------------------------------------------ outages


@pytest.mark.parametrize("max_age", [None, 0.3], ids=["default-max-age", "max-age-0.3"])
def test_an_outage_invalidates_the_signals_holds_work_and_the_return_releases_it(
    peer, make_bridge, make_dispatcher, caplog, max_age
) -> None:
    dispatcher = make_dispatcher()
    recorder = EventRecorder(dispatcher)
    dispatcher.start()
    board = dispatcher.signals
    bridge = make_bridge(peer.port, name="cell", dispatcher=dispatcher, max_age_seconds=max_age)
    caplog.set_level(logging.INFO, logger=type(bridge).__module__)
    bridge.start()
    wait_signal(dispatcher, "cell.online", True)
    wait_signal(dispatcher, "cell.ready", True)
    assert bridge.is_online and bridge.status()["online"] is True
    written = {s.name for s in board.snapshot() if s.name.startswith("cell.")} - {"cell.online"}
    assert "cell.ready" in written

    peer.stop()  # the device vanishes
    wait_signal(dispatcher, "cell.online", False)
    assert not bridge.is_online and bridge.status()["online"] is False
    wait_until(lambda: all(gone_or_stale(board.get(name)) for name in written),
               what=f"every signal of {sorted(written)} to go stale or be deleted")
    assert not board.holds("cell.ready", True)

    held = Operation(resource_id=RESOURCE, payload=PAYLOAD, release_conditions={"cell.ready": True})
    dispatcher.add_operation(held)
    retries = bridge.counters["reconnects"]
    wait_until(lambda: bridge.counters["reconnects"] >= retries + 2, what="two more reconnects")
    assert recorder.matching(EventType.OPERATION_START_REQUESTED, held.id) == []
    assert dispatcher.get_operation(held.id).state is ExecutionState.QUEUED
    assert "release_condition:cell.ready" in dispatcher.explain(held.id)["blocked_by"]
    assert bridge.status()["running"] is True
    assert bridge.counters["errors"] >= 1
    warnings = bridge_records(caplog, bridge, logging.WARNING)
    assert len(warnings) == 1, warnings  # once for the outage, not once per retry
    assert "cell" in warnings[0]
    assert bridge_records(caplog, bridge, logging.ERROR) == []

    before_return = bridge.counters["reconnects"]
    peer.start()  # back on the same port
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=held.id)
    assert board.holds("cell.online", True) and board.holds("cell.ready", True)
    assert bridge.is_online and bridge.status()["online"] is True
    assert bridge.counters["reconnects"] > before_return
    assert len(bridge_records(caplog, bridge, logging.WARNING)) == 1


def test_a_bridge_pointed_at_nothing_retries_with_bounded_backoff_warns_once_and_stops_promptly(
    peer, make_bridge, caplog
) -> None:
    peer.stop()  # nothing listens on the peer's port any more
    initial, ceiling = 0.01, 0.04
    bridge = make_bridge(peer.port, name="ghost", reconnect_initial=initial, reconnect_max=ceiling)
    caplog.set_level(logging.DEBUG, logger=type(bridge).__module__)
    board = bridge.dispatcher.signals
    bridge.start()

    # after 0.01, 0.02 and 0.04 s the backoff sits at its ceiling: time ten more attempts
    seen = wait_until(lambda: (n := bridge.counters["reconnects"]) >= 3 and n, what="3 reconnects")
    begun = time.monotonic()
    wait_until(lambda: bridge.counters["reconnects"] >= seen + 10, what="10 more reconnects")
    took = time.monotonic() - begun
    assert took >= 0.9 * 9 * ceiling, f"10 retries in {took:.3f} s: faster than the backoff allows"
    assert took < 10 * ceiling + 1.0, f"10 retries took {took:.3f} s: the backoff is not bounded"

    assert board.value("ghost.online") is False
    assert not board.holds("ghost.online", True)
    status = bridge.status()
    assert status["running"] is True and status["online"] is False
    assert status["counters"]["errors"] >= status["counters"]["reconnects"] >= seen + 10

    assert timed_stop(bridge) < STOP_BOUND_SECONDS
    assert bridge_threads(bridge) == []
    counters = bridge.counters
    assert counters["errors"] == counters["reconnects"] + 1  # every attempt failed and counted
    assert counters["reads"] == 0
    warnings = bridge_records(caplog, bridge, logging.WARNING)
    assert len(warnings) == 1, warnings
    assert "ghost" in warnings[0]
    assert bridge_records(caplog, bridge, logging.ERROR) == []


def test_a_peer_that_drops_every_connection_is_one_outage_with_backoff(make_bridge, caplog) -> None:
    """A device that accepts TCP and hangs up at once (its connection limit is reached).

    No exchange with it ever succeeds, so this is one outage, as for a device that is absent:
    one WARNING, and the waits between attempts double towards ``reconnect_max`` instead of
    starting again from ``reconnect_initial`` after every accepted connection.
    """
    listener = DroppingListener()
    try:
        initial, ceiling = 0.02, 0.08
        bridge = make_bridge(listener.port, name="full", reconnect_initial=initial,
                             reconnect_max=ceiling)
        caplog.set_level(logging.DEBUG, logger=type(bridge).__module__)
        bridge.start()
        wait_until(lambda: len(listener.accepted) >= 4 and bridge.counters["errors"] >= 4,
                   what="four dropped connections")
        assert timed_stop(bridge) < STOP_BOUND_SECONDS
    finally:
        listener.close()

    assert bridge.counters["reads"] == 0
    warnings = bridge_records(caplog, bridge, logging.WARNING)
    errors = bridge_records(caplog, bridge, logging.ERROR)
    assert (len(warnings), len(errors)) == (1, 0), (
        f"{len(warnings)} warnings and {len(errors)} errors for one outage: {(warnings + errors)[:2]}"
    )
    accepted = listener.accepted
    took = accepted[3] - accepted[0]  # three waits: 0.02 + 0.04 + 0.08 s at least
    assert took >= 0.9 * (initial + 2 * initial + ceiling), (
        f"4 connections in {took:.3f} s: the backoff restarts from reconnect_initial"
    )


# ------------------------------------------------------------------------------ construction


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "cell 7"}, "name"),
        ({"name": "cell\t7"}, "name"),
        ({"name": "cell/7"}, "name"),  # would be unreachable as GET /bridges/<name>
        ({"name": "cell.7"}, "name"),  # would make its signals cell.7.ready, read as cell . 7.ready
        ({"max_age_seconds": "1"}, "max_age_seconds"),  # TOML strings are named, not crashed on
        ({"max_age_seconds": 0}, "max_age_seconds"),
        ({"max_age_seconds": -1.0}, "max_age_seconds"),
        ({"reconnect_initial": 0}, "reconnect_initial"),
        ({"reconnect_initial": 0.5, "reconnect_max": 0.1}, "reconnect_max"),
    ],
    ids=["empty-name", "name-with-space", "name-with-tab", "name-with-slash", "name-with-dot",
         "max-age-string", "max-age-zero", "max-age-negative",
         "reconnect-initial-zero", "reconnect-max-below-initial"],
)
def test_constructor_errors_are_validation_errors_naming_the_field(
    kind, make_dispatcher, kwargs, field
) -> None:
    dispatcher = make_dispatcher()
    kwargs = dict(kwargs)
    name = kwargs.pop("name", "dev1")
    with pytest.raises(ValidationError) as raised:
        PEERS[kind].bridge_at(dispatcher, name, free_port(), **kwargs)
    assert raised.value.field == field
    assert str(raised.value).startswith(field)
    assert len(dispatcher.signals) == 0  # nothing written, nothing started

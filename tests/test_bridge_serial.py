"""SerialLineBridge against real peers: the simulator on a TCP socket, and a pseudo-terminal.

No mocks: pyserial opens ``socket://127.0.0.1:PORT`` (the simulator) or the slave side of an
``os.openpty()`` pair whose master the test reads and writes. Every wait is on an event, a
signal or a line, never on time.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RESOURCE as R
from conftest import EventRecorder, wait_signal, wait_until
from micropython_board import replace_json

from firmware_bridges import serial_protocol as proto
from firmware_bridges.serial_line import SerialLineBridge
from firmware_bridges.simulators.serial_device import SerialDeviceSimulator
from operation_dispatcher import (
    EventType,
    ExecutionState,
    Operation,
    OperationDispatcher,
    RunByExecutor,
    TerminationReason,
)

STARTED = EventType.OPERATION_STARTED
COMPLETED = EventType.OPERATION_COMPLETED
FAILED = EventType.OPERATION_FAILED


def op(**kwargs: Any) -> Operation:
    kwargs.setdefault("payload", {"command": "weld seam=3"})
    return Operation(resource_id=R, **kwargs)


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture
def make_bridge(make_dispatcher) -> Iterator[Callable[..., tuple[OperationDispatcher, SerialLineBridge]]]:
    """``make_bridge(url, **kwargs)`` -> (started dispatcher, online bridge named dev1).

    The bridges of this file are executors unless a test says ``executor=False`` (the class
    default is off). An executor's ``dev1.online`` gates every start, so every test waits for
    it (a first line from the device) before adding work; ``hello(raw)`` writes that line for a
    peer that does not speak first (a pty).
    """
    made: list[SerialLineBridge] = []

    def factory(url: str, dispatcher: OperationDispatcher | None = None, *,
                hello: Callable[[bytes], Any] | None = None, **kwargs: Any):
        d = dispatcher or make_dispatcher()
        if not d.is_running:
            d.start()
        kwargs.setdefault("reconnect_initial", 0.05)
        kwargs.setdefault("executor", True)
        hook = kwargs.pop("hook", None)
        bridge = SerialLineBridge(d, "dev1", url, **kwargs)
        made.append(bridge)
        if hook is not None:
            hook(bridge)
        bridge.start()
        if hello is not None:  # once the port is open (opening a pty drops what was queued)
            wait_until(lambda: bridge._port is not None, what="the port to open")
            hello(proto.encode_line("SIG alive=1", terminator=bridge.terminator,
                                    use_checksum=bridge.use_checksum))
        wait_signal(d, "dev1.online", True)  # a line arrived: operations may start now
        return d, bridge

    yield factory
    for bridge in made:
        bridge.stop()


class Pty:
    """A raw pseudo-terminal pair: the bridge opens ``path``, the test is the device."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self._framer = proto.LineFramer()
        self._lines: list[bytes] = []

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def read_line(self, timeout: float = 5.0) -> bytes:
        """The next line the bridge wrote (select with a deadline: waits for bytes, not time)."""
        deadline = time.monotonic() + timeout
        while not self._lines:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "the bridge wrote no line"
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                self._lines.extend(self._framer.feed(os.read(self.master, 4096)))
        return self._lines.pop(0)

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def pty_pair() -> Iterator[Pty]:
    pair = Pty()
    yield pair
    pair.close()


def run_ids(sim: SerialDeviceSimulator) -> list[tuple[str | None, str | None]]:
    return [(m.operation_id, m.command) for m in sim.received if m.kind == "RUN"]


# ------------------------------------------------------------------------------ socket:// peer


def test_sig_line_releases_a_held_operation_and_run_is_written(make_sim, make_bridge) -> None:
    sim = make_sim(run_seconds=None)
    d, bridge = make_bridge(sim.url)
    rec = EventRecorder(d)
    sim.wait_connected()
    held = d.add_operation(op(release_conditions={"dev1.ready": True}))
    assert d.get_operation(held.id).state is ExecutionState.QUEUED

    sim.send_signal("ready", True)
    rec.wait_for(STARTED, operation_id=held.id)
    sim.wait_until(lambda s: run_ids(s) == [(str(held.id), "weld seam=3")])
    assert bridge.thread_name == f"bridge-serial[{bridge.name}]"
    assert bridge.status()["endpoint"] == sim.url


def test_done_completes_and_err_fails_the_running_operation(make_sim, make_bridge) -> None:
    sim = make_sim(run_seconds=None)
    d, bridge = make_bridge(sim.url)
    rec = EventRecorder(d)
    first, second = d.add_operations([op(priority=9), op(priority=1, payload={"command": 7})])

    sim.wait_until(lambda s: len(run_ids(s)) == 1)
    sim.send_done(first.id)
    rec.wait_for(COMPLETED, operation_id=first.id)

    sim.wait_until(lambda s: len(run_ids(s)) == 2)
    assert run_ids(sim)[1] == (str(second.id), "7")  # a non-string command is sent as JSON
    sim.send_error(second.id, "E42 nozzle blocked")
    failed = rec.wait_for(FAILED, operation_id=second.id)[0]
    assert failed.meta_data["reason"] == "E42 nozzle blocked"
    stored = d.get_operation(second.id)
    assert stored.termination_reason is TerminationReason.EXTERNAL_ERROR
    assert d.get_operation(first.id).state is ExecutionState.COMPLETED


def test_simulator_answers_run_with_done_or_err(make_sim, make_bridge) -> None:
    sim = make_sim(run_seconds=0.01, fail_commands={"jam": "motor stalled"})
    d, bridge = make_bridge(sim.url)
    rec = EventRecorder(d)
    ok, bad = d.add_operations([op(priority=9), op(priority=1, payload={"command": "jam"})])
    rec.wait_for(COMPLETED, operation_id=ok.id)
    assert rec.wait_for(FAILED, operation_id=bad.id)[0].meta_data["reason"] == "motor stalled"


def test_pause_resume_cancel_are_sent_to_the_device(make_sim, make_bridge) -> None:
    sim = make_sim(run_seconds=None)
    d, bridge = make_bridge(sim.url)
    rec = EventRecorder(d)
    running = d.add_operation(op())
    rec.wait_for(STARTED, operation_id=running.id)
    sim.wait_until(lambda s: len(run_ids(s)) == 1)

    assert d.pause_operation(running.id)
    sim.wait_until(lambda s: s.received[-1].kind == "PAUSE")
    assert d.resume_operation(running.id)
    sim.wait_until(lambda s: s.received[-1].kind == "RESUME")
    assert d.cancel_operation(running.id) is not None
    sim.wait_until(lambda s: s.received[-1] == proto.HostMessage("CANCEL", str(running.id)))


def test_a_done_for_another_operation_is_rejected_not_fatal(make_sim, make_bridge) -> None:
    sim = make_sim(run_seconds=None)
    d, bridge = make_bridge(sim.url)
    sim.wait_connected()
    sim.send_done("0b6e3f4c-2a7d-4a37-9a8e-5b8f6b1b2c3d")
    sim.send_done("not-a-uuid")
    sim.send_signal("after", 1)
    wait_signal(d, "dev1.after", 1)
    assert bridge.counters["rejected"] == 2
    assert bridge.counters["malformed"] == 0


def test_the_device_going_away_takes_its_signals_and_health_with_it(make_sim, make_bridge) -> None:
    sim = make_sim(run_seconds=None, signals={"ready": True}, repeat_seconds=0.05)
    d, bridge = make_bridge(sim.url)
    wait_signal(d, "dev1.ready", True)
    held = d.add_operation(op(release_conditions={"dev1.ready": True}, dependencies=[]))
    EventRecorder(d).wait_for(STARTED, operation_id=held.id)

    sim.stop()
    wait_signal(d, "dev1.online", False)
    assert d.signals.get("dev1.ready").is_stale()  # no max age: expired when offline
    assert bridge.counters["errors"] >= 1


def test_without_a_command_key_the_operation_fails(make_sim, make_bridge) -> None:
    sim = make_sim(run_seconds=None)
    d, bridge = make_bridge(sim.url)
    rec = EventRecorder(d)
    wrong = d.add_operation(op(payload={"program": 3}))
    failed = rec.wait_for(FAILED, operation_id=wrong.id)[0]
    assert "command" in failed.meta_data["reason"]
    assert run_ids(sim) == []


# ------------------------------------------------------------------------------ pseudo-terminal


def test_pty_sig_done_and_run(pty_pair: Pty, make_bridge) -> None:
    d, bridge = make_bridge(pty_pair.path, hello=pty_pair.write)
    rec = EventRecorder(d)
    held = d.add_operation(op(release_conditions={"dev1.ready": True}))

    pty_pair.write(b"SIG ready=tr")  # a partial line is buffered until its terminator
    pty_pair.write(b"ue\r\nSIG mode=auto\n")
    rec.wait_for(STARTED, operation_id=held.id)
    wait_signal(d, "dev1.mode", "auto")  # the next line: read after the start may have begun
    assert pty_pair.read_line() == f"RUN {held.id} weld seam=3".encode()

    pty_pair.write(f"DONE {held.id}\n".encode())
    rec.wait_for(COMPLETED, operation_id=held.id)


def test_pty_garbage_overlong_and_unknown_lines_are_counted(pty_pair: Pty, make_bridge) -> None:
    d, bridge = make_bridge(pty_pair.path, max_line=64, hello=pty_pair.write)
    rec = EventRecorder(d)

    pty_pair.write(b"\xff\xfe\x80garbage\n")  # not UTF-8
    pty_pair.write(b"SIG long=" + b"x" * 100)  # over the cap before its terminator...
    pty_pair.write(b"x" * 100 + b"\n")  # ...and still dropped as one line
    pty_pair.write(b"HELLO world\n")  # unknown message
    pty_pair.write(b"SIG no-equals-sign\n")
    pty_pair.write(b"\x00\x01\x02\n")  # control bytes
    pty_pair.write(b"SIG alive=2\n")
    wait_signal(d, "dev1.alive", 2)
    assert bridge.counters["malformed"] == 5
    assert d.signals.get("dev1.long") is None

    work = d.add_operation(op())  # and the bridge still executes
    assert pty_pair.read_line() == f"RUN {work.id} weld seam=3".encode()
    pty_pair.write(f"ERR {work.id} overheated\n".encode())
    assert rec.wait_for(FAILED, operation_id=work.id)[0].meta_data["reason"] == "overheated"


def test_pty_refused_json_values_are_counted_and_the_line_stays_up(
    pty_pair: Pty, make_bridge,
) -> None:
    """A SIG integer over 4,300 digits is refused as HTTP and MQTT refuse it (it used to become
    a text signal), and deep nesting is a malformed line (it used to raise RecursionError out of
    the read loop: an 'unexpected error' that took the bridge offline)."""
    d, bridge = make_bridge(pty_pair.path, max_line=20_000, hello=pty_pair.write)
    pty_pair.write(b"SIG n=" + b"9" * 5000 + b"\n")
    pty_pair.write(b"SIG deep=" + b"[" * 5000 + b"]" * 5000 + b"\n")
    pty_pair.write(b"SIG alive=2\n")
    wait_signal(d, "dev1.alive", 2)
    assert bridge.counters["malformed"] == 2
    assert d.signals.get("dev1.n") is None and d.signals.get("dev1.deep") is None
    assert bridge.counters.get("errors", 0) == 0 and bridge.counters.get("reconnects", 0) == 0
    assert d.signals.get("dev1.online").value is True

def test_pty_checksum_mode_rejects_bad_checksums(pty_pair: Pty, make_bridge) -> None:
    d, bridge = make_bridge(pty_pair.path, checksum=True, terminator="\r\n", hello=pty_pair.write)
    rec = EventRecorder(d)

    pty_pair.write(b"SIG ready=true*00\r\n")  # wrong checksum
    pty_pair.write(b"SIG ready=true\r\n")  # none at all
    pty_pair.write(proto.encode_line("SIG other=2", terminator="\r\n", use_checksum=True))
    wait_signal(d, "dev1.other", 2)
    assert d.signals.get("dev1.ready") is None
    assert bridge.counters["malformed"] == 2

    work = d.add_operation(op())
    line = pty_pair.read_line().decode()
    assert proto.parse_host_line(line, use_checksum=True) == proto.HostMessage(
        "RUN", str(work.id), "weld seam=3"
    )
    pty_pair.write(proto.encode_line(f"DONE {work.id}", terminator="\r\n", use_checksum=True))
    rec.wait_for(COMPLETED, operation_id=work.id)


def test_simulator_on_a_pty(make_bridge) -> None:
    sim = SerialDeviceSimulator(run_seconds=0.01, signals={"ready": True}, repeat_seconds=0.05)
    path = sim.open_pty()
    sim.start()
    try:
        d, bridge = make_bridge(path)
        rec = EventRecorder(d)
        sim.send_signal("ready", True)
        work = d.add_operation(op(release_conditions={"dev1.ready": True}))
        rec.wait_for(COMPLETED, operation_id=work.id)
        bridge.stop()
    finally:
        sim.stop()


def test_simulator_command_line(make_bridge) -> None:
    """``python -m firmware_bridges.simulators.serial_device`` serves a bridge until SIGINT."""
    cmd = [
        sys.executable, "-m", "firmware_bridges.simulators.serial_device", "--tcp-port", "0",
        "--run-seconds", "0.01", "--signal", "ready=true", "--repeat-seconds", "0.05",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()
        assert banner.startswith("serial device simulator on socket://127.0.0.1:"), banner
        url = banner.split()[4]
        d, bridge = make_bridge(url)
        rec = EventRecorder(d)
        wait_signal(d, "dev1.ready", True)
        work = d.add_operation(op())
        rec.wait_for(COMPLETED, operation_id=work.id)
        bridge.stop()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


def test_a_port_without_a_file_descriptor_is_read_by_blocking_reads(make_bridge) -> None:
    """loop:// has no fileno (no select): the bridge falls back to read(1) + in_waiting."""
    loop: list[SerialLineBridge] = []  # loop:// hands the host's own line back as a device line
    d, bridge = make_bridge("loop://", executor=False, hello=lambda raw: loop[0]._port.write(raw),
                            hook=loop.append)
    assert bridge._fileno is None
    bridge.send("SIG echoed=41")  # loop:// hands the host's own line back as a device line
    bridge.send("SIG echoed=42")
    wait_signal(d, "dev1.echoed", 42)
    assert bridge.counters["malformed"] == 0 and bridge.counters["reads"] >= 1
    started = time.monotonic()
    bridge.stop()
    assert time.monotonic() - started < 2.0  # cancel_read / the read timeout end the blocking read


def test_a_socket_port_is_read_whole_lines_at_a_time(make_sim, make_bridge) -> None:
    """socket:// has a file descriptor: select() waits, one read takes everything there."""
    sim = make_sim()
    d, bridge = make_bridge(sim.url, executor=False)
    assert bridge._fileno is not None
    reads = bridge.counters["reads"]
    sim.send_bytes(b"".join(f"SIG n{i}={i}\n".encode() for i in range(50)))
    wait_signal(d, "dev1.n49", 49)
    assert bridge.counters["reads"] - reads <= 5  # ~1 read for 50 lines, not one per byte


# ------------------------------------------------------------------------------ the example firmware


@pytest.fixture
def firmware(tmp_path) -> Iterator[tuple[str, Path]]:
    """examples/firmware/main.py running (unchanged, on CPython) behind a real pty: the tty path
    for the bridge, and the pins file (``{"14": 0}`` = ready input pulled low)."""
    repo = Path(__file__).resolve().parents[1]
    pins = tmp_path / "pins.json"
    pins.write_text(json.dumps({"14": 0}))
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    path = os.ttyname(slave)
    board = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("micropython_board.py")),
         str(repo / "examples" / "firmware" / "main.py"), str(pins)],
        stdin=master, stdout=master, stderr=subprocess.PIPE, cwd=tmp_path,
    )
    os.close(master)  # the board process holds its copy
    try:
        yield path, pins
    finally:
        board.kill()
        _, err = board.communicate(timeout=10)
        os.close(slave)
        assert board.returncode == -signal.SIGKILL, err.decode()  # it ran until we stopped it


def test_the_example_micropython_firmware_runs_operations_through_the_bridge(firmware, make_bridge) -> None:
    path, pins = firmware
    d, bridge = make_bridge(path, max_age_seconds=3.0)
    rec = EventRecorder(d)
    wait_signal(d, "dev1.ready", True)  # SIG ready=true, from the input pin

    ok = d.add_operation(op(payload={"command": "0.2"}, release_conditions={"dev1.ready": True}))
    rec.wait_for(EventType.OPERATION_COMPLETED, operation_id=ok.id)  # RUN ... ACK ... DONE
    bad = d.add_operation(op(payload={"command": "weld"}))
    failed = rec.wait_for(EventType.OPERATION_FAILED, operation_id=bad.id)[0]
    assert failed.meta_data["reason"] == "unknown command weld"

    paused = d.add_operation(op(payload={"command": "0.3"}))
    rec.wait_for(STARTED, operation_id=paused.id)
    out25 = lambda: json.loads(pins.read_text()).get("out25")  # noqa: E731
    wait_until(lambda: out25() == 1, what="the RUN to drive the output pin")
    assert d.pause_operation(paused.id) and d.resume_operation(paused.id)
    rec.wait_for(EventType.OPERATION_COMPLETED, operation_id=paused.id)
    assert out25() == 0
    assert bridge.counters["rejected"] == 0 and bridge.counters["malformed"] == 0  # no NAK

    replace_json(pins, {"14": 1})  # the ready input goes high: SIG ready=false
    wait_signal(d, "dev1.ready", False)


def test_an_operation_running_across_a_line_outage_completes_when_the_device_reports(
    make_sim, make_bridge
) -> None:
    """The device keeps the job while the link is down; its DONE after reconnect finishes it."""
    sim = make_sim(run_seconds=None)
    port = int(sim.url.rsplit(":", 1)[1])
    d, bridge = make_bridge(sim.url)
    rec = EventRecorder(d)
    running = d.add_operation(op())
    sim.wait_until(lambda s: len(run_ids(s)) == 1)
    sim.stop()  # the line drops
    wait_signal(d, "dev1.online", False)
    assert d.get_operation(running.id).state is ExecutionState.RUNNING

    sim.listen_tcp(port=port)  # the same device comes back on the same port
    sim.start()
    wait_signal(d, "dev1.online", True)
    sim.send_done(running.id)
    completed = rec.wait_for(EventType.OPERATION_COMPLETED, operation_id=running.id)
    assert completed[0].meta_data["bridge"] == "dev1" and bridge.counters["rejected"] == 0


def test_a_noisy_line_is_counted_in_full_but_logged_once_per_interval(make_sim, make_bridge, caplog) -> None:
    """A baud-rate mismatch spews garbage: every line counts, the log gets one warning + a summary."""
    caplog.set_level(logging.DEBUG, logger="firmware_bridges.serial_line")
    sim = make_sim()
    d, bridge = make_bridge(sim.url, executor=False)
    sim.send_bytes(b"".join(b"\xfe\xfd garbage %d\n" % i for i in range(50)) + b"SIG after=1\n")
    wait_signal(d, "dev1.after", 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bridge.counters["malformed"] == 50 and len(warnings) == 1
    held = [r for r in caplog.records if r.levelno == logging.DEBUG and "malformed" in r.getMessage()]
    assert len(held) == 49

    bridge.warning_interval = 0.0  # the interval is over: the next one is logged with the tally
    sim.send_bytes(b"HELLO\nSIG after=2\n")
    wait_signal(d, "dev1.after", 2)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "and 49 more malformed lines in the last" in warnings[1]


def test_a_device_silent_on_an_open_line_goes_offline_until_its_next_line(pty_pair: Pty, make_bridge) -> None:
    """A.4: a hung firmware keeps the port open; online means "a line within max_age_seconds"."""
    assert SerialLineBridge(None, "x", "loop://").max_age_seconds == 5.0  # the default: on
    d, bridge = make_bridge(pty_pair.path, max_age_seconds=0.3, hello=pty_pair.write)  # one line...
    rec = EventRecorder(d)
    wait_signal(d, "dev1.online", False)  # ...then silence, the pty still open
    status = bridge.status()
    assert status["running"] and not status["online"]
    assert "sent no line" in status["last_error"] and "max_age_seconds=0.3" in status["last_error"]
    assert d.signals.get("dev1.alive").is_stale()
    held = d.add_operation(op())  # the executor is offline: its health holds the start
    assert "release_condition:dev1.online" in d.explain(held.id)["blocked_by"]

    pty_pair.write(b"SIG ready=true\n")  # the device speaks again: online, released, RUN sent
    rec.wait_for(STARTED, operation_id=held.id)
    assert pty_pair.read_line() == f"RUN {held.id} weld seam=3".encode()


def test_a_start_that_reaches_a_silent_device_fails_and_sends_nothing(pty_pair: Pty, make_bridge) -> None:
    """Should a start reach the bridge while the device is offline (here: the executor was
    detached, so nothing gates it), it fails at once; no RUN is kept for the device's return."""
    d, bridge = make_bridge(pty_pair.path, max_age_seconds=0.3, hello=pty_pair.write)
    rec = EventRecorder(d)
    wait_signal(d, "dev1.online", False)
    d.detach_executor("dev1")
    nothing_runs = d.add_operation(op())
    failed = rec.wait_for(FAILED, operation_id=nothing_runs.id)[0]
    assert failed.meta_data["reason"] == "the device is offline"
    pty_pair.write(b"SIG ready=true\n")
    wait_signal(d, "dev1.online", True)
    after = d.add_operation(op())
    rec.wait_for(STARTED, operation_id=after.id)
    assert pty_pair.read_line() == f"RUN {after.id} weld seam=3".encode()  # the first line sent


# ------------------------------------------------------------------------------ issue 10


def test_a_device_inventing_signal_names_is_bounded_by_max_signals(
    make_sim, make_bridge, make_api, caplog
) -> None:
    """D.15: ``SIG sample_N=1`` for ever-new N: the signals stop at max_signals, the excess is
    counted as malformed and warned about once per interval, GET /signals stays small."""
    assert SerialLineBridge(None, "x", "loop://").max_signals == 256  # the default
    caplog.set_level(logging.WARNING, logger="firmware_bridges.serial_line")
    sim = make_sim(signals={"alive": 1})
    d, bridge = make_bridge(sim.url, executor=False, max_signals=8)
    flood = 1000  # 125 times the bound; 5,000 lines took over 30 s emulated on a loaded host
    sim.send_bytes(b"".join(b"SIG sample_%d=1\n" % i for i in range(flood)) + b"SIG alive=2\n")
    wait_signal(d, "dev1.alive", 2, timeout=30.0)  # the line after the flood: all was read

    names = [s.name for s in d.signals.snapshot()]
    assert len(names) == 1 + 8 and "dev1.online" in names  # online + alive + 7 samples
    assert "dev1.sample_6" in names and "dev1.sample_7" not in names
    assert bridge.counters["malformed"] == flood - 7
    warned = [r.getMessage() for r in caplog.records if "max_signals=8" in r.getMessage()]
    assert len(warned) == 1 and "dev1.sample_7" in warned[0]
    assert d.signals.holds("dev1.sample_0", 1)  # the signals within the bound still update
    api = make_api(d)
    assert len(api.get("/signals").json()) == 9


def test_a_stalled_line_does_not_stall_the_other_subscribers(make_bridge) -> None:
    """E.20: RUN is written on the bridge's own thread: while the device does not read (its
    buffer full, the write blocked), every other subscriber still gets its events."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by the peer
    peer: list[socket.socket] = []

    def hello(raw: bytes) -> None:
        peer.append(listener.accept()[0])
        peer[0].sendall(raw)

    try:
        d, bridge = make_bridge(f"socket://127.0.0.1:{listener.getsockname()[1]}",
                                write_timeout=10.0, hello=hello)
        rec = EventRecorder(d)
        big = d.add_operation(op(payload={"command": "x" * 32_000_000}))  # far over any buffer
        rec.wait_for(STARTED, operation_id=big.id)
        ready, _, _ = select.select(peer, [], [], 20.0)  # 32 MB are journaled first
        assert ready, "the bridge never started writing RUN"
        assert bridge.counters["errors"] == 0  # ...and is still writing: the peer reads nothing

        other = d.add_operation(op())  # events keep flowing to every other subscriber
        rec.wait_for(EventType.OPERATION_ADDED, operation_id=other.id, timeout=10.0)
        d.pause_operation(big.id)
        rec.wait_for(EventType.OPERATION_PAUSED, operation_id=big.id, timeout=10.0)
        assert bridge.counters["errors"] == 0 and bridge.is_running  # the write is still stuck
    finally:
        for sock in (*peer, listener):
            sock.close()  # the write fails at once: the bridge reconnects, then stops


def test_a_job_finished_by_force_is_cancelled_on_the_device_and_its_late_done_rejected(
    make_sim, make_bridge
) -> None:
    """Issue 12 item 2: the bridge's job is its own to finish; an operator's force ends it, the
    device is told CANCEL, and the DONE it sends afterwards changes nothing."""
    sim = make_sim(run_seconds=None)
    d, bridge = make_bridge(sim.url)
    rec = EventRecorder(d)
    running = d.add_operation(op())
    rec.wait_for(STARTED, operation_id=running.id)
    sim.wait_until(lambda s: len(run_ids(s)) == 1)
    with pytest.raises(RunByExecutor, match="dev1"):
        d.complete_operation(running.id, meta_data={"by": "hand"})

    d.complete_operation(running.id, meta_data={"by": "hand"}, force=True)
    event = rec.wait_for(COMPLETED, operation_id=running.id)[0]
    assert event.meta_data == {"by": "hand", "forced_by_operator": True, "executor": "dev1"}
    sim.wait_until(lambda s: s.received[-1] == proto.HostMessage("CANCEL", str(running.id)))
    sim.send_done(str(running.id))  # the device's late report of the job
    sim.send_signal("after", 1)
    wait_signal(d, "dev1.after", 1)
    assert bridge.counters["rejected"] == 1 and bridge.is_online
    assert rec.types(running.id).count(COMPLETED) == 1
    nxt = d.add_operation(op())  # the next job runs as usual
    rec.wait_for(STARTED, operation_id=nxt.id)
    sim.wait_until(lambda s: len(run_ids(s)) == 2)
    sim.send_done(str(nxt.id))
    assert rec.wait_for(COMPLETED, operation_id=nxt.id)[0].meta_data == {"bridge": "dev1"}


def test_an_executor_without_max_age_is_refused_silence_must_make_it_offline(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    """Without a max age ``<name>.online`` never goes stale: a hung firmware with the port
    open would stay online and be sent the next job (design.md 2a)."""
    from operation_dispatcher.errors import ValidationError

    dispatcher = make_dispatcher()
    with pytest.raises(ValidationError) as refused:
        SerialLineBridge(dispatcher, "mcu", url="loop://", executor=True, max_age_seconds=None)
    assert refused.value.field == "max_age_seconds"
    assert dispatcher.executor is None  # the seat was not taken
    SerialLineBridge(dispatcher, "reader", url="loop://", max_age_seconds=None)  # signals only

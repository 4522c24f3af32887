"""The standalone PLC simulator (``python -m firmware_bridges.simulators.plc``) takes operator
commands on stdin: drop and raise the ready bit, fail a program, fault the running cycle. Each
test runs the real simulator process and talks to it over real Modbus TCP on 127.0.0.1 (a
ModbusBridge, as ``serve`` would); the process is always stopped."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from conftest import RESOURCE, EventRecorder, wait_signal, wait_until
from plc_helpers import EXECUTOR, READY

from firmware_bridges.modbus import ModbusBridge
from firmware_bridges.simulators.plc import PlcSimulator, free_port
from firmware_bridges.simulators.plc_console import MAX_LINE
from operation_dispatcher import EventType, Operation, OperationDispatcher, TerminationReason

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


class SimulatorProcess:
    """The simulator as a child process: commands on its stdin, answers read off its stdout."""

    def __init__(self, tmp_path: Path, *args: str, commands: bool = True) -> None:
        self.port = free_port(HOST)
        self._stderr = open(tmp_path / "plc-stderr.log", "wb")  # its log; a pipe could fill up
        self.process = subprocess.Popen(
            [sys.executable, "-m", "firmware_bridges.simulators.plc", "--port", str(self.port), *args],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,),
                                        name="test-plc-stdout", daemon=True)
        self._reader.start()
        self.banner = self.line(timeout=15)
        self.commands = self.line() if commands else ""

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self._lines.put(raw.decode("utf-8", errors="replace").rstrip("\n"))
        self._lines.put(None)  # stdout closed: the process ended

    def line(self, timeout: float = 5.0) -> str:
        try:
            text = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the simulator printed no line within {timeout} s") from None
        assert text is not None, f"the simulator ended (exit {self.process.wait(5)})"
        return text

    def send(self, raw: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(raw)
        self.process.stdin.flush()

    def command(self, text: str) -> str:
        """Send one command and return its one-line answer."""
        self.send(text.encode() + b"\n")
        return self.line()

    def stop(self) -> None:
        """End the process however it stands (a kill after 5 s), close the pipes and the log."""
        try:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(5)
        finally:
            for stream in (self.process.stdin, self.process.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except BrokenPipeError:  # stdin still buffered bytes for a dead process
                        pass
            self._reader.join(5)
            self._stderr.close()


@pytest.fixture
def start_plc(tmp_path: Path) -> Iterator[Callable[..., SimulatorProcess]]:
    started: list[SimulatorProcess] = []

    def factory(*args: str, commands: bool = True) -> SimulatorProcess:
        simulator = SimulatorProcess(tmp_path, *args, commands=commands)
        started.append(simulator)
        return simulator

    yield factory
    for simulator in started:
        simulator.stop()
    assert all(s.process.poll() is not None for s in started)


@pytest.fixture
def bridges() -> Iterator[list[ModbusBridge]]:
    made: list[ModbusBridge] = []
    yield made
    for bridge in made:
        bridge.stop()


def connect(dispatcher: OperationDispatcher, plc: SimulatorProcess, bridges: list[ModbusBridge],
            **kwargs: Any) -> ModbusBridge:
    bridge = ModbusBridge(dispatcher, "plc1", HOST, plc.port, poll_interval=0.01, timeout=0.5,
                          signals=READY, **kwargs)
    bridges.append(bridge)
    bridge.start()
    wait_signal(dispatcher, "plc1.online", True)
    return bridge


def run(dispatcher: OperationDispatcher, recorder: EventRecorder, program: int) -> Any:
    """Add an operation for ``program``; return its terminal event."""
    operation = Operation(resource_id=RESOURCE, payload={"program": program})
    dispatcher.add_operation(operation)
    return recorder.wait_for(
        lambda e: e.operation_id == operation.id
        and e.event_type in (EventType.OPERATION_COMPLETED, EventType.OPERATION_FAILED)
    )[0]


def test_the_ready_bit_drops_and_comes_back_on_command(
    start_plc: Callable[..., SimulatorProcess],
    make_dispatcher: Callable[..., OperationDispatcher],
    bridges: list[ModbusBridge],
) -> None:
    plc = start_plc("--ready")
    assert f"{HOST}:{plc.port}" in plc.banner and "ready on|off" in plc.commands
    dispatcher = make_dispatcher()
    connect(dispatcher, plc, bridges)
    wait_signal(dispatcher, "plc1.ready", True)

    assert plc.command("ready off") == "ok: ready off"
    wait_signal(dispatcher, "plc1.ready", False)
    assert plc.command("status").startswith("ok: ready=off mode=idle cycles=0")
    assert plc.command("READY On") == "ok: ready on"  # words are not case-sensitive
    wait_signal(dispatcher, "plc1.ready", True)


def test_a_program_fails_on_command_and_passes_again(
    start_plc: Callable[..., SimulatorProcess],
    make_dispatcher: Callable[..., OperationDispatcher],
    bridges: list[ModbusBridge],
) -> None:
    plc = start_plc("--ready", "--cycle-time", "0.05", "--fail", "9=7")
    dispatcher = make_dispatcher()
    recorder = EventRecorder(dispatcher)
    dispatcher.start()
    connect(dispatcher, plc, bridges, executor=EXECUTOR)

    assert plc.command("fail 5 42") == "ok: program 5 ends with the error bit and code 42"
    failed = run(dispatcher, recorder, 5)
    assert failed.event_type is EventType.OPERATION_FAILED
    reason = dispatcher.get_operation(failed.operation_id).termination_reason
    assert reason is TerminationReason.EXTERNAL_ERROR
    assert failed.meta_data["plc_error_code"] == 42
    assert run(dispatcher, recorder, 9).meta_data["plc_error_code"] == 7  # --fail still holds
    assert plc.command("status").endswith("failing=5=42,9=7")

    assert plc.command("pass 5") == "ok: program 5 ends with done"
    assert run(dispatcher, recorder, 5).event_type is EventType.OPERATION_COMPLETED
    assert plc.command("fail 6=3") == "ok: program 6 ends with the error bit and code 3"  # --fail's form
    assert run(dispatcher, recorder, 6).meta_data["plc_error_code"] == 3


def test_the_running_cycle_faults_on_command(
    start_plc: Callable[..., SimulatorProcess],
    make_dispatcher: Callable[..., OperationDispatcher],
    bridges: list[ModbusBridge],
) -> None:
    plc = start_plc("--ready", "--cycle-time", "60")
    dispatcher = make_dispatcher()
    recorder = EventRecorder(dispatcher)
    dispatcher.start()
    connect(dispatcher, plc, bridges, executor=EXECUTOR)
    assert plc.command("error 5") == "error: no cycle is running"

    operation = Operation(resource_id=RESOURCE, payload={"program": 3})
    dispatcher.add_operation(operation)
    # the PLC runs it once the bridge has pulsed start: nothing notifies the test of that
    wait_until(lambda: "mode=running" in plc.command("status"), what="the PLC running the cycle")
    assert plc.command("error 77") == "ok: the running cycle ended with the error bit and code 77"
    (failed,) = recorder.wait_for(EventType.OPERATION_FAILED, operation_id=operation.id)
    assert failed.meta_data["plc_error_code"] == 77
    assert plc.command("status").startswith("ok: ready=on mode=error cycles=1")


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        (b"", "error: an empty line"),
        (b"   \t ", "error: an empty line"),
        (b"ready maybe", "error: unknown command 'ready maybe'"),
        (b"ready", "error: unknown command 'ready'"),
        (b"fail 5", "error: CODE must be a whole number 0..65535, got ''"),
        (b"fail x 1", "error: PROGRAM must be a whole number 0..65535, got 'x'"),
        (b"fail 5 -1", "error: CODE must be a whole number 0..65535, got '-1'"),
        (b"fail 70000 1", "error: PROGRAM must be a whole number 0..65535, got '70000'"),
        (b"fail 5 1e9", "error: CODE must be a whole number 0..65535, got '1e9'"),
        (b"fail 5 nan", "error: CODE must be a whole number 0..65535, got 'nan'"),
        (b"fail 5 " + b"9" * 150, "error: CODE must be a whole number 0..65535, got '999"),
        (b"fail 5 " + b"9" * 400, f"error: a command line is at most {MAX_LINE} bytes"),
        (b"fail 5 \xd9\xa3", "error: CODE must be a whole number 0..65535, got '\u0663'"),  # Arabic 3
        (b"pass inf", "error: PROGRAM must be a whole number 0..65535, got 'inf'"),
        (b"error 3.5", "error: CODE must be a whole number 0..65535, got '3.5'"),
        (b"temperature -5", "error: TENTHS must be a whole number 0..65535, got '-5'"),
        (b"launch missiles", "error: unknown command 'launch missiles'"),
        (b"\xff\xfe\x00junk", "error: unknown command"),
        (b"quit now", "error: unknown command 'quit now'"),
    ],
)
def test_a_wrong_command_is_answered_and_changes_nothing(line: bytes, answer: str) -> None:
    from io import BytesIO, StringIO

    from firmware_bridges.simulators.plc_console import PlcConsole

    plc = PlcSimulator(ready=True, failing_programs={9: 7})  # never started: no port needed
    out = StringIO()
    assert PlcConsole(plc, out).run(BytesIO(line + b"\nstatus\n")) is False  # stdin ended
    first, second = out.getvalue().splitlines()
    assert first.startswith(answer), first
    assert second == "ok: ready=on mode=idle cycles=0 failing=9=7"


def test_bad_input_over_the_pipe_leaves_the_process_serving_and_quit_ends_it(
    start_plc: Callable[..., SimulatorProcess],
    make_dispatcher: Callable[..., OperationDispatcher],
    bridges: list[ModbusBridge],
) -> None:
    plc = start_plc("--ready")
    dispatcher = make_dispatcher()
    connect(dispatcher, plc, bridges)
    # an over-long line (a flood without a newline, in pieces) is refused whole, not executed
    plc.send(b"ready off" + b" x" * 50_000 + b"\n")
    assert plc.line() == f"error: a command line is at most {MAX_LINE} bytes"
    assert plc.command("\x00\x01 binary \xff").startswith("error: unknown command")
    assert plc.command("status").startswith("ok: ready=on")
    assert dispatcher.signals.get("plc1.ready").value is True
    assert plc.command("help").startswith("ok: commands: ready on|off; fail PROGRAM CODE")

    assert plc.command("quit") == "ok: quitting"
    assert plc.process.wait(10) == 0
    wait_signal(dispatcher, "plc1.online", False)  # the port is closed


def test_without_stdin_it_serves_until_sigterm_which_stops_it_cleanly(
    start_plc: Callable[..., SimulatorProcess],
    make_dispatcher: Callable[..., OperationDispatcher],
    bridges: list[ModbusBridge],
) -> None:
    plc = start_plc("--ready")
    assert plc.process.stdin is not None
    plc.process.stdin.close()  # stdin ends: e.g. started in the background with < /dev/null
    dispatcher = make_dispatcher()
    bridge = connect(dispatcher, plc, bridges)
    reads = bridge.counters["reads"]
    wait_until(lambda: bridge.counters["reads"] > reads + 5, what="polls after stdin ended")
    plc.process.send_signal(signal.SIGTERM)
    assert plc.process.wait(10) == 0  # SIGTERM is a clean stop, as Ctrl-C
    wait_signal(dispatcher, "plc1.online", False)


def test_no_commands_leaves_stdin_alone(
    start_plc: Callable[..., SimulatorProcess],
    make_dispatcher: Callable[..., OperationDispatcher],
    bridges: list[ModbusBridge],
) -> None:
    plc = start_plc("--ready", "--no-commands", commands=False)
    plc.send(b"ready off\nstatus\nquit\n")
    dispatcher = make_dispatcher()
    bridge = connect(dispatcher, plc, bridges)
    reads = bridge.counters["reads"]
    wait_until(lambda: bridge.counters["reads"] > reads + 20, what="polls after the commands")
    assert dispatcher.signals.get("plc1.ready").value is True
    assert plc.process.poll() is None  # "quit" was not read either
    plc.process.send_signal(signal.SIGTERM)
    assert plc.process.wait(10) == 0
    with pytest.raises(AssertionError, match="ended"):
        plc.line()  # nothing answered: stdout closed after the banner

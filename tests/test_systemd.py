"""The systemd service: the unit verifies and is hardened; ``serve`` speaks the notify protocol.

The unit is checked with the real ``systemd-analyze`` (a copy whose ExecStart names this venv's
``operation-dispatcher``, so that ``verify`` checks a real executable). The notify protocol is
checked against a socket the test owns, as systemd's own: ``serve`` in a subprocess with
``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC``. A wedged loop is made in-process by a journal whose
commit never returns while the loop thread writes (a hung SD card): the pings stop.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import RESOURCE, EventRecorder, op

from operation_dispatcher import EventType, OperationDispatcher
from operation_dispatcher.journal import Journal
from operation_dispatcher.sdnotify import Notifier, Watchdog, watchdog_interval

UNIT = Path(__file__).resolve().parent.parent / "examples" / "systemd" / "operation-dispatcher.service"
INSTALLED = "/opt/operation-dispatcher/venv/bin/operation-dispatcher"
#: measured with systemd 252 (Debian bookworm, as Raspberry Pi OS bookworm): 1.5 "OK"
MAX_EXPOSURE = 2.0


def unit_lines() -> dict[str, list[str]]:
    """key -> every value the unit gives it (systemd allows repeated keys)."""
    values: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            values.setdefault(key.strip(), []).append(value.strip())
    return values


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's console script (a real executable)."""
    script = Path(sys.executable).parent / "operation-dispatcher"
    assert script.exists(), script
    text = UNIT.read_text()
    assert INSTALLED in text
    copy = tmp_path / "operation-dispatcher.service"
    copy.write_text(text.replace(INSTALLED, str(script)))
    return copy


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=60, check=False,
    )


# ------------------------------------------------------------------------------ the unit


def test_the_unit_verifies_without_a_word(unit_copy: Path) -> None:
    result = analyze("verify", str(unit_copy))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_verify_is_a_real_check(unit_copy: Path) -> None:
    """The same verify speaks up for an unknown key (it still exits 0: only stderr tells)."""
    unit_copy.write_text(unit_copy.read_text().replace("[Service]", "[Service]\nWatchdogSecs=5"))
    result = analyze("verify", str(unit_copy))
    assert "WatchdogSecs" in result.stderr


def test_the_unit_is_hardened(unit_copy: Path) -> None:
    result = analyze("security", "--offline=yes", str(unit_copy))
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_the_unit_runs_serve_as_a_notify_service_with_a_watchdog() -> None:
    unit = unit_lines()
    for key, value in {
        "Type": "notify", "NotifyAccess": "main", "Restart": "on-failure",
        "User": "operation-dispatcher", "SupplementaryGroups": "dialout",
        "StateDirectory": "operation-dispatcher", "ProtectSystem": "strict",
        "NoNewPrivileges": "yes", "PrivateTmp": "yes", "DevicePolicy": "closed",
        "CapabilityBoundingSet": "", "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    }.items():
        assert unit[key] == [value], key
    assert int(unit["WatchdogSec"][0]) > 0
    assert unit["RestartPreventExitStatus"] == ["2"]  # serve's "bad config or journal"
    assert {"char-ttyUSB rw", "char-ttyACM rw"} <= set(unit["DeviceAllow"])
    exec_start = unit["ExecStart"][0].split()
    assert exec_start[:2] == [INSTALLED, "serve"]
    # the journal is in the StateDirectory: the only place ProtectSystem=strict lets it write
    journal = exec_start[exec_start.index("--journal") + 1]
    assert Path(journal).parent == Path("/var/lib/operation-dispatcher")


#: a child that counts glibc's malloc arenas (malloc_info's <heap> elements) once eight threads
#: have each allocated and are all alive: a thread keeps its arena while it lives
_COUNT_ARENAS = """
import ctypes, sys, threading
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
allocated, done = threading.Barrier(9), threading.Event()
def work():
    kept = [bytearray(4096) for _ in range(64)]  # over 512 B: malloc, not pymalloc
    allocated.wait()
    done.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for thread in threads:
    thread.start()
allocated.wait()
out = libc.fopen(sys.argv[1].encode(), b"w")
libc.malloc_info(0, out)
libc.fclose(out)
done.set()
for thread in threads:
    thread.join()
"""


def malloc_arenas(tmp_path: Path, env: dict[str, str]) -> int:
    """How many arenas glibc made for eight allocating threads under ``env``."""
    report = tmp_path / "malloc_info.xml"
    subprocess.run(
        [sys.executable, "-c", _COUNT_ARENAS, str(report)], env=env, check=True, timeout=60,
    )
    return report.read_text().count("<heap nr=")


def test_the_unit_holds_glibc_to_two_malloc_arenas(tmp_path: Path) -> None:
    """Environment=MALLOC_ARENA_MAX=2 reaches glibc: eight threads share two arenas, where
    without it each gets its own (fragmentation in many arenas was the soak's RSS creep)."""
    settings = dict(value.split("=", 1) for value in unit_lines()["Environment"])
    assert settings == {"MALLOC_ARENA_MAX": "2"}
    plain = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("MALLOC_", "GLIBC_TUNABLES"))
    }
    assert malloc_arenas(tmp_path, plain) > 2  # the count sees per-thread arenas
    assert malloc_arenas(tmp_path, {**plain, **settings}) == 2


# ------------------------------------------------------------------------------ the protocol


class NotifySocket:
    """What systemd holds: an AF_UNIX datagram socket the service sends its messages to."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)

    def receive(self, timeout: float) -> str | None:
        """The next message, or None if none came within ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode()
        except TimeoutError:
            return None

    def wait_for(self, line: str, timeout: float = 30.0) -> str:
        """Skip messages until one holds ``line``; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None and line in message.split("\n"):
                return message
        raise AssertionError(f"no {line} within {timeout} s")

    def drain(self) -> None:
        while self.receive(0.001) is not None:
            pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(str(tmp_path / "notify.sock"))
    yield sock
    sock.close()


def ping_times(sock: NotifySocket, count: int, timeout: float) -> list[float]:
    """When each of the next ``count`` WATCHDOG=1 messages arrived."""
    times = []
    while len(times) < count:
        sock.wait_for("WATCHDOG=1", timeout)
        times.append(time.monotonic())
    return times


def test_serve_says_ready_once_it_listens_pings_and_says_stopping(serve, notify_socket) -> None:
    served = serve(
        "--journal", "journal.db",
        env={"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "400000"},
    )
    ready = notify_socket.wait_for("READY=1")
    assert f"STATUS=serving resource-1 on {served.url}" in ready
    assert served.get("/health").json()["dispatcher_running"] is True  # listening by READY
    # idle (nothing queued: without the bound on its sleep the loop would sleep for good), the
    # loop still wakes for every ping, every 0.2 s (1 s allows for a loaded machine)
    times = ping_times(notify_socket, 6, timeout=5.0)
    gaps = [b - a for a, b in zip(times[1:], times[2:], strict=False)]  # the first may be late
    assert max(gaps) < 1.0, gaps
    code, _, err = served.stop()
    notify_socket.wait_for("STOPPING=1", timeout=5.0)
    assert code == 0, err


def test_a_dispatcher_stopped_on_purpose_is_not_restarted_by_the_watchdog(
    serve, notify_socket
) -> None:
    """POST /dispatcher/stop ends the loop; the pings go on (a restart would start it again)."""
    served = serve("--journal", ":memory:", env={
        "NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "400000",
    })
    notify_socket.wait_for("READY=1")
    assert served.post("/dispatcher/stop").status_code == 202
    assert served.get("/health").json()["dispatcher_running"] is False
    notify_socket.drain()
    ping_times(notify_socket, 3, timeout=0.4 * 3)  # still one at least every interval
    assert served.stop()[0] == 0


def test_an_abstract_notify_socket_is_reached(serve) -> None:
    sock = NotifySocket(f"@od-test-{uuid.uuid4().hex}")
    try:
        served = serve("--journal", ":memory:", env={"NOTIFY_SOCKET": sock.address})
        assert "READY=1" in sock.wait_for("READY=1").split("\n")
        assert served.stop()[0] == 0
        assert sock.wait_for("STOPPING=1", timeout=5.0)
    finally:
        sock.close()


def test_a_watchdog_meant_for_another_process_is_not_pinged(serve, notify_socket) -> None:
    served = serve("--journal", ":memory:", env={
        "NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1",
    })
    notify_socket.wait_for("READY=1")
    assert notify_socket.receive(0.5) is None  # 5 intervals: no WATCHDOG=1
    assert served.stop()[0] == 0


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "nan"}, None),
    ],
)
def test_the_watchdog_interval_is_half_of_watchdog_usec(environ, expected) -> None:
    assert watchdog_interval(environ, pid=4242) == expected


@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "relative"}])
def test_without_a_usable_notify_socket_nothing_is_sent(environ) -> None:
    assert Notifier.from_environment(environ) is None


def test_a_send_to_a_socket_nobody_reads_never_blocks(tmp_path: Path) -> None:
    """A full receive queue (a systemd that does not read) drops the ping; the loop goes on."""
    sock = NotifySocket(str(tmp_path / "full.sock"))
    notifier = Notifier(sock.address)
    try:
        began = time.monotonic()
        results = [notifier.send("WATCHDOG=1", "X=" + "y" * 1000) for _ in range(5000)]
        assert time.monotonic() - began < 5.0
        assert results[0] and not results[-1]  # the queue filled up and sends were dropped
    finally:
        notifier.close()
        sock.close()
    assert notifier.send("WATCHDOG=1") is False  # closed: no exception either


# ------------------------------------------------------------------------------ a wedged loop


class HangingJournal(Journal):
    """A journal whose commits made by the dispatcher loop's thread hang while ``hang`` is set:
    the disk that never answers, seen from the loop."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hang = threading.Event()
        self.release = threading.Event()
        self.hanging = threading.Event()

    def _commit(self, conn) -> None:
        if self.hang.is_set() and threading.current_thread().name.startswith("operation-dispatcher["):
            self.hanging.set()
            self.release.wait(30)
        super()._commit(conn)


def test_a_wedged_dispatcher_loop_stops_the_watchdog_pings(tmp_path: Path, notify_socket) -> None:
    every = 0.1
    journal = HangingJournal(tmp_path / "journal.db")
    dispatcher = OperationDispatcher(RESOURCE, journal=journal)
    recorder = EventRecorder(dispatcher)
    notifier = Notifier(notify_socket.address)
    watchdog = Watchdog(notifier, every, lambda: dispatcher.is_running)
    dispatcher.set_loop_heartbeat(watchdog.beat, every)
    watchdog.start()
    try:
        dispatcher.start()
        ping_times(notify_socket, 3, timeout=2.0)  # alive and idle: pinging
        journal.hang.set()
        # released a moment after the add: the loop's own pass starts it (and writes that)
        release = datetime.now(UTC) + timedelta(seconds=0.3)
        operation = dispatcher.add_operation(op(release_date=release))  # this thread: no hang
        assert journal.hanging.wait(5.0), "the loop never wrote"  # the loop's own pass hangs
        notify_socket.drain()  # a ping sent before the pass began
        assert notify_socket.receive(3 * every) is None, "a wedged loop still pinged"
        assert dispatcher.is_running  # not stopped: the fallback thread stays quiet too
        journal.release.set()
        ping_times(notify_socket, 2, timeout=2.0)  # back: pinging again
        recorder.wait_for(EventType.OPERATION_STARTED, operation_id=operation.id)
    finally:
        journal.release.set()
        watchdog.stop()
        dispatcher.close(timeout=5.0)
        journal.close()
        notifier.close()


def test_a_heartbeat_that_raises_is_logged_once_and_the_loop_goes_on(
    make_dispatcher, caplog
) -> None:
    beats = threading.Semaphore(0)

    def beat() -> None:
        beats.release()
        raise RuntimeError("broken heartbeat")

    dispatcher = make_dispatcher()
    dispatcher.set_loop_heartbeat(beat, 0.05)
    dispatcher.start()
    for _ in range(3):  # the loop goes on beating (and so lives)
        assert beats.acquire(timeout=2.0)
    dispatcher.stop(timeout=5.0)
    assert [r.getMessage() for r in caplog.records].count(
        "the dispatcher loop's heartbeat failed (logged once)"
    ) == 1


@pytest.mark.parametrize(
    ("beat", "every"), [(print, 0), (print, float("nan")), (print, None), ("beat", 1.0)]
)
def test_a_heartbeat_needs_a_callable_and_an_interval(make_dispatcher, beat, every) -> None:
    dispatcher = make_dispatcher()
    with pytest.raises(ValueError):
        dispatcher.set_loop_heartbeat(beat, every)

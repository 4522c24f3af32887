"""A simulated serial firmware: the device side of the serial line protocol.

It listens on a TCP port (the bridge connects with ``socket://127.0.0.1:PORT``) or on a
pseudo-terminal (the bridge opens the printed ``/dev/pts/N``). On ``RUN <id> <command>`` it
answers ``ACK`` and, ``run_seconds`` later, ``DONE <id>`` (or ``ERR <id> <reason>`` for a
command listed in ``fail_commands``); ``PAUSE`` freezes that clock, ``RESUME`` restarts it,
``CANCEL <id>`` drops the operation. With ``progress_seconds`` it reports the running job's
progress (``PROG <id> <percent>``, the share of ``run_seconds`` gone) that often;
:meth:`SerialDeviceSimulator.send_progress` sends one by hand. Lines it cannot parse get a
``NAK``. Signals given at start are sent to every new connection;
:meth:`SerialDeviceSimulator.send_signal` sends more.

Command line (runs until Ctrl-C)::

    python -m firmware_bridges.simulators.serial_device --tcp-port 7001 --signal ready=true
    python -m firmware_bridges.simulators.serial_device --pty --run-seconds 2
    python -m firmware_bridges.simulators.serial_device --run-seconds 10 --progress-seconds 1
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import threading
import time
import tty
from collections.abc import Callable, Mapping
from typing import Any

from .. import serial_protocol as proto

__all__ = ["SerialDeviceSimulator", "main"]

_TICK = 0.05  # longest select wait: bounds stop latency


class SerialDeviceSimulator:
    """The device side of the serial protocol on a TCP port or a pseudo-terminal.

    :param run_seconds: how long a RUN takes before DONE; None never answers on its own
        (the test sends DONE/ERR itself).
    :param fail_commands: command -> reason; RUN of such a command ends with ERR.
    :param signals: name -> value sent as ``SIG`` lines to every new connection.
    :param terminator: the line terminator.
    :param checksum: add and expect ``*XX`` checksums.
    :param ack: answer RUN/PAUSE/RESUME/CANCEL with ACK.
    :param repeat_seconds: re-send every known signal this often (None: only on connect).
    :param progress_seconds: while a job runs, send ``PROG <id> <percent>`` this often (None:
        never on its own; needs ``run_seconds``).
    """

    def __init__(
        self,
        *,
        run_seconds: float | None = 0.05,
        fail_commands: Mapping[str, str] | None = None,
        signals: Mapping[str, Any] | None = None,
        terminator: str = proto.DEFAULT_TERMINATOR,
        checksum: bool = False,
        ack: bool = True,
        repeat_seconds: float | None = 1.0,
        progress_seconds: float | None = None,
    ) -> None:
        if progress_seconds is not None and not 0 < progress_seconds < float("inf"):
            raise ValueError(f"progress_seconds must be a number > 0, got {progress_seconds!r}")
        self.run_seconds = run_seconds
        self.progress_seconds = progress_seconds
        self.fail_commands = dict(fail_commands or {})
        self.signals = dict(signals or {})
        self.terminator = terminator
        self.use_checksum = checksum
        self.ack = ack
        self.repeat_seconds = repeat_seconds
        self._next_repeat = 0.0
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._received: list[proto.HostMessage] = []
        self._connections = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: socket.socket | None = None
        self._client: socket.socket | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self.url: str | None = None
        # the operation being "run": id, command, seconds left, monotonic deadline (None: paused)
        self._job: dict[str, Any] | None = None

    # ================================================================ transports
    def listen_tcp(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on host:port (0: a free port); returns the ``socket://`` URL for the bridge."""
        server = socket.create_server((host, port))
        server.setblocking(False)
        self._server = server
        self.url = f"socket://{host}:{server.getsockname()[1]}"
        return self.url

    def open_pty(self) -> str:
        """Open a pseudo-terminal pair; returns the slave's path for the bridge."""
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing, bytes as they are
        self._master, self._slave = master, slave
        self.url = os.ttyname(slave)
        with self._cond:
            self._connections += 1  # a pty is "connected" from the start
        return self.url

    # ================================================================ lifecycle
    def start(self) -> SerialDeviceSimulator:
        if self._server is None and self._master is None:
            self.listen_tcp()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"serial-device-simulator[{self.url}]", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and close every socket or descriptor; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"{self._thread.name} did not stop within {timeout} s")
            self._thread = None
        self._close_client()
        for attr in ("_master", "_slave"):
            fd = getattr(self, attr)
            if fd is not None:
                os.close(fd)
                setattr(self, attr, None)
        if self._server is not None:
            self._server.close()
            self._server = None

    def __enter__(self) -> SerialDeviceSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ================================================================ for tests
    @property
    def received(self) -> list[proto.HostMessage]:
        """Every host message parsed so far, in order."""
        with self._cond:
            return list(self._received)

    @property
    def connections(self) -> int:
        with self._cond:
            return self._connections

    def wait_until(self, predicate: Callable[[SerialDeviceSimulator], bool], timeout: float = 5.0) -> None:
        """Block until ``predicate(self)`` is true (checked on every message and connection)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"condition not met after {timeout} s; received {self._received}"
                    )
                self._cond.wait(remaining)

    def wait_connected(self, count: int = 1, timeout: float = 5.0) -> None:
        self.wait_until(lambda sim: sim._connections >= count, timeout)

    def send_line(self, body: str) -> None:
        """Send one protocol line (checksum added when on)."""
        self.send_bytes(
            proto.encode_line(body, terminator=self.terminator, use_checksum=self.use_checksum)
        )

    def send_bytes(self, data: bytes) -> None:
        """Send raw bytes (garbage, half lines...) to the connected host."""
        with self._write_lock:
            if self._master is not None:
                os.write(self._master, data)
            elif self._client is not None:
                self._client.sendall(data)
            else:
                raise ConnectionError("no host is connected to the simulator")

    def send_signal(self, name: str, value: Any) -> None:
        self.signals[name] = value
        self.send_line(proto.format_signal(name, value))

    def send_progress(self, operation_id: Any, percent: float, message: str | None = None) -> None:
        """Report progress by hand: ``PROG <id> <percent> [message]``."""
        self.send_line(proto.format_progress(operation_id, percent, message))

    def send_done(self, operation_id: Any) -> None:
        """Report the job done by hand (also ends it here, so the next RUN is accepted)."""
        self._end_job(operation_id)
        self.send_line(proto.format_done(operation_id))

    def send_error(self, operation_id: Any, reason: str) -> None:
        """Report the job failed by hand (also ends it here, so the next RUN is accepted)."""
        self._end_job(operation_id)
        self.send_line(proto.format_error(operation_id, reason))

    def _end_job(self, operation_id: Any) -> None:
        job = self._job
        if job is not None and str(job["id"]) == str(operation_id):
            self._job = None

    # ================================================================ the thread
    def _close_client(self) -> None:
        with self._write_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _run(self) -> None:
        framer = proto.LineFramer(self.terminator)
        while not self._stop.is_set():
            readers: list[Any] = []
            if self._master is not None:
                readers.append(self._master)
            elif self._client is not None:
                readers.append(self._client)
            elif self._server is not None:
                readers.append(self._server)
            try:
                ready, _, _ = select.select(readers, [], [], self._wait_seconds())
            except (OSError, ValueError):
                # another thread (a failed send_line) closed the client while we waited on it:
                # look again with what is open now
                continue
            for source in ready:
                if source is self._server:
                    self._accept(framer)
                    continue
                try:
                    data = os.read(source, 4096) if isinstance(source, int) else source.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    if source is self._client:
                        self._close_client()
                    continue
                for line in framer.feed(data):
                    self._on_line(line)
            self._tick()

    def _accept(self, framer: proto.LineFramer) -> None:
        assert self._server is not None  # called only for a readable listening socket
        try:
            client, _ = self._server.accept()
        except BlockingIOError:
            return
        client.setblocking(True)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        framer.reset()
        with self._write_lock:
            self._client = client
        with self._cond:
            self._connections += 1
            self._cond.notify_all()
        self._send_signals()

    def _send_signals(self) -> None:
        if self.repeat_seconds is not None:
            self._next_repeat = time.monotonic() + self.repeat_seconds
        for name, value in list(self.signals.items()):
            self._safe_send(proto.format_signal(name, value))

    def _safe_send(self, body: str) -> None:
        try:
            self.send_line(body)
        except OSError:
            self._close_client()

    def _wait_seconds(self) -> float:
        job = self._job
        if job is not None and job["deadline"] is not None:
            return max(0.0, min(_TICK, job["deadline"] - time.monotonic()))
        return _TICK

    def _tick(self) -> None:
        connected = self._master is not None or self._client is not None
        if connected and self.repeat_seconds is not None and time.monotonic() >= self._next_repeat:
            self._send_signals()
        job = self._job
        if job is None or job["deadline"] is None:
            return
        now = time.monotonic()
        if now < job["deadline"]:
            self._report_progress(job, now)
            return
        self._job = None
        reason = self.fail_commands.get(job["command"])
        if reason is None:
            self._safe_send(proto.format_done(job["id"]))
        else:
            self._safe_send(proto.format_error(job["id"], reason))

    def _report_progress(self, job: dict[str, Any], now: float) -> None:
        """``PROG`` for the running job, every ``progress_seconds`` (not while paused)."""
        every, total = self.progress_seconds, self.run_seconds
        if every is None or not total or now < job.get("next_progress", 0.0):
            return
        job["next_progress"] = now + every
        done = min(100.0, max(0.0, 100.0 * (1.0 - (job["deadline"] - now) / total)))
        self._safe_send(proto.format_progress(job["id"], round(done, 1)))

    def _on_line(self, line: bytes | proto.Overlong) -> None:
        try:
            if isinstance(line, proto.Overlong):
                raise proto.MalformedLine(b"", "too long")
            msg = proto.parse_host_line(line, use_checksum=self.use_checksum)
        except proto.MalformedLine:
            self._safe_send("NAK")
            return
        with self._cond:
            self._received.append(msg)
            self._cond.notify_all()
        ok = self._apply(msg)
        if ok and self.ack:
            self._safe_send("ACK")
        elif not ok:
            self._safe_send("NAK")

    def _apply(self, msg: proto.HostMessage) -> bool:
        job, now = self._job, time.monotonic()
        if msg.kind == "RUN":
            if job is not None:
                return False
            seconds = self.run_seconds
            self._job = {
                "id": msg.operation_id, "command": msg.command, "left": seconds,
                "deadline": None if seconds is None else now + seconds,
            }
            return True
        if job is None:
            return False
        if msg.kind == "PAUSE" and job["deadline"] is not None:
            job["left"], job["deadline"] = max(0.0, job["deadline"] - now), None
        elif msg.kind == "RESUME" and job["left"] is not None:
            job["deadline"] = now + job["left"]
        elif msg.kind == "CANCEL" and msg.operation_id == job["id"]:
            self._job = None
        elif msg.kind == "CANCEL":
            return False
        return True


def _signal_arg(text: str) -> tuple[str, Any]:
    name, eq, value = text.partition("=")
    if not eq or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, proto.parse_value(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m firmware_bridges.simulators.serial_device",
        description="A simulated firmware speaking the serial line protocol.",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--tcp-port", type=int, default=7001, help="TCP port (default 7001)")
    where.add_argument("--pty", action="store_true", help="use a pseudo-terminal instead")
    parser.add_argument("--host", default="127.0.0.1", help="TCP address (default 127.0.0.1)")
    parser.add_argument("--run-seconds", type=float, default=1.0, help="RUN -> DONE time")
    parser.add_argument("--signal", type=_signal_arg, action="append", default=[],
                        metavar="NAME=VALUE", help="a signal sent on connect (repeatable)")
    parser.add_argument("--fail", type=_signal_arg, action="append", default=[],
                        metavar="COMMAND=REASON", help="RUN of COMMAND ends with ERR REASON")
    parser.add_argument("--checksum", action="store_true", help="use *XX checksums")
    parser.add_argument("--repeat-seconds", type=float, default=1.0,
                        help="re-send the signals this often (default 1.0)")
    parser.add_argument("--progress-seconds", type=float, default=None,
                        help="while a job runs, send PROG <id> <percent> this often (default: never)")
    args = parser.parse_args(argv)
    sim = SerialDeviceSimulator(
        run_seconds=args.run_seconds, signals=dict(args.signal),
        fail_commands={k: str(v) for k, v in args.fail}, checksum=args.checksum,
        repeat_seconds=args.repeat_seconds, progress_seconds=args.progress_seconds,
    )
    url = sim.open_pty() if args.pty else sim.listen_tcp(args.host, args.tcp_port)
    sim.start()
    print(f"serial device simulator on {url} (Ctrl-C to stop)", flush=True)
    try:
        sim._stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""SerialLineBridge: a microcontroller on a serial line feeds signals and executes operations.

The wire format is the line protocol of :mod:`firmware_bridges.serial_protocol`. The port is
opened with pyserial's ``serial_for_url``, so any URL works: a device path (``/dev/ttyUSB0``,
a pseudo-terminal), ``socket://host:port``, ``loop://``, ``rfc2217://``, ``spy://`` for a
traffic dump.

Device to host: ``SIG name=value`` sets ``<bridge>.name``; ``DONE <id>`` completes and
``ERR <id> <reason>`` fails (EXTERNAL_ERROR, ``meta_data={"reason": ...}``) the running
operation; ``PROG <id> <percent> [message]`` reports its progress (``report_progress`` with
``fraction = percent / 100``). Host to device, only with ``executor=True`` (off by default:
one machine has one executor, and a bridge that runs jobs must be chosen, not defaulted into),
when the dispatcher starts, pauses, resumes or cancels the current operation:
``RUN <id> <payload[command_key]>``, ``PAUSE``, ``RESUME``, ``CANCEL <id>``. These are queued
by the dispatcher's event thread and written by the bridge's own thread, so a stalled line
stalls no other subscriber.

Online means "a well-formed line arrived within ``max_age_seconds``": a hung firmware keeps a
USB port open, so the open connection proves nothing. A device that falls silent goes offline
(``<bridge>.online`` false, its signals stale, ``last_error`` says why) and is online again at
its next line.

Partial lines are buffered; bytes that are not UTF-8, lines over ``max_line`` bytes, unknown
messages and bad checksums are counted (``counters["malformed"]``) and logged, never fatal.
A DONE/ERR/PROG the dispatcher refuses (not the current operation) and a NAK count as
``counters["rejected"]`` (logged, rate-limited); a PROG whose message the dispatcher refuses
(over 200 characters) counts as malformed.
"""

from __future__ import annotations

import json
import logging
import select
import threading
import time
from typing import Any

from operation_dispatcher import (
    DispatchEvent,
    EventType,
    Operation,
    OperationDispatcher,
    TerminationReason,
    _checks,
)
from operation_dispatcher.errors import DispatcherError, ValidationError

from . import serial_protocol as proto
from .base import DEFAULT_MAX_SIGNALS, BaseBridge, BridgeConnectionError

try:
    import serial
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "SerialLineBridge requires pyserial: pip install 'operation-dispatcher[serial]'"
    ) from exc

__all__ = ["SerialLineBridge"]


def _fileno(port: Any) -> int | None:
    """The port's file descriptor (device paths, ptys, socket://), or None (loop://, rfc2217://)."""
    try:
        return int(port.fileno())
    except (AttributeError, OSError, TypeError, ValueError, serial.SerialException):
        return None

#: default max age of a serial device's signals: it must repeat its SIG lines at least this often
DEFAULT_MAX_AGE = 5.0
_READ_WAIT = 0.1  # seconds a read waits for data: also how soon a stopping bridge notices
_READ_CHUNK = 4096
_FINISHED = (EventType.OPERATION_COMPLETED, EventType.OPERATION_FAILED, EventType.OPERATION_CANCELLED)


class SerialLineBridge(BaseBridge):
    """A device speaking the serial line protocol, as signals and as an operation executor.

    :param dispatcher: the dispatcher to feed and whose operations the device runs.
    :param name: the bridge name (signals ``<name>.<signal>``, health ``<name>.online``).
    :param url: a pyserial URL or device path.
    :param baudrate: for real serial ports (ignored by ``socket://`` and ``loop://``).
    :param max_line: longest accepted line in bytes, terminator excluded.
    :param checksum: expect and send the ``*XX`` XOR checksum on every line.
    :param max_age_seconds: max age of the signals written (see :class:`BaseBridge`): the
        device must repeat its ``SIG`` lines within it, or they go stale, and must send some
        line within it, or the bridge goes offline. A hung firmware keeps a USB port open, so
        silence, not the connection, is what notices it. None trusts a value, and the device,
        until the line drops.
    :param command_key: the payload key whose value is sent in ``RUN <id> <command>``.
    :param terminator: the line terminator (default ``"\\n"``).
    :param executor: send RUN/PAUSE/RESUME/CANCEL for the dispatcher's operations (default
        off: only the one bridge that runs the machine's jobs says so).
    :param write_timeout: seconds a write may block on a stalled line before the connection
        counts as lost.
    :param max_signals: most distinct ``SIG`` names (see :class:`BaseBridge`).
    """

    kind = "serial"

    def __init__(
        self,
        dispatcher: OperationDispatcher,
        name: str,
        url: str,
        *,
        baudrate: int = 115200,
        max_line: int = proto.DEFAULT_MAX_LINE,
        checksum: bool = False,
        max_age_seconds: float | None = DEFAULT_MAX_AGE,
        command_key: str = "command",
        terminator: str = proto.DEFAULT_TERMINATOR,
        executor: bool = False,
        write_timeout: float = 1.0,
        reconnect_initial: float = 0.1,
        reconnect_max: float = 5.0,
        max_signals: int = DEFAULT_MAX_SIGNALS,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__(
            dispatcher, name, max_age_seconds=max_age_seconds,
            reconnect_initial=reconnect_initial, reconnect_max=reconnect_max,
            max_signals=max_signals, logger=logger,
        )
        _checks.seconds(write_timeout, "write_timeout")
        if not isinstance(url, str) or not url:
            raise ValidationError("url", f"must be a pyserial URL or device path, got {url!r}")
        _checks.integer(baudrate, "baudrate", 1)
        _checks.integer(max_line, "max_line", 1)
        _checks.text(terminator, "terminator")
        _checks.text(command_key, "command_key")
        _checks.boolean(checksum, "checksum", ("true", "false"))  # as TOML spells them
        _checks.boolean(executor, "executor", ("true", "false"))
        self.url = url
        self.baudrate = baudrate
        self.max_line = max_line
        self.use_checksum = checksum
        self.command_key = command_key
        self.terminator = terminator
        self.executor = executor
        self.write_timeout = float(write_timeout)
        self._counters.setdefault("rejected", 0)
        self._framer = proto.LineFramer(terminator, max_line)
        self._write_lock = threading.Lock()  # also guards _port against a concurrent close
        self._port: Any = None
        self._fileno: int | None = None  # the port's file descriptor, when it has one
        # the operation the device was told to RUN: set and cleared on the bridge thread only
        self._running_id: str | None = None
        self._last_line = 0.0  # time.monotonic() of the last well-formed line
        if executor:
            self._become_executor()

    def _reattach(self, operation: Operation) -> None:
        # DONE <id> / ERR <id> finish it; PAUSE, RESUME and CANCEL go to the device again
        self._running_id = str(operation.id)

    @property
    def endpoint(self) -> str:
        return self.url

    # ================================================================ hooks
    def _connect(self) -> None:
        try:
            port = serial.serial_for_url(
                self.url, baudrate=self.baudrate, timeout=_READ_WAIT,
                write_timeout=self.write_timeout,
            )
        except serial.SerialException as exc:
            raise BridgeConnectionError(self.name, f"cannot open {self.url!r}: {exc}") from exc
        self._framer.reset()
        self._fileno = _fileno(port)
        if self._fileno is not None:
            # select() does the waiting; a read then returns at once with what is there. Without
            # this, socket:// (whose in_waiting says 0 or 1) would be read one byte per call.
            port.timeout = 0
        with self._write_lock:
            self._port = port

    def _disconnect(self) -> None:
        with self._write_lock:
            port, self._port = self._port, None
        if port is not None:
            port.close()
        self._drop_queued_starts()

    def _interrupt(self) -> None:
        port = self._port
        cancel = getattr(port, "cancel_read", None)
        if cancel is not None:
            try:
                cancel()
            except Exception:  # the port may be closing under us; stop() must go on
                self.logger.debug("%s: cancel_read failed", self.thread_name, exc_info=True)

    def _serve(self) -> None:
        port, fileno = self._port, self._fileno
        while not self.stopping:
            self._run_commands()
            try:
                if fileno is not None:  # wait <= 0.1 s for data, then take all of it in one go
                    ready, _, _ = select.select([fileno], [], [], _READ_WAIT)
                    data = port.read(_READ_CHUNK) if ready else b""
                else:  # loop://, rfc2217://...: a blocking read that returns at the first byte
                    data = port.read(1)
                    waiting = port.in_waiting if data else 0
                    while waiting:
                        data += port.read(waiting)
                        waiting = port.in_waiting
            except serial.SerialException as exc:
                raise BridgeConnectionError(self.name, f"read from {self.url!r} failed: {exc}") from exc
            if data:
                self._count("reads")
                for line in self._framer.feed(data):
                    self._handle(line)
            self._check_silence()

    def _check_silence(self) -> None:
        """Offline once no well-formed line arrived for ``max_age_seconds`` (port still open)."""
        limit = self.max_age_seconds
        if limit is None or self._online is not True:
            return
        silent = time.monotonic() - self._last_line
        if silent > limit:
            self._went_silent(
                f"the device sent no line for {silent:.1f} s (max_age_seconds={limit:g}) "
                "although the port is open"
            )

    def _poll_once(self) -> None:  # _serve() replaces the poll loop
        raise NotImplementedError

    # ================================================================ device -> host
    def _malformed(self, line: Any, reason: str) -> None:
        self._count("malformed")
        self._warn_limited("malformed lines", f"dropped malformed line {line!r}: {reason}")

    def _rejected(self, message: str) -> None:
        self._count("rejected")
        self._warn_limited("refusals", message)

    def _handle(self, line: bytes | proto.Overlong) -> None:
        if isinstance(line, proto.Overlong):
            self._malformed(f"<{line.length} bytes>", f"longer than max_line={self.max_line}")
            return
        try:
            msg = proto.parse_device_line(line, use_checksum=self.use_checksum)
        except proto.MalformedLine as exc:
            self._malformed(line, exc.reason)
            return
        self._last_line = time.monotonic()  # the device talks: online (again)
        self._confirm_online()
        if msg.kind == "SIG":
            assert msg.name is not None  # the parser names every SIG
            try:
                self.set_signal(msg.name, msg.value)
            except DispatcherError as exc:
                self._malformed(line, str(exc))
        elif msg.kind == "DONE":
            assert msg.operation_id is not None  # the parser requires the id of DONE and ERR
            self._finish(msg.operation_id, None)
        elif msg.kind == "ERR":
            assert msg.operation_id is not None
            self._finish(msg.operation_id, msg.reason or "")
        elif msg.kind == "PROG":
            self._progress(line, msg)
        elif msg.kind == "NAK":
            self._rejected("the device refused the last command (NAK)")
        else:
            self.logger.debug("%s: ACK", self.thread_name)

    def _finish(self, operation_id: str, reason: str | None) -> None:
        try:
            if reason is None:
                self.dispatcher.complete_operation(
                    operation_id, meta_data={"bridge": self.name}, executor=self.name
                )
            else:
                self.dispatcher.fail_operation(
                    operation_id, TerminationReason.EXTERNAL_ERROR,
                    meta_data={"bridge": self.name, "reason": reason}, executor=self.name,
                )
        except DispatcherError as exc:
            word = "DONE" if reason is None else "ERR"
            self._rejected(f"{word} {operation_id} refused by the dispatcher: {exc}")

    def _progress(self, line: bytes, msg: proto.DeviceMessage) -> None:
        assert msg.operation_id is not None  # the parser gives PROG an id
        try:
            self.dispatcher.report_progress(msg.operation_id, msg.value / 100, msg.message)
        except ValidationError as exc:  # the message is too long, the id is not a UUID
            self._malformed(line, str(exc))
        except DispatcherError as exc:  # not the current operation: ignored, with a log line
            self._rejected(f"PROG {msg.operation_id} ignored by the dispatcher: {exc}")

    # ================================================================ host -> device
    def _handles_events(self) -> bool:
        return self.executor

    def send(self, body: str) -> None:
        """Write one protocol line (checksum and terminator added); raises OSError if offline."""
        raw = proto.encode_line(body, terminator=self.terminator, use_checksum=self.use_checksum)
        with self._write_lock:
            if self._port is None:
                raise BridgeConnectionError(self.name, f"{self.url!r} is not connected")
            try:
                self._port.write(raw)
                self._port.flush()
            except (serial.SerialException, OSError) as exc:
                raise BridgeConnectionError(self.name, f"write to {self.url!r} failed: {exc}") from exc

    def _command_of(self, operation_id: Any) -> str:
        op = self.dispatcher.get_operation(operation_id)
        payload = op.payload if op is not None else None
        if not isinstance(payload, dict) or self.command_key not in payload:
            raise ValueError(f"the payload has no {self.command_key!r} key")
        command = payload[self.command_key]
        return command if isinstance(command, str) else json.dumps(command, separators=(",", ":"))

    def _on_event(self, event: DispatchEvent) -> None:
        """Event thread: queue what the bridge thread must write; no I/O here."""
        if event.operation_id is None:
            return
        op_id = str(event.operation_id)
        kind = event.event_type
        if kind is EventType.OPERATION_STARTED:
            if not self.is_online:  # never queue a start for later: the device would run it
                self._fail_start(op_id, "the device is offline")  # unexpectedly on its return
                return
            self._queue_command("start", op_id)
        elif kind is EventType.OPERATION_PAUSED:
            self._queue_command("pause", op_id)
        elif kind is EventType.OPERATION_RESUMED:
            self._queue_command("resume", op_id)
        elif kind in _FINISHED:
            stop = kind is EventType.OPERATION_CANCELLED or self._forced_off(event)
            self._queue_command("cancel" if stop else "ended", op_id)

    def _run_commands(self) -> None:
        """Bridge thread: write the queued commands; the current job is ``_running_id``."""
        while (item := self._next_command()) is not None:
            command, op_id, _ = item
            if command == "start":
                self._start(op_id)
            elif op_id != self._running_id:
                continue
            elif command == "pause":
                self.send(proto.format_pause())
            elif command == "resume":
                self.send(proto.format_resume())
            else:  # cancel / ended: the job is over for the dispatcher
                self._running_id = None
                if command == "cancel":
                    self.send(proto.format_cancel(op_id))

    def _start(self, op_id: str) -> None:
        """Send ``RUN``; a payload without the command fails the operation, a write error too."""
        self._check_silence()  # silent since the last loop: never RUN to a hung device
        if not self._may_send_start(op_id, "the device is offline"):
            return
        try:
            body = proto.format_run(op_id, self._command_of(op_id))
        except ValueError as exc:
            self._fail_start(op_id, str(exc))
            return
        try:
            self.send(body)
        except BridgeConnectionError as exc:
            self._count("errors")
            self._fail_start(op_id, f"cannot send RUN: {exc}")
            raise
        self._running_id = op_id

    def _forget_command(self, command: str, op_id: Any) -> None:
        if command in ("cancel", "ended") and op_id == self._running_id:
            self._running_id = None

    def _fail_start(self, op_id: Any, reason: str) -> None:
        self.logger.warning("%s: operation %s not started: %s", self.thread_name, op_id, reason)
        super()._fail_start(op_id, reason)

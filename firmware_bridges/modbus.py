"""ModbusBridge: polls a PLC over Modbus TCP or Modbus RTU into signals, and optionally runs operations on it.

Transports: ``transport="tcp"`` (default) talks Modbus TCP to ``host:port`` with pymodbus'
``ModbusTcpClient``. ``transport="rtu"`` talks Modbus RTU (binary frames with a CRC) with
pymodbus' sync ``ModbusSerialClient`` on ``serial_port``: a device path (``/dev/ttyUSB0``,
settings ``baudrate`` / ``parity`` / ``stopbits`` / ``bytesize``) or any pyserial URL, such as
``socket://10.0.0.7:502`` for a serial server or a Modbus gateway that passes RTU frames through
TCP. The serial port is opened exclusively, so one bridge owns one line (one device id).
Every constructor argument is checked when the bridge is built and a bad one raises
:class:`~operation_dispatcher.errors.ValidationError` naming it; a TCP-only argument (``host``,
a non-default ``port``) given to an RTU bridge is refused, and so are serial settings given to a
TCP bridge, so a config never carries a value that is silently ignored.

A connection counts as up only once the device has answered a first read: opening a serial port
(or a TCP connection to a gateway) succeeds even when the PLC behind it is off, and a bridge
that said "connected" there would flap between online and offline on every retry.

Signals: every configured coil, discrete input, holding or input register is read each
``poll_interval`` (contiguous addresses of one kind in one request) and written to the
dispatcher's signal board as ``<bridge>.<signal>``, stamped with ``max_age_seconds`` so a silent
PLC leaves no release condition true. A signal spec is a mapping::

    {"kind": "coil" | "discrete_input" | "holding_register" | "input_register",
     "address": 12,              # 0-based
     "bit": 3,                   # optional, registers only: the value is that bit (a bool)
     "scale": 0.1,               # optional, registers only: the value is raw * scale
     "enum": {0: "idle", 1: "running"}}   # optional: raw value -> label (keys int or str)

Executor mode (``executor=`` given): on OPERATION_STARTED the bridge writes ``done_coil`` and
``error_coil`` to False, then ``payload["program"]`` to ``program_register``, then pulses
``start_coil``, and watches ``done_coil`` / ``error_coil``: done -> ``complete_operation``;
error -> ``fail_operation(EXTERNAL_ERROR, meta_data={"plc_error_code": <error_code_register>})``.
Clearing done and error first is a guard for PLCs that clear them one scan after the start (or
only when the host does): a bit left over from the previous cycle can then never complete or
fail the next operation. Optional keys: ``pause_coil``, ``resume_coil``, ``cancel_coil`` (pulsed
on OPERATION_PAUSED, OPERATION_RESUMED, OPERATION_CANCELLED) and ``program_key`` (the payload
key, default ``"program"``). An operation's ``timeout_seconds`` is enforced by the dispatcher
(FAILED, TIMEOUT); the bridge then stops watching it, as for a cancel.

Progress (optional): ``progress_register`` is a holding register the PLC fills with how far the
running program has got, read with every poll while an operation runs; ``progress_scale`` is the
raw value that means done (default 100: percent; 10000 for hundredths of a percent). Each value
that differs from the last one read becomes ``report_progress(fraction=raw / progress_scale)``
(the dispatcher rate-limits the events); a value above the scale is counted as malformed and
logged, never reported. The PLC should set the register to 0 when a cycle starts.

All Modbus traffic happens on the bridge thread with one client (pymodbus clients must not be
shared across threads); the dispatcher's event thread only queues commands for it.

Logging: pymodbus logs an ERROR of its own on every failed connect or unanswered request, and
a bridge retries forever, so importing this module attaches a filter to pymodbus' logger
(``pymodbus.logging``) that holds back pymodbus' records made on a Modbus bridge thread
(``bridge-modbus[...]``): the bridge logs one WARNING per change of health instead, with
pymodbus' reason in it. They are passed on as DEBUG records while ``pymodbus.logging`` is
enabled for DEBUG (for troubleshooting a line); records from any other thread pass unchanged.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

try:
    from pymodbus.client import ModbusSerialClient
    from pymodbus.exceptions import ConnectionException, ModbusIOException
    from pymodbus.framer import FramerType
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "ModbusBridge needs pymodbus: pip install 'operation-dispatcher[modbus]'"
    ) from exc

from operation_dispatcher import (
    DispatchEvent,
    EventType,
    Operation,
    OperationDispatcher,
    TerminationReason,
    _checks,
)
from operation_dispatcher.errors import DispatcherError, ValidationError

from .base import (
    DEFAULT_MAX_SIGNALS,
    BaseBridge,
    BridgeConnectionError,
    BridgeError,
    BridgeProtocolError,
)
from .modbus_tcp import TcpClient, closed_by_peer, connect_failure

__all__ = ["EXCEPTION_CODES", "ModbusBridge", "ModbusRefused", "SignalSpec"]

KINDS = ("coil", "discrete_input", "holding_register", "input_register")
_BIT_KINDS = frozenset({"coil", "discrete_input"})
_MAX_COUNT = {"coil": 2000, "discrete_input": 2000, "holding_register": 125, "input_register": 125}
_EXECUTOR_KEYS = frozenset({
    "program_register", "start_coil", "done_coil", "error_coil", "error_code_register",
    "pause_coil", "resume_coil", "cancel_coil", "program_key", "progress_register",
    "progress_scale",
})
_DEFAULT_PROGRESS_SCALE = 100
_REQUIRED_EXECUTOR_KEYS = ("program_register", "start_coil", "done_coil", "error_coil")

TRANSPORTS = ("tcp", "rtu")
PARITIES = ("N", "E", "O")
#: the serial settings and their defaults: an RTU bridge uses them, a TCP bridge refuses others
_SERIAL_DEFAULTS: Mapping[str, Any] = {"baudrate": 19200, "parity": "N", "stopbits": 1, "bytesize": 8}
_DEFAULT_TCP_PORT = 502
#: the logger every pymodbus 3.x module logs through (``pymodbus.logging.Log``)
PYMODBUS_LOGGER = "pymodbus.logging"
#: the prefix of ModbusBridge.thread_name, ``bridge-<kind>[<name>]``
_THREAD_PREFIX = "bridge-modbus["
_REPEATING = "Repeating...."  # what pymodbus logs instead of a message equal to the previous one


class _PymodbusOnBridgeThreads(logging.Filter):
    """Holds back pymodbus' records made on a Modbus bridge thread; the bridge logs the outage.

    pymodbus logs an ERROR on every failed connect and every unanswered request; a bridge retries
    forever and already logs one WARNING per change of health. The filter keeps the first line of
    the last held-back WARNING/ERROR per thread, so the bridge can put pymodbus' reason
    ("Connection refused", "Permission denied: '/dev/ttyUSB0'") in its own message, and passes
    the records on as DEBUG while pymodbus' logger is enabled for DEBUG.
    """

    #: how an installed instance is recognised (also one made by an earlier import of the module)
    installed_by = __name__

    def __init__(self) -> None:
        super().__init__()
        self._held = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if not threading.current_thread().name.startswith(_THREAD_PREFIX):
            return True
        if record.levelno >= logging.WARNING:
            message = record.getMessage().split("\n", 1)[0]
            if message != _REPEATING:
                self._held.reason = message
        if record.levelno <= logging.DEBUG:
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return True

    def forget(self) -> None:
        """Drop the reason held for this thread (before an attempt whose failure it explains)."""
        self._held.reason = None

    def reason(self) -> str | None:
        """The first line of the last WARNING/ERROR pymodbus logged on this thread, if any."""
        return getattr(self._held, "reason", None)


def _install_pymodbus_filter() -> _PymodbusOnBridgeThreads:
    """Attach the filter to pymodbus' logger once (a re-import finds and reuses the first one)."""
    pymodbus_logger = logging.getLogger(PYMODBUS_LOGGER)
    for existing in pymodbus_logger.filters:
        if getattr(existing, "installed_by", None) == __name__:
            return existing  # type: ignore[return-value]
    installed = _PymodbusOnBridgeThreads()
    pymodbus_logger.addFilter(installed)
    return installed


# installed at import (serialised by the import lock), before any bridge thread exists
_PYMODBUS_FILTER = _install_pymodbus_filter()


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """Where a signal lives in the PLC and how its raw value becomes the signal value."""

    name: str
    kind: str
    address: int
    bit: int | None = None
    scale: float | None = None
    enum: Mapping[int, Any] | None = None

    @classmethod
    def parse(cls, name: str, spec: Mapping[str, Any]) -> SignalSpec:
        where = f"signals.{name}"
        if not isinstance(spec, Mapping):
            raise ValidationError(where, f"must be a mapping with kind and address, got {spec!r}")
        unknown = sorted(set(spec) - {"kind", "address", "bit", "scale", "enum"})
        if unknown:
            raise ValidationError(
                where, f"has unknown keys {unknown} (known: kind, address, bit, scale, enum)"
            )
        kind = spec.get("kind")
        if kind not in KINDS:
            raise ValidationError(f"{where}.kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
        address = spec.get("address")
        if type(address) is not int or not 0 <= address <= 0xFFFF:
            raise ValidationError(f"{where}.address", f"must be an integer 0..65535, got {address!r}")
        bit, scale, enum = spec.get("bit"), spec.get("scale"), spec.get("enum")
        if (bit is not None or scale is not None) and kind in _BIT_KINDS:
            raise ValidationError(where, f"bit and scale apply to registers, not to a {kind}")
        if bit is not None and (type(bit) is not int or not 0 <= bit <= 15):
            raise ValidationError(f"{where}.bit", f"must be an integer 0..15, got {bit!r}")
        if scale is not None and (
            type(scale) not in (int, float) or scale == 0 or not math.isfinite(scale)
        ):
            raise ValidationError(
                f"{where}.scale", f"must be a finite non-zero number, got {scale!r}"
            )
        if enum is not None:
            if not isinstance(enum, Mapping):
                raise ValidationError(f"{where}.enum", f"must map raw values to labels, got {enum!r}")
            try:
                enum = {int(key): label for key, label in enum.items()}
            except (TypeError, ValueError):
                raise ValidationError(f"{where}.enum", f"keys must be integers, got {list(enum)}") from None
        return cls(name, kind, address, bit, scale, enum)

    def convert(self, raw: int | bool) -> tuple[Any, bool]:
        """The signal value for a raw value, and whether the raw value was understood."""
        if self.bit is not None:
            raw = bool((int(raw) >> self.bit) & 1)
        if self.enum is not None:
            key = int(raw)
            if key not in self.enum:
                return raw, False
            return self.enum[key], True
        if self.scale is not None:
            return raw * self.scale, True
        return raw, True


class ModbusBridge(BaseBridge):
    """A PLC on Modbus TCP or Modbus RTU: polled into signals, and optionally the executor of operations.

    :param dispatcher: the dispatcher to feed.
    :param name: the bridge name, the prefix of its signals (``plc1`` -> ``plc1.ready``).
    :param host: the PLC's address (``transport="tcp"`` only, and required there).
    :param port: its Modbus TCP port, 1..65535 (``transport="tcp"`` only).
    :param transport: ``"tcp"`` (Modbus TCP) or ``"rtu"`` (Modbus RTU on ``serial_port``).
    :param serial_port: ``transport="rtu"`` only, and required there: a device path such as
        ``/dev/ttyUSB0`` or a pyserial URL such as ``socket://127.0.0.1:5021``.
    :param baudrate: bits per second of the serial line (``transport="rtu"`` only).
    :param parity: ``"N"``, ``"E"`` or ``"O"`` (``transport="rtu"`` only).
    :param stopbits: 1 or 2 (``transport="rtu"`` only).
    :param bytesize: data bits, 7 or 8 (``transport="rtu"`` only).
    :param device_id: the Modbus device id (unit id, RTU slave address), 0..247.
    :param poll_interval: seconds between two polls.
    :param signals: signal name -> spec (see the module docstring).
    :param executor: the executor mapping, or None for a read-only bridge.
    :param max_age_seconds: max age of the signals written (default: 5 poll intervals, >= 0.5 s).
    :param timeout: the client's timeout per request, in seconds; it also bounds stop latency.
    :param max_signals: most signals the bridge may configure (see :class:`BaseBridge`).
    """

    kind = "modbus"

    def __init__(
        self,
        dispatcher: OperationDispatcher,
        name: str,
        host: str | None = None,
        port: int = _DEFAULT_TCP_PORT,
        *,
        transport: str = "tcp",
        serial_port: str | None = None,
        baudrate: int = _SERIAL_DEFAULTS["baudrate"],
        parity: str = _SERIAL_DEFAULTS["parity"],
        stopbits: int = _SERIAL_DEFAULTS["stopbits"],
        bytesize: int = _SERIAL_DEFAULTS["bytesize"],
        device_id: int = 1,
        poll_interval: float = 0.1,
        signals: Mapping[str, Mapping[str, Any]] | None = None,
        executor: Mapping[str, Any] | None = None,
        max_age_seconds: float | None = None,
        timeout: float = 1.0,
        reconnect_initial: float = 0.1,
        reconnect_max: float = 5.0,
        max_signals: int = DEFAULT_MAX_SIGNALS,
        logger: logging.Logger | None = None,
    ) -> None:
        _check_connection(transport, host, port, serial_port, {
            "baudrate": baudrate, "parity": parity, "stopbits": stopbits, "bytesize": bytesize,
        })
        _checks.integer(device_id, "device_id", 0, 247)
        _checks.seconds(poll_interval, "poll_interval")
        _checks.seconds(timeout, "timeout")
        if max_age_seconds is None:  # derived, so capped: a slow poll must not be blamed on it
            max_age_seconds = min(max(5 * poll_interval, 0.5), _checks.MAX_SECONDS)
        super().__init__(
            dispatcher, name, max_age_seconds=max_age_seconds,
            reconnect_initial=reconnect_initial, reconnect_max=reconnect_max,
            max_signals=max_signals, logger=logger,
        )
        self.transport = transport
        self.host = host
        self.port = port
        self.serial_port = serial_port
        self.baudrate = baudrate
        self.parity = parity
        self.stopbits = stopbits
        self.bytesize = bytesize
        self.device_id = device_id
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)
        self.signal_specs = _check_signals(signals)
        if len(self.signal_specs) > max_signals:
            raise ValidationError(
                "signals", f"{len(self.signal_specs)} signals is more than max_signals={max_signals}"
            )
        self.executor = _check_executor(executor)
        self._plan = _batch(self._addresses())
        # requests the PLC refused with an exception response: (kind, address) -> the error
        self._refused: dict[tuple[str, int], str] = {}
        # the operation the PLC was told to start: set and cleared on the bridge thread only
        self._active: UUID | None = None
        self._last_progress: int | None = None  # the progress register's last value read
        self._client: TcpClient | ModbusSerialClient | None = None
        if self.executor is not None:
            self._become_executor()

    def _reattach(self, operation: Operation) -> None:
        # its done / error bit finishes it; the bits carry no id, see the README
        self._active = operation.id

    # ================================================================ configuration
    def _addresses(self) -> dict[str, set[int]]:
        wanted: dict[str, set[int]] = {kind: set() for kind in KINDS}
        for spec in self.signal_specs:
            wanted[spec.kind].add(spec.address)
        if self.executor is not None:
            wanted["coil"].update((self.executor["done_coil"], self.executor["error_coil"]))
            for key in ("error_code_register", "progress_register"):
                if key in self.executor:
                    wanted["holding_register"].add(self.executor[key])
        return wanted

    @property
    def requests_per_poll(self) -> int:
        """How many Modbus requests one poll makes (contiguous addresses share one)."""
        return len(self._plan)

    @property
    def endpoint(self) -> str:
        """``tcp://host:port``, or ``rtu://<serial_port>?baudrate=19200&parity=N&stopbits=1&bytesize=8``."""
        if self.transport == "rtu":
            return (f"rtu://{self.serial_port}?baudrate={self.baudrate}&parity={self.parity}"
                    f"&stopbits={self.stopbits}&bytesize={self.bytesize}")
        assert self.host is not None
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        return f"tcp://{host}:{self.port}"

    # ================================================================ hooks
    def _connect(self) -> None:
        _PYMODBUS_FILTER.forget()
        # refused reads stay known (each is logged once); the plan is made again for a new
        # connection, which may be to a PLC whose program was fixed meanwhile
        self._refused = {key: error for key, error in self._refused.items() if key[0] != "write"}
        self._plan = _batch(self._addresses())
        if self.transport == "rtu":
            assert self.serial_port is not None
            serial = self._client = ModbusSerialClient(
                self.serial_port, framer=FramerType.RTU, baudrate=self.baudrate,
                parity=self.parity, stopbits=self.stopbits, bytesize=self.bytesize,
                timeout=self.timeout, retries=0, reconnect_delay=0, reconnect_delay_max=0,
            )
            if not serial.connect():
                failure = f"cannot open {self.serial_port}"
                reason = _PYMODBUS_FILTER.reason()  # pymodbus logged why; the filter held it back
                raise BridgeConnectionError(self.name, f"{failure} ({reason})" if reason else failure)
        else:
            assert self.host is not None
            tcp = self._client = TcpClient(
                self.host, port=self.port, timeout=self.timeout, retries=0,
                reconnect_delay=0, reconnect_delay_max=0,
            )
            if not tcp.connect():  # "connection refused by host:port", the same on every retry
                reason = connect_failure(self.host, self.port, tcp.connect_error)
                raise BridgeConnectionError(self.name, reason)
        self._probe()

    def _probe(self) -> None:
        """Read once before the connection counts as up: an open port is not an answering PLC.

        An exception response is an answer too (the device is there); the poll reports it.
        """
        kind, start, count = self._plan[0] if self._plan else ("holding_register", 0, 1)
        try:
            self._request(f"read_{kind}s", start, count=count)
        except BridgeProtocolError:
            return
        self._count("reads")

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
        self._drop_queued_starts()  # (BaseBridge) fail the starts queued for this connection

    def _poll_once(self) -> None:
        self._run_commands()
        raw = self._read_all()
        for spec in self.signal_specs:
            if (spec.kind, spec.address) not in raw:  # refused: never written, or stale
                self.dispatcher.signals.expire(f"{self.name}.{spec.name}")
                continue
            value, understood = spec.convert(raw[spec.kind, spec.address])
            if not understood:
                self._count("malformed")
                self.logger.debug("%s: %s has no enum label for %r", self.thread_name, spec.name, value)
            self.set_signal(spec.name, value)
        if self.executor is not None and self._active is not None:
            self._watch(raw)

    def _handles_events(self) -> bool:
        return self.executor is not None

    def _on_event(self, event: DispatchEvent) -> None:
        """Event thread: queue what the bridge thread must write; no Modbus traffic here."""
        op_id = event.operation_id
        if op_id is None:
            return
        kind = event.event_type
        if kind is EventType.OPERATION_STARTED:
            if not self.is_online:  # never queue a start for later: the PLC would start it
                self._fail_start(op_id, "the PLC is offline")  # unexpectedly on its return
                return
            op = self.dispatcher.get_operation(op_id)
            payload = op.payload if op is not None else {}
            assert self.executor is not None  # only an executor handles events (_handles_events)
            self._queue_command("start", op_id, payload.get(self.executor["program_key"]))
        elif kind is EventType.OPERATION_PAUSED:
            self._queue_command("pause", op_id)
        elif kind is EventType.OPERATION_RESUMED:
            self._queue_command("resume", op_id)
        elif kind in (EventType.OPERATION_CANCELLED, EventType.OPERATION_FAILED,
                      EventType.OPERATION_COMPLETED):
            stop = kind is EventType.OPERATION_CANCELLED or self._forced_off(event)
            self._queue_command("cancel" if stop else "ended", op_id)

    # ================================================================ Modbus I/O
    def _request(self, method: str, address: int, **kwargs: Any) -> Any:
        client = self._client
        if client is None:
            raise BridgeConnectionError(self.name, "not connected")
        try:
            response = getattr(client, method)(address, device_id=self.device_id, **kwargs)
        except (ConnectionException, ModbusIOException, ConnectionResetError, BrokenPipeError) as exc:
            if closed_by_peer(exc):  # not pymodbus' "unexpectedly closed 0.000 seconds into read"
                raise BridgeConnectionError(self.name, (
                    f"{self.endpoint} closed the connection without answering (a PLC does so "
                    "when it allows no more clients, or not this client's address)")) from exc
            # pymodbus raises "from None" after an OSError; what the line said is the useful part
            cause = exc.__cause__ or exc.__context__
            detail = f"{exc} ({cause})" if cause is not None else str(exc)
            raise BridgeConnectionError(self.name, f"{self.endpoint}: {detail}") from exc
        if response.isError():
            raise ModbusRefused(self.name, method, address, kwargs, self.device_id,
                                getattr(response, "exception_code", None))
        return response

    def _read_all(self) -> dict[tuple[str, int], int | bool]:
        """Read every planned range; a range the PLC refuses is reported, the rest still read.

        A refused range of several addresses is split into single reads once, so one bad
        address (outside the PLC's range) takes only its own signal with it.
        """
        raw: dict[tuple[str, int], int | bool] = {}
        refused: dict[tuple[str, int], str] = {}
        for kind, start, count in list(self._plan):
            try:
                response = self._request(f"read_{kind}s", start, count=count)
            except ModbusRefused as exc:
                if count > 1:
                    self._split(kind, start, count)
                    return self._read_all()
                refused[kind, start] = exc.reason
                continue
            values = response.bits if kind in _BIT_KINDS else response.registers
            self._count("reads")
            for offset in range(count):
                raw[kind, start + offset] = values[offset]
        self._report_refused(refused)
        if self._plan and not raw:  # nothing readable (a wrong device_id): not online, and why
            raise BridgeProtocolError(self.name, self._last_error or "every read was refused")
        return raw

    def _split(self, kind: str, start: int, count: int) -> None:
        """Replace one planned range by single-address reads."""
        at = self._plan.index((kind, start, count))
        self._plan[at:at + 1] = [(kind, start + offset, 1) for offset in range(count)]

    def _report_refused(self, refused: dict[tuple[str, int], str]) -> None:
        """A configuration error: logged once per address (no traceback), shown in last_error.

        A refused write (executor coils) stays on show until the bridge reconnects; a refused
        read until a poll reads that address.
        """
        refused = {**{k: v for k, v in self._refused.items() if k[0] == "write"}, **refused}
        for key, error in refused.items():
            if key not in self._refused:
                self._count("errors")
                self.logger.warning("%s: configuration error: %s", self.thread_name, error)
        self._refused = refused
        self._last_error = (
            "configuration error: " + "; ".join(refused[key] for key in sorted(refused))
            if refused else None
        )

    def _pulse(self, coil: int) -> None:
        self._request("write_coil", coil, value=True)
        self._request("write_coil", coil, value=False)

    # ================================================================ executor
    def _run_commands(self) -> None:
        while (item := self._next_command()) is not None:
            command, op_id, argument = item
            ex = self.executor
            assert ex is not None
            if command == "start":
                self._start(op_id, argument)
            elif command in ("pause", "resume", "cancel") and op_id == self._active:
                coil = ex.get(f"{command}_coil")
                if coil is not None:
                    self._pulse(coil)
                if command == "cancel":
                    self._active = None
            elif command == "ended" and op_id == self._active:
                self._active = None  # finished elsewhere (e.g. cancelled by a user, timed out)

    def _start(self, op_id: UUID, program: Any) -> None:
        ex = self.executor
        assert ex is not None
        if not self._may_send_start(op_id, "the PLC is offline"):
            return
        if type(program) is not int or not 0 <= program <= 0xFFFF:
            key = ex["program_key"]
            self._finish(op_id, TerminationReason.INTERNAL_ERROR, {
                "error": f"payload[{key!r}] must be a program number 0..65535, got {program!r}"
            })
            return
        # the guard: a done or error bit the PLC has not cleared yet (PLCs that clear them one
        # scan after the start, or never) must not end this operation at the next poll
        try:
            self._request("write_coil", ex["done_coil"], value=False)
            self._request("write_coil", ex["error_coil"], value=False)
            self._request("write_register", ex["program_register"], value=program)
            self._pulse(ex["start_coil"])
            self._last_progress = None
        except BridgeError as exc:  # half a start sequence: whether the PLC runs is unknown
            self._fail_start(op_id, f"the start sequence failed ({exc}); check the machine",
                             plc_state="unknown")
            if isinstance(exc, ModbusRefused):  # the PLC answered: the connection is fine
                self._report_refused({**self._refused, ("write", exc.address): exc.reason})
                return
            raise
        self._active = op_id

    def _fail_start(self, op_id: Any, reason: str, **meta: Any) -> None:
        self.logger.warning("%s: operation %s not started: %s", self.thread_name, op_id, reason)
        self._finish(op_id, TerminationReason.EXTERNAL_ERROR, {"error": reason, **meta})

    def _watch(self, raw: dict[tuple[str, int], int | bool]) -> None:
        ex = self.executor
        assert ex is not None and self._active is not None
        op_id = self._active
        if "progress_register" in ex:
            self._report_progress(op_id, raw.get(("holding_register", ex["progress_register"])))
        if raw.get(("coil", ex["done_coil"])):  # a refused coil (last_error) ends nothing
            self._active = None
            self._finish(op_id, None, None)
        elif raw.get(("coil", ex["error_coil"])):
            self._active = None
            code = raw.get(("holding_register", ex.get("error_code_register", -1)))
            self._finish(op_id, TerminationReason.EXTERNAL_ERROR, {"plc_error_code": code})

    def _report_progress(self, op_id: UUID, value: int | bool | None) -> None:
        """A new value of the progress register (None: not read) -> ``report_progress``."""
        if value is None or value == self._last_progress:
            return
        self._last_progress = int(value)
        ex = self.executor
        assert ex is not None
        scale = ex["progress_scale"]
        if value > scale:
            self._count("malformed")
            self._warn_limited("progress values", (
                f"progress register {ex['progress_register']} holds {value}, more than "
                f"progress_scale={scale}: not reported"))
            return
        try:
            self.dispatcher.report_progress(op_id, value / scale)
        except DispatcherError as exc:  # no longer current: finished meanwhile
            self.logger.info("%s: progress of operation %s ignored: %s", self.thread_name, op_id, exc)

    def _finish(self, op_id: UUID, reason: TerminationReason | None, meta: dict[str, Any] | None) -> None:
        try:
            if reason is None:
                self.dispatcher.complete_operation(
                    op_id, meta_data={"bridge": self.name}, executor=self.name
                )
            else:
                self.dispatcher.fail_operation(
                    op_id, reason, meta_data={"bridge": self.name, **(meta or {})},
                    executor=self.name,
                )
        except DispatcherError as exc:  # no longer current: cancelled, timed out or finished
            # by an operator's force meanwhile: the device's late report changes nothing
            self.logger.info("%s: operation %s was not finished by the PLC: %s", self.thread_name, op_id, exc)


#: Modbus exception codes (Modbus application protocol v1.1b3, section 7)
EXCEPTION_CODES: Mapping[int, str] = {
    1: "ILLEGAL FUNCTION", 2: "ILLEGAL DATA ADDRESS", 3: "ILLEGAL DATA VALUE",
    4: "SERVER DEVICE FAILURE", 5: "ACKNOWLEDGE", 6: "SERVER DEVICE BUSY",
    8: "MEMORY PARITY ERROR", 10: "GATEWAY PATH UNAVAILABLE",
    11: "GATEWAY TARGET DEVICE FAILED TO RESPOND",
}


class ModbusRefused(BridgeProtocolError):
    """The PLC answered a request with a Modbus exception response (usually a config error:
    an address outside its range, a wrong device_id behind a gateway)."""

    def __init__(self, bridge: str, method: str, address: int, kwargs: Mapping[str, Any],
                 device_id: int, code: int | None) -> None:
        self.method = method
        self.address = address
        self.code = code
        name = EXCEPTION_CODES.get(code, "unknown") if code is not None else "no code"
        count = f", count {kwargs['count']}" if "count" in kwargs else ""
        super().__init__(bridge, (
            f"the PLC refused {method} at address {address}{count} (device_id {device_id}) "
            f"with Modbus exception code {code} ({name})"
        ))


def _check_connection(
    transport: Any, host: Any, port: Any, serial_port: Any, serial: Mapping[str, Any]
) -> None:
    """Check where the PLC is; every error names the constructor argument that is wrong."""
    _checks.one_of(transport, "transport", TRANSPORTS)
    _checks.integer(port, "port", 1, 65535)
    _checks.integer(serial["baudrate"], "baudrate", 1)
    _checks.one_of(serial["parity"], "parity", PARITIES)
    if type(serial["stopbits"]) is not int or serial["stopbits"] not in (1, 2):
        raise ValidationError("stopbits", f"must be 1 or 2, got {serial['stopbits']!r}")
    if type(serial["bytesize"]) is not int or serial["bytesize"] not in (7, 8):
        raise ValidationError("bytesize", f"must be 7 or 8, got {serial['bytesize']!r}")
    if transport == "tcp":
        if host is None:
            raise ValidationError("host", "is required for transport 'tcp' (the PLC's address)")
        if type(host) is not str or not host or any(c.isspace() for c in host):
            raise ValidationError("host", f"must be a host name or IP address, got {host!r}")
        if serial_port is not None:
            raise ValidationError(
                "serial_port", f"applies to transport 'rtu' only, got {serial_port!r} for a tcp bridge"
            )
        for key, default in _SERIAL_DEFAULTS.items():
            if serial[key] != default:
                raise ValidationError(
                    key, f"applies to transport 'rtu' only, got {serial[key]!r} for a tcp bridge"
                )
        return
    if serial_port is None:
        raise ValidationError(
            "serial_port", "is required for transport 'rtu' (a device such as /dev/ttyUSB0, or a "
            "pyserial URL such as socket://host:port)",
        )
    if type(serial_port) is not str or not serial_port.strip():
        raise ValidationError("serial_port", f"must be a device path or a pyserial URL, got {serial_port!r}")
    over_tcp = "; for RTU frames over TCP use serial_port='socket://host:port'"
    if host is not None:
        raise ValidationError("host", f"applies to transport 'tcp' only, got {host!r}{over_tcp}")
    if port != _DEFAULT_TCP_PORT:
        raise ValidationError("port", f"applies to transport 'tcp' only, got {port!r}{over_tcp}")


def _check_signals(signals: Any) -> list[SignalSpec]:
    if signals is None:
        return []
    if not isinstance(signals, Mapping):
        raise ValidationError("signals", f"must map signal names to specs, got {signals!r}")
    for name in signals:
        if type(name) is not str or not name or any(c.isspace() for c in name):
            raise ValidationError("signals", f"names must be non-empty and without spaces, got {name!r}")
    return [SignalSpec.parse(name, spec) for name, spec in signals.items()]


def _check_executor(executor: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if executor is None:
        return None
    if not isinstance(executor, Mapping):
        raise ValidationError("executor", f"must be a mapping, got {executor!r}")
    unknown = sorted(set(executor) - _EXECUTOR_KEYS)
    if unknown:
        raise ValidationError("executor", f"has unknown keys {unknown} (known: {sorted(_EXECUTOR_KEYS)})")
    missing = [key for key in _REQUIRED_EXECUTOR_KEYS if key not in executor]
    if missing:
        raise ValidationError("executor", f"needs {missing} as well")
    checked = dict(executor)
    for key, value in executor.items():
        if key.endswith(("_coil", "_register")) and (type(value) is not int or not 0 <= value <= 0xFFFF):
            raise ValidationError(f"executor.{key}", f"must be an address 0..65535, got {value!r}")
    if "progress_register" not in checked:
        if "progress_scale" in checked:
            raise ValidationError("executor.progress_scale", "applies only with a progress_register")
        return _with_program_key(checked)
    for other in ("program_register", "error_code_register"):
        if checked.get(other) == checked["progress_register"]:
            raise ValidationError(
                "executor.progress_register",
                f"must differ from {other} ({checked[other]}): that register holds something else",
            )
    scale = checked.setdefault("progress_scale", _DEFAULT_PROGRESS_SCALE)
    if type(scale) is not int or not 1 <= scale <= 0xFFFF:
        raise ValidationError(
            "executor.progress_scale",
            f"must be an integer 1..65535 (the raw value meaning done, e.g. 100 or 10000), "
            f"got {scale!r}",
        )
    return _with_program_key(checked)


def _with_program_key(checked: dict[str, Any]) -> dict[str, Any]:
    program_key = checked.setdefault("program_key", "program")
    if type(program_key) is not str or not program_key:
        raise ValidationError("executor.program_key", f"must be a payload key, got {program_key!r}")
    return checked


def _batch(wanted: Mapping[str, set[int]]) -> list[tuple[str, int, int]]:
    """(kind, first address, count) requests covering every wanted address, contiguous runs merged."""
    plan: list[tuple[str, int, int]] = []
    for kind in KINDS:
        run_start: int | None = None
        previous = -2
        for address in sorted(wanted.get(kind, ())):
            if run_start is None or address != previous + 1 or address - run_start >= _MAX_COUNT[kind]:
                if run_start is not None:
                    plan.append((kind, run_start, previous - run_start + 1))
                run_start = address
            previous = address
        if run_start is not None:
            plan.append((kind, run_start, previous - run_start + 1))
    return plan

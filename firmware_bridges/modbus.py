"""ModbusBridge: polls a PLC over Modbus TCP into signals, and optionally runs operations on it.

Signals: every configured coil, discrete input, holding or input register is read each
``poll_interval`` (contiguous addresses of one kind in one request) and written to the
dispatcher's signal board as ``<bridge>.<signal>``, stamped with ``max_age_seconds`` so a silent
PLC leaves no release condition true. A signal spec is a mapping::

    {"kind": "coil" | "discrete_input" | "holding_register" | "input_register",
     "address": 12,              # 0-based
     "bit": 3,                   # optional, registers only: the value is that bit (a bool)
     "scale": 0.1,               # optional, registers only: the value is raw * scale
     "enum": {0: "idle", 1: "running"}}   # optional: raw value -> label (keys int or str)

Executor mode (``executor=`` given): on OPERATION_STARTED the bridge writes
``payload["program"]`` to ``program_register``, pulses ``start_coil``, then watches
``done_coil`` / ``error_coil``: done -> ``complete_operation``; error ->
``fail_operation(EXTERNAL_ERROR, meta_data={"plc_error_code": <error_code_register>})``.
Optional keys: ``pause_coil``, ``resume_coil``, ``cancel_coil`` (pulsed on OPERATION_PAUSED,
OPERATION_RESUMED, OPERATION_CANCELLED) and ``program_key`` (the payload key, default
``"program"``). An operation's ``timeout_seconds`` is enforced by the dispatcher (FAILED,
TIMEOUT); the bridge then stops watching it, as for a cancel.

All Modbus traffic happens on the bridge thread with one client (pymodbus clients must not be
shared across threads); the dispatcher's event thread only queues commands for it.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

try:
    from pymodbus.client import ModbusTcpClient
    from pymodbus.exceptions import ConnectionException, ModbusIOException
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "ModbusBridge needs pymodbus: pip install 'operation-dispatcher[modbus]'"
    ) from exc

from operation_dispatcher import DispatchEvent, EventType, OperationDispatcher, TerminationReason
from operation_dispatcher.errors import DispatcherError, ValidationError

from .base import BaseBridge, BridgeConnectionError, BridgeProtocolError

__all__ = ["ModbusBridge", "SignalSpec"]

KINDS = ("coil", "discrete_input", "holding_register", "input_register")
_BIT_KINDS = frozenset({"coil", "discrete_input"})
_MAX_COUNT = {"coil": 2000, "discrete_input": 2000, "holding_register": 125, "input_register": 125}
_EXECUTOR_KEYS = frozenset({
    "program_register", "start_coil", "done_coil", "error_coil", "error_code_register",
    "pause_coil", "resume_coil", "cancel_coil", "program_key",
})
_REQUIRED_EXECUTOR_KEYS = ("program_register", "start_coil", "done_coil", "error_coil")


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
        if scale is not None and (type(scale) not in (int, float) or scale == 0):
            raise ValidationError(f"{where}.scale", f"must be a non-zero number, got {scale!r}")
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
    """A PLC on Modbus TCP: polled into signals, and optionally the executor of operations.

    :param dispatcher: the dispatcher to feed.
    :param name: the bridge name, the prefix of its signals (``plc1`` -> ``plc1.ready``).
    :param host: the PLC's address.
    :param port: its Modbus TCP port.
    :param device_id: the Modbus device id (unit id).
    :param poll_interval: seconds between two polls.
    :param signals: signal name -> spec (see the module docstring).
    :param executor: the executor mapping, or None for a read-only bridge.
    :param max_age_seconds: max age of the signals written (default: 5 poll intervals, >= 0.5 s).
    :param timeout: the client's timeout per request, in seconds; it also bounds stop latency.
    """

    kind = "modbus"

    def __init__(
        self,
        dispatcher: OperationDispatcher,
        name: str,
        host: str,
        port: int = 502,
        *,
        device_id: int = 1,
        poll_interval: float = 0.1,
        signals: Mapping[str, Mapping[str, Any]] | None = None,
        executor: Mapping[str, Any] | None = None,
        max_age_seconds: float | None = None,
        timeout: float = 1.0,
        reconnect_initial: float = 0.1,
        reconnect_max: float = 5.0,
        logger: logging.Logger | None = None,
    ) -> None:
        if not poll_interval > 0:
            raise ValidationError("poll_interval", f"must be > 0 seconds, got {poll_interval!r}")
        if not timeout > 0:
            raise ValidationError("timeout", f"must be > 0 seconds, got {timeout!r}")
        if max_age_seconds is None:
            max_age_seconds = max(5 * poll_interval, 0.5)
        super().__init__(
            dispatcher, name, max_age_seconds=max_age_seconds,
            reconnect_initial=reconnect_initial, reconnect_max=reconnect_max, logger=logger,
        )
        self.host = host
        self.port = int(port)
        self.device_id = int(device_id)
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)
        self.signal_specs = [SignalSpec.parse(n, s) for n, s in (signals or {}).items()]
        self.executor = _check_executor(executor)
        self._plan = _batch(self._addresses())
        self._commands: queue.SimpleQueue[tuple[str, UUID, Any]] = queue.SimpleQueue()
        self._active: UUID | None = None
        self._client: ModbusTcpClient | None = None

    # ================================================================ configuration
    def _addresses(self) -> dict[str, set[int]]:
        wanted: dict[str, set[int]] = {kind: set() for kind in KINDS}
        for spec in self.signal_specs:
            wanted[spec.kind].add(spec.address)
        if self.executor is not None:
            wanted["coil"].update((self.executor["done_coil"], self.executor["error_coil"]))
            if "error_code_register" in self.executor:
                wanted["holding_register"].add(self.executor["error_code_register"])
        return wanted

    @property
    def requests_per_poll(self) -> int:
        """How many Modbus requests one poll makes (contiguous addresses share one)."""
        return len(self._plan)

    @property
    def endpoint(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    # ================================================================ hooks
    def _connect(self) -> None:
        self._client = ModbusTcpClient(
            self.host, port=self.port, timeout=self.timeout, retries=0,
            reconnect_delay=0, reconnect_delay_max=0,
        )
        if not self._client.connect():
            raise BridgeConnectionError(self.name, f"cannot connect to {self.host}:{self.port}")

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _poll_once(self) -> None:
        self._run_commands()
        raw = self._read_all()
        for spec in self.signal_specs:
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
            op = self.dispatcher.get_operation(op_id)
            payload = op.payload if op is not None else {}
            self._commands.put(("start", op_id, payload.get(self.executor["program_key"])))
        elif kind is EventType.OPERATION_PAUSED:
            self._commands.put(("pause", op_id, None))
        elif kind is EventType.OPERATION_RESUMED:
            self._commands.put(("resume", op_id, None))
        elif kind in (EventType.OPERATION_CANCELLED, EventType.OPERATION_FAILED,
                      EventType.OPERATION_COMPLETED):
            self._commands.put(("cancel" if kind is EventType.OPERATION_CANCELLED else "ended",
                                op_id, None))

    # ================================================================ Modbus I/O
    def _request(self, method: str, address: int, **kwargs: Any) -> Any:
        client = self._client
        if client is None:
            raise BridgeConnectionError(self.name, "not connected")
        try:
            response = getattr(client, method)(address, device_id=self.device_id, **kwargs)
        except (ConnectionException, ModbusIOException) as exc:
            raise BridgeConnectionError(self.name, f"{self.host}:{self.port}: {exc}") from exc
        if response.isError():
            raise BridgeProtocolError(
                self.name, f"{method}({address}, {kwargs}) was refused by the PLC: {response}"
            )
        return response

    def _read_all(self) -> dict[tuple[str, int], int | bool]:
        raw: dict[tuple[str, int], int | bool] = {}
        for kind, start, count in self._plan:
            response = self._request(f"read_{kind}s", start, count=count)
            values = response.bits if kind in _BIT_KINDS else response.registers
            self._count("reads")
            for offset in range(count):
                raw[kind, start + offset] = values[offset]
        return raw

    def _pulse(self, coil: int) -> None:
        self._request("write_coil", coil, value=True)
        self._request("write_coil", coil, value=False)

    # ================================================================ executor
    def _run_commands(self) -> None:
        while True:
            try:
                command, op_id, argument = self._commands.get_nowait()
            except queue.Empty:
                return
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
        if type(program) is not int or not 0 <= program <= 0xFFFF:
            key = ex["program_key"]
            self._finish(op_id, TerminationReason.INTERNAL_ERROR, {
                "error": f"payload[{key!r}] must be a program number 0..65535, got {program!r}"
            })
            return
        self._request("write_register", ex["program_register"], value=program)
        self._pulse(ex["start_coil"])
        self._active = op_id

    def _watch(self, raw: dict[tuple[str, int], int | bool]) -> None:
        ex = self.executor
        assert ex is not None and self._active is not None
        op_id = self._active
        if raw["coil", ex["done_coil"]]:
            self._active = None
            self._finish(op_id, None, None)
        elif raw["coil", ex["error_coil"]]:
            self._active = None
            code = raw.get(("holding_register", ex.get("error_code_register", -1)))
            self._finish(op_id, TerminationReason.EXTERNAL_ERROR, {"plc_error_code": code})

    def _finish(self, op_id: UUID, reason: TerminationReason | None, meta: dict[str, Any] | None) -> None:
        try:
            if reason is None:
                self.dispatcher.complete_operation(op_id, meta_data={"bridge": self.name})
            else:
                self.dispatcher.fail_operation(op_id, reason, meta_data={"bridge": self.name, **(meta or {})})
        except DispatcherError as exc:  # no longer current: cancelled or finished meanwhile
            self.logger.info("%s: operation %s was not finished by the PLC: %s", self.thread_name, op_id, exc)


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
    checked.setdefault("program_key", "program")
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

"""What the Modbus bridge tests share: the simulator's executor map, a started bridge, logs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import EventRecorder, wait_signal

from firmware_bridges.modbus import ModbusBridge
from firmware_bridges.simulators.plc import PlcSimulator
from operation_dispatcher import OperationDispatcher

PLC = PlcSimulator
EXECUTOR = {
    "program_register": PLC.PROGRAM_REGISTER,
    "start_coil": PLC.START_COIL,
    "done_coil": PLC.DONE_COIL,
    "error_coil": PLC.ERROR_COIL,
    "error_code_register": PLC.ERROR_CODE_REGISTER,
}
READY = {"ready": {"kind": "discrete_input", "address": PLC.READY_INPUT}}


def endpoint_of(plc: PlcSimulator) -> dict[str, Any]:
    """A bridge's connection arguments for ``plc``: Modbus TCP, or RTU on its serial URL."""
    if plc.framer == "rtu":
        return {"transport": "rtu", "serial_port": plc.serial_url}
    return {"host": "127.0.0.1", "port": plc.port}


def bridge_factory() -> Iterator[Callable[..., ModbusBridge]]:
    """Body of a ``make_bridge`` fixture: ``factory(dispatcher, plc, **kwargs)`` builds a
    ModbusBridge named plc1 for the simulator ``plc`` (see :func:`endpoint_of`), starts it and
    waits until it is online; every bridge is stopped at teardown.
    """
    made: list[ModbusBridge] = []

    def factory(dispatcher: OperationDispatcher, plc: PlcSimulator, **kwargs: Any) -> ModbusBridge:
        kwargs.setdefault("poll_interval", 0.01)
        kwargs.setdefault("signals", READY)
        kwargs.setdefault("timeout", 0.5)
        bridge = ModbusBridge(dispatcher, "plc1", **endpoint_of(plc), **kwargs)
        made.append(bridge)
        bridge.start()
        # an operation that starts while the PLC is offline fails at once, by design: wait
        wait_signal(dispatcher, "plc1.online", True)
        return bridge

    yield factory
    for bridge in made:
        bridge.stop()


def started(make_dispatcher: Callable[..., OperationDispatcher]) -> tuple[OperationDispatcher, EventRecorder]:
    """A started dispatcher and a recorder of its events."""
    dispatcher = make_dispatcher()
    recorder = EventRecorder(dispatcher)
    dispatcher.start()
    return dispatcher, recorder


def records(caplog: pytest.LogCaptureFixture, prefix: str, level: int) -> list[str]:
    """Messages of loggers named ``prefix...`` at ``level`` or above."""
    return [r.getMessage() for r in caplog.records if r.name.startswith(prefix) and r.levelno >= level]

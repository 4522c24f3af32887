"""The simulated PLC that ``operation-dispatcher serve --demo`` runs for a Modbus executor bridge.

The core's demo (:mod:`operation_dispatcher.demo`) knows no bridge by name: it asks the
entry-point group ``operation_dispatcher.demo_devices`` for a device of each bridge's ``kind``,
and this package declares :func:`simulated_plc` for ``modbus``. For a Modbus TCP executor bridge
on a loopback address it returns a :class:`DemoPlc`: the PLC simulator (pymodbus' own server) on
that bridge's address, so every demo operation runs through a real Modbus connection: the bridge
writes the program number, pulses start and completes the operation when the PLC raises done.
Program 13 makes the PLC raise its error bit (code 42), which shows an ``EXTERNAL_ERROR``
failure. The PLC's ready bit goes off now and then, holding the operations released by
``<bridge>.ready``.
"""

from __future__ import annotations

import logging
from typing import Any

from operation_dispatcher.demo import LOOPBACK

from .plc import PlcSimulator

__all__ = ["FAILING_CODE", "FAILING_PROGRAM", "DemoPlc", "simulated_plc"]

log = logging.getLogger(__name__)
#: the program that the simulated PLC fails, and the error code it reports
FAILING_PROGRAM, FAILING_CODE = 13, 42


class DemoPlc:
    """The demo's PLC behind one Modbus executor bridge (see the module docstring)."""

    def __init__(self, bridge: Any, *, cycle_time: float) -> None:
        self.bridge = bridge
        self.release_signal = f"{bridge.name}.ready"
        self.online_signal = f"{bridge.name}.online"
        self.runs_jobs = True  # only an executor bridge gets one
        self._program_key = bridge.executor["program_key"]
        self._plc = PlcSimulator(
            bridge.host, bridge.port, cycle_time=cycle_time, device_id=bridge.device_id,
            ready=True, failing_programs={FAILING_PROGRAM: FAILING_CODE},
        )
        ex, plc = bridge.executor, self._plc
        if (ex["program_register"], ex["start_coil"], ex["done_coil"], ex["error_coil"]) != (
            plc.PROGRAM_REGISTER, plc.START_COIL, plc.DONE_COIL, plc.ERROR_COIL,
        ):
            log.warning("demo: the bridge's executor map differs from the simulated PLC's")

    def start(self) -> None:
        """Listen on the bridge's address; OSError when something else uses it."""
        where = f"{self.bridge.host}:{self.bridge.port}"
        try:
            self._plc.start()
        except RuntimeError as exc:  # the simulator's "could not listen"
            raise OSError(f"the demo's simulated PLC cannot listen on {where} "
                          f"(is something else using the port?): {exc.__cause__ or exc}") from exc
        log.info("demo: simulated PLC on %s", where)

    def stop(self) -> None:
        self._plc.stop()

    def set_ready(self, ready: bool) -> None:
        """The PLC's ready bit, which the bridge reads as ``<bridge>.ready``."""
        self._plc.set_ready(ready)

    def payload(self, task_number: int, failing: bool) -> dict[str, Any]:
        """The program the bridge writes: the task's number, or the one the PLC fails."""
        return {self._program_key: FAILING_PROGRAM if failing else task_number}


def simulated_plc(bridge: Any, *, cycle_time: float) -> DemoPlc | None:
    """A :class:`DemoPlc` for a Modbus TCP executor bridge on a loopback address, else None
    (the demo never simulates a device at an address another machine could answer)."""
    if (
        getattr(bridge, "executor", None) is not None
        and getattr(bridge, "transport", "tcp") == "tcp"
        and getattr(bridge, "host", None) in LOOPBACK
    ):
        return DemoPlc(bridge, cycle_time=cycle_time)
    return None

"""The simulated serial device that ``operation-dispatcher serve --demo`` runs for a serial bridge.

Declared in the entry-point group ``operation_dispatcher.demo_devices`` for ``serial`` (see
:mod:`operation_dispatcher.demo`). For a serial bridge whose URL is ``socket://`` on a loopback
address it returns a :class:`DemoSerialDevice`: the serial device simulator listening there, so
the bridge reads real protocol lines over a real socket. The device repeats a ``door_closed``
signal (``<bridge>.door_closed``, which the demo flips now and then) faster than the bridge's
``max_age_seconds``; as an executor it answers ``RUN`` with ``DONE`` after the cycle time (a job
whose command is ``fail`` ends with ``ERR``) and reports progress on the way.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from operation_dispatcher.demo import LOOPBACK

from .serial_device import SerialDeviceSimulator

__all__ = ["FAILING_COMMAND", "DemoSerialDevice", "simulated_serial_device"]

log = logging.getLogger(__name__)
#: the command the simulated device fails
FAILING_COMMAND = "fail"
#: the signal the device repeats, without the bridge's prefix
DOOR = "door_closed"


class DemoSerialDevice:
    """The demo's device behind one serial bridge (see the module docstring)."""

    def __init__(self, bridge: Any, host: str, port: int, *, cycle_time: float) -> None:
        self.bridge = bridge
        self.release_signal = f"{bridge.name}.{DOOR}"
        self.online_signal = f"{bridge.name}.online"
        self.runs_jobs = bool(getattr(bridge, "executor", False))
        self._where = (host, port)
        max_age = getattr(bridge, "max_age_seconds", None) or 2.0
        self._device = SerialDeviceSimulator(
            run_seconds=cycle_time, signals={DOOR: 1},
            fail_commands={FAILING_COMMAND: "demo: the device refused this job"},
            repeat_seconds=min(0.5, max_age / 4), checksum=bool(getattr(bridge, "use_checksum", False)),
            progress_seconds=cycle_time / 4,
        )

    def start(self) -> None:
        """Listen on the bridge's address; OSError when something else uses it."""
        host, port = self._where
        try:
            self._device.listen_tcp(host, port)
        except OSError as exc:
            raise OSError(f"the demo's simulated serial device cannot listen on {host}:{port} "
                          f"(is something else using the port?): {exc}") from exc
        self._device.start()
        log.info("demo: simulated serial device on %s:%s", host, port)

    def stop(self) -> None:
        self._device.stop()

    def set_ready(self, ready: bool) -> None:
        """The door, which the bridge reads as ``<bridge>.door_closed`` at the next repeat."""
        self._device.signals[DOOR] = 1 if ready else 0

    def payload(self, task_number: int, failing: bool) -> dict[str, Any]:
        """The command the bridge sends in ``RUN <id> <command>``."""
        return {self.bridge.command_key: FAILING_COMMAND if failing else f"task{task_number}"}


def simulated_serial_device(bridge: Any, *, cycle_time: float) -> DemoSerialDevice | None:
    """A :class:`DemoSerialDevice` for a serial bridge on ``socket://`` at a loopback address,
    else None (the demo never simulates a device another machine could answer, nor a real port)."""
    url = getattr(bridge, "url", "")
    if not isinstance(url, str) or not url.startswith("socket://"):
        return None
    parts = urlsplit(url)
    if parts.hostname not in LOOPBACK or parts.port is None:
        return None
    return DemoSerialDevice(bridge, parts.hostname, parts.port, cycle_time=cycle_time)

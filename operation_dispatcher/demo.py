"""The machine behind ``operation-dispatcher serve --demo`` (and ``make demo``).

A trickle of operations and an operator who approves them, so the API shows live traffic. Who
executes the operations depends on the config:

* a Modbus executor bridge on a loopback address (``examples/plc.toml``): the demo starts the
  PLC simulator (pymodbus' own server) on that address, so every operation runs through a real
  Modbus connection on 127.0.0.1: the bridge writes the program number, pulses start and
  completes the operation when the PLC raises done. Program 13 makes the PLC raise its error
  bit (code 42), which shows an ``EXTERNAL_ERROR`` failure. The PLC's ready bit goes off now
  and then, holding the operations released by ``<bridge>.ready``.
* otherwise a :class:`~operation_dispatcher.simulation.SimulatedOperationRunner` in-process,
  and the signal ``demo.door_closed`` opens and closes now and then.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .approvals import PENDING
from .errors import DispatcherError, RequestClosed, UnknownRequest
from .models import DispatchEvent, EventType, Operation

if TYPE_CHECKING:
    from .dispatcher import OperationDispatcher

log = logging.getLogger(__name__)
#: addresses that only this machine reaches (the demo simulates a PLC only there)
LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: the program that the simulated PLC fails, and the error code it reports
FAILING_PROGRAM, FAILING_CODE = 13, 42


class DemoMachine:
    """A simulated machine, a trickle of operations and an operator who approves them.

    Start requests are left PENDING and answered by the "operator" thread a moment later (so
    ``GET /requests`` shows them and you may answer first); every ``deny_every``-th one is
    denied, which shows the denial, its cooldown and the retry. Cancel, pause and resume are
    approved at once.

    :param plc_bridge: a Modbus executor bridge whose PLC the demo simulates (see the module
        docstring), or None for the in-process simulated machine; :meth:`start` picks one
        from the bridges it is given when this is None.
    """

    TASKS = (("pick", 2.0), ("place", 1.5), ("inspect", 3.0), ("weld", 4.0), ("polish", 2.5))
    SIGNAL = "demo.door_closed"

    def __init__(
        self, *, plc_bridge: Any = None, interval: float = 2.0, answer_after: float = 0.8,
        deny_every: int = 7, max_queued: int = 8, cycle_time: float = 2.0, seed: int | None = None,
    ) -> None:
        self.plc_bridge = plc_bridge
        self.interval = interval
        self.answer_after = answer_after
        self.deny_every = deny_every
        self.max_queued = max_queued
        self.cycle_time = cycle_time
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._requests: queue.Queue[Any] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._runner: Any = None
        self._plc: Any = None
        self._plc_ready = True
        self._asked = 0

    @staticmethod
    def plc_bridge_among(bridges: Sequence[Any]) -> Any:
        """The first Modbus TCP executor bridge on a loopback address, or None."""
        for bridge in bridges:
            if (
                getattr(bridge, "kind", None) == "modbus"
                and getattr(bridge, "executor", None) is not None
                and getattr(bridge, "transport", "tcp") == "tcp"
                and bridge.host in LOOPBACK
            ):
                return bridge
        return None

    @property
    def release_signal(self) -> str:
        """The signal that holds some of the demo's operations."""
        return f"{self.plc_bridge.name}.ready" if self.plc_bridge is not None else self.SIGNAL

    def on_request(self, event: DispatchEvent) -> Any:
        """The dispatcher's request callback."""
        if event.event_type is EventType.OPERATION_START_REQUESTED:
            self._requests.put(event.id)
            return PENDING
        return True

    def start(self, dispatcher: OperationDispatcher, bridges: Sequence[Any] = ()) -> None:
        """Start the simulated machine (PLC or in-process runner) and the feeder and operator.

        Call it before the bridges start, so the bridge finds its PLC at the first attempt.
        Raises OSError when the simulated PLC cannot listen on the bridge's address.
        """
        if self.plc_bridge is None:
            self.plc_bridge = self.plc_bridge_among(bridges)
        if self.plc_bridge is not None:
            from firmware_bridges.simulators.plc import PlcSimulator

            ex = self.plc_bridge.executor
            self._plc = PlcSimulator(
                self.plc_bridge.host, self.plc_bridge.port, cycle_time=self.cycle_time,
                device_id=self.plc_bridge.device_id, ready=True,
                failing_programs={FAILING_PROGRAM: FAILING_CODE},
            )
            if (ex["program_register"], ex["start_coil"], ex["done_coil"], ex["error_coil"]) != (
                self._plc.PROGRAM_REGISTER, self._plc.START_COIL, self._plc.DONE_COIL,
                self._plc.ERROR_COIL,
            ):
                log.warning("demo: the bridge's executor map differs from the simulated PLC's")
            try:
                self._plc.start()
            except RuntimeError as exc:  # the simulator's "could not listen"
                where = f"{self.plc_bridge.host}:{self.plc_bridge.port}"
                raise OSError(f"the demo's simulated PLC cannot listen on {where} "
                              f"(is something else using the port?): {exc.__cause__ or exc}") from exc
            log.info("demo: simulated PLC on %s:%s", self.plc_bridge.host, self.plc_bridge.port)
        else:
            from .simulation import SimulatedOperationRunner

            self._runner = SimulatedOperationRunner(dispatcher=dispatcher, name="demo-machine")
            self._runner.start_worker()
        for name, target in (("feeder", self._feed), ("operator", self._operate)):
            thread = threading.Thread(
                target=target, args=(dispatcher,), name=f"operation-dispatcher-demo-{name}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._requests.put(None)
        for thread in self._threads:
            thread.join(5.0)
        if self._runner is not None:
            self._runner.stop()
        if self._plc is not None:
            self._plc.stop()

    # ------------------------------------------------------------------ threads
    def _toggle_release(self, dispatcher: OperationDispatcher) -> None:
        """The door opens or closes (or the PLC's ready bit flips)."""
        if self._plc is not None:
            self._plc_ready = not self._plc_ready
            self._plc.set_ready(self._plc_ready)
        else:
            dispatcher.signals.set(self.SIGNAL, not dispatcher.signals.value(self.SIGNAL))

    def _payload(self, task: str) -> dict[str, Any]:
        payload: dict[str, Any] = {"task": task, "part": self._rng.randint(100, 999)}
        if self.plc_bridge is not None:
            key = self.plc_bridge.executor["program_key"]
            failing = self._rng.random() < 0.1
            payload[key] = FAILING_PROGRAM if failing else 1 + [t for t, _ in self.TASKS].index(task)
        return payload

    def _conditions(self) -> dict[str, Any]:
        """Some operations wait for the door (or the PLC's ready bit); PLC ones for the PLC."""
        conditions: dict[str, Any] = {}
        if self.plc_bridge is not None:  # a start while the PLC is offline would fail at once
            conditions[f"{self.plc_bridge.name}.online"] = True
        if self._rng.random() < 0.3:
            conditions[self.release_signal] = True
        return conditions

    def _feed(self, dispatcher: OperationDispatcher) -> None:
        rng, cycle = self._rng, 0
        if self._plc is None:
            dispatcher.signals.set(self.SIGNAL, True)
        while not self._stop.is_set():
            cycle += 1
            if cycle % 5 == 0:
                self._toggle_release(dispatcher)
            try:
                if dispatcher.get_state().queue_size < self.max_queued:
                    task, seconds = rng.choice(self.TASKS)
                    planned = self.cycle_time if self._plc is not None else seconds
                    dispatcher.add_operation(Operation(
                        resource_id=dispatcher.resource_id,
                        job_id=f"demo-{cycle}",
                        payload=self._payload(task),
                        priority=rng.randint(0, 5),
                        planned_duration=round(planned * rng.uniform(0.7, 1.3), 2),
                        release_conditions=self._conditions(),
                    ))
            except DispatcherError as exc:
                log.warning("demo: could not add an operation: %s", exc)
            self._stop.wait(self.interval * rng.uniform(0.5, 1.5))

    def _operate(self, dispatcher: OperationDispatcher) -> None:
        while not self._stop.is_set():
            request_id = self._requests.get()
            if request_id is None or self._stop.wait(self.answer_after):
                return
            self._asked += 1
            deny = self.deny_every > 0 and self._asked % self.deny_every == 0
            try:
                if deny:
                    dispatcher.decide(request_id, False, "demo operator: tool change, retry soon")
                else:
                    dispatcher.decide(request_id, True, "demo operator: go")
            except (UnknownRequest, RequestClosed):
                pass  # answered through the API first, or timed out


__all__ = ["DemoMachine"]

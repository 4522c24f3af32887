"""The machine behind ``operation-dispatcher serve --demo`` (and ``make demo``).

A trickle of operations and an operator who approves them, so the API shows live traffic. Who
executes the operations depends on the config:

* a bridge for which a plug-in provides a simulated device: the demo asks the entry-point group
  ``operation_dispatcher.demo_devices`` for a factory of each bridge's ``kind`` (the core names
  no bridge package), runs the device of the first executor bridge as the machine and every
  other device it gets beside it (a serial panel that only reports signals, say).
  ``firmware_bridges`` provides one for a Modbus executor bridge on a loopback address
  (``examples/plc.toml``): the PLC simulator on that address, so every operation runs through a
  real Modbus connection (see ``firmware_bridges.simulators.demo_plc``); and one for a serial
  bridge on ``socket://`` at a loopback address (``examples/cell.toml``): the serial device
  simulator (see ``firmware_bridges.simulators.demo_serial``). The devices' ready bits go off
  now and then, holding the operations released by their ``release_signal``.
* otherwise a :class:`~operation_dispatcher.simulation.SimulatedOperationRunner` in-process,
  and the signal ``demo.door_closed`` opens and closes now and then.

A demo-device factory is called as ``factory(bridge, cycle_time=seconds)`` and returns a
:class:`DemoDevice`, or None when it cannot simulate that bridge's device.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Protocol

from .approvals import PENDING
from .errors import DispatcherError, RequestClosed, UnknownRequest
from .models import DispatchEvent, EventType, Operation, utcnow

if TYPE_CHECKING:
    from .dispatcher import OperationDispatcher

log = logging.getLogger(__name__)
#: addresses that only this machine reaches (a demo device may be simulated only there)
LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: the entry-point group of demo-device factories, by bridge kind
DEMO_DEVICE_GROUP = "operation_dispatcher.demo_devices"


class DemoDevice(Protocol):
    """A simulated device that runs the demo's operations through a real bridge."""

    #: the signal that holds some of the demo's operations (``set_ready`` flips it)
    release_signal: str
    #: the bridge's health signal: every demo operation waits for it
    online_signal: str
    #: whether it runs the demo's operations (an executor bridge's device); a device without
    #: this attribute is taken to run them
    runs_jobs: bool

    def start(self) -> None:
        """Start simulating; OSError when the device cannot listen where the bridge looks."""

    def stop(self) -> None: ...

    def set_ready(self, ready: bool) -> None: ...

    def payload(self, task_number: int, failing: bool) -> dict[str, Any]:
        """What an operation of task ``task_number`` (1-based) tells the device; ``failing``
        asks for a job the device fails, to show a failure."""
        ...


class DemoUnavailable(RuntimeError):
    """A demo-device plug-in cannot be loaded or used (the message says which and why)."""


def demo_devices_for(bridges: Sequence[Any], cycle_time: float) -> list[DemoDevice]:
    """The simulated device a plug-in provides for each of ``bridges`` that has one, executor
    bridges first (the first one runs the demo's operations)."""
    factories: dict[str, EntryPoint] = {}
    for declared in entry_points(group=DEMO_DEVICE_GROUP):
        factories.setdefault(declared.name, declared)  # the first declaration wins
    devices: list[DemoDevice] = []
    ordered = sorted(bridges, key=lambda bridge: not getattr(bridge, "executor", None))
    for bridge in ordered:
        kind = getattr(bridge, "kind", None)
        entry_point = factories.get(kind) if isinstance(kind, str) else None
        if entry_point is None:
            continue
        try:
            device = entry_point.load()(bridge, cycle_time=cycle_time)
        except Exception as exc:  # a broken plug-in: say so instead of a traceback
            raise DemoUnavailable(
                f"the demo device for {bridge.kind} bridges ({entry_point.value}) cannot be "
                f"used: {type(exc).__name__}: {exc}"
            ) from exc
        if device is not None:
            devices.append(device)
    return devices


def demo_device_for(bridges: Sequence[Any], cycle_time: float) -> DemoDevice | None:
    """The simulated device of the first executor bridge a plug-in simulates (else of the first
    bridge it simulates), or None."""
    devices = demo_devices_for(bridges, cycle_time)
    return devices[0] if devices else None


class DemoMachine:
    """A simulated machine, a trickle of operations and an operator who approves them.

    Start requests the request callback is asked about are left PENDING and answered by the
    "operator" thread a moment later (so ``GET /requests`` shows them and you may answer first);
    every ``deny_every``-th one is denied, which shows the denial, its cooldown and the retry.
    Cancel, pause and resume are approved at once. Requests that an ``[approvals]`` policy of
    ``"operator"`` holds for a person wait for one; when nobody answers within
    ``operator_patience`` seconds the simulated operator steps in and approves, so the demo keeps
    moving. About one operation in four carries ``"needs_operator": true`` in its payload (for
    ``operator_when_payload = ["needs_operator"]``, as in ``examples/cell.toml``).

    :param device: the simulated device that runs the operations (see the module docstring),
        or None: :meth:`start` asks the demo-device plug-ins for the bridges it is given, runs
        the device of the first executor bridge as the machine and every other device beside it
        (a signal-only serial panel, say), and without an executor device runs the in-process
        simulated machine.
    """

    TASKS = (("pick", 2.0), ("place", 1.5), ("inspect", 3.0), ("weld", 4.0), ("polish", 2.5))
    SIGNAL = "demo.door_closed"
    #: the payload flag set on about a quarter of the demo's operations
    OPERATOR_FLAG = "needs_operator"

    def __init__(
        self, *, device: DemoDevice | None = None, interval: float = 2.0, answer_after: float = 0.8,
        deny_every: int = 7, max_queued: int = 8, cycle_time: float = 2.0, seed: int | None = None,
        operator_patience: float = 20.0,
    ) -> None:
        self.device = device
        self.side_devices: list[DemoDevice] = []
        self.interval = interval
        self.answer_after = answer_after
        self.deny_every = deny_every
        self.max_queued = max_queued
        self.cycle_time = cycle_time
        self.operator_patience = operator_patience
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._requests: queue.Queue[Any] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._runner: Any = None
        self._started: list[DemoDevice] = []
        self._device_ready = True
        self._asked = 0

    @property
    def release_signal(self) -> str:
        """The signal that holds some of the demo's operations."""
        return self.device.release_signal if self.device is not None else self.SIGNAL

    def on_request(self, event: DispatchEvent) -> Any:
        """The dispatcher's request callback."""
        if event.event_type is EventType.OPERATION_START_REQUESTED:
            self._requests.put(event.id)
            return PENDING
        return True

    def start(self, dispatcher: OperationDispatcher, bridges: Sequence[Any] = ()) -> None:
        """Start the simulated devices (or the in-process runner) and the feeder and operator.

        Call it before the bridges start, so a bridge finds its device at the first attempt.
        Raises OSError when a simulated device cannot listen on its bridge's address, and
        DemoUnavailable when a demo-device plug-in cannot be used.
        """
        if self.device is None:
            devices = demo_devices_for(bridges, self.cycle_time)
            runners = [d for d in devices if getattr(d, "runs_jobs", True)]
            self.device = runners[0] if runners else None
            self.side_devices = [d for d in devices if d is not self.device]
        for device in (self.device, *self.side_devices):
            if device is not None:
                self._started.append(device)  # stop() stops even a half-started device
                device.start()
        if self.device is None:
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
        for device in reversed(self._started):
            device.stop()

    # ------------------------------------------------------------------ threads
    def _toggle_release(self, dispatcher: OperationDispatcher) -> None:
        """The door opens or closes (or the simulated devices' ready bits flip)."""
        self._device_ready = not self._device_ready
        if self.device is None:
            dispatcher.signals.set(self.SIGNAL, self._device_ready)
        for device in (self.device, *self.side_devices):
            if device is not None:
                device.set_ready(self._device_ready)

    def _payload(self, task: str) -> dict[str, Any]:
        payload: dict[str, Any] = {"task": task, "part": self._rng.randint(100, 999)}
        if self._rng.random() < 0.25:
            payload[self.OPERATOR_FLAG] = True
        if self.device is not None:
            failing = self._rng.random() < 0.1
            payload.update(self.device.payload(1 + [t for t, _ in self.TASKS].index(task), failing))
        return payload

    def _conditions(self) -> dict[str, Any]:
        """Some operations wait for the door (or a device's ready bit); all of a simulated
        device's wait for its bridge to be online."""
        conditions: dict[str, Any] = {}
        if self.device is not None:  # a start while the device is offline would fail at once
            conditions[self.device.online_signal] = True
        if self._rng.random() < 0.3:
            conditions[self.release_signal] = True
        for side in self.side_devices:
            if self._rng.random() < 0.2:
                conditions[side.release_signal] = True
        return conditions

    def _feed(self, dispatcher: OperationDispatcher) -> None:
        rng, cycle = self._rng, 0
        if self.device is None:
            dispatcher.signals.set(self.SIGNAL, True)
        while not self._stop.is_set():
            cycle += 1
            if cycle % 5 == 0:
                self._toggle_release(dispatcher)
            try:
                if dispatcher.get_state().queue_size < self.max_queued:
                    task, seconds = rng.choice(self.TASKS)
                    planned = self.cycle_time if self.device is not None else seconds
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
            try:
                request_id = self._requests.get(timeout=1.0)
            except queue.Empty:
                self._step_in(dispatcher)
                continue
            if request_id is None or self._stop.wait(self.answer_after):
                return
            self._asked += 1
            if self.deny_every > 0 and self._asked % self.deny_every == 0:
                self._answer(dispatcher, request_id, False, "demo operator: tool change, retry soon")
            else:
                self._answer(dispatcher, request_id, True, "demo operator: go")

    def _step_in(self, dispatcher: OperationDispatcher) -> None:
        """Approve the requests held for a person that nobody answered in time."""
        now = utcnow()
        for request in dispatcher.pending_requests():
            waited = (now - request.created_at).total_seconds()
            if request.waiting_for == "operator" and waited >= self.operator_patience:
                self._answer(dispatcher, request.request_id, True,
                             f"demo operator stepped in: nobody answered in {waited:.0f} s")

    @staticmethod
    def _answer(dispatcher: OperationDispatcher, request_id: Any, accepted: bool, why: str) -> None:
        try:
            dispatcher.decide(request_id, accepted, why)
        except (UnknownRequest, RequestClosed):
            pass  # answered through the API first, or timed out


__all__ = ["DEMO_DEVICE_GROUP", "LOOPBACK", "DemoDevice", "DemoMachine", "DemoUnavailable", "demo_device_for",
           "demo_devices_for"]

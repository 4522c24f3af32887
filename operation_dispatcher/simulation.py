"""SimulatedOperationRunner: a stand-in machine that "executes" operations for demos and tests.

It runs one operation at a time for its ``planned_duration`` (or ``default_run_seconds``),
keeps time while paused, and reports the end through ``on_complete`` (by default
``dispatcher.complete_operation``). One named thread waits on a condition variable for the
remaining time: no ticking, no polling.

Two ways to use it:

* attached: ``SimulatedOperationRunner(dispatcher=d)`` follows the dispatcher's events itself
  (STARTED starts a run, PAUSED/RESUMED pause and resume it, CANCELLED/FAILED end it);
* driven: ``SimulatedOperationRunner(on_complete=fn)`` and call ``start/pause/resume/cancel`` from
  your own request callback, as the original's examples did.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from .errors import DispatcherError
from .models import DispatchEvent, EventType

if TYPE_CHECKING:
    from .dispatcher import OperationDispatcher

_module_logger = logging.getLogger(__name__)


class SimulatedOperationRunner:
    """Simulates one machine: runs one operation at a time and reports its completion.

    :param on_complete: called with the operation id when a run ends; defaults to the attached
        dispatcher's ``complete_operation``.
    :param dispatcher: follow this dispatcher's events (see the module docstring).
    :param default_run_seconds: run time for operations without a planned_duration.
    :param speed: time factor; 10.0 runs ten times faster than planned.
    """

    def __init__(
        self,
        on_complete: Callable[[UUID], Any] | None = None,
        logger: logging.Logger | None = None,
        *,
        dispatcher: OperationDispatcher | None = None,
        default_run_seconds: float = 1.0,
        speed: float = 1.0,
        name: str = "simulated-machine",
    ) -> None:
        if default_run_seconds <= 0:
            raise ValueError("default_run_seconds must be > 0")
        if speed <= 0:
            raise ValueError("speed must be > 0")
        if on_complete is None and dispatcher is None:
            raise ValueError("give on_complete, a dispatcher, or both")
        self._log = logger or _module_logger
        self._dispatcher = dispatcher
        self._on_complete = on_complete or self._complete_on_dispatcher
        self._default = default_run_seconds
        self._speed = speed
        self._name = name
        self._cond = threading.Condition()
        self._active: UUID | None = None
        self._remaining = 0.0  # seconds of run time left
        self._resumed_at: float | None = None  # monotonic time the current stretch began
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.completed_count = 0  # runs that reached their end

    # ------------------------------------------------------------------ lifecycle
    def start_worker(self) -> None:
        """Start the runner's thread (and follow the dispatcher's events, if attached)."""
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
            self._thread.start()
        if self._dispatcher is not None and self._unsubscribe is None:
            self._unsubscribe = self._dispatcher.subscribe(self._on_event)

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop following events and end the thread; a run in progress is dropped."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)  # (from on_complete, the thread ends once it returns)
        self._thread = None

    def __enter__(self) -> SimulatedOperationRunner:
        self.start_worker()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ control
    @property
    def active_operation_id(self) -> UUID | None:
        return self._active

    @property
    def is_paused(self) -> bool:
        with self._cond:
            return self._active is not None and self._resumed_at is None

    def start(self, operation_id: UUID, run_seconds: float | None = None) -> bool:
        """Begin simulating ``operation_id`` (replacing any run in progress)."""
        seconds = self._default if run_seconds is None else run_seconds
        if not seconds or seconds <= 0:
            self._log.warning("refusing to simulate %s for %r s", operation_id, run_seconds)
            return False
        self.start_worker()
        with self._cond:
            self._active = operation_id
            self._remaining = seconds / self._speed
            self._resumed_at = time.monotonic()
            self._cond.notify_all()
        return True

    def pause(self, operation_id: UUID) -> bool:
        """Freeze the run of ``operation_id``; False if it is not the active one."""
        with self._cond:
            if self._active != operation_id or self._resumed_at is None:
                return False
            self._remaining -= time.monotonic() - self._resumed_at
            self._resumed_at = None
            self._cond.notify_all()
            return True

    def resume(self, operation_id: UUID) -> bool:
        """Continue a paused run; False if ``operation_id`` is not the paused active one."""
        with self._cond:
            if self._active != operation_id or self._resumed_at is not None:
                return False
            self._resumed_at = time.monotonic()
            self._cond.notify_all()
            return True

    def cancel(self, operation_id: UUID | None = None) -> bool:
        """Drop the run of ``operation_id`` (or whatever runs). True unless another operation is
        active: cancelling an operation this machine is not running is always fine."""
        with self._cond:
            if operation_id is not None and self._active not in (None, operation_id):
                return True
            self._active = None
            self._resumed_at = None
            self._cond.notify_all()
            return True

    # ------------------------------------------------------------------ internals
    def _on_event(self, event: DispatchEvent) -> None:
        op_id = event.operation_id
        if op_id is None:
            return
        kind = event.event_type
        if kind is EventType.OPERATION_STARTED:
            op = self._dispatcher.get_operation(op_id) if self._dispatcher else None
            self.start(op_id, op.planned_duration if op is not None else None)
        elif kind is EventType.OPERATION_PAUSED:
            self.pause(op_id)
        elif kind is EventType.OPERATION_RESUMED:
            self.resume(op_id)
        elif kind in (EventType.OPERATION_CANCELLED, EventType.OPERATION_FAILED):
            with self._cond:
                if self._active == op_id:
                    self._active = None
                    self._resumed_at = None
                    self._cond.notify_all()

    def _complete_on_dispatcher(self, operation_id: UUID) -> None:
        assert self._dispatcher is not None
        try:
            self._dispatcher.complete_operation(operation_id)
        except DispatcherError as exc:  # finished meanwhile (cancelled, timed out)
            self._log.info("simulated completion of %s not applied: %s", operation_id, exc)

    def _work(self) -> None:
        while True:
            with self._cond:
                finished: UUID | None = None
                while finished is None:
                    if self._stopping:
                        return
                    if self._active is None or self._resumed_at is None:
                        self._cond.wait()
                        continue
                    left = self._remaining - (time.monotonic() - self._resumed_at)
                    if left <= 0:
                        finished, self._active, self._resumed_at = self._active, None, None
                    else:
                        self._cond.wait(left)
            self.completed_count += 1
            try:
                self._on_complete(finished)
            except Exception:
                self._log.exception("on_complete failed for %s", finished)


__all__ = ["SimulatedOperationRunner"]

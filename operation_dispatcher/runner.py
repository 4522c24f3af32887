"""DispatcherLoop: the dispatcher thread, and starting and stopping it.

The loop runs dispatch passes and sleeps on the wake-up condition until the nearest deadline or
until something that changes the decision wakes it (no polling). It owns the thread, journals
OPERATION_DISPATCHER_STARTED / STOPPED, and on stop() waits for the event and callback threads
too. Its flags live in a :class:`~.runstate.LoopState` the engine reads.

A heartbeat (:meth:`DispatcherLoop.set_heartbeat`, e.g. systemd's watchdog ping) is called by
the loop thread itself before every pass, without the lock; the loop then sleeps at most
``every_seconds``, so the beats go on while it is idle and stop when a pass never ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import _checks
from .engine import DispatchEngine
from .errors import JournalError, ThreadDidNotStop, ValidationError
from .events import EventBus
from .models import EventType, utcnow
from .runstate import LoopState, PauseSwitch
from .unit import UnitOfWork
from .workers import CallbackRunner

if TYPE_CHECKING:
    from .journal import Journal
    from .recovery import Recovery


class DispatcherLoop:
    """The dispatcher thread of one resource (``run()`` in the caller's, or ``start()``)."""

    def __init__(
        self,
        resource_id: str,
        *,
        unit: UnitOfWork,
        wake: threading.Condition,
        run: LoopState,
        engine: DispatchEngine,
        pause: PauseSwitch,
        recovery: Recovery | None,
        journal: Journal | None,
        bus: EventBus,
        callbacks: CallbackRunner,
        log: logging.Logger,
    ) -> None:
        self._resource_id = resource_id
        self._work = unit
        self._cond = wake
        self._run = run
        self._engine = engine
        self._pause = pause
        self._recovery = recovery
        self._journal = journal
        self._bus = bus
        self._callbacks = callbacks
        self._log = log
        self._thread: threading.Thread | None = None
        self._beat: Callable[[], None] | None = None
        self._beat_every: float | None = None
        self._beat_failed = False

    def set_heartbeat(self, beat: Callable[[], None] | None, every_seconds: float | None) -> None:
        """Have the loop call ``beat`` before each pass and wake at least every ``every_seconds``.

        ``beat`` runs in the loop thread, without the lock, and must be quick; None removes it.
        """
        if beat is not None:
            if not callable(beat):
                raise ValidationError("beat", "must be callable or None")
            _checks.seconds(every_seconds, "every_seconds")
        with self._cond:
            self._beat = beat
            self._beat_every = None if beat is None else every_seconds
            self._cond.notify_all()  # a sleeping loop takes the new bound on its sleep now

    def begin(self) -> None:
        """Mark the loop running and journal OPERATION_DISPATCHER_STARTED, or raise.

        On failure (the journal cannot be written, or is closed) nothing is left half-done: the
        dispatcher is not running and a later start() may succeed.
        """
        with self._cond:
            if self._run.active:
                raise RuntimeError("operation dispatcher is already running")
            journal = self._journal
            if journal is not None and not journal.is_open:
                raise JournalError(
                    journal.path, "is closed (close() was called); open a new "
                    "OperationDispatcher on the file to start again",
                )
            recovery = self._recovery
            orphan = None if recovery is None else recovery.orphan_executor
            try:
                with self._work:  # leaving it journals the events below, or raises
                    self._run.active = True
                    self._run.running_since = utcnow()
                    self._run.running_since_mono = time.monotonic()
                    self._work.emit(EventType.OPERATION_DISPATCHER_STARTED)
                    if recovery is not None:
                        recovery.settle_orphan()
                    if self._pause.is_set:
                        self._work.emit(EventType.OPERATION_DISPATCHER_PAUSED)
            except BaseException:
                self._run.active = False
                self._run.running_since = None
                if recovery is not None:  # settled at the next start that is recorded
                    recovery.orphan_executor = orphan
                raise

    def loop(self) -> None:
        """The dispatcher loop (after :meth:`begin`); ends on a stop request.

        A failed pass is logged and retried; should the loop end any other way, it says why and
        ``is_running`` turns false, so nobody believes a dead loop dispatches.
        """
        run = self._run
        beat: Callable[[], None] | None = self._beat
        try:
            while True:
                if beat is not None:
                    self._call_beat(beat)  # alive: about to take the lock and pass
                with self._work:
                    if run.stop_requested:
                        break
                    timeout = self._pass()
                    if run.stop_requested:
                        break
                    beat, every = self._beat, self._beat_every
                    if every is not None:
                        timeout = every if timeout is None else min(timeout, every)
                    run.wakes_at = float("inf") if timeout is None else time.monotonic() + timeout
                    self._work.wait(self._cond, timeout)
                    run.wakes_at = 0.0
        except BaseException as exc:
            self._log.critical(
                "the dispatcher loop of %s died (%s: %s); it is not running and starts "
                "nothing until started again", self._resource_id, type(exc).__name__, exc,
                exc_info=isinstance(exc, Exception),
            )
            raise
        finally:
            self._end()

    def _call_beat(self, beat: Callable[[], None]) -> None:
        """Call the heartbeat; one that raises is logged (once) and never ends the loop."""
        try:
            beat()
        except Exception:
            if not self._beat_failed:
                self._beat_failed = True
                self._log.exception("the dispatcher loop's heartbeat failed (logged once)")

    def _pass(self) -> float | None:
        """One pass of the loop; a failure (a failed journal write, a bug) is logged, not fatal."""
        try:
            timeout = self._engine.step()
            self._work.flush()
            return timeout
        except Exception:
            self._log.exception("dispatcher step failed; retrying in 1 s")
        try:
            self._work.flush()  # a pass that failed half-way: journal (or undo) what it changed
        except Exception:
            self._log.exception("the failed step's changes could not be journaled")
        return 1.0

    def _end(self) -> None:
        """Mark the loop stopped (first, so that nothing below can leave it marked running)."""
        with self._cond:
            run = self._run
            run.stop_requested = False
            run.active = False
            run.running_since = None
            run.wakes_at = 0.0
            self._cond.notify_all()  # stop() may be waiting for this loop to end
            try:
                with self._work:
                    self._engine.flush_progress()  # the latest progress reaches the journal
                    self._work.emit(EventType.OPERATION_DISPATCHER_STOPPED)
            except JournalError as exc:
                self._log.error("the dispatcher stopped, but the journal missed it: %s", exc)

    def start(self) -> None:
        """Run the loop on a named background thread; returns once the loop is running."""
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                raise RuntimeError("operation dispatcher is already running")
            self.begin()
            thread = threading.Thread(
                target=self.loop, name=f"operation-dispatcher[{self._resource_id}]", daemon=True,
            )
            self._thread = thread
            try:
                thread.start()
            except BaseException:  # no thread to be had: not running
                self._thread = None
                self._end()
                raise

    def request_stop(self) -> None:
        with self._cond:
            self._run.stop_requested = True
            self._cond.notify_all()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the loop, the event thread and the callback workers, and wait for them."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def remaining() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        self.request_stop()
        try:
            self._join_loop(remaining, timeout)
        finally:  # even if the loop hangs, the event thread and the workers stop
            bus_thread = self._bus.thread
            if not self._bus.stop(remaining() if deadline is not None else 10.0):
                raise ThreadDidNotStop(bus_thread.name if bus_thread else "events", timeout)
            self._callbacks.stop(1.0 if deadline is None else min(remaining() or 0.0, 1.0))

    def _join_loop(self, remaining: Callable[[], float | None], timeout: float | None) -> None:
        """Wait for the loop (its thread, or a run() in another caller's thread) to end."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(remaining())
            if thread.is_alive():
                raise ThreadDidNotStop(thread.name, timeout)
        with self._cond:
            while self._run.active and threading.current_thread() is not thread:
                if not self._cond.wait(remaining()) and timeout is not None:
                    if remaining() == 0.0:
                        raise ThreadDidNotStop("dispatcher run() caller", timeout)
            self._run.stop_requested = False
            self._thread = None


__all__ = ["DispatcherLoop"]

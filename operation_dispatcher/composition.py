"""DispatcherParts: the parts of one dispatcher, built and wired in one place.

The hub (:class:`~.dispatcher.OperationDispatcher`, design.md section 1) keeps the public API,
its argument checks and its snapshots; what it is made of is built here, and each part gets only
the parts it needs: the one lock and its conditions, the :class:`~.store.EventStore` (memory or
journal), the :class:`~.queue.DispatchQueue`, the :class:`~.events.EventBus`, the
:class:`~.unit.UnitOfWork` with the retry policy and the pause switch it tracks, the
:class:`~.handshake.Handshake` (approvals, the approval policy), the
:class:`~.engine.DispatchEngine` with deadlines, lifecycle and dependencies, with a journal
:class:`~.recovery.Recovery`, and the :class:`~.runner.DispatcherLoop`. Kept out of the hub so
that the hub reads as its API; like every part, this module does not know the hub.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from uuid import UUID

from .approvals import RetryPolicy
from .deadlines import Deadlines
from .dependencies import DependencyIndex
from .engine import DispatchEngine
from .events import EventBus, EventHandler
from .handshake import Handshake, RequestCallback
from .history import EventLog
from .lifecycle import OperationLifecycle
from .models import EventType, Operation
from .queue import DispatchQueue, SortRule
from .runner import DispatcherLoop
from .runstate import LoopState, PauseSwitch
from .signals import Signal, SignalBoard
from .store import EventStore, JournalEventStore
from .unit import UnitOfWork
from .workers import CallbackRunner

if TYPE_CHECKING:
    from .approval_policy import ApprovalPolicy
    from .errors import JournalError
    from .journal import Journal
    from .recovery import Recovery


class DispatcherParts:
    """Builds the parts of the dispatcher of ``resource_id`` and connects them.

    With a journal it claims the journal for the resource and recovers from it before it
    returns. The arguments are checked by the hub (``_checks.dispatcher_arguments``) first.
    """

    def __init__(
        self,
        resource_id: str,
        *,
        on_request_callback: RequestCallback | None,
        on_notification_callback: EventHandler | None,
        start_paused: bool,
        max_retries: int,
        retry_cooldown_seconds: float,
        request_timeout_seconds: float | None,
        sort_rules: Iterable[SortRule] | None,
        log: logging.Logger,
        signals: SignalBoard | None,
        strict_order: bool,
        event_retention: int,
        operation_retention: int,
        journal: Journal | None,
        recovery: str,
        approval_policy: ApprovalPolicy | None,
    ) -> None:
        self.resource_id = resource_id
        self.log = log
        # One lock owns everything; wake wakes the dispatcher thread, answered wakes threads
        # awaiting a decision (both on the same lock).
        self.lock = threading.RLock()
        self.wake = threading.Condition(self.lock)
        answered = threading.Condition(self.lock)
        self.journal = journal
        memory = EventLog(event_retention)  # built either way: it checks event_retention
        # with a journal the file serves every event read; a copy in memory would only cost
        # memory and restart time (the journal's select is indexed)
        self.store: EventStore = memory if journal is None else JournalEventStore(journal)
        self.queue = DispatchQueue(
            resource_id, sort_rules=sort_rules, history_limit=operation_retention,
            lookup=self.store.knows if self.store.durable else None,
        )
        # stop() closes the bus; the loop's OPERATION_DISPATCHER_STARTED reopens it, so events
        # emitted while stopped wait for the next start instead of restarting the thread
        self.bus = EventBus(
            f"operation-dispatcher-events[{resource_id}]", log,
            opens_on=EventType.OPERATION_DISPATCHER_STARTED,
        )
        if on_notification_callback is not None:
            self.bus.subscribe(on_notification_callback)
        self.run = LoopState()
        run = self.run

        def keep_idle() -> bool:
            return run.active

        # workers outlive their job only while the loop runs: after stop() nothing stays alive
        self.callbacks = CallbackRunner(
            f"operation-dispatcher-requests[{resource_id}]", log, keep_idle=keep_idle,
        )
        self.unit = UnitOfWork(resource_id, self.lock, self.store, self.bus, log)
        self.pause = PauseSwitch(self.unit, bool(start_paused))
        retry = RetryPolicy(max_retries, retry_cooldown_seconds)
        self.recovery: Recovery | None = None
        self.unit.track(retry, self.pause, self.reload_after_failed_write)
        self.handshake = Handshake(
            unit=self.unit, answered=answered, callbacks=self.callbacks,
            on_request=on_request_callback,
            timeout=None if request_timeout_seconds is None else float(request_timeout_seconds),
            retry=retry, pause=self.pause, log=log, policy=approval_policy,
        )
        self.signals = signals if signals is not None else SignalBoard()
        self._compose_decisions(strict_order, journal, recovery, operation_retention)

    def _compose_decisions(
        self, strict: bool, journal: Journal | None, policy: str, retention: int
    ) -> None:
        """The parts that decide (engine, recovery) and the loop that drives them."""
        dependencies = DependencyIndex(self.find)
        lifecycle = OperationLifecycle()
        self.engine = DispatchEngine(
            queue=self.queue, deadlines=Deadlines(), handshake=self.handshake,
            lifecycle=lifecycle, dependencies=dependencies, signals=self.signals,
            unit=self.unit, pause=self.pause, loop=self.run, wake=self.wake,
            strict=strict, log=self.log,
        )
        if journal is not None:
            from .recovery import Recovery  # only a journal has something to recover

            self.recovery = Recovery(
                journal=journal, policy=policy, retention=retention,
                queue=self.queue, dependencies=dependencies, engine=self.engine,
                handshake=self.handshake, lifecycle=lifecycle, pause=self.pause,
                unit=self.unit, log=self.log,
            )
            journal.claim(self.resource_id)
            self.recovery.recover()
        self.runner = DispatcherLoop(
            self.resource_id, unit=self.unit, wake=self.wake, run=self.run,
            engine=self.engine, pause=self.pause, recovery=self.recovery, journal=journal,
            bus=self.bus, callbacks=self.callbacks, log=self.log,
        )

    # ================================================================== the one lookup
    def find(self, operation_id: UUID) -> Operation | None:
        """The operation from memory or, beyond memory retention, from the event store (a copy
        then). Every read, and every dependency check, goes through here."""
        op = self.queue.get(operation_id)
        if op is None:
            op = self.store.find_operation(operation_id)
        return op

    def reload_after_failed_write(self, exc: JournalError) -> str | None:
        """A commit failed: memory goes back to what the journal holds (see Recovery.reload)."""
        failure = None if self.recovery is None else self.recovery.reload(exc)
        self.wake.notify_all()  # the loop re-plans: what was undone may be retried now
        return failure


def listen_weakly(board: SignalBoard, method: Callable[[Signal], None]) -> None:
    """Subscribe the bound ``method`` to ``board`` through a weak reference.

    A board shared by several dispatchers must not keep a forgotten dispatcher alive; its
    listener drops itself at the first signal after the dispatcher is gone.
    """
    handler = weakref.WeakMethod(method)
    unsubscribe: Callable[[], None] | None = None

    def listener(signal: Signal) -> None:
        bound = handler()
        if bound is None:
            if unsubscribe is not None:
                unsubscribe()
            return
        bound(signal)

    unsubscribe = board.subscribe(listener)


__all__ = ["DispatcherParts", "listen_weakly"]

"""DispatchCore: the dispatcher's state and every decision it takes, all under one lock.

This is the part of :class:`~operation_dispatcher.dispatcher.OperationDispatcher` that decides:
which operation may start (eligibility, parking, deadlines), the approval handshake, starting,
finishing, failing dependents, denials and retries. It starts no thread of its own; every method
here expects the dispatcher lock to be held. ``dispatcher.py`` adds the public API and the
threads on top, the way Flask's ``sansio`` core is wrapped by its ``app.py``.

Threading model (design.md section 2): one ``RLock`` owns every piece of state. Two conditions
share it: ``_cond`` wakes the dispatcher thread, ``_answered`` wakes threads waiting for a
decision. User code is never called with the lock held: request callbacks run on
:class:`~operation_dispatcher.workers.CallbackRunner` threads, notifications on the
:class:`~operation_dispatcher.events.EventBus` thread.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from .approvals import (
    PENDING,
    ApprovalDesk,
    ApprovalRequest,
    RequestDecision,
    RequestKind,
    RetryPolicy,
    normalize_decision,
)
from .deadlines import Deadlines
from .errors import JournalError, OperationNotCurrent
from .events import EventBus, EventHandler, call_maybe_async
from .history import EventLog, copy_event
from .lifecycle import OperationLifecycle
from .models import (
    ChangeRecord,
    DependencyType,
    DispatchEvent,
    EventType,
    ExecutionOutcome,
    ExecutionState,
    History,
    Operation,
    OperationDependency,
    TerminationReason,
    copy_json,
    utcnow,
)
from .queue import DispatchQueue, SortRule
from .signals import Signal, SignalBoard
from .workers import CallbackRunner

if TYPE_CHECKING:  # the journal (and sqlite3) is imported only by those who use one
    from .journal import Journal, RetryRow, SavedState

RequestCallback = Callable[[DispatchEvent], Any]
HistoryCallback = Callable[..., History | None]

_LOUD_EVENTS = {
    EventType.OPERATION_DISPATCHER_PAUSED: logging.WARNING,
    EventType.OPERATION_DISPATCHER_STOPPED: logging.WARNING,
    EventType.OPERATION_DISPATCHER_RESUMED: logging.INFO,
}


_MAX_WAIT_SECONDS = 86_400.0


class _UnitOfWork:
    """``with core._work:`` takes the dispatcher lock; leaving the outermost one flushes the unit.

    Every public call that may change state goes through it, so each call is one journal
    transaction whose events are published only after the commit.
    """

    __slots__ = ("_core",)

    def __init__(self, core: DispatchCore) -> None:
        self._core = core

    def __enter__(self) -> None:
        self._core._lock.acquire()
        self._core._unit_depth += 1

    def __exit__(self, *exc: object) -> None:
        core = self._core
        core._unit_depth -= 1
        try:
            if core._unit_depth == 0:
                core._flush()
        finally:
            core._lock.release()


class DispatchCore:
    """State and decisions of one dispatcher; see the module docstring. Lock held throughout."""

    def __init__(
        self,
        resource_id: str,
        *,
        on_request_callback: RequestCallback | None,
        on_notification_callback: EventHandler | None,
        on_history_callback: HistoryCallback | None,
        start_paused: bool,
        max_retries: int,
        retry_cooldown_seconds: float,
        request_timeout_seconds: float,
        default_planned_duration: float | None,
        updatable_fields: Iterable[str],
        sort_rules: Iterable[SortRule] | None,
        logger: logging.Logger | None,
        signals: SignalBoard | None,
        strict_order: bool,
        event_retention: int,
        operation_retention: int,
        journal: Journal | None = None,
        recovery: str = "fail",
    ) -> None:
        self._resource_id = resource_id
        self._log = logger or logging.getLogger(__name__)
        self._on_request = on_request_callback
        self._on_history = on_history_callback
        self._request_timeout = float(request_timeout_seconds)
        self._default_planned_duration = default_planned_duration
        self._updatable = frozenset(updatable_fields)
        self._strict = strict_order

        # One lock owns everything below; the condition is how every thread waits on it.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)  # wakes the dispatcher thread
        self._answered = threading.Condition(self._lock)  # wakes threads awaiting a decision
        self._journal = journal
        self._operation_retention = operation_retention
        self._queue = DispatchQueue(
            resource_id,
            sort_rules=sort_rules,
            history_limit=operation_retention,
            lookup=None if journal is None else self._journaled,
        )
        self._lifecycle = OperationLifecycle()
        # with a journal the file serves every event read; a copy in memory would only cost
        # memory and restart time (the journal's select is indexed)
        log = EventLog(event_retention)  # built either way: it checks event_retention
        self._events: EventLog | None = None if journal is not None else log
        # stop() closes the bus; the loop's OPERATION_DISPATCHER_STARTED reopens it, so events
        # emitted while stopped wait for the next start instead of restarting the thread
        self._bus = EventBus(
            f"operation-dispatcher-events[{resource_id}]", self._log,
            opens_on=EventType.OPERATION_DISPATCHER_STARTED,
        )
        if on_notification_callback is not None:
            self._bus.subscribe(on_notification_callback)
        # workers outlive their job only while the loop runs: after stop() nothing stays alive
        self._callbacks = CallbackRunner(
            f"operation-dispatcher-requests[{resource_id}]", self._log,
            keep_idle=lambda: self._loop_active,
        )
        self._desk = ApprovalDesk(self._answered)
        self._retry = RetryPolicy(max_retries, retry_cooldown_seconds)
        self._deadlines = Deadlines()
        self._dependents: dict[UUID, set[UUID]] = {}
        self._start_request: ApprovalRequest | None = None
        self._last_started: Operation | None = None
        self._paused = bool(start_paused)
        self._loop_active = False
        self._stop_requested = False
        self._running_since: datetime | None = None
        self._running_since_mono = 0.0
        self._loop_wakes_at = 0.0  # when the sleeping dispatcher thread wakes by itself
        self._thread: threading.Thread | None = None
        # The unit of work: what one public call (or one loop pass) changed, written to the
        # journal in one transaction and only then published (see _flush).
        self._work = _UnitOfWork(self)
        self._unit_depth = 0
        self._unit_events: list[DispatchEvent] = []
        self._unit_ops: dict[UUID, Operation] = {}
        self._unit_retry: set[UUID] = set()
        self._unit_retry_reset = False
        self._unit_paused = False
        # The one bridge that runs this resource's jobs (design.md 2a): its online signal gates
        # every start; a recovered operation it was running waits for it to re-attach.
        self._executor: str | None = None
        self._executor_gate: str | None = None
        self._orphan_executor: str | None = None
        self._recovery = recovery
        # Set when a failed write could not be undone in memory (the journal could not be read
        # back): memory may then hold a change the file does not, so nothing starts any more.
        self._journal_failure: str | None = None
        if journal is not None:
            journal.claim(resource_id)
            self._recover(journal.load(operation_retention), recovery)
        self._signals = signals if signals is not None else SignalBoard()
        self._subscribe_to_signals()

    def _emit(
        self,
        event_type: EventType,
        operation: Operation | None = None,
        changes: Iterable[ChangeRecord] = (),
        meta_data: dict[str, Any] | None = None,
    ) -> DispatchEvent:
        event = DispatchEvent.trusted(
            operation.resource_id if operation is not None else self._resource_id,
            event_type,
            None if operation is None else operation.id,
            list(changes),
            copy_json(dict(meta_data)) if meta_data else {},  # the caller keeps its dict
        )
        self._record(event, operation)
        return event

    def _record(self, event: DispatchEvent, operation: Operation | None = None) -> None:
        # Called with the lock held: the unit's list is what puts events in one total order.
        self._unit_events.append(event)
        if operation is not None:
            self._unit_ops[operation.id] = operation

    def _flush(self) -> None:
        """End the unit of work: journal it (one transaction), then publish its events.

        Lock held. If the journal write fails, nothing of the unit is published, the in-memory
        state is reloaded from the journal (so memory and journal agree again) and the
        JournalError goes to whoever made the change.
        """
        events = self._unit_events
        if self._journal_failure is not None and (events or self._unit_ops):
            self._drop_unit()
            assert self._journal is not None
            raise JournalError(self._journal.path, self._journal_failure)
        if not events and not self._unit_ops and not self._unit_retry and not (
            self._unit_retry_reset or self._unit_paused
        ):
            return
        ops, retry_ids = self._unit_ops, self._unit_retry
        reset, paused_changed = self._unit_retry_reset, self._unit_paused
        self._unit_events, self._unit_ops, self._unit_retry = [], {}, set()
        self._unit_retry_reset = self._unit_paused = False
        if self._journal is not None:
            try:
                self._journal.write(
                    ops.values(),
                    events,
                    retry={op_id: self._retry_rows(op_id) for op_id in retry_ids},
                    retry_reset=reset,
                    paused=self._paused if paused_changed else None,
                )
            except JournalError as exc:
                self._undo_unit(exc)
                raise
        for event in events:
            if self._events is not None:
                self._events.append(event)
            self._bus.publish(event)
            level = _LOUD_EVENTS.get(event.event_type, logging.DEBUG)
            if self._log.isEnabledFor(level):
                self._log.log(
                    level, "%s %s %s", self._resource_id, event.event_type.value,
                    event.operation_id or "",
                )

    def _drop_unit(self) -> None:
        self._unit_events, self._unit_ops, self._unit_retry = [], {}, set()
        self._unit_retry_reset = self._unit_paused = False

    def _undo_unit(self, exc: JournalError) -> None:
        """After a failed write: make memory what the journal holds again (lock held).

        When the journal cannot even be read back (it was closed, or the disk fails), memory
        may keep a change the file does not have: the dispatcher then starts nothing and refuses
        every further change, and says why, until it is opened again.
        """
        assert self._journal is not None
        self._log.error("%s; reloading the last committed state", exc)
        try:
            self._restore(self._journal.load(self._operation_retention))
        except Exception as reload_error:
            cause = getattr(reload_error, "cause", None) or repr(reload_error)
            self._journal_failure = (
                f"unusable: a failed write could not be undone in memory ({cause}); "
                "open the dispatcher again"
            )
            self._log.critical("journal %s: %s", self._journal.path, self._journal_failure)
        self._cond.notify_all()  # the loop re-plans: what was undone may be retried now

    def _wait(self, condition: threading.Condition, timeout: float | None) -> None:
        """Wait on ``condition`` (lock held): flush first, and let other threads' units run.

        The unit depth belongs to whoever holds the lock; while this thread waits, others take
        the lock and must see depth 0 so that their units flush.
        """
        self._flush()
        depth, self._unit_depth = self._unit_depth, 0
        try:
            # Condition.wait overflows beyond TIMEOUT_MAX (a release date centuries ahead):
            # wait at most a day; the caller re-plans when it wakes.
            condition.wait(None if timeout is None else min(timeout, _MAX_WAIT_SECONDS))
        finally:
            self._unit_depth = depth

    def _await_decision(self, request: ApprovalRequest) -> None:
        """Block until ``request`` is answered or expires (lock held, released while waiting)."""
        while request.is_pending:
            remaining = request.deadline - time.monotonic()
            if remaining <= 0:
                self._desk.expire(request)
                return
            self._wait(self._answered, remaining)

    def _retry_rows(self, operation_id: UUID) -> list[RetryRow]:
        from .journal import RetryRow

        now_wall, now_mono = time.time(), time.monotonic()
        return [
            RetryRow(kind.value, operation_id, count, now_wall + (until - now_mono))
            for kind, count, until in self._retry.entries(operation_id)
        ]

    def _journaled(self, operation_id: UUID) -> bool | None:
        """Queue lookup hook: is this id in the journal (finished beyond memory retention)?"""
        assert self._journal is not None
        return True if self._journal.has_operation(operation_id) else None

    def _find(self, operation_id: UUID) -> Operation | None:
        """The operation from memory or, beyond retention, from the journal (a copy then)."""
        op = self._queue.get(operation_id)
        if op is None and self._journal is not None:
            op = self._journal.get_operation(operation_id)
        return op

    # ------------------------------------------------------------------ recovery
    def _restore(self, saved: SavedState) -> None:
        """Replace the in-memory state by what the journal holds (lock held).

        Open approval requests are dropped: their answers will find no request to act on.
        """
        queue = self._queue
        queue.clear()
        queue.clear_history()
        queue.release_pulled()
        self._dependents.clear()
        self._deadlines = Deadlines()
        self._retry.clear_all()
        self._desk.clear()
        self._start_request = None
        for op in saved.finished:
            queue.archive(op)
        queue.load(saved.queued)
        for op in saved.queued:
            self._index_dependencies(op)
        if saved.active:
            queue.restore_pulled(saved.active[-1])
            self._schedule_timeout(saved.active[-1])
        now_wall, now_mono = time.time(), time.monotonic()
        for row in saved.retry:
            self._retry.restore(
                RequestKind(row.kind), row.operation_id, row.denials,
                now_mono + (row.cooldown_until - now_wall),
            )
        if saved.paused is not None:
            self._paused = saved.paused

    def _recover(self, saved: SavedState, recovery: str) -> None:
        """Start from the journal; an operation that was RUNNING or PAUSED when the last process
        died is never silently run again (at-most-once start). If an executor bridge was running
        it, the operation waits for that bridge to re-attach (:meth:`attach_executor` in the
        dispatcher; nothing is sent again) until the loop starts; otherwise, and if the bridge
        is not back by then, recovery="fail" fails it with INTERRUPTED and recovery="pause"
        keeps it PAUSED for an operator to resume or cancel."""
        with self._work:
            start_paused = self._paused
            self._restore(saved)
            self._paused = self._paused or start_paused
            op = self._queue.pulled_operation
            if op is None:
                return
            assert self._journal is not None
            executor = self._journal.executor_of(op.id)
            if executor is not None:
                self._orphan_executor = executor
                self._log.warning(
                    "operation %s was %s on executor %r when the last process ended; it waits "
                    "for %r to re-attach (nothing is sent again)",
                    op.id, op.state.value, executor, executor,
                )
                return
            self._apply_recovery(op, {})

    def _apply_recovery(self, op: Operation, meta: dict[str, Any]) -> None:
        """The recovery policy for an interrupted operation nobody re-attached to (lock held)."""
        meta = {"recovered": True, "previous_state": op.state.value, **meta}
        if self._recovery == "fail":
            self._finish(op, "fail", EventType.OPERATION_FAILED,
                         TerminationReason.INTERRUPTED, meta)
        elif op.state is ExecutionState.RUNNING:
            changes = self._lifecycle.fire(op, "pause")
            self._emit(EventType.OPERATION_PAUSED, op, changes, meta)

    def _settle_orphan(self) -> None:
        """At loop start: the executor of a recovered operation did not re-attach, so the
        recovery policy applies to it now (lock held)."""
        executor, self._orphan_executor = self._orphan_executor, None
        op = self._queue.pulled_operation
        if executor is None or op is None:
            return
        self._log.warning(
            "executor %r did not re-attach to operation %s; recovery %r applies",
            executor, op.id, self._recovery,
        )
        self._apply_recovery(op, {"executor": executor, "executor_reattached": False})

    def _advance(self) -> None:
        """Run a dispatch step in the calling thread, right after it changed something.

        Lock held. Whoever completes, adds, decides or flips a signal also does the dispatching
        that follows from it (asking for the next start, starting an approved operation); that
        saves a hand-off to the dispatcher thread per operation. The dispatcher thread itself is
        woken only when a deadline now falls before the moment it would wake by itself.
        """
        if not self._loop_active or self._stop_requested:
            return
        self._step_locked()
        wait = self._deadlines.seconds_until_next()
        if wait is not None and time.monotonic() + wait < self._loop_wakes_at:
            self._cond.notify()

    def _index_dependencies(self, op: Operation) -> None:
        for dep in op.dependencies:
            self._dependents.setdefault(dep.depends_on_operation_id, set()).add(op.id)

    def _unindex_dependencies(self, op: Operation) -> None:
        for dep in op.dependencies:
            ids = self._dependents.get(dep.depends_on_operation_id)
            if ids is not None:
                ids.discard(op.id)
                if not ids:
                    del self._dependents[dep.depends_on_operation_id]

    def _snapshot(self, operation_id: UUID) -> Operation | None:
        op = self._find(operation_id)
        return None if op is None else op.copy()

    def _blockers(self, op: Operation) -> tuple[list[str], UUID | None]:
        """What keeps a queued operation from starting now, and a provider that failed it."""
        blockers: list[str] = []
        if op.release_date is not None and op.release_date > utcnow():
            blockers.append("release_date")
        for name, required in op.release_conditions.items():
            if not self._signals.holds(name, required):
                blockers.append(f"release_condition:{name}")
        for dep in op.dependencies:
            status = self._dependency_status(dep)
            if status == "failed":
                return blockers, dep.depends_on_operation_id
            if status == "wait":
                blockers.append(f"dependency:{dep.depends_on_operation_id}")
        gate = self._executor_gate
        if gate is not None and not self._signals.holds(gate, True):
            blocker = f"release_condition:{gate}"
            if blocker not in blockers:
                blockers.append(blocker)  # nothing is sent to an executor that is offline
        if self._retry.cooldown_remaining(RequestKind.START, op.id) > 0:
            blockers.append("cooldown")
        return blockers, None

    def _dependency_status(self, dep: OperationDependency) -> str:
        provider = self._find(dep.depends_on_operation_id)
        if provider is None:
            # Gone from memory: it finished long ago. Had it failed, its dependents would have
            # been failed right then (see _after_finish), so the dependency is met.
            return "ok"
        if dep.dependency_type is DependencyType.START_TO_START:
            if provider.start_time is not None:
                return "ok"
            return "failed" if provider.state is ExecutionState.COMPLETED else "wait"
        if provider.state is ExecutionState.COMPLETED:
            return "ok" if provider.outcome is ExecutionOutcome.SUCCESS else "failed"
        return "wait"

    def _schedule_unpark(self, op: Operation, blockers: list[str]) -> None:
        """Ask to be woken when a time-based blocker of ``op`` runs out."""
        now = time.monotonic()
        if "release_date" in blockers and op.release_date is not None:
            delay = (op.release_date - utcnow()).total_seconds()
            self._deadlines.push(now + max(delay, 0.0), "unpark", op.id)
        if "cooldown" in blockers:
            delay = self._retry.cooldown_remaining(RequestKind.START, op.id)
            self._deadlines.push(now + delay, "unpark", op.id)

    def _step_locked(self) -> float | None:
        """One pass of the dispatcher: act on what is due, start what can start.

        Returns how long the loop may sleep (None: until woken). Lock held.
        """
        if self._journal_failure is not None:
            return None  # memory may disagree with the journal: start nothing (see _undo_unit)
        for kind, key in self._deadlines.pop_due():
            self._on_deadline(kind, key)
        request = self._start_request
        if request is not None and not request.is_pending:
            self._conclude_start(request)
        if (
            not self._paused
            and self._start_request is None
            and self._queue.pulled_operation is None
            and not self._stop_requested
        ):
            self._try_start()
            request = self._start_request
            if request is not None and not request.is_pending:
                # Answered at once (no request callback): act on it now, since its notify came
                # before this thread waits and would otherwise be lost.
                self._conclude_start(request)
        return self._deadlines.seconds_until_next()

    def _on_deadline(self, kind: str, key: Any) -> None:
        if kind == "unpark":
            self._queue.unpark_operation(key)
        elif kind == "request":
            if self._desk.expire(key):
                self._log.warning(
                    "%s request for operation %s: %s",
                    key.kind.value, key.operation.id, key.decision.data["error"],
                )
        elif kind == "timeout":
            op = self._queue.pulled_operation
            if op is not None and op.id == key and op.timeout_seconds is not None:
                self._finish(
                    op, "fail", EventType.OPERATION_FAILED, TerminationReason.TIMEOUT,
                    {"timeout_seconds": op.timeout_seconds},
                )

    def _try_start(self) -> None:
        """Ask to start the best operation that can start now (the head, in strict mode).

        In strict mode only operations waiting for a provider are parked (the original ordered
        dependents after their providers); nothing else is, so the ready head is the head.
        """
        while True:
            op = self._queue.peek_ready()
            if op is None:
                return
            blockers, failed_provider = self._blockers(op)
            if failed_provider is not None:
                self._fail_dependents_of(failed_provider, only={op.id})
                continue
            if not blockers:
                self._request_start(op)
                return
            self._schedule_unpark(op, blockers)
            if self._strict and not all(b.startswith("dependency:") for b in blockers):
                return  # the original's strict head order: wait for the head
            self._queue.park(op.id, blockers)

    def _request_start(self, op: Operation) -> None:
        request = self._open_request(RequestKind.START, op, None)
        self._start_request = request
        if self._on_request is not None:
            self._deadlines.push(request.deadline, "request", request)

    def _open_request(
        self, kind: RequestKind, op: Operation, meta_data: dict[str, Any] | None
    ) -> ApprovalRequest:
        event = DispatchEvent.trusted(
            op.resource_id, kind.requested_event, op.id, [],
            copy_json(dict(meta_data)) if meta_data else {},
        )
        request = self._desk.open(kind, event, op, self._request_timeout)
        if self._on_request is None:
            self._desk.resolve(request, RequestDecision(True))
        else:
            self._callbacks.submit(self._ask, request)
        return request

    def _ask(self, request: ApprovalRequest) -> None:
        """Runs on a callback worker, no lock held: ask the business logic, file the answer."""
        assert self._on_request is not None
        try:
            # a copy: what the callback does to its event must not reach the history
            result = call_maybe_async(self._on_request, copy_event(request.event))
        except Exception as exc:
            self._log.exception("request callback raised on %s", request.event.event_type.value)
            decision: Any = RequestDecision(
                False, "request_callback_exception", {"error": str(exc) or type(exc).__name__}
            )
        else:
            decision = normalize_decision(result)
        with self._work:
            if decision is PENDING:
                request.waiting_for = "decide()"
                return
            if not self._desk.resolve(request, decision):
                self._log.warning(
                    "late answer to %s for operation %s ignored (request already %s)",
                    request.kind.value, request.operation.id, request.status.value,
                )
            elif request is self._start_request:
                self._advance()  # act on the answer here: no hand-off to the dispatcher thread

    def _record_request(self, request: ApprovalRequest, void_reason: str | None = None) -> None:
        """Put the *_REQUESTED event in the history, with its decision, under the id the
        callback saw (so a callback's event and the history entry can be matched)."""
        decision = request.decision or RequestDecision(False)
        meta = copy_json(request.event.meta_data)
        meta["request_decision"] = decision.to_dict()
        if void_reason is not None:
            meta["void_reason"] = void_reason
        event = request.event
        self._record(
            DispatchEvent.trusted(
                event.resource_id, event.event_type, event.operation_id, [], meta,
                id=event.id, created_at=event.created_at,
            )
        )

    def _conclude_start(self, request: ApprovalRequest) -> None:
        self._start_request = None
        self._desk.close(request)
        self._deadlines.discard("request", request)
        decision = request.decision
        assert decision is not None
        op = self._queue.get(request.operation.id)
        if decision.accepted is not True:  # only the real True starts a machine
            self._record_request(request)
            self._deny(request, op)
            return
        self._retry.clear(RequestKind.START, request.operation.id)
        self._unit_retry.add(request.operation.id)
        void = None
        if op is None or not self._queue.is_queued(op.id):
            void = "operation is no longer queued"
        elif request.changed:
            void = "operation changed while the request was open"
        elif self._paused:
            void = "dispatcher was paused while the request was open"
        else:
            blockers, failed = self._blockers(op)
            if blockers or failed is not None:
                void = f"operation is no longer ready: {', '.join(blockers) or 'dependency failed'}"
        self._record_request(request, void)
        if void is not None:
            self._log.info("approval to start %s is void: %s", request.operation.id, void)
            return
        assert op is not None
        self._queue.pull(op.id)
        changes = self._lifecycle.fire(op, "start")
        # the journal keeps who runs it: after a crash that executor re-attaches to it
        meta = None if self._executor is None else {"executor": self._executor}
        self._emit(EventType.OPERATION_STARTED, op, changes, meta)
        self._last_started = op
        self._schedule_timeout(op)
        self._queue.unpark(f"dependency:{op.id}")  # START_TO_START dependents may go now

    def _schedule_timeout(self, op: Operation) -> None:
        """Wake at start_time + timeout_seconds to fail the operation if it still runs."""
        self._deadlines.discard("timeout", op.id)
        if op.timeout_seconds is None or op.start_time is None:
            return
        left = op.timeout_seconds - (utcnow() - op.start_time).total_seconds()
        self._deadlines.push(time.monotonic() + max(left, 0.0), "timeout", op.id)

    def _deny(self, request: ApprovalRequest, op: Operation | None) -> None:
        """Count a denial, emit *_DENIED, cool down, and pause after too many."""
        decision = request.decision
        assert decision is not None
        kind = request.kind
        if op is None or op.is_finished:
            return  # it finished while the request was open: nothing left to deny or retry
        count = self._retry.record_denial(kind, op.id)
        self._unit_retry.add(op.id)
        meta: dict[str, Any] = {
            "retry_count": count,
            "max_retries": self._retry.max_retries,
            "cooldown_seconds": self._retry.cooldown_seconds,
        }
        if decision.reasoning is not None:
            meta["reasoning"] = decision.reasoning
        if decision.data:
            meta["decision_data"] = copy_json(decision.data)
        if request.event.meta_data:
            meta["request_meta_data"] = copy_json(request.event.meta_data)
        self._emit(kind.denied_event, op, meta_data=meta)
        if self._retry.exhausted(count):
            self._set_paused(True)

    def _handshake(
        self, kind: RequestKind, op: Operation, meta_data: dict[str, Any] | None
    ) -> RequestDecision | None:
        """Ask permission in the caller's thread; lock held on entry and exit, released while
        waiting, so the dispatcher keeps serving others. None: the pair is cooling down."""
        if self._retry.cooldown_remaining(kind, op.id) > 0:
            return None
        request = self._open_request(kind, op, meta_data)
        self._await_decision(request)
        self._desk.close(request)
        self._record_request(request)
        decision = request.decision
        assert decision is not None
        if decision.accepted is True:
            self._retry.clear(kind, op.id)
            self._unit_retry.add(op.id)
        else:
            self._deny(request, self._queue.get(op.id))
        return decision

    def _current(self, operation_id: UUID) -> Operation:
        op = self._queue.pulled_operation
        if op is None:
            raise OperationNotCurrent("no current operation", operation_id)
        if op.id != operation_id:
            raise OperationNotCurrent("operation is not current", operation_id)
        return op

    def _finish(
        self,
        op: Operation,
        trigger: str,
        event_type: EventType,
        reason: TerminationReason | None,
        meta_data: dict[str, Any] | None,
        cascade: bool = True,
    ) -> None:
        """Complete, fail or cancel ``op`` (current or queued) and archive it."""
        changes = self._lifecycle.fire(op, trigger, termination_reason=reason)
        if self._queue.pulled_operation is op:
            self._queue.release_pulled()
            self._deadlines.discard("timeout", op.id)
        else:
            self._queue.remove(op.id)
            self._deadlines.discard("unpark", op.id)
        self._queue.archive(op)
        self._emit(event_type, op, changes, meta_data)
        self._after_finish(op, cascade)

    def _after_finish(self, op: Operation, cascade: bool = True) -> None:
        """Forget the finished operation's retry state; release or fail its dependents.

        ``cascade=False``: the caller (the worklist of :meth:`_fail_dependents_of`) fails them.
        """
        self._retry.clear_operation(op.id)
        self._unit_retry.add(op.id)
        self._unindex_dependencies(op)
        if op.outcome is ExecutionOutcome.SUCCESS:
            self._dependents.pop(op.id, None)
            self._queue.unpark(f"dependency:{op.id}")
        elif cascade:
            self._fail_dependents_of(op.id)

    def _fail_dependents_of(self, provider_id: UUID, only: set[UUID] | None = None) -> None:
        """Fail (DEPENDENCY_FAILED) every queued operation a failed provider holds up.

        A worklist rather than recursion, so a long chain of dependents cannot overflow the stack.
        """
        work = [provider_id]
        while work:
            failed = work.pop()
            candidates = set(self._dependents.get(failed, ())) if only is None else set(only)
            only = None
            for dependent_id in candidates:
                dependent = self._queue.get(dependent_id)
                if dependent is None or not self._queue.is_queued(dependent_id):
                    continue
                if not any(
                    d.depends_on_operation_id == failed
                    and self._dependency_status(d) == "failed"
                    for d in dependent.dependencies
                ):
                    continue
                self._finish(
                    dependent, "fail", EventType.OPERATION_FAILED,
                    TerminationReason.DEPENDENCY_FAILED, {"dependency": str(failed)},
                    cascade=False,
                )
                work.append(dependent_id)  # its own dependents fail next, on this worklist
            self._dependents.pop(failed, None)

    def _subscribe_to_signals(self) -> None:
        # A weak reference: a board shared by several dispatchers must not keep a forgotten
        # dispatcher alive, and drops its listener once the dispatcher is gone.
        handler = weakref.WeakMethod(self._on_signal)
        unsubscribe: Callable[[], None] | None = None

        def listener(signal: Signal) -> None:
            method = handler()
            if method is None:
                if unsubscribe is not None:
                    unsubscribe()
                return
            method(signal)

        unsubscribe = self._signals.subscribe(listener)

    def _on_signal(self, signal: Signal) -> None:
        with self._work:
            self._queue.unpark(f"release_condition:{signal.name}")
            self._advance()

    def _set_paused(self, paused: bool) -> bool:
        if self._paused == paused:
            return False
        self._paused = paused
        self._unit_paused = True
        self._emit(
            EventType.OPERATION_DISPATCHER_PAUSED if paused
            else EventType.OPERATION_DISPATCHER_RESUMED
        )
        return True


__all__ = ["DispatchCore"]

"""OperationDispatcher: the public API for one resource, its threads, and the parts it composes.

The dispatcher is the hub (design.md section 1): it checks arguments, takes the one dispatcher
lock through the :class:`~.unit.UnitOfWork`, runs the dispatcher thread and hands out snapshots;
the decisions belong to its parts, each owning its state behind a small API: the
:class:`~.queue.DispatchQueue` (order and parking), :class:`~.deadlines.Deadlines`, the
:class:`~.handshake.Handshake` (approval desk and retry policy), the
:class:`~.lifecycle.OperationLifecycle`, the :class:`~.engine.DispatchEngine` (eligibility,
starting, finishing), the :class:`~.store.EventStore` (memory or journal) and, with a journal,
:class:`~.recovery.Recovery`. No part knows the hub.

A method that changes something also runs the dispatch step that follows from it, in the
caller's thread; the dispatcher thread (``run()`` or ``start()``) sleeps on a condition variable
until the nearest deadline (release date, cooldown end, request timeout, operation timeout) or a
stop. User code is never called with the lock held: request callbacks run on worker threads,
notifications on the event thread, the history callback in the caller's thread after the lock
is released.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from . import _checks
from .approvals import (
    PendingRequest,
    RequestKind,
    decision_from_arguments,
)
from .composition import DispatcherParts, listen_weakly
from .errors import (
    ExecutorConflict,
    InvalidTransition,
    OperationNotCurrent,
    OperationNotFound,
    OperationNotUpdatable,
    ResourceMismatch,
    ValidationError,
)
from .events import EventHandler
from .handshake import RequestCallback
from .history import build_history
from .models import (
    LIFECYCLE_FIELDS,
    UPDATABLE_FIELDS,
    ChangeRecord,
    DispatchEvent,
    EventType,
    ExecutionState,
    History,
    Operation,
    OperationDispatcherState,
    TerminationReason,
    check_json_data,
    check_meta_data,
    copy_json,
    stored_copy,
    to_utc,
    to_uuid,
    utcnow,
)
from .queue import SortRule
from .signals import Signal, SignalBoard

if TYPE_CHECKING:  # imported where used: they are not needed to import the package
    from .approval_policy import ApprovalPolicy
    from .forecast import ForecastEntry
    from .journal import Journal

HistoryCallback = Callable[..., History | None]
#: the states in which an operation takes progress reports (it is the current operation)
_PROGRESS_STATES = (ExecutionState.RUNNING, ExecutionState.PAUSED)


class OperationDispatcher:
    """Queues, dispatches and supervises the operations of one resource.

    The dispatcher asks ``on_request_callback`` before it starts, pauses, resumes or cancels an
    operation, and reports everything that happens to ``on_notification_callback`` (on its own
    event thread, in order). It never executes work: whoever runs the operation calls
    :meth:`complete_operation` or :meth:`fail_operation`.

    >>> with OperationDispatcher("robot-1", on_request_callback=lambda e: True) as dispatcher:
    ...     dispatcher.add_operation(Operation(resource_id="robot-1", payload={"task": "pick"}))

    :param resource_id: the resource this dispatcher serves; every operation must name it.
    :param on_request_callback: decides ``*_REQUESTED`` events (see approvals); None approves all.
    :param on_notification_callback: receives every event except ``*_REQUESTED`` ones.
    :param on_history_callback: may replace the result of :meth:`get_history`.
    :param start_paused: begin paused: nothing starts until :meth:`resume_dispatcher_runtime`.
    :param poll_interval_seconds: accepted for compatibility; the loop never polls.
    :param start_request_max_retries: denials of one (request kind, operation) before the
        dispatcher pauses itself.
    :param start_request_retry_cooldown_seconds: wait after a denial before asking again.
    :param request_event_timeout_seconds: a request the callback has not answered by then is
        denied (reasoning ``timeout``); None: it waits for the answer, however long.
    :param default_planned_duration: planned_duration (seconds) for operations that have none.
    :param updatable_fields: fields :meth:`update_operation` may change.
    :param dispatch_queue_sort_rules: the dispatch order (default: release date, priority, age).
    :param logger: a logger to use instead of ``operation_dispatcher.dispatcher``.
    :param signals: a shared :class:`SignalBoard` (one is made if None).
    :param journal: a journal file path (or a :class:`Journal`) that makes the state durable;
        None or ``":memory:"`` keeps everything in memory only. A file that is not a journal,
        or a journal written for another resource, is refused with JournalError.
    :param recovery: what becomes of an operation that was RUNNING or PAUSED when the process
        died: ``"fail"`` (FAILED, INTERRUPTED) or ``"pause"`` (kept PAUSED for an operator).
    :param strict_order: only ever consider the head of the queue, as the original did.
    :param event_retention: events kept in memory without a journal (with one, the journal
        keeps them and serves every read; none are copied into memory).
    :param operation_retention: finished operations kept in memory.
    :param default_release_conditions: release conditions every added operation gets, unless
        it names the same signal itself (e.g. ``{"door.closed": True}`` for a whole cell).
    :param approval_policy: an :class:`~.approval_policy.ApprovalPolicy`: per request kind,
        ``"auto"`` (the callback decides, or approve when there is none), ``"operator"`` (wait
        for ``decide()``, the callback is not asked) or ``"deny"``.
    """

    def __init__(
        self,
        resource_id: str,
        *,
        on_request_callback: RequestCallback | None = None,
        on_notification_callback: EventHandler | None = None,
        on_history_callback: HistoryCallback | None = None,
        start_paused: bool = False,
        poll_interval_seconds: float = 0.1,
        start_request_max_retries: int = 5,
        start_request_retry_cooldown_seconds: float = 1.0,
        request_event_timeout_seconds: float | None = 5.0,
        default_planned_duration: float | None = None,
        updatable_fields: Iterable[str] | None = None,
        dispatch_queue_sort_rules: Iterable[SortRule] | None = None,
        logger: logging.Logger | None = None,
        signals: SignalBoard | None = None,
        journal: str | os.PathLike[str] | Journal | None = None,
        recovery: str = "fail",
        strict_order: bool = False,
        event_retention: int = 10_000,
        operation_retention: int = 10_000,
        default_release_conditions: Mapping[str, Any] | None = None,
        approval_policy: ApprovalPolicy | None = None,
    ) -> None:
        if approval_policy is not None and not _is_approval_policy(approval_policy):
            raise ValidationError(
                "approval_policy", "must be an ApprovalPolicy or None, "
                f"got {type(approval_policy).__name__}"
            )
        fields, defaults = _checks.dispatcher_arguments(
            resource_id=resource_id,
            poll_interval_seconds=poll_interval_seconds,
            start_request_max_retries=start_request_max_retries,
            start_request_retry_cooldown_seconds=start_request_retry_cooldown_seconds,
            request_event_timeout_seconds=request_event_timeout_seconds,
            default_planned_duration=default_planned_duration,
            recovery=recovery,
            start_paused=start_paused,
            strict_order=strict_order,
            updatable_fields=updatable_fields,
            allowed_fields=UPDATABLE_FIELDS | LIFECYCLE_FIELDS,
            default_fields=UPDATABLE_FIELDS,
            event_retention=event_retention,
            operation_retention=operation_retention,
            default_release_conditions=default_release_conditions,
        )

        opened = _open_journal(journal)
        try:
            parts = DispatcherParts(
                resource_id,
                on_request_callback=on_request_callback,
                on_notification_callback=on_notification_callback,
                start_paused=start_paused,
                max_retries=start_request_max_retries,
                retry_cooldown_seconds=start_request_retry_cooldown_seconds,
                request_timeout_seconds=request_event_timeout_seconds,
                sort_rules=dispatch_queue_sort_rules,
                log=logger or logging.getLogger(__name__),
                signals=signals,
                strict_order=strict_order,
                event_retention=event_retention,
                operation_retention=operation_retention,
                journal=opened,
                recovery=recovery,
                approval_policy=approval_policy,
            )
        except BaseException:
            if opened is not None and opened is not journal:
                opened.close()  # a failed start must not leave the file locked
            raise
        self._resource_id = resource_id
        self._on_history = on_history_callback
        self._default_planned_duration = default_planned_duration
        self._updatable = frozenset(fields)
        self._strict = strict_order
        # the parts the hub talks to (built and wired in composition.py)
        self._parts = parts
        self._lock, self._journal, self._store, self._queue = (
            parts.lock, parts.journal, parts.store, parts.queue
        )
        self._bus, self._run, self._work, self._pause = parts.bus, parts.run, parts.unit, parts.pause
        self._handshake, self._signals, self._engine = parts.handshake, parts.signals, parts.engine
        self._recovery, self._runner = parts.recovery, parts.runner
        #: the one lookup: memory, then the event store (see DispatcherParts.find)
        self._find: Callable[[UUID], Operation | None] = parts.find
        listen_weakly(self._signals, self._on_signal)
        self._owns_journal = self._journal is not None and self._journal is not journal
        self._poll_interval_seconds = poll_interval_seconds
        self._default_conditions = defaults

    def _snapshot(self, operation_id: UUID) -> Operation | None:
        op = self._find(operation_id)
        return None if op is None else op.copy()

    def _on_signal(self, signal: Signal) -> None:
        self._engine.on_signal(signal)

    # ================================================================== properties
    @property
    def resource_id(self) -> str:
        return self._resource_id

    @property
    def signals(self) -> SignalBoard:
        """The board whose signals gate ``release_conditions``."""
        return self._signals

    @property
    def is_running(self) -> bool:
        """True while the dispatcher loop runs (``run()`` or ``start()``)."""
        return self._run.active

    @property
    def is_paused(self) -> bool:
        return self._pause.is_set

    @property
    def strict_order(self) -> bool:
        return self._strict

    @property
    def current_operation(self) -> Operation | None:
        """A snapshot of the current (RUNNING or PAUSED) operation, or None."""
        with self._work:
            op = self._queue.pulled_operation
            return None if op is None else op.copy()

    @property
    def poll_interval_seconds(self) -> float:
        return self._poll_interval_seconds

    # ================================================================== events
    def subscribe(
        self, handler: Callable[..., Any], *, include_requests: bool = False, with_seq: bool = False
    ) -> Callable[[], None]:
        """Receive every event from now on, in order, on the event thread.

        ``*_REQUESTED`` events only with ``include_requests=True``; with ``with_seq=True`` it is
        ``handler(event, seq)``: the store's gapless number (a journal's events.seq). Returns an unsubscribe.
        """
        return self._bus.subscribe(handler, include_requests=include_requests, with_seq=with_seq)

    def drain_events(self, timeout: float | None = None) -> bool:
        """Wait until every event emitted so far has reached the subscribers.

        False on timeout, and at once after :meth:`stop`: events emitted while the dispatcher is
        stopped are held for the next :meth:`start`. Raises RuntimeError when called from a
        notification handler (on the event thread), where it would wait for itself forever.
        """
        return self._bus.drain(timeout)

    # ================================================================== adding
    def add_operation(
        self,
        operation: Operation,
        apply_default_planned_duration: bool = True,
        meta_data: dict[str, Any] | None = None,
    ) -> Operation:
        """Queue an operation; returns a snapshot of what was stored.

        The caller's object is copied, never changed. Raises ValidationError, ResourceMismatch,
        DuplicateOperation or DependencyError; nothing is queued then.
        """
        return self.add_operations(
            [operation], apply_default_planned_duration=apply_default_planned_duration,
            meta_data=meta_data,
        )[0]

    def add_operations(
        self,
        operations: Iterable[Operation],
        apply_default_planned_duration: bool = True,
        meta_data: dict[str, Any] | None = None,
    ) -> list[Operation]:
        """Queue several operations, all or none (they may depend on each other)."""
        check_meta_data(meta_data, "meta_data")
        stored = [self._prepare_new(op, apply_default_planned_duration) for op in operations]
        with self._work:
            self._engine.add(stored, meta_data)
            self._engine.advance()
            return [op.copy() for op in stored]

    def _prepare_new(self, operation: Operation, apply_default: bool) -> Operation:
        if not isinstance(operation, Operation):
            raise ValidationError(
                "operation", f"must be an Operation, got {type(operation).__name__}"
            )
        if operation.resource_id != self._resource_id:
            raise ResourceMismatch(operation.id, operation.resource_id, self._resource_id)
        if operation.state is not ExecutionState.QUEUED:
            raise ValidationError("state", f"of a new operation must be QUEUED, not {operation.state}")
        # most operations have no dependencies or release conditions: the stored copy shares the
        # read-only empties (~120 B saved each); every snapshot of it gets plain containers
        op = stored_copy(operation)
        if apply_default and op.planned_duration is None and self._default_planned_duration:
            op.planned_duration = self._default_planned_duration
        if self._default_conditions:
            conditions = dict(op.release_conditions)
            for name, value in self._default_conditions.items():
                if name not in conditions:
                    conditions[name] = copy_json(value)
            op.release_conditions = conditions  # never empty: it holds the defaults
        return op

    # ================================================================== reads
    def get_operation(self, operation_id: UUID | str) -> Operation | None:
        """A snapshot of the operation (queued, current or recently finished), or None."""
        key = to_uuid(operation_id, "operation_id")
        with self._work:
            op = self._find(key)
            return None if op is None else op.copy()

    def get_schedule(self, *, include_current: bool = False) -> list[Operation]:
        """Snapshots of the queued operations in the order they can start: the dispatch order,
        except that a provider always comes before the operations that depend on it.

        With ``include_current`` the current operation comes first, from the same instant (one
        lock acquisition: nothing can start or finish between the two reads).
        """
        with self._work:
            current = self._queue.pulled_operation
            ops = self._queue.list()
            if include_current and current is not None:
                ops.insert(0, current)
            return [op.copy() for op in ops]

    def list_events(self, operation_id: UUID | str) -> list[DispatchEvent]:
        """The events of one operation, oldest first (all of them, with a journal)."""
        key = to_uuid(operation_id, "operation_id")
        with self._work:
            return self._store.for_operation(key)

    def forecast(self, *, now: datetime | None = None) -> list[ForecastEntry]:
        """When each operation is expected to start and end, or what keeps that unknown.

        The current operation (if any) first, then the queued ones in dispatch order; each
        :class:`~.forecast.ForecastEntry` has ``to_dict()``. The lock is held only to copy what
        the forecast needs; the model and its assumptions are in :mod:`.forecast` (one
        resource, planned durations, nothing made up for a job that waits on a condition).
        ``now`` (default: the current time) is the moment the forecast is for.
        """
        from .forecast import forecast_operations, take_snapshot  # loaded on the first forecast

        moment = utcnow() if now is None else to_utc(now, "now")
        with self._work:
            snapshot = take_snapshot(
                self._queue, self._engine, self._handshake, strict_order=self._strict,
                paused=self._pause.is_set, running=self._run.active, now=moment,
            )
        return forecast_operations(snapshot, moment)

    def get_state(self) -> OperationDispatcherState:
        with self._work:
            current = self._queue.pulled_operation
            return OperationDispatcherState(
                resource_id=self._resource_id,
                is_running=self._run.active,
                is_paused=self._pause.is_set,
                queue_size=len(self._queue),
                current_operation=None if current is None else current.copy(),
                running_since=self._run.running_since,
                uptime_seconds=(
                    time.monotonic() - self._run.running_since_mono if self._run.active else None
                ),
            )

    def pending_requests(self) -> list[PendingRequest]:
        """The approval requests waiting for an answer (answer them with :meth:`decide`)."""
        with self._work:
            return self._handshake.desk.pending()

    def watch_requests(self, watcher: Callable[[PendingRequest], Any]) -> Callable[[], None]:
        """Tell ``watcher`` (a snapshot, off the lock) of each request that waits for decide()."""
        return self._handshake.watch(watcher, self._lock)

    def get_history(
        self,
        from_time: datetime | None = None,
        to_time: datetime | None = None,
        resolve_operations: bool = False,
        limit: int | None = None,
    ) -> History:
        """Events between from_time and to_time (inclusive), the most recent ``limit`` of them.

        Naive datetimes are taken as UTC. With ``resolve_operations`` the operations the events
        name are included as snapshots. ``on_history_callback`` may replace the result.
        """
        start = None if from_time is None else to_utc(from_time, "from_time")
        end = None if to_time is None else to_utc(to_time, "to_time")
        if start is not None and end is not None and end < start:
            raise ValidationError("to_time", "must not be before from_time")
        if limit is not None and (type(limit) is not int):
            raise ValidationError("limit", "must be an integer or None")
        with self._work:
            events = self._store.select(start, end, limit)
            history = build_history(
                self._resource_id, events, start, end,
                self._snapshot if resolve_operations else None,
            )
        if self._on_history is not None:
            result = self._on_history(from_time, to_time, resolve_operations, limit, history)
            if isinstance(result, History):
                history = result
            elif result is not None:
                raise ValueError(
                    "Invalid return type from on_history_callback, expected History or None"
                )
        return history

    def explain(self, operation_id: UUID | str, *, details: bool = True) -> dict[str, Any]:
        """Why an operation is not running: ``{"operation_id", "state", "blocked_by",
        "details"}``.

        ``blocked_by`` names release_date, release_condition:NAME, dependency:ID, cooldown,
        awaiting_approval, dispatcher_paused, dispatcher_not_running and resource_busy; it is
        empty for an operation that is running, finished, or about to be asked for.
        ``details`` has one entry per blocker, in the same order, with its ``kind``, a sentence
        (``text``) and the facts behind it (see :mod:`.reasons`); ``details=False`` leaves
        them out, for callers that only count blockers (several times cheaper).
        """
        key = to_uuid(operation_id, "operation_id")
        _checks.boolean(details, "details")
        if details:
            from . import reasons  # loaded by the first one who asks, before the lock is taken
        with self._work:
            op = self._find(key)
            if op is None:
                raise OperationNotFound(key)
            blocked = self._engine.why_waiting(op)
            facts = self._engine.waiting_facts(op, blocked, self._find) if details else None
            answer: dict[str, Any] = {
                "operation_id": str(op.id), "state": op.state.value, "blocked_by": blocked
            }
        if facts is not None:
            answer["details"] = reasons.describe(facts, self._signals)  # words need no lock
        return answer

    # ================================================================== executor
    @property
    def executor(self) -> str | None:
        """The name of the bridge that runs this resource's jobs, if one is attached."""
        with self._work:
            return self._engine.executor

    def attach_executor(self, name: str, *, online_signal: str | None = None) -> Operation | None:
        """Make bridge ``name`` the one executor of this resource (design.md 2a).

        From now on no operation starts while ``online_signal`` (default ``NAME.online``) is not
        a fresh ``True``: ``explain`` shows it as ``release_condition:NAME.online``. Its name is
        recorded with every start, so after a crash it can re-attach: if the journal says this
        executor was running an operation when the last process ended, a snapshot of that
        operation is returned and the bridge watches it finish; nothing is sent again. Attaching
        the same name again is harmless; another name raises :class:`ExecutorConflict`.
        """
        if not isinstance(name, str) or not name:
            raise ValidationError("name", "must be a non-empty string (the bridge's name)")
        gate = f"{name}.online" if online_signal is None else online_signal
        if not isinstance(gate, str) or not gate:
            raise ValidationError("online_signal", "must be a non-empty signal name")
        with self._work:
            attached = self._engine.executor
            if attached is not None and attached != name:
                raise ExecutorConflict(self._resource_id, attached, name)
            self._engine.attach_executor(name, gate)
            recovered = None if self._recovery is None else self._recovery.reattach(name)
            return None if recovered is None else recovered.copy()

    def detach_executor(self, name: str) -> None:
        """``name`` no longer runs this resource's jobs; starts are no longer gated on it."""
        with self._work:
            if self._engine.detach_executor(name):
                self._engine.advance()

    # ================================================================== progress
    def report_progress(
        self,
        operation_id: UUID | str,
        fraction: float | None = None,
        message: str | None = None,
    ) -> Operation:
        """Say how far the current operation has got; returns its snapshot.

        ``fraction`` is a number from 0 to 1 (None: not known), ``message`` a short text (at
        most :data:`~._checks.MAX_PROGRESS_MESSAGE` characters); at least one of them must be
        given. Each report replaces the previous one (``op.progress``, with ``updated_at``).
        Only the current operation takes reports, RUNNING or PAUSED (a device may report where
        it stopped). OPERATION_PROGRESS events, and with them the journal writes, are limited
        to one per :data:`~.progress.PROGRESS_EVENT_INTERVAL` (0.5 s) per operation; a report
        in between is held and its latest value emitted when the interval ends, when the
        operation ends or when the dispatcher stops.

        Raises ValidationError (nothing changes) for a bad value, OperationNotFound for an
        unknown id and OperationNotCurrent for an operation that is not the current one.
        """
        key = to_uuid(operation_id, "operation_id")
        fraction = _checks.progress_fraction(fraction, "fraction")
        message = _checks.progress_message(message, "message")
        if fraction is None and message is None:
            raise ValidationError(
                "fraction", "and message are both None: report a fraction, a message or both"
            )
        with self._work:
            op = self._find(key)
            if op is None:
                raise OperationNotFound(key)
            if op is not self._queue.pulled_operation or op.state not in _PROGRESS_STATES:
                raise OperationNotCurrent(
                    f"cannot report progress of operation {key}: it is {op.state.value} "
                    "(only the current RUNNING or PAUSED operation takes progress)", key,
                )
            self._engine.report_progress(op, fraction, message)
            self._engine.advance()
            return op.copy()

    # ================================================================== operation control
    def cancel_operation(
        self,
        operation_id: UUID | str,
        termination_reason: TerminationReason = TerminationReason.INTERNAL_ERROR,
        meta_data: dict[str, Any] | None = None,
    ) -> Operation | None:
        """Cancel a queued or the current operation, if the business logic agrees.

        Returns a snapshot of the cancelled operation, or None when it is unknown, already
        finished, denied, or cooling down after a denial. Stopping the real work is the
        caller's business (the OPERATION_CANCELLED event tells it).
        """
        key = to_uuid(operation_id, "operation_id")
        reason = TerminationReason(termination_reason)
        check_meta_data(meta_data, "meta_data")
        with self._work:
            op = self._find(key)
            if op is None or op.is_finished:
                return None
            decision = self._handshake.ask_and_wait(
                RequestKind.CANCEL, op, meta_data, lambda: self._queue.get(key)
            )
            if decision is None or decision.accepted is not True:
                return None
            op = self._queue.get(key)  # the lock was released while we waited
            if op is None or op.is_finished:
                return None
            self._engine.finish(op, "cancel", EventType.OPERATION_CANCELLED, reason, meta_data)
            self._engine.advance()
            return op.copy()

    def pause_operation(
        self,
        operation_id: UUID | str,
        enforce_running_state: bool = True,
        meta_data: dict[str, Any] | None = None,
    ) -> bool:
        """Pause the current operation if the business logic agrees; True if it was paused.

        Raises OperationNotCurrent if it is not the current operation and InvalidTransition if
        it is not RUNNING (``enforce_running_state`` is kept for compatibility: the state machine
        always enforces it).
        """
        return self._pause_or_resume(operation_id, RequestKind.PAUSE, meta_data)

    def resume_operation(
        self,
        operation_id: UUID | str,
        enforce_paused_state: bool = True,
        meta_data: dict[str, Any] | None = None,
    ) -> bool:
        """Resume the current, PAUSED operation if the business logic agrees."""
        return self._pause_or_resume(operation_id, RequestKind.RESUME, meta_data)

    def _pause_or_resume(
        self, operation_id: UUID | str, kind: RequestKind, meta_data: dict[str, Any] | None
    ) -> bool:
        key = to_uuid(operation_id, "operation_id")
        check_meta_data(meta_data, "meta_data")
        trigger, needed, event_type = (
            ("pause", ExecutionState.RUNNING, EventType.OPERATION_PAUSED)
            if kind is RequestKind.PAUSE
            else ("resume", ExecutionState.PAUSED, EventType.OPERATION_RESUMED)
        )
        with self._work:
            op = self._engine.current(key)
            if op.state is not needed:
                raise InvalidTransition(op.id, op.state, trigger, (needed,))
            decision = self._handshake.ask_and_wait(
                kind, op, meta_data, lambda: self._queue.get(key)
            )
            if decision is None or decision.accepted is not True:
                return False
            if self._queue.pulled_operation is not op or op.state is not needed:
                return False  # finished or changed while we waited for the answer
            self._engine.transition(op, trigger, event_type, meta_data)
            return True

    # ================================================================== finishing
    def complete_operation(
        self,
        operation_id: UUID | str,
        meta_data: dict[str, Any] | None = None,
        *,
        force: bool = False,
        executor: str | None = None,
    ) -> Operation:
        """Report that the current operation finished successfully; returns its snapshot.

        An operation that an executor bridge started is that bridge's to finish (it passes
        ``executor=<its name>``): anyone else gets :class:`~.errors.RunByExecutor`, unless
        ``force=True`` (the operator overrides the machine; the event's meta_data then holds
        ``{"forced_by_operator": true, "executor": <name>}``). Raises OperationNotCurrent when
        the operation is not the current one.
        """
        return self._finish_current(
            operation_id, "complete", EventType.OPERATION_COMPLETED, None, meta_data,
            force, executor,
        )

    def fail_operation(
        self,
        operation_id: UUID | str,
        termination_reason: TerminationReason = TerminationReason.INTERNAL_ERROR,
        meta_data: dict[str, Any] | None = None,
        *,
        force: bool = False,
        executor: str | None = None,
    ) -> Operation:
        """Report that the current operation failed; returns its snapshot.

        ``force`` and ``executor`` as for :meth:`complete_operation`.
        """
        return self._finish_current(
            operation_id, "fail", EventType.OPERATION_FAILED,
            TerminationReason(termination_reason), meta_data, force, executor,
        )

    def _finish_current(
        self,
        operation_id: UUID | str,
        trigger: str,
        event_type: EventType,
        reason: TerminationReason | None,
        meta_data: dict[str, Any] | None,
        force: bool,
        executor: str | None,
    ) -> Operation:
        key = to_uuid(operation_id, "operation_id")
        check_meta_data(meta_data, "meta_data")
        _checks.boolean(force, "force")  # a truthy "false" must not override a machine
        if executor is not None:
            _checks.text(executor, "executor")
        with self._work:
            op = self._engine.current(key)
            meta = self._engine.finisher_meta(op, meta_data, force, executor)
            self._engine.finish(op, trigger, event_type, reason, meta)
            self._engine.advance()
            return op.copy()

    # ================================================================== updates
    def update_operation(
        self,
        operation_id: UUID | str,
        updates: dict[str, Any],
        meta_data: dict[str, Any] | None = None,
    ) -> Operation | None:
        """Change updatable fields of a queued (or paused current) operation.

        Returns the updated snapshot, or None if the operation is unknown. Lifecycle fields
        (state, outcome, ...) are refused: they change only through transitions.
        """
        key = to_uuid(operation_id, "operation_id")
        if not isinstance(updates, dict):
            raise ValidationError("updates", "must be an object of field -> value")
        check_meta_data(meta_data, "meta_data")
        # copied before anything else: the caller's later edits of updates["payload"] (or of a
        # list inside it) must not reach the stored operation
        updates = {name: copy_json(value) for name, value in updates.items()}
        with self._work:
            op = self._find(key)
            if op is None:
                return None
            if not updates:
                return op.copy()
            candidate, changed = self._check_update(op, updates)
            if not changed:
                return op.copy()
            records = [  # copies: a subscriber editing its event must not edit the operation
                ChangeRecord(
                    field=name,
                    old_value=copy_json(getattr(op, name)),
                    new_value=copy_json(getattr(candidate, name)),
                )
                for name in changed
            ]
            self._engine.update(op, candidate, changed)
            self._work.emit(EventType.OPERATION_UPDATED, op, records, meta_data)
            self._engine.advance()
            return op.copy()

    def _check_update(
        self, op: Operation, updates: dict[str, Any]
    ) -> tuple[Operation, list[str]]:
        """The updated candidate and the fields that really change; raises (changing nothing)
        when the operation cannot be updated or an update is not allowed."""
        if op.is_finished:
            raise OperationNotUpdatable(op.id, "cannot update a finished operation")
        if op.state is ExecutionState.RUNNING:
            raise OperationNotUpdatable(op.id, "cannot update a running operation")
        lifecycle = sorted(set(updates) & LIFECYCLE_FIELDS)
        if lifecycle:
            raise ValidationError(
                lifecycle[0],
                "changes only through lifecycle transitions (start, pause, resume, "
                "complete, fail, cancel); use the matching dispatcher method",
            )
        unsupported = sorted(set(updates) - self._updatable)
        if unsupported:
            raise ValidationError("updates", f"has unsupported operation update fields: {unsupported}")
        candidate = dataclasses.replace(op, **updates)  # re-validates the whole operation
        changed = [name for name in updates if getattr(candidate, name) != getattr(op, name)]
        if "dependencies" in changed:
            self._queue.check_dependencies([candidate])
        return candidate, changed

    # ================================================================== approvals from outside
    def decide(
        self,
        request_id: UUID | str,
        accepted: bool,
        reasoning: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Answer a request the callback left PENDING (from any thread).

        Raises UnknownRequest for an unknown id and RequestClosed when it was already answered or
        timed out; TypeError, before anything changes, when ``accepted`` is not a real bool (only
        ``True`` approves: ``decide(id, "no")`` is an error, never an approval).
        """
        decision_from_arguments(accepted, reasoning, data)  # raises before the lock is taken
        check_meta_data(data, "data")
        if reasoning is not None:
            check_json_data(reasoning, "reasoning")
        with self._work:
            request = self._handshake.desk.decide(request_id, accepted, reasoning, data)
            self._engine.answered(request)

    # ================================================================== dispatcher runtime
    def pause_dispatcher_runtime(self) -> bool:
        """Stop starting new operations (the current one is left alone); False if already paused."""
        with self._work:
            return self._pause.set(True)

    def resume_dispatcher_runtime(self) -> bool:
        """Start operations again; clears every retry count and cooldown. False if not paused."""
        with self._work:
            self._engine.forgive_denials()
            changed = self._pause.set(False)
            self._engine.advance()
            return changed

    def step_dispatch(self) -> Operation | None:
        """One dispatch attempt in the caller's thread (only while the loop is not running).

        Asks to start the best eligible operation and waits for the answer; returns a snapshot
        of the operation it started, or None.
        """
        with self._work:
            if self._run.active:
                raise RuntimeError("step_dispatch cannot be used while the dispatcher loop runs")
            started = self._engine.step_once(self._handshake.await_decision)
            return None if started is None else started.copy()

    def run(self) -> None:
        """Run the dispatcher loop in the calling thread until :meth:`request_stop`.

        Raises JournalError (and runs nothing) when the start cannot be journaled.
        """
        self._runner.begin()
        self._runner.loop()

    def start(self) -> None:
        """Run the loop on a named background thread; returns once the loop is running.

        Raises JournalError when the start cannot be journaled (the disk is full, the journal
        was closed): then nothing runs, and start() may be called again once the cause is gone.
        """
        self._runner.start()

    def set_loop_heartbeat(self, beat: Callable[[], None] | None, every_seconds: float = 1.0) -> None:
        """Call ``beat`` in the loop thread, without the lock, before each pass, and wake at least
        every ``every_seconds``: for a watchdog (the beats stop when a pass never ends)."""
        self._runner.set_heartbeat(beat, every_seconds)

    def request_stop(self) -> None:
        """Ask the loop to stop; also honoured by a ``run()`` that has not begun yet."""
        self._runner.request_stop()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the loop and every thread the dispatcher started, and wait for them.

        Events already emitted are delivered first. Raises ThreadDidNotStop naming a thread still
        alive after ``timeout``. A request callback stuck in user code cannot be interrupted: it
        is logged and abandoned (its worker is a daemon thread).
        """
        self._runner.stop(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Stop (see :meth:`stop`) and close the journal this dispatcher opened from a path.

        Then close() is final: start() afterwards raises JournalError ("is closed").
        """
        self.stop(timeout)
        if self._owns_journal and self._journal is not None:
            with self._work:
                self._journal.close()

    @property
    def journal(self) -> Journal | None:
        """The journal that makes this dispatcher durable, if any."""
        return self._journal

    def __enter__(self) -> OperationDispatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"<OperationDispatcher {self._resource_id!r} running={self._run.active} "
            f"paused={self._pause.is_set} queued={len(self._queue)}>"
        )


def _is_approval_policy(value: object) -> bool:
    from .approval_policy import ApprovalPolicy  # whoever made one has loaded it already

    return isinstance(value, ApprovalPolicy)


def _open_journal(journal: str | os.PathLike[str] | Journal | None) -> Journal | None:
    if journal is None:
        return None
    from .journal import Journal  # sqlite3 is imported only by those who use a journal

    if isinstance(journal, Journal):
        return journal
    if isinstance(journal, str | os.PathLike):
        return None if str(journal) == ":memory:" else Journal(journal)
    raise ValidationError("journal", f"must be a path, a Journal or None, got {type(journal).__name__}")


__all__ = ["OperationDispatcher"]

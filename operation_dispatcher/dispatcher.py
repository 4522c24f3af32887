"""OperationDispatcher: the dispatcher thread and the public API for one resource.

Threading model (design.md section 2): one ``RLock`` with one ``Condition`` owns every piece of
state (queue, current operation, open requests, retry state, deadlines). Every public method takes
it; reads return snapshots. The dispatcher thread sleeps on the condition until something that can
change its decision happens (an add, a completion, a decision, a signal change, a stop) or the
nearest deadline passes. User code is never called with the lock held: request callbacks run on
:class:`~operation_dispatcher.workers.CallbackRunner` threads, notifications on the
:class:`~operation_dispatcher.events.EventBus` thread, the history callback in the caller's thread
after the lock is released.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from .approvals import (
    PENDING,
    ApprovalDesk,
    ApprovalRequest,
    PendingRequest,
    RequestDecision,
    RequestKind,
    RetryPolicy,
    normalize_decision,
)
from .deadlines import Deadlines
from .errors import (
    InvalidTransition,
    OperationNotCurrent,
    OperationNotFound,
    OperationNotUpdatable,
    ResourceMismatch,
    ThreadDidNotStop,
    ValidationError,
)
from .events import EventBus, EventHandler, call_maybe_async
from .history import EventLog, build_history
from .lifecycle import OperationLifecycle
from .models import (
    LIFECYCLE_FIELDS,
    UPDATABLE_FIELDS,
    ChangeRecord,
    DependencyType,
    DispatchEvent,
    EventType,
    ExecutionOutcome,
    ExecutionState,
    History,
    Operation,
    OperationDependency,
    OperationDispatcherState,
    TerminationReason,
    to_utc,
    to_uuid,
    utcnow,
)
from .queue import DispatchQueue, SortRule
from .signals import Signal, SignalBoard
from .workers import CallbackRunner

RequestCallback = Callable[[DispatchEvent], Any]
HistoryCallback = Callable[..., History | None]

_SORT_FIELDS = frozenset({"priority", "release_date", "created_at"})
_RELEASE_FIELDS = frozenset({"release_date", "release_conditions", "dependencies"})
_LOUD_EVENTS = {
    EventType.OPERATION_DISPATCHER_PAUSED: logging.WARNING,
    EventType.OPERATION_DISPATCHER_STOPPED: logging.WARNING,
    EventType.OPERATION_DISPATCHER_RESUMED: logging.INFO,
}


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
    :param request_event_timeout_seconds: a request with no answer by then is denied.
    :param default_planned_duration: planned_duration (seconds) for operations that have none.
    :param updatable_fields: fields :meth:`update_operation` may change.
    :param dispatch_queue_sort_rules: the dispatch order (default: release date, priority, age).
    :param logger: a logger to use instead of ``operation_dispatcher.dispatcher``.
    :param signals: a shared :class:`SignalBoard` (one is made if None).
    :param journal: reserved for the SQLite journal; must be None in this version.
    :param strict_order: only ever consider the head of the queue, as the original did.
    :param event_retention: events kept in memory.
    :param operation_retention: finished operations kept in memory.
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
        request_event_timeout_seconds: float = 5.0,
        default_planned_duration: float | None = None,
        updatable_fields: Iterable[str] | None = None,
        dispatch_queue_sort_rules: Iterable[SortRule] | None = None,
        logger: logging.Logger | None = None,
        signals: SignalBoard | None = None,
        journal: Any = None,
        strict_order: bool = False,
        event_retention: int = 10_000,
        operation_retention: int = 10_000,
    ) -> None:
        if not isinstance(resource_id, str) or not resource_id:
            raise ValidationError("resource_id", "must be a non-empty string")
        _require(poll_interval_seconds > 0, "poll_interval_seconds", "must be greater than 0")
        _require(
            type(start_request_max_retries) is int and start_request_max_retries > 0,
            "start_request_max_retries",
            "must be greater than 0",
        )
        _require(
            start_request_retry_cooldown_seconds >= 0,
            "start_request_retry_cooldown_seconds",
            "must be non-negative",
        )
        _require(
            request_event_timeout_seconds > 0, "request_event_timeout_seconds",
            "must be greater than 0",
        )
        _require(
            default_planned_duration is None or default_planned_duration > 0,
            "default_planned_duration",
            "must be > 0",
        )
        if journal is not None:
            raise NotImplementedError(
                "the SQLite journal is not part of this version yet; pass journal=None"
            )
        fields = UPDATABLE_FIELDS if updatable_fields is None else frozenset(updatable_fields)
        unsupported = sorted(fields - UPDATABLE_FIELDS - LIFECYCLE_FIELDS)
        if unsupported:
            raise ValidationError("updatable_fields", f"contains unsupported fields: {unsupported}")

        self._resource_id = resource_id
        self._log = logger or logging.getLogger(__name__)
        self._on_request = on_request_callback
        self._on_history = on_history_callback
        self._poll_interval_seconds = poll_interval_seconds
        self._request_timeout = float(request_event_timeout_seconds)
        self._default_planned_duration = default_planned_duration
        self._updatable = fields
        self._strict = strict_order

        # One lock owns everything below; the condition is how every thread waits on it.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)  # wakes the dispatcher thread
        self._answered = threading.Condition(self._lock)  # wakes threads awaiting a decision
        self._queue = DispatchQueue(
            resource_id, sort_rules=dispatch_queue_sort_rules, history_limit=operation_retention
        )
        self._lifecycle = OperationLifecycle()
        self._events = EventLog(event_retention)
        self._bus = EventBus(f"operation-dispatcher-events[{resource_id}]", self._log)
        if on_notification_callback is not None:
            self._bus.subscribe(on_notification_callback)
        self._callbacks = CallbackRunner(f"operation-dispatcher-requests[{resource_id}]", self._log)
        self._desk = ApprovalDesk(self._answered)
        self._retry = RetryPolicy(start_request_max_retries, start_request_retry_cooldown_seconds)
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
        self._signals = signals if signals is not None else SignalBoard()
        self._subscribe_to_signals()

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
        return self._loop_active

    @property
    def is_paused(self) -> bool:
        return self._paused

    @property
    def strict_order(self) -> bool:
        return self._strict

    @property
    def current_operation(self) -> Operation | None:
        """A snapshot of the current (RUNNING or PAUSED) operation, or None."""
        with self._lock:
            op = self._queue.pulled_operation
            return None if op is None else op.copy()

    @property
    def poll_interval_seconds(self) -> float:
        return self._poll_interval_seconds

    # ================================================================== events
    def subscribe(
        self, handler: EventHandler, *, include_requests: bool = False
    ) -> Callable[[], None]:
        """Receive every event from now on, in order, on the event thread.

        ``*_REQUESTED`` events are delivered only with ``include_requests=True``. Returns a
        function that unsubscribes.
        """
        return self._bus.subscribe(handler, include_requests=include_requests)

    def drain_events(self, timeout: float | None = None) -> bool:
        """Wait until every event emitted so far has reached the subscribers."""
        return self._bus.drain(timeout)

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
            dict(meta_data) if meta_data else {},
        )
        self._record(event)
        return event

    def _record(self, event: DispatchEvent) -> None:
        # Called with the lock held: this is what puts events in one total order.
        self._events.append(event)
        self._bus.publish(event)
        level = _LOUD_EVENTS.get(event.event_type, logging.DEBUG)
        if self._log.isEnabledFor(level):
            self._log.log(
                level, "%s %s %s", self._resource_id, event.event_type.value,
                event.operation_id or "",
            )

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
        stored = [self._prepare_new(op, apply_default_planned_duration) for op in operations]
        with self._lock:
            self._queue.add_many(stored)
            for op in stored:
                self._index_dependencies(op)
                self._emit(EventType.OPERATION_ADDED, op, meta_data=meta_data)
            self._advance()
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
        op = operation.copy()
        if apply_default and op.planned_duration is None and self._default_planned_duration:
            op.planned_duration = self._default_planned_duration
        return op

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

    # ================================================================== reads
    def get_operation(self, operation_id: UUID | str) -> Operation | None:
        """A snapshot of the operation (queued, current or recently finished), or None."""
        key = to_uuid(operation_id, "operation_id")
        with self._lock:
            op = self._queue.get(key)
            return None if op is None else op.copy()

    def get_schedule(self) -> list[Operation]:
        """Snapshots of the queued operations in dispatch order (the current one excluded)."""
        with self._lock:
            return [op.copy() for op in self._queue.list()]

    def list_events(self, operation_id: UUID | str) -> list[DispatchEvent]:
        """The retained events of one operation, oldest first."""
        key = to_uuid(operation_id, "operation_id")
        with self._lock:
            return self._events.for_operation(key)

    def get_state(self) -> OperationDispatcherState:
        with self._lock:
            current = self._queue.pulled_operation
            return OperationDispatcherState(
                resource_id=self._resource_id,
                is_running=self._loop_active,
                is_paused=self._paused,
                queue_size=len(self._queue),
                current_operation=None if current is None else current.copy(),
                running_since=self._running_since,
                uptime_seconds=(
                    time.monotonic() - self._running_since_mono if self._loop_active else None
                ),
            )

    def pending_requests(self) -> list[PendingRequest]:
        """The approval requests waiting for an answer (answer them with :meth:`decide`)."""
        with self._lock:
            return self._desk.pending()

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
        with self._lock:
            events = self._events.select(start, end, limit)
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

    def _snapshot(self, operation_id: UUID) -> Operation | None:
        op = self._queue.get(operation_id)
        return None if op is None else op.copy()

    def explain(self, operation_id: UUID | str) -> dict[str, Any]:
        """Why an operation is not running: ``{"operation_id", "state", "blocked_by": [...]}``.

        ``blocked_by`` names release_date, release_condition:NAME, dependency:ID, cooldown,
        awaiting_approval, dispatcher_paused, dispatcher_not_running and resource_busy; it is
        empty for an operation that is running, finished, or about to be asked for.
        """
        key = to_uuid(operation_id, "operation_id")
        with self._lock:
            op = self._queue.get(key)
            if op is None:
                raise OperationNotFound(key)
            blocked: list[str] = []
            if op.state is ExecutionState.QUEUED:
                reasons, failed = self._blockers(op)
                blocked.extend(reasons)
                if failed is not None:
                    blocked.append(f"dependency:{failed}")
                request = self._start_request
                if request is not None and request.operation.id == op.id:
                    blocked.append("awaiting_approval")
                elif request is not None or self._queue.pulled_operation is not None:
                    blocked.append("resource_busy")
                if self._paused:
                    blocked.append("dispatcher_paused")
                if not self._loop_active:
                    blocked.append("dispatcher_not_running")
            return {"operation_id": str(op.id), "state": op.state.value, "blocked_by": blocked}

    # ================================================================== eligibility
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
        if self._retry.cooldown_remaining(RequestKind.START, op.id) > 0:
            blockers.append("cooldown")
        return blockers, None

    def _dependency_status(self, dep: OperationDependency) -> str:
        provider = self._queue.get(dep.depends_on_operation_id)
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

    # ================================================================== the loop
    def _step_locked(self) -> float | None:
        """One pass of the dispatcher: act on what is due, start what can start.

        Returns how long the loop may sleep (None: until woken). Lock held.
        """
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
                self._finish_current(
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
            op.resource_id, kind.requested_event, op.id, [], dict(meta_data) if meta_data else {}
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
            result = call_maybe_async(self._on_request, request.event)
        except Exception as exc:
            self._log.exception("request callback raised on %s", request.event.event_type.value)
            decision: Any = RequestDecision(
                False, "request_callback_exception", {"error": str(exc) or type(exc).__name__}
            )
        else:
            decision = normalize_decision(result)
        with self._lock:
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
        meta = dict(request.event.meta_data)
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
        if not decision.accepted:
            self._record_request(request)
            self._deny(request, op)
            return
        self._retry.clear(RequestKind.START, request.operation.id)
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
        self._emit(EventType.OPERATION_STARTED, op, changes)
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
        meta: dict[str, Any] = {
            "retry_count": count,
            "max_retries": self._retry.max_retries,
            "cooldown_seconds": self._retry.cooldown_seconds,
        }
        if decision.reasoning is not None:
            meta["reasoning"] = decision.reasoning
        if decision.data:
            meta["decision_data"] = dict(decision.data)
        if request.event.meta_data:
            meta["request_meta_data"] = dict(request.event.meta_data)
        self._emit(kind.denied_event, op, meta_data=meta)
        if self._retry.exhausted(count):
            self._set_paused(True)

    # ================================================================== handshakes in callers
    def _handshake(
        self, kind: RequestKind, op: Operation, meta_data: dict[str, Any] | None
    ) -> RequestDecision | None:
        """Ask permission in the caller's thread; lock held on entry and exit, released while
        waiting, so the dispatcher keeps serving others. None: the pair is cooling down."""
        if self._retry.cooldown_remaining(kind, op.id) > 0:
            return None
        request = self._open_request(kind, op, meta_data)
        self._desk.wait(request)
        self._desk.close(request)
        self._record_request(request)
        decision = request.decision
        assert decision is not None
        if decision.accepted:
            self._retry.clear(kind, op.id)
        else:
            self._deny(request, self._queue.get(op.id))
        return decision

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
        with self._lock:
            op = self._queue.get(key)
            if op is None or op.is_finished:
                return None
            decision = self._handshake(RequestKind.CANCEL, op, meta_data)
            if decision is None or not decision.accepted:
                return None
            op = self._queue.get(key)  # the lock was released while we waited
            if op is None or op.is_finished:
                return None
            if self._queue.pulled_operation is op:
                self._finish_current(op, "cancel", EventType.OPERATION_CANCELLED, reason, meta_data)
            else:
                self._finish_queued(op, "cancel", EventType.OPERATION_CANCELLED, reason, meta_data)
            self._advance()
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
        trigger, needed, event_type = (
            ("pause", ExecutionState.RUNNING, EventType.OPERATION_PAUSED)
            if kind is RequestKind.PAUSE
            else ("resume", ExecutionState.PAUSED, EventType.OPERATION_RESUMED)
        )
        with self._lock:
            op = self._current(key)
            if op.state is not needed:
                raise InvalidTransition(op.id, op.state, trigger, (needed,))
            decision = self._handshake(kind, op, meta_data)
            if decision is None or not decision.accepted:
                return False
            if self._queue.pulled_operation is not op or op.state is not needed:
                return False  # finished or changed while we waited for the answer
            changes = self._lifecycle.fire(op, trigger)
            self._emit(event_type, op, changes, meta_data)
            return True

    # ================================================================== finishing
    def complete_operation(
        self, operation_id: UUID | str, meta_data: dict[str, Any] | None = None
    ) -> Operation:
        """Report that the current operation finished successfully; returns its snapshot."""
        key = to_uuid(operation_id, "operation_id")
        with self._lock:
            op = self._current(key)
            self._finish_current(op, "complete", EventType.OPERATION_COMPLETED, None, meta_data)
            self._advance()
            return op.copy()

    def fail_operation(
        self,
        operation_id: UUID | str,
        termination_reason: TerminationReason = TerminationReason.INTERNAL_ERROR,
        meta_data: dict[str, Any] | None = None,
    ) -> Operation:
        """Report that the current operation failed; returns its snapshot."""
        key = to_uuid(operation_id, "operation_id")
        reason = TerminationReason(termination_reason)
        with self._lock:
            op = self._current(key)
            self._finish_current(op, "fail", EventType.OPERATION_FAILED, reason, meta_data)
            self._advance()
            return op.copy()

    def _current(self, operation_id: UUID) -> Operation:
        op = self._queue.pulled_operation
        if op is None:
            raise OperationNotCurrent("no current operation", operation_id)
        if op.id != operation_id:
            raise OperationNotCurrent("operation is not current", operation_id)
        return op

    def _finish_current(
        self,
        op: Operation,
        trigger: str,
        event_type: EventType,
        reason: TerminationReason | None,
        meta_data: dict[str, Any] | None,
    ) -> None:
        changes = self._lifecycle.fire(op, trigger, termination_reason=reason)
        self._queue.release_pulled()
        self._queue.archive(op)
        self._deadlines.discard("timeout", op.id)
        self._emit(event_type, op, changes, meta_data)
        self._after_finish(op)

    def _finish_queued(
        self,
        op: Operation,
        trigger: str,
        event_type: EventType,
        reason: TerminationReason | None,
        meta_data: dict[str, Any] | None,
        cascade: bool = True,
    ) -> None:
        changes = self._lifecycle.fire(op, trigger, termination_reason=reason)
        self._queue.remove(op.id)
        self._queue.archive(op)
        self._deadlines.discard("unpark", op.id)
        self._emit(event_type, op, changes, meta_data)
        self._after_finish(op, cascade)

    def _after_finish(self, op: Operation, cascade: bool = True) -> None:
        """Forget the finished operation's retry state; release or fail its dependents.

        ``cascade=False``: the caller (the worklist of :meth:`_fail_dependents_of`) fails them.
        """
        self._retry.clear_operation(op.id)
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
                self._finish_queued(
                    dependent, "fail", EventType.OPERATION_FAILED,
                    TerminationReason.DEPENDENCY_FAILED, {"dependency": str(failed)},
                    cascade=False,
                )
                work.append(dependent_id)  # its own dependents fail next, on this worklist
            self._dependents.pop(failed, None)

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
        with self._lock:
            op = self._queue.get(key)
            if op is None:
                return None
            if not updates:
                return op.copy()
            if op.is_finished:
                raise OperationNotUpdatable(key, "cannot update a finished operation")
            if op.state is ExecutionState.RUNNING:
                raise OperationNotUpdatable(key, "cannot update a running operation")
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
            if not changed:
                return op.copy()
            records = [
                ChangeRecord(field=name, old_value=getattr(op, name), new_value=getattr(candidate, name))
                for name in changed
            ]
            if "dependencies" in changed:
                self._unindex_dependencies(op)
            for name in changed:
                setattr(op, name, getattr(candidate, name))
            if "dependencies" in changed:
                self._index_dependencies(op)
            if self._queue.is_queued(op.id):
                if _SORT_FIELDS.intersection(changed):
                    self._queue.rekey(op.id)
                if _RELEASE_FIELDS.intersection(changed):
                    self._queue.unpark_operation(op.id)  # re-checked on the next pass
            elif "timeout_seconds" in changed and op.start_time is not None:
                self._schedule_timeout(op)
            request = self._start_request
            if request is not None and request.operation is op:
                request.changed = True  # what was approved is not what would start
            self._emit(EventType.OPERATION_UPDATED, op, records, meta_data)
            self._advance()
            return op.copy()

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
        timed out.
        """
        with self._lock:
            request = self._desk.decide(request_id, accepted, reasoning, data)
            if request is self._start_request:
                self._advance()

    # ================================================================== signals
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
        with self._lock:
            self._queue.unpark(f"release_condition:{signal.name}")
            self._advance()

    # ================================================================== dispatcher runtime
    def pause_dispatcher_runtime(self) -> bool:
        """Stop starting new operations (the current one is left alone); False if already paused."""
        with self._lock:
            return self._set_paused(True)

    def resume_dispatcher_runtime(self) -> bool:
        """Start operations again; clears every retry count and cooldown. False if not paused."""
        with self._lock:
            self._retry.clear_all()
            self._queue.unpark("cooldown")
            changed = self._set_paused(False)
            self._advance()
            return changed

    def _set_paused(self, paused: bool) -> bool:
        if self._paused == paused:
            return False
        self._paused = paused
        self._emit(
            EventType.OPERATION_DISPATCHER_PAUSED if paused
            else EventType.OPERATION_DISPATCHER_RESUMED
        )
        return True

    def step_dispatch(self) -> Operation | None:
        """One dispatch attempt in the caller's thread (only while the loop is not running).

        Asks to start the best eligible operation and waits for the answer; returns a snapshot
        of the operation it started, or None.
        """
        with self._cond:
            if self._loop_active:
                raise RuntimeError("step_dispatch cannot be used while the dispatcher loop runs")
            self._last_started = None
            self._step_locked()
            while self._start_request is not None:
                request = self._start_request
                self._desk.wait(request)
                self._conclude_start(request)
            started, self._last_started = self._last_started, None
            return None if started is None else started.copy()

    def run(self) -> None:
        """Run the dispatcher loop in the calling thread until :meth:`request_stop`."""
        self._run(None)

    def _run(self, ready: threading.Event | None) -> None:
        with self._cond:
            if self._loop_active:
                raise RuntimeError("operation dispatcher is already running")
            self._loop_active = True
            self._running_since = utcnow()
            self._running_since_mono = time.monotonic()
            self._emit(EventType.OPERATION_DISPATCHER_STARTED)
            if self._paused:
                self._emit(EventType.OPERATION_DISPATCHER_PAUSED)
        if ready is not None:
            ready.set()
        try:
            with self._cond:
                while not self._stop_requested:
                    try:
                        timeout = self._step_locked()
                    except Exception:
                        # A bug must not kill the dispatcher thread; retry soon, loudly.
                        self._log.exception("dispatcher step failed; retrying")
                        timeout = 1.0
                    if self._stop_requested:
                        break
                    self._loop_wakes_at = (
                        float("inf") if timeout is None else time.monotonic() + timeout
                    )
                    self._cond.wait(timeout)
                    self._loop_wakes_at = 0.0
        finally:
            with self._cond:
                self._stop_requested = False
                self._loop_active = False
                self._running_since = None
                self._emit(EventType.OPERATION_DISPATCHER_STOPPED)
                self._cond.notify_all()  # stop() may be waiting for this loop to end

    def start(self) -> None:
        """Run the loop on a named background thread; returns once the loop is running."""
        with self._lock:
            if self._loop_active or (self._thread is not None and self._thread.is_alive()):
                raise RuntimeError("operation dispatcher is already running")
            ready = threading.Event()

            def run_then_signal() -> None:
                try:
                    self._run(ready)
                finally:
                    ready.set()  # also when _run refused to start: start() must not hang

            thread = threading.Thread(
                target=run_then_signal,
                name=f"operation-dispatcher[{self._resource_id}]", daemon=True,
            )
            self._thread = thread
            thread.start()
        ready.wait()
        if not thread.is_alive() and not self._loop_active:
            raise RuntimeError("operation dispatcher is already running")

    def request_stop(self) -> None:
        """Ask the loop to stop; also honoured by a ``run()`` that has not begun yet."""
        with self._cond:
            self._stop_requested = True
            self._cond.notify_all()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the loop and every thread the dispatcher started, and wait for them.

        Events already emitted are delivered first. Raises ThreadDidNotStop naming a thread still
        alive after ``timeout``. A request callback stuck in user code cannot be interrupted: it
        is logged and abandoned (its worker is a daemon thread).
        """
        deadline = None if timeout is None else time.monotonic() + timeout

        def remaining() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        self.request_stop()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(remaining())
            if thread.is_alive():
                raise ThreadDidNotStop(thread.name, timeout)
        with self._cond:
            # a run() in another caller's thread: wait for it to leave the loop
            while self._loop_active and threading.current_thread() is not thread:
                if not self._cond.wait(remaining()) and deadline is not None:
                    if time.monotonic() >= deadline:
                        raise ThreadDidNotStop("dispatcher run() caller", timeout)
            self._stop_requested = False
            self._thread = None
        bus_thread = self._bus.thread
        if not self._bus.stop(remaining() if deadline is not None else 10.0):
            raise ThreadDidNotStop(bus_thread.name if bus_thread else "events", timeout)
        self._callbacks.stop(min(remaining() or 1.0, 1.0))

    def __enter__(self) -> OperationDispatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"<OperationDispatcher {self._resource_id!r} running={self._loop_active} "
            f"paused={self._paused} queued={len(self._queue)}>"
        )


def _require(ok: bool, field_name: str, reason: str) -> None:
    if not ok:
        raise ValidationError(field_name, reason)


__all__ = ["OperationDispatcher"]

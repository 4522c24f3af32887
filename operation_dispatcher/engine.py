"""DispatchEngine: which queued operation may start now, and starting and finishing them.

It decides eligibility (release date, release conditions, dependencies, the executor's online
signal, cooldowns), parks what cannot start, asks to start the best operation that can (through
the :class:`~.handshake.Handshake`), starts exactly the approved one, and finishes operations,
failing their dependents when they failed. It owns the open start request and the executor
gate; the queue, deadlines, handshake, lifecycle and dependency index are parts it is given.
Every method expects the dispatcher lock to be held; it starts no thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from .approvals import ApprovalRequest, RequestKind
from .deadlines import Deadlines
from .dependencies import DependencyIndex
from .errors import OperationNotCurrent, RunByExecutor
from .handshake import Handshake
from .keys import Blocker, DeadlineKind, DependencyStatus
from .lifecycle import OperationLifecycle
from .models import (
    EventType,
    ExecutionOutcome,
    ExecutionState,
    Operation,
    OperationProgress,
    TerminationReason,
    utcnow,
)
from .progress import ProgressThrottle
from .queue import DispatchQueue
from .runstate import LoopState, PauseSwitch
from .signals import Signal, SignalBoard
from .unit import UnitOfWork

_SORT_FIELDS = frozenset({"priority", "release_date", "created_at"})
_RELEASE_FIELDS = frozenset({"release_date", "release_conditions", "dependencies"})
#: start requests answered at once (an approval policy's "deny") acted on in one pass at most
_ANSWERED_AT_ONCE = 16


class DispatchEngine:
    """The dispatch decisions of one resource (see the module docstring). Lock held."""

    def __init__(
        self,
        *,
        queue: DispatchQueue,
        deadlines: Deadlines,
        handshake: Handshake,
        lifecycle: OperationLifecycle,
        dependencies: DependencyIndex,
        signals: SignalBoard,
        unit: UnitOfWork,
        pause: PauseSwitch,
        loop: LoopState,
        wake: threading.Condition,
        strict: bool,
        log: logging.Logger,
    ) -> None:
        self._queue = queue
        self._deadlines = deadlines
        self._handshake = handshake
        self._lifecycle = lifecycle
        self._deps = dependencies
        self._signals = signals
        self._unit = unit
        self._pause = pause
        self._loop = loop
        self._wake = wake  # the loop thread sleeps on it
        self._strict = strict
        self._log = log
        self.start_request: ApprovalRequest | None = None
        self._last_started: Operation | None = None
        #: the one bridge that runs this resource's jobs and the signal that says it is online
        self.executor: str | None = None
        self._executor_gate: str | None = None
        #: the bridge that started the current operation (None: started without an executor);
        #: only it reports the operation's end, unless an operator forces it
        self.running_executor: str | None = None
        #: the rate limit of OPERATION_PROGRESS events (its clock may be replaced by tests)
        self.progress = ProgressThrottle()
        handshake.on_answer = self.answered

    # ------------------------------------------------------------------ adding
    def add(self, operations: list[Operation], meta_data: dict[str, Any] | None) -> None:
        """Queue checked copies, all or none (raises before anything changes), and say so."""
        self._queue.add_many(operations)
        for op in operations:
            self._deps.add(op)
            self._unit.emit(EventType.OPERATION_ADDED, op, meta_data=meta_data)

    def forgive_denials(self) -> None:
        """Forget every denial count and cooldown (the operator resumed the dispatcher)."""
        self._handshake.retry.clear_all()
        self._queue.unpark(Blocker.COOLDOWN)

    # ------------------------------------------------------------------ eligibility
    def blockers(self, op: Operation) -> tuple[list[str], UUID | None]:
        """What keeps a queued operation from starting now, and a provider that failed it."""
        blockers: list[str] = []
        if op.release_date is not None and op.release_date > utcnow():
            blockers.append(Blocker.RELEASE_DATE)
        for name, required in op.release_conditions.items():
            if not self._signals.holds(name, required):
                blockers.append(Blocker.condition(name))
        for dep in op.dependencies:
            status = self._deps.status(dep)
            if status is DependencyStatus.FAILED:
                return blockers, dep.depends_on_operation_id
            if status is DependencyStatus.WAIT:
                blockers.append(Blocker.dependency(dep.depends_on_operation_id))
        gate = self._executor_gate
        if gate is not None and not self._signals.holds(gate, True, expiring=True):
            blocker = Blocker.condition(gate)
            if blocker not in blockers:
                blockers.append(blocker)  # nothing is sent to an executor that is offline
        if self._handshake.retry.cooldown_remaining(RequestKind.START, op.id) > 0:
            blockers.append(Blocker.COOLDOWN)
        return blockers, None

    def why_waiting(self, op: Operation) -> list[str]:
        """Everything that keeps ``op`` from running now, as ``explain`` reports it."""
        if op.state is not ExecutionState.QUEUED:
            return []
        blocked, failed = self.blockers(op)
        if failed is not None:
            blocked.append(Blocker.dependency(failed))
        request = self.start_request
        if request is not None and request.operation.id == op.id:
            blocked.append(Blocker.AWAITING_APPROVAL)
        elif request is not None or self._queue.pulled_operation is not None:
            blocked.append(Blocker.RESOURCE_BUSY)
        if self._pause.is_set:
            blocked.append(Blocker.DISPATCHER_PAUSED)
        if not self._loop.active:
            blocked.append(Blocker.DISPATCHER_NOT_RUNNING)
        return [str(b) for b in blocked]

    def waiting_facts(
        self, op: Operation, blocked: list[str], find: Callable[[UUID], Operation | None]
    ) -> list[dict[str, Any]]:
        """Copies of what each of ``blocked`` waits on (see :func:`.reasons.collect`)."""
        from . import reasons  # only explain() needs it: not loaded with the package

        return reasons.collect(
            op, blocked, signals=self._signals, find=find, why_waiting=self.why_waiting,
            retry=self._handshake.retry, request=self.start_request,
            current=self._queue.pulled_operation, executor=self.executor,
            executor_signal=self._executor_gate, paused_since=self._pause.since,
        )

    def _schedule_unpark(self, op: Operation, blockers: list[str]) -> None:
        """Ask to be woken when a time-based blocker of ``op`` runs out."""
        now = time.monotonic()
        if Blocker.RELEASE_DATE in blockers and op.release_date is not None:
            delay = (op.release_date - utcnow()).total_seconds()
            self._deadlines.push(now + max(delay, 0.0), DeadlineKind.UNPARK, op.id)
        if Blocker.COOLDOWN in blockers:
            delay = self._handshake.retry.cooldown_remaining(RequestKind.START, op.id)
            self._deadlines.push(now + delay, DeadlineKind.UNPARK, op.id)

    # ------------------------------------------------------------------ the dispatch step
    def step(self) -> float | None:
        """One pass: act on what is due, start what can start. Returns how long the loop may
        sleep (None: until woken)."""
        if self._unit.broken is not None:
            return None  # memory may disagree with the journal: start nothing
        for kind, key in self._deadlines.pop_due():
            self._on_deadline(kind, key)
        request = self.start_request
        if request is not None and not request.is_pending:
            self.conclude_start(request)
        for _ in range(_ANSWERED_AT_ONCE):
            if (
                self._pause.is_set
                or self.start_request is not None
                or self._queue.pulled_operation is not None
                or self._loop.stop_requested
            ):
                break
            self._try_start()
            request = self.start_request
            if request is None or request.is_pending:
                break
            # Answered at once (no request callback, or the approval policy denied it): act on
            # it now, since its notify came before this thread waits and would otherwise be
            # lost; after a denial, ask about whatever is best now (the denied one cools down).
            self.conclude_start(request)
        else:  # denied at once again and again (no cooldown): go on after a breath, unlocked
            return 0.0
        return self._deadlines.seconds_until_next()

    def advance(self) -> None:
        """Run a dispatch step in the calling thread, right after it changed something.

        Whoever completes, adds, decides or flips a signal also does the dispatching that
        follows from it; that saves a hand-off to the loop thread per operation. The loop
        thread is woken only when a deadline now falls before it would wake by itself.
        """
        loop = self._loop
        if not loop.active or loop.stop_requested:
            return
        wait = self.step()
        if wait is not None and time.monotonic() + wait < loop.wakes_at:
            self._wake.notify()

    def answered(self, request: ApprovalRequest) -> None:
        """A request was answered (callback or decide()): if it is the start request, act on
        it here, in the answering thread: no hand-off to the dispatcher thread."""
        if request is self.start_request:
            self.advance()

    def step_once(self, await_decision: Callable[[ApprovalRequest], None]) -> Operation | None:
        """One dispatch attempt without the loop: ask, wait for the answer, start if approved;
        the operation started, or None."""
        self._last_started = None
        self.step()
        while self.start_request is not None:
            request = self.start_request
            await_decision(request)
            self.conclude_start(request)
        started, self._last_started = self._last_started, None
        return started

    def attach_executor(self, name: str, gate: str) -> None:
        """From now on every start needs signal ``gate`` to be a fresh True with a max age."""
        self.executor, self._executor_gate = name, gate

    def detach_executor(self, name: str) -> bool:
        """Starts are no longer gated on ``name``'s signal; False if it was not attached."""
        if self.executor != name:
            return False
        gate, self.executor, self._executor_gate = self._executor_gate, None, None
        if gate is not None:
            self._queue.unpark(Blocker.condition(gate))
        return True

    def on_signal(self, signal: Signal) -> None:
        with self._unit:
            self._queue.unpark(Blocker.condition(signal.name))
            self.advance()

    def _on_deadline(self, kind: DeadlineKind, key: Any) -> None:
        if kind is DeadlineKind.UNPARK:
            self._queue.unpark_operation(key)
        elif kind is DeadlineKind.REQUEST:
            if self._handshake.desk.expire(key):
                self._log.warning(
                    "%s request for operation %s: %s",
                    key.kind.value, key.operation.id, key.decision.data["error"],
                )
        elif kind is DeadlineKind.PROGRESS:
            op = self._queue.pulled_operation
            if op is not None and op.id == key and self.progress.take_held(key):
                self._emit_progress(op)
        elif kind is DeadlineKind.TIMEOUT:
            op = self._queue.pulled_operation
            if op is not None and op.id == key and op.timeout_seconds is not None:
                self.finish(
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
            blockers, failed_provider = self.blockers(op)
            if failed_provider is not None:
                self.fail_dependents_of(failed_provider, only={op.id})
                continue
            if not blockers:
                request = self._handshake.open(RequestKind.START, op, None)
                self.start_request = request
                if request.is_pending and request.deadline is not None:
                    self._deadlines.push(request.deadline, DeadlineKind.REQUEST, request)
                return
            self._schedule_unpark(op, blockers)
            if self._strict and not all(Blocker.is_dependency(b) for b in blockers):
                return  # the original's strict head order: wait for the head
            self._queue.park(op.id, blockers)

    # ------------------------------------------------------------------ starting
    def conclude_start(self, request: ApprovalRequest) -> None:
        """Act on the answer to the start request: start exactly the approved operation, or
        count the denial; an approval is void if the operation changed or cannot start now."""
        self.start_request = None
        self._handshake.desk.close(request)
        self._deadlines.discard(DeadlineKind.REQUEST, request)
        decision = request.decision
        assert decision is not None
        op = self._queue.get(request.operation.id)
        if request.withdrawn:  # the dispatcher closed it itself: nobody denied anything
            self._handshake.record(request, decision.data.get("error"))
            return
        if decision.accepted is not True:  # only the real True starts a machine
            self._handshake.record(request)
            self._handshake.deny(request, op)
            return
        self._handshake.retry.clear(RequestKind.START, request.operation.id)
        void = self._void_reason(request, op)
        self._handshake.record(request, void)
        if void is not None:
            self._log.info("approval to start %s is void: %s", request.operation.id, void)
            return
        assert op is not None
        self._queue.pull(op.id)
        changes = self._lifecycle.fire(op, "start")
        # the journal keeps who runs it: after a crash that executor re-attaches to it
        meta = None if self.executor is None else {"executor": self.executor}
        self.running_executor = self.executor
        self._unit.emit(EventType.OPERATION_STARTED, op, changes, meta)
        self._last_started = op
        self.schedule_timeout(op)
        if self._queue.has_parked:  # START_TO_START dependents may go now
            self._queue.unpark(Blocker.dependency(op.id))

    def _void_reason(self, request: ApprovalRequest, op: Operation | None) -> str | None:
        if op is None or not self._queue.is_queued(op.id):
            return "operation is no longer queued"
        if request.changed:
            return "operation changed while the request was open"
        if self._pause.is_set:
            return "dispatcher was paused while the request was open"
        blockers, failed = self.blockers(op)
        if blockers or failed is not None:
            return f"operation is no longer ready: {', '.join(blockers) or 'dependency failed'}"
        return None

    def schedule_timeout(self, op: Operation) -> None:
        """Wake at start_time + timeout_seconds to fail the operation if it still runs."""
        self._deadlines.discard(DeadlineKind.TIMEOUT, op.id)
        if op.timeout_seconds is None or op.start_time is None:
            return
        left = op.timeout_seconds - (utcnow() - op.start_time).total_seconds()
        self._deadlines.push(time.monotonic() + max(left, 0.0), DeadlineKind.TIMEOUT, op.id)

    def current(self, operation_id: UUID) -> Operation:
        op = self._queue.pulled_operation
        if op is None:
            raise OperationNotCurrent("no current operation", operation_id)
        if op.id != operation_id:
            raise OperationNotCurrent("operation is not current", operation_id)
        return op

    def finisher_meta(
        self, op: Operation, meta_data: dict[str, Any] | None, force: bool, executor: str | None
    ) -> dict[str, Any] | None:
        """The meta_data of a complete or fail of the current ``op`` by ``executor`` (None: a
        person or program, not a bridge); raises RunByExecutor when a bridge runs ``op`` and
        someone else finishes it without ``force``. A forced finish says so in its event: the
        device may still be running the job."""
        runner = self.running_executor
        if runner is None or runner == executor:
            return meta_data
        if not force:
            raise RunByExecutor(op.id, runner)
        self._log.warning(
            "operation %s finished by hand although executor %r runs it (force)", op.id, runner
        )
        return {**(meta_data or {}), "forced_by_operator": True, "executor": runner}

    def update(self, op: Operation, candidate: Operation, changed: list[str]) -> None:
        """Take the ``changed`` fields of ``candidate`` into ``op``, then re-place, re-check and
        re-time it; an open approval for it is void (what was approved would not start)."""
        if "dependencies" in changed:
            self._deps.remove(op)
        for name in changed:
            setattr(op, name, getattr(candidate, name))
        if "dependencies" in changed:
            self._deps.add(op)
        if self._queue.is_queued(op.id):
            if _SORT_FIELDS.intersection(changed):
                self._queue.rekey(op.id)
            if _RELEASE_FIELDS.intersection(changed):
                self._queue.unpark_operation(op.id)  # re-checked on the next pass
        elif "timeout_seconds" in changed and op.start_time is not None:
            self.schedule_timeout(op)
        self._withdraw_start(op, "operation changed while the request was open")

    def _withdraw_start(self, op: Operation, why: str) -> None:
        """Void the open start request of ``op``: at once when it waits for an operator (who
        may never answer; the dispatcher asks again about whatever is best now), else when
        the answer comes."""
        request = self.start_request
        if request is None or request.operation is not op:
            return
        request.changed = True
        if request.by_operator and self._handshake.desk.withdraw(request, why):
            self.conclude_start(request)

    def transition(
        self, op: Operation, trigger: str, event_type: EventType, meta: dict[str, Any] | None
    ) -> None:
        """Pause or resume the current operation (already approved) and say so."""
        changes = self._lifecycle.fire(op, trigger)
        self._unit.emit(event_type, op, changes, meta)

    # ------------------------------------------------------------------ progress
    def report_progress(self, op: Operation, fraction: float | None, message: str | None) -> None:
        """The current operation's latest progress (checked values); its event now, or once
        the rate limit allows (see :mod:`~.progress`)."""
        op.progress = OperationProgress(fraction=fraction, message=message)
        due = self.progress.offer(op.id)
        if due is None:
            self._deadlines.discard(DeadlineKind.PROGRESS, op.id)
            self._emit_progress(op)
        else:
            self._deadlines.push(due, DeadlineKind.PROGRESS, op.id)

    def _emit_progress(self, op: Operation) -> None:
        progress = op.progress
        assert progress is not None
        self._unit.emit(
            EventType.OPERATION_PROGRESS, op,
            meta_data={"fraction": progress.fraction, "message": progress.message},
        )

    def flush_progress(self) -> None:
        """Emit the held progress report now (the dispatcher stops: journal the latest).

        Only the current operation takes reports, and :meth:`finish` drops its held one, so
        no other operation can have one here.
        """
        op = self._queue.pulled_operation
        if op is not None and self.progress.take_held(op.id):
            self._deadlines.discard(DeadlineKind.PROGRESS, op.id)
            self._emit_progress(op)

    # ------------------------------------------------------------------ finishing
    def finish(
        self,
        op: Operation,
        trigger: str,
        event_type: EventType,
        reason: TerminationReason | None,
        meta_data: dict[str, Any] | None,
        cascade: bool = True,
    ) -> None:
        """Complete, fail or cancel ``op`` (current or queued) and archive it."""
        if op.progress is not None:  # its last report is not lost: emitted before the end
            if self.progress.take_held(op.id):
                self._emit_progress(op)
            self.progress.forget(op.id)
            self._deadlines.discard(DeadlineKind.PROGRESS, op.id)
        changes = self._lifecycle.fire(op, trigger, termination_reason=reason)
        why = f"operation ended {op.outcome.value} while the request was open"
        self._withdraw_start(op, why)
        if self._queue.pulled_operation is op:
            self._queue.release_pulled()
            self.running_executor = None
            self._deadlines.discard(DeadlineKind.TIMEOUT, op.id)
        else:
            self._queue.remove(op.id)
            self._deadlines.discard(DeadlineKind.UNPARK, op.id)
        self._queue.archive(op)
        self._unit.emit(event_type, op, changes, meta_data)
        self._handshake.retry.clear_operation(op.id)
        self._deps.remove(op)
        if op.outcome is ExecutionOutcome.SUCCESS:
            self._deps.forget(op.id)
            if self._queue.has_parked:  # (a str(UUID) saved per operation when none is)
                self._queue.unpark(Blocker.dependency(op.id))
        elif cascade:
            self.fail_dependents_of(op.id)

    def fail_dependents_of(self, provider_id: UUID, only: set[UUID] | None = None) -> None:
        """Fail (DEPENDENCY_FAILED) every queued operation a failed provider holds up.

        A worklist rather than recursion, so a long chain of dependents cannot overflow the stack.
        """
        work = [provider_id]
        while work:
            failed = work.pop()
            candidates = self._deps.dependents_of(failed) if only is None else set(only)
            only = None
            for dependent_id in candidates:
                dependent = self._queue.get(dependent_id)
                if dependent is None or not self._queue.is_queued(dependent_id):
                    continue
                if not any(
                    d.depends_on_operation_id == failed
                    and self._deps.status(d) is DependencyStatus.FAILED
                    for d in dependent.dependencies
                ):
                    continue
                self.finish(
                    dependent, "fail", EventType.OPERATION_FAILED,
                    TerminationReason.DEPENDENCY_FAILED, {"dependency": str(failed)},
                    cascade=False,
                )
                work.append(dependent_id)  # its own dependents fail next, on this worklist
            self._deps.forget(failed)

    def reset(self) -> None:
        """Forget the open start request and every deadline (the state is being reloaded)."""
        self.start_request = None
        self.running_executor = None
        self._deadlines.clear()
        self.progress.clear()


__all__ = ["DispatchEngine"]

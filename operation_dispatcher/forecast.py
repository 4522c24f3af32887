"""Forecast: when each queued operation is expected to start and end, or what keeps that unknown.

An operator wants to know what comes next and whether a job will be late; a made-up time for a
job that waits on a sensor is worse than none. So the forecast is a small simulation of the
dispatcher's own rules on a *snapshot*, and says "unknown, because X" wherever the future depends
on something that time alone does not bring.

The dispatcher copies what the simulation needs under its lock (:func:`take_snapshot`, a read
only: no payloads, no events) and computes outside it (:func:`forecast_operations`, a pure
function of the snapshot and ``now``, so tests pass fixed times).

The model and its assumptions:

* **One resource.** Operations run one at a time, in the order the dispatcher itself would
  start them: at each moment the resource is free, the first operation in dispatch order that
  may start then starts (with ``strict_order``: the head of the queue, which nothing passes,
  except that operations waiting for a provider are set aside as the dispatcher does). Every
  start is assumed to be approved at once.
* **The running operation** ends at ``start_time + planned_duration``; one that has run longer
  than planned is taken to end *now* (``overrun`` is true): the forecast does not guess how
  late. Time it spent paused earlier is not added. A **paused** current operation has no
  expected end (``blocked_by`` is ``operation_paused``): its end waits for a resume.
* **Durations** are ``planned_duration`` seconds (the dispatcher's ``default_planned_duration``
  is applied when an operation is added). An operation without one gets a start but no end,
  and nothing can be forecast to start after it: the operations behind it are
  ``blocked_by: "operation:ID"``. No default is invented here.
* **Time-based waits are forecast:** ``release_date``, a start cooldown after a denial, and
  dependencies on operations the forecast places (FINISH_TO_START: from the provider's end;
  START_TO_START: from its start).
* **Waits that time alone does not end are not:** a release condition that does not hold now
  (signals are assumed to keep their present values; the executor's online signal included)
  ``release_condition:NAME``; a start awaiting an approval ``awaiting_approval`` (nothing else
  starts until it is answered: the others wait on ``operation:ID``); a dependency on a provider
  that failed, or whose start or end is itself unknown, ``dependency:ID``; the dispatcher
  paused ``dispatcher_paused`` or not running ``dispatcher_not_running`` (for every queued
  operation; the current one still gets its expected end).
* **Overtaking.** Without ``strict_order`` an operation blocked on a condition is passed by the
  ones behind it, which are forecast as if it stayed blocked; with ``strict_order`` a blocked
  head holds everything behind it (``operation:HEAD_ID``).
* ``misses_due_date`` is true when the expected end is after ``due_date``, or when even the
  earliest possible end is (a due date already past, or a known start after it); false when
  the expected end is known and not after it; null otherwise (no due date, or unknown).
* Times beyond the calendar (year 9999) are unknown (``operation:ID`` for what follows).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from ._checks import to_utc
from .approvals import RequestKind
from .keys import Blocker
from .models import DependencyType, ExecutionState, Operation, format_datetime

if TYPE_CHECKING:
    from .engine import DispatchEngine
    from .handshake import Handshake
    from .queue import DispatchQueue

#: ``blocked_by`` of the paused current operation (its end waits for a resume).
OPERATION_PAUSED = "operation_paused"
_CONDITION = Blocker.condition("")
_OPERATION = "operation:"
_DAWN = datetime.min.replace(tzinfo=UTC)  # "no earlier than": any time


# ------------------------------------------------------------------------------- snapshot


@dataclass(slots=True)
class PlannedOperation:
    """What the forecast needs of one operation, copied under the dispatcher lock.

    :param waits_for: the dependencies not met yet (provider id, type).
    :param conditions: the blockers that no time ends, as ``explain`` names them
        (``release_condition:NAME`` for each release condition that does not hold now).
    :param failed_provider: a provider that failed or was cancelled: this one never starts.
    :param awaiting_approval: its start request waits for an answer.
    :param cooldown_until: no start request before this (after a denial).
    """

    id: UUID
    state: ExecutionState = ExecutionState.QUEUED
    job_id: str | None = None
    planned_duration: float | None = None
    release_date: datetime | None = None
    due_date: datetime | None = None
    start_time: datetime | None = None
    waits_for: tuple[tuple[UUID, DependencyType], ...] = ()
    conditions: tuple[str, ...] = ()
    failed_provider: UUID | None = None
    awaiting_approval: bool = False
    cooldown_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class ForecastSnapshot:
    """The dispatcher's state as far as the forecast goes; ``queued`` is in dispatch order."""

    current: PlannedOperation | None = None
    queued: tuple[PlannedOperation, ...] = ()
    strict_order: bool = False
    paused: bool = False
    running: bool = True


def take_snapshot(
    queue: DispatchQueue,
    engine: DispatchEngine,
    handshake: Handshake,
    *,
    strict_order: bool,
    paused: bool,
    running: bool,
    now: datetime,
) -> ForecastSnapshot:
    """Copy what the forecast needs, as of ``now`` (the moment the forecast is for, so a
    cooldown's end is on the same clock); the caller holds the dispatcher lock (a read only)."""
    request = engine.start_request
    asking = request.operation.id if request is not None and request.is_pending else None
    cooldown_of = handshake.retry.cooldown_remaining
    # what blocks every operation alike (the executor's online signal), asked once: most
    # operations have no condition or dependency of their own, and need nothing more
    common = tuple(engine.blockers(Operation(resource_id=queue.resource_id))[0])
    queued = []
    for op in queue.list():
        if op.release_conditions or op.dependencies:
            blockers, failed = engine.blockers(op)
            conditions = tuple(b for b in blockers if b.startswith(_CONDITION))
            waits_for = tuple(
                (dep.depends_on_operation_id, dep.dependency_type) for dep in op.dependencies
                if Blocker.dependency(dep.depends_on_operation_id) in blockers
            )
        else:
            conditions, waits_for, failed = common, (), None
        cooldown = cooldown_of(RequestKind.START, op.id)
        queued.append(PlannedOperation(
            op.id, op.state, op.job_id, op.planned_duration, op.release_date, op.due_date,
            op.start_time, waits_for, conditions, failed, op.id == asking,
            now + timedelta(seconds=cooldown) if cooldown > 0 else None,
        ))
    current = queue.pulled_operation
    return ForecastSnapshot(
        current=None if current is None else PlannedOperation(
            current.id, current.state, current.job_id, current.planned_duration,
            current.release_date, current.due_date, current.start_time,
        ),
        queued=tuple(queued), strict_order=strict_order, paused=paused, running=running,
    )


# ------------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class ForecastEntry:
    """The forecast of one operation (``to_dict()`` is its ``GET /forecast`` form).

    ``blocked_by`` names what makes ``expected_start`` unknown (for the paused current
    operation: its end); it is None when the start is known. ``expected_end`` None with
    ``blocked_by`` None means the operation has no ``planned_duration``.
    """

    operation_id: UUID
    job_id: str | None
    state: ExecutionState
    expected_start: datetime | None
    expected_end: datetime | None
    blocked_by: str | None
    misses_due_date: bool | None
    due_date: datetime | None
    overrun: bool = False

    def to_dict(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return None if value is None else format_datetime(value)

        return {
            "operation_id": str(self.operation_id),
            "job_id": self.job_id,
            "state": self.state.value,
            "expected_start": iso(self.expected_start),
            "expected_end": iso(self.expected_end),
            "blocked_by": self.blocked_by,
            "misses_due_date": self.misses_due_date,
            "due_date": iso(self.due_date),
            "overrun": self.overrun,
        }


@dataclass(slots=True)
class _Plan:
    start: datetime | None = None
    end: datetime | None = None
    blocked_by: str | None = None
    overrun: bool = False


class _Queue:
    """The operations still to place, in dispatch order, and where each stands.

    ``gated``: (moment, position) of operations free of providers, not to start before that
    moment (without strict order: release date, cooldown and providers; with it: providers
    only, since the head waits for its own release date); ``ready``: positions that may start
    now, a heap, so the first in dispatch order comes out first. O(n log n) in all.
    """

    def __init__(self, pending: list[PlannedOperation], strict: bool) -> None:
        self.pending = pending
        self.strict = strict
        self.position = {op.id: index for index, op in enumerate(pending)}
        self.missing = [0] * len(pending)
        self.dep_at: list[datetime | None] = [None] * len(pending)
        self.dependents: dict[UUID, list[tuple[int, DependencyType]]] = {}
        self.gated: list[tuple[datetime, int]] = []
        self.ready: list[int] = []

    def release(self, position: int) -> None:
        """Every provider of this operation is placed: it may start from some moment on."""
        op = self.pending[position]
        if self.strict:
            moment = self.dep_at[position]
        else:
            moment = _latest_or_none(self.dep_at[position], op.release_date, op.cooldown_until)
        heapq.heappush(self.gated, (moment or _DAWN, position))


@dataclass(slots=True)
class _Simulation:
    snapshot: ForecastSnapshot
    now: datetime
    plans: dict[UUID, _Plan] = field(default_factory=dict)
    #: when the resource is next free; None: unknown, because of ``stall``
    free_at: datetime | None = None
    stall: str | None = None

    def run(self) -> list[ForecastEntry]:
        snap = self.snapshot
        self.free_at = self.now
        if snap.current is not None:
            self._place_current(snap.current)
        held = _dispatcher_blocker(snap)
        if held is not None:
            for op in snap.queued:
                self.plans[op.id] = _Plan(blocked_by=held)
        else:
            self._place_queue(list(snap.queued))
        ops = ([snap.current] if snap.current is not None else []) + list(snap.queued)
        return [self._entry(op) for op in ops]

    # ---------------------------------------------------------------- the current operation
    def _place_current(self, op: PlannedOperation) -> None:
        start = op.start_time or self.now
        if op.state is ExecutionState.PAUSED:
            self.plans[op.id] = _Plan(start=start, blocked_by=OPERATION_PAUSED)
            self._stall(op.id)
            return
        end = _plus(start, op.planned_duration)
        overrun = end is not None and end < self.now
        if overrun:
            end = self.now
        self.plans[op.id] = _Plan(start=start, end=end, overrun=overrun)
        if end is None:
            self._stall(op.id)
        else:
            self.free_at = max(end, self.now)

    def _stall(self, operation_id: UUID) -> None:
        self.free_at, self.stall = None, f"{_OPERATION}{operation_id}"

    # ---------------------------------------------------------------- the queue
    def _place_queue(self, ops: list[PlannedOperation]) -> None:
        strict = self.snapshot.strict_order
        pending: list[PlannedOperation] = []
        for op in ops:
            if op.failed_provider is not None:  # the dispatcher fails it: it never starts
                self.plans[op.id] = _Plan(blocked_by=Blocker.dependency(op.failed_provider))
            elif op.awaiting_approval:
                self.plans[op.id] = _Plan(blocked_by=str(Blocker.AWAITING_APPROVAL))
                self._stall(op.id)  # nothing else starts until it is answered
            elif op.conditions and not strict:
                self.plans[op.id] = _Plan(blocked_by=op.conditions[0])  # the others pass it
            else:
                pending.append(op)
        queue = _Queue(pending, strict)
        for position, op in enumerate(pending):
            self._link(queue, position, op)
        if strict:
            self._run_strict(queue)
        else:
            self._run_free(queue)
        for op in pending:
            if op.id not in self.plans:
                self.plans[op.id] = _Plan(blocked_by=self._label(op))

    def _link(self, queue: _Queue, position: int, op: PlannedOperation) -> None:
        """Note the providers ``op`` still waits for; release it at once if there are none."""
        for provider, kind in op.waits_for:
            if provider in queue.position:
                queue.missing[position] += 1
                queue.dependents.setdefault(provider, []).append((position, kind))
                continue
            # the current operation, or one left out above
            moment = _provider_moment(self.plans.get(provider), kind)
            if moment is None:  # never, as far as the forecast knows
                self.plans[op.id] = _Plan(blocked_by=Blocker.dependency(provider))
                return
            queue.dep_at[position] = _latest(moment, queue.dep_at[position])
        if queue.missing[position] == 0:
            queue.release(position)

    def _run_free(self, queue: _Queue) -> None:
        """Without strict order: the first operation in dispatch order that may start, starts."""
        while self.free_at is not None:
            t = self.free_at
            while queue.gated and queue.gated[0][0] <= t:
                heapq.heappush(queue.ready, heapq.heappop(queue.gated)[1])
            if queue.ready:
                self._start(queue, heapq.heappop(queue.ready), t)
            elif queue.gated:
                self.free_at = queue.gated[0][0]  # nothing may start before then
            else:
                return

    def _run_strict(self, queue: _Queue) -> None:
        """Strict order: the head waits for its release date and holds everything behind it;
        an operation waiting for a provider is set aside until the provider lets it go."""
        while self.free_at is not None:
            t = self.free_at
            while queue.gated and queue.gated[0][0] <= t:
                heapq.heappush(queue.ready, heapq.heappop(queue.gated)[1])
            if not queue.ready:
                if not queue.gated:
                    return
                self.free_at = queue.gated[0][0]
                continue
            head = queue.ready[0]
            op = queue.pending[head]
            if op.conditions:  # a blocked head holds the queue
                self.plans[op.id] = _Plan(blocked_by=op.conditions[0])
                self._stall(op.id)
                return
            start = _latest(t, op.release_date, op.cooldown_until)
            earlier = min(
                (when for when, position in queue.gated if position < head and when < start),
                default=None,
            )
            if earlier is not None:  # one before the head is let go first: it becomes the head
                self.free_at = earlier
                continue
            heapq.heappop(queue.ready)
            self._start(queue, head, start)

    def _start(self, queue: _Queue, position: int, start: datetime) -> None:
        op = queue.pending[position]
        end = _plus(start, op.planned_duration)
        plan = self.plans[op.id] = _Plan(start=start, end=end)
        for dependent, kind in queue.dependents.get(op.id, ()):
            moment = _provider_moment(plan, kind)
            if moment is None:
                continue  # the resource stalls on this one: labelled at the end
            queue.dep_at[dependent] = _latest(moment, queue.dep_at[dependent])
            queue.missing[dependent] -= 1
            if queue.missing[dependent] == 0 and queue.pending[dependent].id not in self.plans:
                queue.release(dependent)
        if end is None:
            self._stall(op.id)
        else:
            self.free_at = end

    def _label(self, op: PlannedOperation) -> str:
        """Why an operation left over has no start: its own blocker, a provider, or the stall."""
        if op.conditions:
            return op.conditions[0]
        for provider, kind in op.waits_for:
            if _provider_moment(self.plans.get(provider), kind) is None:
                return Blocker.dependency(provider)
        if self.stall is not None:
            return self.stall
        # the resource's time is known, yet it was not placed: its providers wait on each
        # other (the dispatcher refuses cycles, so this is a safety net)
        return Blocker.dependency(op.waits_for[0][0]) if op.waits_for else "unknown"

    # ---------------------------------------------------------------- results
    def _entry(self, op: PlannedOperation) -> ForecastEntry:
        plan = self.plans[op.id]
        return ForecastEntry(
            operation_id=op.id, job_id=op.job_id, state=op.state,
            expected_start=plan.start, expected_end=plan.end, blocked_by=plan.blocked_by,
            misses_due_date=_misses(op.due_date, plan, self.now), due_date=op.due_date,
            overrun=plan.overrun,
        )


def _dispatcher_blocker(snapshot: ForecastSnapshot) -> str | None:
    if not snapshot.running:
        return str(Blocker.DISPATCHER_NOT_RUNNING)
    if snapshot.paused:
        return str(Blocker.DISPATCHER_PAUSED)
    return None


def _provider_moment(plan: _Plan | None, kind: DependencyType) -> datetime | None:
    """When a provider lets its dependent go: its start (START_TO_START) or its end; None
    when that is unknown (or the provider is not placed)."""
    if plan is None:
        return None
    return plan.start if kind is DependencyType.START_TO_START else plan.end


def _plus(start: datetime, seconds: float | None) -> datetime | None:
    if seconds is None:
        return None
    try:
        return start + timedelta(seconds=seconds)
    except OverflowError:  # beyond year 9999
        return None


def _latest(first: datetime, *others: datetime | None) -> datetime:
    return max([first, *(o for o in others if o is not None)])


def _latest_or_none(*moments: datetime | None) -> datetime | None:
    return max((m for m in moments if m is not None), default=None)


def _misses(due: datetime | None, plan: _Plan, now: datetime) -> bool | None:
    if due is None:
        return None
    if plan.end is not None:
        return plan.end > due
    earliest = plan.start if plan.start is not None else now
    return True if earliest > due else None


def forecast_operations(snapshot: ForecastSnapshot, now: datetime) -> list[ForecastEntry]:
    """The forecast of ``snapshot`` as of ``now`` (see the module docstring for the model).

    The current operation comes first, then the queued ones in dispatch order.
    """
    return _Simulation(snapshot, to_utc(now, "now")).run()


__all__ = [
    "ForecastEntry",
    "ForecastSnapshot",
    "OPERATION_PAUSED",
    "PlannedOperation",
    "forecast_operations",
    "take_snapshot",
]

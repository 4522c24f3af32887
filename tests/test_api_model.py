"""Stateful property test: the public API of a dispatcher that is NOT started, against a model.

The dispatcher loop never runs; ``step_dispatch()`` starts operations synchronously in the test
thread. The request callback (when there is one) answers every request with a flag that a rule
sets, so denials, their per-(request kind, operation) counts and the pause after
``start_request_max_retries`` denials are all part of the model. On request, the callback also
changes the operation it is asked to start before it answers: that approval must be void. The
cooldown is 0, so nothing here depends on the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from conftest import RESOURCE as R
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from operation_dispatcher import (
    DispatchEvent,
    DuplicateOperation,
    EventType,
    ExecutionOutcome,
    ExecutionState,
    InvalidTransition,
    Operation,
    OperationDispatcher,
    OperationNotCurrent,
    OperationNotUpdatable,
    TerminationReason,
)

MAX_RETRIES = 2
# Fixed moments well in the past, so every release date is already due and only the sort key
# matters; few distinct values, so that ties (and the tie-breaks) are exercised.
PAST = datetime(2024, 1, 1, tzinfo=UTC)
CREATED = datetime(2025, 1, 1, tzinfo=UTC)

priorities = st.integers(min_value=-2, max_value=2)
release_dates = st.none() | st.integers(min_value=0, max_value=2).map(
    lambda s: PAST + timedelta(minutes=s)
)
created_ats = st.integers(min_value=0, max_value=3).map(lambda s: CREATED + timedelta(seconds=s))
op_specs = st.tuples(priorities, release_dates, created_ats)
reasons = st.sampled_from(
    [TerminationReason.INTERNAL_ERROR, TerminationReason.EXTERNAL_ERROR, TerminationReason.TIMEOUT]
)


@dataclass
class ModelOp:
    id: UUID
    seq: int  # insertion order: the last tie-break of the queue
    priority: int
    release_date: datetime | None
    created_at: datetime
    state: ExecutionState = ExecutionState.QUEUED
    outcome: ExecutionOutcome = ExecutionOutcome.NONE
    termination_reason: TerminationReason = TerminationReason.NONE
    started: bool = False

    def sort_key(self) -> tuple[float, int, datetime, int]:
        release = float("inf") if self.release_date is None else self.release_date.timestamp()
        return (release, -self.priority, self.created_at, self.seq)


class DispatcherVersusModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dispatcher: OperationDispatcher | None = None
        self.use_callback = False
        self.approve = True
        self.meddle = False  # the next start request: bump the priority, then answer
        self.ops: dict[UUID, ModelOp] = {}
        self.order: list[UUID] = []  # every known id, in insertion order
        self.current: UUID | None = None
        self.paused = False
        self.denials: dict[tuple[str, UUID], int] = {}
        self.asked: list[DispatchEvent] = []

    # ---------------------------------------------------------------------------- helpers
    @property
    def d(self) -> OperationDispatcher:
        assert self.dispatcher is not None
        return self.dispatcher

    def callback(self, event: DispatchEvent) -> bool:
        # Runs on a callback worker while step_dispatch() waits in the test thread.
        self.asked.append(event)
        if self.meddle and event.event_type is EventType.OPERATION_START_REQUESTED:
            self.meddle = False
            op = self.d.get_operation(event.operation_id)
            assert op is not None
            self.d.update_operation(op.id, {"priority": op.priority + 1})
        return self.approve

    def approves(self) -> bool:
        return not self.use_callback or self.approve

    def queued(self) -> list[ModelOp]:
        ops = [op for op in self.ops.values() if op.state is ExecutionState.QUEUED]
        return sorted(ops, key=ModelOp.sort_key)

    def pick(self, index: int) -> ModelOp:
        return self.ops[self.order[index % len(self.order)]]

    def denied(self, kind: str, op_id: UUID) -> None:
        """A denial as the dispatcher counts it: per (kind, operation), pausing at the max."""
        count = self.denials.get((kind, op_id), 0) + 1
        self.denials[(kind, op_id)] = count
        if count >= MAX_RETRIES:
            self.paused = True

    def finished(self, op: ModelOp, outcome: ExecutionOutcome, reason: TerminationReason) -> None:
        op.state = ExecutionState.COMPLETED
        op.outcome = outcome
        op.termination_reason = reason
        if self.current == op.id:
            self.current = None
        for kind in ("start", "cancel", "pause", "resume"):
            self.denials.pop((kind, op.id), None)

    # ------------------------------------------------------------------------------ rules
    @initialize(
        use_callback=st.booleans(),
        approve=st.booleans(),
        specs=st.lists(op_specs, min_size=1, max_size=6),
    )
    def make_dispatcher(
        self, use_callback: bool, approve: bool, specs: list[tuple[int, datetime | None, datetime]]
    ) -> None:
        self.use_callback = use_callback
        self.approve = approve
        self.dispatcher = OperationDispatcher(
            R,
            on_request_callback=self.callback if use_callback else None,
            start_request_max_retries=MAX_RETRIES,
            start_request_retry_cooldown_seconds=0,
        )
        self.add(specs, duplicate=False)

    def teardown(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.stop(timeout=10)

    @precondition(lambda self: self.use_callback)
    @rule(flag=st.booleans())
    def set_approval(self, flag: bool) -> None:
        self.approve = flag

    @precondition(lambda self: self.use_callback)
    @rule()
    def meddle_with_next_start(self) -> None:
        self.meddle = True

    @rule(
        specs=st.lists(op_specs, min_size=1, max_size=3),
        duplicate=st.sampled_from([False, False, False, True]),
    )
    def add(self, specs: list[tuple[int, datetime | None, datetime]], duplicate: bool) -> None:
        if duplicate and self.order:
            known = self.order[len(specs) % len(self.order)]
            with pytest.raises(DuplicateOperation):
                self.d.add_operation(Operation(id=known, resource_id=R))
        new = [
            Operation(resource_id=R, priority=p, release_date=r, created_at=c) for p, r, c in specs
        ]
        if len(new) == 1:
            stored = [self.d.add_operation(new[0])]
        else:
            stored = self.d.add_operations(new)
        for op, snapshot in zip(new, stored, strict=True):
            assert snapshot.id == op.id and snapshot is not op
            assert snapshot.state is ExecutionState.QUEUED
            self.ops[op.id] = ModelOp(
                op.id, len(self.order), op.priority, op.release_date, op.created_at
            )
            self.order.append(op.id)

    @rule()
    def step_dispatch(self) -> None:
        queued = self.queued()
        meddle = self.meddle  # the callback resets it when it meddles
        started = self.d.step_dispatch()
        if self.paused or self.current is not None or not queued:
            assert started is None
            return
        best = queued[0]
        if meddle:
            # the callback changed the operation while its start request was open
            assert not self.meddle
            best.priority += 1
            assert started is None
            if not self.approve:
                self.denied("start", best.id)
            else:  # an approval ends the run of denials, even one made void by the change
                self.denials.pop(("start", best.id), None)
            return  # an approval of the unchanged operation is void: nothing starts
        if not self.approves():
            assert started is None
            self.denied("start", best.id)
            return
        assert started is not None
        assert started.id == best.id
        assert started.state is ExecutionState.RUNNING
        assert started.start_time is not None
        best.state = ExecutionState.RUNNING
        best.started = True
        self.current = best.id
        self.denials.pop(("start", best.id), None)

    def refuse_non_current(self, index: int) -> None:
        """complete/fail of an operation that is not the current one raise, and change nothing."""
        if not self.order:
            return
        op = self.pick(index)
        if op.id == self.current:
            return
        with pytest.raises(OperationNotCurrent):
            self.d.complete_operation(op.id)
        with pytest.raises(OperationNotCurrent):
            self.d.fail_operation(op.id)

    @precondition(lambda self: self.current is not None)
    @rule(other=st.integers(min_value=0))
    def complete_current(self, other: int) -> None:
        self.refuse_non_current(other)
        op = self.ops[self.current]
        done = self.d.complete_operation(op.id)
        assert done.state is ExecutionState.COMPLETED
        assert done.outcome is ExecutionOutcome.SUCCESS
        self.finished(op, ExecutionOutcome.SUCCESS, TerminationReason.NONE)

    @precondition(lambda self: self.current is not None)
    @rule(reason=reasons, other=st.integers(min_value=0))
    def fail_current(self, reason: TerminationReason, other: int) -> None:
        self.refuse_non_current(other)
        op = self.ops[self.current]
        done = self.d.fail_operation(op.id, reason)
        assert done.outcome is ExecutionOutcome.FAILURE
        assert done.termination_reason is reason
        self.finished(op, ExecutionOutcome.FAILURE, reason)

    @precondition(lambda self: self.order)
    @rule(index=st.integers(min_value=0), reason=reasons, unknown=st.integers(0, 7))
    def cancel(self, index: int, reason: TerminationReason, unknown: int) -> None:
        if unknown == 0:
            assert self.d.cancel_operation(uuid4()) is None
        op = self.pick(index)
        result = self.d.cancel_operation(op.id, reason)
        if op.state is ExecutionState.COMPLETED:
            assert result is None
            return
        if not self.approves():
            assert result is None
            self.denied("cancel", op.id)
            return
        assert result is not None and result.id == op.id
        assert result.outcome is ExecutionOutcome.CANCELLED
        assert result.termination_reason is reason
        self.denials.pop(("cancel", op.id), None)
        self.finished(op, ExecutionOutcome.CANCELLED, reason)

    @precondition(lambda self: self.current is not None)
    @rule(wrong=st.integers(0, 4))
    def pause_or_resume_current(self, wrong: int) -> None:
        """Pause a RUNNING / resume a PAUSED current operation (now and then the wrong one)."""
        op = self.ops[self.current]
        pause = (op.state is ExecutionState.RUNNING) != (wrong == 0)
        if pause:
            kind, needed, after = "pause", ExecutionState.RUNNING, ExecutionState.PAUSED
            method = self.d.pause_operation
        else:
            kind, needed, after = "resume", ExecutionState.PAUSED, ExecutionState.RUNNING
            method = self.d.resume_operation
        if op.state is not needed:
            with pytest.raises(InvalidTransition):
                method(op.id)
            return
        if not self.approves():
            assert method(op.id) is False
            self.denied(kind, op.id)
            return
        assert method(op.id) is True
        op.state = after
        self.denials.pop((kind, op.id), None)

    @precondition(lambda self: self.current is None and self.order)
    @rule(index=st.integers(min_value=0), pause=st.booleans())
    def pause_or_resume_without_current(self, index: int, pause: bool) -> None:
        method = self.d.pause_operation if pause else self.d.resume_operation
        with pytest.raises(OperationNotCurrent):
            method(self.pick(index).id)

    @precondition(lambda self: self.order)
    @rule(index=st.integers(min_value=0), priority=priorities, unknown=st.integers(0, 7))
    def update_priority(self, index: int, priority: int, unknown: int) -> None:
        if unknown == 0:
            assert self.d.update_operation(uuid4(), {"priority": priority}) is None
        op = self.pick(index)
        if op.state in (ExecutionState.RUNNING, ExecutionState.COMPLETED):
            with pytest.raises(OperationNotUpdatable):
                self.d.update_operation(op.id, {"priority": priority})
            return
        updated = self.d.update_operation(op.id, {"priority": priority})
        assert updated is not None and updated.priority == priority
        op.priority = priority

    @rule(pause=st.sampled_from([True, False, False]))
    def pause_or_resume_dispatcher(self, pause: bool) -> None:
        if pause:
            assert self.d.pause_dispatcher_runtime() is (not self.paused)
            self.paused = True
        else:
            assert self.d.resume_dispatcher_runtime() is self.paused
            self.paused = False
            self.denials.clear()  # resuming the dispatcher forgets every retry count

    # ------------------------------------------------------------------------- invariants
    @invariant()
    def schedule_in_model_order(self) -> None:
        if self.dispatcher is None:
            return
        schedule = self.d.get_schedule()
        assert [op.id for op in schedule] == [op.id for op in self.queued()]
        assert len(schedule) == self.d.get_state().queue_size

    @invariant()
    def current_matches(self) -> None:
        if self.dispatcher is None:
            return
        current = self.d.current_operation
        if self.current is None:
            assert current is None
        else:
            assert current is not None and current.id == self.current
            assert current.state is self.ops[self.current].state
        state = self.d.get_state()
        assert state.is_paused is self.paused
        assert state.is_running is False
        assert (state.current_operation is None) is (self.current is None)

    @invariant()
    def operations_match(self) -> None:
        if self.dispatcher is None:
            return
        for op in self.ops.values():
            real = self.d.get_operation(op.id)
            assert real is not None
            assert (real.state, real.outcome, real.termination_reason, real.priority) == (
                op.state, op.outcome, op.termination_reason, op.priority,
            ), op
            assert (real.start_time is not None) is op.started
            assert (real.finish_time is not None) is (op.state is ExecutionState.COMPLETED)

    @invariant()
    def only_requests_reach_the_callback(self) -> None:
        assert all(e.event_type.is_request for e in self.asked)


def test_public_api_matches_model(tmp_path: Path) -> None:
    # Keep hypothesis' cache inside tmp_path (see test_queue_properties.py for why).
    set_hypothesis_home_dir(tmp_path / ".hypothesis")
    try:
        run_state_machine_as_test(
            DispatcherVersusModel,
            settings=settings(
                max_examples=60,
                stateful_step_count=30,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        set_hypothesis_home_dir(None)

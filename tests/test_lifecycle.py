"""The per-operation state machine: every legal and every illegal transition."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from conftest import RESOURCE as R

from operation_dispatcher import (
    ChangeRecord,
    ExecutionOutcome,
    ExecutionState,
    InvalidTransition,
    Operation,
    OperationLifecycle,
    TerminationReason,
    allowed_triggers,
    mermaid_diagram,
)
from operation_dispatcher.lifecycle import TRANSITIONS, TRIGGERS

T_START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
T_NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)

Q, RUN, P, C = (
    ExecutionState.QUEUED,
    ExecutionState.RUNNING,
    ExecutionState.PAUSED,
    ExecutionState.COMPLETED,
)

#: The machine of design.md section 3, written out independently of lifecycle.TRANSITIONS.
EXPECTED_TRANSITIONS = {
    ("start", Q): RUN,
    ("pause", RUN): P,
    ("resume", P): RUN,
    ("complete", RUN): C,
    ("complete", P): C,
    ("fail", Q): C,
    ("fail", RUN): C,
    ("fail", P): C,
    ("cancel", Q): C,
    ("cancel", RUN): C,
    ("cancel", P): C,
}
LEGAL = sorted(EXPECTED_TRANSITIONS, key=lambda k: (TRIGGERS.index(k[0]), k[1].value))
ILLEGAL = [
    (state, trigger)
    for state in ExecutionState
    for trigger in TRIGGERS
    if (trigger, state) not in EXPECTED_TRANSITIONS
]


def op_in(state: ExecutionState, **fields: Any) -> Operation:
    """A valid operation in ``state`` (started ones have a start_time)."""
    fields.setdefault("resource_id", R)
    if state in (RUN, P):
        fields.setdefault("start_time", T_START)
    if state is C:
        fields.setdefault("start_time", T_START)
        fields.setdefault("finish_time", T_START + timedelta(minutes=5))
        fields.setdefault("outcome", ExecutionOutcome.SUCCESS)
    return Operation(state=state, **fields)


def changes_of(records: list[ChangeRecord]) -> list[tuple[str, Any, Any]]:
    assert all(type(r) is ChangeRecord for r in records)
    return [(r.field, r.old_value, r.new_value) for r in records]


@pytest.fixture
def lifecycle() -> OperationLifecycle:
    return OperationLifecycle()


def test_transition_table_is_the_designed_machine() -> None:
    assert TRIGGERS == ("start", "pause", "resume", "complete", "fail", "cancel")
    table = {
        (trigger, source): dest
        for trigger, (sources, dest) in TRANSITIONS.items()
        for source in sources
    }
    assert table == EXPECTED_TRANSITIONS


# ---------------------------------------------------------------------- legal transitions


@pytest.mark.parametrize(("trigger", "source"), LEGAL, ids=[f"{t}-{s}" for t, s in LEGAL])
def test_every_legal_transition(
    lifecycle: OperationLifecycle, trigger: str, source: ExecutionState
) -> None:
    op = op_in(source)
    start_before = op.start_time
    records = lifecycle.fire(op, trigger, now=T_NOW)
    dest = EXPECTED_TRANSITIONS[(trigger, source)]
    assert op.state is dest

    expected_changes: list[tuple[str, Any, Any]] = [("state", source, dest)]
    if trigger == "start":
        assert op.start_time == T_NOW
        assert op.outcome is ExecutionOutcome.NONE
        assert op.finish_time is None
        expected_changes.append(("start_time", None, T_NOW))
    elif trigger in ("pause", "resume"):
        assert op.start_time == start_before
        assert op.outcome is ExecutionOutcome.NONE
        assert op.termination_reason is TerminationReason.NONE
        assert op.finish_time is None
    else:
        outcome, reason = {
            "complete": (ExecutionOutcome.SUCCESS, TerminationReason.NONE),
            "fail": (ExecutionOutcome.FAILURE, TerminationReason.INTERNAL_ERROR),
            "cancel": (ExecutionOutcome.CANCELLED, TerminationReason.INTERNAL_ERROR),
        }[trigger]
        assert op.outcome is outcome
        assert op.termination_reason is reason
        assert op.finish_time == T_NOW
        assert op.start_time == start_before  # a queued operation that is cancelled never started
        expected_changes.append(("outcome", ExecutionOutcome.NONE, outcome))
        if reason is not TerminationReason.NONE:
            expected_changes.append(("termination_reason", TerminationReason.NONE, reason))
        expected_changes.append(("finish_time", None, T_NOW))
    assert changes_of(records) == expected_changes
    # the operation is still a valid one
    assert Operation.from_dict(op.to_dict()) == op


@pytest.mark.parametrize("trigger", ["fail", "cancel"])
@pytest.mark.parametrize("reason", list(TerminationReason))
def test_fail_and_cancel_take_the_given_reason(
    lifecycle: OperationLifecycle, trigger: str, reason: TerminationReason
) -> None:
    op = op_in(RUN)
    records = lifecycle.fire(op, trigger, now=T_NOW, termination_reason=reason)
    assert op.termination_reason is reason
    fields = [r.field for r in records]
    assert ("termination_reason" in fields) == (reason is not TerminationReason.NONE)


def test_complete_clears_a_stale_termination_reason(lifecycle: OperationLifecycle) -> None:
    op = op_in(P, termination_reason=TerminationReason.TIMEOUT)
    records = lifecycle.fire(
        op, "complete", now=T_NOW, termination_reason=TerminationReason.USER_REQUEST
    )
    assert op.outcome is ExecutionOutcome.SUCCESS
    assert op.termination_reason is TerminationReason.NONE
    assert ("termination_reason", TerminationReason.TIMEOUT, TerminationReason.NONE) in (
        changes_of(records)
    )


def test_start_keeps_an_earlier_start_time(lifecycle: OperationLifecycle) -> None:
    op = op_in(Q, start_time=T_START)
    records = lifecycle.fire(op, "start", now=T_NOW)
    assert op.start_time == T_START
    assert changes_of(records) == [("state", Q, RUN)]


def test_finish_time_is_never_before_start_time(lifecycle: OperationLifecycle) -> None:
    op = op_in(RUN)
    lifecycle.fire(op, "complete", now=T_START - timedelta(hours=1))
    assert op.finish_time == op.start_time == T_START


def test_now_defaults_to_the_current_utc_time(lifecycle: OperationLifecycle) -> None:
    op = op_in(Q)
    before = datetime.now(UTC)
    lifecycle.fire(op, "start")
    lifecycle.fire(op, "complete")
    after = datetime.now(UTC)
    assert op.start_time.tzinfo is UTC and op.finish_time.tzinfo is UTC
    assert before <= op.start_time <= op.finish_time <= after


def test_now_is_normalised_to_utc(lifecycle: OperationLifecycle) -> None:
    op = op_in(Q)
    lifecycle.fire(op, "start", now=datetime(2026, 3, 1, 8, 0))  # naive means UTC
    assert op.start_time == T_START and op.start_time.tzinfo is UTC
    lifecycle.fire(op, "complete", now=datetime(2026, 3, 1, 11, 30, tzinfo=timezone(
        timedelta(hours=2))))
    assert op.finish_time == T_NOW and op.finish_time.tzinfo is UTC
    assert op.to_dict()["finish_time"] == "2026-03-01T09:30:00Z"


def test_full_lifecycle_path(lifecycle: OperationLifecycle) -> None:
    op = op_in(Q)
    for trigger, state in [("start", RUN), ("pause", P), ("resume", RUN), ("pause", P),
                           ("complete", C)]:
        lifecycle.fire(op, trigger, now=T_NOW)
        assert op.state is state
    assert op.outcome is ExecutionOutcome.SUCCESS and op.is_finished


# -------------------------------------------------------------------- illegal transitions


@pytest.mark.parametrize(
    ("state", "trigger"), ILLEGAL, ids=[f"{s.value}-{t}" for s, t in ILLEGAL]
)
def test_every_illegal_transition_is_refused(
    lifecycle: OperationLifecycle, state: ExecutionState, trigger: str
) -> None:
    op = op_in(state)
    before = op.to_dict()
    with pytest.raises(InvalidTransition) as info:
        lifecycle.fire(op, trigger, now=T_NOW, termination_reason=TerminationReason.TIMEOUT)
    err = info.value
    assert isinstance(err, ValueError)
    message = str(err)
    assert str(op.id) in message
    assert state.value in message
    assert trigger in message
    assert err.operation_id == op.id
    assert err.state == state.value
    assert err.trigger == trigger
    assert set(err.allowed_from) == {s.value for (t, s) in EXPECTED_TRANSITIONS if t == trigger}
    assert op.to_dict() == before


def test_illegal_pairs_cover_every_state_and_trigger() -> None:
    assert len(LEGAL) + len(ILLEGAL) == len(ExecutionState) * len(TRIGGERS)
    assert {(C, t) for t in TRIGGERS} <= set(ILLEGAL)  # nothing leaves COMPLETED


@pytest.mark.parametrize(
    "trigger", ["explode", "", "to_RUNNING", "to_COMPLETED", "START", "_on_start", "trigger"]
)
def test_unknown_trigger_is_refused(lifecycle: OperationLifecycle, trigger: str) -> None:
    op = op_in(Q)
    before = op.to_dict()
    with pytest.raises(InvalidTransition) as info:
        lifecycle.fire(op, trigger)
    assert isinstance(info.value, ValueError)
    assert str(op.id) in str(info.value)
    assert "QUEUED" in str(info.value)
    assert info.value.trigger == trigger
    assert trigger in str(info.value)
    assert op.to_dict() == before


def test_a_refused_trigger_leaves_the_machine_usable(lifecycle: OperationLifecycle) -> None:
    op = op_in(Q)
    with pytest.raises(InvalidTransition):
        lifecycle.fire(op, "pause")
    lifecycle.fire(op, "start", now=T_NOW)
    assert op.state is RUN


# --------------------------------------------------------------- shared machine, threads


def test_bound_models_stay_few_after_many_operations(lifecycle: OperationLifecycle) -> None:
    ops = [op_in(Q) for _ in range(1000)]
    for i, op in enumerate(ops):
        lifecycle.fire(op, "start", now=T_NOW)
        if i % 2:
            lifecycle.fire(op, "pause", now=T_NOW)
        lifecycle.fire(op, ("complete", "fail", "cancel")[i % 3], now=T_NOW)
        with pytest.raises(InvalidTransition):
            lifecycle.fire(op, "start")
    assert lifecycle.bound_models <= 2
    assert all(op.state is C for op in ops)


def test_lifecycles_are_independent() -> None:
    first, second = OperationLifecycle(), OperationLifecycle()
    op = op_in(Q)
    first.fire(op, "start", now=T_NOW)
    second.fire(op, "pause", now=T_NOW)
    assert op.state is P


def test_firing_from_four_threads_on_distinct_operations(lifecycle: OperationLifecycle) -> None:
    per_thread = 300
    batches = [[op_in(Q) for _ in range(per_thread)] for _ in range(4)]
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def work(ops: list[Operation]) -> None:
        try:
            barrier.wait()
            for op in ops:
                lifecycle.fire(op, "start", now=T_NOW)
                lifecycle.fire(op, "pause", now=T_NOW)
                lifecycle.fire(op, "resume", now=T_NOW)
                lifecycle.fire(op, "complete", now=T_NOW)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(ops,)) for ops in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    for ops in batches:
        for op in ops:
            assert op.state is C
            assert op.outcome is ExecutionOutcome.SUCCESS
            assert op.start_time == op.finish_time == T_NOW
    assert lifecycle.bound_models <= 4


# ------------------------------------------------------------------- diagram and helpers


def test_mermaid_diagram() -> None:
    text = mermaid_diagram()
    lines = text.strip().splitlines()
    assert lines[0] == "stateDiagram-v2"
    body = [line.strip() for line in lines[1:]]
    assert "[*] --> QUEUED" in body
    assert "COMPLETED --> [*]" in body
    edges = [line for line in body if "[*]" not in line]
    assert len(edges) == len(EXPECTED_TRANSITIONS)
    for (trigger, source), dest in EXPECTED_TRANSITIONS.items():
        assert edges.count(f"{source.value} --> {dest.value}: {trigger}") == 1


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (Q, ["start", "fail", "cancel"]),
        (RUN, ["pause", "complete", "fail", "cancel"]),
        (P, ["resume", "complete", "fail", "cancel"]),
        (C, []),
    ],
)
def test_allowed_triggers(
    lifecycle: OperationLifecycle, state: ExecutionState, expected: list[str]
) -> None:
    assert allowed_triggers(state) == expected
    assert allowed_triggers(state.value) == expected
    for trigger in TRIGGERS:
        op = op_in(state)
        if trigger in expected:
            lifecycle.fire(op, trigger, now=T_NOW)
        else:
            with pytest.raises(InvalidTransition):
                lifecycle.fire(op, trigger, now=T_NOW)


def test_allowed_triggers_rejects_unknown_state() -> None:
    with pytest.raises(ValueError):
        allowed_triggers("DONE")

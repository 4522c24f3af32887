"""OperationLifecycle: us per start + complete pair on fresh operations.

Each run takes OPS new QUEUED operations (built outside the timed region) through
``fire(op, "start")`` and ``fire(op, "complete")``; the figure is the median over RUNS runs.
Baseline: the same end state reached by setting the five tracked attributes (state, outcome,
termination_reason, start_time, finish_time) directly, with the same two timestamp reads, so the
ratio is what the state machine, its checks and the change records cost. No target is set.
"""

from __future__ import annotations

from benchmarks.common import emit, timer
from operation_dispatcher import (
    ExecutionOutcome,
    ExecutionState,
    Operation,
    OperationLifecycle,
    TerminationReason,
)
from operation_dispatcher.models import utcnow

RESOURCE = "robot-1"
OPS = 3_000
RUNS = 7


def fresh_ops() -> list[Operation]:
    return [
        Operation(resource_id=RESOURCE, payload={"task": "pick", "n": i}, priority=i % 7)
        for i in range(OPS)
    ]


def run_lifecycle(lifecycle: OperationLifecycle) -> float:
    ops = fresh_ops()
    fire = lifecycle.fire
    with timer() as t:
        for op in ops:
            fire(op, "start")
            fire(op, "complete")
    for op in (ops[0], ops[-1]):
        assert op.state is ExecutionState.COMPLETED and op.outcome is ExecutionOutcome.SUCCESS
        assert op.start_time is not None and op.finish_time is not None
    return t.us / OPS


def run_baseline() -> float:
    ops = fresh_ops()
    running, completed = ExecutionState.RUNNING, ExecutionState.COMPLETED
    success, no_reason = ExecutionOutcome.SUCCESS, TerminationReason.NONE
    with timer() as t:
        for op in ops:
            op.state = running
            op.start_time = utcnow()
            op.state = completed
            op.outcome = success
            op.termination_reason = no_reason
            op.finish_time = utcnow()
    return t.us / OPS


def main() -> None:
    lifecycle = OperationLifecycle()
    run_lifecycle(lifecycle)  # warm-up: the stand-in model is created and bound once
    ours_runs: list[float] = []
    base_runs: list[float] = []
    for _ in range(RUNS):  # alternate, so drift hits both alike
        ours_runs.append(run_lifecycle(lifecycle))
        base_runs.append(run_baseline())
    mid = RUNS // 2
    emit(
        "lifecycle.start_complete",
        sorted(ours_runs)[mid],
        "us/pair",
        sorted(base_runs)[mid],
        operations=OPS,
        runs=RUNS,
        bound_models=lifecycle.bound_models,
        baseline_desc="set state/outcome/termination_reason/start_time/finish_time directly",
    )


if __name__ == "__main__":
    main()

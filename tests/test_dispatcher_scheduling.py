"""What may start when: release dates, no head-of-line blocking, strict order, dependencies."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from conftest import EventRecorder, op

from operation_dispatcher import (
    DependencyCycle,
    DependencyError,
    DependencyType,
    EventType,
    ExecutionOutcome,
    ExecutionState,
    Operation,
    OperationDependency,
    OperationNotFound,
    TerminationReason,
)
from operation_dispatcher.models import utcnow

STARTED = EventType.OPERATION_STARTED
F2S = DependencyType.FINISH_TO_START
S2S = DependencyType.START_TO_START


def depends(provider: Operation, kind: DependencyType = F2S) -> list[OperationDependency]:
    return [OperationDependency(depends_on_operation_id=provider.id, dependency_type=kind)]


def started_ids(rec: EventRecorder) -> list[Any]:
    return [e.operation_id for e in rec.matching(STARTED)]


# ------------------------------------------------------------------------ release dates


def test_far_future_head_does_not_block_an_undated_operation(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    future = d.add_operation(op(release_date=utcnow() + timedelta(days=1), priority=9))
    undated = d.add_operation(op())
    assert [o.id for o in d.get_schedule()] == [future.id, undated.id]  # dated first
    d.start()
    rec.wait_for(STARTED, operation_id=undated.id)
    assert d.get_operation(future.id).state is ExecutionState.QUEUED
    assert d.explain(future.id)["blocked_by"] == ["release_date", "resource_busy"]


def test_strict_order_waits_for_the_head(make_dispatcher) -> None:
    d = make_dispatcher(strict_order=True)
    assert d.strict_order
    head = d.add_operation(op(release_date=utcnow() + timedelta(days=1)))
    undated = d.add_operation(op())
    assert d.step_dispatch() is None  # the head is not due, and nothing else is considered
    assert d.get_operation(undated.id).state is ExecutionState.QUEUED
    assert "release_date" in d.explain(head.id)["blocked_by"]


def test_strict_order_starts_in_head_order_once_the_head_is_due(make_dispatcher) -> None:
    d = make_dispatcher(strict_order=True)
    rec = EventRecorder(d)
    head = d.add_operation(op(release_date=utcnow() + timedelta(seconds=0.3)))
    undated = d.add_operation(op(priority=99))
    d.start()
    rec.wait_for(STARTED, operation_id=head.id)
    assert started_ids(rec) == [head.id]  # the undated one did not overtake
    d.complete_operation(head.id)
    rec.wait_for(STARTED, operation_id=undated.id)
    assert started_ids(rec) == [head.id, undated.id]


def test_strict_order_does_not_deadlock_on_a_dependent_ahead_of_its_provider(
    make_dispatcher,
) -> None:
    d = make_dispatcher(strict_order=True)
    rec = EventRecorder(d)
    provider = op(priority=1)
    dependent = op(priority=9, dependencies=depends(provider))
    last = op(priority=0)
    d.add_operations([provider, dependent, last])
    # listed in the order they start (the dependent's priority does not put it first)
    assert [o.id for o in d.get_schedule()] == [provider.id, dependent.id, last.id]
    d.start()
    for item in (provider, dependent, last):
        rec.wait_for(STARTED, operation_id=item.id)
        d.complete_operation(item.id)
    assert started_ids(rec) == [provider.id, dependent.id, last.id]


def test_non_strict_lets_the_undated_overtake(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    head = d.add_operation(op(release_date=utcnow() + timedelta(seconds=0.3)))
    undated = d.add_operation(op())
    d.start()
    rec.wait_for(STARTED, operation_id=undated.id)
    d.complete_operation(undated.id)
    rec.wait_for(STARTED, operation_id=head.id)
    assert started_ids(rec) == [undated.id, head.id]


def test_near_release_date_starts_after_it_passes(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    d.start()
    release = utcnow() + timedelta(seconds=0.2)
    soon = d.add_operation(op(release_date=release))
    assert d.explain(soon.id)["blocked_by"] == ["release_date"]
    event = rec.wait_for(STARTED, operation_id=soon.id, timeout=3)[0]
    assert event.created_at >= release
    assert d.get_operation(soon.id).start_time >= release


def test_release_date_moved_earlier_by_update(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    d.start()
    later = d.add_operation(op(release_date=utcnow() + timedelta(days=1)))
    sentinel = d.add_operation(op())
    rec.wait_for(STARTED, operation_id=sentinel.id)  # the loop has looked at (and parked) it
    d.complete_operation(sentinel.id)
    d.update_operation(later.id, {"release_date": utcnow()})
    rec.wait_for(STARTED, operation_id=later.id)


# ------------------------------------------------------------------------ dependencies


def test_finish_to_start_waits_for_successful_completion(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    provider = d.add_operation(op(priority=1))
    dependent = d.add_operation(op(priority=9, dependencies=depends(provider)))
    assert f"dependency:{provider.id}" in d.explain(dependent.id)["blocked_by"]
    d.start()
    rec.wait_for(STARTED, operation_id=provider.id)
    assert started_ids(rec) == [provider.id]
    assert d.explain(dependent.id)["blocked_by"] == [f"dependency:{provider.id}", "resource_busy"]
    d.complete_operation(provider.id)
    rec.wait_for(STARTED, operation_id=dependent.id)
    assert started_ids(rec) == [provider.id, dependent.id]


def test_start_to_start_waits_only_for_the_providers_start(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    provider = d.add_operation(op(priority=1))
    dependent = d.add_operation(op(priority=9, dependencies=depends(provider, S2S)))
    assert d.explain(dependent.id)["blocked_by"] == [
        f"dependency:{provider.id}", "dispatcher_not_running",
    ]
    d.start()
    rec.wait_for(STARTED, operation_id=provider.id)
    assert d.explain(dependent.id)["blocked_by"] == ["resource_busy"]
    d.fail_operation(provider.id)  # started, so a later failure does not matter
    rec.wait_for(STARTED, operation_id=dependent.id)
    assert d.get_operation(dependent.id).state is ExecutionState.RUNNING


def test_start_to_start_fails_when_the_provider_is_cancelled_unstarted(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    provider = d.add_operation(op())
    dependent = d.add_operation(op(dependencies=depends(provider, S2S)))
    d.cancel_operation(provider.id)
    rec.wait_for(EventType.OPERATION_FAILED, operation_id=dependent.id)
    assert d.get_operation(dependent.id).termination_reason is TerminationReason.DEPENDENCY_FAILED


def test_failed_provider_cascades_down_a_chain(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    a = d.add_operation(op())
    b = d.add_operation(op(dependencies=depends(a)))
    c = d.add_operation(op(dependencies=depends(b)))
    unrelated = d.add_operation(op(priority=-1))
    d.start()
    rec.wait_for(STARTED, operation_id=a.id)
    d.fail_operation(a.id, TerminationReason.EXTERNAL_ERROR)
    failed = rec.wait_for(EventType.OPERATION_FAILED, count=3)
    assert [e.operation_id for e in failed] == [a.id, b.id, c.id]
    for dependent, provider in ((b, a), (c, b)):
        stored = d.get_operation(dependent.id)
        assert stored.state is ExecutionState.COMPLETED
        assert stored.outcome is ExecutionOutcome.FAILURE
        assert stored.termination_reason is TerminationReason.DEPENDENCY_FAILED
        assert stored.start_time is None
        event = rec.matching(EventType.OPERATION_FAILED, operation_id=dependent.id)[0]
        assert event.meta_data == {"dependency": str(provider.id)}
    rec.wait_for(STARTED, operation_id=unrelated.id)


def test_cancelled_provider_fails_its_dependents(make_dispatcher) -> None:
    d = make_dispatcher()
    a = d.add_operation(op())
    b = d.add_operation(op(dependencies=depends(a)))
    c = d.add_operation(op(dependencies=depends(b, S2S)))
    d.cancel_operation(a.id)
    for dependent in (b, c):
        stored = d.get_operation(dependent.id)
        assert stored.outcome is ExecutionOutcome.FAILURE
        assert stored.termination_reason is TerminationReason.DEPENDENCY_FAILED
    assert d.get_schedule() == []


def test_long_dependency_chain_cascades_without_recursion_error(make_dispatcher) -> None:
    d = make_dispatcher(event_retention=100)
    chain = [op()]
    for _ in range(1500):
        chain.append(op(dependencies=depends(chain[-1])))
    d.add_operations(chain)
    d.cancel_operation(chain[0].id)
    assert d.get_schedule() == []
    last = d.get_operation(chain[-1].id)
    assert last.termination_reason is TerminationReason.DEPENDENCY_FAILED


def test_dependency_on_an_unknown_provider_is_rejected(make_dispatcher) -> None:
    d = make_dispatcher()
    with pytest.raises(DependencyError, match="no such operation"):
        d.add_operation(op(dependencies=depends(op())))
    assert d.get_schedule() == []


def test_dependency_cycle_in_a_batch_is_rejected(make_dispatcher) -> None:
    d = make_dispatcher()
    a, b = op(), op()
    a.dependencies = depends(b)
    b.dependencies = depends(a)
    with pytest.raises(DependencyCycle):
        d.add_operations([a, b])


def test_dependency_on_an_already_completed_provider_is_met(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    d.start()
    a = d.add_operation(op())
    rec.wait_for(STARTED, operation_id=a.id)
    d.complete_operation(a.id)
    b = d.add_operation(op(dependencies=depends(a)))
    rec.wait_for(STARTED, operation_id=b.id)


def test_dependency_on_an_already_failed_provider_fails_at_dispatch(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    a = d.add_operation(op())
    d.cancel_operation(a.id)
    b = d.add_operation(op(dependencies=depends(a)))
    assert d.explain(b.id)["blocked_by"][0] == f"dependency:{a.id}"
    d.start()
    rec.wait_for(EventType.OPERATION_FAILED, operation_id=b.id)
    assert d.get_operation(b.id).termination_reason is TerminationReason.DEPENDENCY_FAILED


# ------------------------------------------------------------------------ explain


def test_explain_reasons(make_dispatcher) -> None:
    def callback(event) -> bool:  # denies operations whose payload says so
        return not d.get_operation(event.operation_id).payload.get("deny", False)

    d = make_dispatcher(on_request_callback=callback, start_request_retry_cooldown_seconds=60)
    rec = EventRecorder(d)
    dated = d.add_operation(op(release_date=utcnow() + timedelta(days=1)))
    answer = d.explain(dated.id)
    assert [detail["kind"] for detail in answer.pop("details")] == [
        "release_date", "dispatcher_not_running"]
    assert answer == {
        "operation_id": str(dated.id),
        "state": "QUEUED",
        "blocked_by": ["release_date", "dispatcher_not_running"],
    }
    denied = d.add_operation(op(priority=9, payload={"deny": True}))
    d.start()
    rec.wait_for(EventType.OPERATION_START_DENIED, operation_id=denied.id)
    assert d.explain(denied.id)["blocked_by"][0] == "cooldown"
    runner = d.add_operation(op())
    rec.wait_for(STARTED, operation_id=runner.id)
    assert d.explain(runner.id)["blocked_by"] == []
    assert d.explain(runner.id)["state"] == "RUNNING"
    assert d.explain(denied.id)["blocked_by"] == ["cooldown", "resource_busy"]
    d.pause_dispatcher_runtime()
    assert "dispatcher_paused" in d.explain(dated.id)["blocked_by"]
    d.complete_operation(runner.id)
    assert d.explain(runner.id)["blocked_by"] == []
    assert d.explain(runner.id)["state"] == "COMPLETED"
    with pytest.raises(OperationNotFound):
        d.explain(op().id)


def test_release_date_centuries_ahead_does_not_kill_the_loop(make_dispatcher) -> None:
    from datetime import UTC, datetime, timedelta

    from operation_dispatcher import Operation, ValidationError

    # issue 11: the core refuses release dates over 100 years ahead (as HTTP always did);
    # the farthest one allowed must still not kill the loop
    with pytest.raises(ValidationError, match="release_date"):
        Operation(resource_id="robot-1", release_date=datetime(9000, 1, 1))
    farthest = datetime.now(UTC) + timedelta(days=365 * 100 - 1)
    d = make_dispatcher()
    rec = EventRecorder(d)
    d.start()
    far = d.add_operation(Operation(resource_id="robot-1", release_date=farthest))
    now = d.add_operation(Operation(resource_id="robot-1"))
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=now.id)
    assert d.is_running
    assert "release_date" in d.explain(far.id)["blocked_by"]

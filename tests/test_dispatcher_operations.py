"""Operation control: add, cancel, pause, resume, complete, fail, update, timeouts."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from conftest import RESOURCE as R
from conftest import EventRecorder, op

from operation_dispatcher import (
    ChangeRecord,
    DependencyError,
    DuplicateOperation,
    EventType,
    ExecutionOutcome,
    ExecutionState,
    InvalidTransition,
    Operation,
    OperationNotCurrent,
    OperationNotUpdatable,
    ResourceMismatch,
    TerminationReason,
    ValidationError,
)
from operation_dispatcher.models import utcnow

Q, RUN, P, C = (
    ExecutionState.QUEUED,
    ExecutionState.RUNNING,
    ExecutionState.PAUSED,
    ExecutionState.COMPLETED,
)


class Answers:
    """A request callback whose answer per request kind the test can change."""

    def __init__(self, **answers: Any) -> None:
        self.answers = {
            EventType.OPERATION_START_REQUESTED: True,
            EventType.OPERATION_CANCEL_REQUESTED: True,
            EventType.OPERATION_PAUSE_REQUESTED: True,
            EventType.OPERATION_RESUME_REQUESTED: True,
        }
        for kind, answer in answers.items():
            self.answers[EventType(f"operation_{kind}_requested")] = answer

    def __call__(self, event):
        answer = self.answers[event.event_type]
        return answer(event) if callable(answer) else answer


def change(record_list: list[ChangeRecord], field: str) -> ChangeRecord:
    return next(c for c in record_list if c.field == field)


@pytest.fixture
def running(make_dispatcher):
    """A started dispatcher with one RUNNING operation: (dispatcher, recorder, answers, op)."""
    answers = Answers()
    d = make_dispatcher(on_request_callback=answers, start_request_retry_cooldown_seconds=0.0)
    rec = EventRecorder(d)
    d.start()
    current = d.add_operation(op(priority=5))
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=current.id)
    return d, rec, answers, current


# ------------------------------------------------------------------------------ adding


def test_add_returns_a_snapshot_and_leaves_the_callers_object_alone(make_dispatcher) -> None:
    d = make_dispatcher(default_planned_duration=12.5)
    mine = op(payload={"task": "pick", "items": [1, 2]})
    stored = d.add_operation(mine, meta_data={"source": "test"})
    assert mine.planned_duration is None
    assert stored.planned_duration == 12.5
    assert stored.id == mine.id and stored.payload == mine.payload
    stored.payload["task"] = "changed"
    stored.payload["items"].append(3)
    mine.payload["task"] = "changed too"
    assert d.get_operation(mine.id).payload == {"task": "pick", "items": [1, 2]}
    snapshot = d.get_operation(mine.id)
    snapshot.priority = 99
    assert d.get_operation(mine.id).priority == 0
    added = d.list_events(mine.id)
    assert [e.event_type for e in added] == [EventType.OPERATION_ADDED]
    assert added[0].changes == [] and added[0].meta_data == {"source": "test"}


def test_default_planned_duration_can_be_skipped_or_is_not_overridden(make_dispatcher) -> None:
    d = make_dispatcher(default_planned_duration=5)
    assert d.add_operation(op(), apply_default_planned_duration=False).planned_duration is None
    assert d.add_operation(op(planned_duration=2)).planned_duration == 2


def test_duplicate_ids_are_rejected(make_dispatcher) -> None:
    d = make_dispatcher()
    first = d.add_operation(op())
    with pytest.raises(DuplicateOperation):
        d.add_operation(first)
    assert d.cancel_operation(first.id) is not None
    with pytest.raises(DuplicateOperation):  # finished ones keep their id too
        d.add_operation(first)
    twin = op()
    with pytest.raises(DuplicateOperation):
        d.add_operations([twin, twin])
    assert d.get_operation(twin.id) is None


def test_wrong_resource_is_rejected(make_dispatcher) -> None:
    d = make_dispatcher(default_planned_duration=3)
    stranger = Operation(resource_id="robot-2")
    with pytest.raises(ResourceMismatch):
        d.add_operation(stranger)
    assert stranger.planned_duration is None
    assert d.get_schedule() == []


def test_non_queued_or_non_operation_is_rejected(make_dispatcher) -> None:
    d = make_dispatcher()
    with pytest.raises(ValidationError) as info:
        d.add_operation(op(state=C))
    assert info.value.field == "state"
    with pytest.raises(ValidationError):
        d.add_operation({"resource_id": R})


def test_add_operations_is_all_or_nothing(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    good = op()
    with pytest.raises(ResourceMismatch):
        d.add_operations([good, Operation(resource_id="robot-2")])
    with pytest.raises(DependencyError):
        d.add_operations([good, op(dependencies=[_f2s(op().id)])])
    assert d.get_schedule() == [] and d.get_operation(good.id) is None
    provider = op()
    dependent = op(dependencies=[_f2s(provider.id)])
    stored = d.add_operations([dependent, provider])
    assert [s.id for s in stored] == [dependent.id, provider.id]
    d.drain_events(5)
    assert rec.types() == [EventType.OPERATION_ADDED] * 2


def _f2s(provider_id):
    return {"depends_on_operation_id": provider_id, "dependency_type": "FINISH_TO_START"}


# ------------------------------------------------------------------------------ cancel


def test_cancel_a_queued_operation(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    added = d.add_operation(op())
    cancelled = d.cancel_operation(added.id, meta_data={"by": "test"})
    assert cancelled.state is C
    assert cancelled.outcome is ExecutionOutcome.CANCELLED
    assert cancelled.termination_reason is TerminationReason.INTERNAL_ERROR
    assert cancelled.start_time is None and cancelled.finish_time is not None
    event = rec.wait_for(EventType.OPERATION_CANCELLED, operation_id=added.id)[0]
    assert event.meta_data == {"by": "test"}
    assert change(event.changes, "state") == ChangeRecord(field="state", old_value=Q, new_value=C)
    assert change(event.changes, "outcome").new_value is ExecutionOutcome.CANCELLED
    assert change(event.changes, "finish_time").new_value == cancelled.finish_time
    assert d.get_schedule() == []
    assert d.get_operation(added.id).state is C
    assert d.cancel_operation(added.id) is None  # already finished
    assert d.cancel_operation(op().id) is None  # unknown


def test_cancel_the_running_operation_frees_the_slot(running) -> None:
    d, rec, _, current = running
    nxt = d.add_operation(op())
    cancelled = d.cancel_operation(current.id, TerminationReason.USER_REQUEST)
    assert cancelled.termination_reason is TerminationReason.USER_REQUEST
    assert cancelled.outcome is ExecutionOutcome.CANCELLED
    event = rec.wait_for(EventType.OPERATION_CANCELLED, operation_id=current.id)[0]
    assert change(event.changes, "state").old_value is RUN
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=nxt.id)


def test_denied_cancel(running) -> None:
    d, rec, answers, current = running
    answers.answers[EventType.OPERATION_CANCEL_REQUESTED] = False
    assert d.cancel_operation(current.id) is None
    rec.wait_for(EventType.OPERATION_CANCEL_DENIED, operation_id=current.id)
    assert d.get_operation(current.id).state is RUN
    assert EventType.OPERATION_CANCELLED not in rec.types()


# ------------------------------------------------------------------------------ pause/resume


def test_pause_and_resume_the_running_operation(running) -> None:
    d, rec, _, current = running
    assert d.pause_operation(current.id, meta_data={"why": "door"}) is True
    paused = rec.wait_for(EventType.OPERATION_PAUSED, operation_id=current.id)[0]
    assert paused.changes == [ChangeRecord(field="state", old_value=RUN, new_value=P)]
    assert paused.meta_data == {"why": "door"}
    assert d.get_operation(current.id).state is P
    assert d.current_operation.id == current.id
    with pytest.raises(InvalidTransition):
        d.pause_operation(current.id)
    assert d.resume_operation(current.id) is True
    resumed = rec.wait_for(EventType.OPERATION_RESUMED, operation_id=current.id)[0]
    assert resumed.changes == [ChangeRecord(field="state", old_value=P, new_value=RUN)]
    assert d.get_operation(current.id).state is RUN
    with pytest.raises(InvalidTransition):
        d.resume_operation(current.id)
    types = rec.types(current.id)
    assert types[-4:] == [
        EventType.OPERATION_PAUSE_REQUESTED,
        EventType.OPERATION_PAUSED,
        EventType.OPERATION_RESUME_REQUESTED,
        EventType.OPERATION_RESUMED,
    ]


def test_denied_pause_and_resume(running) -> None:
    d, rec, answers, current = running
    answers.answers[EventType.OPERATION_PAUSE_REQUESTED] = False
    assert d.pause_operation(current.id) is False
    rec.wait_for(EventType.OPERATION_PAUSE_DENIED, operation_id=current.id)
    assert d.get_operation(current.id).state is RUN
    answers.answers[EventType.OPERATION_PAUSE_REQUESTED] = True
    answers.answers[EventType.OPERATION_RESUME_REQUESTED] = {"accepted": False}
    assert d.pause_operation(current.id) is True
    assert d.resume_operation(current.id) is False
    rec.wait_for(EventType.OPERATION_RESUME_DENIED, operation_id=current.id)
    assert d.get_operation(current.id).state is P


def test_pause_of_a_non_current_operation(running) -> None:
    d, _, _, current = running
    queued = d.add_operation(op())
    with pytest.raises(OperationNotCurrent):
        d.pause_operation(queued.id)
    with pytest.raises(OperationNotCurrent):
        d.resume_operation(queued.id)


def test_pause_without_a_current_operation(make_dispatcher) -> None:
    d = make_dispatcher()
    queued = d.add_operation(op())
    with pytest.raises(OperationNotCurrent, match="no current operation"):
        d.pause_operation(queued.id)


# ------------------------------------------------------------------------------ finishing


def test_complete_operation(running) -> None:
    d, rec, _, current = running
    done = d.complete_operation(current.id, meta_data={"result": 42})
    assert done.state is C and done.outcome is ExecutionOutcome.SUCCESS
    assert done.termination_reason is TerminationReason.NONE
    assert done.finish_time is not None and done.finish_time >= done.start_time
    event = rec.wait_for(EventType.OPERATION_COMPLETED, operation_id=current.id)[0]
    assert event.meta_data == {"result": 42}
    fields = {c.field for c in event.changes}
    assert {"state", "outcome", "finish_time"} <= fields
    assert "termination_reason" not in fields
    assert d.current_operation is None
    with pytest.raises(OperationNotCurrent, match="no current operation"):
        d.complete_operation(current.id)


def test_complete_a_paused_operation(running) -> None:
    d, rec, _, current = running
    assert d.pause_operation(current.id)
    assert d.complete_operation(current.id).outcome is ExecutionOutcome.SUCCESS


def test_fail_operation(running) -> None:
    d, rec, _, current = running
    failed = d.fail_operation(current.id, TerminationReason.EXTERNAL_ERROR, {"code": 7})
    assert failed.state is C and failed.outcome is ExecutionOutcome.FAILURE
    assert failed.termination_reason is TerminationReason.EXTERNAL_ERROR
    event = rec.wait_for(EventType.OPERATION_FAILED, operation_id=current.id)[0]
    assert event.meta_data == {"code": 7}
    assert change(event.changes, "termination_reason") == ChangeRecord(
        field="termination_reason",
        old_value=TerminationReason.NONE,
        new_value=TerminationReason.EXTERNAL_ERROR,
    )
    assert change(event.changes, "outcome").new_value is ExecutionOutcome.FAILURE


def test_fail_default_reason_is_internal_error(running) -> None:
    d, _, _, current = running
    assert d.fail_operation(current.id).termination_reason is TerminationReason.INTERNAL_ERROR


def test_complete_of_a_non_current_operation(running) -> None:
    d, _, _, current = running
    queued = d.add_operation(op())
    with pytest.raises(OperationNotCurrent, match="operation is not current"):
        d.complete_operation(queued.id)
    with pytest.raises(OperationNotCurrent, match="operation is not current"):
        d.fail_operation(queued.id)
    assert d.get_operation(queued.id).state is Q


def test_operation_timeout_fails_with_timeout(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    d.start()
    slow = d.add_operation(op(timeout_seconds=0.1, priority=5))
    nxt = d.add_operation(op())
    failed = rec.wait_for(EventType.OPERATION_FAILED, operation_id=slow.id)[0]
    started = rec.matching(EventType.OPERATION_STARTED, operation_id=slow.id)[0]
    assert failed.created_at - started.created_at >= timedelta(seconds=0.09)
    assert failed.meta_data == {"timeout_seconds": 0.1}
    stored = d.get_operation(slow.id)
    assert stored.termination_reason is TerminationReason.TIMEOUT
    assert stored.outcome is ExecutionOutcome.FAILURE
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=nxt.id)


def test_completed_before_timeout_is_not_failed(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    d.start()
    quick = d.add_operation(op(timeout_seconds=0.2))
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=quick.id)
    d.complete_operation(quick.id)
    second = d.add_operation(op(timeout_seconds=0.2))
    rec.wait_for(EventType.OPERATION_FAILED, operation_id=second.id)
    assert d.get_operation(quick.id).outcome is ExecutionOutcome.SUCCESS


# ------------------------------------------------------------------------------ update


def test_priority_update_reorders_and_emits_updated(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    a = d.add_operation(op(priority=5))
    b = d.add_operation(op(priority=3))
    assert [o.id for o in d.get_schedule()] == [a.id, b.id]
    updated = d.update_operation(b.id, {"priority": 9}, meta_data={"by": "planner"})
    assert updated.priority == 9
    assert [o.id for o in d.get_schedule()] == [b.id, a.id]
    event = rec.wait_for(EventType.OPERATION_UPDATED, operation_id=b.id)[0]
    assert event.changes == [ChangeRecord(field="priority", old_value=3, new_value=9)]
    assert event.meta_data == {"by": "planner"}
    d.start()
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=b.id)


def test_update_several_fields(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    a = d.add_operation(op(payload={"x": 1}))
    when = utcnow() + timedelta(hours=1)
    updated = d.update_operation(
        a.id, {"payload": {"x": 2}, "release_date": when.isoformat(), "planned_duration": 4}
    )
    assert updated.payload == {"x": 2} and updated.release_date == when
    event = rec.wait_for(EventType.OPERATION_UPDATED, operation_id=a.id)[0]
    assert {c.field for c in event.changes} == {"payload", "release_date", "planned_duration"}
    assert "release_date" in d.explain(a.id)["blocked_by"]


@pytest.mark.parametrize("field_name", ["state", "outcome", "termination_reason", "start_time"])
def test_update_of_lifecycle_fields_is_refused(make_dispatcher, field_name) -> None:
    d = make_dispatcher()
    a = d.add_operation(op())
    value = {"state": "COMPLETED", "outcome": "SUCCESS", "termination_reason": "TIMEOUT",
             "start_time": utcnow()}[field_name]
    with pytest.raises(ValidationError) as info:
        d.update_operation(a.id, {field_name: value})
    assert info.value.field == field_name
    assert field_name in str(info.value)
    assert d.get_operation(a.id).state is Q


def test_update_of_unsupported_or_invalid_fields_is_refused(make_dispatcher) -> None:
    d = make_dispatcher()
    a = d.add_operation(op())
    with pytest.raises(ValidationError, match="unsupported"):
        d.update_operation(a.id, {"job_id": "j-1"})
    with pytest.raises(ValidationError, match="unsupported"):
        d.update_operation(a.id, {"nonsense": 1})
    with pytest.raises(ValidationError) as info:
        d.update_operation(a.id, {"priority": "high"})
    assert info.value.field == "priority"
    restricted = make_dispatcher(updatable_fields=["priority"])
    b = restricted.add_operation(op())
    with pytest.raises(ValidationError, match="unsupported"):
        restricted.update_operation(b.id, {"payload": {}})
    assert d.get_operation(a.id).priority == 0


def test_update_of_a_running_operation_is_refused(running) -> None:
    d, _, _, current = running
    with pytest.raises(OperationNotUpdatable) as info:
        d.update_operation(current.id, {"priority": 1})
    assert isinstance(info.value, RuntimeError)
    assert d.pause_operation(current.id)
    assert d.update_operation(current.id, {"payload": {"k": 1}}).payload == {"k": 1}


def test_update_of_a_finished_operation_is_refused(make_dispatcher) -> None:
    d = make_dispatcher()
    a = d.add_operation(op())
    d.cancel_operation(a.id)
    with pytest.raises(OperationNotUpdatable):
        d.update_operation(a.id, {"priority": 1})


def test_update_unknown_empty_and_unchanged(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    assert d.update_operation(op().id, {"priority": 1}) is None
    a = d.add_operation(op(priority=2))
    assert d.update_operation(a.id, {}) == d.get_operation(a.id)
    assert d.update_operation(a.id, {"priority": 2}).priority == 2
    d.drain_events(5)
    assert EventType.OPERATION_UPDATED not in rec.types()
    with pytest.raises(ValidationError):
        d.update_operation(a.id, [("priority", 1)])


def test_update_dependencies_checks_providers(make_dispatcher) -> None:
    d = make_dispatcher()
    a = d.add_operation(op())
    b = d.add_operation(op())
    with pytest.raises(DependencyError):
        d.update_operation(b.id, {"dependencies": [_f2s(op().id)]})
    updated = d.update_operation(b.id, {"dependencies": [_f2s(a.id)]})
    assert updated.dependencies[0].depends_on_operation_id == a.id
    assert f"dependency:{a.id}" in d.explain(b.id)["blocked_by"]
    with pytest.raises(DependencyError):  # a cycle
        d.update_operation(a.id, {"dependencies": [_f2s(b.id)]})


def test_concurrent_handshakes_run_in_callers_threads(running, gate) -> None:
    """A cancel waiting for its answer blocks neither another caller's pause nor an add."""
    d, rec, answers, current = running
    queued = d.add_operation(op())
    asked = threading.Event()

    def slow_cancel(event):
        asked.set()
        gate.wait()
        return True

    answers.answers[EventType.OPERATION_CANCEL_REQUESTED] = slow_cancel
    result: dict[str, Any] = {}
    canceller = threading.Thread(
        target=lambda: result.setdefault("c", d.cancel_operation(queued.id)), name="test-cancel"
    )
    canceller.start()
    assert asked.wait(5)
    assert d.pause_operation(current.id) is True
    assert d.add_operation(op()).state is Q
    gate.set()
    canceller.join(5)
    assert result["c"].outcome is ExecutionOutcome.CANCELLED


# ------------------------------------------------------------------------ snapshots (issue 10 E.18)


def test_update_copies_the_callers_values(make_dispatcher) -> None:
    d = make_dispatcher()
    added = d.add_operation(op(payload={"task": "pick"}))
    updates: dict[str, Any] = {
        "payload": {"task": "place", "points": [[0, 0], [1, 2]]},
        "release_conditions": {"door": {"state": "closed"}},
    }
    d.update_operation(added.id, updates)
    updates["payload"]["task"] = "drill"
    updates["payload"]["points"][1].append(99)
    updates["payload"]["extra"] = True
    updates["release_conditions"]["door"]["state"] = "open"
    stored = d.get_operation(added.id)
    assert stored.payload == {"task": "place", "points": [[0, 0], [1, 2]]}
    assert stored.release_conditions == {"door": {"state": "closed"}}
    assert d.get_schedule()[0].payload == stored.payload


def _mutate(event: Any) -> None:
    """Everything a careless caller could change in an event it was given."""
    event.meta_data["evil"] = True
    for change in event.changes:
        for value in (change.old_value, change.new_value):
            if isinstance(value, dict):
                value["evil"] = True
            elif isinstance(value, list):
                value.append("evil")
    event.changes.append(ChangeRecord(field="evil"))


def _updated_operation(d: Any) -> Operation:
    added = d.add_operation(op(payload={"task": "pick"}), meta_data={"who": {"name": "ann"}})
    d.update_operation(added.id, {"payload": {"task": "place", "tools": ["gripper"]}})
    return added


def _assert_untouched(d: Any, added: Operation) -> None:
    assert d.get_operation(added.id).payload == {"task": "place", "tools": ["gripper"]}
    events = d.list_events(added.id)
    assert events[0].meta_data == {"who": {"name": "ann"}}
    updated = events[1]
    assert updated.event_type is EventType.OPERATION_UPDATED
    assert updated.meta_data == {}
    assert [c.to_dict() for c in updated.changes] == [{
        "field": "payload",
        "old_value": {"task": "pick"},
        "new_value": {"task": "place", "tools": ["gripper"]},
    }]
    for event in d.get_history().events:
        assert "evil" not in event.meta_data
        assert all(c.field != "evil" for c in event.changes)


def test_list_events_and_get_history_return_snapshots(make_dispatcher) -> None:
    d = make_dispatcher()
    added = _updated_operation(d)
    for event in d.list_events(added.id):
        _mutate(event)
    history = d.get_history(resolve_operations=True)
    for event in history.events:
        _mutate(event)
    history.operations[0].payload["evil"] = True
    _assert_untouched(d, added)


def test_a_subscriber_editing_its_event_cannot_change_the_operation(make_dispatcher) -> None:
    """The change records of OPERATION_UPDATED carried the operation's own payload dict."""
    d = make_dispatcher()
    d.subscribe(_mutate)
    added = _updated_operation(d)
    assert d.drain_events(5) is True
    assert d.get_operation(added.id).payload == {"task": "place", "tools": ["gripper"]}
    assert d.get_schedule()[0].payload == {"task": "place", "tools": ["gripper"]}


def test_meta_data_is_copied_where_it_enters(make_dispatcher) -> None:
    d = make_dispatcher()
    meta = {"who": {"name": "ann", "roles": ["operator"]}}
    added = d.add_operation(op(), meta_data=meta)
    d.update_operation(added.id, {"priority": 2}, meta_data=meta)
    meta["who"]["name"] = "mallory"
    meta["who"]["roles"].append("admin")
    for event in d.list_events(added.id):
        assert event.meta_data == {"who": {"name": "ann", "roles": ["operator"]}}

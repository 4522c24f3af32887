"""Validation, UTC normalisation and the JSON form of the data models."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import pytest
from conftest import RESOURCE as R
from conftest import op as make_op

from operation_dispatcher import (
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
    TimeWindow,
    ValidationError,
)
from operation_dispatcher.models import LIFECYCLE_FIELDS, UPDATABLE_FIELDS

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))


def dep(
    provider: UUID, kind: DependencyType = DependencyType.FINISH_TO_START
) -> OperationDependency:
    return OperationDependency(depends_on_operation_id=provider, dependency_type=kind)


def assert_rejects(field_name: str, build: Any, *args: Any, **kwargs: Any) -> ValidationError:
    """``build(*args, **kwargs)`` must raise a ValidationError (a ValueError) naming the field."""
    with pytest.raises(ValidationError) as info:
        build(*args, **kwargs)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.field == field_name
    assert str(err).startswith(field_name)
    assert err.reason and err.reason in str(err)
    return err


def json_roundtrip(data: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(data))


# ------------------------------------------------------------------------ Operation rules


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        # planned_duration > 0
        ({"planned_duration": 0}, "planned_duration"),
        ({"planned_duration": -1}, "planned_duration"),
        ({"planned_duration": -0.5}, "planned_duration"),
        ({"planned_duration": math.nan}, "planned_duration"),
        ({"planned_duration": math.inf}, "planned_duration"),
        ({"planned_duration": "5"}, "planned_duration"),
        ({"planned_duration": True}, "planned_duration"),
        # due_date strictly after release_date
        ({"release_date": T0, "due_date": T0}, "due_date"),
        ({"release_date": T0, "due_date": T0 - timedelta(seconds=1)}, "due_date"),
        # finish_time >= start_time
        ({"start_time": T0, "finish_time": T0 - timedelta(microseconds=1)}, "finish_time"),
        # payload must be a dict
        ({"payload": []}, "payload"),
        ({"payload": "task"}, "payload"),
        ({"payload": None}, "payload"),
        ({"payload": 3}, "payload"),
        # priority must be an int, and a bool is not one
        ({"priority": "high"}, "priority"),
        ({"priority": 1.5}, "priority"),
        ({"priority": True}, "priority"),
        ({"priority": False}, "priority"),
        ({"priority": None}, "priority"),
        # timeout_seconds > 0
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": -3.0}, "timeout_seconds"),
        ({"timeout_seconds": "10"}, "timeout_seconds"),
        # retry_count >= 0, an int
        ({"retry_count": -1}, "retry_count"),
        ({"retry_count": "1"}, "retry_count"),
        ({"retry_count": True}, "retry_count"),
        # resource_id non-empty string
        ({"resource_id": ""}, "resource_id"),
        ({"resource_id": None}, "resource_id"),
        ({"resource_id": 7}, "resource_id"),
        # RUNNING / PAUSED need a start_time
        ({"state": ExecutionState.RUNNING}, "start_time"),
        ({"state": ExecutionState.PAUSED}, "start_time"),
        ({"state": "RUNNING"}, "start_time"),
        # release_conditions: a dict keyed by non-empty signal names
        ({"release_conditions": {"": True}}, "release_conditions"),
        ({"release_conditions": {1: True}}, "release_conditions"),
        ({"release_conditions": ["plc.ready"]}, "release_conditions"),
        ({"release_conditions": None}, "release_conditions"),
        # other coercions
        ({"id": "xyz"}, "id"),
        ({"id": 42}, "id"),
        ({"job_id": 5}, "job_id"),
        ({"state": "DONE"}, "state"),
        ({"outcome": "MAYBE"}, "outcome"),
        ({"termination_reason": "BORED"}, "termination_reason"),
        ({"release_date": "not a date"}, "release_date"),
        ({"release_date": 1_700_000_000}, "release_date"),
        ({"due_date": "tomorrow"}, "due_date"),
        ({"start_time": "soon"}, "start_time"),
        ({"finish_time": []}, "finish_time"),
        ({"created_at": None}, "created_at"),
        ({"dependencies": "abc"}, "dependencies"),
        ({"dependencies": {"depends_on_operation_id": str(uuid4())}}, "dependencies"),
        ({"dependencies": [5]}, "dependencies"),
        (
            {"dependencies": [{"depends_on_operation_id": str(uuid4()), "dependency_type": "X"}]},
            "dependencies.dependency_type",
        ),
        (
            {"dependencies": [{"depends_on_operation_id": "nope", "dependency_type": "X"}]},
            "dependencies.depends_on_operation_id",
        ),
    ],
)
def test_operation_rejects_invalid_field(fields: dict[str, Any], field_name: str) -> None:
    assert_rejects(field_name, make_op, **fields)


def test_error_messages_give_the_reason() -> None:
    assert "> 0" in assert_rejects("planned_duration", make_op, planned_duration=0).reason
    assert "after release_date" in assert_rejects(
        "due_date", make_op, release_date=T0, due_date=T0
    ).reason
    assert "integer" in assert_rejects("priority", make_op, priority="high").reason
    reason = assert_rejects("state", make_op, state="DONE").reason
    for state in ExecutionState:
        assert state.value in reason


@pytest.mark.parametrize(
    "fields",
    [
        {"planned_duration": 0.001},
        {"planned_duration": 5},
        {"release_date": T0, "due_date": T0 + timedelta(microseconds=1)},
        {"due_date": T0},
        {"release_date": T0},
        {"start_time": T0, "finish_time": T0},
        {"start_time": T0, "finish_time": T0 + timedelta(hours=1)},
        {"finish_time": T0},
        {"payload": {"task": "pickup", "nested": {"a": [1, 2]}}},
        {"priority": -5},
        {"priority": 10**20},
        {"timeout_seconds": 0.25},
        {"timeout_seconds": 30},
        {"timeout_seconds": None},
        {"retry_count": 3},
        {"state": ExecutionState.RUNNING, "start_time": T0},
        {"state": "PAUSED", "start_time": T0},
        {"state": ExecutionState.COMPLETED, "outcome": "CANCELLED"},
        {"release_conditions": {"plc.ready": True, "door": "closed"}},
        {"job_id": "job-7"},
    ],
)
def test_operation_accepts_valid_fields(fields: dict[str, Any]) -> None:
    op = make_op(**fields)
    for name, value in fields.items():
        assert getattr(op, name) == value


def test_operation_defaults_match_the_seed() -> None:
    op = make_op()
    assert isinstance(op.id, UUID) and op.id.version == 4
    assert op.job_id is None
    assert op.payload == {}
    assert op.priority == 0
    assert op.release_date is None and op.due_date is None and op.planned_duration is None
    assert op.dependencies == []
    assert op.state is ExecutionState.QUEUED
    assert op.outcome is ExecutionOutcome.NONE
    assert op.termination_reason is TerminationReason.NONE
    assert op.retry_count == 0
    assert op.start_time is None and op.finish_time is None
    assert op.release_conditions == {}
    assert op.timeout_seconds is None
    assert op.is_finished is False
    assert make_op(state="COMPLETED").is_finished is True
    # each operation gets its own id and its own mutable defaults
    other = make_op()
    assert other.id != op.id
    assert other.payload is not op.payload
    assert other.dependencies is not op.dependencies


def test_enum_fields_are_coerced_from_strings() -> None:
    op = make_op(state="COMPLETED", outcome="FAILURE", termination_reason="TIMEOUT")
    assert op.state is ExecutionState.COMPLETED
    assert op.outcome is ExecutionOutcome.FAILURE
    assert op.termination_reason is TerminationReason.TIMEOUT


def test_id_is_coerced_from_text() -> None:
    oid = uuid4()
    assert make_op(id=str(oid)).id == oid
    assert make_op(id=oid.hex).id == oid


def test_payload_mapping_subclass_becomes_a_plain_dict() -> None:
    op = make_op(payload=OrderedDict(task="pickup"))
    assert type(op.payload) is dict
    assert op.payload == {"task": "pickup"}


def test_operation_requires_resource_id() -> None:
    with pytest.raises(TypeError):
        Operation()  # type: ignore[call-arg]


# --------------------------------------------------------------------------- dependencies


def test_self_dependency_is_rejected_with_the_operations_own_id() -> None:
    oid = uuid4()
    err = assert_rejects("dependencies", make_op, id=oid, dependencies=[dep(oid)])
    assert str(oid) in str(err)
    # the same through the wire form (id as text, dependency as a dict)
    err = assert_rejects(
        "dependencies",
        Operation.from_dict,
        {
            "resource_id": R,
            "id": str(oid),
            "dependencies": [
                {"depends_on_operation_id": str(oid), "dependency_type": "START_TO_START"}
            ],
        },
    )
    assert str(oid) in str(err)


def test_dependency_record_id_equal_to_provider_is_not_self_dependency() -> None:
    """The seed compared the provider with the dependency record's id; that is not the rule."""
    provider = uuid4()
    record = OperationDependency(
        id=provider, depends_on_operation_id=provider, dependency_type="FINISH_TO_START"
    )
    op = make_op(dependencies=[record])
    assert op.dependencies == [record]


def test_dependency_on_another_operation_is_accepted() -> None:
    provider = uuid4()
    op = make_op(
        dependencies=[
            dep(provider),
            {"depends_on_operation_id": str(provider), "dependency_type": "START_TO_START"},
        ]
    )
    first, second = op.dependencies
    assert isinstance(second, OperationDependency)
    assert first.depends_on_operation_id == second.depends_on_operation_id == provider
    assert first.dependency_type is DependencyType.FINISH_TO_START
    assert second.dependency_type is DependencyType.START_TO_START
    assert isinstance(first.id, UUID) and first.created_at.tzinfo is UTC


def test_dependency_tuple_becomes_a_list() -> None:
    provider = uuid4()
    op = make_op(dependencies=(dep(provider),))
    assert type(op.dependencies) is list and len(op.dependencies) == 1


def test_dependency_is_frozen() -> None:
    record = dep(uuid4())
    with pytest.raises(AttributeError):
        record.dependency_type = DependencyType.START_TO_START  # type: ignore[misc]


def test_dependency_requires_provider_and_type() -> None:
    with pytest.raises(TypeError):
        OperationDependency(dependency_type=DependencyType.FINISH_TO_START)  # type: ignore[call-arg]
    assert_rejects(
        "dependency_type",
        OperationDependency.from_dict,
        {"depends_on_operation_id": str(uuid4())},
    )
    assert_rejects(
        "depends_on_operation_id",
        OperationDependency.from_dict,
        {"dependency_type": "FINISH_TO_START"},
    )


# ------------------------------------------------------------------------ UTC normalisation

DATETIME_FIELDS = ("release_date", "due_date", "start_time", "finish_time", "created_at")


@pytest.mark.parametrize("name", DATETIME_FIELDS)
def test_naive_datetime_is_taken_as_utc(name: str) -> None:
    naive = datetime(2026, 5, 6, 7, 8, 9, 10)
    value = getattr(make_op(**{name: naive}), name)
    assert value.tzinfo is UTC
    assert value == naive.replace(tzinfo=UTC)


@pytest.mark.parametrize("name", DATETIME_FIELDS)
def test_aware_datetime_is_converted_to_utc(name: str) -> None:
    local = datetime(2026, 5, 6, 12, 0, tzinfo=PLUS_TWO)
    value = getattr(make_op(**{name: local}), name)
    assert value.tzinfo is UTC
    assert (value.hour, value.minute) == (10, 0)
    assert value == local


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-05-06T10:00:00Z", datetime(2026, 5, 6, 10, tzinfo=UTC)),
        ("2026-05-06T10:00:00.250000Z", datetime(2026, 5, 6, 10, 0, 0, 250000, tzinfo=UTC)),
        ("2026-05-06T12:00:00+02:00", datetime(2026, 5, 6, 10, tzinfo=UTC)),
        ("2026-05-06T10:00:00", datetime(2026, 5, 6, 10, tzinfo=UTC)),
        (" 2026-05-06T10:00:00+00:00 ", datetime(2026, 5, 6, 10, tzinfo=UTC)),
    ],
)
def test_iso_strings_are_parsed_to_utc(text: str, expected: datetime) -> None:
    op = make_op(release_date=text)
    assert op.release_date == expected
    assert op.release_date.tzinfo is UTC


def test_due_date_comparison_uses_utc_instants() -> None:
    # 11:00+02:00 is 09:00 UTC: before a 10:00 UTC release date
    assert_rejects(
        "due_date",
        make_op,
        release_date=datetime(2026, 1, 1, 10, tzinfo=UTC),
        due_date=datetime(2026, 1, 1, 11, tzinfo=PLUS_TWO),
    )
    # naive 10:30 is 10:30 UTC: after it
    op = make_op(
        release_date=datetime(2026, 1, 1, 10, tzinfo=UTC), due_date=datetime(2026, 1, 1, 10, 30)
    )
    assert op.due_date == datetime(2026, 1, 1, 10, 30, tzinfo=UTC)


def test_created_at_defaults_to_now_in_utc() -> None:
    before = datetime.now(UTC)
    op = make_op()
    after = datetime.now(UTC)
    assert op.created_at.tzinfo is UTC
    assert before <= op.created_at <= after


def test_other_models_normalise_datetimes() -> None:
    local = datetime(2026, 5, 6, 12, 0, tzinfo=PLUS_TWO)
    naive = datetime(2026, 5, 6, 10, 0)
    expected = datetime(2026, 5, 6, 10, 0, tzinfo=UTC)
    event = DispatchEvent(resource_id=R, event_type="operation_added", created_at=local)
    window = TimeWindow(start=naive, end="2026-05-06T12:00:00+02:00")
    record = OperationDependency(
        depends_on_operation_id=uuid4(), dependency_type="START_TO_START", created_at=local
    )
    state = OperationDispatcherState(resource_id=R, running_since=naive)
    for value in (event.created_at, window.start, window.end, record.created_at,
                  state.running_since):
        assert value == expected and value.tzinfo is UTC


# ---------------------------------------------------------------------------- JSON forms


def full_operation() -> Operation:
    provider_a, provider_b = uuid4(), uuid4()
    return make_op(
        job_id="job-42",
        payload={"task": "pickup", "slot": 3, "pose": {"x": 1.5, "tags": ["a", "b"]}},
        priority=7,
        release_date=T0,
        planned_duration=12.5,
        due_date=T0 + timedelta(hours=1),
        dependencies=[
            dep(provider_a),
            dep(provider_b, DependencyType.START_TO_START),
        ],
        state=ExecutionState.PAUSED,
        termination_reason=TerminationReason.NONE,
        retry_count=2,
        start_time=T0 + timedelta(minutes=1),
        created_at=T0 - timedelta(days=1),
        release_conditions={"plc.ready": True, "door": "closed", "temp": 21.5},
        timeout_seconds=90,
    )


def test_operation_json_roundtrip() -> None:
    op = full_operation()
    data = op.to_dict()
    wire = json_roundtrip(data)
    assert wire == data  # to_dict already holds only JSON values
    back = Operation.from_dict(wire)
    assert back == op
    assert back is not op
    assert back.to_dict() == data
    assert isinstance(back.id, UUID)
    assert all(isinstance(d, OperationDependency) for d in back.dependencies)
    assert back.release_conditions == {"plc.ready": True, "door": "closed", "temp": 21.5}
    assert back.timeout_seconds == 90


def test_operation_to_dict_uses_wire_forms() -> None:
    op = full_operation()
    data = op.to_dict()
    assert list(data) == [
        "id", "job_id", "payload", "resource_id", "priority", "release_date",
        "planned_duration", "due_date", "dependencies", "state", "outcome",
        "termination_reason", "retry_count", "start_time", "finish_time", "created_at",
        "release_conditions", "timeout_seconds", "progress",
    ]
    assert data["id"] == str(op.id)
    assert data["state"] == "PAUSED" and data["outcome"] == "NONE"
    assert data["release_date"] == "2026-01-02T03:04:05.123456Z"
    assert data["finish_time"] is None
    for name in ("release_date", "due_date", "start_time", "created_at"):
        assert data[name].endswith("Z"), name
        assert "+00:00" not in data[name]
    first = data["dependencies"][0]
    assert set(first) == {"depends_on_operation_id", "dependency_type", "id", "created_at"}
    assert first["dependency_type"] == "FINISH_TO_START"
    assert first["created_at"].endswith("Z")
    assert data["payload"] == op.payload
    assert data["release_conditions"] == op.release_conditions
    assert data["timeout_seconds"] == 90


def test_timestamp_from_other_zone_serialises_as_utc_z() -> None:
    op = make_op(release_date=datetime(2026, 1, 1, 12, tzinfo=PLUS_TWO))
    assert op.to_dict()["release_date"] == "2026-01-01T10:00:00Z"


def test_dispatch_event_json_roundtrip_with_change_records() -> None:
    oid = uuid4()
    event = DispatchEvent(
        resource_id=R,
        event_type=EventType.OPERATION_STARTED,
        operation_id=oid,
        changes=[
            ChangeRecord(field="state", old_value=ExecutionState.QUEUED,
                         new_value=ExecutionState.RUNNING),
            ChangeRecord(field="start_time", old_value=None, new_value=T0),
            ChangeRecord(field="payload", old_value={"a": 1}, new_value={"a": [1, 2]}),
        ],
        meta_data={"by": "operator", "attempt": 2},
        created_at=T0,
    )
    data = event.to_dict()
    assert data["event_type"] == "operation_started"
    assert data["operation_id"] == str(oid)
    assert data["created_at"] == "2026-01-02T03:04:05.123456Z"
    assert data["changes"][0] == {"field": "state", "old_value": "QUEUED", "new_value": "RUNNING"}
    assert data["changes"][1]["new_value"] == "2026-01-02T03:04:05.123456Z"
    back = DispatchEvent.from_dict(json_roundtrip(data))
    assert back.to_dict() == data
    assert back.event_type is EventType.OPERATION_STARTED
    assert back.operation_id == oid
    assert back.id == event.id
    assert all(type(c) is ChangeRecord for c in back.changes)
    assert [c.field for c in back.changes] == ["state", "start_time", "payload"]
    assert back.meta_data == {"by": "operator", "attempt": 2}


def test_dispatcher_event_has_no_operation() -> None:
    event = DispatchEvent(resource_id=R, event_type="operation_dispatcher_started")
    data = json_roundtrip(event.to_dict())
    assert data["operation_id"] is None and data["changes"] == [] and data["meta_data"] == {}
    back = DispatchEvent.from_dict(data)
    assert back.operation_id is None
    assert back == event


@pytest.mark.parametrize(
    "window",
    [
        TimeWindow(),
        TimeWindow(start=T0),
        TimeWindow(end=T0),
        TimeWindow(start=T0, end=T0),
        TimeWindow(start=T0, end=T0 + timedelta(hours=2)),
    ],
)
def test_time_window_json_roundtrip(window: TimeWindow) -> None:
    data = window.to_dict()
    for value in data.values():
        assert value is None or value.endswith("Z")
    back = TimeWindow.from_dict(json_roundtrip(data))
    assert back == window
    assert back.to_dict() == data


def test_time_window_rules_and_contains() -> None:
    assert_rejects("end", TimeWindow, start=T0, end=T0 - timedelta(seconds=1))
    assert_rejects("start", TimeWindow, start="yesterday")
    window = TimeWindow(start=T0, end=T0 + timedelta(hours=1))
    assert window.contains(T0) and window.contains(T0 + timedelta(hours=1))
    assert not window.contains(T0 - timedelta(microseconds=1))
    assert not window.contains(T0 + timedelta(hours=1, microseconds=1))
    assert TimeWindow().contains(T0)
    assert TimeWindow(start=T0).contains(T0 + timedelta(days=999))
    assert not TimeWindow(end=T0).contains(T0 + timedelta(seconds=1))


def make_history(**fields: Any) -> tuple[History, list[Operation]]:
    a = make_op(state="COMPLETED", outcome="SUCCESS", finish_time=T0)
    b = make_op(priority=3)
    events = [
        DispatchEvent(resource_id=R, event_type="operation_dispatcher_started", created_at=T0),
        DispatchEvent(resource_id=R, event_type="operation_added", operation_id=a.id,
                      created_at=T0 + timedelta(seconds=1)),
        DispatchEvent(resource_id=R, event_type="operation_added", operation_id=b.id,
                      created_at=T0 + timedelta(seconds=2)),
        DispatchEvent(
            resource_id=R, event_type="operation_completed", operation_id=a.id,
            created_at=T0 + timedelta(seconds=5),
            changes=[ChangeRecord(field="outcome", old_value="NONE", new_value="SUCCESS")],
        ),
    ]
    fields.setdefault("operations", [a, b])
    return History(resource_id=R, events=events, **fields), [a, b]


def test_history_json_roundtrip_with_operations() -> None:
    history, ops = make_history(window=TimeWindow(start=T0, end=T0 + timedelta(minutes=1)),
                                created_at=T0)
    data = history.to_dict()
    assert data["created_at"] == "2026-01-02T03:04:05.123456Z"
    assert data["window"]["start"].endswith("Z")
    back = History.from_dict(json_roundtrip(data))
    assert back.to_dict() == data
    assert isinstance(back.window, TimeWindow)
    assert all(isinstance(e, DispatchEvent) for e in back.events)
    assert back.operations == ops
    assert all(isinstance(o, Operation) for o in back.operations)


def test_history_without_operations_roundtrip() -> None:
    history, _ = make_history(operations=None)
    data = json_roundtrip(history.to_dict())
    assert data["operations"] is None
    back = History.from_dict(data)
    assert back.operations is None
    assert back.to_dict() == history.to_dict()


def test_dispatcher_state_json_roundtrip() -> None:
    current = make_op(state=ExecutionState.RUNNING, start_time=T0, payload={"x": {"y": 1}})
    state = OperationDispatcherState(
        resource_id=R, is_running=True, is_paused=False, queue_size=4,
        current_operation=current, running_since=T0, uptime_seconds=12.5,
    )
    data = state.to_dict()
    assert data["running_since"] == "2026-01-02T03:04:05.123456Z"
    assert data["current_operation"]["state"] == "RUNNING"
    back = OperationDispatcherState.from_dict(json_roundtrip(data))
    assert back == state
    assert isinstance(back.current_operation, Operation)
    assert back.to_dict() == data
    idle = OperationDispatcherState(resource_id=R)
    assert OperationDispatcherState.from_dict(json_roundtrip(idle.to_dict())) == idle


def test_change_record_roundtrip_and_rule() -> None:
    record = ChangeRecord(field="priority", old_value=1, new_value=5)
    assert ChangeRecord.from_dict(json_roundtrip(record.to_dict())) == record
    assert_rejects("field", ChangeRecord, field="")


# ------------------------------------------------------------------------ from_dict strictness


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (Operation, {"resource_id": R}),
        (OperationDependency, {"depends_on_operation_id": str(uuid4()),
                               "dependency_type": "FINISH_TO_START"}),
        (ChangeRecord, {"field": "priority"}),
        (DispatchEvent, {"resource_id": R, "event_type": "operation_added"}),
        (TimeWindow, {}),
        (History, {"resource_id": R}),
        (OperationDispatcherState, {"resource_id": R}),
    ],
)
def test_from_dict_rejects_unknown_fields(model: Any, data: dict[str, Any]) -> None:
    assert isinstance(model.from_dict(data), model)  # the base data is fine
    err = assert_rejects("colour", model.from_dict, {**data, "colour": "red"})
    assert model.__name__ in str(err)


@pytest.mark.parametrize(
    ("model", "data", "field_name"),
    [
        (Operation, {}, "resource_id"),
        (Operation, {"priority": 3}, "resource_id"),
        (OperationDependency, {}, "dependency_type"),
        (ChangeRecord, {}, "field"),
        (DispatchEvent, {"resource_id": R}, "event_type"),
        (DispatchEvent, {"event_type": "operation_added"}, "resource_id"),
        (History, {}, "resource_id"),
        (OperationDispatcherState, {}, "resource_id"),
    ],
)
def test_from_dict_rejects_missing_required_fields(
    model: Any, data: dict[str, Any], field_name: str
) -> None:
    err = assert_rejects(field_name, model.from_dict, data)
    assert "required" in err.reason


@pytest.mark.parametrize(
    ("model", "data", "field_name"),
    [
        (Operation, {"resource_id": R, "priority": "high"}, "priority"),
        (Operation, {"resource_id": R, "release_date": "not a date"}, "release_date"),
        (Operation, {"resource_id": R, "state": "DONE"}, "state"),
        (Operation, {"resource_id": R, "id": "xyz"}, "id"),
        (Operation, {"resource_id": R, "payload": "x"}, "payload"),
        (Operation, {"resource_id": R, "timeout_seconds": "1"}, "timeout_seconds"),
        (Operation, {"resource_id": 5}, "resource_id"),
        (DispatchEvent, {"resource_id": R, "event_type": "operation_exploded"}, "event_type"),
        (DispatchEvent, {"resource_id": R, "event_type": "operation_added",
                         "operation_id": "xyz"}, "operation_id"),
        (DispatchEvent, {"resource_id": R, "event_type": "operation_added",
                         "changes": "state"}, "changes"),
        (DispatchEvent, {"resource_id": R, "event_type": "operation_added",
                         "meta_data": []}, "meta_data"),
        (DispatchEvent, {"resource_id": R, "event_type": "operation_added",
                         "changes": [{"field": ""}]}, "field"),
        (TimeWindow, {"start": "not a date"}, "start"),
        (History, {"resource_id": R, "window": "today"}, "window"),
        (History, {"resource_id": R, "events": {}}, "events"),
        (History, {"resource_id": R, "operations": {}}, "operations"),
        (History, {"resource_id": ""}, "resource_id"),
        (OperationDispatcherState, {"resource_id": R, "is_running": "yes"}, "is_running"),
        (OperationDispatcherState, {"resource_id": R, "is_paused": 1}, "is_paused"),
        (OperationDispatcherState, {"resource_id": R, "queue_size": "3"}, "queue_size"),
        (OperationDispatcherState, {"resource_id": R, "queue_size": -1}, "queue_size"),
        (OperationDispatcherState, {"resource_id": R, "uptime_seconds": "abc"}, "uptime_seconds"),
        (OperationDispatcherState, {"resource_id": R, "uptime_seconds": -1.0}, "uptime_seconds"),
        (OperationDispatcherState, {"resource_id": R, "running_since": "x"}, "running_since"),
        (OperationDispatcherState, {"resource_id": R, "current_operation": "op"},
         "current_operation"),
        (OperationDispatcherState, {"resource_id": R, "current_operation": {"priority": 1}},
         "resource_id"),
        (OperationDispatcherState, {"resource_id": 5}, "resource_id"),
    ],
)
def test_from_dict_rejects_mistyped_fields(
    model: Any, data: dict[str, Any], field_name: str
) -> None:
    assert_rejects(field_name, model.from_dict, data)


@pytest.mark.parametrize("data", [None, [], "operation", 3])
def test_from_dict_rejects_non_objects(data: Any) -> None:
    assert_rejects("Operation", Operation.from_dict, data)


def test_from_dict_names_the_first_unknown_field_and_lists_the_real_ones() -> None:
    err = assert_rejects("a_field", Operation.from_dict,
                         {"resource_id": R, "z_field": 1, "a_field": 2})
    assert "resource_id" in err.reason and "timeout_seconds" in err.reason


# --------------------------------------------------------------------------------- enums

SEED_EVENT_VALUES = {
    "operation_dispatcher_started", "operation_dispatcher_stopped",
    "operation_dispatcher_paused", "operation_dispatcher_resumed",
    "operation_start_requested", "operation_start_denied",
    "operation_cancel_requested", "operation_cancel_denied",
    "operation_pause_requested", "operation_pause_denied",
    "operation_resume_requested", "operation_resume_denied",
    "operation_added", "operation_updated", "operation_started", "operation_completed",
    "operation_failed", "operation_paused", "operation_resumed", "operation_cancelled",
}


#: event types added since the seed (issue 12: progress of the running operation)
NEW_EVENT_VALUES = {"operation_progress"}


def test_event_type_has_exactly_the_seed_wire_values() -> None:
    assert len(EventType) == 20 + len(NEW_EVENT_VALUES)
    assert {e.value for e in EventType} == SEED_EVENT_VALUES | NEW_EVENT_VALUES
    for member in EventType:
        assert member.name.lower() == member.value
        assert EventType(member.value) is member
        assert member == member.value  # a str enum: the value is the wire form
    requests = {e for e in EventType if e.is_request}
    assert {e.value for e in requests} == {v for v in SEED_EVENT_VALUES if v.endswith("_requested")}
    assert len(requests) == 4
    dispatcher = {e for e in EventType if e.is_dispatcher_event}
    assert len(dispatcher) == 4
    assert EventType.OPERATION_ADDED not in dispatcher | requests


def test_other_enums_keep_the_seed_values() -> None:
    assert [s.value for s in ExecutionState] == ["QUEUED", "RUNNING", "PAUSED", "COMPLETED"]
    assert [o.value for o in ExecutionOutcome] == ["NONE", "SUCCESS", "FAILURE", "CANCELLED"]
    assert [r.value for r in TerminationReason] == [
        "NONE", "USER_REQUEST", "TIMEOUT", "DEPENDENCY_FAILED", "INTERNAL_ERROR",
        "EXTERNAL_ERROR", "INTERRUPTED",
    ]
    assert TerminationReason("INTERRUPTED") is TerminationReason.INTERRUPTED
    assert [d.value for d in DependencyType] == ["FINISH_TO_START", "START_TO_START"]


def test_updatable_and_lifecycle_fields_are_disjoint_operation_fields() -> None:
    names = set(make_op().to_dict())
    assert UPDATABLE_FIELDS <= names and LIFECYCLE_FIELDS <= names
    assert not UPDATABLE_FIELDS & LIFECYCLE_FIELDS
    assert "id" not in UPDATABLE_FIELDS and "resource_id" not in UPDATABLE_FIELDS


# ---------------------------------------------------------------------------------- copy


def test_copy_is_equal_but_independent() -> None:
    op = full_operation()
    snapshot = op.to_dict()
    clone = op.copy()
    assert type(clone) is Operation
    assert clone == op and clone is not op
    clone.payload["pose"]["x"] = 99.0
    clone.payload["pose"]["tags"].append("c")
    clone.payload["new"] = True
    clone.release_conditions["door"] = "open"
    clone.dependencies.append(dep(uuid4()))
    clone.priority = 100
    clone.state = ExecutionState.COMPLETED
    assert op.to_dict() == snapshot
    assert op.payload["pose"] == {"x": 1.5, "tags": ["a", "b"]}
    assert len(op.dependencies) == 2
    assert clone != op


def test_copy_of_original_mutation_does_not_reach_the_copy() -> None:
    op = make_op(payload={"nested": {"n": 1}})
    clone = op.copy()
    op.payload["nested"]["n"] = 2
    assert clone.payload == {"nested": {"n": 1}}


# -------------------------------------------------------------------------------- History


def test_history_rejects_operation_not_referenced_by_any_event() -> None:
    history, (a, b) = make_history()
    stray = make_op()
    err = assert_rejects(
        "operations", History, resource_id=R, events=history.events, operations=[a, stray]
    )
    assert str(stray.id) in str(err)
    assert "not referenced by any event" in str(err)


def test_history_rejects_duplicate_operations() -> None:
    history, (a, _) = make_history()
    err = assert_rejects(
        "operations", History, resource_id=R, events=history.events, operations=[a, a.copy()]
    )
    assert str(a.id) in str(err)


def test_history_does_not_validate_unresolved_operations() -> None:
    history, _ = make_history(operations=None)
    assert history.operations is None
    empty = History(resource_id=R)
    assert empty.events == [] and empty.operations is None
    assert History(resource_id=R, operations=[]).operations == []


def test_history_helpers_from_events() -> None:
    history, (a, b) = make_history(operations=None)
    assert history.get_start() == T0
    assert history.get_end() == T0 + timedelta(seconds=5)
    assert history.get_duration_seconds() == 5.0
    assert history.get_operation_ids() == {a.id, b.id}
    assert history.get_completed_operations() == [a.id]


def test_history_helpers_prefer_the_window() -> None:
    window = TimeWindow(start=T0 - timedelta(minutes=1), end=T0 + timedelta(minutes=1))
    history, _ = make_history(window=window)
    assert history.get_start() == window.start
    assert history.get_end() == window.end
    assert history.get_duration_seconds() == 120.0
    half_open, _ = make_history(window=TimeWindow(start=T0 - timedelta(seconds=10)))
    assert half_open.get_start() == T0 - timedelta(seconds=10)
    assert half_open.get_end() == T0 + timedelta(seconds=5)
    assert half_open.get_duration_seconds() == 15.0


def test_history_helpers_when_empty() -> None:
    empty = History(resource_id=R)
    assert empty.get_start() is None
    assert empty.get_end() is None
    assert empty.get_duration_seconds() is None
    assert empty.get_operation_ids() == set()
    assert empty.get_completed_operations() == []
    assert History(resource_id=R, window=TimeWindow(start=T0)).get_duration_seconds() is None


def test_history_completed_operations_from_operations() -> None:
    history, (a, b) = make_history()
    assert history.get_completed_operations() == [a.id]
    b.state = ExecutionState.COMPLETED
    assert history.get_completed_operations() == [a.id, b.id]


def test_history_completed_operations_from_events_lists_each_once_in_order() -> None:
    a, b, c = uuid4(), uuid4(), uuid4()

    def event(kind: str, oid: UUID) -> DispatchEvent:
        return DispatchEvent(resource_id=R, event_type=kind, operation_id=oid)

    history = History(
        resource_id=R,
        events=[
            event("operation_failed", b),
            event("operation_started", c),
            event("operation_completed", a),
            event("operation_cancelled", b),
            event("operation_completed", a),
            event("operation_paused", c),
        ],
    )
    assert history.get_completed_operations() == [b, a]
    assert history.get_operation_ids() == {a, b, c}


def test_payload_nested_too_deep_is_a_validation_error() -> None:
    payload: dict = {}
    cursor = payload
    for _ in range(600):
        cursor["x"] = {}
        cursor = cursor["x"]
    with pytest.raises(ValidationError) as info:
        Operation(resource_id="r", payload=payload)
    assert info.value.field == "payload"


# ------------------------------------------------------------------ one validation (issue 11)

# Each bad constructor argument is refused with ValidationError naming the PUBLIC argument
# (before: "5" escaped as a TypeError, -1 retention named the queue's internal history_limit).
BAD_DISPATCHER_ARGUMENTS = [
    ("request_event_timeout_seconds", "5"),
    ("request_event_timeout_seconds", 2e9),
    ("request_event_timeout_seconds", math.nan),
    ("poll_interval_seconds", "0.1"),
    ("start_request_retry_cooldown_seconds", None),
    ("start_request_retry_cooldown_seconds", -1),
    ("start_request_max_retries", True),
    ("start_request_max_retries", 2.0),
    ("default_planned_duration", "30"),
    ("default_planned_duration", math.inf),
    ("operation_retention", -1),
    ("operation_retention", "10"),
    ("event_retention", 0),
    ("event_retention", None),
    ("recovery", ["fail"]),
    ("updatable_fields", 5),
    ("updatable_fields", ["id"]),
    ("default_release_conditions", {"": True}),
    ("default_release_conditions", {"door": math.nan}),
    ("resource_id", "robot-\ud800"),
]


@pytest.mark.parametrize(("name", "value"), BAD_DISPATCHER_ARGUMENTS)
def test_dispatcher_arguments_are_refused_by_their_public_name(
    tmp_path: Any, name: str, value: Any
) -> None:
    from operation_dispatcher import OperationDispatcher

    journal = tmp_path / "journal.db"
    arguments: dict[str, Any] = {"resource_id": R, "journal": journal, name: value}
    with pytest.raises(ValidationError) as raised:
        OperationDispatcher(**arguments)
    assert raised.value.field == name or raised.value.field.startswith(f"{name}.")  # or a path
    assert str(raised.value).startswith(raised.value.field)  # the message names it first
    assert not journal.exists()  # refused before anything was opened


def test_python_api_refuses_a_release_date_over_100_years_ahead(make_dispatcher: Any) -> None:
    """The limit HTTP always had holds for Operation(...) and update_operation too."""
    now = datetime.now(UTC)
    make_op(release_date=now + timedelta(days=365 * 99))  # within the limit
    with pytest.raises(ValidationError) as raised:
        make_op(release_date=now + timedelta(days=365 * 200))
    assert raised.value.field == "release_date"
    assert "100 years" in raised.value.reason
    dispatcher = make_dispatcher()
    op = dispatcher.add_operation(make_op())
    with pytest.raises(ValidationError, match="release_date"):
        dispatcher.update_operation(op.id, {"release_date": now + timedelta(days=365 * 200)})
    assert dispatcher.get_operation(op.id).release_date is None  # nothing changed


@pytest.mark.parametrize("name", ["planned_duration", "timeout_seconds"])
def test_python_api_refuses_durations_over_1e9_seconds(name: str) -> None:
    assert getattr(make_op(**{name: 1e9}), name) == 1e9
    for bad in (1e9 + 1, 10**12):
        with pytest.raises(ValidationError) as raised:
            make_op(**{name: bad})
        assert raised.value.field == name



def test_the_http_limits_are_the_cores() -> None:
    """One set of limits: the HTTP schemas take the core's constants instead of restating them."""
    from operation_dispatcher import _checks
    from operation_dispatcher.http import schemas

    assert schemas.MAX_SECONDS is _checks.MAX_SECONDS
    assert schemas.MAX_RELEASE_AHEAD is _checks.MAX_RELEASE_AHEAD

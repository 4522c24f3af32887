"""Issue 11 item 8: a leaner and faster hot path, with every guarantee kept.

Memory: a queued operation with its OPERATION_ADDED event costs <= 1 KiB (tracemalloc), because
the events and operations that have no changes, meta data, dependencies or release conditions
share read-only empties instead of each holding its own. These tests pin the budget and that the
sharing can never leak: nobody can change a shared empty, and every snapshot is plain and
changeable again.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import threading
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from conftest import RESOURCE, EventRecorder

from operation_dispatcher import (
    DependencyType,
    DispatchEvent,
    EventType,
    Operation,
    OperationDependency,
    OperationDispatcher,
)
from operation_dispatcher.models import EMPTY_DICT, EMPTY_LIST, copy_json

#: Just below a resize of the id-keyed tables (5,461 of 8,192 slots), as at 20,000 in
#: ``make bench``: at counts just past a resize the empty slots add ~40 B per operation.
MEMORY_OPS = 5_000
BYTES_PER_QUEUED_OPERATION = 1_024


def _op(i: int = 0, **fields: Any) -> Operation:
    return Operation(resource_id=RESOURCE, payload={"task": "pick", "n": i}, priority=i % 7,
                     **fields)


def test_a_queued_operation_with_its_added_event_costs_at_most_1_kib(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher()
    dispatcher.add_operation(_op())  # lazily built state outside the trace
    dispatcher.drain_events(5)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(MEMORY_OPS):
            dispatcher.add_operation(_op(i))
        dispatcher.drain_events(5)
        per_op = (tracemalloc.get_traced_memory()[0] - before) / MEMORY_OPS
    finally:
        tracemalloc.stop()
    assert len(dispatcher.get_history().events) == MEMORY_OPS + 1  # every event is still held
    assert per_op <= BYTES_PER_QUEUED_OPERATION, f"{per_op:.0f} B per queued operation"


def test_a_subscriber_cannot_change_what_other_events_share(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher()
    seen: list[DispatchEvent] = []
    errors: list[str] = []
    done = threading.Event()

    def careless(event: DispatchEvent) -> None:
        seen.append(event)
        for change in (
            lambda: event.changes.append("x"),
            lambda: event.meta_data.update(x=1),
            lambda: event.meta_data.__setitem__("x", 1),
        ):
            try:
                change()
            except TypeError as exc:
                errors.append(str(exc))
        if len(seen) == 2:
            done.set()

    dispatcher.subscribe(careless)
    first = dispatcher.add_operation(_op(1))
    second = dispatcher.add_operation(_op(2))
    assert done.wait(5)
    assert len(errors) == 6 and "read-only" in errors[0]
    for event in seen:  # the documented field types, still empty
        assert isinstance(event.changes, list) and event.changes == []
        assert isinstance(event.meta_data, dict) and event.meta_data == {}
        assert event.to_dict()["changes"] == [] and event.to_dict()["meta_data"] == {}
    for op in (first, second):
        [added] = dispatcher.list_events(op.id)
        assert added.changes == [] and added.meta_data == {}


def test_snapshots_hand_out_plain_changeable_containers(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher()
    op = dispatcher.add_operation(_op())
    for snapshot in (op, dispatcher.get_operation(op.id), dispatcher.get_schedule()[0]):
        assert snapshot is not None
        assert type(snapshot.dependencies) is list and type(snapshot.release_conditions) is dict
        snapshot.dependencies.append(OperationDependency(
            depends_on_operation_id=op.id, dependency_type=DependencyType.FINISH_TO_START
        ))
        snapshot.release_conditions["door_closed"] = True
    [event] = dispatcher.list_events(op.id)
    assert type(event.changes) is list and type(event.meta_data) is dict
    event.changes.append("x")
    event.meta_data["x"] = 1
    [history_event] = [e for e in dispatcher.get_history().events if e.operation_id == op.id]
    history_event.meta_data["y"] = 2
    # nothing of that reached the dispatcher
    stored = dispatcher.get_operation(op.id)
    assert stored is not None and stored.dependencies == [] and stored.release_conditions == {}
    [event] = dispatcher.list_events(op.id)
    assert event.changes == [] and event.meta_data == {}
    assert EMPTY_LIST == [] and EMPTY_DICT == {}


def test_an_operation_sharing_empties_can_still_be_updated(
    make_dispatcher: Callable[..., OperationDispatcher],
    make_recorder: Callable[[OperationDispatcher], EventRecorder],
) -> None:
    dispatcher = make_dispatcher()
    recorder = make_recorder(dispatcher)
    provider = dispatcher.add_operation(_op(1))
    op = dispatcher.add_operation(_op(2))
    updated = dispatcher.update_operation(
        op.id,
        {
            "release_conditions": {"door_closed": True},
            "dependencies": [{"depends_on_operation_id": str(provider.id),
                              "dependency_type": "FINISH_TO_START"}],
        },
    )
    assert updated is not None and updated.release_conditions == {"door_closed": True}
    assert [d.depends_on_operation_id for d in updated.dependencies] == [provider.id]
    [event] = recorder.wait_for(EventType.OPERATION_UPDATED)
    olds = {c.field: c.old_value for c in event.changes}
    assert olds == {"release_conditions": {}, "dependencies": []}
    assert all(type(old) in (dict, list) for old in olds.values())  # plain copies


def test_default_release_conditions_still_apply_to_an_operation_without_any(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher(default_release_conditions={"door_closed": True})
    op = dispatcher.add_operation(_op())
    assert op.release_conditions == {"door_closed": True}
    plain = make_dispatcher()
    assert plain.add_operation(_op()).release_conditions == {}


@pytest.mark.parametrize("empty", [EMPTY_LIST, EMPTY_DICT], ids=["list", "dict"])
def test_copies_of_a_shared_empty_are_plain(empty: Any) -> None:
    kind = list if isinstance(empty, list) else dict
    for clone in (copy.copy(empty), copy.deepcopy(empty), pickle.loads(pickle.dumps(empty)),
                  copy_json(empty), type(empty)(), type(empty)(kind())):
        assert type(clone) is kind and clone == kind()
        assert clone is not empty
    with pytest.raises(TypeError, match="read-only"):
        empty.clear()


def test_dataclasses_asdict_of_an_event_gives_plain_containers(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher()
    received: list[DispatchEvent] = []
    dispatcher.subscribe(received.append)
    dispatcher.add_operation(_op())
    assert dispatcher.drain_events(5)
    as_dict = dataclasses.asdict(received[0])
    assert type(as_dict["changes"]) is list and type(as_dict["meta_data"]) is dict
    as_dict["changes"].append("x")
    as_dict["meta_data"]["x"] = 1
    assert received[0].changes == [] and received[0].meta_data == {}

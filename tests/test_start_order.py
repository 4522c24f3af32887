"""``get_schedule()`` and ``GET /operations`` list operations in the order they can start: a
provider before its dependents whatever their priorities, otherwise the dispatch order (issue 12,
item 9: a high-priority dependent used to be listed before its provider)."""

from __future__ import annotations

from uuid import UUID

from conftest import RESOURCE, EventRecorder
from conftest import op as _op
from hypothesis import given, settings
from hypothesis import strategies as st

from operation_dispatcher import (
    DependencyType,
    DispatchQueue,
    EventType,
    Operation,
    OperationDependency,
)
from operation_dispatcher.queue import make_sort_key, start_order


def on(
    *providers: Operation, kind: DependencyType = DependencyType.FINISH_TO_START
) -> list[OperationDependency]:
    return [OperationDependency(depends_on_operation_id=p.id, dependency_type=kind) for p in providers]


def ids(ops: list[Operation]) -> list[UUID]:
    return [o.id for o in ops]


def test_the_schedule_is_the_order_the_dispatcher_starts_them(make_dispatcher) -> None:
    dispatcher = make_dispatcher(start_paused=True)
    recorder = EventRecorder(dispatcher)
    provider = _op(priority=0)
    dependent = _op(priority=10, dependencies=on(provider))
    after_dependent = _op(priority=20, dependencies=on(dependent, kind=DependencyType.START_TO_START))
    other = _op(priority=5)
    dispatcher.add_operations([dependent, after_dependent, other, provider])
    schedule = ids(dispatcher.get_schedule())
    assert schedule == [other.id, provider.id, dependent.id, after_dependent.id]

    started: list[UUID] = []
    dispatcher.subscribe(lambda e: started.append(e.operation_id)
                         if e.event_type is EventType.OPERATION_STARTED else None)
    dispatcher.start()
    dispatcher.resume_dispatcher_runtime()
    for key in schedule:  # finish each as it starts: the next one in the schedule starts
        recorder.wait_for(EventType.OPERATION_STARTED, operation_id=key)
        dispatcher.complete_operation(key)
    dispatcher.drain_events(5.0)
    assert started == schedule


def test_get_operations_lists_a_high_priority_dependent_after_its_provider(make_api) -> None:
    api = make_api(start=False)  # nothing starts: the whole queue is listed
    provider = api.add({"payload": {"step": "drill"}, "priority": 1})[0]
    dependent, other = api.add(
        {"payload": {"step": "tap"}, "priority": 9,
         "dependencies": [{"depends_on_operation_id": provider["id"],
                           "dependency_type": "FINISH_TO_START"}]},
        {"payload": {"step": "deburr"}, "priority": 5},
    )
    listed = [s["operation"]["id"] for s in api.get("/operations").json()]
    assert listed == [other["id"], provider["id"], dependent["id"]]
    queued = api.get("/operations", params={"state": "QUEUED"}).json()
    assert [s["operation"]["id"] for s in queued] == listed


def test_a_provider_that_is_not_queued_holds_nothing_up(make_dispatcher) -> None:
    dispatcher = make_dispatcher()
    dispatcher.start()
    running = dispatcher.add_operation(_op())  # starts at once, nobody completes it
    low = _op(priority=1)
    high_dependent = _op(priority=9, dependencies=on(running))
    dispatcher.add_operations([low, high_dependent])
    assert ids(dispatcher.get_schedule()) == [high_dependent.id, low.id]
    everything = dispatcher.get_schedule(include_current=True)
    assert ids(everything) == [running.id, high_dependent.id, low.id]


def test_a_cycle_from_an_unchecked_load_is_listed_once_each_in_dispatch_order() -> None:
    """Cycles are refused when added; a hand-edited journal loads unchecked: never stall."""
    a, b, c = (Operation(resource_id=RESOURCE, priority=p) for p in (3, 2, 1))
    a.dependencies, b.dependencies = on(b), on(a)  # a <-> b
    c.dependencies = on(a)
    queue = DispatchQueue(RESOURCE)
    queue.load([c, b, a])
    first = ids(queue.list())
    assert first == [a.id, b.id, c.id]  # the cycle broken at its best member
    assert ids(queue.list()) == first  # deterministic
    loop = Operation(resource_id=RESOURCE)
    loop.dependencies = on(loop)  # depends on itself
    queue.load([loop])
    assert sorted(ids(queue.list())) == sorted([a.id, b.id, c.id, loop.id])


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_start_order_is_a_permutation_with_every_provider_first(data: st.DataObject) -> None:
    count = data.draw(st.integers(0, 12))
    priorities = data.draw(st.lists(st.integers(-3, 3), min_size=count, max_size=count))
    ops: list[Operation] = []
    for index, priority in enumerate(priorities):
        earlier = data.draw(st.lists(st.integers(0, index - 1), max_size=3, unique=True)) if index else []
        ops.append(Operation(resource_id=RESOURCE, priority=priority,
                             dependencies=on(*(ops[i] for i in earlier))))
    added = list(reversed(ops))
    queue = DispatchQueue(RESOURCE)
    queue.add_many(added)
    listed = queue.list()
    key = make_sort_key(queue.sort_rules)
    dispatch = sorted(added, key=lambda o: (*key(o), added.index(o)))
    # the greedy the dispatcher follows: the best operation whose providers have all gone
    expected: list[Operation] = []
    while len(expected) < len(ops):
        placed = set(ids(expected))
        expected.append(next(o for o in dispatch if o.id not in placed and all(
            d.depends_on_operation_id in placed for d in o.dependencies)))
    assert listed == expected
    if not any(o.dependencies for o in ops):
        assert listed == dispatch
    assert start_order(dispatch) == expected

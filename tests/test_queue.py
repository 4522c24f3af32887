"""DispatchQueue: order, validation on add, pulling and finishing, parking, compaction."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from conftest import RESOURCE as R

from operation_dispatcher import (
    DEFAULT_SORT_RULES,
    DependencyCycle,
    DependencyError,
    DependencyType,
    DispatchQueue,
    DuplicateOperation,
    Operation,
    OperationDependency,
    OperationNotCurrent,
    ResourceMismatch,
    SortDirection,
    SortField,
    SortRule,
    ValidationError,
)

BASE = datetime(2026, 1, 1, tzinfo=UTC)


def mk(
    priority: int = 0,
    release: int | None = None,
    created: int = 0,
    deps: Iterable[UUID] = (),
    **fields: Any,
) -> Operation:
    """An operation; ``release`` and ``created`` are minutes and seconds after BASE."""
    fields.setdefault("resource_id", R)
    return Operation(
        priority=priority,
        release_date=None if release is None else BASE + timedelta(minutes=release),
        created_at=BASE + timedelta(seconds=created),
        dependencies=[
            OperationDependency(depends_on_operation_id=p, dependency_type="FINISH_TO_START")
            for p in deps
        ],
        **fields,
    )


def expected_order(ops: Sequence[Operation], rules: Sequence[SortRule] | None) -> list[Operation]:
    """The dispatch order computed independently: stable multi-pass sort, last rule first.

    ``ops`` is in insertion order, which decides whatever the rules leave tied.
    """
    rules = list(DEFAULT_SORT_RULES if rules is None else rules)
    if all(rule.field is not SortField.CREATED_AT for rule in rules):
        rules.append(SortRule(SortField.CREATED_AT, SortDirection.ASC, True))
    out = list(ops)
    for rule in reversed(rules):
        name = rule.field.value
        present = [op for op in out if getattr(op, name) is not None]
        missing = [op for op in out if getattr(op, name) is None]
        present.sort(key=lambda op: getattr(op, name),
                     reverse=rule.direction is SortDirection.DESC)
        out = present + missing if rule.none_last else missing + present
    return out


def ids(ops: Iterable[Operation]) -> list[UUID]:
    return [op.id for op in ops]


def drain_ready(q: DispatchQueue) -> list[Operation]:
    out = []
    while (op := q.pop_ready()) is not None:
        out.append(op)
    return out


# ------------------------------------------------------------------------------ ordering


def test_default_order() -> None:
    a = mk(priority=100)  # no release date: after every dated operation
    b = mk(release=10)
    c = mk(release=5)
    d = mk(release=5, priority=3)
    e = mk(priority=1, created=2)
    f = mk(priority=1, created=1)
    g = mk(release=-60, priority=-1)  # in the past: still a date, still first
    q = DispatchQueue(R, [a, b, c, d, e, f, g])
    assert ids(q.list()) == ids([g, d, c, b, a, f, e])
    assert q.peek() is g and q.peek_ready() is g
    assert ids(drain_ready(q)) == ids([g, d, c, b, a, f, e])


def test_default_rules_and_created_at_tie_break() -> None:
    created_at = SortRule(SortField.CREATED_AT, SortDirection.ASC, True)
    assert DEFAULT_SORT_RULES == (
        SortRule(SortField.RELEASE_DATE, SortDirection.ASC, True),
        SortRule(SortField.PRIORITY, SortDirection.DESC, True),
    )
    assert DispatchQueue(R).sort_rules == (*DEFAULT_SORT_RULES, created_at)
    by_priority = SortRule(SortField.PRIORITY, SortDirection.DESC)
    assert DispatchQueue(R, sort_rules=[by_priority]).sort_rules == (by_priority, created_at)
    newest_first = SortRule(SortField.CREATED_AT, SortDirection.DESC)
    assert DispatchQueue(R, sort_rules=[newest_first]).sort_rules == (newest_first,)
    # the tie-break: inserted newest first, dispatched oldest first
    ops = [mk(created=s) for s in (3, 1, 2, 0)]
    q = DispatchQueue(R, ops)
    assert [op.created_at.second for op in q.list()] == [0, 1, 2, 3]
    q = DispatchQueue(R, ops, sort_rules=[newest_first])
    assert [op.created_at.second for op in q.list()] == [3, 2, 1, 0]


def population(seed: int) -> list[Operation]:
    """Twenty operations with few distinct keys, so ties are common, in a shuffled order."""
    rng = random.Random(seed)
    ops = [
        mk(priority=p, release=r, created=c)
        for p, r, c in itertools.product((0, 2, 5), (None, 0, 30), (0, 1))
    ][:18]
    ops += [mk(priority=2, release=None, created=1), mk(priority=5, release=0, created=0)]
    rng.shuffle(ops)
    return ops


ALL_RULES = [
    SortRule(field, direction, none_last)
    for field in SortField
    for direction in SortDirection
    for none_last in (True, False)
]
RULE_PAIRS = [(a, b) for a in ALL_RULES for b in ALL_RULES if a.field is not b.field]


def rule_id(rules: Sequence[SortRule]) -> str:
    return "+".join(
        f"{r.field.value}-{r.direction.value}-{'nl' if r.none_last else 'nf'}" for r in rules
    )


@pytest.mark.parametrize("rule", ALL_RULES, ids=[rule_id([r]) for r in ALL_RULES])
def test_single_rule_order(rule: SortRule) -> None:
    ops = population(1)
    q = DispatchQueue(R, ops, sort_rules=[rule])
    expected = ids(expected_order(ops, [rule]))
    assert ids(q.list()) == expected
    assert q.peek() is q.list()[0]
    assert ids(drain_ready(q)) == expected


@pytest.mark.parametrize("rules", RULE_PAIRS, ids=[rule_id(p) for p in RULE_PAIRS])
def test_two_rule_order(rules: tuple[SortRule, SortRule]) -> None:
    ops = population(2)
    q = DispatchQueue(R, sort_rules=rules)
    for op in ops:  # one by one this time
        q.add(op)
    expected = ids(expected_order(ops, rules))
    assert ids(q.list()) == expected
    assert ids(drain_ready(q)) == expected


def test_none_last_holds_in_both_directions() -> None:
    dated_early, dated_late, undated = mk(release=0), mk(release=10), mk()
    for direction in SortDirection:
        last = SortRule(SortField.RELEASE_DATE, direction, none_last=True)
        first = SortRule(SortField.RELEASE_DATE, direction, none_last=False)
        q = DispatchQueue(R, [undated, dated_early, dated_late], sort_rules=[last])
        assert q.list()[-1] is undated
        q = DispatchQueue(R, [dated_early, dated_late, undated], sort_rules=[first])
        assert q.list()[0] is undated
    desc = SortRule(SortField.RELEASE_DATE, SortDirection.DESC, True)
    assert DispatchQueue(R, [dated_early, undated, dated_late], sort_rules=[desc]).list() == [
        dated_late, dated_early, undated
    ]


@pytest.mark.parametrize(
    "rules", [None, [SortRule(SortField.PRIORITY, SortDirection.DESC)],
              [SortRule(SortField.CREATED_AT, SortDirection.DESC)]]
)
def test_equal_keys_keep_insertion_order(rules: list[SortRule] | None) -> None:
    ops = [mk(priority=1, release=5) for _ in range(50)]
    q = DispatchQueue(R, sort_rules=rules)
    q.add_many(ops[:20])
    for op in ops[20:]:
        q.add(op)
    assert ids(q.list()) == ids(ops)
    q.resort()
    assert ids(q.list()) == ids(ops)
    pulled = []
    while (op := q.next()) is not None:
        pulled.append(op)
        q.complete(op)
    assert ids(pulled) == ids(ops)


def test_rekey_without_change_keeps_the_place_among_equals() -> None:
    ops = [mk() for _ in range(5)]
    q = DispatchQueue(R, ops)
    q.rekey(ops[0].id)
    q.park(ops[1].id, ["cooldown"])
    q.rekey(ops[1].id)
    q.unpark("cooldown")
    q.resort()
    assert ids(q.list()) == ids(ops)
    assert ids(drain_ready(q)) == ids(ops)


def test_sort_rule_validation() -> None:
    with pytest.raises(ValidationError) as info:
        DispatchQueue(R, sort_rules=[])
    assert isinstance(info.value, ValueError) and info.value.field == "sort_rules"
    with pytest.raises(ValidationError) as info:
        DispatchQueue(R, sort_rules=[("priority", "desc")])  # type: ignore[list-item]
    assert info.value.field == "sort_rules"
    with pytest.raises(ValidationError) as info:
        SortRule("colour")  # type: ignore[arg-type]
    assert info.value.field == "sort_rules.field"
    with pytest.raises(ValidationError) as info:
        SortRule(SortField.PRIORITY, "sideways")  # type: ignore[arg-type]
    assert info.value.field == "sort_rules.direction"
    rule = SortRule("priority", "desc", False)  # type: ignore[arg-type]
    assert rule.field is SortField.PRIORITY and rule.direction is SortDirection.DESC
    assert rule.none_last is False
    assert SortRule(SortField.PRIORITY).direction is SortDirection.ASC


def test_constructor_validation() -> None:
    with pytest.raises(ValidationError) as info:
        DispatchQueue("")
    assert info.value.field == "resource_id"
    with pytest.raises(ValidationError) as info:
        DispatchQueue(R, history_limit=-1)
    assert info.value.field == "history_limit"


# --------------------------------------------------------------------- validation on add


def test_resource_mismatch_is_rejected() -> None:
    q = DispatchQueue(R)
    stranger = mk(resource_id="robot-2")
    with pytest.raises(ResourceMismatch) as info:
        q.add(stranger)
    assert isinstance(info.value, ValueError)
    assert "robot-2" in str(info.value) and R in str(info.value)
    assert str(stranger.id) in str(info.value)
    assert len(q) == 0 and q.get(stranger.id) is None
    with pytest.raises(ResourceMismatch):
        DispatchQueue(R, [mk(), stranger])


def test_non_operation_is_rejected() -> None:
    with pytest.raises(ValidationError):
        DispatchQueue(R).add({"resource_id": R})  # type: ignore[arg-type]


def test_same_object_twice_is_rejected() -> None:
    q = DispatchQueue(R)
    op = mk()
    q.add(op)
    with pytest.raises(DuplicateOperation) as info:
        q.add(op)
    assert isinstance(info.value, ValueError)
    assert str(op.id) in str(info.value)
    assert len(q) == 1


def test_same_id_is_rejected() -> None:
    q = DispatchQueue(R)
    op = mk()
    q.add(op)
    with pytest.raises(DuplicateOperation):
        q.add(mk(id=op.id, priority=9))
    assert q.list() == [op]


def test_same_id_in_one_batch_is_rejected() -> None:
    q = DispatchQueue(R)
    op = mk()
    with pytest.raises(DuplicateOperation):
        q.add_many([op, mk(), op])
    assert len(q) == 0


@pytest.mark.parametrize("where", ["parked", "pulled", "archived", "cancelled", "lookup"])
def test_id_known_elsewhere_is_rejected(where: str) -> None:
    op = mk()
    known = {op.id: op} if where == "lookup" else {}
    q = DispatchQueue(R, lookup=known.get)
    if where != "lookup":
        q.add(op)
    if where == "parked":
        q.park(op.id, ["cooldown"])
    elif where == "pulled":
        q.next()
    elif where == "archived":
        q.complete(q.next())
    elif where == "cancelled":
        q.cancel(op.id)
    with pytest.raises(DuplicateOperation):
        q.add(mk(id=op.id))


def test_id_of_an_archived_op_evicted_by_the_limit_is_free_again() -> None:
    q = DispatchQueue(R, history_limit=1)
    first, second = mk(), mk()
    q.add_many([first, second])
    q.cancel(first.id)
    q.cancel(second.id)
    assert q.get(first.id) is None
    q.add(mk(id=first.id))
    assert first.id in q


def test_unknown_provider_is_rejected_naming_both_ids() -> None:
    q = DispatchQueue(R)
    provider = uuid4()
    dependent = mk(deps=[provider])
    with pytest.raises(DependencyError) as info:
        q.add(dependent)
    err = info.value
    assert isinstance(err, ValueError)
    assert not isinstance(err, DependencyCycle)
    assert str(dependent.id) in str(err) and str(provider) in str(err)
    assert err.operation_id == dependent.id and err.provider_id == provider
    assert len(q) == 0


def test_start_to_start_dependency_is_validated_too() -> None:
    q = DispatchQueue(R)
    provider = mk()
    op = Operation(resource_id=R, dependencies=[
        OperationDependency(depends_on_operation_id=provider.id,
                            dependency_type=DependencyType.START_TO_START)
    ])
    with pytest.raises(DependencyError):
        q.add(op)
    q.add(provider)
    q.add(op)
    assert q.list() == [provider, op]


@pytest.mark.parametrize("where", ["queued", "parked", "pulled", "archived"])
def test_provider_known_to_the_queue_is_accepted(where: str) -> None:
    q = DispatchQueue(R)
    provider = mk()
    q.add(provider)
    if where == "parked":
        q.park(provider.id, ["release_date"])
    elif where == "pulled":
        q.next()
    elif where == "archived":
        q.complete(q.next())
    dependent = mk(deps=[provider.id])
    q.add(dependent)
    assert dependent.id in q


def test_provider_later_in_the_same_batch_is_accepted() -> None:
    q = DispatchQueue(R)
    provider = mk(priority=0)
    middle = mk(priority=5, deps=[provider.id])
    dependent = mk(priority=10, deps=[provider.id, middle.id])
    q.add_many([dependent, middle, provider])
    # listed in the order they can start: each provider before its dependents (issue 12)
    assert q.list() == [provider, middle, dependent]


def test_provider_known_only_via_lookup_is_accepted() -> None:
    provider = mk(state="COMPLETED", outcome="SUCCESS")
    asked: list[UUID] = []

    def lookup(operation_id: UUID) -> Operation | None:
        asked.append(operation_id)
        return provider if operation_id == provider.id else None

    q = DispatchQueue(R, lookup=lookup)
    dependent = mk(deps=[provider.id])
    q.add(dependent)
    assert provider.id in asked
    assert q.list() == [dependent]
    assert q.get(provider.id) is None  # lookup only vouches for it, the queue does not hold it
    with pytest.raises(DependencyError):
        DispatchQueue(R).add(mk(deps=[provider.id]))  # no lookup: unknown


def test_two_cycle_in_a_batch_is_rejected() -> None:
    a_id, b_id = uuid4(), uuid4()
    a = mk(id=a_id, deps=[b_id])
    b = mk(id=b_id, deps=[a_id])
    q = DispatchQueue(R)
    with pytest.raises(DependencyCycle) as info:
        q.add_many([a, b, mk()])
    err = info.value
    assert isinstance(err, DependencyError) and isinstance(err, ValueError)
    assert str(a_id) in str(err) and str(b_id) in str(err)
    assert err.cycle[0] == err.cycle[-1]
    assert set(err.cycle) == {a_id, b_id}
    assert len(q) == 0


def test_longer_cycle_in_a_batch_is_rejected() -> None:
    ids_ = [uuid4() for _ in range(4)]
    ops = [mk(id=ids_[i], deps=[ids_[(i + 1) % 3]]) for i in range(3)]
    ops.append(mk(id=ids_[3], deps=[ids_[0]]))  # hangs off the cycle, not part of it
    q = DispatchQueue(R)
    with pytest.raises(DependencyCycle) as info:
        q.add_many(reversed(ops))
    cycle = info.value.cycle
    assert cycle[0] == cycle[-1] and len(cycle) == 4
    assert set(cycle) == set(ids_[:3])
    for oid in ids_[:3]:
        assert str(oid) in str(info.value)
    assert len(q) == 0


def test_diamond_is_not_a_cycle() -> None:
    top = mk()
    left, right = mk(deps=[top.id]), mk(deps=[top.id])
    bottom = mk(deps=[left.id, right.id])
    q = DispatchQueue(R, [bottom, left, right, top])
    assert len(q) == 4


def test_check_dependencies_catches_a_cycle_through_an_updated_copy() -> None:
    a = mk()
    b = mk(deps=[a.id])
    q = DispatchQueue(R, [a, b])
    updated = a.copy()
    updated.dependencies = [
        OperationDependency(depends_on_operation_id=b.id, dependency_type="START_TO_START")
    ]
    with pytest.raises(DependencyCycle) as info:
        q.check_dependencies([updated])
    assert {a.id, b.id} == set(info.value.cycle)
    q.check_dependencies([a.copy()])  # an unchanged copy is fine


@pytest.mark.parametrize(
    "bad",
    [
        lambda: mk(resource_id="robot-2"),
        lambda: mk(deps=[uuid4()]),
        lambda: "not an operation",
    ],
    ids=["resource", "dependency", "type"],
)
def test_add_many_is_all_or_nothing(bad: Any) -> None:
    q = DispatchQueue(R)
    existing = mk()
    q.add(existing)
    batch = [mk(), mk(priority=4), bad(), mk()]
    with pytest.raises(ValueError):
        q.add_many(batch)
    assert q.list() == [existing]
    for op in batch:
        if isinstance(op, Operation):
            assert q.get(op.id) is None
    good = [op for op in batch if isinstance(op, Operation) and op.resource_id == R
            and not op.dependencies]
    q.add_many(good)  # none of them was half-added
    assert len(q) == 1 + len(good)


def test_add_many_accepts_a_generator_and_nothing() -> None:
    q = DispatchQueue(R)
    q.add_many(mk() for _ in range(3))
    q.add_many([])
    assert len(q) == 3


# ------------------------------------------------------------------------------ lookups


def test_get_finds_queued_parked_pulled_and_archived_operations() -> None:
    queued, parked, pulled, archived, cancelled = (mk(priority=p) for p in (1, 2, 4, 5, 3))
    q = DispatchQueue(R, [archived])
    q.complete(q.next())
    q.add(pulled)
    assert q.next() is pulled
    q.add_many([queued, parked, cancelled])
    q.park(parked.id, ["cooldown"])
    assert q.cancel(cancelled.id) is cancelled
    for op in (queued, parked, pulled, archived, cancelled):
        assert q.get(op.id) is op
    assert q.get(uuid4()) is None
    assert queued.id in q and parked.id in q
    assert pulled.id not in q and archived.id not in q
    assert q.is_queued(parked.id) and not q.is_queued(pulled.id)
    assert len(q) == 2


# --------------------------------------------------------------- pull, complete, cancel


def test_next_pulls_the_head() -> None:
    q = DispatchQueue(R)
    assert q.next() is None and q.pulled_operation is None
    low, high = mk(priority=1), mk(priority=9)
    q.add_many([low, high])
    assert q.next() is high
    assert q.pulled_operation is high
    assert len(q) == 1 and q.list() == [low]
    with pytest.raises(OperationNotCurrent) as info:
        q.next()
    assert isinstance(info.value, RuntimeError)
    assert info.value.operation_id == high.id
    q.complete(high)
    assert q.pulled_operation is None
    assert q.next() is low


def test_next_pulls_a_parked_head() -> None:
    head, other = mk(priority=9), mk(priority=1)
    q = DispatchQueue(R, [head, other])
    q.park(head.id, ["release_date"])
    assert q.next() is head
    assert q.parked_count == 0 and q.blocker_names() == []


def test_pull_takes_exactly_the_named_operation() -> None:
    head, other = mk(priority=9), mk(priority=1)
    q = DispatchQueue(R, [head, other])
    assert q.pull(other.id) is other
    assert q.pulled_operation is other and q.list() == [head]
    with pytest.raises(OperationNotCurrent):
        q.pull(head.id)
    q.complete(other)
    with pytest.raises(LookupError):
        q.pull(uuid4())
    with pytest.raises(LookupError):
        q.pull(other.id)  # archived, not queued
    q.park(head.id, ["x"])
    assert q.pull(head.id) is head
    assert q.blocker_names() == []


def test_release_pulled_does_not_archive() -> None:
    op = mk()
    q = DispatchQueue(R, [op])
    q.next()
    assert q.release_pulled() is op
    assert q.pulled_operation is None and q.history() == [] and q.get(op.id) is None
    assert q.release_pulled() is None


def test_complete_rules() -> None:
    op = mk()
    q = DispatchQueue(R, [op])
    with pytest.raises(OperationNotCurrent):
        q.complete(op)  # queued, not pulled
    q.next()
    with pytest.raises(OperationNotCurrent):
        q.complete(op.copy())  # equal is not enough: it must be the pulled object
    with pytest.raises(ResourceMismatch):
        q.complete(mk(resource_id="robot-2"))
    snapshot = op.to_dict()
    q.complete(op)
    assert op.to_dict() == snapshot  # the queue does not touch operation fields
    assert q.pulled_operation is None
    assert q.completed_operations == [op]
    with pytest.raises(OperationNotCurrent):
        q.complete(op)


def test_cancel() -> None:
    pulled, queued, parked = mk(priority=9), mk(priority=5), mk(priority=1)
    q = DispatchQueue(R, [pulled, queued, parked])
    q.next()
    q.park(parked.id, ["dependency:x"])
    assert q.cancel(queued.id) is queued
    assert q.cancel(pulled.id) is pulled
    assert q.pulled_operation is None
    assert q.cancel(parked.id) is parked
    assert q.parked_under("dependency:x") == [] and q.blocker_names() == []
    assert len(q) == 0
    assert q.completed_operations == [queued, pulled, parked]
    assert q.cancel(queued.id) is None  # already archived
    assert q.cancel(uuid4()) is None
    assert len(q.completed_operations) == 3


def test_remove() -> None:
    a, b, c = mk(priority=3), mk(priority=2), mk(priority=1)
    q = DispatchQueue(R, [a, b, c])
    q.next()
    q.park(c.id, ["cooldown"])
    assert q.remove(a.id) is None  # pulled: not removable
    assert q.pulled_operation is a
    assert q.remove(b.id) is b
    assert q.remove(c.id) is c
    assert q.remove(c.id) is None and q.remove(uuid4()) is None
    assert len(q) == 0 and q.history() == []
    assert q.get(b.id) is None and q.get(c.id) is None
    assert q.blocker_names() == []
    q.add(b)  # removed ids are forgotten, so the operation can come back
    assert q.list() == [b]


def test_clear_and_clear_history() -> None:
    done, pulled, queued, parked = (mk(priority=p) for p in (9, 8, 2, 1))
    q = DispatchQueue(R, [done])
    q.complete(q.next())
    q.add_many([pulled, queued, parked])
    q.next()
    q.park(parked.id, ["cooldown"])
    q.clear()
    assert len(q) == 0 and q.list() == [] and q.parked_count == 0
    assert q.blocker_names() == [] and q.peek() is None and q.pop_ready() is None
    assert q.pulled_operation is pulled and q.history() == [done]
    q.clear_history()
    assert q.history() == [] and q.completed_operations == []
    assert q.pulled_operation is pulled
    q.add(queued)
    assert q.list() == [queued]


def test_history_is_most_recent_first() -> None:
    ops = [mk(priority=-i) for i in range(5)]
    q = DispatchQueue(R, ops)
    while (op := q.next()) is not None:
        q.complete(op)
    assert q.completed_operations == ops
    assert q.history() == ops[::-1]
    assert q.history(limit=2) == [ops[4], ops[3]]
    assert q.history(limit=0) == []
    assert q.history(limit=-3) == []
    assert q.history(limit=100) == ops[::-1]
    returned = q.history()
    returned.clear()
    assert len(q.history()) == 5


@pytest.mark.parametrize("limit", [0, 1, 3])
def test_history_limit_bounds_the_archive(limit: int) -> None:
    ops = [mk(priority=-i) for i in range(6)]
    q = DispatchQueue(R, ops, history_limit=limit)
    for op in ops:
        q.cancel(op.id)
    kept = ops[len(ops) - limit:] if limit else []
    assert q.completed_operations == kept
    assert q.history() == kept[::-1]
    for op in ops:
        assert (q.get(op.id) is op) == (op in kept)


def test_unbounded_history() -> None:
    ops = [mk() for _ in range(50)]
    q = DispatchQueue(R, ops, history_limit=None)
    for op in ops:
        q.cancel(op.id)
    assert len(q.history()) == 50


# ----------------------------------------------------------------------------- parking


def test_park_and_unpark() -> None:
    a, b, c = mk(priority=9), mk(priority=5), mk(priority=1)
    q = DispatchQueue(R, [a, b, c])
    q.park(a.id, ["release_date"])
    q.park(b.id, ["release_condition:plc.ready", "dependency:42"])
    assert q.parked_count == 2 and len(q) == 3
    assert q.peek_ready() is c
    assert q.peek() is a  # the head of the dispatch order, parked or not
    assert q.list() == [a, b, c]
    assert q.blockers(a.id) == frozenset({"release_date"})
    assert q.blockers(c.id) == frozenset()
    assert q.parked_under("release_date") == [a.id]
    assert sorted(q.blocker_names()) == sorted(
        ["release_date", "release_condition:plc.ready", "dependency:42"]
    )
    assert q.unpark("nothing-parked-here") == []

    assert q.unpark("dependency:42") == [b.id]
    # any one blocker brings it back; the dispatcher re-parks it if something still holds it
    assert q.blockers(b.id) == frozenset()
    assert "release_condition:plc.ready" not in q.blocker_names()
    assert q.peek_ready() is b
    assert q.pop_ready() is b
    assert q.pop_ready() is c
    assert q.pop_ready() is None and q.peek_ready() is None
    assert q.peek() is a and len(q) == 1

    assert q.unpark("release_date") == [a.id]
    assert q.parked_count == 0 and q.blocker_names() == []
    assert q.pop_ready() is a
    assert len(q) == 0


def test_unpark_returns_every_operation_under_the_blocker() -> None:
    ops = [mk(priority=i) for i in range(6)]
    q = DispatchQueue(R, ops)
    for op in ops[::2]:
        q.park(op.id, ["cooldown"])
    q.park(ops[1].id, ["other"])
    assert set(q.unpark("cooldown")) == set(ids(ops[::2]))
    assert q.parked_under("cooldown") == []
    assert q.parked_count == 1
    assert q.list() == ops[::-1]
    assert drain_ready(q) == [op for op in ops[::-1] if op is not ops[1]]


def test_park_again_replaces_the_blockers() -> None:
    op = mk()
    q = DispatchQueue(R, [op])
    q.park(op.id, ["a", "b"])
    q.park(op.id, ["c"])
    assert q.blockers(op.id) == frozenset({"c"})
    assert q.parked_under("a") == [] and q.unpark("a") == []
    assert sorted(q.blocker_names()) == ["c"]
    assert q.unpark("c") == [op.id]


def test_park_errors() -> None:
    op = mk()
    q = DispatchQueue(R, [op])
    with pytest.raises(ValueError):
        q.park(op.id, [])
    with pytest.raises(LookupError):
        q.park(uuid4(), ["cooldown"])
    q.next()
    with pytest.raises(LookupError):
        q.park(op.id, ["cooldown"])  # pulled, not queued


def test_unpark_operation_and_unpark_all() -> None:
    a, b, c = mk(priority=1), mk(priority=2), mk(priority=3)
    q = DispatchQueue(R, [a, b, c])
    assert q.unpark_operation(a.id) is False
    q.park(a.id, ["x"])
    q.park(b.id, ["y"])
    q.park(c.id, ["x", "y"])
    assert q.unpark_operation(c.id) is True
    assert q.parked_under("x") == [a.id] and q.parked_under("y") == [b.id]
    assert q.unpark_all() == 2
    assert q.unpark_all() == 0
    assert q.blocker_names() == []
    assert drain_ready(q) == [c, b, a]


def test_rekey_after_changing_priority() -> None:
    a, b, c, d = (mk(priority=p) for p in (4, 3, 2, 1))
    q = DispatchQueue(R, [a, b, c, d])
    q.park(b.id, ["cooldown"])
    d.priority = 10
    q.rekey(d.id)
    b.priority = 20
    q.rekey(b.id)
    assert q.list() == [b, d, a, c]
    assert q.peek() is b and q.peek_ready() is d
    a.priority = -1
    q.rekey(a.id)
    assert q.list() == [b, d, c, a]
    q.rekey(uuid4())  # unknown: nothing happens
    q.unpark("cooldown")
    assert drain_ready(q) == [b, d, c, a]


def test_resort_after_changes_behind_the_queues_back() -> None:
    ops = [mk(priority=i) for i in range(10)]
    q = DispatchQueue(R, ops)
    q.park(ops[3].id, ["cooldown"])
    for op in ops:
        op.priority = -op.priority
    q.resort()
    assert q.list() == ops
    q.unpark_all()
    assert drain_ready(q) == ops


def test_rekey_after_changing_release_date() -> None:
    early, late = mk(release=1), mk(release=2)
    q = DispatchQueue(R, [early, late])
    late.release_date = BASE
    q.rekey(late.id)
    assert q.list() == [late, early]
    late.release_date = None
    q.rekey(late.id)
    assert q.list() == [early, late]


# --------------------------------------------------------------------------- compaction


def test_heap_stays_bounded_after_many_removes() -> None:
    ops = [mk(priority=i % 7) for i in range(2000)]
    q = DispatchQueue(R, ops)
    for i, op in enumerate(ops[:-10]):
        removed = q.remove(op.id) if i % 2 else q.cancel(op.id)
        assert removed is op
        assert len(q._heap) <= max(64, 2 * len(q)) + 1
    assert len(q) == 10
    assert len(q._heap) <= 64
    assert q.list() == expected_order(ops[-10:], None)
    assert drain_ready(q) == expected_order(ops[-10:], None)


def test_heap_stays_bounded_under_park_unpark_and_rekey_churn() -> None:
    ops = [mk(priority=i) for i in range(20)]
    q = DispatchQueue(R, ops)
    for i in range(3000):
        op = ops[i % len(ops)]
        if i % 3 == 0:
            q.park(op.id, ["cooldown"])
            q.unpark("cooldown")
        else:
            op.priority = (op.priority * 7 + 3) % 11
            q.rekey(op.id)
        assert len(q._heap) <= max(64, 2 * len(q)) + 1
    assert q.list() == expected_order(ops, None)
    assert drain_ready(q) == expected_order(ops, None)

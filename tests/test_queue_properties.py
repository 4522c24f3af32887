"""Property test: DispatchQueue behaves like a plain list sorted on every read."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

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
    DEFAULT_SORT_RULES,
    DispatchQueue,
    Operation,
    SortDirection,
    SortField,
    SortRule,
)

BASE = datetime(2026, 1, 1, tzinfo=UTC)
BLOCKERS = ("release_date", "cooldown", "dependency:x")

priorities = st.integers(min_value=-1, max_value=2)
release_dates = st.sampled_from([None, BASE, BASE + timedelta(minutes=5)])
created_ats = st.sampled_from([BASE, BASE + timedelta(seconds=1)])
sort_rules = st.none() | st.lists(
    st.builds(SortRule, st.sampled_from(SortField), st.sampled_from(SortDirection),
              st.booleans()),
    min_size=1,
    max_size=3,
)


def model_order(ops: Sequence[Operation], rules: Sequence[SortRule] | None) -> list[Operation]:
    """Stable multi-pass sort (least significant rule first) of ops in insertion order."""
    rules = list(DEFAULT_SORT_RULES if rules is None else rules)
    if all(r.field is not SortField.CREATED_AT for r in rules):
        rules.append(SortRule(SortField.CREATED_AT, SortDirection.ASC, True))
    out = list(ops)
    for r in reversed(rules):
        name = r.field.value
        present = [op for op in out if getattr(op, name) is not None]
        missing = [op for op in out if getattr(op, name) is None]
        present.sort(key=lambda op: getattr(op, name), reverse=r.direction is SortDirection.DESC)
        out = present + missing if r.none_last else missing + present
    return out


class QueueVersusSortedList(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.rules: list[SortRule] | None = None
        self.queue = DispatchQueue(R)
        self.model: list[Operation] = []  # queued operations in insertion order
        self.parked: dict[UUID, frozenset[str]] = {}

    # ---------------------------------------------------------------------------- helpers
    def order(self) -> list[Operation]:
        return model_order(self.model, self.rules)

    def ready_order(self) -> list[Operation]:
        return [op for op in self.order() if op.id not in self.parked]

    def pick(self, index: int) -> Operation:
        return self.model[index % len(self.model)]

    @staticmethod
    def new_op(priority: int, release_date: datetime | None, created_at: datetime) -> Operation:
        return Operation(
            resource_id=R, priority=priority, release_date=release_date, created_at=created_at
        )

    # ------------------------------------------------------------------------------ rules
    @initialize(rules=sort_rules)
    def choose_rules(self, rules: list[SortRule] | None) -> None:
        self.rules = rules
        self.queue = DispatchQueue(R, sort_rules=rules)

    @rule(priority=priorities, release_date=release_dates, created_at=created_ats)
    def add(self, priority: int, release_date: datetime | None, created_at: datetime) -> None:
        op = self.new_op(priority, release_date, created_at)
        self.queue.add(op)
        self.model.append(op)

    @rule(keys=st.lists(st.tuples(priorities, release_dates, created_ats), max_size=4))
    def add_many(self, keys: list[tuple[int, datetime | None, datetime]]) -> None:
        ops = [self.new_op(*k) for k in keys]
        self.queue.add_many(ops)
        self.model.extend(ops)

    @precondition(lambda self: self.model)
    @rule(index=st.integers(min_value=0))
    def remove(self, index: int) -> None:
        op = self.pick(index)
        assert self.queue.remove(op.id) is op
        self.model.remove(op)
        self.parked.pop(op.id, None)
        assert self.queue.get(op.id) is None

    @rule()
    def pop_ready(self) -> None:
        ready = self.ready_order()
        popped = self.queue.pop_ready()
        if not ready:
            assert popped is None
            return
        assert popped is ready[0]
        self.model.remove(popped)

    @precondition(lambda self: self.model)
    @rule(index=st.integers(min_value=0),
          blockers=st.sets(st.sampled_from(BLOCKERS), min_size=1, max_size=2))
    def park(self, index: int, blockers: set[str]) -> None:
        op = self.pick(index)
        self.queue.park(op.id, blockers)
        self.parked[op.id] = frozenset(blockers)

    @rule(blocker=st.sampled_from(BLOCKERS))
    def unpark(self, blocker: str) -> None:
        expected = {oid for oid, names in self.parked.items() if blocker in names}
        assert set(self.queue.unpark(blocker)) == expected
        for oid in expected:
            del self.parked[oid]

    @precondition(lambda self: self.model)
    @rule(index=st.integers(min_value=0), priority=priorities, release_date=release_dates)
    def rekey(self, index: int, priority: int, release_date: datetime | None) -> None:
        op = self.pick(index)
        op.priority = priority
        op.release_date = release_date
        self.queue.rekey(op.id)

    # ------------------------------------------------------------------------- invariants
    @invariant()
    def same_order(self) -> None:
        order = self.order()
        assert [op.id for op in self.queue.list()] == [op.id for op in order]
        ready = [op for op in order if op.id not in self.parked]
        assert self.queue.peek_ready() is (ready[0] if ready else None)
        assert self.queue.peek() is (order[0] if order else None)

    @invariant()
    def same_contents(self) -> None:
        assert len(self.queue) == len(self.model)
        assert self.queue.parked_count == len(self.parked)
        for op in self.model:
            assert self.queue.get(op.id) is op
            assert self.queue.blockers(op.id) == self.parked.get(op.id, frozenset())
        expected_blockers = {name for names in self.parked.values() for name in names}
        assert set(self.queue.blocker_names()) == expected_blockers

    @invariant()
    def heap_is_bounded(self) -> None:
        assert len(self.queue._heap) <= max(64, 2 * len(self.queue)) + 1


def test_queue_matches_a_sorted_list_model(tmp_path: Path) -> None:
    # Hypothesis caches into ./.hypothesis by default; keep everything inside tmp_path. (A plain
    # function rather than the generated TestCase, so that the pytest plugin does not touch the
    # cache while collecting, before this redirection runs.)
    set_hypothesis_home_dir(tmp_path / ".hypothesis")
    try:
        run_state_machine_as_test(
            QueueVersusSortedList,
            settings=settings(
                max_examples=200,
                stateful_step_count=30,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        set_hypothesis_home_dir(None)

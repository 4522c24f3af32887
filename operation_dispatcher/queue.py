"""DispatchQueue: the operations waiting for one resource, in dispatch order.

A binary heap (``heapq``) keyed by the sort rules, with lazy deletion and an id index, so adding,
popping and removing cost O(log n) and a lookup by id O(1) -- the original re-sorted the whole
list (plus a topological sort) on every add. Equal keys keep their insertion order.

Operations that cannot start yet are *parked*: taken off the heap and filed under the names of
what blocks them (``release_date``, ``release_condition:plc.ready``, ``dependency:<id>``,
``cooldown``). When a blocker clears, :meth:`unpark` puts its operations back on the heap. This
is what lets the dispatcher start the best operation that CAN start instead of waiting behind a
blocked head (design.md section 4). The queue itself never decides what blocks an operation: it
has no clock, signals or threads; the dispatcher does that and tells it.

Like the original, the queue also holds the one *pulled* (current) operation and a bounded
archive of finished ones, so it can be used on its own (see ``examples/dispatch_queue.py``).
"""

from __future__ import annotations

import builtins
import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

from .errors import (
    DependencyCycle,
    DependencyError,
    DuplicateOperation,
    OperationNotCurrent,
    ResourceMismatch,
    ValidationError,
)
from .models import Operation
from .ordering import (  # the order lives in ordering.py; importable from here as before
    DEFAULT_SORT_RULES,
    SortDirection,
    SortField,
    SortRule,
    make_sort_key,
    normalize_sort_rules,
)


def find_cycle(
    start: Iterable[UUID], providers_of: Callable[[UUID], Iterable[UUID]]
) -> list[UUID] | None:
    """Return a dependency cycle reachable from ``start`` as [a, b, ..., a], or None.

    Iterative depth-first search, so a long chain cannot hit the recursion limit.
    """
    done: set[UUID] = set()
    for root in start:
        if root in done:
            continue
        path: list[UUID] = [root]
        on_path = {root}
        stack = [iter(providers_of(root))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                node = path.pop()
                on_path.discard(node)
                done.add(node)
                continue
            if nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            if nxt in done:
                continue
            path.append(nxt)
            on_path.add(nxt)
            stack.append(iter(providers_of(nxt)))
    return None


def start_order(ops: list[Operation]) -> list[Operation]:
    """``ops`` (given in dispatch order) in the order they can start.

    Each step takes the first operation in dispatch order whose providers among ``ops`` are all
    placed, as the dispatcher starts the best operation that can start: a provider always comes
    before its dependents, whatever their priorities, and otherwise the dispatch order holds.
    A provider that is not among ``ops`` (running, finished, forgotten) holds nothing up. A
    cycle (refused when added, so only from a hand-edited journal) cannot stall the listing: its
    first operation in dispatch order goes next, as if its providers were placed. O(n log n + e).
    """
    if not any(op.dependencies for op in ops):
        return ops  # the common case: nothing to reorder
    rank = {op.id: index for index, op in enumerate(ops)}
    waiting = [0] * len(ops)  # providers of each operation not placed yet
    dependents: dict[int, list[int]] = {}
    for index, op in enumerate(ops):
        providers = {rank[d.depends_on_operation_id] for d in op.dependencies
                     if d.depends_on_operation_id in rank} - {index}
        waiting[index] = len(providers)
        for provider in providers:
            dependents.setdefault(provider, []).append(index)
    ready = [index for index, count in enumerate(waiting) if count == 0]  # sorted: a heap
    placed = [False] * len(ops)
    order: list[Operation] = []
    first_unplaced = 0
    while len(order) < len(ops):
        if ready:
            index = heapq.heappop(ready)
        else:  # only operations in a cycle are left: break it in dispatch order
            while placed[first_unplaced]:
                first_unplaced += 1
            index = first_unplaced
        placed[index] = True
        order.append(ops[index])
        for dependent in dependents.get(index, ()):
            waiting[dependent] -= 1
            if waiting[dependent] == 0 and not placed[dependent]:
                heapq.heappush(ready, dependent)
    return order


class DispatchQueue:
    """The queued operations of one resource, their current (pulled) one and recent finished ones.

    :param resource_id: the resource every operation must name.
    :param operations: operations to add at once (validated as one batch).
    :param sort_rules: the dispatch order; None gives :data:`DEFAULT_SORT_RULES`.
    :param history_limit: how many finished operations the archive keeps (None: all).
    :param lookup: says (truthy) whether an id belongs to an operation the queue no longer
        holds (e.g. in a journal), so that dependencies on it are accepted and its id is not
        reused.

    >>> q = DispatchQueue("robot-1")
    >>> q.add(Operation(resource_id="robot-1", priority=10))
    >>> q.next()   # the head becomes the pulled operation
    """

    def __init__(
        self,
        resource_id: str,
        operations: Iterable[Operation] | None = None,
        sort_rules: Iterable[SortRule] | None = None,
        *,
        history_limit: int | None = 10_000,
        lookup: Callable[[UUID], object] | None = None,
    ) -> None:
        if not isinstance(resource_id, str) or not resource_id:
            raise ValidationError("resource_id", "must be a non-empty string")
        if history_limit is not None and history_limit < 0:
            raise ValidationError("history_limit", "must be >= 0 or None")
        self._resource_id = resource_id
        self._rules = normalize_sort_rules(sort_rules)
        self._key = make_sort_key(self._rules)
        self._seq = itertools.count()
        self._heap: list[tuple[Any, ...]] = []
        self._ready: dict[UUID, tuple[Any, ...]] = {}  # id -> its live heap entry
        self._parked: dict[UUID, tuple[tuple[Any, ...], frozenset[str]]] = {}
        self._by_blocker: dict[str, set[UUID]] = {}
        self._pulled: Operation | None = None
        self._archive: OrderedDict[UUID, Operation] = OrderedDict()
        self._history_limit = history_limit
        self._lookup = lookup
        if operations is not None:
            self.add_many(operations)

    # ------------------------------------------------------------------ properties and reads
    @property
    def resource_id(self) -> str:
        return self._resource_id

    @property
    def sort_rules(self) -> tuple[SortRule, ...]:
        return self._rules

    @property
    def pulled_operation(self) -> Operation | None:
        """The current operation (RUNNING or PAUSED), if one was pulled."""
        return self._pulled

    @property
    def completed_operations(self) -> list[Operation]:
        """The archive in completion order (a new list)."""
        return list(self._archive.values())

    @property
    def parked_count(self) -> int:
        return len(self._parked)

    def __len__(self) -> int:
        """Number of queued operations (parked included, the pulled one not)."""
        return len(self._ready) + len(self._parked)

    def __contains__(self, operation_id: object) -> bool:
        return operation_id in self._ready or operation_id in self._parked

    def is_queued(self, operation_id: UUID) -> bool:
        return operation_id in self._ready or operation_id in self._parked

    def get(self, operation_id: UUID) -> Operation | None:
        """The operation with this id: queued, pulled or archived; None if unknown. O(1)."""
        entry = self._ready.get(operation_id)
        if entry is not None:
            return entry[-1]
        parked = self._parked.get(operation_id)
        if parked is not None:
            return parked[0][-1]
        if self._pulled is not None and self._pulled.id == operation_id:
            return self._pulled
        return self._archive.get(operation_id)

    def list(self) -> list[Operation]:
        """The queued operations in the order they can start (:func:`start_order` of the
        dispatch order: a provider before its dependents); the heap is not disturbed."""
        entries = list(self._ready.values())
        entries.extend(entry for entry, _ in self._parked.values())
        entries.sort()
        return start_order([entry[-1] for entry in entries])

    def history(self, limit: int | None = None) -> builtins.list[Operation]:
        """Finished operations, most recent first, at most ``limit``."""
        items = list(reversed(self._archive.values()))
        return items if limit is None else items[: max(limit, 0)]

    # ------------------------------------------------------------------------------ adding
    def _check_new(self, operations: builtins.list[Operation]) -> None:
        batch: dict[UUID, Operation] = {}
        for op in operations:
            if not isinstance(op, Operation):
                raise ValidationError("operation", f"must be an Operation, got {type(op).__name__}")
            if op.resource_id != self._resource_id:
                raise ResourceMismatch(op.id, op.resource_id, self._resource_id)
            op_id = op.id
            if op_id in batch or self._knows(op_id):
                raise DuplicateOperation(op_id)
            batch[op_id] = op
        self.check_dependencies(operations, batch)

    def _knows(self, operation_id: UUID) -> bool:
        if self.get(operation_id) is not None:
            return True
        return self._lookup is not None and bool(self._lookup(operation_id))

    def check_dependencies(
        self, operations: builtins.list[Operation], batch: dict[UUID, Operation] | None = None
    ) -> None:
        """Reject unknown providers and cycles among ``operations`` and the queued ones.

        ``batch`` are operations about to be added together (they may depend on each other);
        ``operations`` may also be updated copies of queued operations.
        """
        if not any(op.dependencies for op in operations):
            return  # no new edge: no unknown provider, no new cycle (the common case)
        batch = batch if batch is not None else {}
        replaced = {op.id: op for op in operations}
        for op in operations:
            for dep in op.dependencies:
                provider = dep.depends_on_operation_id
                if provider not in batch and not self._knows(provider):
                    raise DependencyError(op.id, provider, "no such operation is known")

        def providers_of(operation_id: UUID) -> list[UUID]:
            op = replaced.get(operation_id)
            if op is None and self.is_queued(operation_id):
                op = self.get(operation_id)
            return [d.depends_on_operation_id for d in op.dependencies] if op else []

        cycle = find_cycle(replaced, providers_of)
        if cycle is not None:
            raise DependencyCycle(cycle)

    def _push(self, op: Operation) -> tuple[Any, ...]:
        entry = (*self._key(op), next(self._seq), op)
        heapq.heappush(self._heap, entry)
        self._ready[op.id] = entry
        return entry

    def add(self, op: Operation) -> None:
        """Queue ``op``; raises on a wrong resource, a reused id, or a bad dependency."""
        self._check_new([op])
        self._push(op)

    def load(self, operations: Iterable[Operation]) -> None:
        """Queue operations read back from a journal, in their stored order, without checks:
        they were checked when they were first added."""
        for op in operations:
            self._push(op)

    def restore_pulled(self, op: Operation) -> None:
        """Make a journaled RUNNING or PAUSED operation the current one again."""
        if self._pulled is not None:
            raise OperationNotCurrent("another operation is already current", self._pulled.id)
        self._pulled = op

    def add_many(self, operations: Iterable[Operation]) -> None:
        """Queue several operations, all or none: each is checked before any is added."""
        ops = list(operations)
        self._check_new(ops)
        for op in ops:
            self._push(op)

    # ------------------------------------------------------------------------- the heap
    def _top(self) -> tuple[Any, ...] | None:
        heap, ready = self._heap, self._ready
        while heap:
            entry = heap[0]
            if ready.get(entry[-1].id) is entry:
                return entry
            heapq.heappop(heap)  # lazily drop entries of removed or parked operations
        return None

    def _forget(self, operation_id: UUID) -> Operation | None:
        """Take an operation off the ready index or out of the parking lot."""
        entry = self._ready.pop(operation_id, None)
        if entry is None:
            parked = self._parked.pop(operation_id, None)
            if parked is None:
                return None
            entry, blockers = parked
            self._drop_blockers(operation_id, blockers)
        self._maybe_compact()
        return entry[-1]

    def _maybe_compact(self) -> None:
        # Lazy deletion leaves dead entries in the heap; rebuild once they outnumber the live
        # ones, so memory stays proportional to what is queued. Amortised O(1) per removal.
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self._ready):
            self._heap = list(self._ready.values())
            heapq.heapify(self._heap)

    def peek_ready(self) -> Operation | None:
        """The best operation that is not parked, or None."""
        entry = self._top()
        return None if entry is None else entry[-1]

    def peek(self) -> Operation | None:
        """The head of the dispatch order (parked operations included), or None."""
        best = self._top()
        for entry, _ in self._parked.values():
            if best is None or entry < best:
                best = entry
        return None if best is None else best[-1]

    def pop_ready(self) -> Operation | None:
        """Remove and return the best operation that is not parked."""
        entry = self._top()
        if entry is None:
            return None
        heapq.heappop(self._heap)
        del self._ready[entry[-1].id]
        return entry[-1]

    def rekey(self, operation_id: UUID) -> None:
        """Re-place a queued operation after a change to a field the sort rules use."""
        # The new entry keeps the old sequence number, so an operation keeps its insertion
        # place among equal keys (a re-key is not a re-insertion).
        entry = self._ready.get(operation_id)
        if entry is not None:
            op = entry[-1]
            fresh = (*self._key(op), entry[-2], op)
            heapq.heappush(self._heap, fresh)  # the old entry is now dead and dropped lazily
            self._ready[operation_id] = fresh
            self._maybe_compact()
            return
        parked = self._parked.get(operation_id)
        if parked is not None:
            entry, blockers = parked
            op = entry[-1]
            self._parked[operation_id] = ((*self._key(op), entry[-2], op), blockers)

    def resort(self) -> None:
        """Re-key every queued operation (after changing fields behind the queue's back)."""
        for operation_id in list(self._ready):
            self.rekey(operation_id)
        for operation_id in list(self._parked):
            self.rekey(operation_id)

    # ---------------------------------------------------------------------------- parking
    def park(self, operation_id: UUID, blockers: Iterable[str]) -> None:
        """Take a queued operation off the heap until every one of ``blockers`` is unparked."""
        names = frozenset((blockers,) if isinstance(blockers, str) else blockers)
        if not names:
            raise ValueError("park needs at least one blocker")
        entry = self._ready.pop(operation_id, None)
        if entry is None:
            parked = self._parked.get(operation_id)
            if parked is None:
                raise LookupError(f"operation {operation_id} is not queued")
            entry, old = parked
            self._drop_blockers(operation_id, old)
        self._parked[operation_id] = (entry, names)
        for name in names:
            self._by_blocker.setdefault(name, set()).add(operation_id)
        self._maybe_compact()

    def _drop_blockers(self, operation_id: UUID, blockers: frozenset[str]) -> None:
        for name in blockers:
            ids = self._by_blocker.get(name)
            if ids is not None:
                ids.discard(operation_id)
                if not ids:
                    del self._by_blocker[name]

    @property
    def has_parked(self) -> bool:
        """Whether any operation is parked (callers skip building blocker keys when none is)."""
        return bool(self._by_blocker)

    def unpark(self, blocker: str) -> builtins.list[UUID]:
        """Put every operation parked under ``blocker`` back on the heap; return their ids.

        An operation parked under several blockers comes back as soon as any one clears: the
        dispatcher re-checks it and parks it again if something still holds it. That keeps the
        queue free of any idea of *why* a blocker cleared.
        """
        ids = self._by_blocker.pop(blocker, None)
        if not ids:
            return []
        for operation_id in ids:
            self.unpark_operation(operation_id)
        return list(ids)

    def unpark_operation(self, operation_id: UUID) -> bool:
        """Put one parked operation back on the heap; False if it was not parked."""
        parked = self._parked.pop(operation_id, None)
        if parked is None:
            return False
        entry, blockers = parked
        self._drop_blockers(operation_id, blockers)
        heapq.heappush(self._heap, entry)
        self._ready[operation_id] = entry
        return True

    def unpark_all(self) -> int:
        """Put every parked operation back on the heap; return how many."""
        ids = list(self._parked)
        for operation_id in ids:
            self.unpark_operation(operation_id)
        return len(ids)

    def blockers(self, operation_id: UUID) -> frozenset[str]:
        """What the operation is parked under (empty if it is not parked)."""
        parked = self._parked.get(operation_id)
        return parked[1] if parked is not None else frozenset()

    def parked_under(self, blocker: str) -> builtins.list[UUID]:
        """Ids of the operations parked under ``blocker``."""
        return list(self._by_blocker.get(blocker, ()))

    def blocker_names(self) -> builtins.list[str]:
        """Every blocker name that holds at least one operation."""
        return list(self._by_blocker)

    # ----------------------------------------------------------- pulling and finishing
    def next(self) -> Operation | None:
        """Pull the head of the dispatch order (parked or not) and make it current."""
        if self._pulled is not None:
            raise OperationNotCurrent(
                "cannot pull next operation while another operation is active", self._pulled.id
            )
        head = self.peek()
        return None if head is None else self.pull(head.id)

    def pull(self, operation_id: UUID) -> Operation:
        """Make this queued operation the current one (exactly this one, not the head)."""
        if self._pulled is not None:
            raise OperationNotCurrent(
                "cannot pull next operation while another operation is active", self._pulled.id
            )
        op = self._forget(operation_id)
        if op is None:
            raise LookupError(f"operation {operation_id} is not queued")
        self._pulled = op
        return op

    def release_pulled(self) -> Operation | None:
        """Clear the current slot without archiving; returns what was there."""
        op, self._pulled = self._pulled, None
        return op

    def archive(self, op: Operation) -> None:
        """Add a finished operation to the archive, dropping the oldest beyond the limit."""
        self._archive[op.id] = op
        self._archive.move_to_end(op.id)
        limit = self._history_limit
        if limit is not None:
            while len(self._archive) > limit:
                self._archive.popitem(last=False)

    def complete(self, op: Operation) -> None:
        """Archive the pulled operation ``op`` and free the current slot."""
        if op.resource_id != self._resource_id:
            raise ResourceMismatch(op.id, op.resource_id, self._resource_id)
        if self._pulled is not op:
            raise OperationNotCurrent(
                "operation must be pulled from this schedule before completion", op.id
            )
        self._pulled = None
        self.archive(op)

    def cancel(self, operation_id: UUID) -> Operation | None:
        """Move the pulled or a queued operation to the archive; None if neither."""
        if self._pulled is not None and self._pulled.id == operation_id:
            op: Operation | None = self._pulled
            self._pulled = None
        else:
            op = self._forget(operation_id)
        if op is None:
            return None
        self.archive(op)
        return op

    def remove(self, operation_id: UUID) -> Operation | None:
        """Take a queued operation out without archiving it; None if it is not queued."""
        return self._forget(operation_id)

    def clear(self) -> None:
        """Drop every queued operation (not the pulled one, not the archive)."""
        self._heap.clear()
        self._ready.clear()
        self._parked.clear()
        self._by_blocker.clear()

    def clear_history(self) -> None:
        """Empty the archive of finished operations."""
        self._archive.clear()


__all__ = [
    "DEFAULT_SORT_RULES",
    "DispatchQueue",
    "SortDirection",
    "SortField",
    "SortRule",
    "find_cycle",
    "make_sort_key",
    "normalize_sort_rules",
    "start_order",
]

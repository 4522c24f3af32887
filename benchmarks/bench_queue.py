"""Adding: the bare DispatchQueue and ``OperationDispatcher.add_operation``, and their memory.

DispatchQueue: add per operation at 1k/10k/100k queued, get by id with snapshot, memory.
OperationDispatcher (not started, no subscriber): ``add_operation`` per operation at 1k/10k/100k
queued (the copy, the checks, the queue, the OPERATION_ADDED event, its history entry and its
publication, the returned snapshot), and the bytes traced per queued operation with its
OPERATION_ADDED event.

Targets (design.md section 11): queue add <= 20 us per operation and flat from 1k to 100k queued;
``add_operation`` <= 15 us per operation, flat; get by id including the snapshot copy <= 10 us at
100k queued; <= 1 KB traced per queued operation (through the dispatcher: its event included).
Every figure comes with a plain-stdlib baseline measured in this same run.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import random
import threading
import time
import tracemalloc
from collections import deque
from typing import Any
from uuid import uuid4

from benchmarks.common import emit, timer
from operation_dispatcher import DispatchQueue, Operation, OperationDispatcher

RESOURCE = "robot-1"
LEVELS = (1_000, 10_000, 100_000)
BATCH = 1_000
ADD_REPEAT = 7
GET_IDS = 20_000
GET_REPEAT = 5
MEMORY_OPS = 20_000
FIELDS = tuple(f.name for f in dataclasses.fields(Operation))


def _label(level: int) -> str:
    return f"{level // 1000}k" if level % 1000 == 0 else str(level)


def make_ops(count: int, start: int = 0) -> list[Operation]:
    """``count`` valid operations with small payloads and priorities 0..6."""
    return [
        Operation(resource_id=RESOURCE, payload={"task": "pick", "n": i}, priority=i % 7)
        for i in range(start, start + count)
    ]


def bench_add(pool: list[Operation]) -> tuple[dict[int, float], dict[int, float], DispatchQueue]:
    """us/op of adding a batch of BATCH to a queue holding each level; returns the 100k queue."""
    top = max(LEVELS)
    batches = [pool[top + r * BATCH : top + (r + 1) * BATCH] for r in range(ADD_REPEAT)]
    ours: dict[int, float] = {}
    base: dict[int, float] = {}
    queue = DispatchQueue(RESOURCE)
    for level in LEVELS:
        queue = DispatchQueue(RESOURCE)
        queue.add_many(pool[:level])
        # Baseline: what a bare heapq queue with an id index does per add.
        index: dict[Any, tuple[int, int, Operation]] = {}
        heap: list[tuple[int, int, Operation]] = []
        seq = itertools.count()
        for op in pool[:level]:
            entry = (op.priority, next(seq), op)
            index[op.id] = entry
            heapq.heappush(heap, entry)
        ours_runs: list[float] = []
        base_runs: list[float] = []
        add = queue.add
        push = heapq.heappush
        for batch in batches:  # alternate ours and baseline so drift hits both alike
            with timer() as t:
                for op in batch:
                    add(op)
            ours_runs.append(t.us / len(batch))
            for op in batch:  # back to `level` queued (the heap keeps dead entries lazily)
                queue.remove(op.id)

            saved_heap = heap[:]
            with timer() as t:
                for op in batch:
                    entry = (op.priority, next(seq), op)
                    index[op.id] = entry
                    push(heap, entry)
            base_runs.append(t.us / len(batch))
            for op in batch:
                del index[op.id]
            heap[:] = saved_heap
        ours[level] = sorted(ours_runs)[len(ours_runs) // 2]
        base[level] = sorted(base_runs)[len(base_runs) // 2]
        assert len(queue) == level
    return ours, base, queue


def bench_get(queue: DispatchQueue, ops: list[Operation]) -> tuple[float, float, float]:
    """us/op of ``get(id).copy()``, of a bare dict lookup + a copy of a dict with one key per
    field (19), and of get alone."""
    ids = [op.id for op in random.Random(2).sample(ops, GET_IDS)]
    table = {op.id: {name: getattr(op, name) for name in FIELDS} for op in ops}
    assert len(FIELDS) == 19  # progress joined the 18 of the original
    get = queue.get
    for i in ids[:100]:  # the snapshot really is a copy of the queued operation
        assert get(i).copy() == get(i)
    ours_runs: list[float] = []
    base_runs: list[float] = []
    bare_runs: list[float] = []
    for _ in range(GET_REPEAT):
        with timer() as t:
            for i in ids:
                get(i).copy()
        ours_runs.append(t.us / len(ids))
        with timer() as t:
            for i in ids:
                dict(table[i])
        base_runs.append(t.us / len(ids))
        with timer() as t:
            for i in ids:
                get(i)
        bare_runs.append(t.us / len(ids))
    mid = GET_REPEAT // 2
    return sorted(ours_runs)[mid], sorted(base_runs)[mid], sorted(bare_runs)[mid]


def bench_memory() -> tuple[float, float]:
    """Bytes traced per operation: created and queued, vs payload dicts in a dict + heap."""
    Operation(resource_id=RESOURCE)  # warm lazily built module state outside the trace
    DispatchQueue(RESOURCE).add(Operation(resource_id=RESOURCE))

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        queue = DispatchQueue(RESOURCE)
        for i in range(MEMORY_OPS):
            queue.add(
                Operation(resource_id=RESOURCE, payload={"task": "pick", "n": i}, priority=i % 7)
            )
        ours = (tracemalloc.get_traced_memory()[0] - before) / MEMORY_OPS
        assert len(queue) == MEMORY_OPS
        del queue

        before = tracemalloc.get_traced_memory()[0]
        index: dict[Any, tuple[int, int, dict[str, Any]]] = {}
        heap: list[tuple[int, int, dict[str, Any]]] = []
        for i in range(MEMORY_OPS):
            entry = (i % 7, i, {"task": "pick", "n": i})
            index[uuid4()] = entry
            heapq.heappush(heap, entry)
        base = (tracemalloc.get_traced_memory()[0] - before) / MEMORY_OPS
        del index, heap
    finally:
        tracemalloc.stop()
    return ours, base


class _StdlibDispatcher:
    """The baseline of ``add_operation``: what a bare stdlib dispatcher does per add.

    Under one Condition: copy the operation (a 19-key dict), index it by id, push it on a heap,
    record a 7-key event dict in a bounded deque, hand the event to a delivery deque and notify;
    then return a copy of what was stored.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.RLock())
        self.index: dict[Any, dict[str, Any]] = {}
        self.heap: list[tuple[int, int, Any]] = []
        self.seq = itertools.count()
        self.events: deque[dict[str, Any]] = deque(maxlen=10_000)
        self.pending: deque[dict[str, Any]] = deque()

    def add(self, op: dict[str, Any]) -> dict[str, Any]:
        with self.cond:
            stored = dict(op)
            stored["payload"] = dict(op["payload"])
            op_id = stored["id"]
            if op_id in self.index:
                raise ValueError("duplicate")
            self.index[op_id] = stored
            heapq.heappush(self.heap, (-stored["priority"], next(self.seq), op_id))
            event = {
                "id": uuid4(), "resource_id": RESOURCE, "event_type": "operation_added",
                "operation_id": op_id, "changes": [], "meta_data": {}, "created_at": time.time(),
            }
            self.events.append(event)
            self.pending.append(event)
            self.cond.notify_all()
            copy = dict(stored)
            copy["payload"] = dict(stored["payload"])
            return copy

    def remove(self, op_id: Any) -> None:
        with self.cond:
            del self.index[op_id]  # the heap keeps dead entries lazily, like the queue's


def bench_dispatcher_add(pool: list[Operation]) -> tuple[dict[int, float], dict[int, float]]:
    """us/op of ``add_operation`` with each level queued, against the stdlib dispatcher."""
    top = max(LEVELS)
    batches = [pool[top + r * BATCH : top + (r + 1) * BATCH] for r in range(ADD_REPEAT)]
    dicts = {op.id: {name: getattr(op, name) for name in FIELDS} for op in pool}
    ours: dict[int, float] = {}
    base: dict[int, float] = {}
    for level in LEVELS:
        dispatcher = OperationDispatcher(RESOURCE)
        dispatcher.add_operations(pool[:level])
        baseline = _StdlibDispatcher()
        for op in pool[:level]:
            baseline.add(dicts[op.id])
        ours_runs: list[float] = []
        base_runs: list[float] = []
        add = dispatcher.add_operation
        for batch in batches:  # alternate ours and baseline so drift hits both alike
            with timer() as t:
                for op in batch:
                    add(op)
            ours_runs.append(t.us / len(batch))
            for op in batch:  # back to `level` queued
                dispatcher.cancel_operation(op.id)
            dispatcher.drain_events(10)
            entries = [dicts[op.id] for op in batch]
            base_add = baseline.add
            with timer() as t:
                for entry in entries:
                    base_add(entry)
            base_runs.append(t.us / len(batch))
            for op in batch:
                baseline.remove(op.id)
        ours[level] = sorted(ours_runs)[len(ours_runs) // 2]
        base[level] = sorted(base_runs)[len(base_runs) // 2]
        assert len(dispatcher.get_schedule()) == level
        dispatcher.close(10)
    return ours, base


def bench_dispatcher_memory() -> tuple[float, float]:
    """Bytes traced per operation created and queued through ``add_operation`` (its
    OPERATION_ADDED event, history entry and index included), vs a stdlib equivalent."""
    warm = OperationDispatcher(RESOURCE)  # lazily built module state outside the trace
    warm.add_operation(Operation(resource_id=RESOURCE))
    warm.close(10)
    # every event retained, so none of the measured ones is evicted (and freed) on the way
    dispatcher = OperationDispatcher(RESOURCE, event_retention=2 * MEMORY_OPS)
    dispatcher.add_operation(Operation(resource_id=RESOURCE))
    dispatcher.drain_events(10)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(MEMORY_OPS):
            dispatcher.add_operation(
                Operation(resource_id=RESOURCE, payload={"task": "pick", "n": i}, priority=i % 7)
            )
        dispatcher.drain_events(10)
        ours = (tracemalloc.get_traced_memory()[0] - before) / MEMORY_OPS

        before = tracemalloc.get_traced_memory()[0]
        index: dict[Any, tuple[int, int, dict[str, Any]]] = {}
        heap: list[tuple[int, int, dict[str, Any]]] = []
        events: deque[dict[str, Any]] = deque(maxlen=10_000 + MEMORY_OPS)
        for i in range(MEMORY_OPS):
            op_id = uuid4()
            entry = (i % 7, i, {"task": "pick", "n": i})
            index[op_id] = entry
            heapq.heappush(heap, entry)
            events.append({"id": uuid4(), "operation_id": op_id, "created_at": time.time()})
        base = (tracemalloc.get_traced_memory()[0] - before) / MEMORY_OPS
        del index, heap, events
    finally:
        tracemalloc.stop()
        dispatcher.close(10)
    return ours, base


def main() -> None:
    # Memory first, while the heap of this fresh interpreter is still small and clean.
    mem, mem_base = bench_memory()
    dmem, dmem_base = bench_dispatcher_memory()

    pool = make_ops(max(LEVELS) + ADD_REPEAT * BATCH)
    ours, base, queue_100k = bench_add(pool)
    for level in LEVELS:
        emit(
            f"queue.add@{_label(level)}",
            ours[level],
            "us/op",
            base[level],
            target="<= 20 us/op",
            queued=level,
            batch=BATCH,
            repeat=ADD_REPEAT,
            baseline_desc="dict insert + heapq.heappush of (priority, seq, op)",
        )
    low, high = min(LEVELS), max(LEVELS)
    emit(
        "queue.add.flatness",
        ours[high] / ours[low],
        "x",
        base[high] / base[low],
        target="<= 2 x",
        desc=f"add us/op at {_label(high)} queued / at {_label(low)} (O(n) would be ~100x)",
        baseline_desc="the same ratio for the dict + heapq baseline",
    )

    get_us, get_base, get_bare = bench_get(queue_100k, pool[:high])
    emit(
        f"queue.get_snapshot@{_label(high)}",
        get_us,
        "us/op",
        get_base,
        target="<= 10 us/op",
        queued=len(queue_100k),
        lookups=GET_IDS,
        repeat=GET_REPEAT,
        get_without_copy_us=get_bare,
        baseline_desc="dict lookup + dict() copy of a 19-key dict",
    )

    emit(
        "queue.memory_per_op",
        mem,
        "bytes/op",
        mem_base,
        target="<= 1024 bytes/op",
        operations=MEMORY_OPS,
        method="tracemalloc, Operation created + queued",
        baseline_desc="payload dict + uuid4 key in a dict + (priority, seq, payload) on a heap",
    )
    emit(
        "dispatch.memory_per_queued_op",
        dmem,
        "bytes/op",
        dmem_base,
        target="<= 1024 bytes/op",
        operations=MEMORY_OPS,
        method="tracemalloc, Operation created + add_operation (its OPERATION_ADDED event, "
        "history entry and indexes included); dispatcher not started",
        baseline_desc="the queue baseline + a 3-key event dict (uuid4 id) in a deque",
    )

    d_ours, d_base = bench_dispatcher_add(pool)
    for level in LEVELS:
        emit(
            f"dispatch.add_operation@{_label(level)}",
            d_ours[level],
            "us/op",
            d_base[level],
            target="<= 15 us/op",
            queued=level,
            batch=BATCH,
            repeat=ADD_REPEAT,
            desc="OperationDispatcher.add_operation (not started, no subscriber), snapshot "
            "returned",
            baseline_desc="under one Condition: 19-key dict copy, id index, heappush, a 7-key "
            "event dict into a bounded deque and a delivery deque, notify_all, copy returned",
        )
    emit(
        "dispatch.add_operation.flatness",
        d_ours[high] / d_ours[low],
        "x",
        d_base[high] / d_base[low],
        target="<= 2 x",
        desc=f"add_operation us/op at {_label(high)} queued / at {_label(low)}",
        baseline_desc="the same ratio for the stdlib dispatcher",
    )


if __name__ == "__main__":
    main()

"""DispatchQueue: add per operation at 1k/10k/100k queued, get by id with snapshot, memory.

Targets (design.md section 11): add <= 20 us per operation and flat from 1k to 100k queued; get by
id including the snapshot copy <= 10 us at 100k queued; <= 1 KB traced per queued operation.
Every figure comes with a plain-stdlib baseline measured in this same run.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import random
import tracemalloc
from typing import Any
from uuid import uuid4

from benchmarks.common import emit, timer
from operation_dispatcher import DispatchQueue, Operation

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
    """us/op of ``get(id).copy()``, of a bare dict lookup + 18-key dict copy, and of get alone."""
    ids = [op.id for op in random.Random(2).sample(ops, GET_IDS)]
    table = {op.id: {name: getattr(op, name) for name in FIELDS} for op in ops}
    assert len(FIELDS) == 18
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


def main() -> None:
    # Memory first, while the heap of this fresh interpreter is still small and clean.
    mem, mem_base = bench_memory()

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
        baseline_desc="dict lookup + dict() copy of an 18-key dict",
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


if __name__ == "__main__":
    main()

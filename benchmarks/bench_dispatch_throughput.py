"""OperationDispatcher end to end: ops/s with approval in the callback and completion elsewhere.

Each run starts a dispatcher (``start()``) whose request callback approves (returns True), with
events on: a subscriber hands every OPERATION_STARTED to a separate completer thread that calls
``complete_operation``, and counts OPERATION_COMPLETED. N operations are added up front, one
``add_operation`` call each; the figure is N / (time from the first add to the delivery of the last
OPERATION_COMPLETED), the median over RUNS runs.

Baseline, alternated with ours in the same run: a bare stdlib worker thread over a heapq guarded by
one ``threading.Condition`` doing the same handshake. It pops the best item, hands the approval
question to an approver thread and waits on the Condition for the answer (the dispatcher runs
request callbacks off its own thread, so a hung callback cannot stall it), hands the item to a
completer thread and waits until the completer reports it done; the main thread adds the N items
one by one (heappush + notify) exactly as ours does. A second baseline that calls approve() on the
worker itself (one hand-off fewer) is reported beside it, with its ratio.

Target (design.md section 11): >= 40 % of the baseline's ops/s.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import statistics
import threading
import time
from typing import Any

from benchmarks.common import emit
from operation_dispatcher import DispatchEvent, EventType, Operation, OperationDispatcher

RESOURCE = "robot-1"
N = 5_000
RUNS = 5
TARGET_RATIO = 0.4
WAIT_SECONDS = 60.0


def make_ops(count: int) -> list[Operation]:
    return [
        Operation(resource_id=RESOURCE, payload={"task": "pick", "n": i}, priority=i % 7)
        for i in range(count)
    ]


def run_dispatcher(
    count: int, callback: bool = True, journal: str | None = None
) -> dict[str, float]:
    """One end-to-end run of ours; returns ops/s and where the time went.

    ``callback=False``: no request callback, so starts are approved on the dispatcher thread
    (no hop to a callback worker); reported as an extra to show what that hop costs.
    ``journal``: passed to the dispatcher (a file path turns the journal on); ``commits_per_op``
    is then the journal's commits per operation (0 without a journal).
    """
    ops = make_ops(count)  # built before the clock starts, as the baseline's items are
    started: queue.SimpleQueue[Any] = queue.SimpleQueue()
    all_done = threading.Event()
    completed = 0
    last_completed = 0.0

    def on_event(event: DispatchEvent) -> None:
        nonlocal completed, last_completed
        kind = event.event_type
        if kind is EventType.OPERATION_STARTED:
            started.put(event.operation_id)
        elif kind is EventType.OPERATION_COMPLETED:
            completed += 1
            if completed == count:
                last_completed = time.perf_counter()
                all_done.set()

    dispatcher = OperationDispatcher(
        RESOURCE, on_request_callback=(lambda event: True) if callback else None, journal=journal
    )
    dispatcher.subscribe(on_event)

    def complete_each() -> None:
        complete = dispatcher.complete_operation
        while True:
            op_id = started.get()
            if op_id is None:
                return
            complete(op_id)

    completer = threading.Thread(target=complete_each, name="bench-completer", daemon=True)
    completer.start()
    dispatcher.start()
    # Journal.write commits counted by the journal itself (a private counter; read-only here).
    commits_before = getattr(dispatcher.journal, "_commits", 0)
    try:
        add = dispatcher.add_operation
        first_add = time.perf_counter()
        for op in ops:
            add(op)
        adds_done = time.perf_counter()
        if not all_done.wait(WAIT_SECONDS):
            raise RuntimeError(f"only {completed} of {count} operations completed in time")
        commits = getattr(dispatcher.journal, "_commits", 0) - commits_before
    finally:
        started.put(None)
        completer.join(10)
        dispatcher.close(10)  # stop(), and close the journal opened from the path
    elapsed = last_completed - first_add
    return {
        "ops_s": count / elapsed,
        "seconds": elapsed,
        "add_seconds": adds_done - first_add,
        "commits_per_op": commits / count,
    }


def run_baseline(count: int, approver_thread: bool = False) -> float:
    """ops/s of the stdlib heapq + Condition worker with a cross-thread completion per item.

    ``approver_thread=True``: the same handshake as the dispatcher's -- the approval function
    runs on a separate approver thread (the dispatcher must never run user callbacks on its own
    thread), and the worker waits on the Condition for the answer.
    """
    cond = threading.Condition()
    heap: list[tuple[int, int, dict[str, Any]]] = []
    seq = itertools.count()
    handed: list[Any] = []  # the item the completer must finish (at most one)
    asked: list[Any] = []  # the item the approver must decide on (at most one)
    state: dict[str, Any] = {"done": None, "stop": False, "answer": None}
    all_done = threading.Event()
    finish = {"t": 0.0}

    def approve(item: dict[str, Any]) -> bool:
        return True

    def worker() -> None:
        finished = 0
        with cond:
            while finished < count:
                while not heap:
                    cond.wait()
                _, _, item = heapq.heappop(heap)
                if approver_thread:
                    asked.append(item)
                    cond.notify_all()
                    while state["answer"] is None:
                        cond.wait()
                    accepted, state["answer"] = state["answer"], None
                else:
                    accepted = approve(item)
                if not accepted:
                    continue
                handed.append(item)
                cond.notify_all()
                while state["done"] is not item:
                    cond.wait()
                finished += 1
        finish["t"] = time.perf_counter()
        all_done.set()

    def completer() -> None:
        with cond:
            while True:
                while not handed and not state["stop"]:
                    cond.wait()
                if state["stop"]:
                    return
                state["done"] = handed.pop()
                cond.notify_all()

    def approver() -> None:
        with cond:
            while True:
                while not asked and not state["stop"]:
                    cond.wait()
                if state["stop"]:
                    return
                item = asked.pop()
                state["answer"] = approve(item)
                cond.notify_all()

    items = [{"task": "pick", "n": i} for i in range(count)]
    threads = [
        threading.Thread(target=worker, name="baseline-worker", daemon=True),
        threading.Thread(target=completer, name="baseline-completer", daemon=True),
    ]
    if approver_thread:
        threads.append(threading.Thread(target=approver, name="baseline-approver", daemon=True))
    for thread in threads:
        thread.start()
    start = time.perf_counter()
    for i, item in enumerate(items):
        with cond:
            heapq.heappush(heap, (i % 7, next(seq), item))
            cond.notify_all()
    if not all_done.wait(WAIT_SECONDS):
        raise RuntimeError("baseline worker did not finish in time")
    with cond:
        state["stop"] = True
        cond.notify_all()
    for thread in threads:
        thread.join(10)
    return count / (finish["t"] - start)


def main() -> None:
    run_dispatcher(500)  # warm-up: first-use imports, lazily built state
    run_baseline(500)
    run_baseline(500, approver_thread=True)
    ours: list[dict[str, float]] = []
    base: list[float] = []
    inline: list[float] = []
    bare: list[float] = []
    for _ in range(RUNS):  # alternate, so drift hits both alike
        ours.append(run_dispatcher(N))
        base.append(run_baseline(N, approver_thread=True))
        inline.append(run_baseline(N))
        bare.append(run_dispatcher(N, callback=False)["ops_s"])
    ops_s = statistics.median(r["ops_s"] for r in ours)
    base_ops_s = statistics.median(base)
    inline_ops_s = statistics.median(inline)
    emit(
        "dispatch.end_to_end",
        ops_s,
        "ops/s",
        base_ops_s,
        target=f">= {TARGET_RATIO} x baseline",
        meets_target=ops_s >= TARGET_RATIO * base_ops_s,
        operations=N,
        runs=RUNS,
        runs_ops_s=[round(r["ops_s"]) for r in ours],
        baseline_runs_ops_s=[round(b) for b in base],
        inline_approval_baseline_ops_s=round(inline_ops_s),
        ratio_to_inline_approval_baseline=round(ops_s / inline_ops_s, 3),
        no_callback_ops_s=statistics.median(bare),
        add_us_per_op=statistics.median(r["add_seconds"] for r in ours) / N * 1e6,
        desc="start(); request callback approves; completer thread completes each STARTED; "
        "events on; first add -> last OPERATION_COMPLETED delivered",
        baseline_desc="heapq + one Condition: worker pops, asks an approver thread (the same "
        "handshake: approval off the worker's thread) and waits for the answer, hands to a "
        "completer thread, waits for its completion; the inline_approval baseline calls "
        "approve() on the worker itself",
    )


if __name__ == "__main__":
    main()

"""OperationDispatcher memory: RSS growth from 10,000 to 100,000 completed operations.

A started dispatcher with default retention (10,000 events, 10,000 finished operations) and a
request callback that approves; a subscriber hands every OPERATION_STARTED to a completer thread
that calls ``complete_operation``. Operations are created and added in batches of BATCH
(``add_operations``), each batch waited for before the next, so at most BATCH are alive outside
the dispatcher. RSS (VmRSS, after delivering every event and a full ``gc.collect()``) is read after
the first 10,000 and after 100,000 completions; the figure is the growth in MB. This module runs
ours first, while the interpreter is fresh, so nothing freed by the baseline lowers our figure.

Baseline, in the same run: RSS growth of a stdlib loop doing the same bookkeeping with bounded
retention: per operation an 18-key dict and four 7-key event dicts, kept in
``deque(maxlen=10_000)`` (operations) and ``deque(maxlen=10_000)`` (events).

Target (design.md section 11): growth <= 10 MB. If 100,000 operations take longer than
TIME_LIMIT_SECONDS, the run stops there and says so (``completed`` < 100,000).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from uuid import uuid4

from benchmarks.common import emit, settled_rss
from operation_dispatcher import DispatchEvent, EventType, Operation, OperationDispatcher

RESOURCE = "robot-1"
FIRST = 10_000
TOTAL = 100_000
BATCH = 1_000
RETENTION = 10_000
TIME_LIMIT_SECONDS = 75.0
MB = 1024 * 1024


def run_dispatcher(
    journal: str | None = None,
    sample: Callable[[], Any] | None = None,
    time_limit: float = TIME_LIMIT_SECONDS,
) -> dict[str, Any]:
    """The scenario of the module docstring; RSS in MB after FIRST and after the last completion.

    ``journal``: passed to the dispatcher (a file path: the journal is on, its row counts are
    returned as ``journal_rows`` and the in-memory event log's length as ``events_retained``).
    ``sample``: called right after each RSS reading; its results are ``sample_first`` and
    ``sample_last``. ``time_limit``: seconds after which no further batch is added.
    """
    cond = threading.Condition()
    completed = 0
    started_ids: deque[Any] = deque()
    stop = False

    def on_event(event: DispatchEvent) -> None:
        nonlocal completed
        kind = event.event_type
        if kind is EventType.OPERATION_STARTED:
            with cond:
                started_ids.append(event.operation_id)
                cond.notify_all()
        elif kind is EventType.OPERATION_COMPLETED:
            with cond:
                completed += 1
                cond.notify_all()

    dispatcher = OperationDispatcher(
        RESOURCE, on_request_callback=lambda event: True, journal=journal
    )
    dispatcher.subscribe(on_event)

    def complete_each() -> None:
        while True:
            with cond:
                while not started_ids and not stop:
                    cond.wait()
                if stop:
                    return
                op_id = started_ids.popleft()
            dispatcher.complete_operation(op_id)

    completer = threading.Thread(target=complete_each, name="bench-completer", daemon=True)
    completer.start()
    dispatcher.start()
    rss_first = 0
    sample_first: Any = None
    first_at = 0.0
    began = time.perf_counter()
    done = 0
    try:
        while done < TOTAL:
            if time.perf_counter() - began > time_limit:
                break
            dispatcher.add_operations(
                [
                    Operation(
                        resource_id=RESOURCE, payload={"task": "pick", "n": i}, priority=i % 7
                    )
                    for i in range(done, done + BATCH)
                ]
            )
            done += BATCH
            with cond:
                if not cond.wait_for(lambda done=done: completed >= done, timeout=30):
                    raise RuntimeError(f"only {completed} of {done} operations completed")
            if done == FIRST:
                rss_first = settled_rss(dispatcher)
                sample_first = sample() if sample is not None else None
                first_at = time.perf_counter()
        elapsed = time.perf_counter() - began
        rss_last = settled_rss(dispatcher)
        sample_last = sample() if sample is not None else None
        if journal is None:
            retained = len(dispatcher.get_history().events)
            rows: dict[str, Any] = {}
        else:
            retained = 0  # with a journal no event is kept in memory (reads go to the file)
            rows = dispatcher.journal.counts() if dispatcher.journal is not None else {}
    finally:
        with cond:
            stop = True
            cond.notify_all()
        completer.join(10)
        dispatcher.close(10)  # stop(), and close the journal opened from the path
    return {
        "growth": (rss_last - rss_first) / MB,
        "rss_first": rss_first / MB,
        "rss_last": rss_last / MB,
        "sample_first": sample_first,
        "sample_last": sample_last,
        "completed": done,
        "seconds": elapsed,
        "ops_s": (done - FIRST) / (elapsed - (first_at - began)),
        "ops_s_all": done / elapsed,
        "events_retained": retained,
        "journal_rows": rows,
    }


def run_baseline(
    total: int = TOTAL,
    new_id: Callable[[], Any] = uuid4,
    record: Callable[[int, dict[str, Any], list[dict[str, Any]]], None] | None = None,
) -> dict[str, float]:
    """The stdlib bookkeeping loop of the module docstring; RSS growth from FIRST to ``total``.

    ``new_id`` makes the operation and event ids. ``record(i, op, events)``, if given, is called
    for each operation after it and its events are kept (before the RSS reading at FIRST).
    """
    ops: deque[dict[str, Any]] = deque(maxlen=RETENTION)
    events: deque[dict[str, Any]] = deque(maxlen=RETENTION)
    fields = [f"field_{k}" for k in range(16)]
    rss_first = 0
    for i in range(total):
        op: dict[str, Any] = dict.fromkeys(fields)
        op["id"] = new_id()
        op["payload"] = {"task": "pick", "n": i}
        ops.append(op)
        op_events = [
            {
                "id": new_id(),
                "resource_id": RESOURCE,
                "event_type": kind,
                "operation_id": op["id"],
                "changes": [],
                "meta_data": {},
                "created_at": time.time(),
            }
            for kind in ("added", "start_requested", "started", "completed")
        ]
        events.extend(op_events)
        if record is not None:
            record(i, op, op_events)
        if i + 1 == FIRST:
            rss_first = settled_rss()
    rss_last = settled_rss()
    return {"growth": (rss_last - rss_first) / MB, "rss_first": rss_first / MB}


def emit_growth(bench: str, ours: dict[str, Any], base: dict[str, Any], **extra: Any) -> None:
    """Emit the RSS growth figure of ``ours`` against ``base``; ``extra`` fields follow."""
    emit(
        bench,
        ours["growth"],
        "MB",
        base["growth"],
        target="<= 10 MB",
        completed=ours["completed"],
        finished_all=ours["completed"] >= TOTAL,
        rss_after_10k_mb=ours["rss_first"],
        rss_after_last_mb=ours["rss_last"],
        **extra,
    )


def main() -> None:
    ours = run_dispatcher()
    base = run_baseline()
    emit_growth(
        "dispatch.rss_growth_10k_to_100k",
        ours,
        base,
        seconds=ours["seconds"],
        ops_s_after_10k=ours["ops_s"],
        events_retained=ours["events_retained"],
        baseline_rss_after_10k_mb=base["rss_first"],
        desc=f"start(); callback approves; completer thread; batches of {BATCH}; default "
        "retention; VmRSS after gc.collect() at 10k and at the end",
        baseline_desc="stdlib loop: 18-key op dict + 4 event dicts per op in deque(maxlen=10000)s",
    )


if __name__ == "__main__":
    main()

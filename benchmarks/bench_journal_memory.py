"""Memory with the journal on: RSS growth from 10,000 to 100,000 completed operations.

The scenario of ``bench_dispatch_memory`` with ``journal=<file in a tempfile.mkdtemp() folder>``
(WAL, synchronous=FULL): a started dispatcher with default retention (10,000 events, 10,000
finished operations in memory; everything older lives only in the journal), a request callback
that approves, and a subscriber handing every OPERATION_STARTED to a completer thread that calls
``complete_operation``. Operations are created and added in batches of BATCH (``add_operations``:
one transaction each), each batch waited for before the next. RSS (VmRSS, after delivering every
event and a full ``gc.collect()``) is read after the first 10,000 and after the last completion;
the figure is the growth in MB. SQLite's own heap (``sqlite3_memory_used()`` via ctypes: page
cache, WAL index, prepared statements) is read at the same moments and reported beside it, and
so are the ops/s (overall, and of the part after the first 10,000). This module runs ours first,
while the interpreter is fresh, so nothing freed by the baseline lowers our figure.

Baseline, in the same run: RSS growth of a stdlib loop doing the same bookkeeping with bounded
retention -- per operation an 18-key dict and four 7-key event dicts kept in two
``deque(maxlen=10_000)`` -- that also writes every operation and event as a JSON row to a stdlib
``sqlite3`` file (WAL, synchronous=FULL; one commit per batch of BATCH: the speed is not measured
here, only what the process keeps).

Target (issue 4): growth <= 10 MB. If 100,000 operations take longer than TIME_LIMIT_SECONDS, the
run stops there and says so (``completed`` < 100,000, ``finished_all`` false).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections import deque
from typing import Any
from uuid import uuid4

from benchmarks.common import emit, rss_bytes
from operation_dispatcher import DispatchEvent, EventType, Operation, OperationDispatcher

RESOURCE = "robot-1"
FIRST = 10_000
TOTAL = 100_000
BATCH = 1_000
RETENTION = 10_000
TIME_LIMIT_SECONDS = 110.0  # 100,000 take ~95 s here (~1,050 ops/s)
MB = 1024 * 1024


def _sqlite_memory_used() -> Any:
    """``sqlite3_memory_used()`` of the libsqlite3 this process loaded (ctypes), or None."""
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return None
    try:
        func = ctypes.CDLL(name).sqlite3_memory_used
    except (OSError, AttributeError):
        return None
    func.restype = ctypes.c_int64
    return func


SQLITE_MEMORY_USED = _sqlite_memory_used()


def sqlite_heap_mb() -> float | None:
    """Bytes SQLite holds on its heap (page caches, WAL index, statements), in MB."""
    return None if SQLITE_MEMORY_USED is None else SQLITE_MEMORY_USED() / MB


def settled_rss(dispatcher: OperationDispatcher | None = None) -> int:
    if dispatcher is not None and not dispatcher.drain_events(10):
        raise RuntimeError("events were not delivered")
    gc.collect()
    rss = rss_bytes()
    if rss is None:
        raise RuntimeError("RSS is not available here (/proc/self/status)")
    return rss


def run_dispatcher(path: str) -> dict[str, Any]:
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
        RESOURCE, on_request_callback=lambda event: True, journal=path
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
    sqlite_first: float | None = None
    first_at = 0.0
    began = time.perf_counter()
    done = 0
    try:
        while done < TOTAL:
            if time.perf_counter() - began > TIME_LIMIT_SECONDS:
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
                sqlite_first = sqlite_heap_mb()
                first_at = time.perf_counter()
        elapsed = time.perf_counter() - began
        rss_last = settled_rss(dispatcher)
        sqlite_last = sqlite_heap_mb()
        retained = len(dispatcher._events)  # in-memory event log (read-only peek)
        journal = dispatcher.journal
        rows = journal.counts() if journal is not None else {}
    finally:
        with cond:
            stop = True
            cond.notify_all()
        completer.join(10)
        dispatcher.close(10)
    size = sum(
        os.path.getsize(path + suffix) for suffix in ("", "-wal") if os.path.exists(path + suffix)
    )
    return {
        "growth": (rss_last - rss_first) / MB,
        "rss_first": rss_first / MB,
        "rss_last": rss_last / MB,
        "sqlite_heap_first": sqlite_first,
        "sqlite_heap_last": sqlite_last,
        "completed": done,
        "seconds": elapsed,
        "ops_s": (done - FIRST) / (elapsed - (first_at - began)),
        "ops_s_all": done / elapsed,
        "events_in_memory": retained,
        "journal_rows": rows,
        "journal_mb": size / MB,
    }


def run_baseline(path: str, total: int) -> dict[str, float]:
    ops: deque[dict[str, Any]] = deque(maxlen=RETENTION)
    events: deque[dict[str, Any]] = deque(maxlen=RETENTION)
    fields = [f"field_{k}" for k in range(16)]
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE operations (id TEXT PRIMARY KEY, data TEXT NOT NULL)")
        conn.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, data TEXT NOT NULL)")
        rss_first = 0
        op_rows: list[tuple[str, str]] = []
        event_rows: list[tuple[str]] = []
        for i in range(total):
            op: dict[str, Any] = dict.fromkeys(fields)
            op["id"] = str(uuid4())
            op["payload"] = {"task": "pick", "n": i}
            ops.append(op)
            op_rows.append((op["id"], json.dumps(op)))
            for kind in ("added", "start_requested", "started", "completed"):
                event = {
                    "id": str(uuid4()),
                    "resource_id": RESOURCE,
                    "event_type": kind,
                    "operation_id": op["id"],
                    "changes": [],
                    "meta_data": {},
                    "created_at": time.time(),
                }
                events.append(event)
                event_rows.append((json.dumps(event),))
            if (i + 1) % BATCH == 0 or i + 1 == total:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT INTO operations VALUES (?, ?)", op_rows)
                conn.executemany("INSERT INTO events (data) VALUES (?)", event_rows)
                conn.execute("COMMIT")
                op_rows, event_rows = [], []
            if i + 1 == FIRST:
                rss_first = settled_rss()
        rss_last = settled_rss()
    finally:
        conn.close()
    return {"growth": (rss_last - rss_first) / MB, "rss_first": rss_first / MB}


def main() -> None:
    folder = tempfile.mkdtemp(prefix="bench-journal-memory-")
    try:
        ours = run_dispatcher(os.path.join(folder, "journal.db"))
        base = run_baseline(os.path.join(folder, "baseline.db"), ours["completed"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    emit(
        "journal.rss_growth_10k_to_100k",
        ours["growth"],
        "MB",
        base["growth"],
        target="<= 10 MB",
        completed=ours["completed"],
        finished_all=ours["completed"] >= TOTAL,
        rss_after_10k_mb=ours["rss_first"],
        rss_after_last_mb=ours["rss_last"],
        sqlite_heap_after_10k_mb=ours["sqlite_heap_first"],
        sqlite_heap_after_last_mb=ours["sqlite_heap_last"],
        seconds=ours["seconds"],
        ops_s_after_10k=ours["ops_s"],
        ops_s=ours["ops_s_all"],
        events_in_memory=ours["events_in_memory"],
        journal_rows=ours["journal_rows"],
        journal_file_mb=ours["journal_mb"],
        baseline_rss_after_10k_mb=base["rss_first"],
        desc=f"start(); callback approves; completer thread; batches of {BATCH} "
        "(add_operations); journal=file in a mkdtemp() folder (WAL, synchronous=FULL); default "
        "retention; VmRSS after gc.collect() at 10k and at the end",
        baseline_desc="stdlib loop: 18-key op dict + 4 event dicts per op in deque(maxlen=10000)s, "
        "each also written as a JSON row to sqlite3 (WAL, synchronous=FULL, a commit per batch)",
    )


if __name__ == "__main__":
    main()

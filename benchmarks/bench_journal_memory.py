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
import json
import os
import shutil
import sqlite3
import tempfile
from typing import Any
from uuid import uuid4

from benchmarks.bench_dispatch_memory import BATCH, MB, emit_growth
from benchmarks.bench_dispatch_memory import run_baseline as run_memory_baseline
from benchmarks.bench_dispatch_memory import run_dispatcher as run_memory_scenario

TIME_LIMIT_SECONDS = 110.0  # 100,000 take ~95 s here (~1,050 ops/s)


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


def run_dispatcher(path: str) -> dict[str, Any]:
    """``bench_dispatch_memory``'s scenario with ``journal=path``, SQLite's heap sampled beside RSS."""
    ours = run_memory_scenario(
        journal=path, sample=sqlite_heap_mb, time_limit=TIME_LIMIT_SECONDS
    )
    size = sum(
        os.path.getsize(path + suffix) for suffix in ("", "-wal") if os.path.exists(path + suffix)
    )
    return {
        "growth": ours["growth"],
        "rss_first": ours["rss_first"],
        "rss_last": ours["rss_last"],
        "sqlite_heap_first": ours["sample_first"],
        "sqlite_heap_last": ours["sample_last"],
        "completed": ours["completed"],
        "seconds": ours["seconds"],
        "ops_s": ours["ops_s"],
        "ops_s_all": ours["ops_s_all"],
        "events_in_memory": ours["events_retained"],
        "journal_rows": ours["journal_rows"],
        "journal_mb": size / MB,
    }


def run_baseline(path: str, total: int) -> dict[str, float]:
    """``bench_dispatch_memory``'s baseline loop, also writing every row to a sqlite3 file."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE operations (id TEXT PRIMARY KEY, data TEXT NOT NULL)")
        conn.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, data TEXT NOT NULL)")
        op_rows: list[tuple[str, str]] = []
        event_rows: list[tuple[str]] = []

        def write(i: int, op: dict[str, Any], events: list[dict[str, Any]]) -> None:
            nonlocal op_rows, event_rows
            op_rows.append((op["id"], json.dumps(op)))
            event_rows.extend((json.dumps(event),) for event in events)
            if (i + 1) % BATCH == 0 or i + 1 == total:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT INTO operations VALUES (?, ?)", op_rows)
                conn.executemany("INSERT INTO events (data) VALUES (?)", event_rows)
                conn.execute("COMMIT")
                op_rows, event_rows = [], []

        return run_memory_baseline(total, new_id=lambda: str(uuid4()), record=write)
    finally:
        conn.close()


def main() -> None:
    folder = tempfile.mkdtemp(prefix="bench-journal-memory-")
    try:
        ours = run_dispatcher(os.path.join(folder, "journal.db"))
        base = run_baseline(os.path.join(folder, "baseline.db"), ours["completed"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    emit_growth(
        "journal.rss_growth_10k_to_100k",
        ours,
        base,
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

"""The journal's cost on the hot paths: end-to-end ops/s and ``add_operations`` of 10,000.

**End to end** (``journal.end_to_end``): the scenario of ``bench_dispatch_throughput`` -- a
started dispatcher whose request callback approves, events on, a subscriber handing every
OPERATION_STARTED to a completer thread that calls ``complete_operation`` -- with
``journal=<file in a tempfile.mkdtemp() folder>`` (WAL, synchronous=FULL: every change is on disk
before it is acknowledged or published). N operations are added up front, one ``add_operation``
each; the figure is N / (first add -> last OPERATION_COMPLETED delivered), the median over RUNS
runs, a fresh journal file each run. The same scenario with the journal off is run alternately
and reported beside it (``journal_off_ops_s``).

Baseline, alternated with ours: a stdlib ``sqlite3`` loop in WAL mode with synchronous=FULL that
does one ``BEGIN; INSERT <operation as JSON>; COMMIT`` per state change an operation goes through
(added, started, completed: 3 commits per operation), N operations, ops/s. It is the price of three
durable commits per operation with nothing else around them.

**add_operations** (``journal.add_operations_10k``): one ``add_operations`` call with 10,000
operations on a dispatcher with a journal (not started, so nothing is dispatched meanwhile): us per
operation, the median over ADD_RUNS calls, each on a fresh journal file. The call is one
transaction holding 10,000 operation rows and 10,000 OPERATION_ADDED event rows. The journal-off
figure is reported beside it.

Baseline: one stdlib ``sqlite3`` transaction (WAL, synchronous=FULL) inserting 10,000 JSON rows with
``executemany`` (the ``json.dumps`` of 10,000 18-key operation dicts included), us per row.

Target (issue 4): end to end >= 500 ops/s with the journal on.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import uuid4

from benchmarks.bench_dispatch_throughput import RESOURCE, make_ops, run_dispatcher
from benchmarks.common import emit, timer
from operation_dispatcher import OperationDispatcher

N = 2_000
RUNS = 5
ADD_COUNT = 10_000
ADD_RUNS = 5
TARGET_OPS_S = 500


@contextmanager
def temp_dir() -> Iterator[str]:
    """A fresh folder from ``tempfile.mkdtemp()``, removed with everything in it afterwards."""
    path = tempfile.mkdtemp(prefix="bench-journal-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def op_dict(i: int) -> dict[str, Any]:
    """A dict shaped like ``Operation.to_dict()`` (18 keys, ISO times), for the baselines."""
    now = "2026-01-01T00:00:00.000000Z"
    return {
        "id": str(uuid4()), "job_id": None, "payload": {"task": "pick", "n": i},
        "resource_id": RESOURCE, "priority": i % 7, "release_date": None,
        "planned_duration": None, "due_date": None, "dependencies": [], "state": "QUEUED",
        "outcome": "NONE", "termination_reason": "NONE", "retry_count": 0, "start_time": None,
        "finish_time": None, "created_at": now, "release_conditions": {}, "timeout_seconds": None,
    }


def open_baseline_db(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise RuntimeError(f"baseline could not switch to WAL (got {mode})")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE operations (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, state TEXT NOT NULL, "
        "data TEXT NOT NULL)"
    )
    return conn


# ------------------------------------------------------------------------------ end to end


def run_journal_on(count: int) -> dict[str, float]:
    with temp_dir() as folder:
        return run_dispatcher(count, journal=os.path.join(folder, "journal.db"))


def run_sqlite_baseline(count: int) -> float:
    """ops/s of a stdlib sqlite3 loop: one INSERT+COMMIT per state change, 3 per operation."""
    items = [op_dict(i) for i in range(count)]
    with temp_dir() as folder:
        conn = open_baseline_db(os.path.join(folder, "baseline.db"))
        try:
            execute, dumps = conn.execute, json.dumps
            sql = "INSERT INTO operations (id, state, data) VALUES (?, ?, ?)"
            start = time.perf_counter()
            for item in items:
                for state in ("QUEUED", "RUNNING", "COMPLETED"):
                    item["state"] = state
                    execute("BEGIN IMMEDIATE")
                    execute(sql, (item["id"], state, dumps(item, separators=(",", ":"))))
                    execute("COMMIT")
            elapsed = time.perf_counter() - start
        finally:
            conn.close()
    return count / elapsed


# ------------------------------------------------------------------------------ add_operations


def time_add_operations(count: int, journal_on: bool) -> float:
    """us per operation of one add_operations(count) call (dispatcher not started)."""
    ops = make_ops(count)
    with temp_dir() as folder:
        path = os.path.join(folder, "journal.db") if journal_on else None
        dispatcher = OperationDispatcher(RESOURCE, journal=path)
        try:
            with timer() as t:
                dispatcher.add_operations(ops)
            if len(dispatcher.get_schedule()) != count:
                raise RuntimeError("add_operations did not queue every operation")
        finally:
            dispatcher.close(10)
    return t.us / count


def time_sqlite_executemany(count: int) -> float:
    """us per row of one sqlite3 transaction inserting ``count`` JSON rows (executemany)."""
    items = [op_dict(i) for i in range(count)]
    with temp_dir() as folder:
        conn = open_baseline_db(os.path.join(folder, "baseline.db"))
        try:
            dumps = json.dumps
            with timer() as t:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "INSERT INTO operations (id, state, data) VALUES (?, ?, ?)",
                    [(d["id"], d["state"], dumps(d, separators=(",", ":"))) for d in items],
                )
                conn.execute("COMMIT")
            rows = conn.execute("SELECT COUNT(*) FROM operations").fetchone()[0]
            if rows != count:
                raise RuntimeError("baseline did not insert every row")
        finally:
            conn.close()
    return t.us / count


def main() -> None:
    # warm-up: first-use imports (sqlite3, the journal), lazily built state
    run_journal_on(200)
    run_dispatcher(200)
    run_sqlite_baseline(200)
    time_add_operations(1_000, True)
    time_sqlite_executemany(1_000)

    ours: list[dict[str, float]] = []
    off: list[float] = []
    base: list[float] = []
    for _ in range(RUNS):  # alternate, so drift hits all alike
        ours.append(run_journal_on(N))
        off.append(run_dispatcher(N)["ops_s"])
        base.append(run_sqlite_baseline(N))
    ops_s = statistics.median(r["ops_s"] for r in ours)
    emit(
        "journal.end_to_end",
        ops_s,
        "ops/s",
        statistics.median(base),
        target=f">= {TARGET_OPS_S} ops/s",
        operations=N,
        runs=RUNS,
        runs_ops_s=[round(r["ops_s"]) for r in ours],
        journal_off_ops_s=statistics.median(off),
        journal_off_runs_ops_s=[round(v) for v in off],
        ratio_to_journal_off=round(ops_s / statistics.median(off), 3),
        baseline_runs_ops_s=[round(v) for v in base],
        commits_per_op=statistics.median(r["commits_per_op"] for r in ours),
        add_us_per_op=statistics.median(r["add_seconds"] for r in ours) / N * 1e6,
        desc="start(); callback approves; completer thread completes each STARTED; events on; "
        "journal=file in a mkdtemp() folder (WAL, synchronous=FULL); first add -> last "
        "OPERATION_COMPLETED delivered; journal_off_* = the same scenario without a journal",
        baseline_desc="stdlib sqlite3, WAL + synchronous=FULL: BEGIN; INSERT one JSON row; COMMIT "
        "per state change (added, started, completed), 3 commits per op, single thread",
    )

    add_on: list[float] = []
    add_off: list[float] = []
    add_base: list[float] = []
    for _ in range(ADD_RUNS):
        add_on.append(time_add_operations(ADD_COUNT, True))
        add_off.append(time_add_operations(ADD_COUNT, False))
        add_base.append(time_sqlite_executemany(ADD_COUNT))
    emit(
        "journal.add_operations_10k",
        statistics.median(add_on),
        "us/op",
        statistics.median(add_base),
        operations=ADD_COUNT,
        runs=ADD_RUNS,
        runs_us_per_op=[round(v, 2) for v in add_on],
        journal_off_us_per_op=statistics.median(add_off),
        total_ms=statistics.median(add_on) * ADD_COUNT / 1e3,
        desc="one add_operations() of 10,000 on a dispatcher with a journal (not started): one "
        "transaction of 10,000 operation rows + 10,000 OPERATION_ADDED event rows, "
        "synchronous=FULL; fresh file each run",
        baseline_desc="stdlib sqlite3, WAL + synchronous=FULL: one transaction, executemany of "
        "10,000 JSON rows (json.dumps of 18-key operation dicts included); operation rows only",
    )


if __name__ == "__main__":
    main()

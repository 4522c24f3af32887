"""Restart from a big journal: 100,000 finished and 10,000 queued operations, ready to dispatch.

The journal file (in a ``tempfile.mkdtemp()`` folder, removed afterwards) is built first:

* 100,000 finished operations, written with the ``Journal.write`` API in transactions of BATCH
  operations -- each operation driven QUEUED -> RUNNING -> COMPLETED by the dispatcher's own
  ``OperationLifecycle``, with the four events the dispatcher journals for it (OPERATION_ADDED,
  OPERATION_START_REQUESTED with its decision, OPERATION_STARTED, OPERATION_COMPLETED), so the
  rows are the ones a dispatcher writes. (Driving 100,000 operations through a real dispatcher
  costs ~0.7 ms each, over a minute; the rows would be the same.)
* then 10,000 queued operations added by a real ``OperationDispatcher(..., journal=path)`` with one
  ``add_operations`` call, which is then closed.

The figure: the time of ``OperationDispatcher("robot-1", journal=path)`` (default retention:
10,000 finished operations; events stay in the file) until it is ready to dispatch, i.e. until
``get_state().queue_size == 10000``; the median over RUNS restarts (each closed with ``close()``
before the next). The garbage collector stays on, as in a real start. The file was just written,
so it is in the page cache: this is a warm restart, not a cold boot.

Beside it, from separate runs: the time of ``Journal(path)`` alone (opening: locking, WAL,
``PRAGMA quick_check`` over the whole file) and of ``Journal.load`` alone (the SELECTs, the
``json.loads`` and the model objects), to show where the time goes.

Baseline, in the same run: a plain stdlib ``sqlite3`` connection on the same file doing the same
two SELECTs the dispatcher loads with (the 10,000 queued operations, the most recent 10,000
finished ones; same indexes) and ``json.loads`` of every row, median over RUNS.

Target (issue 4): ready to dispatch in <= 2 s.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from typing import Any

from benchmarks.common import emit, timer
from operation_dispatcher import DispatchEvent, EventType, Operation, OperationDispatcher
from operation_dispatcher.approvals import RequestDecision
from operation_dispatcher.journal import Journal
from operation_dispatcher.lifecycle import OperationLifecycle

RESOURCE = "robot-1"
FINISHED = 100_000
QUEUED = 10_000
BATCH = 10_000
RETENTION = 10_000  # the dispatcher's default operation_retention and event_retention
RUNS = 3
TARGET_SECONDS = 2.0


def make_op(i: int) -> Operation:
    return Operation(resource_id=RESOURCE, payload={"task": "pick", "n": i}, priority=i % 7)


def write_finished(journal: Journal, first: int, count: int) -> None:
    """One transaction: ``count`` operations run to completion, with their four events each."""
    lifecycle = OperationLifecycle()
    ops = [make_op(i) for i in range(first, first + count)]
    ev = DispatchEvent.trusted
    events = [ev(RESOURCE, EventType.OPERATION_ADDED, op.id, [], {}) for op in ops]
    approved = {"request_decision": RequestDecision(True).to_dict()}
    for op in ops:
        events.append(ev(RESOURCE, EventType.OPERATION_START_REQUESTED, op.id, [], dict(approved)))
        events.append(ev(RESOURCE, EventType.OPERATION_STARTED, op.id,
                         lifecycle.fire(op, "start"), {}))
        events.append(ev(RESOURCE, EventType.OPERATION_COMPLETED, op.id,
                         lifecycle.fire(op, "complete"), {}))
    journal.write(ops, events)


def build_journal(path: str) -> dict[str, Any]:
    began = time.perf_counter()
    journal = Journal(path)
    try:
        for first in range(0, FINISHED, BATCH):
            write_finished(journal, first, min(BATCH, FINISHED - first))
    finally:
        journal.close()
    finished_at = time.perf_counter()
    dispatcher = OperationDispatcher(RESOURCE, journal=path)
    try:
        dispatcher.add_operations([make_op(FINISHED + i) for i in range(QUEUED)])
    finally:
        dispatcher.close(10)
    with Journal(path) as journal:
        counts = journal.counts()
    size = sum(
        os.path.getsize(path + suffix)
        for suffix in ("", "-wal")
        if os.path.exists(path + suffix)
    )
    return {
        "finished_seconds": finished_at - began,
        "queued_seconds": time.perf_counter() - finished_at,
        "counts": counts,
        "file_mb": size / 1024 / 1024,
    }


def time_restart(path: str) -> float:
    gc.collect()
    with timer(disable_gc=False) as t:
        dispatcher = OperationDispatcher(RESOURCE, journal=path)
        queue_size = dispatcher.get_state().queue_size
    try:
        if queue_size != QUEUED:
            raise RuntimeError(f"restart found {queue_size} queued operations, not {QUEUED}")
        if dispatcher.get_state().current_operation is not None:
            raise RuntimeError("restart found a current operation")
    finally:
        dispatcher.close(10)
    return t.seconds


def time_open_and_load(path: str) -> tuple[float, float]:
    gc.collect()
    with timer(disable_gc=False) as opened:
        journal = Journal(path)
    try:
        gc.collect()
        with timer(disable_gc=False) as loaded:
            saved = journal.load(RETENTION)
    finally:
        journal.close()
    if len(saved.queued) != QUEUED:
        raise RuntimeError("Journal.load did not return every queued operation")
    return opened.seconds, loaded.seconds


def time_baseline(path: str) -> tuple[float, int]:
    """Plain sqlite3: the dispatcher's two SELECTs and json.loads of every row."""
    gc.collect()
    with timer(disable_gc=False) as t:
        conn = sqlite3.connect(path)
        try:
            loads = json.loads
            queued = [
                loads(r[0])
                for r in conn.execute(
                    "SELECT data FROM operations WHERE finished_ts IS NULL ORDER BY position"
                )
            ]
            finished = [
                loads(r[0])
                for r in conn.execute(
                    "SELECT data FROM operations WHERE finished_ts IS NOT NULL "
                    "ORDER BY finished_ts DESC, position DESC LIMIT ?",
                    (RETENTION,),
                )
            ]
        finally:
            conn.close()
    return t.seconds, len(queued) + len(finished)


def main() -> None:
    folder = tempfile.mkdtemp(prefix="bench-journal-restart-")
    try:
        path = os.path.join(folder, "journal.db")
        built = build_journal(path)
        time_baseline(path)  # warm-up: the file's pages, first-use imports
        ours: list[float] = []
        base: list[float] = []
        rows = 0
        for _ in range(RUNS):  # alternate, so drift hits both alike
            ours.append(time_restart(path))
            seconds, rows = time_baseline(path)
            base.append(seconds)
        parts = [time_open_and_load(path) for _ in range(RUNS)]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    value = statistics.median(ours)
    emit(
        "journal.restart_100k_finished_10k_queued",
        value,
        "s",
        statistics.median(base),
        target=f"<= {TARGET_SECONDS} s",
        runs=RUNS,
        runs_s=[round(v, 3) for v in ours],
        journal_open_s=statistics.median(p[0] for p in parts),
        journal_load_s=statistics.median(p[1] for p in parts),
        baseline_rows=rows,
        journal_rows=built["counts"],
        journal_file_mb=built["file_mb"],
        build_finished_s=built["finished_seconds"],
        build_queued_s=built["queued_seconds"],
        desc="OperationDispatcher('robot-1', journal=path) until get_state().queue_size == "
        "10000; 100,000 finished (Journal.write in batches of 10,000, 4 events each) + 10,000 "
        "queued (add_operations); default retention; warm page cache; gc on; "
        "journal_open_s = Journal(path) alone (incl. PRAGMA quick_check), journal_load_s = "
        "Journal.load alone",
        baseline_desc="plain sqlite3 on the same file: the same 3 SELECTs (10,000 queued, the "
        "10,000 most recent finished, the 10,000 most recent events) + json.loads of every row",
    )


if __name__ == "__main__":
    main()

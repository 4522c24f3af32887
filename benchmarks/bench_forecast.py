"""``OperationDispatcher.forecast()`` with 1,000 queued operations behind a running one.

The dispatcher runs (no request callback: starts are approved at once); one operation is
running and 1,000 wait behind it, with planned durations, every tenth with a release date an
hour apart, every twentieth depending on the operation before it, and every fiftieth on a
release condition that does not hold. Two figures, medians of RUNS calls:

* ``forecast.call@1k``: the whole ``forecast()`` call, in ms;
* ``forecast.lock@1k``: the part that holds the dispatcher lock (the snapshot), in ms: the time
  a forecast can delay a start, a completion or an HTTP request.

Baseline (pure stdlib, same run): for 1,000 plain dicts, copy six fields into a tuple and add a
``timedelta`` to a running ``datetime`` for each: the least work any forecast of them must do.
Target: the whole call <= 50 ms (a dashboard asks for it on every change), the lock <= 20 ms.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from benchmarks.common import emit, median_of, timer
from operation_dispatcher import (
    DependencyType,
    EventType,
    Operation,
    OperationDependency,
    OperationDispatcher,
)
from operation_dispatcher.forecast import take_snapshot
from operation_dispatcher.models import utcnow

RESOURCE = "robot-1"
QUEUED = 1_000
RUNS = 21


def queue_of(count: int) -> list[Operation]:
    now = datetime.now(UTC)
    ops: list[Operation] = []
    for i in range(count):
        fields: dict[str, object] = {"planned_duration": 5 + i % 7, "priority": i % 5}
        if i % 10 == 0:
            fields["release_date"] = now + timedelta(hours=1 + i // 10)
        if i % 20 == 5 and ops:
            fields["dependencies"] = [OperationDependency(
                depends_on_operation_id=ops[-1].id,
                dependency_type=DependencyType.FINISH_TO_START,
            )]
        if i % 50 == 7:
            fields["release_conditions"] = {"plc.ready": True}
        ops.append(Operation(resource_id=RESOURCE, payload={"task": "pick", "n": i}, **fields))
    return ops


def measure_call(dispatcher: OperationDispatcher) -> float:
    with timer() as t:
        entries = dispatcher.forecast()
    assert len(entries) == QUEUED + 1
    return t.ms


def measure_lock(dispatcher: OperationDispatcher) -> float:
    # what forecast() does under the lock, timed on its own (private parts: a benchmark only)
    with timer() as t, dispatcher._work:
        take_snapshot(
            dispatcher._queue, dispatcher._engine, dispatcher._handshake,
            strict_order=dispatcher.strict_order, paused=dispatcher.is_paused,
            running=dispatcher.is_running, now=utcnow(),
        )
    return t.ms


def measure_baseline() -> float:
    rows = [
        {"id": i, "job_id": None, "planned_duration": 5 + i % 7, "release_date": None,
         "due_date": None, "state": "QUEUED"}
        for i in range(QUEUED)
    ]
    with timer() as t:
        moment = datetime.now(UTC)
        plans = []
        for row in rows:
            copied = (row["id"], row["job_id"], row["planned_duration"], row["release_date"],
                      row["due_date"], row["state"])
            end = moment + timedelta(seconds=copied[2])
            plans.append((copied[0], moment, end))
            moment = end
    assert len(plans) == QUEUED
    return t.ms


def main() -> None:
    started = threading.Event()

    def on_event(event: object) -> None:
        if getattr(event, "event_type", None) is EventType.OPERATION_STARTED:
            started.set()

    dispatcher = OperationDispatcher(RESOURCE, on_notification_callback=on_event)
    try:
        dispatcher.start()
        dispatcher.add_operation(Operation(resource_id=RESOURCE, planned_duration=3600))
        if not started.wait(10):
            raise RuntimeError("the first operation did not start")
        dispatcher.add_operations(queue_of(QUEUED))
        entries = dispatcher.forecast()
        known = sum(1 for e in entries if e.expected_start is not None)
        measure_call(dispatcher)  # warm-up
        call = median_of(lambda: measure_call(dispatcher), RUNS)
        lock = median_of(lambda: measure_lock(dispatcher), RUNS)
        base = median_of(measure_baseline, RUNS)
    finally:
        dispatcher.close()
    emit("forecast.call@1k", call, "ms", base, target="<= 50 ms", queued=QUEUED, runs=RUNS,
         forecast_known=known, baseline_desc="copy 6 fields + add a timedelta, 1,000 dicts")
    emit("forecast.lock@1k", lock, "ms", base, target="<= 20 ms", queued=QUEUED, runs=RUNS,
         baseline_desc="copy 6 fields + add a timedelta, 1,000 dicts")


if __name__ == "__main__":
    main()

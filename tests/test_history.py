"""get_history, retention, on_history_callback and the HistoryAnalyzer KPIs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest
from conftest import RESOURCE as R
from conftest import EventRecorder, op

from operation_dispatcher import (
    DispatchEvent,
    EventType,
    ExecutionOutcome,
    ExecutionState,
    History,
    HistoryAnalyzer,
    Operation,
    TerminationReason,
    TimeWindow,
    ValidationError,
)
from operation_dispatcher.history import EventLog


@pytest.fixture
def busy(make_dispatcher):
    """A stopped dispatcher with a little history: 4 operations, two finished."""
    d = make_dispatcher()
    rec = EventRecorder(d)
    d.start()
    ops = [d.add_operation(op(priority=-i, payload={"n": i})) for i in range(4)]
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=ops[0].id)
    d.complete_operation(ops[0].id)
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=ops[1].id)
    d.fail_operation(ops[1].id)
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=ops[2].id)
    d.stop()
    return d, ops


# ------------------------------------------------------------------------------ get_history


def test_history_without_bounds_has_every_event_in_order(busy) -> None:
    d, ops = busy
    history = d.get_history()
    assert history.resource_id == R
    assert history.window == TimeWindow()
    assert history.operations is None
    types = [e.event_type for e in history.events]
    assert types[0] is EventType.OPERATION_DISPATCHER_STARTED
    assert types[-1] is EventType.OPERATION_DISPATCHER_STOPPED
    assert types.count(EventType.OPERATION_ADDED) == 4
    assert EventType.OPERATION_START_REQUESTED in types
    times = [e.created_at for e in history.events]
    assert times == sorted(times)


def test_window_bounds_are_inclusive(busy) -> None:
    d, _ = busy
    events = d.get_history().events
    lo, hi = events[2].created_at, events[-3].created_at
    window = d.get_history(from_time=lo, to_time=hi)
    expected = [e.id for e in events if lo <= e.created_at <= hi]
    assert [e.id for e in window.events] == expected
    assert events[2].id in expected and events[-3].id in expected
    assert window.window == TimeWindow(start=lo, end=hi)
    assert d.get_history(from_time=hi).events[0].created_at == hi
    assert d.get_history(to_time=lo).events[-1].created_at == lo


def test_naive_datetimes_are_taken_as_utc(busy) -> None:
    d, _ = busy
    events = d.get_history().events
    lo, hi = events[1].created_at, events[-2].created_at
    aware = d.get_history(from_time=lo, to_time=hi)
    naive = d.get_history(from_time=lo.replace(tzinfo=None), to_time=hi.replace(tzinfo=None))
    assert [e.id for e in naive.events] == [e.id for e in aware.events]
    assert naive.window.start == lo and naive.window.start.tzinfo is UTC
    other_zone = lo.astimezone(timezone(timedelta(hours=2)))
    assert d.get_history(from_time=other_zone, to_time=hi).events == aware.events
    assert d.get_history(from_time=lo.isoformat(), to_time=hi.isoformat()).events == aware.events


def test_window_validation(busy) -> None:
    d, _ = busy
    now = datetime.now(UTC)
    with pytest.raises(ValidationError):
        d.get_history(from_time=now, to_time=now - timedelta(seconds=1))
    with pytest.raises(ValidationError):
        d.get_history(limit="5")
    with pytest.raises(ValidationError):
        d.get_history(from_time=12)


def test_limit_keeps_the_most_recent(busy) -> None:
    d, _ = busy
    events = d.get_history().events
    assert [e.id for e in d.get_history(limit=3).events] == [e.id for e in events[-3:]]
    assert len(d.get_history(limit=10_000).events) == len(events)
    assert d.get_history(limit=0).events == []
    assert d.get_history(limit=-5).events == []
    lo, hi = events[0].created_at, events[5].created_at
    in_window = [e.id for e in events if lo <= e.created_at <= hi]
    assert [e.id for e in d.get_history(lo, hi, limit=2).events] == in_window[-2:]


def test_resolve_operations_returns_snapshots(busy) -> None:
    d, ops = busy
    history = d.get_history(resolve_operations=True)
    assert {o.id for o in history.operations} == {o.id for o in ops}
    by_id = {o.id: o for o in history.operations}
    assert by_id[ops[0].id].outcome is ExecutionOutcome.SUCCESS
    assert by_id[ops[1].id].outcome is ExecutionOutcome.FAILURE
    assert by_id[ops[2].id].state is ExecutionState.RUNNING
    by_id[ops[3].id].payload["n"] = "changed"
    by_id[ops[3].id].priority = 1000
    stored = d.get_operation(ops[3].id)
    assert stored.payload == {"n": 3} and stored.priority == -3
    limited = d.get_history(limit=2, resolve_operations=True)
    assert {o.id for o in limited.operations} <= {e.operation_id for e in limited.events}


def test_history_callback_may_replace_keep_or_refuse(make_dispatcher) -> None:
    calls: list[tuple[Any, ...]] = []
    replacement = History(resource_id=R)
    mode = {"value": None}

    def on_history(from_time, to_time, resolve, limit, history):
        calls.append((from_time, to_time, resolve, limit, history))
        return mode["value"]

    d = make_dispatcher(on_history_callback=on_history)
    d.add_operation(op())
    kept = d.get_history()
    assert [e.event_type for e in kept.events] == [EventType.OPERATION_ADDED]
    naive = datetime(2020, 1, 1)
    d.get_history(naive, None, True, 7)
    assert calls[-1][:4] == (naive, None, True, 7)
    assert calls[-1][4].window.start == naive.replace(tzinfo=UTC)
    mode["value"] = replacement
    assert d.get_history() is replacement
    mode["value"] = "not a history"
    with pytest.raises(ValueError, match="on_history_callback"):
        d.get_history()
    mode["value"] = []
    with pytest.raises(ValueError, match="expected History or None"):
        d.get_history()


def test_history_callback_exceptions_propagate(make_dispatcher) -> None:
    def broken(*args):
        raise KeyError("archive offline")

    d = make_dispatcher(on_history_callback=broken)
    with pytest.raises(KeyError):
        d.get_history()


# ------------------------------------------------------------------------------ retention


def test_event_retention_bounds_memory(make_dispatcher) -> None:
    d = make_dispatcher(event_retention=10)
    ops = []
    for _ in range(25):
        ops.append(d.add_operation(op()))
        assert len(d.get_history().events) <= 10
    events = d.get_history().events
    assert len(events) == 10
    assert [e.operation_id for e in events] == [o.id for o in ops[-10:]]
    assert d.list_events(ops[0].id) == []
    assert [e.event_type for e in d.list_events(ops[-1].id)] == [EventType.OPERATION_ADDED]
    assert d.get_operation(ops[0].id) is not None  # the operation itself is still queued


def test_event_retention_with_per_operation_lookups(make_dispatcher) -> None:
    d = make_dispatcher(event_retention=5)
    a = d.add_operation(op())
    d.update_operation(a.id, {"priority": 1})
    d.update_operation(a.id, {"priority": 2})
    filler = [d.add_operation(op()) for _ in range(3)]
    # 6 events were emitted: a's ADDED fell out, its two updates are still there
    assert [e.event_type for e in d.list_events(a.id)] == [EventType.OPERATION_UPDATED] * 2
    d.add_operation(op())
    assert len(d.list_events(a.id)) == 1
    assert len(d.list_events(filler[0].id)) == 1


def test_operation_retention_bounds_the_archive(make_dispatcher) -> None:
    d = make_dispatcher(operation_retention=3)
    ops = [d.add_operation(op()) for _ in range(5)]
    for item in ops:
        d.cancel_operation(item.id)
    assert d.get_operation(ops[0].id) is None
    assert d.get_operation(ops[1].id) is None
    for item in ops[2:]:
        assert d.get_operation(item.id).outcome is ExecutionOutcome.CANCELLED
    resolved = d.get_history(resolve_operations=True).operations
    assert {o.id for o in resolved} == {o.id for o in ops[2:]}


def test_event_log_unit() -> None:
    with pytest.raises(ValueError):
        EventLog(0)
    log = EventLog(None)
    assert log.retention is None
    for _ in range(3):
        log.append(DispatchEvent(resource_id=R, event_type=EventType.OPERATION_DISPATCHER_PAUSED))
    assert len(log) == 3 and len(list(log)) == 3
    assert log.select(limit=0) == []


# ------------------------------------------------------------------------------ analyzer

BASE = datetime(2026, 6, 10, 8, 0, tzinfo=UTC)
OP_IDS = [UUID(c * 32) for c in "1234"]


def at(minutes: float) -> datetime:
    return BASE + timedelta(minutes=minutes)


def ev(event_type: EventType, minutes: float, op_index: int | None = None, **meta) -> Any:
    return DispatchEvent(
        resource_id="resource-a",
        event_type=event_type,
        operation_id=None if op_index is None else OP_IDS[op_index],
        meta_data=meta,
        created_at=at(minutes),
    )


def example_history(with_operations: bool = True) -> History:
    """The seed's example history: resource-a, window base-5 min .. base+73 min."""
    E = EventType
    events = [
        ev(E.OPERATION_DISPATCHER_STARTED, 0),
        *(ev(E.OPERATION_ADDED, 1, i) for i in range(4)),
        ev(E.OPERATION_START_REQUESTED, 2, 0, request_decision={"accepted": True}),
        ev(E.OPERATION_STARTED, 2, 0),
        ev(E.OPERATION_COMPLETED, 12, 0),
        ev(
            E.OPERATION_CANCEL_REQUESTED, 14, 1, initiator="operator",
            request_decision={"accepted": True, "reasoning": None, "data": {}},
        ),
        ev(E.OPERATION_CANCELLED, 14, 1),
        ev(E.OPERATION_STARTED, 15, 2),
        ev(E.OPERATION_DISPATCHER_PAUSED, 26),
        ev(E.OPERATION_DISPATCHER_RESUMED, 31),
        ev(E.OPERATION_PAUSED, 40, 2),
        ev(E.OPERATION_RESUMED, 47, 2),
        ev(E.OPERATION_COMPLETED, 55, 2),
        ev(E.OPERATION_STARTED, 56, 3),
        ev(E.OPERATION_COMPLETED, 70, 3),
        ev(E.OPERATION_DISPATCHER_STOPPED, 73),
    ]
    operations = None
    if with_operations:
        def done(i: int, outcome: ExecutionOutcome, **kw) -> Operation:
            return Operation(
                id=OP_IDS[i], resource_id="resource-a", state=ExecutionState.COMPLETED,
                outcome=outcome, **kw,
            )

        operations = [
            done(0, ExecutionOutcome.SUCCESS, priority=8, payload={"task": "batch-sync"}),
            done(1, ExecutionOutcome.CANCELLED, termination_reason=TerminationReason.USER_REQUEST),
            done(2, ExecutionOutcome.SUCCESS),
            done(3, ExecutionOutcome.SUCCESS),
        ]
    return History(
        resource_id="resource-a",
        window=TimeWindow(start=at(-5), end=at(73)),
        events=events,
        operations=operations,
    )


def test_analyzer_reproduces_the_seed_example() -> None:
    history = example_history()
    assert history.get_duration_seconds() == 4680
    report = HistoryAnalyzer(history).get_report()
    assert set(report) == {
        "dispatcher_uptime_seconds",
        "dispatcher_uptime_percentage",
        "dispatcher_runtime_seconds",
        "dispatcher_runtime_percentage",
    }
    assert report["dispatcher_uptime_seconds"] == 4380.0
    assert report["dispatcher_uptime_percentage"] == pytest.approx(93.58974358974359)
    assert report["dispatcher_runtime_seconds"] == 4080.0
    assert report["dispatcher_runtime_percentage"] == pytest.approx(87.17948717948718)
    analyzer = HistoryAnalyzer(history)
    assert analyzer.dispatcher_paused_seconds() == 300.0
    assert analyzer.operation_count() == 4
    assert analyzer.completed_operation_count() == 4
    assert analyzer.successful_operation_count() == 3


def test_analyzer_counts_from_events_without_operations() -> None:
    analyzer = HistoryAnalyzer(example_history(with_operations=False))
    assert analyzer.operation_count() == 4
    assert analyzer.completed_operation_count() == 4  # COMPLETED + FAILED + CANCELLED events
    assert analyzer.successful_operation_count() == 3


def test_analyzer_without_dispatcher_events_reports_none() -> None:
    events = [ev(EventType.OPERATION_ADDED, 0, 0), ev(EventType.OPERATION_STARTED, 10, 0)]
    history = History(resource_id="resource-a", events=events)
    assert history.get_duration_seconds() == 600
    assert HistoryAnalyzer(history).get_report() == {
        "dispatcher_uptime_seconds": None,
        "dispatcher_uptime_percentage": None,
        "dispatcher_runtime_seconds": None,
        "dispatcher_runtime_percentage": None,
    }
    empty = HistoryAnalyzer(History(resource_id="resource-a")).get_report()
    assert set(empty.values()) == {None}


def test_analyzer_never_paused_runtime_equals_uptime() -> None:
    events = [
        ev(EventType.OPERATION_DISPATCHER_STARTED, 10),
        ev(EventType.OPERATION_DISPATCHER_STOPPED, 40),
    ]
    history = History(
        resource_id="resource-a", window=TimeWindow(start=at(0), end=at(60)), events=events
    )
    report = HistoryAnalyzer(history).get_report()
    assert report["dispatcher_uptime_seconds"] == 1800.0
    assert report["dispatcher_runtime_seconds"] == 1800.0
    assert report["dispatcher_uptime_percentage"] == pytest.approx(50.0)
    assert report["dispatcher_runtime_percentage"] == pytest.approx(50.0)


def test_analyzer_edges_of_the_window() -> None:
    events = [
        ev(EventType.OPERATION_DISPATCHER_STOPPED, 10),  # running since the window start
        ev(EventType.OPERATION_DISPATCHER_PAUSED, 12),  # paused while down: not counted
        ev(EventType.OPERATION_DISPATCHER_STARTED, 20),
        ev(EventType.OPERATION_DISPATCHER_STARTED, 25),  # already running: ignored
        ev(EventType.OPERATION_DISPATCHER_RESUMED, 30),
    ]  # still running at the end
    history = History(
        resource_id="resource-a", window=TimeWindow(start=at(0), end=at(40)), events=events
    )
    analyzer = HistoryAnalyzer(history)
    assert analyzer.dispatcher_uptime_seconds() == (10 + 20) * 60
    assert analyzer.dispatcher_paused_seconds() == 10 * 60  # 20..30 only
    assert analyzer.dispatcher_runtime_seconds() == 20 * 60


def test_analyzer_on_a_live_dispatcher(busy) -> None:
    d, _ = busy
    report = HistoryAnalyzer(d.get_history()).get_report()
    assert report["dispatcher_uptime_seconds"] > 0
    assert report["dispatcher_runtime_seconds"] == report["dispatcher_uptime_seconds"]
    assert report["dispatcher_uptime_percentage"] == pytest.approx(100.0)

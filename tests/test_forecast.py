"""The forecast: a pure function of a snapshot and a fixed ``now`` (no sleeps), then the real
dispatcher's snapshot (releases, dependencies, conditions, approvals, pauses, a running op)."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid5

import pytest
from conftest import EventRecorder, op
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from operation_dispatcher import (
    PENDING,
    DependencyType,
    EventType,
    ExecutionState,
    OperationDependency,
    ValidationError,
)
from operation_dispatcher.forecast import (
    ForecastEntry,
    ForecastSnapshot,
    PlannedOperation,
    forecast_operations,
)

NOW = datetime(2026, 3, 2, 8, 0, 0, tzinfo=UTC)
NS = UUID("00000000-0000-0000-0000-000000000000")
F2S, S2S = DependencyType.FINISH_TO_START, DependencyType.START_TO_START


def uid(name: str) -> UUID:
    return uuid5(NS, name)


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def q(name: str, duration: float | None = 10, **facts) -> PlannedOperation:
    """A queued operation named ``name``; ``waits_for`` may name providers."""
    waits = tuple((uid(p), kind) for p, kind in facts.pop("waits_for", ()))
    failed = facts.pop("failed_provider", None)
    return PlannedOperation(
        id=uid(name), job_id=name, planned_duration=duration, waits_for=waits,
        failed_provider=None if failed is None else uid(failed), **facts,
    )


def running(name: str, started: float, duration: float | None, **facts) -> PlannedOperation:
    return PlannedOperation(
        id=uid(name), job_id=name, state=facts.pop("state", ExecutionState.RUNNING),
        planned_duration=duration, start_time=at(started), **facts,
    )


def plan(*queued: PlannedOperation, now: datetime = NOW, **snapshot) -> dict[str, ForecastEntry]:
    entries = forecast_operations(ForecastSnapshot(queued=queued, **snapshot), now)
    return {entry.job_id: entry for entry in entries}


def times(entry: ForecastEntry) -> tuple[datetime | None, datetime | None]:
    return entry.expected_start, entry.expected_end


# ------------------------------------------------------------------------ the pure model


def test_an_empty_dispatcher_forecasts_nothing() -> None:
    assert forecast_operations(ForecastSnapshot(), NOW) == []


def test_operations_run_back_to_back_after_the_running_one() -> None:
    snapshot = ForecastSnapshot(
        current=running("cur", started=-20, duration=60), queued=(q("a", 30), q("b", 5))
    )
    entries = forecast_operations(snapshot, NOW)
    assert [e.job_id for e in entries] == ["cur", "a", "b"]  # current first, then the queue
    cur, a, b = entries
    assert times(cur) == (at(-20), at(40)) and not cur.overrun
    assert cur.state is ExecutionState.RUNNING and a.state is ExecutionState.QUEUED
    assert times(a) == (at(40), at(70))
    assert times(b) == (at(70), at(75))
    assert all(e.blocked_by is None for e in entries)


def test_an_overrunning_operation_is_taken_to_end_now_and_says_so() -> None:
    result = plan(q("next", 10), current=running("cur", started=-30, duration=10))
    assert times(result["cur"]) == (at(-30), NOW)
    assert result["cur"].overrun is True
    assert times(result["next"]) == (NOW, at(10))


def test_a_later_release_date_is_passed_by_the_operations_behind_it() -> None:
    result = plan(q("dated", 10, release_date=at(100)), q("free", 10), q("free2", 200))
    assert times(result["free"]) == (NOW, at(10))
    # the dispatcher starts the best operation that can start: free2 too, before the release
    assert times(result["free2"]) == (at(10), at(210))
    assert times(result["dated"]) == (at(210), at(220))


def test_a_release_date_in_the_gap_starts_at_the_release() -> None:
    result = plan(q("a", 10), q("dated", 10, release_date=at(50)))
    assert times(result["dated"]) == (at(50), at(60))


def test_strict_order_waits_for_the_heads_release_date() -> None:
    result = plan(q("dated", 10, release_date=at(100)), q("free", 10), strict_order=True)
    assert times(result["dated"]) == (at(100), at(110))
    assert times(result["free"]) == (at(110), at(120))


def test_a_cooldown_delays_like_a_release_date() -> None:
    result = plan(q("denied", 10, cooldown_until=at(5)), q("other", 3))
    assert times(result["other"]) == (NOW, at(3))
    assert times(result["denied"]) == (at(5), at(15))


def test_a_blocked_condition_is_unknown_and_passed_without_strict_order() -> None:
    result = plan(q("plc", 10, conditions=("release_condition:plc.ready",)), q("free", 10))
    assert result["plc"].blocked_by == "release_condition:plc.ready"
    assert times(result["plc"]) == (None, None)
    assert times(result["free"]) == (NOW, at(10))
    assert result["free"].blocked_by is None


def test_with_strict_order_a_blocked_head_holds_the_queue() -> None:
    result = plan(
        q("plc", 10, conditions=("release_condition:plc.ready",)), q("free", 10),
        q("own", 10, conditions=("release_condition:door.closed",)), strict_order=True,
    )
    assert result["plc"].blocked_by == "release_condition:plc.ready"
    assert result["free"].blocked_by == f"operation:{uid('plc')}"
    assert result["own"].blocked_by == "release_condition:door.closed"  # its own first
    assert all(times(e) == (None, None) for e in result.values())


def test_a_dependent_starts_after_its_provider_ends() -> None:
    # the dependent comes first in dispatch order; the dispatcher parks it until b completes
    result = plan(q("dep", 10, waits_for=[("b", F2S)]), q("b", 20), q("c", 5))
    assert times(result["b"]) == (NOW, at(20))
    assert times(result["dep"]) == (at(20), at(30))
    assert times(result["c"]) == (at(30), at(35))


def test_a_start_to_start_dependent_follows_its_provider() -> None:
    result = plan(q("dep", 10, waits_for=[("b", S2S)]), q("b", 20))
    assert times(result["dep"]) == (at(20), at(30))  # one resource: after b, not beside it


def test_a_dependency_on_the_running_operation_waits_for_its_end() -> None:
    result = plan(q("dep", 10, waits_for=[("cur", F2S)]), current=running("cur", -5, 15))
    assert times(result["dep"]) == (at(10), at(20))


def test_strict_order_lets_a_parked_dependent_go_once_released() -> None:
    # b is the head; its dependent dep (earlier in order) is released by b's end and comes
    # before "late", whose release date is later than that
    result = plan(
        q("dep", 10, waits_for=[("b", F2S)]), q("b", 20), q("late", 10, release_date=at(50)),
        strict_order=True,
    )
    assert times(result["b"]) == (NOW, at(20))
    assert times(result["dep"]) == (at(20), at(30))
    assert times(result["late"]) == (at(50), at(60))


def test_strict_order_head_waiting_for_a_release_lets_an_earlier_dependent_in_first() -> None:
    result = plan(
        q("dep", 5, waits_for=[("cur", F2S)]), q("head", 10, release_date=at(100)),
        current=running("cur", started=-10, duration=30), strict_order=True,
    )
    assert times(result["dep"]) == (at(20), at(25))
    assert times(result["head"]) == (at(100), at(110))


def test_a_dependency_on_a_blocked_provider_is_unknown() -> None:
    result = plan(
        q("dep", 10, waits_for=[("plc", F2S)]),
        q("plc", 10, conditions=("release_condition:plc.ready",)), q("free", 10),
    )
    assert result["dep"].blocked_by == f"dependency:{uid('plc')}"
    assert times(result["dep"]) == (None, None)
    assert times(result["free"]) == (NOW, at(10))


def test_an_operation_whose_provider_failed_never_starts() -> None:
    result = plan(q("doomed", 10, failed_provider="gone"), q("free", 10))
    assert result["doomed"].blocked_by == f"dependency:{uid('gone')}"
    assert times(result["free"]) == (NOW, at(10))


def test_no_planned_duration_gives_no_end_and_nothing_after_it() -> None:
    result = plan(q("a", 10), q("open", None), q("b", 10, due_date=at(5)), q("c", 10))
    assert times(result["open"]) == (at(10), None)
    assert result["open"].blocked_by is None  # its start is known
    assert result["b"].blocked_by == f"operation:{uid('open')}"
    assert result["c"].blocked_by == f"operation:{uid('open')}"
    assert result["b"].misses_due_date is None  # due in 5 s, the end unknown: cannot say


def test_the_running_operation_without_duration_leaves_the_queue_unknown() -> None:
    result = plan(q("a", 10), current=running("cur", started=-5, duration=None))
    assert times(result["cur"]) == (at(-5), None)
    assert result["a"].blocked_by == f"operation:{uid('cur')}"


def test_a_paused_current_operation_has_no_end() -> None:
    result = plan(
        q("a", 10), current=running("cur", -5, 60, state=ExecutionState.PAUSED),
    )
    assert times(result["cur"]) == (at(-5), None)
    assert result["cur"].blocked_by == "operation_paused"
    assert result["a"].blocked_by == f"operation:{uid('cur')}"


@pytest.mark.parametrize(
    ("snapshot", "blocker"),
    [({"paused": True}, "dispatcher_paused"), ({"running": False}, "dispatcher_not_running")],
)
def test_a_held_dispatcher_starts_nothing_but_the_current_one_ends(snapshot, blocker) -> None:
    result = plan(q("a", 10), q("b", 10), current=running("cur", -5, 15), **snapshot)
    assert times(result["cur"]) == (at(-5), at(10))
    assert [result[n].blocked_by for n in ("a", "b")] == [blocker, blocker]
    assert times(result["a"]) == (None, None)


def test_a_start_awaiting_approval_holds_every_other_start() -> None:
    result = plan(
        q("asked", 10, awaiting_approval=True), q("free", 10),
        q("plc", 10, conditions=("release_condition:plc.ready",)),
    )
    assert result["asked"].blocked_by == "awaiting_approval"
    assert result["free"].blocked_by == f"operation:{uid('asked')}"
    assert result["plc"].blocked_by == "release_condition:plc.ready"


def test_due_dates() -> None:
    result = plan(
        q("early", 10, due_date=at(10)),  # ends exactly at its due date: in time
        q("late", 10, due_date=at(15)),  # ends at 20
        q("none", 10),
        q("blocked_past", 10, due_date=at(-1), conditions=("release_condition:x",)),
        q("blocked_future", 10, due_date=at(3600), conditions=("release_condition:x",)),
    )
    assert result["early"].misses_due_date is False
    assert result["late"].misses_due_date is True
    assert result["late"].due_date == at(15)
    assert result["none"].misses_due_date is None
    assert result["blocked_past"].misses_due_date is True  # already past: it cannot make it
    assert result["blocked_future"].misses_due_date is None


def test_a_known_start_after_the_due_date_misses_it_even_without_an_end() -> None:
    result = plan(q("a", 100), q("open", None, due_date=at(50)))
    assert result["open"].misses_due_date is True


def test_times_beyond_the_calendar_are_unknown_not_a_crash() -> None:
    edge = datetime(9999, 12, 31, tzinfo=UTC)
    result = plan(q("huge", 1e9, due_date=edge), q("after", 10), now=edge)
    assert times(result["huge"]) == (edge, None)
    assert result["huge"].misses_due_date is None
    assert result["after"].blocked_by == f"operation:{uid('huge')}"


def test_to_dict_is_the_wire_form() -> None:
    entry = plan(q("a", 10, due_date=at(5)))["a"]
    assert entry.to_dict() == {
        "operation_id": str(uid("a")),
        "job_id": "a",
        "state": "QUEUED",
        "expected_start": "2026-03-02T08:00:00Z",
        "expected_end": "2026-03-02T08:00:10Z",
        "blocked_by": None,
        "misses_due_date": True,
        "due_date": "2026-03-02T08:00:05Z",
        "overrun": False,
    }


def test_a_thousand_operations_in_order() -> None:
    queued = tuple(q(f"op{i}", 1) for i in range(1000))
    entries = forecast_operations(ForecastSnapshot(queued=queued), NOW)
    assert [e.expected_start for e in entries] == [at(i) for i in range(1000)]


def test_now_must_be_a_datetime() -> None:
    with pytest.raises(ValidationError, match="now"):
        forecast_operations(ForecastSnapshot(), "yesterday")  # type: ignore[arg-type]


# ------------------------------------------------------------------ the real dispatcher


def test_the_dispatcher_forecasts_its_running_operation_and_queue(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    d.start()
    first = d.add_operation(op(planned_duration=60, job_id="first"))
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=first.id)
    second = d.add_operation(op(planned_duration=30, due_date=utcnow_plus(3600)))
    dated = d.add_operation(op(planned_duration=10, release_date=utcnow_plus(3600)))
    started = d.get_operation(first.id).start_time
    now = started + timedelta(seconds=15)
    entries = d.forecast(now=now)
    # the current operation first, then the queue in dispatch order (release date first)
    order = [o.id for o in d.get_schedule()]
    assert order == [dated.id, second.id]
    assert [e.operation_id for e in entries] == [first.id, *order]
    current, later, soon = entries
    assert current.state is ExecutionState.RUNNING
    assert times(current) == (started, started + timedelta(seconds=60))
    assert times(soon) == (started + timedelta(seconds=60), started + timedelta(seconds=90))
    assert soon.misses_due_date is False
    assert later.expected_start == d.get_operation(dated.id).release_date


def test_the_dispatcher_names_conditions_dependencies_and_approvals(make_dispatcher) -> None:
    asked = threading.Event()

    def callback(event):
        asked.set()
        return PENDING  # an operator must decide

    d = make_dispatcher(on_request_callback=callback)
    plc = d.add_operation(op(planned_duration=5, release_conditions={"plc.ready": True}))
    dependent = d.add_operation(op(
        planned_duration=5,
        dependencies=[OperationDependency(
            depends_on_operation_id=plc.id, dependency_type=DependencyType.FINISH_TO_START,
        )],
    ))
    free = d.add_operation(op(planned_duration=5))
    before = {e.operation_id: e.blocked_by for e in d.forecast()}
    assert set(before.values()) == {"dispatcher_not_running"}
    d.start()
    assert asked.wait(5)
    result = {e.operation_id: e for e in d.forecast()}
    assert result[plc.id].blocked_by == "release_condition:plc.ready"
    assert result[dependent.id].blocked_by == f"dependency:{plc.id}"
    assert result[free.id].blocked_by == "awaiting_approval"
    request = d.pending_requests()[0]
    d.decide(request.request_id, True)
    entries = d.forecast()
    assert entries[0].operation_id == free.id and entries[0].state is ExecutionState.RUNNING
    d.pause_dispatcher_runtime()
    result = {e.operation_id: e for e in d.forecast()}
    assert result[plc.id].blocked_by == "dispatcher_paused"
    assert result[free.id].expected_end is not None


@pytest.mark.parametrize("bad", [42, True, None.__class__, "soon", "2026-02-30T00:00:00Z"])
def test_forecast_now_is_checked(make_dispatcher, bad) -> None:
    d = make_dispatcher()
    with pytest.raises(ValidationError, match="now"):
        d.forecast(now=bad)


def test_forecast_at_the_end_of_the_calendar(make_dispatcher) -> None:
    d = make_dispatcher()
    d.start()
    d.pause_dispatcher_runtime()
    d.add_operations([op(planned_duration=1e9) for _ in range(3)])
    d.resume_dispatcher_runtime()  # the first starts (no callback), the others wait
    edge = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    first, second, third = d.forecast(now="9999-12-31T23:59:00+00:00")
    assert first.overrun and first.expected_end == edge  # started in our time: long overdue
    assert second.expected_start == edge and second.expected_end is None  # past year 9999
    assert third.blocked_by == f"operation:{second.operation_id}"
    assert d.forecast(now=edge.replace(tzinfo=None)) == d.forecast(now=edge)  # naive is UTC


def utcnow_plus(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


@pytest.mark.parametrize("strict", [False, True])
def test_the_next_start_forecast_is_the_one_the_dispatcher_makes(make_dispatcher, strict) -> None:
    """Against the engine itself: after the running operation completes, the dispatcher starts
    exactly the operation the forecast put next (or, blocked, none)."""
    d = make_dispatcher(strict_order=strict)
    rec = EventRecorder(d)
    d.start()
    running_op = d.add_operation(op(planned_duration=60, priority=100))
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=running_op.id)
    provider = d.add_operation(op(planned_duration=5, priority=1))
    d.add_operations([
        op(planned_duration=5, priority=50, release_conditions={"plc.ready": True}),
        op(planned_duration=5, priority=40, dependencies=[OperationDependency(
            depends_on_operation_id=provider.id, dependency_type=DependencyType.FINISH_TO_START,
        )]),
        op(planned_duration=5, priority=30, release_date=utcnow_plus(3600)),
        op(planned_duration=5, priority=20),
    ])
    current, *forecast = d.forecast()
    known = [e for e in forecast if e.expected_start is not None]
    first = min(known, key=lambda e: e.expected_start)
    d.complete_operation(running_op.id)  # early: the next start happens in this call
    if first.expected_start == current.expected_end:  # it goes as soon as the resource frees
        rec.wait_for(EventType.OPERATION_STARTED, operation_id=first.operation_id)
        assert d.current_operation.id == first.operation_id
        assert not strict
    else:  # strict: the head (release date first) waits for its release, and so does the rest
        assert strict and first.expected_start > current.expected_end
        assert d.current_operation is None
        assert "release_condition:plc.ready" in {e.blocked_by for e in forecast}


def test_an_offline_executor_holds_every_start(make_dispatcher) -> None:
    d = make_dispatcher()
    d.attach_executor("plc")  # no plc.online signal yet: offline
    d.start()
    plain = d.add_operation(op(planned_duration=5))
    own = d.add_operation(op(planned_duration=5, release_conditions={"door.closed": True}))
    result = {e.operation_id: e.blocked_by for e in d.forecast()}
    assert result == {plain.id: "release_condition:plc.online",
                      own.id: "release_condition:door.closed"}
    d.signals.set("plc.online", True, max_age_seconds=60)
    entries = d.forecast()
    assert entries[0].operation_id == plain.id and entries[0].state is ExecutionState.RUNNING
    assert entries[1].blocked_by == "release_condition:door.closed"


# ------------------------------------------------------------------ invariants (hypothesis)


@st.composite
def snapshots(draw: st.DrawFn) -> ForecastSnapshot:
    """Random queues: durations (some missing), release dates, cooldowns, unmet conditions, at
    most one awaiting approval, dependencies without cycles (on ops drawn before), a current op."""
    count = draw(st.integers(0, 12))
    ids = [uid(f"h{i}") for i in range(count)]
    asking = draw(st.one_of(st.none(), st.integers(0, max(count - 1, 0)))) if count else None
    ops = []
    for i in range(count):
        providers = draw(st.lists(st.integers(0, i - 1), max_size=2, unique=True)) if i else []
        ops.append(PlannedOperation(
            id=ids[i], job_id=f"h{i}",
            planned_duration=draw(st.one_of(st.none(), st.integers(1, 100))),
            release_date=draw(st.one_of(st.none(), st.integers(-50, 500).map(at))),
            cooldown_until=draw(st.one_of(st.none(), st.integers(1, 50).map(at))),
            conditions=draw(st.sampled_from([(), (), (), ("release_condition:x",)])),
            waits_for=tuple((ids[p], draw(st.sampled_from([F2S, S2S]))) for p in providers),
            awaiting_approval=i == asking and draw(st.booleans()),
            due_date=draw(st.one_of(st.none(), st.integers(-10, 800).map(at))),
        ))
    order = draw(st.permutations(ops))  # dispatch order need not follow the dependencies
    current = draw(st.one_of(st.none(), st.builds(
        lambda state, start, duration: running("cur", start, duration, state=state),
        st.sampled_from([ExecutionState.RUNNING, ExecutionState.PAUSED]),
        st.integers(-100, 0), st.one_of(st.none(), st.integers(1, 200)),
    )))
    return ForecastSnapshot(current=current, queued=tuple(order),
                            strict_order=draw(st.booleans()))


@settings(max_examples=60, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(snapshot=snapshots())
def test_forecast_invariants(snapshot: ForecastSnapshot) -> None:
    entries = forecast_operations(snapshot, NOW)
    by_id = {e.operation_id: e for e in entries}
    facts = {op.id: op for op in snapshot.queued}
    assert [e.operation_id for e in entries] == (
        ([snapshot.current.id] if snapshot.current else []) + [op.id for op in snapshot.queued]
    )
    known = sorted((e for e in entries if e.expected_start is not None and
                    e.expected_end is not None), key=lambda e: e.expected_start)
    for before, after in itertools.pairwise(known):  # one resource: no overlap
        assert before.expected_end <= after.expected_start
    for entry in entries:
        queued = entry.operation_id in facts
        if queued:
            assert (entry.expected_start is None) == (entry.blocked_by is not None)
        if entry.expected_start is None:
            assert entry.expected_end is None
        if entry.expected_end is not None and entry.due_date is not None:
            assert entry.misses_due_date is (entry.expected_end > entry.due_date)
        if entry.due_date is None:
            assert entry.misses_due_date is None
        if not queued or entry.expected_start is None:
            continue
        op = facts[entry.operation_id]
        assert entry.expected_start >= NOW
        assert not op.conditions and not op.awaiting_approval  # never given a made-up time
        for limit in (op.release_date, op.cooldown_until):
            assert limit is None or entry.expected_start >= limit
        for provider, kind in op.waits_for:
            other = by_id[provider]
            moment = other.expected_start if kind is S2S else other.expected_end
            assert moment is not None and entry.expected_start >= moment


def test_the_forecast_is_computed_after_the_lock_is_released(make_dispatcher, monkeypatch) -> None:
    """The lock is held to copy the snapshot only: the simulation runs without it."""
    import operation_dispatcher.forecast as model  # the hub imports it on the first forecast

    d = make_dispatcher()
    d.add_operations([op(planned_duration=1) for _ in range(3)])
    held: list[bool] = []
    real = model.forecast_operations

    def watched(snapshot, now):
        held.append(d._lock._is_owned())  # the RLock: owned by this thread?
        return real(snapshot, now)

    monkeypatch.setattr(model, "forecast_operations", watched)
    assert len(d.forecast()) == 3
    assert held == [False]

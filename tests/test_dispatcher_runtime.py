"""Running the dispatcher: start/stop/run/request_stop, pausing, state, step_dispatch, hangs."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import EventRecorder

from operation_dispatcher import (
    PENDING,
    EventType,
    ExecutionState,
    Operation,
    OperationDispatcher,
)

R = "robot-1"


def op(**kwargs: object) -> Operation:
    return Operation(resource_id=R, **kwargs)


# ---------------------------------------------------------------------------- start / stop


def test_start_returns_with_loop_running_and_stop_joins(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    assert not d.is_running
    d.start()
    assert d.is_running
    rec.wait_for(EventType.OPERATION_DISPATCHER_STARTED)
    thread = next(t for t in threading.enumerate() if t.name == f"operation-dispatcher[{R}]")
    d.stop()
    assert not d.is_running
    assert not thread.is_alive()
    types = rec.types()
    assert types[0] is EventType.OPERATION_DISPATCHER_STARTED
    assert types[-1] is EventType.OPERATION_DISPATCHER_STOPPED


def test_start_twice_raises_already_running(make_dispatcher) -> None:
    d = make_dispatcher()
    d.start()
    with pytest.raises(RuntimeError, match="already running"):
        d.start()
    with pytest.raises(RuntimeError, match="already running"):
        d.run()


def test_dispatcher_can_be_restarted_after_stop(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    d.start()
    d.stop()
    d.start()
    added = d.add_operation(op())
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=added.id)
    d.stop()
    assert rec.types().count(EventType.OPERATION_DISPATCHER_STARTED) == 2
    assert rec.types().count(EventType.OPERATION_DISPATCHER_STOPPED) == 2


def test_run_in_helper_thread_until_request_stop(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    runner = threading.Thread(target=d.run, name="test-runner")
    runner.start()
    rec.wait_for(EventType.OPERATION_DISPATCHER_STARTED)
    assert d.is_running
    with pytest.raises(RuntimeError, match="already running"):
        d.start()
    added = d.add_operation(op())
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=added.id)
    d.request_stop()
    runner.join(5)
    assert not runner.is_alive()
    assert not d.is_running
    rec.wait_for(EventType.OPERATION_DISPATCHER_STOPPED)


def test_stop_waits_for_run_in_another_thread(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    runner = threading.Thread(target=d.run, name="test-runner")
    runner.start()
    rec.wait_for(EventType.OPERATION_DISPATCHER_STARTED)
    d.stop(timeout=5)
    assert not d.is_running
    runner.join(5)
    assert not runner.is_alive()


def test_request_stop_before_run_makes_run_return_promptly(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    d.request_stop()
    began = time.monotonic()
    d.run()
    assert time.monotonic() - began < 2.0
    assert not d.is_running
    rec.wait_for(EventType.OPERATION_DISPATCHER_STOPPED)
    # the stop request was consumed: the dispatcher can run again
    d.start()
    assert d.is_running


def test_context_manager_starts_and_stops(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    with d as entered:
        assert entered is d
        assert d.is_running
        added = d.add_operation(op())
        rec.wait_for(EventType.OPERATION_STARTED, operation_id=added.id)
    assert not d.is_running
    assert rec.types()[-1] is EventType.OPERATION_DISPATCHER_STOPPED


def test_stopping_leaves_the_current_operation_running(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    d.start()
    added = d.add_operation(op())
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=added.id)
    d.stop()
    assert d.get_operation(added.id).state is ExecutionState.RUNNING
    assert d.complete_operation(added.id).state is ExecutionState.COMPLETED


def test_every_thread_is_named_operation_dispatcher(make_dispatcher) -> None:
    before = set(threading.enumerate())
    d = make_dispatcher(on_request_callback=lambda event: True)
    rec = EventRecorder(d)
    d.start()
    added = d.add_operation(op())
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=added.id)
    new = [t.name for t in threading.enumerate() if t not in before]
    assert new, "the dispatcher started no threads"
    assert all(name.startswith("operation-dispatcher") for name in new), new
    assert f"operation-dispatcher[{R}]" in new
    assert f"operation-dispatcher-events[{R}]" in new


def test_get_state_reports_running_and_uptime(make_dispatcher) -> None:
    d = make_dispatcher()
    state = d.get_state()
    assert state.resource_id == R
    assert not state.is_running
    assert state.running_since is None and state.uptime_seconds is None
    d.add_operation(op(release_date=None, priority=1))
    d.start()
    state = d.get_state()
    assert state.is_running
    assert state.running_since is not None
    assert state.uptime_seconds is not None and state.uptime_seconds >= 0
    d.stop()
    state = d.get_state()
    assert not state.is_running
    assert state.running_since is None and state.uptime_seconds is None


def test_start_paused_emits_started_then_paused_and_starts_nothing_until_resume(
    make_dispatcher,
) -> None:
    d = make_dispatcher(start_paused=True)
    rec = EventRecorder(d)
    assert d.is_paused
    added = d.add_operation(op())
    d.start()
    rec.wait_for(EventType.OPERATION_DISPATCHER_PAUSED)
    assert "dispatcher_paused" in d.explain(added.id)["blocked_by"]
    assert d.get_operation(added.id).state is ExecutionState.QUEUED
    assert d.resume_dispatcher_runtime() is True
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=added.id)
    dispatcher_types = [t for t in rec.types() if t.is_dispatcher_event]
    assert dispatcher_types == [
        EventType.OPERATION_DISPATCHER_STARTED,
        EventType.OPERATION_DISPATCHER_PAUSED,
        EventType.OPERATION_DISPATCHER_RESUMED,
    ]
    types = rec.types()
    assert types.index(EventType.OPERATION_STARTED) > types.index(
        EventType.OPERATION_DISPATCHER_RESUMED
    )


def test_pause_dispatcher_leaves_the_current_operation_running(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    d.start()
    first = d.add_operation(op(priority=5))
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=first.id)
    second = d.add_operation(op())
    assert d.pause_dispatcher_runtime() is True
    assert d.pause_dispatcher_runtime() is False  # already paused: no second event
    assert d.get_operation(first.id).state is ExecutionState.RUNNING
    d.complete_operation(first.id)
    rec.wait_for(EventType.OPERATION_COMPLETED, operation_id=first.id)
    assert "dispatcher_paused" in d.explain(second.id)["blocked_by"]
    assert d.resume_dispatcher_runtime() is True
    assert d.resume_dispatcher_runtime() is False
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=second.id)
    assert rec.types().count(EventType.OPERATION_DISPATCHER_PAUSED) == 1
    assert rec.types().count(EventType.OPERATION_DISPATCHER_RESUMED) == 1
    assert EventType.OPERATION_PAUSED not in rec.types()


# ---------------------------------------------------------------------------- step_dispatch


def test_step_dispatch_without_loop_starts_the_best_operation(make_dispatcher) -> None:
    d = make_dispatcher(on_request_callback=lambda event: True)
    assert d.step_dispatch() is None  # empty queue
    low = d.add_operation(op(priority=1))
    high = d.add_operation(op(priority=9))
    started = d.step_dispatch()
    assert started is not None and started.id == high.id
    assert started.state is ExecutionState.RUNNING and started.start_time is not None
    assert d.current_operation.id == high.id
    assert d.step_dispatch() is None  # resource busy
    d.complete_operation(high.id)
    assert d.step_dispatch().id == low.id
    plain = make_dispatcher()  # no request callback: approved at once
    only = plain.add_operation(op())
    assert plain.step_dispatch().id == only.id
    assert plain.get_operation(only.id).state is ExecutionState.RUNNING


def test_step_dispatch_returns_none_when_denied_or_paused(make_dispatcher) -> None:
    d = make_dispatcher(on_request_callback=lambda event: False)
    added = d.add_operation(op())
    assert d.step_dispatch() is None
    assert d.get_operation(added.id).state is ExecutionState.QUEUED
    paused = make_dispatcher(start_paused=True)
    paused.add_operation(op())
    assert paused.step_dispatch() is None


def test_step_dispatch_refused_while_the_loop_runs(make_dispatcher) -> None:
    d = make_dispatcher()
    d.start()
    with pytest.raises(RuntimeError, match="step_dispatch"):
        d.step_dispatch()


# ---------------------------------------------------------------------------- hanging callbacks


def test_hung_start_callback_does_not_block_cancel_or_stop(make_dispatcher, gate) -> None:
    asked = threading.Event()

    def callback(event):
        if event.event_type is EventType.OPERATION_START_REQUESTED:
            asked.set()
            gate.wait()  # hangs until the test is torn down
            return True
        return True  # cancels are approved at once

    d = make_dispatcher(on_request_callback=callback, request_event_timeout_seconds=30)
    rec = EventRecorder(d)
    d.start()
    head = d.add_operation(op(priority=9))
    queued = d.add_operation(op(priority=1))
    assert asked.wait(5)
    assert d.explain(head.id)["blocked_by"] == ["awaiting_approval"]

    results: dict[str, object] = {}

    def cancel_both() -> None:
        results["queued"] = d.cancel_operation(queued.id)
        results["head"] = d.cancel_operation(head.id)

    began = time.monotonic()
    canceller = threading.Thread(target=cancel_both, name="test-canceller")
    canceller.start()
    canceller.join(5)
    assert not canceller.is_alive()
    assert time.monotonic() - began < 3.0
    assert results["queued"].state is ExecutionState.COMPLETED
    assert results["head"].state is ExecutionState.COMPLETED
    rec.wait_for(EventType.OPERATION_CANCELLED, count=2)

    began = time.monotonic()
    d.stop()
    assert time.monotonic() - began < 3.0
    assert not d.is_running
    assert EventType.OPERATION_STARTED not in rec.types()


def test_stop_with_a_pending_request(make_dispatcher) -> None:
    asked = threading.Event()

    def callback(event):
        asked.set()
        return PENDING

    d = make_dispatcher(on_request_callback=callback, request_event_timeout_seconds=30)
    rec = EventRecorder(d)
    d.start()
    added = d.add_operation(op())
    assert asked.wait(5)
    assert len(d.pending_requests()) == 1
    began = time.monotonic()
    d.stop()
    assert time.monotonic() - began < 3.0
    assert not d.is_running
    assert d.get_operation(added.id).state is ExecutionState.QUEUED
    assert EventType.OPERATION_STARTED not in rec.types()


def test_constructor_validates_arguments() -> None:
    with pytest.raises(ValueError, match="poll_interval_seconds"):
        OperationDispatcher(R, poll_interval_seconds=0)
    with pytest.raises(ValueError, match="start_request_max_retries"):
        OperationDispatcher(R, start_request_max_retries=0)
    with pytest.raises(ValueError, match="start_request_retry_cooldown_seconds"):
        OperationDispatcher(R, start_request_retry_cooldown_seconds=-1)
    with pytest.raises(ValueError, match="request_event_timeout_seconds"):
        OperationDispatcher(R, request_event_timeout_seconds=0)
    with pytest.raises(ValueError, match="default_planned_duration"):
        OperationDispatcher(R, default_planned_duration=0)
    with pytest.raises(ValueError, match="updatable_fields"):
        OperationDispatcher(R, updatable_fields=["id"])
    with pytest.raises(ValueError, match="resource_id"):
        OperationDispatcher("")


def test_abandoned_callback_thread_ends_once_its_callback_returns(make_dispatcher) -> None:
    release = threading.Event()
    asked = threading.Event()

    def callback(event):
        asked.set()
        release.wait(10)
        return True

    d = make_dispatcher(on_request_callback=callback, request_event_timeout_seconds=30)
    d.start()
    d.add_operation(op())
    assert asked.wait(5)
    prefix = f"operation-dispatcher-requests[{R}]"
    workers = [t for t in threading.enumerate() if t.name.startswith(prefix)]
    assert len(workers) == 1
    d.stop()  # abandons the stuck worker
    assert workers[0].is_alive()
    release.set()
    workers[0].join(2)
    assert not workers[0].is_alive(), "a worker abandoned by stop() outlived its callback"


def test_stop_from_a_notification_callback(make_dispatcher) -> None:
    holder: dict[str, OperationDispatcher] = {}
    stopped = threading.Event()
    errors: list[BaseException] = []

    def on_notification(event) -> None:
        if event.event_type is EventType.OPERATION_STARTED:
            try:
                holder["d"].stop(timeout=5)
            except BaseException as exc:  # reported below
                errors.append(exc)
            stopped.set()

    d = make_dispatcher(on_notification_callback=on_notification)
    holder["d"] = d
    rec = EventRecorder(d)
    d.start()
    d.add_operation(op())
    assert stopped.wait(5)
    assert errors == []
    assert not d.is_running
    rec.wait_for(EventType.OPERATION_DISPATCHER_STOPPED)


def test_stop_from_a_request_callback(make_dispatcher) -> None:
    holder: dict[str, OperationDispatcher] = {}
    stopped = threading.Event()
    errors: list[BaseException] = []

    def on_request(event) -> bool:
        try:
            holder["d"].stop(timeout=5)
        except BaseException as exc:  # reported below
            errors.append(exc)
        stopped.set()
        return False

    d = make_dispatcher(on_request_callback=on_request)
    holder["d"] = d
    d.start()
    added = d.add_operation(op())
    assert stopped.wait(5)
    assert errors == []
    assert not d.is_running
    assert d.get_operation(added.id).state is ExecutionState.QUEUED

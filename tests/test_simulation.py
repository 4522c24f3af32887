"""SimulatedOperationRunner: attached to a dispatcher, and driven by hand."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from conftest import EventRecorder, op

from operation_dispatcher import (
    EventType,
    ExecutionOutcome,
    ExecutionState,
    SimulatedOperationRunner,
)


class Completions:
    """An on_complete callback the test can wait on."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.ids: list[UUID] = []

    def __call__(self, operation_id: UUID) -> None:
        with self.cond:
            self.ids.append(operation_id)
            self.cond.notify_all()

    def wait(self, count: int = 1, timeout: float = 5.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.ids) >= count, timeout)


@pytest.fixture
def runners() -> Iterator[list[SimulatedOperationRunner]]:
    made: list[SimulatedOperationRunner] = []
    yield made
    for runner in made:
        runner.stop()


@pytest.fixture
def driven(runners) -> tuple[SimulatedOperationRunner, Completions]:
    done = Completions()
    runner = SimulatedOperationRunner(on_complete=done, default_run_seconds=0.05)
    runners.append(runner)
    return runner, done


# ------------------------------------------------------------------------------ attached


def test_attached_runner_completes_after_planned_duration(make_dispatcher, runners) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    runner = SimulatedOperationRunner(dispatcher=d)
    runners.append(runner)
    runner.start_worker()
    d.start()
    ops = d.add_operations([op(planned_duration=0.1, priority=2), op(planned_duration=0.05)])
    completed = rec.wait_for(EventType.OPERATION_COMPLETED, count=2)
    assert [e.operation_id for e in completed] == [o.id for o in ops]
    for item in ops:
        started = rec.matching(EventType.OPERATION_STARTED, operation_id=item.id)[0]
        finished = rec.matching(EventType.OPERATION_COMPLETED, operation_id=item.id)[0]
        assert finished.created_at - started.created_at >= timedelta(
            seconds=item.planned_duration * 0.9
        )
        assert d.get_operation(item.id).outcome is ExecutionOutcome.SUCCESS
    assert runner.completed_count == 2
    assert runner.active_operation_id is None


def test_attached_runner_uses_default_run_seconds_and_speed(make_dispatcher, runners) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    runner = SimulatedOperationRunner(dispatcher=d, default_run_seconds=2.0, speed=20.0)
    runners.append(runner)
    runner.start_worker()
    d.start()
    item = d.add_operation(op())
    rec.wait_for(EventType.OPERATION_COMPLETED, operation_id=item.id, timeout=3)
    started = rec.matching(EventType.OPERATION_STARTED, operation_id=item.id)[0]
    finished = rec.matching(EventType.OPERATION_COMPLETED, operation_id=item.id)[0]
    assert finished.created_at - started.created_at < timedelta(seconds=1.5)


def test_attached_pause_and_resume_keep_the_remaining_time(make_dispatcher, runners) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    runner = SimulatedOperationRunner(dispatcher=d)
    runners.append(runner)
    runner.start_worker()
    d.start()
    item = d.add_operation(op(planned_duration=0.2))
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=item.id)
    assert d.pause_operation(item.id)
    paused = rec.wait_for(EventType.OPERATION_PAUSED, operation_id=item.id)[0]
    # longer than the whole run: a runner that kept counting would complete meanwhile
    with pytest.raises(AssertionError):
        rec.wait_for(EventType.OPERATION_COMPLETED, operation_id=item.id, timeout=0.35)
    assert runner.is_paused
    assert d.get_operation(item.id).state is ExecutionState.PAUSED
    assert d.resume_operation(item.id)
    resumed = rec.wait_for(EventType.OPERATION_RESUMED, operation_id=item.id)[0]
    finished = rec.wait_for(EventType.OPERATION_COMPLETED, operation_id=item.id)[0]
    started = rec.matching(EventType.OPERATION_STARTED, operation_id=item.id)[0]
    ran = (paused.created_at - started.created_at) + (finished.created_at - resumed.created_at)
    assert ran >= timedelta(seconds=0.15)
    assert finished.created_at - started.created_at >= timedelta(seconds=0.5)


def test_attached_cancel_drops_the_run(make_dispatcher, runners) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    runner = SimulatedOperationRunner(dispatcher=d)
    runners.append(runner)
    runner.start_worker()
    d.start()
    long_one = d.add_operation(op(planned_duration=30, priority=5))
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=long_one.id)
    short = d.add_operation(op(planned_duration=0.05))
    assert d.cancel_operation(long_one.id) is not None
    rec.wait_for(EventType.OPERATION_COMPLETED, operation_id=short.id)
    assert runner.completed_count == 1
    assert d.get_operation(long_one.id).outcome is ExecutionOutcome.CANCELLED


def test_runner_stop_unsubscribes(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    runner = SimulatedOperationRunner(dispatcher=d)
    with runner:
        assert any(t.name == "simulated-machine" for t in threading.enumerate())
    d.start()
    item = d.add_operation(op(planned_duration=0.01))
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=item.id)
    d.drain_events(5)
    assert runner.completed_count == 0
    assert runner.active_operation_id is None


# ------------------------------------------------------------------------------ driven


def test_driven_start_calls_on_complete(driven) -> None:
    runner, done = driven
    a = uuid4()
    assert runner.start(a, 0.05)
    assert runner.active_operation_id == a
    assert done.wait()
    assert done.ids == [a]
    assert runner.completed_count == 1
    assert runner.active_operation_id is None
    assert runner.start(uuid4())  # None -> default_run_seconds
    assert done.wait(2)


def test_driven_rejects_non_positive_run_time(driven, caplog) -> None:
    runner, _ = driven
    with caplog.at_level(logging.WARNING):
        assert runner.start(uuid4(), 0) is False
        assert runner.start(uuid4(), -1) is False
    assert runner.active_operation_id is None
    assert "refusing" in caplog.text


def test_driven_pause_resume_only_for_the_active_operation(driven) -> None:
    runner, done = driven
    a = uuid4()
    assert runner.pause(a) is False  # nothing runs
    runner.start(a, 0.15)
    assert runner.resume(a) is False  # not paused
    assert runner.pause(uuid4()) is False
    assert runner.pause(a) is True
    assert runner.is_paused
    assert runner.pause(a) is False
    assert not done.wait(timeout=0.3)  # frozen for longer than the whole run
    assert runner.resume(a) is True
    assert not runner.is_paused
    assert done.wait()
    assert done.ids == [a]


def test_driven_cancel_semantics(driven) -> None:
    runner, done = driven
    assert runner.cancel() is True  # idle: fine
    a, other = uuid4(), uuid4()
    runner.start(a, 0.1)
    assert runner.cancel(other) is True  # not ours: fine, and a keeps running
    assert runner.active_operation_id == a
    assert done.wait()
    assert done.ids == [a]
    b = uuid4()
    runner.start(b, 0.1)
    assert runner.cancel(b) is True
    assert runner.active_operation_id is None
    assert not done.wait(2, timeout=0.3)
    assert done.ids == [a]


def test_driven_start_replaces_the_run_in_progress(driven) -> None:
    runner, done = driven
    first, second = uuid4(), uuid4()
    runner.start(first, 30)
    runner.start(second, 0.05)
    assert done.wait()
    assert done.ids == [second]


def test_on_complete_errors_are_logged_and_the_runner_goes_on(runners, caplog) -> None:
    done = Completions()
    first_reported = threading.Event()

    def flaky(operation_id: UUID) -> None:
        if not first_reported.is_set():
            first_reported.set()
            raise RuntimeError("controller offline")
        done(operation_id)

    runner = SimulatedOperationRunner(on_complete=flaky)
    runners.append(runner)
    with caplog.at_level(logging.ERROR):
        runner.start(uuid4(), 0.01)
        assert first_reported.wait(5)
        second = uuid4()
        runner.start(second, 0.01)
        assert done.wait()
    assert done.ids == [second]
    assert runner.completed_count == 2
    assert "controller offline" in caplog.text


def test_driven_by_request_and_notification_callbacks(make_dispatcher, runners) -> None:
    """The seed's example wiring: the runner's answers are the pause/resume/cancel decisions."""
    holder: dict[str, Any] = {}
    runner = SimulatedOperationRunner(on_complete=lambda i: holder["d"].complete_operation(i))
    runners.append(runner)

    def on_request(event):
        kind = event.event_type
        if kind is EventType.OPERATION_PAUSE_REQUESTED:
            return runner.pause(event.operation_id)
        if kind is EventType.OPERATION_RESUME_REQUESTED:
            return runner.resume(event.operation_id)
        if kind is EventType.OPERATION_CANCEL_REQUESTED:
            return runner.cancel(event.operation_id)
        return True

    def on_notification(event):
        if event.event_type is EventType.OPERATION_STARTED:
            runner.start(event.operation_id, 0.2 if event.operation_id == first.id else 30)

    d = make_dispatcher(on_request_callback=on_request, on_notification_callback=on_notification)
    holder["d"] = d
    rec = EventRecorder(d)
    first, second = op(priority=1), op()
    d.start()
    d.add_operations([first, second])
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=first.id)
    d.drain_events(5)  # the runner has been told
    assert d.pause_operation(first.id) is True
    assert runner.is_paused
    assert d.resume_operation(first.id) is True
    rec.wait_for(EventType.OPERATION_COMPLETED, operation_id=first.id)
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=second.id)
    d.drain_events(5)
    assert runner.active_operation_id == second.id
    assert d.cancel_operation(second.id) is not None
    assert runner.active_operation_id is None
    assert d.cancel_operation(first.id) is None  # already finished


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="on_complete"):
        SimulatedOperationRunner()
    with pytest.raises(ValueError, match="default_run_seconds"):
        SimulatedOperationRunner(on_complete=print, default_run_seconds=0)
    with pytest.raises(ValueError, match="speed"):
        SimulatedOperationRunner(on_complete=print, speed=0)


def test_stop_from_on_complete(runners) -> None:
    done = threading.Event()
    errors: list[BaseException] = []
    holder: dict[str, SimulatedOperationRunner] = {}

    def on_complete(operation_id: UUID) -> None:
        try:
            holder["r"].stop()
        except BaseException as exc:  # reported below
            errors.append(exc)
        done.set()

    runner = SimulatedOperationRunner(on_complete=on_complete)
    holder["r"] = runner
    runner.start(uuid4(), 0.01)
    assert done.wait(5)
    assert errors == []

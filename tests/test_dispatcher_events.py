"""Event delivery: order, the event thread, failing subscribers, re-entrancy, subscribe/drain."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from conftest import RESOURCE as R
from conftest import EventRecorder, op

from operation_dispatcher import (
    DispatchEvent,
    EventType,
    ExecutionOutcome,
    TerminationReason,
)
from operation_dispatcher.events import EventBus


class Notifications:
    """A notification callback that records events and the thread each arrived on."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.events: list[Any] = []
        self.threads: list[str] = []

    def __call__(self, event) -> None:
        with self.cond:
            self.events.append(event)
            self.threads.append(threading.current_thread().name)
            self.cond.notify_all()

    def wait_for(self, event_type: EventType, count: int = 1, timeout: float = 5.0) -> None:
        with self.cond:
            ok = self.cond.wait_for(
                lambda: sum(e.event_type is event_type for e in self.events) >= count, timeout
            )
            assert ok, [e.event_type.value for e in self.events]


def test_notifications_arrive_in_emission_order_on_the_event_thread(make_dispatcher) -> None:
    notes = Notifications()
    d = make_dispatcher(on_notification_callback=notes)
    d.start()
    ops = [d.add_operation(op(priority=-i)) for i in range(5)]
    for item in ops:
        notes.wait_for(EventType.OPERATION_STARTED, count=ops.index(item) + 1)
        d.complete_operation(item.id)
    d.stop()
    assert set(notes.threads) == {f"operation-dispatcher-events[{R}]"}
    history = [e for e in d.get_history().events if not e.event_type.is_request]
    assert [e.id for e in notes.events] == [e.id for e in history]
    # equal to the history's events, but never the same objects: the history keeps its own
    assert notes.events == history
    assert not any(a is b for a, b in zip(notes.events, history, strict=True))
    started = [e.operation_id for e in notes.events if e.event_type is EventType.OPERATION_STARTED]
    assert started == [o.id for o in ops]
    assert notes.events[0].event_type is EventType.OPERATION_DISPATCHER_STARTED
    assert notes.events[-1].event_type is EventType.OPERATION_DISPATCHER_STOPPED


def test_dispatcher_events_carry_the_resource_and_no_operation(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    d.start()
    d.pause_dispatcher_runtime()
    d.resume_dispatcher_runtime()
    d.stop()
    events = [e for e in rec.events if e.event_type.is_dispatcher_event]
    assert [e.event_type for e in events] == [
        EventType.OPERATION_DISPATCHER_STARTED,
        EventType.OPERATION_DISPATCHER_PAUSED,
        EventType.OPERATION_DISPATCHER_RESUMED,
        EventType.OPERATION_DISPATCHER_STOPPED,
    ]
    for event in events:
        assert event.resource_id == R
        assert event.operation_id is None
        assert event.changes == [] and event.meta_data == {}


def test_a_failing_notification_callback_is_logged_and_kept(make_dispatcher, caplog) -> None:
    seen = []

    def flaky(event) -> None:
        seen.append(event.event_type)
        if event.event_type is EventType.OPERATION_ADDED:
            raise RuntimeError("observer broke")

    d = make_dispatcher(on_notification_callback=flaky)
    rec = EventRecorder(d)
    with caplog.at_level(logging.ERROR):
        d.start()
        added = d.add_operation(op())
        rec.wait_for(EventType.OPERATION_STARTED, operation_id=added.id)
        d.complete_operation(added.id)
        assert d.drain_events(5)
    assert EventType.OPERATION_STARTED in seen
    assert EventType.OPERATION_COMPLETED in seen
    failures = [r for r in caplog.records if "operation_added" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].levelno == logging.ERROR
    assert str(failures[0].exc_info[1]) == "observer broke"


def test_notification_callback_may_complete_the_operation(make_dispatcher) -> None:
    holder: dict[str, Any] = {}
    done = threading.Event()
    completed: set[Any] = set()

    def finish_on_start(event) -> None:
        d = holder["d"]
        if event.event_type is EventType.OPERATION_STARTED:
            d.complete_operation(event.operation_id)
        elif event.event_type is EventType.OPERATION_COMPLETED:
            # counted, not "the schedule is empty": the loop may start the last one before this
            # thread has handled the one before it (seen under emulation), leaving it running
            completed.add(event.operation_id)
            if len(completed) == 3:
                done.set()

    d = make_dispatcher(on_notification_callback=finish_on_start)
    holder["d"] = d
    d.start()
    ops = d.add_operations([op() for _ in range(3)])
    assert done.wait(5)
    for item in ops:
        assert d.get_operation(item.id).outcome is ExecutionOutcome.SUCCESS


def test_subscribe_and_unsubscribe(make_dispatcher) -> None:
    d = make_dispatcher()
    plain: list[Any] = []
    unsubscribe = d.subscribe(plain.append)
    rec = EventRecorder(d)
    d.start()
    first = d.add_operation(op())
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=first.id)
    assert d.drain_events(5)
    assert [e.event_type for e in plain] == [
        EventType.OPERATION_DISPATCHER_STARTED,
        EventType.OPERATION_ADDED,
        EventType.OPERATION_STARTED,
    ]  # no *_REQUESTED without include_requests
    unsubscribe()
    unsubscribe()  # twice is harmless
    d.complete_operation(first.id)
    rec.wait_for(EventType.OPERATION_COMPLETED, operation_id=first.id)
    assert d.drain_events(5)
    assert len(plain) == 3
    assert EventType.OPERATION_START_REQUESTED in rec.types()


def test_drain_events_waits_for_slow_subscribers(make_dispatcher) -> None:
    d = make_dispatcher()
    release = threading.Event()
    delivered: list[Any] = []

    def slow(event) -> None:
        release.wait(5)
        delivered.append(event)

    d.subscribe(slow)
    d.add_operation(op())
    assert d.drain_events(timeout=0.05) is False  # the subscriber is still busy
    release.set()
    assert d.drain_events(timeout=5) is True
    assert [e.event_type for e in delivered] == [EventType.OPERATION_ADDED]


def test_slow_subscriber_does_not_stall_dispatching(make_dispatcher, gate) -> None:
    """With the event thread stuck in a subscriber, operations still start and time out.

    Progress is observed through the request callback, which runs on its own workers: the
    second operation is asked for only after the first one started and timed out.
    """
    asked = Notifications()
    d = make_dispatcher(on_request_callback=lambda e: asked(e) or True)
    d.subscribe(lambda event: gate.wait())
    d.start()
    first = d.add_operation(op(priority=9, timeout_seconds=0.05))
    second = d.add_operation(op())
    asked.wait_for(EventType.OPERATION_START_REQUESTED, count=2)
    assert [e.operation_id for e in asked.events] == [first.id, second.id]
    stored = d.get_operation(first.id)
    assert stored.termination_reason is TerminationReason.TIMEOUT
    assert stored.start_time is not None
    gate.set()


def test_list_events_per_operation(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    d.start()
    a = d.add_operation(op(priority=1))
    b = d.add_operation(op())
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=a.id)
    d.update_operation(b.id, {"payload": {"x": 1}})
    d.complete_operation(a.id)
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=b.id)
    assert [e.event_type for e in d.list_events(a.id)] == [
        EventType.OPERATION_ADDED,
        EventType.OPERATION_START_REQUESTED,
        EventType.OPERATION_STARTED,
        EventType.OPERATION_COMPLETED,
    ]
    assert [e.event_type for e in d.list_events(str(b.id))] == [
        EventType.OPERATION_ADDED,
        EventType.OPERATION_UPDATED,
        EventType.OPERATION_START_REQUESTED,
        EventType.OPERATION_STARTED,
    ]
    assert d.list_events(op().id) == []


# ------------------------------------------------------------------------ issue 10 E.16, E.17

EVENT_THREAD = f"operation-dispatcher-events[{R}]"


def event_threads_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == EVENT_THREAD and t.is_alive()]


def test_drain_events_in_a_notification_handler_raises_instead_of_deadlocking(
    make_dispatcher,
) -> None:
    errors: list[Exception] = []
    results: list[Any] = []
    d = make_dispatcher()

    def handler(event) -> None:
        if event.event_type is not EventType.OPERATION_ADDED or errors or results:
            return
        for timeout in (2.0, None):  # the old code waited 2 s for itself, then said False
            try:
                results.append(d.drain_events(timeout))
            except RuntimeError as exc:
                errors.append(exc)
                if timeout is not None:
                    continue
            break

    d.subscribe(handler)
    rec = EventRecorder(d)
    first = d.add_operation(op())
    rec.wait_for(EventType.OPERATION_ADDED, operation_id=first.id)
    second = d.add_operation(op())  # later events still reach every subscriber
    rec.wait_for(EventType.OPERATION_ADDED, operation_id=second.id)
    assert d.drain_events(5) is True  # from another thread it works as before
    assert results == []
    assert len(errors) == 2
    assert "notification handler" in str(errors[0]) and EVENT_THREAD in str(errors[0])


def test_after_stop_no_event_restarts_the_event_thread(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    d.start()
    first = d.add_operation(op())
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=first.id)
    d.stop()
    assert event_threads_alive() == []
    seen = len(rec.events)

    d.complete_operation(first.id)
    second = d.add_operation(op())
    d.update_operation(second.id, {"priority": 3})
    d.pause_dispatcher_runtime()
    d.resume_dispatcher_runtime()
    d.signals.set("door.closed", True)
    assert event_threads_alive() == []  # nothing runs until start()
    assert len(rec.events) == seen
    assert d.drain_events(1) is False  # held for the next start, and says so at once
    d.stop()  # stopping again is harmless and keeps the events held
    assert event_threads_alive() == []

    d.start()  # the held events come first, in order, then the new run
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=second.id)
    assert rec.types()[seen:seen + 7] == [
        EventType.OPERATION_COMPLETED,
        EventType.OPERATION_ADDED,
        EventType.OPERATION_UPDATED,
        EventType.OPERATION_DISPATCHER_PAUSED,
        EventType.OPERATION_DISPATCHER_RESUMED,
        EventType.OPERATION_DISPATCHER_STARTED,
        EventType.OPERATION_START_REQUESTED,
    ]
    d.stop()
    assert event_threads_alive() == []


def _event(event_type: EventType = EventType.OPERATION_ADDED) -> DispatchEvent:
    return DispatchEvent(resource_id=R, event_type=event_type)


def test_a_stopped_bus_holds_a_bounded_number_of_events(caplog) -> None:
    bus = EventBus("bus-under-test", opens_on=EventType.OPERATION_DISPATCHER_STARTED, held_limit=3)
    delivered: list[DispatchEvent] = []
    bus.subscribe(delivered.append)
    first = _event()
    bus.publish(first)
    assert bus.drain(5) is True
    assert bus.stop(5) is True
    held = [_event() for _ in range(5)]
    with caplog.at_level(logging.WARNING, logger="operation_dispatcher.events"):
        for event in held:
            bus.publish(event)
    assert bus.thread is not None and not bus.thread.is_alive()
    assert bus.is_closed and bus.drain(5) is False
    warnings = [r for r in caplog.records if "dropping the oldest" in r.getMessage()]
    assert len(warnings) == 1  # once per stop, not once per event
    started = _event(EventType.OPERATION_DISPATCHER_STARTED)
    bus.publish(started)
    assert bus.drain(5) is True
    assert delivered == [first, *held[2:], started]  # the oldest two were dropped
    assert bus.stop(5) is True


@pytest.mark.parametrize("reopen", [False, True])
def test_stop_delivers_what_came_before_it_and_holds_the_rest(reopen) -> None:
    """A slow subscriber is still busy when stop() comes: earlier events are delivered,
    later ones wait for the reopening event."""
    bus = EventBus("bus-under-test", opens_on=EventType.OPERATION_DISPATCHER_STARTED)
    release = threading.Event()
    delivered: list[DispatchEvent] = []

    def slow(event: DispatchEvent) -> None:
        release.wait(5)
        delivered.append(event)

    bus.subscribe(slow)
    before = [_event(), _event()]
    for event in before:
        bus.publish(event)
    stopper = threading.Thread(target=bus.stop, args=(5,), name="stopper")
    stopper.start()
    while not bus.is_closed:  # bounded by the thread above, which closes at once
        stopper.join(0.001)
    after = _event()
    bus.publish(after)
    if reopen:
        bus.publish(_event(EventType.OPERATION_DISPATCHER_STARTED))
    release.set()
    if reopen:  # reopened before the first stop() finished: it keeps running until stopped again
        assert bus.drain(5) is True
        assert delivered[:3] == [*before, after]
        assert bus.stop(5) is True
    stopper.join(5)
    assert not stopper.is_alive()
    if not reopen:
        assert delivered == before
        assert bus.drain(1) is False


REQUEST_THREADS = f"operation-dispatcher-requests[{R}]"


def test_after_stop_a_handshake_leaves_no_request_worker_alive(make_dispatcher) -> None:
    asked = threading.Event()

    def callback(event):
        if event.event_type is EventType.OPERATION_CANCEL_REQUESTED:
            asked.set()
            return False
        return True

    d = make_dispatcher(on_request_callback=callback, start_request_retry_cooldown_seconds=0)
    rec = EventRecorder(d)
    d.start()
    running = d.add_operation(op())
    rec.wait_for(EventType.OPERATION_STARTED, operation_id=running.id)
    d.stop()
    assert d.cancel_operation(running.id) is None  # the callback still answers after stop()
    assert asked.is_set()
    assert d.pause_operation(running.id) is True
    workers = [t for t in threading.enumerate() if t.name.startswith(REQUEST_THREADS)]
    for thread in workers:  # each ran one job for a caller and ends with it
        thread.join(5)
    assert [t.name for t in workers if t.is_alive()] == []
    assert event_threads_alive() == []

"""Running the dispatcher: start/stop/run/request_stop, pausing, state, step_dispatch, hangs."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
from conftest import RESOURCE as R
from conftest import EventRecorder, op

from operation_dispatcher import (
    PENDING,
    EventType,
    ExecutionState,
    JournalError,
    OperationDispatcher,
)

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


# ---------------------------------------------------------------------------- a start that fails

# Run in a child process: RLIMIT_FSIZE (``ulimit -f``) is how a full disk looks to SQLite, and it
# would limit pytest's own files too. SIGXFSZ is ignored, so a write past the limit fails (EFBIG)
# instead of killing the process. A fresh journal lives in its WAL file until the first
# checkpoint, so limiting the file size to the WAL's size makes the next commit fail.
_START_ON_A_FULL_DISK = r"""
import json, os, resource, signal, sys, urllib.error, urllib.request
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from operation_dispatcher import JournalError, Operation, OperationDispatcher
from operation_dispatcher.http import ApiServer, create_app

path = sys.argv[1]
out = {}
dispatcher = OperationDispatcher("robot-1", journal=path)
server = ApiServer(create_app(dispatcher), "127.0.0.1", 0)
server.start()

def call(method, route):
    body = b"" if method == "POST" else None
    request = urllib.request.Request(server.url + route, method=method, data=body)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())

def attempt(name, fn):
    try:
        fn()
        out[name] = "ok"
    except Exception as exc:
        out[name] = f"{type(exc).__name__}: {exc}"

soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
full = max(os.path.getsize(path), os.path.getsize(path + "-wal"))
resource.setrlimit(resource.RLIMIT_FSIZE, (full, hard))
attempt("start", dispatcher.start)
out["running_after_failed_start"] = dispatcher.is_running
out["threads_after_failed_start"] = sorted(t.name for t in __import__("threading").enumerate()
                                           if t.name.startswith("operation-dispatcher["))
attempt("stop", lambda: dispatcher.stop(timeout=5.0))
out["http_start"] = call("POST", "/dispatcher/start")
out["health"] = call("GET", "/health")[1]

resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # room again
out["http_start_again"] = call("POST", "/dispatcher/start")[0]
out["running"] = dispatcher.is_running
out["health_again"] = call("GET", "/health")[1]
added = dispatcher.add_operation(Operation(resource_id="robot-1"))
out["added_state"] = dispatcher.get_operation(added.id).state.value
server.stop()
attempt("close", lambda: dispatcher.close(timeout=5.0))
print(json.dumps(out))
"""


def test_a_start_the_journal_cannot_record_raises_and_can_be_retried(tmp_path) -> None:
    # issue 10, C.7: start() returned, is_running said true, the loop thread was dead, stop()
    # raised ThreadDidNotStop forever and start() said "already running".
    done = subprocess.run(
        [sys.executable, "-c", _START_ON_A_FULL_DISK, str(tmp_path / "state.db")],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["start"].startswith("JournalError: journal "), out
    assert "write failed, change not made" in out["start"]
    assert out["running_after_failed_start"] is False
    assert out["threads_after_failed_start"] == []  # no loop thread was left behind
    assert out["stop"] == "ok"
    status, body = out["http_start"]
    assert status == 503 and body["code"] == "journal_unavailable", body
    assert body["state"]["is_running"] is False and body["state"]["runtime_thread_alive"] is False
    assert "journal" in body["state"]["runtime_last_error"]
    assert out["health"]["dispatcher_running"] is False
    # once the disk has room, the same dispatcher starts and dispatches
    assert out["http_start_again"] == 202
    assert out["running"] is True and out["health_again"]["dispatcher_running"] is True
    assert out["added_state"] == "RUNNING"
    assert out["close"] == "ok"


def test_start_after_close_is_a_clear_error(tmp_path) -> None:
    # issue 10, C.7: start() after close() wedged the dispatcher like a full disk did
    d = OperationDispatcher(R, journal=tmp_path / "state.db")
    d.start()
    d.close(timeout=5.0)
    with pytest.raises(JournalError, match="is closed") as caught:
        d.start()
    assert str(tmp_path / "state.db") in str(caught.value)
    with pytest.raises(JournalError, match="is closed"):
        d.run()
    assert d.is_running is False and d.get_state().is_running is False
    d.stop(timeout=5.0)  # returns: nothing runs
    d.close(timeout=5.0)  # and closing twice is fine
    again = OperationDispatcher(R, journal=tmp_path / "state.db")  # the file was released
    again.start()
    assert again.is_running
    again.close(timeout=5.0)


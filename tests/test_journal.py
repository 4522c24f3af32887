"""The SQLite journal: restart, recovery policies, retention, pruning, bad files, failed writes.

Every test works on real SQLite files under ``tmp_path``; nothing is mocked. A "crash" here is a
dispatcher closed while an operation runs: the journal then holds exactly what a killed process
leaves behind (test_journal_crash.py kills real processes).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RESOURCE as R
from conftest import EventRecorder, op

from operation_dispatcher import (
    PENDING,
    DuplicateOperation,
    EventType,
    ExecutionOutcome,
    ExecutionState,
    Journal,
    JournalError,
    Operation,
    OperationDispatcher,
    TerminationReason,
    ValidationError,
)
from operation_dispatcher.journal import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from operation_dispatcher.store import JournalEventStore

E = EventType


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def open_dispatcher() -> Iterator[Callable[..., OperationDispatcher]]:
    """``open_dispatcher(journal, **kwargs)``; every dispatcher is closed at teardown."""
    made: list[OperationDispatcher] = []

    def factory(journal: Any, **kwargs: Any) -> OperationDispatcher:
        dispatcher = OperationDispatcher(R, journal=journal, **kwargs)
        made.append(dispatcher)
        return dispatcher

    yield factory
    for dispatcher in reversed(made):
        dispatcher.close(timeout=5.0)


def run_one(dispatcher: OperationDispatcher) -> Operation:
    """Start the next operation (no loop running) and complete it."""
    started = dispatcher.step_dispatch()
    assert started is not None
    return dispatcher.complete_operation(started.id)


def types(events: list) -> list[EventType]:
    return [e.event_type for e in events]


def journal_ids(journal: Journal) -> set[str]:
    conn = journal._conn
    assert conn is not None
    return {row[0] for row in conn.execute("SELECT id FROM operations")}


# ------------------------------------------------------------------------------ restart


def test_restart_keeps_the_queue_in_dispatch_order(path, open_dispatcher) -> None:
    first = open_dispatcher(path)
    first.add_operation(op(priority=1, payload={"task": "a"}))
    first.add_operations([op(priority=5), op(priority=3, job_id="job-7"), op(priority=5)])
    last = first.add_operation(op(priority=0, timeout_seconds=30.0))
    first.update_operation(last.id, {"priority": 2, "payload": {"task": "z"}})
    before = [o.to_dict() for o in first.get_schedule()]
    assert [o["priority"] for o in before] == [5, 5, 3, 2, 1]
    first.close()

    second = open_dispatcher(path)
    assert [o.to_dict() for o in second.get_schedule()] == before
    started = second.step_dispatch()
    assert started is not None and str(started.id) == before[0]["id"]


def test_restart_keeps_finished_operations_and_events(path, open_dispatcher) -> None:
    first = open_dispatcher(path)
    done = first.add_operation(op(payload={"n": 1}))
    failed = first.add_operation(op(payload={"n": 2}))
    cancelled = first.add_operation(op(payload={"n": 3}))
    run_one(first)
    started = first.step_dispatch()
    assert started is not None and started.id == failed.id
    first.fail_operation(failed.id, TerminationReason.EXTERNAL_ERROR, {"why": "jammed"})
    first.cancel_operation(cancelled.id, TerminationReason.USER_REQUEST)
    ids = (done.id, failed.id, cancelled.id)
    snapshots = {i: first.get_operation(i).to_dict() for i in ids}
    events = {i: [e.to_dict() for e in first.list_events(i)] for i in ids}
    history = [e.to_dict() for e in first.get_history().events]
    first.close()

    second = open_dispatcher(path)
    for i in ids:
        assert second.get_operation(i).to_dict() == snapshots[i]
        assert [e.to_dict() for e in second.list_events(i)] == events[i]
    assert [e.to_dict() for e in second.get_history().events] == history
    assert second.get_operation(done.id).outcome is ExecutionOutcome.SUCCESS
    assert second.get_operation(failed.id).termination_reason is TerminationReason.EXTERNAL_ERROR
    assert second.get_operation(cancelled.id).outcome is ExecutionOutcome.CANCELLED
    assert second.get_schedule() == [] and second.current_operation is None
    # and the in-memory state was reloaded, not just read through from the file
    assert {o.id for o in second._queue.completed_operations} == set(ids)
    # events are read from the journal, not copied into memory
    assert isinstance(second._store, JournalEventStore)


def test_restart_keeps_the_paused_flag(path, open_dispatcher) -> None:
    first = open_dispatcher(path)
    queued = first.add_operation(op())
    assert first.pause_dispatcher_runtime()
    first.close()

    second = open_dispatcher(path)
    assert second.is_paused
    assert second.step_dispatch() is None
    assert "dispatcher_paused" in second.explain(queued.id)["blocked_by"]
    assert second.resume_dispatcher_runtime()
    second.close()

    third = open_dispatcher(path)
    assert not third.is_paused
    assert third.step_dispatch().id == queued.id
    third.close()

    fourth = open_dispatcher(path, start_paused=True)  # start_paused still wins over the file
    assert fourth.is_paused


def test_a_denied_start_keeps_its_cooldown_across_restart(path, open_dispatcher) -> None:
    asked: list[Any] = []

    def deny(event):
        asked.append(event)
        return False

    config = {"on_request_callback": deny, "start_request_retry_cooldown_seconds": 3600.0}
    first = open_dispatcher(path, **config)
    queued = first.add_operation(op())
    assert first.step_dispatch() is None
    assert len(asked) == 1
    first.close()

    second = open_dispatcher(path, **config)
    assert "cooldown" in second.explain(queued.id)["blocked_by"]
    assert second.step_dispatch() is None
    assert len(asked) == 1, "the cooldown was forgotten: the start was asked again"
    # resuming the runtime clears retry state, in the journal too
    second.pause_dispatcher_runtime()
    second.resume_dispatcher_runtime()
    second.close()

    third = open_dispatcher(path, **config)
    assert "cooldown" not in third.explain(queued.id)["blocked_by"]


def test_the_denial_count_survives_restart(path, open_dispatcher) -> None:
    config = {
        "on_request_callback": lambda event: False,
        "start_request_retry_cooldown_seconds": 0.0,
        "start_request_max_retries": 2,
    }
    first = open_dispatcher(path, **config)
    queued = first.add_operation(op())
    assert first.step_dispatch() is None
    assert not first.is_paused
    first.close()

    second = open_dispatcher(path, **config)
    assert second.step_dispatch() is None
    denials = [e for e in second.list_events(queued.id) if e.event_type is E.OPERATION_START_DENIED]
    assert [e.meta_data["retry_count"] for e in denials] == [1, 2]
    assert second.is_paused, "the second denial (of max 2) must pause the dispatcher"
    second.close()

    assert open_dispatcher(path, **config).is_paused


# ------------------------------------------------------------------------------ recovery


def crash_while(path: Path, open_dispatcher, state: ExecutionState) -> tuple[Operation, Operation]:
    """Leave a journal with one operation RUNNING (or PAUSED) and one queued behind it."""
    before = open_dispatcher(path)
    busy, waiting = before.add_operations([op(priority=9), op(priority=1)])
    assert before.step_dispatch().id == busy.id
    if state is ExecutionState.PAUSED:
        assert before.pause_operation(busy.id)
    before.close()  # the journal now holds what a killed process would leave
    return busy, waiting


@pytest.mark.parametrize("state", [ExecutionState.RUNNING, ExecutionState.PAUSED])
def test_recovery_fail_interrupts_the_operation_and_never_starts_it_again(
    path, open_dispatcher, state
) -> None:
    busy, waiting = crash_while(path, open_dispatcher, state)
    notified: list[Any] = []
    after = open_dispatcher(path, on_notification_callback=notified.append)  # recovery="fail"
    assert after.current_operation is None
    recovered = after.get_operation(busy.id)
    assert recovered.state is ExecutionState.COMPLETED
    assert recovered.outcome is ExecutionOutcome.FAILURE
    assert recovered.termination_reason is TerminationReason.INTERRUPTED
    last = after.list_events(busy.id)[-1]
    assert last.event_type is E.OPERATION_FAILED
    assert last.meta_data == {"recovered": True, "previous_state": state.value}
    assert after.drain_events(5.0)
    assert [e.id for e in notified if e.operation_id == busy.id] == [last.id]

    # the loop runs what was waiting, never the interrupted one again
    recorder = EventRecorder(after)
    after.start()
    recorder.wait_for(E.OPERATION_STARTED, operation_id=waiting.id)
    after.complete_operation(waiting.id)
    recorder.wait_for(E.OPERATION_COMPLETED, operation_id=waiting.id)
    assert recorder.matching(E.OPERATION_STARTED, operation_id=busy.id) == []
    assert types(after.list_events(busy.id)).count(E.OPERATION_STARTED) == 1
    after.close()

    again = open_dispatcher(path)  # nothing left to recover: no second OPERATION_FAILED
    assert types(again.list_events(busy.id)).count(E.OPERATION_FAILED) == 1


def test_recovery_pause_keeps_a_running_operation_paused_then_resume_and_complete(
    path, open_dispatcher
) -> None:
    busy, waiting = crash_while(path, open_dispatcher, ExecutionState.RUNNING)
    after = open_dispatcher(path, recovery="pause")
    current = after.current_operation
    assert current is not None and current.id == busy.id
    assert current.state is ExecutionState.PAUSED
    last = after.list_events(busy.id)[-1]
    assert last.event_type is E.OPERATION_PAUSED
    assert last.meta_data == {"recovered": True, "previous_state": "RUNNING"}
    assert after.step_dispatch() is None, "nothing may start while the operator decides"
    assert [o.id for o in after.get_schedule()] == [waiting.id]
    after.close()

    # still undecided at the next restart: still PAUSED, and no second "recovered" event
    after = open_dispatcher(path, recovery="pause")
    assert after.current_operation.state is ExecutionState.PAUSED
    assert [e.id for e in after.list_events(busy.id)][-1] == last.id

    assert after.resume_operation(busy.id)
    assert after.current_operation.state is ExecutionState.RUNNING
    done = after.complete_operation(busy.id)
    assert done.outcome is ExecutionOutcome.SUCCESS
    assert after.step_dispatch().id == waiting.id
    assert types(after.list_events(busy.id)).count(E.OPERATION_STARTED) == 1


def test_recovery_pause_then_cancel(path, open_dispatcher) -> None:
    busy, waiting = crash_while(path, open_dispatcher, ExecutionState.PAUSED)
    after = open_dispatcher(path, recovery="pause")
    assert after.current_operation.id == busy.id
    # it was PAUSED already: it stays so, with no new event
    assert after.list_events(busy.id)[-1].event_type is E.OPERATION_PAUSED
    assert "recovered" not in after.list_events(busy.id)[-1].meta_data
    cancelled = after.cancel_operation(busy.id, TerminationReason.USER_REQUEST)
    assert cancelled is not None and cancelled.outcome is ExecutionOutcome.CANCELLED
    assert after.current_operation is None
    assert after.step_dispatch().id == waiting.id
    after.close()
    assert open_dispatcher(path).get_operation(busy.id).outcome is ExecutionOutcome.CANCELLED


def test_recovery_must_be_fail_or_pause(path) -> None:
    with pytest.raises(ValidationError):
        OperationDispatcher(R, journal=path, recovery="retry")


# ------------------------------------------------------------------------------ at-most-once
# (and the ordering that makes it hold: an event is published only once it is committed)


def test_every_published_event_is_already_in_the_journal(path, open_dispatcher) -> None:
    dispatcher = open_dispatcher(path, on_request_callback=lambda event: True)
    unjournaled: list[Any] = []
    seen = threading.Condition()
    count = [0]

    def check(event) -> None:
        if event.operation_id is not None:  # read the journal from the event thread
            if event.id not in {e.id for e in dispatcher.list_events(event.operation_id)}:
                unjournaled.append(event)
        with seen:
            count[0] += 1
            seen.notify_all()

    dispatcher.subscribe(check, include_requests=True)
    recorder = EventRecorder(dispatcher)
    dispatcher.start()
    for _ in range(20):
        added = dispatcher.add_operation(op())
        recorder.wait_for(E.OPERATION_STARTED, operation_id=added.id)
        dispatcher.complete_operation(added.id)
    assert dispatcher.drain_events(5.0)
    assert count[0] == len(recorder.events)
    assert unjournaled == []


# ------------------------------------------------------------------------------ retention


def test_memory_is_bounded_and_reads_reach_into_the_journal(path, open_dispatcher) -> None:
    bounds = {"operation_retention": 5, "event_retention": 20}
    dispatcher = open_dispatcher(path, **bounds)
    added = dispatcher.add_operations([op(payload={"n": n}) for n in range(50)])
    for _ in added:
        run_one(dispatcher)

    def check(dispatcher: OperationDispatcher) -> None:
        assert len(dispatcher._queue.completed_operations) <= 5
        assert isinstance(dispatcher._store, JournalEventStore)  # with a journal no event is kept in memory
        oldest = dispatcher.get_operation(added[0].id)
        assert oldest is not None and oldest.outcome is ExecutionOutcome.SUCCESS
        assert oldest.payload == {"n": 0}
        assert types(dispatcher.list_events(added[0].id)) == [
            E.OPERATION_ADDED, E.OPERATION_START_REQUESTED, E.OPERATION_STARTED,
            E.OPERATION_COMPLETED,
        ]
        history = dispatcher.get_history(resolve_operations=True)
        assert len(history.events) == dispatcher.journal.counts()["events"] >= 200
        assert {o.id for o in history.operations} >= {o.id for o in added}
        assert {o.id: o.payload for o in history.operations}[added[0].id] == {"n": 0}
        assert len(dispatcher.get_history(limit=7).events) == 7

    check(dispatcher)
    window = dispatcher.get_history(from_time=dispatcher.list_events(added[10].id)[0].created_at)
    assert window.events[0].operation_id == added[10].id and len(window.events) > 150
    # an id known only to the journal is still taken
    with pytest.raises(DuplicateOperation):
        dispatcher.add_operation(op(id=added[0].id))
    # an operation may still depend on a provider that finished beyond memory retention
    dependent = dispatcher.add_operation(
        op(dependencies=[{"depends_on_operation_id": added[0].id,
                          "dependency_type": "FINISH_TO_START"}])
    )
    assert run_one(dispatcher).id == dependent.id
    dispatcher.close()

    reopened = open_dispatcher(path, **bounds)  # the reload is bounded too
    check(reopened)


def test_pruning_by_count(path, open_dispatcher) -> None:
    journal = Journal(path, prune_max_count=10)
    # memory keeps 5: what the journal drops is then gone (memory keeps what it retains)
    dispatcher = open_dispatcher(journal, operation_retention=5)
    finished = [run_one(dispatcher) for _ in dispatcher.add_operations([op() for _ in range(30)])]
    queued = dispatcher.add_operations([op() for _ in range(3)])
    assert journal.prune() == 20
    kept = {str(o.id) for o in finished[-10:]} | {str(o.id) for o in queued}
    assert journal_ids(journal) == kept
    assert dispatcher.get_operation(finished[0].id) is None
    assert dispatcher.list_events(finished[0].id) == []
    assert len(dispatcher.list_events(finished[-1].id)) == 4
    dispatcher.close()
    assert journal.is_open, "a Journal handed in belongs to the caller"
    journal.close()

    with Journal(path, prune_max_count=4) as smaller:  # prunes when opened
        assert journal_ids(smaller) == {str(o.id) for o in finished[-4:]} | {
            str(o.id) for o in queued
        }

    every_commit = Journal(path, prune_max_count=2, prune_every=1)
    dispatcher = open_dispatcher(every_commit)
    for queued_op in queued:
        assert run_one(dispatcher).id == queued_op.id
        assert every_commit.counts()["operations"] <= 2 + len(dispatcher.get_schedule())
    dispatcher.close()
    every_commit.close()


def test_pruning_by_age(path, open_dispatcher) -> None:
    dispatcher = open_dispatcher(path)
    finished = [run_one(dispatcher) for _ in dispatcher.add_operations([op() for _ in range(4)])]
    queued = dispatcher.add_operation(op())
    dispatcher.pause_dispatcher_runtime()  # an event of no operation
    dispatcher.close()

    # Make two finished operations, every event of no operation and the queued one's events
    # two hours old, on disk.
    old = [str(o.id) for o in finished[:2]]
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "UPDATE operations SET finished_ts = finished_ts - 7200 WHERE id = ?",
            [(i,) for i in old],
        )
        conn.execute(
            "UPDATE events SET created_ts = created_ts - 7200 "
            "WHERE operation_id IS NULL OR operation_id = ?",
            (str(queued.id),),
        )
        op_less = conn.execute("SELECT COUNT(*) FROM events WHERE operation_id IS NULL").fetchone()
    conn.close()
    assert op_less[0] >= 1

    with Journal(path, prune_max_age_seconds=3600) as journal:  # prunes when opened
        assert journal_ids(journal) == {str(o.id) for o in finished[2:]} | {str(queued.id)}
        assert journal.events_for(finished[0].id) == []
        assert len(journal.events_for(finished[2].id)) == 4
        assert types(journal.events_for(queued.id)) == [E.OPERATION_ADDED]
        assert all(e.operation_id is not None for e in journal.select_events())


@pytest.mark.parametrize(
    "options", [{"prune_max_age_seconds": 0}, {"prune_max_age_seconds": -1.0},
                {"prune_max_count": -1}]
)
def test_pruning_limits_are_checked(path, options) -> None:
    with pytest.raises(JournalError, match="prune_max"):
        Journal(path, **options)


# ------------------------------------------------------------------------------ bad files


def test_a_newer_schema_is_refused(path) -> None:
    assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))
    Journal(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(JournalError) as caught:
        OperationDispatcher(R, journal=path)
    assert str(path) in str(caught.value) and "newer" in str(caught.value)
    assert caught.value.path == str(path)
    with sqlite3.connect(path) as conn:  # left as it was: no downgrade, no migration
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 99
    conn.close()


def test_an_empty_file_is_migrated_to_the_current_schema(path, open_dispatcher) -> None:
    path.write_bytes(b"")
    dispatcher = open_dispatcher(path)
    dispatcher.add_operation(op())
    dispatcher.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_a_garbage_file_is_refused(path) -> None:
    path.write_bytes(b"this is not a database\x00\xff" * 400)
    with pytest.raises(JournalError) as caught:
        OperationDispatcher(R, journal=path)
    assert str(path) in str(caught.value)
    assert "damaged" in str(caught.value)


def test_a_damaged_journal_is_refused(path) -> None:
    dispatcher = OperationDispatcher(R, journal=path)
    dispatcher.add_operations([op(payload={"text": "x" * 300}) for _ in range(200)])
    dispatcher.close()
    data = bytearray(path.read_bytes())
    assert len(data) > 8 * 4096
    data[3 * 4096 : 7 * 4096] = bytes((i * 37 + 11) % 256 for i in range(4 * 4096))
    path.write_bytes(bytes(data))
    with pytest.raises(JournalError) as caught:
        OperationDispatcher(R, journal=path)
    assert str(path) in str(caught.value)
    assert "damaged" in str(caught.value)


def test_a_damaged_entry_is_refused_naming_the_file(path) -> None:
    dispatcher = OperationDispatcher(R, journal=path)
    added = dispatcher.add_operation(op())
    dispatcher.close()
    with sqlite3.connect(path) as conn:  # a valid SQLite file whose content is not
        conn.execute("UPDATE operations SET data = '{\"id\": 1}' WHERE id = ?", (str(added.id),))
    conn.close()
    with pytest.raises(JournalError) as caught:
        OperationDispatcher(R, journal=path)
    assert str(path) in str(caught.value) and "damaged" in str(caught.value)


def test_a_failed_start_leaves_the_journal_unlocked(path) -> None:
    dispatcher = OperationDispatcher(R, journal=path)
    dispatcher.add_operation(op())
    dispatcher.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE operations SET data = 'not json'")
    conn.close()
    for _ in range(2):  # the second attempt must name the same cause, not a lock
        with pytest.raises(JournalError) as caught:
            OperationDispatcher(R, journal=path)
        assert "locked" not in str(caught.value) and "damaged" in str(caught.value)
    Journal(path).close()  # nobody holds the file

    path.unlink()
    with pytest.raises(ValueError):  # refused after the journal was opened
        OperationDispatcher(R, journal=path, event_retention=0)
    Journal(path).close()


# Tests run as root here, and root writes to a 0o444 file (CAP_DAC_OVERRIDE). So the open is tried
# in a child process that first drops CAP_DAC_OVERRIDE (dropping a capability needs no privilege;
# without root it drops nothing and the file mode alone decides).
_WITHOUT_DAC_OVERRIDE = r"""
import ctypes, json, sys

class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

class Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]

libc = ctypes.CDLL(None, use_errno=True)
header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
assert libc.capget(ctypes.byref(header), data) == 0, ctypes.get_errno()
mask = ~((1 << 1) | (1 << 2)) & 0xFFFFFFFF  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
data[0].effective &= mask
data[0].permitted &= mask
data[0].inheritable &= mask
assert libc.capset(ctypes.byref(header), data) == 0, ctypes.get_errno()
try:
    open(sys.argv[1], "ab").close()
    writable = True
except OSError:
    writable = False

from operation_dispatcher import JournalError, OperationDispatcher
try:
    OperationDispatcher("robot-1", journal=sys.argv[1]).close()
    print(json.dumps({"writable": writable, "error": None}))
except JournalError as exc:
    print(json.dumps({"writable": writable, "error": str(exc)}))
"""


def open_without_dac_override(journal: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_DAC_OVERRIDE, str(journal)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_read_only_journal_file_is_refused(path) -> None:
    dispatcher = OperationDispatcher(R, journal=path)
    dispatcher.add_operation(op())
    dispatcher.close()
    path.chmod(0o444)
    try:
        result = open_without_dac_override(path)
    finally:
        path.chmod(0o644)
    assert result["writable"] is False, "the child could still write: the test proves nothing"
    assert result["error"] is not None, "a read-only journal was opened as if writable"
    assert str(path) in result["error"] and "not writable" in result["error"]


def test_a_journal_in_a_read_only_folder_is_refused(tmp_path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = open_without_dac_override(folder / "state.db")
    finally:
        folder.chmod(0o755)
    assert result["error"] is not None and str(folder / "state.db") in result["error"]
    assert list(folder.iterdir()) == []


def test_a_journal_in_a_missing_folder_is_refused(tmp_path) -> None:
    missing = tmp_path / "nowhere" / "state.db"
    with pytest.raises(JournalError) as caught:
        OperationDispatcher(R, journal=missing)
    assert str(missing) in str(caught.value) and "folder" in str(caught.value)


_OPEN_IN_ANOTHER_PROCESS = """
import sys
from operation_dispatcher import JournalError, OperationDispatcher
try:
    OperationDispatcher("robot-1", journal=sys.argv[1]).close()
    print("opened")
except JournalError as exc:
    print(exc)
"""


def test_two_dispatchers_cannot_share_a_journal(path, open_dispatcher) -> None:
    first = open_dispatcher(path)
    added = first.add_operation(op())
    with pytest.raises(JournalError, match="locked") as caught:
        OperationDispatcher(R, journal=path)
    assert str(path) in str(caught.value)
    with pytest.raises(JournalError, match="locked"):
        Journal(path)
    # another process (the usual case: a second service instance) is refused as well
    done = subprocess.run(
        [sys.executable, "-c", _OPEN_IN_ANOTHER_PROCESS, str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert str(path) in done.stdout and "locked" in done.stdout
    first.add_operation(op())  # the first one is undisturbed
    first.close()

    second = open_dispatcher(path)  # the lock is released by close()
    assert second.get_schedule()[0].id == added.id


# ------------------------------------------------------------------------------ failed writes


def limit_growth(dispatcher: OperationDispatcher, spare_pages: int) -> None:
    """Let the journal grow by at most ``spare_pages`` pages: the next big write fails."""
    conn = dispatcher.journal._conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + spare_pages}")


def unlimit_growth(dispatcher: OperationDispatcher) -> None:
    dispatcher.journal._conn.execute("PRAGMA max_page_count = 1073741823")


def test_a_failed_add_is_all_or_none_and_the_dispatcher_goes_on(path, open_dispatcher) -> None:
    dispatcher = open_dispatcher(path)
    recorder = EventRecorder(dispatcher)
    before = dispatcher.add_operations([op(payload={"text": "x" * 500}) for _ in range(40)])
    schedule = [o.id for o in dispatcher.get_schedule()]
    counts = dispatcher.journal.counts()
    # room for a few of the new rows but not for all of them: one transaction keeps none
    limit_growth(dispatcher, spare_pages=3)
    batch = [op(payload={"text": "y" * 1000}) for _ in range(300)]
    with pytest.raises(JournalError) as caught:
        dispatcher.add_operations(batch)
    assert str(path) in str(caught.value) and "full" in str(caught.value)

    assert [o.id for o in dispatcher.get_schedule()] == schedule
    assert dispatcher.journal.counts() == counts
    assert all(dispatcher.get_operation(o.id) is None for o in batch)
    assert all(dispatcher.list_events(o.id) == [] for o in batch)
    assert dispatcher.drain_events(5.0)
    assert not {o.id for o in batch} & {e.operation_id for e in recorder.events}

    unlimit_growth(dispatcher)
    again = dispatcher.add_operations(batch)  # the same operations, now accepted
    assert len(dispatcher.get_schedule()) == len(before) + len(batch)
    recorder.wait_for(E.OPERATION_ADDED, count=len(before) + len(batch))
    assert run_one(dispatcher).id == before[0].id
    dispatcher.close()
    reopened = open_dispatcher(path)
    assert reopened.get_schedule()[-1].id == again[-1].id


def test_a_failed_completion_leaves_the_operation_running(path, open_dispatcher) -> None:
    dispatcher = open_dispatcher(path)
    recorder = EventRecorder(dispatcher)
    running, waiting = dispatcher.add_operations([op(), op()])
    assert dispatcher.step_dispatch().id == running.id
    limit_growth(dispatcher, spare_pages=0)
    with pytest.raises(JournalError):
        dispatcher.complete_operation(running.id, meta_data={"report": "z" * 200_000})

    current = dispatcher.current_operation
    assert current is not None and current.id == running.id
    assert current.state is ExecutionState.RUNNING
    assert E.OPERATION_COMPLETED not in types(dispatcher.list_events(running.id))
    assert [o.id for o in dispatcher.get_schedule()] == [waiting.id]
    assert dispatcher.drain_events(5.0)
    assert recorder.matching(E.OPERATION_COMPLETED) == []

    unlimit_growth(dispatcher)
    done = dispatcher.complete_operation(running.id, meta_data={"report": "short"})
    assert done.outcome is ExecutionOutcome.SUCCESS
    assert dispatcher.step_dispatch().id == waiting.id


def test_after_a_failed_start_the_dispatcher_asks_again(path, open_dispatcher) -> None:
    asked: list[Any] = []
    cond = threading.Condition()

    def pending(event):
        with cond:
            asked.append(event)
            cond.notify_all()
        return PENDING

    # a long request timeout: nothing but the failed write itself may prompt the next attempt
    dispatcher = open_dispatcher(
        path, on_request_callback=pending, request_event_timeout_seconds=300.0
    )
    recorder = EventRecorder(dispatcher)
    dispatcher.start()
    added = dispatcher.add_operation(op(payload={"text": "x" * 200_000}))
    with cond:
        assert cond.wait_for(lambda: len(asked) == 1, 5.0)
    limit_growth(dispatcher, spare_pages=0)  # the start rewrites the big operation: no room
    with pytest.raises(JournalError):
        dispatcher.decide(asked[0].id, True)
    assert dispatcher.get_operation(added.id).state is ExecutionState.QUEUED
    assert dispatcher.current_operation is None

    unlimit_growth(dispatcher)
    with cond:
        assert cond.wait_for(lambda: len(asked) == 2, 5.0), "the start was not asked for again"
    dispatcher.decide(asked[1].id, True)
    recorder.wait_for(E.OPERATION_STARTED, operation_id=added.id)
    assert types(dispatcher.list_events(added.id)).count(E.OPERATION_STARTED) == 1


def test_add_operations_is_one_transaction(path, open_dispatcher) -> None:
    dispatcher = open_dispatcher(path)
    statements: list[str] = []
    conn = dispatcher.journal._conn
    conn.set_trace_callback(statements.append)
    try:
        added = dispatcher.add_operations([op() for _ in range(500)])
    finally:
        conn.set_trace_callback(None)
    assert len(added) == 500
    assert [s for s in statements if s.split()[0].upper() in ("BEGIN", "COMMIT", "ROLLBACK")] == [
        "BEGIN IMMEDIATE", "COMMIT",
    ]
    assert dispatcher.journal.counts() == {"operations": 500, "events": 500}


# ------------------------------------------------------------------------------ no journal


def test_memory_journal_means_no_journal(tmp_path, monkeypatch, open_dispatcher) -> None:
    monkeypatch.chdir(tmp_path)
    dispatcher = open_dispatcher(":memory:")
    assert dispatcher.journal is None
    added = dispatcher.add_operation(op())
    run_one(dispatcher)
    assert types(dispatcher.list_events(added.id))[-1] is E.OPERATION_COMPLETED
    dispatcher.close()
    assert list(tmp_path.iterdir()) == []
    assert open_dispatcher(None).journal is None


def test_a_journal_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(ValidationError):
        OperationDispatcher(R, journal=42)


# ------------------------------------------------------------------------------ any error in a write

class _Unwritable:
    """A payload value the models let through (shown as text) whose text raises ValueError, as
    an int over 4,300 digits did in json before validation refused such ints (D.13)."""

    def __str__(self) -> str:
        raise ValueError("this value cannot be written")


HUGE = _Unwritable()  # a ValueError inside the journal write


def test_any_error_in_a_write_rolls_back_file_and_memory(path, open_dispatcher) -> None:
    # issue 10, C.8: a ValueError from json left the transaction open and the operation RUNNING
    # in memory (never written, never announced); the next add failed with "cannot start a
    # transaction within a transaction".
    dispatcher = open_dispatcher(path)
    recorder = EventRecorder(dispatcher)
    dispatcher.start()
    counts = dispatcher.journal.counts()
    bad = op(payload={"n": HUGE})
    with pytest.raises(JournalError) as caught:
        dispatcher.add_operation(bad)
    assert "ValueError" in str(caught.value) and "change not made" in str(caught.value)
    assert isinstance(caught.value.__cause__, ValueError)
    assert dispatcher.journal._conn.in_transaction is False
    assert dispatcher.journal.counts() == counts
    assert dispatcher.get_operation(bad.id) is None  # not queued, not RUNNING: not there
    assert dispatcher.current_operation is None and dispatcher.get_schedule() == []

    good = dispatcher.add_operation(op())  # the next, unrelated add works and starts
    recorder.wait_for(E.OPERATION_STARTED, operation_id=good.id)
    assert dispatcher.current_operation.id == good.id
    assert not recorder.matching(E.OPERATION_ADDED, operation_id=bad.id)
    dispatcher.close()
    reopened = open_dispatcher(path)
    assert reopened.get_operation(bad.id) is None
    assert reopened.get_operation(good.id) is not None


def test_a_completion_that_cannot_be_written_leaves_the_operation_running(
    path, open_dispatcher
) -> None:
    dispatcher = open_dispatcher(path)
    running = dispatcher.add_operation(op())
    assert dispatcher.step_dispatch().id == running.id
    with pytest.raises(JournalError, match="ValueError"):
        dispatcher.complete_operation(running.id, meta_data={"report": HUGE})
    assert dispatcher.journal._conn.in_transaction is False
    assert dispatcher.current_operation.state is ExecutionState.RUNNING
    assert E.OPERATION_COMPLETED not in types(dispatcher.list_events(running.id))
    done = dispatcher.complete_operation(running.id, meta_data={"report": "ok"})
    assert done.outcome is ExecutionOutcome.SUCCESS


def test_a_journal_that_cannot_be_read_back_stops_starting(path, open_dispatcher) -> None:
    # A failed write is undone by reading the journal back; when even that fails (here: the
    # journal was closed under the dispatcher), memory may disagree with the file, so the
    # dispatcher starts nothing more and every change says why.
    journal = Journal(path)
    dispatcher = open_dispatcher(journal)
    dispatcher.add_operations([op(), op()])
    journal.close()
    with pytest.raises(JournalError, match="is closed"):
        dispatcher.step_dispatch()
    with pytest.raises(JournalError, match="could not be undone"):
        dispatcher.pause_dispatcher_runtime()
    assert dispatcher.step_dispatch() is None


# ------------------------------------------------------------------------------ foreign files


def _sqlite_file(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def _other_app(path: Path) -> None:
    _sqlite_file(path, "CREATE TABLE users (name TEXT)", "INSERT INTO users VALUES ('ann')")


def _other_user_version(path: Path) -> None:
    _sqlite_file(path, "PRAGMA user_version = 7")


def _our_version_other_tables(path: Path) -> None:
    _sqlite_file(path, "CREATE TABLE operations (x)", "PRAGMA user_version = 1")


def _journal_plus_a_table(path: Path) -> None:
    Journal(path).close()
    _sqlite_file(path, "CREATE TABLE extra (x)")


def _other_application_id(path: Path) -> None:
    _sqlite_file(path, "PRAGMA application_id = 1234")


def _not_sqlite(path: Path) -> None:
    path.write_text("name,age\nann,42\n" * 50, encoding="utf-8")


@pytest.mark.parametrize(
    "make, detail",
    [
        (_other_app, "tables found: users"),
        (_other_user_version, "user_version is 7"),
        (_our_version_other_tables, "tables found: operations"),
        (_journal_plus_a_table, "extra"),
        (_other_application_id, "application_id is 0x4d2"),
        (_not_sqlite, "file is not a database"),
    ],
)
def test_a_file_that_is_not_a_journal_is_refused_untouched(tmp_path, make, detail) -> None:
    # issue 10, C.9: another application's SQLite file got four tables, a user_version and WAL
    path = tmp_path / "other.db"
    make(path)
    before = path.read_bytes()
    stamp = path.stat().st_mtime_ns
    with pytest.raises(JournalError) as caught:
        OperationDispatcher(R, journal=path)
    message = str(caught.value)
    assert "not an operation-dispatcher journal" in message and detail in message, message
    assert str(path) in message and "untouched" in message
    assert path.read_bytes() == before and path.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]  # no -wal, -shm, -journal


def test_an_empty_database_becomes_a_journal(path, open_dispatcher) -> None:
    _sqlite_file(path, "PRAGMA page_size = 8192", "VACUUM")  # a database without tables
    assert path.stat().st_size > 0
    dispatcher = open_dispatcher(path)
    added = dispatcher.add_operation(op())
    dispatcher.close()
    assert open_dispatcher(path).get_operation(added.id) is not None


def test_a_journal_of_the_previous_release_is_still_opened(path, open_dispatcher) -> None:
    dispatcher = open_dispatcher(path)
    added = dispatcher.add_operation(op())
    dispatcher.close()
    # the previous release set no application_id and recorded no resource id
    _sqlite_file(path, "PRAGMA application_id = 0", "DELETE FROM dispatcher_state")
    reopened = open_dispatcher(path)
    assert reopened.get_schedule()[0].id == added.id
    reopened.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute(
            "SELECT value FROM dispatcher_state WHERE key = 'resource_id'"
        ).fetchone() == (R,)
    conn.close()


# ------------------------------------------------------------------------------ one resource


def test_a_journal_refuses_another_resource(path) -> None:
    # issue 10, C.10: a journal written for lathe-1 opened under press-9, which then owned
    # lathe-1's queued jobs
    lathe = OperationDispatcher("lathe-1", journal=path)
    queued = lathe.add_operation(Operation(resource_id="lathe-1"))
    lathe.close()
    with Journal(path) as journal:
        assert journal.resource_id is None  # known once a dispatcher claimed it
    with pytest.raises(JournalError) as caught:
        OperationDispatcher("press-9", journal=path)
    message = str(caught.value)
    assert "'lathe-1'" in message and "'press-9'" in message and str(path) in message
    assert "\n" not in message
    again = OperationDispatcher("lathe-1", journal=path)  # refused, and the file released
    assert again.get_schedule()[0].id == queued.id
    assert again.journal.resource_id == "lathe-1"
    again.close()


def test_an_old_journal_without_a_resource_id_takes_its_operations_resource(path) -> None:
    lathe = OperationDispatcher("lathe-1", journal=path)
    lathe.add_operation(Operation(resource_id="lathe-1"))
    lathe.close()
    _sqlite_file(path, "DELETE FROM dispatcher_state WHERE key = 'resource_id'")
    with pytest.raises(JournalError, match="'lathe-1', not 'press-9'"):
        OperationDispatcher("press-9", journal=path)


def test_an_old_empty_journal_without_a_resource_id_adopts_the_first(path) -> None:
    OperationDispatcher("lathe-1", journal=path).close()
    _sqlite_file(path, "DELETE FROM dispatcher_state WHERE key = 'resource_id'")
    OperationDispatcher("press-9", journal=path).close()  # adopted
    with pytest.raises(JournalError, match="'press-9', not 'lathe-1'"):
        OperationDispatcher("lathe-1", journal=path)

"""Every event carries the store's sequence number: the journal's ``events.seq``, gapless, in
commit order, continued across restarts (what the MQTT link publishes as ``seq``)."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

from conftest import RESOURCE, op

from operation_dispatcher import ApprovalPolicy, OperationDispatcher


class SeqRecorder:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.seen: list[tuple[int | None, Any]] = []

    def __call__(self, event: Any, seq: int | None) -> None:
        with self.cond:
            self.seen.append((seq, event.id))
            self.cond.notify_all()


def journal_rows(path: Path) -> list[tuple[int, str]]:
    with closing(sqlite3.connect(path)) as conn:
        return list(conn.execute("SELECT seq, id FROM events ORDER BY seq"))


def test_subscribers_with_seq_get_the_journal_seq_of_each_event(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    recorder = SeqRecorder()
    dispatcher = OperationDispatcher(RESOURCE, journal=path, start_paused=True)
    dispatcher.subscribe(recorder, include_requests=True, with_seq=True)
    dispatcher.start()
    ops = dispatcher.add_operations([op(payload={"n": i}) for i in range(5)])
    dispatcher.cancel_operation(ops[0].id)
    dispatcher.resume_dispatcher_runtime()
    assert dispatcher.drain_events(5)
    dispatcher.close(timeout=5)
    rows = journal_rows(path)
    assert [(seq, str(eid)) for seq, eid in recorder.seen] == rows
    assert [seq for seq, _ in rows] == list(range(1, len(rows) + 1))


def test_the_seq_goes_on_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    first = OperationDispatcher(RESOURCE, journal=path, start_paused=True)
    with first:
        first.add_operation(op())
        assert first.drain_events(5)
    assert first.journal is not None
    last = first.journal.last_event_seq
    first.close()
    assert last == len(journal_rows(path)) >= 2
    recorder = SeqRecorder()
    second = OperationDispatcher(RESOURCE, journal=path, start_paused=True)
    second.subscribe(recorder, with_seq=True)
    with second:
        second.add_operation(op())
        assert second.drain_events(5)
    second.close()
    assert recorder.seen[0][0] == last + 1
    assert [(s, str(e)) for s, e in recorder.seen] == journal_rows(path)[-len(recorder.seen):]


def test_without_a_journal_the_seq_counts_from_one_in_memory() -> None:
    recorder = SeqRecorder()
    plain: list[Any] = []
    with OperationDispatcher(RESOURCE, journal=None, start_paused=True) as dispatcher:
        dispatcher.subscribe(recorder, with_seq=True)
        dispatcher.subscribe(plain.append)  # an ordinary subscriber still gets the event alone
        dispatcher.add_operations([op(), op()])
        assert dispatcher.drain_events(5)
    seqs = [seq for seq, _ in recorder.seen]
    assert seqs == sorted(seqs) and seqs[0] >= 1 and len(set(seqs)) == len(seqs)
    assert [e.id for e in plain] == [eid for _, eid in recorder.seen]


def test_request_events_are_numbered_too_so_a_subscriber_without_them_sees_gaps(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.db"
    everything, no_requests = SeqRecorder(), SeqRecorder()
    dispatcher = OperationDispatcher(RESOURCE, journal=path)
    dispatcher.subscribe(everything, include_requests=True, with_seq=True)
    dispatcher.subscribe(no_requests, with_seq=True)
    with dispatcher:
        dispatcher.add_operation(op())  # start requested (approved: no callback), started
        assert dispatcher.drain_events(5)
    all_seqs = [seq for seq, _ in everything.seen]
    assert all_seqs == list(range(1, len(all_seqs) + 1))
    assert set(s for s, _ in no_requests.seen) < set(all_seqs)


def test_watchers_hear_of_a_request_that_waits_for_decide_at_once() -> None:
    heard: list[Any] = []
    cond = threading.Condition()

    def watcher(request: Any) -> None:
        with cond:
            heard.append(request)
            cond.notify_all()

    dispatcher = OperationDispatcher(RESOURCE, approval_policy=ApprovalPolicy(start="mqtt"))
    unwatch = dispatcher.watch_requests(watcher)
    with dispatcher:
        added = dispatcher.add_operation(op())
        with cond:
            assert cond.wait_for(lambda: heard, 5)
        request = heard[0]
        assert request.operation_id == added.id and request.waiting_for == "mqtt"
        assert [r.request_id for r in dispatcher.pending_requests()] == [request.request_id]
        unwatch()
        dispatcher.decide(request.request_id, True)

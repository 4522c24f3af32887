"""The journal on an SD card for weeks: a bounded WAL, a size limit, slow writes tolerated.

Real SQLite files in tmp_path. A slow card is stood in for by a journal whose commit waits
before it commits (a subclass: SQLite itself is untouched), so the write is really slow.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import EventRecorder, op

from operation_dispatcher import EventType, OperationDispatcher
from operation_dispatcher.config import ConfigError, JournalSettings, parse_config
from operation_dispatcher.errors import JournalError
from operation_dispatcher.journal import Journal
from operation_dispatcher.journal_limits import MIN_MAX_BYTES, PRUNE_TO_SHARE, WAL_SIZE_LIMIT

PAGE = 4096
#: what one unit of work of these tests may add beyond max_bytes before the next prune
SLACK = 16 * PAGE


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


def wal_size(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def run_one(dispatcher: OperationDispatcher) -> Any:
    started = dispatcher.step_dispatch()
    assert started is not None
    return dispatcher.complete_operation(started.id)


def ids(journal: Journal) -> set[str]:
    conn = journal._conn
    assert conn is not None
    return {row[0] for row in conn.execute("SELECT id FROM operations")}


# ------------------------------------------------------------------------------ the WAL


def test_the_wal_is_cut_back_after_a_big_transaction(path: Path, make_dispatcher) -> None:
    """A 10,000-operation add makes a WAL of megabytes; once checkpointed it is cut back to
    WAL_SIZE_LIMIT, not kept at its largest size for the rest of the journal's life."""
    journal = Journal(path)
    dispatcher = make_dispatcher(journal=journal)
    dispatcher.add_operations([op(payload={"blob": "x" * 600}) for _ in range(10_000)])
    assert wal_size(path) > 2 * WAL_SIZE_LIMIT  # the one transaction is in the WAL
    for _ in range(5):  # the next writes reuse the checkpointed WAL, and cut it back
        dispatcher.add_operation(op())
    assert wal_size(path) <= WAL_SIZE_LIMIT
    dispatcher.close()
    journal.close()


def test_the_wal_stays_bounded_under_many_small_writes(path: Path, make_dispatcher) -> None:
    journal = Journal(path)
    dispatcher = make_dispatcher(journal=journal)
    peak = 0
    for _ in range(300):
        dispatcher.add_operations([op(payload={"blob": "y" * 2000}) for _ in range(5)])
        peak = max(peak, wal_size(path))
    # SQLite checkpoints at 1000 pages; the WAL never holds more than that and one unit
    assert peak <= WAL_SIZE_LIMIT + 1000 * PAGE
    assert journal.size()["wal_bytes"] == wal_size(path)
    dispatcher.close()
    journal.close()


# ------------------------------------------------------------------------------ max_bytes


def test_max_bytes_keeps_the_file_within_its_size(path: Path, make_dispatcher) -> None:
    limit = MIN_MAX_BYTES
    journal = Journal(path, max_bytes=limit)
    dispatcher = make_dispatcher(journal=journal, operation_retention=5)
    queued = dispatcher.add_operation(op(payload={"wait": True}, priority=-1))  # last in line
    finished = []
    for _ in range(400):
        dispatcher.add_operation(op(payload={"blob": "z" * 500}, priority=5))
        finished.append(run_one(dispatcher))
        assert journal.size()["live_bytes"] <= limit + SLACK
    size = journal.size()
    assert size["file_bytes"] <= limit + SLACK  # a new journal gives freed pages back
    kept = ids(journal)
    assert str(queued.id) in kept  # never an unfinished operation
    assert str(finished[-1].id) in kept and str(finished[0].id) not in kept  # oldest go first
    # the newest finished are kept: whatever was dropped is older than whatever is left
    finished_ids = [str(o.id) for o in finished]
    positions = sorted(finished_ids.index(i) for i in kept if i in finished_ids)
    assert positions == list(range(positions[0], len(finished)))
    assert 0 < len(positions) < 400
    assert dispatcher.list_events(finished[-1].id)  # its events are kept with it
    assert dispatcher.list_events(finished[0].id) == []  # and dropped with it
    dispatcher.close()
    journal.close()

    # reopened with the limit: still within it, nothing unfinished lost
    with Journal(path, max_bytes=limit) as again:
        assert str(queued.id) in ids(again)
        assert again.size()["file_bytes"] <= limit + SLACK


def test_a_journal_over_its_size_is_pruned_when_opened(path: Path, make_dispatcher) -> None:
    dispatcher = make_dispatcher(journal=str(path))
    for _ in dispatcher.add_operations([op(payload={"blob": "w" * 2000}) for _ in range(300)]):
        run_one(dispatcher)
    dispatcher.close()
    assert path.stat().st_size > 2 * MIN_MAX_BYTES
    with Journal(path, max_bytes=MIN_MAX_BYTES) as journal:
        assert journal.size()["live_bytes"] <= MIN_MAX_BYTES * PRUNE_TO_SHARE
        assert journal.size()["file_bytes"] <= MIN_MAX_BYTES


def test_unfinished_operations_are_never_dropped_to_fit(
    path: Path, make_dispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal(path, max_bytes=MIN_MAX_BYTES)
    dispatcher = make_dispatcher(journal=journal)
    added = dispatcher.add_operations([op(payload={"blob": "q" * 1000}) for _ in range(500)])
    dispatcher.add_operation(op())  # another commit over the limit: warned once, not twice
    assert journal.size()["live_bytes"] > MIN_MAX_BYTES
    assert {str(o.id) for o in added} <= ids(journal)
    warnings = [r for r in caplog.records if "exceed max_bytes" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    dispatcher.close()
    journal.close()


@pytest.mark.parametrize(
    "options",
    [{"max_bytes": True}, {"max_bytes": 1000}, {"max_bytes": "1MB"}, {"max_bytes": 1.5e6},
     {"max_bytes": -1}, {"slow_write_seconds": 0}, {"slow_write_seconds": float("nan")},
     {"slow_write_seconds": float("inf")}, {"slow_write_seconds": "1"},
     {"slow_write_seconds": False}],
)
def test_size_and_slowness_limits_are_checked(path: Path, options: dict[str, Any]) -> None:
    with pytest.raises(JournalError, match=next(iter(options))):
        Journal(path, **options)
    assert not path.exists()  # refused before the file was made


# ------------------------------------------------------------------------------ config


def test_the_journal_limits_come_from_the_config() -> None:
    assert JournalSettings().journal_kwargs() == {
        "max_bytes": 256 * 1024 * 1024, "slow_write_seconds": 1.0,
    }
    config = parse_config({"journal": {"max_bytes": 0, "slow_write_seconds": 2.5}})
    assert config.journal.journal_kwargs() == {"max_bytes": None, "slow_write_seconds": 2.5}
    config = parse_config({"journal": {"max_bytes": 1048576}})
    assert config.journal.journal_kwargs()["max_bytes"] == 1048576


@pytest.mark.parametrize(
    ("key", "value"),
    [("max_bytes", True), ("max_bytes", "1GB"), ("max_bytes", 100), ("max_bytes", -1),
     ("max_bytes", 2.0e9), ("max_bytes", 10**30), ("slow_write_seconds", 0),
     ("slow_write_seconds", float("nan")), ("slow_write_seconds", float("inf")),
     ("slow_write_seconds", "1"), ("slow_write_seconds", True)],
)
def test_bad_journal_limits_are_refused_by_key(key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({"journal": {key: value}})
    assert [e.split(":")[0] for e in raised.value.errors] == [f"journal.{key}"]


# ------------------------------------------------------------------------------ slow writes


class SlowJournal(Journal):
    """A journal on a slow card: every commit waits ``delay`` seconds before it commits."""

    def __init__(self, *args: Any, delay: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delay = delay
        self.commits = 0

    def _commit(self, conn: sqlite3.Connection) -> None:
        self.commits += 1
        time.sleep(self.delay)  # the card, not a synchronisation
        super()._commit(conn)


@pytest.mark.slow
def test_slow_writes_are_logged_and_nothing_times_out_wrongly(
    path: Path, make_dispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    """Every write takes 0.5 s, longer than the approval's 0.3 s: the approval still counts,
    the operation starts and finishes, and one warning (not one per write) says why it is slow."""
    journal = SlowJournal(path, delay=0.5, slow_write_seconds=0.2)
    approved = threading.Event()

    def approve(event: Any) -> bool:
        approved.set()
        return True

    dispatcher = make_dispatcher(
        journal=journal, on_request_callback=approve, request_event_timeout_seconds=0.3,
    )
    recorder = EventRecorder(dispatcher)
    dispatcher.start()
    operation = dispatcher.add_operation(op())
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=operation.id, timeout=15.0)
    dispatcher.complete_operation(operation.id)
    recorder.wait_for(EventType.OPERATION_COMPLETED, operation_id=operation.id, timeout=15.0)
    assert approved.is_set()
    assert EventType.OPERATION_START_DENIED not in recorder.types(operation.id)
    assert journal.commits >= 4
    slow = [r for r in caplog.records if "a write took" in r.getMessage()]
    assert len(slow) == 1 and slow[0].levelno == logging.WARNING
    assert "the disk is slow" in slow[0].getMessage()
    assert journal.write_times.snapshot().counts[-1] == 0  # none over 1 s: timed, as written
    dispatcher.stop(timeout=10.0)


def test_a_write_under_the_threshold_is_not_reported(
    path: Path, make_dispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal(path, slow_write_seconds=30.0)
    dispatcher = make_dispatcher(journal=journal)
    dispatcher.add_operations([op() for _ in range(10)])
    assert not [r for r in caplog.records if "a write took" in r.getMessage()]
    dispatcher.close()
    journal.close()


@pytest.mark.slow
def test_serve_opens_the_journal_with_the_configured_limit(serve, tmp_path: Path) -> None:
    """[journal] max_bytes reaches the journal serve opens: 1000 queued operations of 1 KB
    exceed 256 KiB, none is dropped, and the warning names the configured limit."""
    (tmp_path / "cell.toml").write_text(
        '[journal]\npath = "journal.db"\nmax_bytes = 262144\nslow_write_seconds = 30\n'
        '[dispatcher]\nstart_paused = true\n'
    )
    served = serve("--config", "cell.toml")
    added = served.post("/operations/add", json=[{"payload": {"blob": "b" * 1000}}] * 1000)
    assert added.status_code == 201
    assert len(served.get("/operations").json()) == 1000  # nothing unfinished dropped
    code, _, err = served.stop()
    assert code == 0, err
    assert "exceed max_bytes (262144)" in err

"""Journal: the dispatcher's durable state in one SQLite file (stdlib ``sqlite3``).

A controller next to a PLC loses power; the journal is what is left. Every accepted change (an
add, an update, a state change) and every event is written and committed -- WAL mode,
``synchronous=FULL``, so the commit is on disk -- before the caller hears "done" and before any
subscriber sees the event. One dispatcher unit of work (say, ``add_operations`` of 10,000
operations, or "approval arrived: record the request, start the operation") is one transaction,
so a reader never sees half of it.

The file is opened in SQLite's exclusive locking mode: a second dispatcher on the same file fails
at once with a clear error instead of interleaving writes. The schema is versioned with
``PRAGMA user_version``; :data:`MIGRATIONS` holds the steps from each version to the next.

A file is looked at before anything is written to it: only a new or empty file, or one that is
already an operation-dispatcher journal (``PRAGMA application_id`` = :data:`APPLICATION_ID`, or
exactly the tables its ``user_version`` implies), is used; any other file is refused untouched.
The journal records the resource it was written for, so it never serves another resource.

On an SD card for weeks (:mod:`.journal_limits`): the WAL is cut back to ``WAL_SIZE_LIMIT``
after checkpoints, ``max_bytes`` bounds the file, slow writes are logged, never cut short.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from . import journal_limits as limits
from .errors import JournalError
from .models import DispatchEvent, EventType, ExecutionState, Operation
from .timings import JOURNAL_WRITE_BUCKETS, DurationHistogram

log = logging.getLogger(__name__)

#: The schema this code writes. A file with a higher user_version was written by a newer release.
SCHEMA_VERSION = 1

#: version -> statements that upgrade a journal from version-1 to version (0 is an empty file).
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE operations (
            id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            position INTEGER NOT NULL,
            finished_ts REAL,
            data TEXT NOT NULL
        )""",
        "CREATE INDEX operations_by_state ON operations (state, position)",
        "CREATE INDEX operations_by_finish ON operations (finished_ts)",
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL,
            operation_id TEXT,
            event_type TEXT NOT NULL,
            created_ts REAL NOT NULL,
            data TEXT NOT NULL
        )""",
        "CREATE INDEX events_by_operation ON events (operation_id, seq)",
        "CREATE INDEX events_by_time ON events (created_ts)",
        """CREATE TABLE retry_state (
            kind TEXT NOT NULL,
            operation_id TEXT NOT NULL,
            denials INTEGER NOT NULL,
            cooldown_until REAL NOT NULL,
            PRIMARY KEY (kind, operation_id)
        )""",
        "CREATE TABLE dispatcher_state (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ],
}

#: ``PRAGMA application_id`` of every journal ("ODJ1"): how a journal says whose file it is.
APPLICATION_ID = 0x4F444A31

_NOT_OURS = "not an operation-dispatcher journal"

_ACTIVE_STATES = (ExecutionState.RUNNING.value, ExecutionState.PAUSED.value)


@dataclass(slots=True)
class RetryRow:
    """Denials of one (request kind, operation) pair and when its cooldown ends (wall clock)."""

    kind: str
    operation_id: UUID
    denials: int
    cooldown_until: float


@dataclass(slots=True)
class SavedState:
    """What a journal holds when a dispatcher starts on it."""

    queued: list[Operation] = field(default_factory=list)
    active: list[Operation] = field(default_factory=list)  # RUNNING or PAUSED: at most one
    finished: list[Operation] = field(default_factory=list)  # most recent, oldest first
    retry: list[RetryRow] = field(default_factory=list)
    paused: bool | None = None


def _dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def _tables_of(version: int) -> set[str]:
    """The tables a journal of schema ``version`` holds (those its migrations create)."""
    return {
        match.group(1)
        for target in range(1, version + 1)
        for statement in MIGRATIONS[target]
        if (match := re.match(r"\s*CREATE TABLE (\w+)", statement))
    }


class Journal:
    """The SQLite journal of one dispatcher.

    :param path: the journal file (created if missing; its folder must exist).
    :param prune_max_age_seconds: drop finished operations (and their events) older than this.
    :param prune_max_count: keep at most this many finished operations.
    :param prune_every: prune automatically after this many commits (and when opened).
    :param max_bytes: keep the file within this size (:class:`~.journal_limits.SizeLimit`).
    :param slow_write_seconds: a committed write that took longer is logged as a warning (at
        most one a minute, :class:`~.journal_limits.SlowWrites`); it is never interrupted.

    Not thread-safe by itself: the dispatcher calls it with its lock held.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        prune_max_age_seconds: float | None = None,
        prune_max_count: int | None = None,
        prune_every: int = 1000,
        max_bytes: int | None = None,
        slow_write_seconds: float = 1.0,
    ) -> None:
        self.path = str(path)
        if prune_max_age_seconds is not None and not prune_max_age_seconds > 0:
            raise JournalError(self.path, "prune_max_age_seconds must be > 0")
        if prune_max_count is not None and prune_max_count < 0:
            raise JournalError(self.path, "prune_max_count must be >= 0")
        problem = limits.limit_problem(max_bytes, slow_write_seconds)
        if problem is not None:
            raise JournalError(self.path, problem)
        self.prune_max_age_seconds = prune_max_age_seconds
        self.prune_max_count = prune_max_count
        self.max_bytes = max_bytes
        self._size = None if max_bytes is None else limits.SizeLimit(self.path, max_bytes)
        self._slow = limits.SlowWrites(self.path, slow_write_seconds)
        self._prune_every = prune_every
        self._commits = 0
        self._position = 0
        #: how long each committed write took (read by ``GET /metrics``; fixed memory)
        self.write_times = DurationHistogram(JOURNAL_WRITE_BUCKETS)
        self._conn: sqlite3.Connection | None = None
        #: The resource this journal serves, once :meth:`claim` recorded or checked it.
        self.resource_id: str | None = None
        if not Path(self.path).parent.exists():
            raise JournalError(self.path, "its folder does not exist")
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=0.0
            )
        except sqlite3.Error as exc:
            raise JournalError(self.path, f"cannot open: {exc}") from None
        try:
            self._setup(conn)
        except JournalError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise JournalError(self.path, _explain(exc)) from None
        self._conn = conn
        self.prune()
        self._keep_within_size()

    # ------------------------------------------------------------------ opening
    def _setup(self, conn: sqlite3.Connection) -> None:
        version = self._inspect(conn)
        if version == 0:  # only possible before the first table: a new journal can shrink
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        # Exclusive locking: the first write below takes the lock and keeps it until close(), so
        # a second dispatcher on this file fails here, at once, instead of interleaving writes.
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalError(self.path, f"cannot switch to WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA journal_size_limit={limits.WAL_SIZE_LIMIT}")
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target]:
                    conn.execute(statement)
            # Written even when unchanged: a real write, so that a read-only file (which SQLite
            # opens read-only without a word) fails here, at start, not at the first change.
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise JournalError(self.path, f"file is damaged: {check}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        row = conn.execute("SELECT MAX(position) FROM operations").fetchone()
        self._position = (row[0] or 0) + 1
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        self.last_event_seq = 0 if row is None else int(row[0])  #: AUTOINCREMENT: never reused

    def _inspect(self, conn: sqlite3.Connection) -> int:
        """The file's schema version, read without writing; refuse a file that is not ours.

        Nothing is written before this check passes (no WAL switch, no table, no user_version),
        so another application's database is left byte for byte as it was.
        """
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        entries = conn.execute("SELECT type, name FROM sqlite_master").fetchall()
        tables = {name for kind, name in entries if kind == "table" and not name.startswith("sqlite_")}
        others = sorted(name for kind, name in entries if kind in ("view", "trigger"))
        if app_id not in (0, APPLICATION_ID):
            self._refuse(f"its application_id is {app_id:#x}, a journal's is {APPLICATION_ID:#x}")
        if version > SCHEMA_VERSION:
            if app_id == APPLICATION_ID or _tables_of(SCHEMA_VERSION) <= tables:
                raise JournalError(
                    self.path,
                    f"schema version {version} is newer than this release understands "
                    f"({SCHEMA_VERSION}); upgrade operation-dispatcher or use another file",
                )
            self._refuse(f"its user_version is {version}")
        if version < 0:
            self._refuse(f"its user_version is {version}")
        expected = _tables_of(version)
        if tables != expected or others:
            found = ", ".join(sorted(tables) + others) or "none"
            self._refuse(
                f"user_version {version}; tables found: {found}"
                + (f"; a journal has {', '.join(sorted(expected))}" if expected else "")
            )
        return version

    def _refuse(self, detail: str) -> None:
        raise JournalError(
            self.path,
            f"{_NOT_OURS} ({detail}); the file was left untouched: give the dispatcher a new "
            "or empty file",
        )

    # ------------------------------------------------------------------ the resource
    def claim(self, resource_id: str) -> None:
        """Record the resource this journal is written for, or refuse another one.

        A journal holds one resource's queue; opened for another resource, that resource would
        take over (and start) jobs meant for a different machine. A journal from a release that
        did not record the resource takes the resource of its operations, or else the first
        dispatcher's.
        """
        conn = self._db()
        try:
            row = conn.execute(
                "SELECT value FROM dispatcher_state WHERE key = 'resource_id'"
            ).fetchone()
            owner = row[0] if row is not None else self._owner_of_operations(conn)
            if owner is not None and owner != resource_id:
                raise JournalError(
                    self.path,
                    f"was written for resource {owner!r}, not {resource_id!r}: each resource "
                    f"needs its own journal file, and this one holds the operations of {owner!r}",
                )
            if row is None:
                conn.execute(
                    "INSERT INTO dispatcher_state VALUES ('resource_id', ?)", (resource_id,)
                )
        except sqlite3.Error as exc:
            raise JournalError(self.path, _explain(exc)) from None
        self.resource_id = resource_id

    @staticmethod
    def _owner_of_operations(conn: sqlite3.Connection) -> str | None:
        row = conn.execute("SELECT data FROM operations LIMIT 1").fetchone()
        if row is None:
            return None
        try:
            owner = json.loads(row[0]).get("resource_id")
        except (ValueError, AttributeError):
            return None  # a damaged row: load() names it
        return owner if isinstance(owner, str) else None

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalError(self.path, "is closed")
        return self._conn

    def close(self) -> None:
        """Close the file (and release the lock); further use raises JournalError."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing
    def write(
        self,
        operations: Iterable[Operation],
        events: Iterable[DispatchEvent],
        retry: dict[UUID, list[RetryRow]] | None = None,
        retry_reset: bool = False,
        paused: bool | None = None,
    ) -> None:
        """Commit one unit of work; on any failure nothing of it is kept and JournalError says why.

        Any failure: SQLite's (disk full, I/O) or not (a payload ``json`` cannot encode, say).
        The transaction is rolled back in every case, so the next write starts clean.
        """
        conn = self._db()
        position = self._position
        began = time.perf_counter()
        try:
            op_rows, event_rows, retry_rows = self._rows(operations, events, retry or {})
            conn.execute("BEGIN IMMEDIATE")
            self._write_rows(conn, op_rows, event_rows, retry or {}, retry_rows, retry_reset, paused)
            self._commit(conn)
        except BaseException as exc:
            self._position = position
            self._rollback(conn)
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt and the like: rolled back, passed on as they are
            cause = _explain(exc) if isinstance(exc, sqlite3.Error) else (
                f"{type(exc).__name__}: {exc}"
            )
            raise JournalError(self.path, f"write failed, change not made: {cause}") from (
                None if isinstance(exc, sqlite3.Error) else exc
            )
        took = time.perf_counter() - began
        self.write_times.observe(took)
        self._slow.observe(took)
        self.last_event_seq += len(event_rows)
        self._commits += 1
        try:  # the unit is committed: a failed prune must not undo it
            if self._prune_every and self._commits % self._prune_every == 0:
                self.prune()
            self._keep_within_size()
        except JournalError as exc:
            log.warning("%s; tried again after the next commits", exc)

    def _commit(self, conn: sqlite3.Connection) -> None:
        """The step that waits for the disk; a subclass may stand in for a slow one."""
        conn.execute("COMMIT")

    def _rows(
        self,
        operations: Iterable[Operation],
        events: Iterable[DispatchEvent],
        retry: dict[UUID, list[RetryRow]],
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The rows of one unit, encoded before the transaction begins."""
        op_rows = []
        for op in operations:
            op_rows.append(
                (
                    str(op.id),
                    op.state.value,
                    self._position,
                    None if op.finish_time is None else op.finish_time.timestamp(),
                    _dumps(op.to_dict()),
                )
            )
            self._position += 1
        event_rows = [
            (
                str(e.id),
                None if e.operation_id is None else str(e.operation_id),
                e.event_type.value,
                e.created_at.timestamp(),
                _dumps(e.to_dict()),
            )
            for e in events
        ]
        retry_rows = [
            (r.kind, str(r.operation_id), r.denials, r.cooldown_until)
            for rows in retry.values()
            for r in rows
        ]
        return op_rows, event_rows, retry_rows

    @staticmethod
    def _write_rows(
        conn: sqlite3.Connection,
        op_rows: list[tuple[Any, ...]],
        event_rows: list[tuple[Any, ...]],
        retry: dict[UUID, list[RetryRow]],
        retry_rows: list[tuple[Any, ...]],
        retry_reset: bool,
        paused: bool | None,
    ) -> None:
        if op_rows:
            # The position of the first write is kept: it is the insertion order.
            conn.executemany(
                "INSERT INTO operations (id, state, position, finished_ts, data) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "state=excluded.state, finished_ts=excluded.finished_ts, data=excluded.data",
                op_rows,
            )
        if event_rows:
            conn.executemany(
                "INSERT INTO events (id, operation_id, event_type, created_ts, data) "
                "VALUES (?, ?, ?, ?, ?)",
                event_rows,
            )
        if retry_reset:
            conn.execute("DELETE FROM retry_state")
        if retry:
            conn.executemany(
                "DELETE FROM retry_state WHERE operation_id = ?",
                [(str(op_id),) for op_id in retry],
            )
        if retry_rows:
            conn.executemany("INSERT OR REPLACE INTO retry_state VALUES (?, ?, ?, ?)", retry_rows)
        if paused is not None:
            conn.execute(
                "INSERT OR REPLACE INTO dispatcher_state VALUES ('paused', ?)",
                ("true" if paused else "false",),
            )

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        """End an open transaction; a rollback that fails too leaves SQLite to undo it."""
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def prune(self) -> int:
        """Drop finished operations (and their events) beyond the age and count limits."""
        if self.prune_max_age_seconds is None and self.prune_max_count is None:
            return 0
        try:
            return limits.prune_finished(self._db(), self.prune_max_age_seconds, self.prune_max_count)
        except sqlite3.Error as exc:
            raise JournalError(self.path, f"prune failed: {_explain(exc)}") from None

    # ------------------------------------------------------------------ size
    def size(self) -> dict[str, int]:
        """Bytes of the file's live pages, of the whole file, and of the write-ahead log."""
        return limits.file_sizes(self._db(), self.path)

    def _keep_within_size(self) -> None:
        if self._size is not None:
            self._size.keep_within(self._db(), self._commits)

    # ------------------------------------------------------------------ reading
    def load(self, operation_retention: int) -> SavedState:
        """Everything a dispatcher needs to go on where the last one stopped."""
        try:
            return self._load(operation_retention)
        except sqlite3.Error as exc:
            raise JournalError(self.path, _explain(exc)) from None
        except (ValueError, KeyError, TypeError) as exc:  # a row that is not what we wrote
            raise JournalError(self.path, f"file is damaged: an entry cannot be read ({exc})") from None

    def _load(self, operation_retention: int) -> SavedState:
        conn = self._db()
        state = SavedState()
        rows = conn.execute(
            "SELECT state, data FROM operations WHERE finished_ts IS NULL ORDER BY position"
        )
        for row_state, data in rows:
            op = Operation.from_dict(json.loads(data))
            (state.active if row_state in _ACTIVE_STATES else state.queued).append(op)
        finished = conn.execute(
            "SELECT data FROM operations WHERE finished_ts IS NOT NULL "
            "ORDER BY finished_ts DESC, position DESC LIMIT ?",
            (operation_retention,),
        ).fetchall()
        state.finished = [Operation.from_dict(json.loads(r[0])) for r in reversed(finished)]
        state.retry = [
            RetryRow(kind, UUID(op_id), denials, until)
            for kind, op_id, denials, until in conn.execute("SELECT * FROM retry_state")
        ]
        row = conn.execute("SELECT value FROM dispatcher_state WHERE key = 'paused'").fetchone()
        state.paused = None if row is None else row[0] == "true"
        return state

    def get_operation(self, operation_id: UUID) -> Operation | None:
        row = self._db().execute(
            "SELECT data FROM operations WHERE id = ?", (str(operation_id),)
        ).fetchone()
        return None if row is None else Operation.from_dict(json.loads(row[0]))

    def has_operation(self, operation_id: UUID) -> bool:
        row = self._db().execute(
            "SELECT 1 FROM operations WHERE id = ?", (str(operation_id),)
        ).fetchone()
        return row is not None

    def executor_of(self, operation_id: UUID) -> str | None:
        """The executor bridge named by the operation's last OPERATION_STARTED event, if any."""
        row = self._db().execute(
            "SELECT data FROM events WHERE operation_id = ? AND event_type = ? "
            "ORDER BY seq DESC LIMIT 1",
            (str(operation_id), EventType.OPERATION_STARTED.value),
        ).fetchone()
        if row is None:
            return None
        executor = json.loads(row[0]).get("meta_data", {}).get("executor")
        return executor if isinstance(executor, str) else None

    def events_for(self, operation_id: UUID) -> list[DispatchEvent]:
        """Every journaled event of one operation, oldest first."""
        rows = self._db().execute(
            "SELECT data FROM events WHERE operation_id = ? ORDER BY seq", (str(operation_id),)
        )
        return [DispatchEvent.from_dict(json.loads(r[0])) for r in rows]

    def select_events(self, from_time: datetime | None = None, to_time: datetime | None = None,
                      limit: int | None = None) -> list[DispatchEvent]:
        """Events with from_time <= created_at <= to_time, the most recent ``limit``, oldest first."""
        return select_events(self._db(), from_time, to_time, limit)

    def counts(self) -> dict[str, int]:
        """Row counts, for tests and the health endpoint."""
        conn = self._db()
        return {
            "operations": conn.execute("SELECT COUNT(*) FROM operations").fetchone()[0],
            "events": conn.execute("SELECT COUNT(*) FROM events").fetchone()[0],
        }


def select_events(conn: sqlite3.Connection, from_time: datetime | None = None,
                  to_time: datetime | None = None, limit: int | None = None) -> list[DispatchEvent]:
    """The one time-window query of the events, for :class:`Journal` and for ``gantt`` (which
    reads the file read-only, without a Journal): the most recent ``limit``, oldest first."""
    if limit is not None and limit <= 0:
        return []
    bounds = (("created_ts >= ?", from_time), ("created_ts <= ?", to_time))
    clauses = [clause for clause, moment in bounds if moment is not None]
    params: list[Any] = [moment.timestamp() for _, moment in bounds if moment is not None]
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = f"SELECT data FROM events {where} ORDER BY seq DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    rows = conn.execute(sql, params).fetchall()
    return [DispatchEvent.from_dict(json.loads(r[0])) for r in reversed(rows)]


def _explain(exc: BaseException) -> str:
    """SQLite's message, with the usual cause spelled out."""
    text = str(exc)
    lowered = text.lower()
    if "locked" in lowered or "busy" in lowered:
        return f"{text} (another dispatcher has this journal open)"
    if "not a database" in lowered:
        return f"{text} ({_NOT_OURS}, or a damaged one; the file was left untouched)"
    if "malformed" in lowered:
        return f"{text} (the file is damaged or is not a journal)"
    if "readonly" in lowered or "read-only" in lowered:
        return f"{text} (the file or its folder is not writable)"
    if "full" in lowered:
        return f"{text} (the disk is full)"
    if "i/o error" in lowered:
        return f"{text} (the disk failed or is full, or the file size limit was reached)"
    return text


__all__ = [
    "APPLICATION_ID",
    "Journal",
    "JournalError",
    "MIGRATIONS",
    "RetryRow",
    "SCHEMA_VERSION",
    "SavedState",
    "select_events",
]

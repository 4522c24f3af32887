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
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from .errors import JournalError
from .models import DispatchEvent, EventType, ExecutionState, Operation

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


class Journal:
    """The SQLite journal of one dispatcher.

    :param path: the journal file (created if missing; its folder must exist).
    :param prune_max_age_seconds: drop finished operations (and their events) older than this.
    :param prune_max_count: keep at most this many finished operations.
    :param prune_every: prune automatically after this many commits (and when opened).

    Not thread-safe by itself: the dispatcher calls it with its lock held.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        prune_max_age_seconds: float | None = None,
        prune_max_count: int | None = None,
        prune_every: int = 1000,
    ) -> None:
        self.path = str(path)
        if prune_max_age_seconds is not None and not prune_max_age_seconds > 0:
            raise JournalError(self.path, "prune_max_age_seconds must be > 0")
        if prune_max_count is not None and prune_max_count < 0:
            raise JournalError(self.path, "prune_max_count must be >= 0")
        self.prune_max_age_seconds = prune_max_age_seconds
        self.prune_max_count = prune_max_count
        self._prune_every = prune_every
        self._commits = 0
        self._position = 0
        self._conn: sqlite3.Connection | None = None
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

    # ------------------------------------------------------------------ opening
    def _setup(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalError(
                self.path,
                f"schema version {version} is newer than this release understands "
                f"({SCHEMA_VERSION}); upgrade operation-dispatcher or use another file",
            )
        # Exclusive locking: the first write below takes the lock and keeps it until close(), so
        # a second dispatcher on this file fails here, at once, instead of interleaving writes.
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalError(self.path, f"cannot switch to WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target]:
                    conn.execute(statement)
            # Written even when unchanged: a real write, so that a read-only file (which SQLite
            # opens read-only without a word) fails here, at start, not at the first change.
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
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
        """Commit one unit of work; on any failure nothing of it is kept and JournalError says why."""
        conn = self._db()
        try:
            conn.execute("BEGIN IMMEDIATE")
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
            if op_rows:
                # The position of the first write is kept: it is the insertion order.
                conn.executemany(
                    "INSERT INTO operations (id, state, position, finished_ts, data) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                    "state=excluded.state, finished_ts=excluded.finished_ts, data=excluded.data",
                    op_rows,
                )
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
            if event_rows:
                conn.executemany(
                    "INSERT INTO events (id, operation_id, event_type, created_ts, data) "
                    "VALUES (?, ?, ?, ?, ?)",
                    event_rows,
                )
            if retry_reset:
                conn.execute("DELETE FROM retry_state")
            retry = retry or {}
            if retry:
                conn.executemany(
                    "DELETE FROM retry_state WHERE operation_id = ?",
                    [(str(op_id),) for op_id in retry],
                )
            retry_rows = [
                (r.kind, str(r.operation_id), r.denials, r.cooldown_until)
                for rows in retry.values()
                for r in rows
            ]
            if retry_rows:
                conn.executemany(
                    "INSERT OR REPLACE INTO retry_state VALUES (?, ?, ?, ?)", retry_rows
                )
            if paused is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO dispatcher_state VALUES ('paused', ?)",
                    ("true" if paused else "false",),
                )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise JournalError(self.path, f"write failed, change not made: {_explain(exc)}") from None
        self._commits += 1
        if self._prune_every and self._commits % self._prune_every == 0:
            self.prune()

    def prune(self) -> int:
        """Drop finished operations (and their events) beyond the age and count limits."""
        if self.prune_max_age_seconds is None and self.prune_max_count is None:
            return 0
        conn = self._db()
        doomed: set[str] = set()
        if self.prune_max_age_seconds is not None:
            cutoff = time.time() - self.prune_max_age_seconds
            doomed.update(
                r[0]
                for r in conn.execute(
                    "SELECT id FROM operations WHERE finished_ts IS NOT NULL AND finished_ts < ?",
                    (cutoff,),
                )
            )
        if self.prune_max_count is not None:
            doomed.update(
                r[0]
                for r in conn.execute(
                    "SELECT id FROM operations WHERE finished_ts IS NOT NULL "
                    "ORDER BY finished_ts DESC, position DESC LIMIT -1 OFFSET ?",
                    (self.prune_max_count,),
                )
            )
        try:
            conn.execute("BEGIN IMMEDIATE")
            rows = [(op_id,) for op_id in doomed]
            conn.executemany("DELETE FROM events WHERE operation_id = ?", rows)
            conn.executemany("DELETE FROM operations WHERE id = ?", rows)
            if self.prune_max_age_seconds is not None:
                conn.execute(
                    "DELETE FROM events WHERE operation_id IS NULL AND created_ts < ?",
                    (time.time() - self.prune_max_age_seconds,),
                )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise JournalError(self.path, f"prune failed: {_explain(exc)}") from None
        return len(doomed)

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

    def select_events(
        self,
        from_time: datetime | None = None,
        to_time: datetime | None = None,
        limit: int | None = None,
    ) -> list[DispatchEvent]:
        """Events with from_time <= created_at <= to_time, the most recent ``limit``, oldest first."""
        if limit is not None and limit <= 0:
            return []
        clauses, params = [], []
        if from_time is not None:
            clauses.append("created_ts >= ?")
            params.append(from_time.timestamp())
        if to_time is not None:
            clauses.append("created_ts <= ?")
            params.append(to_time.timestamp())
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT data FROM events {where} ORDER BY seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._db().execute(sql, params).fetchall()
        return [DispatchEvent.from_dict(json.loads(r[0])) for r in reversed(rows)]

    def counts(self) -> dict[str, int]:
        """Row counts, for tests and the health endpoint."""
        conn = self._db()
        return {
            "operations": conn.execute("SELECT COUNT(*) FROM operations").fetchone()[0],
            "events": conn.execute("SELECT COUNT(*) FROM events").fetchone()[0],
        }


def _explain(exc: sqlite3.Error) -> str:
    """SQLite's message, with the usual cause spelled out."""
    text = str(exc)
    lowered = text.lower()
    if "locked" in lowered or "busy" in lowered:
        return f"{text} (another dispatcher has this journal open)"
    if "not a database" in lowered or "malformed" in lowered:
        return f"{text} (the file is damaged or is not a journal)"
    if "readonly" in lowered or "read-only" in lowered:
        return f"{text} (the file or its folder is not writable)"
    if "full" in lowered:
        return f"{text} (the disk is full)"
    return text


__all__ = ["Journal", "JournalError", "MIGRATIONS", "RetryRow", "SCHEMA_VERSION", "SavedState"]

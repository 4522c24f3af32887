"""The journal's retention and limits, for weeks on an SD card.

:func:`prune_finished` drops finished history by age and count; :class:`SizeLimit` keeps the
live pages within ``max_bytes`` by dropping the oldest finished history (never an unfinished
operation); :class:`SlowWrites` logs a commit that took longer than ``slow_write_seconds``, at
most once a minute. The write-ahead log is checkpointed by SQLite every 1000 pages and cut back
to :data:`WAL_SIZE_LIMIT` once checkpointed (``journal_size_limit``, set by the journal), so it
does not keep the size of its largest transaction. All of it works on the journal's own SQLite
connection, called by :class:`~.journal.Journal` with the dispatcher lock held.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time

from . import _checks
from .errors import JournalError, ValidationError

log = logging.getLogger("operation_dispatcher.journal")

#: The write-ahead log is truncated back to this size whenever a checkpoint has emptied it.
WAL_SIZE_LIMIT = 4 * 1024 * 1024

#: ``max_bytes`` smaller than this leaves no room for the schema (~60 KiB) and some history.
MIN_MAX_BYTES = 256 * 1024
#: the largest ``max_bytes``: an SQLite file cannot be larger (and no SD card is)
MAX_MAX_BYTES = 2**47

#: When ``max_bytes`` is passed, history is dropped until the file's live pages fill at most this
#: share of it: pruning then happens once in a while, in one transaction, not at every commit.
PRUNE_TO_SHARE = 0.8

#: With nothing finished left to drop, the size is checked again only after this many commits.
STUCK_RECHECK_COMMITS = 100

#: At most one slow-write warning in this many seconds (a failing card would flood the log).
SLOW_WARNING_EVERY_SECONDS = 60.0


def limit_problem(max_bytes: object, slow_write_seconds: object) -> str | None:
    """Why the limits make no sense (a bool, NaN, inf, a string, out of range), or None."""
    try:
        if max_bytes is not None:
            _checks.integer(max_bytes, "max_bytes", minimum=MIN_MAX_BYTES, maximum=MAX_MAX_BYTES)
        _checks.seconds(slow_write_seconds, "slow_write_seconds")
    except ValidationError as exc:
        return f"{exc.field} {exc.reason}"
    return None


def _pages(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """The file's page count, free pages and page size."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int(pages), int(free), int(conn.execute("PRAGMA page_size").fetchone()[0])


def live_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the file's pages in use (page count minus free pages, times the page size)."""
    pages, free, size = _pages(conn)
    return (pages - free) * size


def file_sizes(conn: sqlite3.Connection, path: str) -> dict[str, int]:
    """Bytes of the file's live pages, of the whole file, and of the write-ahead log."""
    pages, free, size = _pages(conn)
    try:
        wal = os.path.getsize(path + "-wal")
    except OSError:
        wal = 0
    return {"live_bytes": (pages - free) * size, "file_bytes": pages * size, "wal_bytes": wal}


def prune_finished(
    conn: sqlite3.Connection, max_age_seconds: float | None, max_count: int | None
) -> int:
    """Drop finished operations (and their events) older than ``max_age_seconds`` or beyond
    the ``max_count`` most recent, and events of no operation older than that age; how many
    operations. One transaction, rolled back on failure."""
    doomed: set[str] = set()
    if max_age_seconds is not None:
        cutoff = time.time() - max_age_seconds
        doomed.update(r[0] for r in conn.execute(
            "SELECT id FROM operations WHERE finished_ts IS NOT NULL AND finished_ts < ?",
            (cutoff,),
        ))
    if max_count is not None:
        doomed.update(r[0] for r in conn.execute(
            "SELECT id FROM operations WHERE finished_ts IS NOT NULL "
            "ORDER BY finished_ts DESC, position DESC LIMIT -1 OFFSET ?", (max_count,),
        ))
    try:
        conn.execute("BEGIN IMMEDIATE")
        rows = [(op_id,) for op_id in doomed]
        conn.executemany("DELETE FROM events WHERE operation_id = ?", rows)
        conn.executemany("DELETE FROM operations WHERE id = ?", rows)
        if max_age_seconds is not None:
            conn.execute(
                "DELETE FROM events WHERE operation_id IS NULL AND created_ts < ?",
                (time.time() - max_age_seconds,),
            )
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return len(doomed)


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # SQLite undoes it at the next write


class SizeLimit:
    """Drops the oldest history while a journal's live pages exceed ``max_bytes``."""

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._warned = False
        self._check_after = 0  # the commit count before which the size is not checked

    def keep_within(self, conn: sqlite3.Connection, commits: int) -> int:
        """Prune after commit number ``commits`` if needed; the rows dropped.

        Each round, in one transaction, drops the oldest eighth of the finished operations
        (oldest finish first) with their events, and the oldest eighth of the events of no
        operation, until the live pages fill at most PRUNE_TO_SHARE of ``max_bytes``. Unfinished
        operations and their events are never dropped: if they (and the schema) alone are too
        big, one warning says so, the file grows, and the size is checked again only after
        STUCK_RECHECK_COMMITS commits. Freed pages go back to the file system (a journal made
        with auto_vacuum) or are reused by the next writes (an older journal).
        """
        try:
            return self._keep_within(conn, commits)
        except sqlite3.Error as exc:  # the commit before stands; the next one tries again
            raise JournalError(self.path, f"prune to max_bytes failed: {exc}") from None

    def _keep_within(self, conn: sqlite3.Connection, commits: int) -> int:
        if commits < self._check_after:
            return 0
        if live_bytes(conn) <= self.max_bytes:
            self._warned = False
            return 0
        dropped = 0
        while live_bytes(conn) > self.max_bytes * PRUNE_TO_SHARE:
            gone = self._drop_oldest(conn)
            if not gone:
                self._stuck(conn, commits)
                break
            dropped += gone
        if dropped:
            self._give_back_pages(conn)
        return dropped

    def _stuck(self, conn: sqlite3.Connection, commits: int) -> None:
        if not self._warned:
            log.warning(
                "journal %s: %d bytes of unfinished operations, their events and the schema "
                "exceed max_bytes (%d); nothing finished is left to drop, so the file grows",
                self.path, live_bytes(conn), self.max_bytes,
            )
            self._warned = True
        # until some of it finishes, trying at every commit would only cost writes
        self._check_after = commits + STUCK_RECHECK_COMMITS

    @staticmethod
    def _drop_oldest(conn: sqlite3.Connection) -> int:
        """One round of pruning in one transaction (rolled back on failure); rows dropped."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            finished = conn.execute("SELECT COUNT(*) FROM operations WHERE finished_ts IS NOT NULL")
            batch = max(1, finished.fetchone()[0] // 8)
            doomed = [
                (row[0],) for row in conn.execute(
                    "SELECT id FROM operations WHERE finished_ts IS NOT NULL "
                    "ORDER BY finished_ts, position LIMIT ?", (batch,),
                )
            ]
            conn.executemany("DELETE FROM events WHERE operation_id = ?", doomed)
            conn.executemany("DELETE FROM operations WHERE id = ?", doomed)
            loose = conn.execute("SELECT COUNT(*) FROM events WHERE operation_id IS NULL")
            loose_batch = (loose.fetchone()[0] + 7) // 8
            conn.execute(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE operation_id IS "
                "NULL ORDER BY seq LIMIT ?)", (loose_batch,),
            )
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        return len(doomed) + loose_batch

    @staticmethod
    def _give_back_pages(conn: sqlite3.Connection) -> None:
        """Checkpoint, then hand free pages back to the file system (auto_vacuum journals)."""
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
            # executescript steps the pragma to the end (execute() would free one page)
            conn.executescript("PRAGMA incremental_vacuum;")
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


class SlowWrites:
    """Warns about commits slower than ``threshold`` seconds, at most once per minute."""

    def __init__(self, path: str, threshold: float) -> None:
        self.path = path
        self.threshold = float(threshold)
        self._unreported = 0  # slow writes not yet reported in a warning
        self._warned_at = float("-inf")

    def observe(self, took: float) -> None:
        if took <= self.threshold:
            return
        self._unreported += 1
        now = time.monotonic()
        if now - self._warned_at < SLOW_WARNING_EVERY_SECONDS:
            return
        log.warning(
            "journal %s: a write took %.1f s (%d over %.1f s since the last warning); the disk "
            "is slow (a worn or slow SD card?). Nothing was lost or cut short; everything waits "
            "for the disk", self.path, took, self._unreported, self.threshold,
        )
        self._unreported = 0
        self._warned_at = now


__all__ = [
    "WAL_SIZE_LIMIT",
    "MAX_MAX_BYTES",
    "MIN_MAX_BYTES",
    "PRUNE_TO_SHARE",
    "SizeLimit",
    "SlowWrites",
    "file_sizes",
    "limit_problem",
    "live_bytes",
    "prune_finished",
]

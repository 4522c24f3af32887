"""EventStore: where committed events (and, with a journal, operations) are kept and read back.

Two implementations behind one protocol, so the dispatcher never asks "is there a journal?":
:class:`~.history.EventLog` keeps the last events in memory; :class:`JournalEventStore` writes
every unit of work to the SQLite :class:`~.journal.Journal` and serves every read from it (with a
journal no event is copied into memory). ``find_operation`` is the second half of the one
lookup every read uses: the queue first, then the store (finished operations beyond memory
retention live only in the journal).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Protocol
from uuid import UUID

from .models import DispatchEvent, Operation

if TYPE_CHECKING:
    from .journal import Journal
    from .retry import RetryChanges


class EventStore(Protocol):
    """What the unit of work writes to and every event read goes through."""

    #: True when what is committed survives the process (a journal).
    durable: bool

    def commit(
        self,
        operations: Iterable[Operation],
        events: list[DispatchEvent],
        retry: RetryChanges,
        paused: bool | None,
    ) -> int:
        """Keep one unit of work: all of it, or (raising JournalError) nothing.

        Returns the sequence number of the unit's first event; the others follow it, one by
        one (see :attr:`last_seq`).
        """

    @property
    def last_seq(self) -> int:
        """The sequence number of the last event kept (0: none yet). Events are numbered 1, 2,
        ... in commit order; with a journal the number is the journal's ``events.seq`` and goes
        on across restarts, in memory it starts again at 1 in each process."""

    def for_operation(self, operation_id: UUID) -> list[DispatchEvent]:
        """Snapshots of one operation's events, oldest first."""

    def select(
        self, from_time: datetime | None, to_time: datetime | None, limit: int | None
    ) -> list[DispatchEvent]:
        """Snapshots of the events in the window, the most recent ``limit``, oldest first."""

    def find_operation(self, operation_id: UUID) -> Operation | None:
        """A finished operation the queue no longer holds (a copy), or None."""

    def knows(self, operation_id: UUID) -> bool:
        """Whether the id is taken by an operation the queue no longer holds."""


class JournalEventStore:
    """The journal as an EventStore: each unit is one SQLite transaction; reads hit the file."""

    durable = True

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def commit(
        self,
        operations: Iterable[Operation],
        events: list[DispatchEvent],
        retry: RetryChanges,
        paused: bool | None,
    ) -> int:
        from .journal import RetryRow

        rows: dict[UUID, list[RetryRow]] = {}
        if retry.entries:
            # the journal keeps cooldown ends on the wall clock: they must survive a reboot
            now_wall, now_mono = time.time(), time.monotonic()
            rows = {
                op_id: [
                    RetryRow(kind.value, op_id, count, now_wall + (until - now_mono))
                    for kind, count, until in entries
                ]
                for op_id, entries in retry.entries.items()
            }
        # the events get the journal's next seq numbers, in order, with no gap: AUTOINCREMENT,
        # and the journal's connection is the file's only writer (a failed write numbers none)
        first = self.journal.last_event_seq + 1
        self.journal.write(operations, events, retry=rows, retry_reset=retry.reset, paused=paused)
        return first

    @property
    def last_seq(self) -> int:
        return self.journal.last_event_seq

    def for_operation(self, operation_id: UUID) -> list[DispatchEvent]:
        return self.journal.events_for(operation_id)

    def select(
        self, from_time: datetime | None, to_time: datetime | None, limit: int | None
    ) -> list[DispatchEvent]:
        return self.journal.select_events(from_time, to_time, limit)

    def find_operation(self, operation_id: UUID) -> Operation | None:
        return self.journal.get_operation(operation_id)

    def knows(self, operation_id: UUID) -> bool:
        return self.journal.has_operation(operation_id)


__all__ = ["EventStore", "JournalEventStore"]

"""RetryPolicy: denial counts and cooldowns per (request kind, operation), as in the original.

It records which operations' counts changed (and whether all were forgotten), so the unit of
work journals exactly those through :meth:`RetryPolicy.take_changes`: no caller has to remember
to mark them.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

#: (kind, denials, cooldown end on the monotonic clock); the kind is a RequestKind
Entry = tuple[Any, int, float]


@dataclass(frozen=True, slots=True)
class RetryChanges:
    """What changed in a :class:`RetryPolicy` since it was last asked (for the journal).

    ``reset``: every pair was forgotten (before ``entries`` were recorded); ``entries``: the
    current entries of each operation whose pairs changed, an empty list when they were
    forgotten.
    """

    reset: bool = False
    entries: dict[UUID, list[Entry]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.reset or bool(self.entries)


NO_RETRY_CHANGES = RetryChanges()


class RetryPolicy:
    """Denial counts and cooldowns per (kind, operation); tracks its own changes.

    Not thread-safe on its own: the dispatcher calls it with its lock held.
    """

    def __init__(self, max_retries: int, cooldown_seconds: float) -> None:
        self.max_retries = max_retries
        self.cooldown_seconds = cooldown_seconds
        # operation -> kind -> (denials, cooldown end); only operations ever denied are here
        self._denials: dict[UUID, dict[Hashable, tuple[int, float]]] = {}
        self._dirty: set[UUID] = set()
        self._reset = False

    def cooldown_remaining(self, kind: Hashable, operation_id: UUID) -> float:
        """Seconds until this pair may be asked again (0 when it may be asked now)."""
        entry = self._denials.get(operation_id, {}).get(kind)
        if entry is None:
            return 0.0
        return max(0.0, entry[1] - time.monotonic())

    def count(self, kind: Hashable, operation_id: UUID) -> int:
        entry = self._denials.get(operation_id, {}).get(kind)
        return 0 if entry is None else entry[0]

    def record_denial(self, kind: Hashable, operation_id: UUID) -> int:
        """Count a denial and start its cooldown; returns the new count."""
        count = self.count(kind, operation_id) + 1
        until = time.monotonic() + self.cooldown_seconds
        self._denials.setdefault(operation_id, {})[kind] = (count, until)
        self._dirty.add(operation_id)
        return count

    def record_expiry(self, kind: Hashable, operation_id: UUID) -> int:
        """Start the cooldown without counting a denial (an operator did not answer in
        time); returns the unchanged count."""
        count = self.count(kind, operation_id)
        until = time.monotonic() + self.cooldown_seconds
        self._denials.setdefault(operation_id, {})[kind] = (count, until)
        self._dirty.add(operation_id)
        return count

    def exhausted(self, count: int) -> bool:
        return count >= self.max_retries

    def clear(self, kind: Hashable, operation_id: UUID) -> None:
        kinds = self._denials.get(operation_id)
        if kinds is not None and kinds.pop(kind, None) is not None:
            if not kinds:
                del self._denials[operation_id]
            self._dirty.add(operation_id)

    def clear_operation(self, operation_id: UUID) -> None:
        """Forget every pair of a finished operation, so the table cannot grow without bound."""
        if self._denials.pop(operation_id, None) is not None:
            self._dirty.add(operation_id)

    def clear_all(self) -> None:
        """Forget every pair (the dispatcher was resumed by hand)."""
        self._denials.clear()
        self._dirty.clear()
        self._reset = True

    def entries(self, operation_id: UUID) -> list[Entry]:
        """(kind, denials, cooldown end on the monotonic clock) of one operation, for the journal."""
        return [
            (kind, count, until)
            for kind, (count, until) in self._denials.get(operation_id, {}).items()
        ]

    def load(self, rows: Iterable[tuple[Hashable, UUID, int, float]]) -> None:
        """Replace every pair by what the journal holds (cooldown ends on the monotonic clock);
        what was loaded is not a change to journal."""
        self._denials = {}
        for kind, operation_id, count, until in rows:
            self._denials.setdefault(operation_id, {})[kind] = (count, until)
        self.forget_changes()

    def take_changes(self) -> RetryChanges:
        """What changed since the last call (and forget it): the unit of work journals it."""
        if not self._dirty and not self._reset:
            return NO_RETRY_CHANGES
        changes = RetryChanges(self._reset, {op_id: self.entries(op_id) for op_id in self._dirty})
        self.forget_changes()
        return changes

    def forget_changes(self) -> None:
        self._dirty = set()
        self._reset = False

    def __len__(self) -> int:
        return sum(len(kinds) for kinds in self._denials.values())


__all__ = ["NO_RETRY_CHANGES", "RetryChanges", "RetryPolicy"]

"""Progress of the running operation: the rate limit of its events, and its elapsed time.

An executor may report progress as often as it likes (a PLC register polled every 100 ms, a
firmware printing a line per step); the operation always holds the latest report, but events
(and with them journal writes: each event commits the operation) are rate-limited per
operation by :class:`ProgressThrottle`: at most one ``OPERATION_PROGRESS`` per
:data:`PROGRESS_EVENT_INTERVAL` seconds. A report that comes sooner is held, and the latest held
value is emitted when the interval is over (the dispatcher thread wakes for it), when the
operation ends (just before its finishing event) or when the dispatcher stops. A flood of
reports thus costs at most two events per second per operation, and the last value is never
lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from uuid import UUID

from .models import ExecutionState, Operation, utcnow

#: Seconds between two OPERATION_PROGRESS events of one operation (at most 2 events per second).
PROGRESS_EVENT_INTERVAL = 0.5


class ProgressThrottle:
    """Decides, per operation, whether a progress report is emitted now or held.

    :param interval: seconds between two emitted reports of one operation.
    :param clock: a monotonic clock (tests pass their own). Holds state only for operations that
        reported progress and have not finished (:meth:`forget`): one, as a rule.
    """

    def __init__(
        self, interval: float = PROGRESS_EVENT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[UUID, float] = {}  # when the operation's last event was emitted
        self._held: set[UUID] = set()  # operations whose latest report is not emitted yet

    def offer(self, operation_id: UUID) -> float | None:
        """A new report: None when it is to be emitted now, else the moment (on ``clock``)
        when the held value is due."""
        now = self.clock()
        last = self._last.get(operation_id)
        if last is None or now - last >= self.interval:
            self._last[operation_id] = now
            self._held.discard(operation_id)
            return None
        self._held.add(operation_id)
        return last + self.interval

    def take_held(self, operation_id: UUID) -> bool:
        """True (once) when the operation has a held report: the caller emits it now."""
        if operation_id not in self._held:
            return False
        self._held.discard(operation_id)
        self._last[operation_id] = self.clock()
        return True

    def forget(self, operation_id: UUID) -> None:
        """The operation ended: drop what is kept for it."""
        if self._last:
            self._last.pop(operation_id, None)
            self._held.discard(operation_id)

    def clear(self) -> None:
        self._last.clear()
        self._held.clear()


def elapsed_seconds(op: Operation, now: datetime | None = None) -> float | None:
    """Seconds since a RUNNING operation started (paused time included), else None.

    Compare it with ``planned_duration`` to see whether a job is late.
    """
    if op.state is not ExecutionState.RUNNING or op.start_time is None:
        return None
    seconds = ((now or utcnow()) - op.start_time).total_seconds()
    return max(0.0, seconds)


__all__ = ["PROGRESS_EVENT_INTERVAL", "ProgressThrottle", "elapsed_seconds"]

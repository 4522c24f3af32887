"""The dispatcher's run state: the pause switch and the loop's flags, each a small part.

:class:`PauseSwitch` owns "are new starts held?": it announces every flip as an event and
remembers that it flipped, so the unit of work journals it without anyone marking it by hand.
:class:`LoopState` is what the loop thread and the code that dispatches in callers' threads
share: whether the loop runs, whether it was asked to stop, and when it wakes by itself.
Both are read and written with the dispatcher lock held.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from .models import EventType, utcnow

if TYPE_CHECKING:
    from .unit import UnitOfWork


class PauseSwitch:
    """Whether the dispatcher holds new starts; tracks its own change for the journal."""

    __slots__ = ("_paused", "_changed", "_unit", "since")

    def __init__(self, unit: UnitOfWork, paused: bool) -> None:
        self._unit = unit
        self._paused = paused
        self._changed = False
        #: when it was paused in this process (None: not paused, or paused before a restart)
        self.since: datetime | None = None

    @property
    def is_set(self) -> bool:
        return self._paused

    def set(self, paused: bool) -> bool:
        """Flip the switch and announce it (PAUSED / RESUMED); False if it was already so."""
        if self._paused == paused:
            return False
        self._paused = paused
        self._changed = True
        self.since = utcnow() if paused else None
        self._unit.emit(
            EventType.OPERATION_DISPATCHER_PAUSED if paused
            else EventType.OPERATION_DISPATCHER_RESUMED
        )
        return True

    def load(self, paused: bool) -> None:
        """Take the value the journal holds (or the constructor's): not a change to journal."""
        if paused != self._paused:
            self.since = None  # when the journal's pause began is not known here
        self._paused = paused

    def take_change(self) -> bool | None:
        """The value to journal if the switch flipped since the last call, else None."""
        if not self._changed:
            return None
        self._changed = False
        return self._paused

    def forget_change(self) -> None:
        self._changed = False


class LoopState:
    """The dispatcher loop's flags, shared by the loop thread and callers that dispatch."""

    __slots__ = ("active", "stop_requested", "wakes_at", "running_since", "running_since_mono")

    def __init__(self) -> None:
        self.active = False
        self.stop_requested = False
        self.wakes_at = 0.0  # when the sleeping loop wakes by itself (monotonic clock)
        self.running_since: datetime | None = None
        self.running_since_mono = 0.0


__all__ = ["LoopState", "PauseSwitch"]

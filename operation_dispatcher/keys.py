"""Named types for the dispatcher's internal keys, so a typo is an error instead of a silent park.

An operation parked under ``"dependancy:..."`` would wait forever for an unpark nobody sends;
a deadline of kind ``"unprak"`` would fire and do nothing. Here every such key is built in one
place: :class:`Blocker` (what parks an operation, the strings ``explain`` shows),
:class:`DeadlineKind` (why the dispatcher wakes) and :class:`DependencyStatus`.
"""

from __future__ import annotations

from enum import Enum, StrEnum
from uuid import UUID


class Blocker(StrEnum):
    """The fixed blockers; the per-signal and per-provider ones come from :meth:`condition`
    and :meth:`dependency`. Their values are exactly what ``explain()`` reports."""

    RELEASE_DATE = "release_date"
    COOLDOWN = "cooldown"
    AWAITING_APPROVAL = "awaiting_approval"
    RESOURCE_BUSY = "resource_busy"
    DISPATCHER_PAUSED = "dispatcher_paused"
    DISPATCHER_NOT_RUNNING = "dispatcher_not_running"

    @staticmethod
    def condition(signal_name: str) -> str:
        """``release_condition:NAME``: waiting for signal NAME to hold its required value."""
        return f"{_CONDITION}{signal_name}"

    @staticmethod
    def dependency(provider_id: UUID) -> str:
        """``dependency:ID``: waiting for provider ID to start or complete."""
        return f"{_DEPENDENCY}{provider_id}"

    @staticmethod
    def is_dependency(blocker: str) -> bool:
        return blocker.startswith(_DEPENDENCY)


_CONDITION = "release_condition:"
_DEPENDENCY = "dependency:"


class DeadlineKind(StrEnum):
    """Why the dispatcher must look again at a moment (see :class:`~.deadlines.Deadlines`)."""

    UNPARK = "unpark"  # a release date or a cooldown ends: re-check a parked operation
    REQUEST = "request"  # an approval request times out
    TIMEOUT = "timeout"  # the running operation exceeds its timeout_seconds
    PROGRESS = "progress"  # a held progress report of an operation is due (see progress.py)


class DependencyStatus(Enum):
    """Where one dependency of a queued operation stands."""

    OK = "ok"  # met: the operation may start as far as this provider goes
    WAIT = "wait"  # not yet: the provider has not started (or completed)
    FAILED = "failed"  # never: the provider failed or was cancelled


__all__ = ["Blocker", "DeadlineKind", "DependencyStatus"]

"""UnitOfWork: what one public call (or one loop pass) changed, kept in one transaction.

``with unit:`` takes the dispatcher lock; leaving the outermost one flushes: the unit asks the
parts what changed (the retry policy its rows, the pause switch its flag; the operations are
those the unit's events name), commits all of it to the event store in one go, and only then
publishes the events. No caller marks anything dirty by hand.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from .errors import JournalError
from .events import EventBus
from .models import (
    EMPTY_DICT,
    EMPTY_LIST,
    ChangeRecord,
    DispatchEvent,
    EventType,
    Operation,
    copy_json,
)
from .retry import RetryPolicy
from .runstate import PauseSwitch
from .store import EventStore

#: Condition.wait overflows beyond TIMEOUT_MAX (a release date centuries ahead): wait at most a
#: day; the caller re-plans when it wakes.
_MAX_WAIT_SECONDS = 86_400.0

_LOUD_EVENTS = {
    EventType.OPERATION_DISPATCHER_PAUSED: logging.WARNING,
    EventType.OPERATION_DISPATCHER_STOPPED: logging.INFO,  # a crash is a CRITICAL of its own
    EventType.OPERATION_DISPATCHER_RESUMED: logging.INFO,
}
_LOUD_LEVELS = {event.value: level for event, level in _LOUD_EVENTS.items()}

#: Called after a failed commit to make memory what the store holds again; returns None when
#: that worked, else why memory can no longer be trusted.
Reloader = Callable[[JournalError], "str | None"]


class UnitOfWork:
    """The dispatcher lock plus the events of the call that holds it (see the module doc)."""

    def __init__(
        self,
        resource_id: str,
        lock: threading.RLock,
        store: EventStore,
        bus: EventBus,
        log: logging.Logger,
    ) -> None:
        self._resource_id = resource_id
        self._lock = lock
        self._store = store
        self._bus = bus
        self._log = log
        self._depth = 0
        self._events: list[DispatchEvent] = []
        self._ops: dict[Any, Operation] = {}
        self._retry: RetryPolicy | None = None
        self._pause: PauseSwitch | None = None
        self._reload: Reloader | None = None
        #: set when a failed write could not be undone in memory: nothing starts any more
        self.broken: str | None = None
        self._broken_path = ""

    def track(self, retry: RetryPolicy, pause: PauseSwitch, reload: Reloader) -> None:
        """The parts whose changes each flush asks for, and how to undo a failed write."""
        self._retry, self._pause, self._reload = retry, pause, reload

    def __enter__(self) -> None:
        self._lock.acquire()
        self._depth += 1

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        try:
            if self._depth == 0:
                self.flush()
        finally:
            self._lock.release()

    def emit(
        self,
        event_type: EventType,
        operation: Operation | None = None,
        changes: Iterable[ChangeRecord] = (),
        meta_data: dict[str, Any] | None = None,
    ) -> DispatchEvent:
        """Make an event of this unit (published when the unit is committed). Lock held."""
        changes = list(changes) if changes else EMPTY_LIST
        event = DispatchEvent.trusted(
            operation.resource_id if operation is not None else self._resource_id,
            event_type,
            None if operation is None else operation.id,
            # most events have no changes or no meta data: they share one read-only empty
            changes or EMPTY_LIST,  # (an empty lifecycle diff)
            copy_json(dict(meta_data)) if meta_data else EMPTY_DICT,  # the caller keeps its dict
        )
        self.record(event, operation)
        return event

    def record(self, event: DispatchEvent, operation: Operation | None = None) -> None:
        # Called with the lock held: the unit's list is what puts events in one total order.
        self._events.append(event)
        if operation is not None:
            self._ops[operation.id] = operation

    def flush(self) -> None:
        """Commit the unit (one transaction), then publish its events. Lock held.

        If the commit fails, nothing of the unit is published, memory is reloaded from the
        journal (so both agree again) and the JournalError goes to whoever made the change.
        """
        if self.broken is not None and (self._events or self._ops):
            self.drop()
            raise JournalError(self._broken_path, self.broken)
        assert self._retry is not None and self._pause is not None
        retry = self._retry.take_changes()
        paused = self._pause.take_change()
        events, ops = self._events, self._ops
        if not events and not ops and not retry and paused is None:
            return
        self._events, self._ops = [], {}
        try:
            first_seq = self._store.commit(ops.values(), events, retry, paused)
        except JournalError as exc:
            assert self._reload is not None
            self.broken, self._broken_path = self._reload(exc), exc.path
            raise
        self._publish(events, first_seq)

    def _publish(self, events: list[DispatchEvent], first_seq: int | None) -> None:
        self._bus.publish_many(events, first_seq)
        log = self._log
        for event in events:
            # keyed by the plain value: hashing the enum member is a Python call per event
            level = _LOUD_LEVELS.get(event.event_type._value_, logging.DEBUG)
            if log.isEnabledFor(level):
                log.log(
                    level, "%s %s %s", self._resource_id, event.event_type.value,
                    event.operation_id or "",
                )

    def drop(self) -> None:
        """Forget what the unit holds (its changes will not be journaled)."""
        self._events, self._ops = [], {}
        if self._retry is not None and self._pause is not None:
            self._retry.forget_changes()
            self._pause.forget_change()

    def wait(self, condition: threading.Condition, timeout: float | None) -> None:
        """Wait on ``condition`` (lock held): flush first, and let other threads' units run.

        The depth belongs to whoever holds the lock; while this thread waits, others take the
        lock and must see depth 0 so that their units flush.
        """
        self.flush()
        depth, self._depth = self._depth, 0
        try:
            condition.wait(None if timeout is None else min(timeout, _MAX_WAIT_SECONDS))
        finally:
            self._depth = depth


__all__ = ["UnitOfWork"]

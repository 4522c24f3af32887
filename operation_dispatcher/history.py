"""Bounded in-memory history: the recent events, per-operation lookups, and KPIs over them.

The original kept the last 1000 events in a list and scanned it for every per-operation lookup,
while its archive of finished operations grew forever. Here both are bounded: :class:`EventLog`
keeps the last ``retention`` events with an index by operation (O(1) to append, O(k) to list an
operation's k events), and evicting an event also drops it from the index, so memory stays flat
however long the dispatcher runs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from .models import (
    EMPTY_DICT,
    EMPTY_LIST,
    ChangeRecord,
    DispatchEvent,
    EventType,
    ExecutionOutcome,
    ExecutionState,
    History,
    Operation,
    TimeWindow,
    change_record,
    copy_json,
    to_utc,
)

_CONTAINERS = (dict, list, type(EMPTY_DICT), type(EMPTY_LIST))


def _copy_change(change: ChangeRecord) -> ChangeRecord:
    """A ChangeRecord is frozen, but a payload it carries is a dict: copy those values."""
    old, new = change.old_value, change.new_value
    if type(old) not in _CONTAINERS and type(new) not in _CONTAINERS:
        return change
    return change_record(change.field, copy_json(old), copy_json(new))


_new = object.__new__
_set = object.__setattr__


def copy_event(event: DispatchEvent) -> DispatchEvent:
    """An independent snapshot of an event: changing its meta_data or changes (or the values
    they hold) changes nothing in the original.

    Straight-line code, since every read copies every event it returns: no re-validation,
    scalars and frozen change records shared.
    """
    clone = _new(DispatchEvent)
    _set(clone, "resource_id", event.resource_id)
    _set(clone, "event_type", event.event_type)
    _set(clone, "id", event.id)
    _set(clone, "operation_id", event.operation_id)
    changes = event.changes
    _set(clone, "changes", [_copy_change(c) for c in changes] if changes else [])
    meta = event.meta_data
    _set(clone, "meta_data", copy_json(meta) if meta else {})
    _set(clone, "created_at", event.created_at)
    return clone


class EventLog:
    """The most recent ``retention`` events, in emission order, indexed by operation id.

    Every read hands out copies, so a reader cannot change the history. The stored event is the
    one the subscribers were given (a copy per event cost ~8 % CPU per dispatched operation):
    a subscriber must not change its event.
    """

    def __init__(self, retention: int | None = 10_000) -> None:
        if retention is not None and retention < 1:
            raise ValueError("retention must be >= 1 or None")
        self._retention = retention
        self._seq = 0  # events committed so far (the EventStore's sequence number)
        self._events: deque[DispatchEvent] = deque()
        self._by_operation: dict[UUID, DispatchEvent | list[DispatchEvent]] = {}

    @property
    def retention(self) -> int | None:
        return self._retention

    # ---- the EventStore protocol (see store.py): the in-memory store keeps events only
    durable = False

    def commit(
        self,
        operations: Iterable[Operation],
        events: list[DispatchEvent],
        retry: Any,
        paused: bool | None,
    ) -> int:
        """Keep a unit's events; operations, retry state and the pause flag live in memory.

        Returns the number of the first event (they are counted from 1 in this process)."""
        first = self._seq + 1
        self._seq += len(events)
        for event in events:
            self.append(event)
        return first

    @property
    def last_seq(self) -> int:
        return self._seq

    def find_operation(self, operation_id: UUID) -> Operation | None:
        """Nothing beyond the queue's own memory: without a journal, forgotten means gone."""
        return None

    def knows(self, operation_id: UUID) -> bool:
        return False

    def append(self, event: DispatchEvent) -> None:
        self._events.append(event)
        op_id = event.operation_id
        if op_id is not None:
            # one event is kept as itself, more in a list: a deque per operation (~620 B even
            # when empty) was the largest cost of a queued operation
            # (setdefault: one UUID hash, a Python call, instead of a get and a set)
            known = self._by_operation.setdefault(op_id, event)
            if known is event:
                pass
            elif isinstance(known, list):
                known.append(event)
            else:
                self._by_operation[op_id] = [known, event]
        if self._retention is not None and len(self._events) > self._retention:
            self._evict(self._events.popleft())

    def _evict(self, old: DispatchEvent) -> None:
        """Drop the oldest retained event from its operation's index (it is that one's oldest)."""
        op_id = old.operation_id
        if op_id is None:
            return
        known = self._by_operation.get(op_id)
        if not isinstance(known, list):
            self._by_operation.pop(op_id, None)  # its only event
        elif len(known) == 2:
            self._by_operation[op_id] = known[1]  # one left: kept as itself again
        else:
            del known[0]  # O(events of this operation), which are few

    def for_operation(self, operation_id: UUID) -> list[DispatchEvent]:
        """Snapshots of the retained events of one operation, oldest first."""
        known = self._by_operation.get(operation_id)
        if known is None:
            return []
        if not isinstance(known, list):
            return [copy_event(known)]
        return [copy_event(e) for e in known]

    def select(
        self,
        from_time: datetime | None = None,
        to_time: datetime | None = None,
        limit: int | None = None,
    ) -> list[DispatchEvent]:
        """Snapshots of the events with from_time <= created_at <= to_time, the most recent
        ``limit`` of them."""
        if limit is not None and limit <= 0:
            return []
        window = TimeWindow(start=from_time, end=to_time)
        if window.start is None and window.end is None:
            events: Iterable[DispatchEvent] = self._events
        else:
            events = [e for e in self._events if window.contains(e.created_at)]
        selected = list(events)
        if limit is not None:
            selected = selected[-limit:]
        return [copy_event(e) for e in selected]

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Any:
        return iter([copy_event(e) for e in self._events])


def build_history(
    resource_id: str,
    events: list[DispatchEvent],
    from_time: datetime | None,
    to_time: datetime | None,
    resolve: Callable[[UUID], Operation | None] | None,
) -> History:
    """A History of ``events``; with ``resolve``, the operations they name (unknown ones skipped)."""
    operations: list[Operation] | None = None
    if resolve is not None:
        operations = []
        seen: set[UUID] = set()
        for event in events:
            op_id = event.operation_id
            if op_id is None or op_id in seen:
                continue
            seen.add(op_id)
            op = resolve(op_id)
            if op is not None:
                operations.append(op)
    return History(
        resource_id=resource_id,
        window=TimeWindow(
            start=None if from_time is None else to_utc(from_time, "from_time"),
            end=None if to_time is None else to_utc(to_time, "to_time"),
        ),
        events=events,
        operations=operations,
    )


Interval = tuple[datetime, datetime]


def _intervals(
    events: list[DispatchEvent],
    opening: EventType,
    closing: EventType,
    start: datetime,
    end: datetime,
) -> list[Interval] | None:
    """Intervals between opening and closing events, clipped to [start, end].

    A closing event before any opening one means the interval was open since ``start``; an
    interval still open at the end runs to ``end``. None when there are no such events at all.
    """
    marks = sorted(
        (e for e in events if e.event_type in (opening, closing)), key=lambda e: e.created_at
    )
    if not marks:
        return None
    result: list[Interval] = []
    opened: datetime | None = start if marks[0].event_type is closing else None
    for event in marks:
        if event.event_type is opening:
            if opened is None:
                opened = event.created_at
        elif opened is not None:
            result.append((opened, event.created_at))
            opened = None
    if opened is not None:
        result.append((opened, end))
    clipped = [(max(a, start), min(b, end)) for a, b in result]
    return [(a, b) for a, b in clipped if b > a]


def _seconds(intervals: Iterable[Interval]) -> float:
    return sum((b - a).total_seconds() for a, b in intervals)


def _overlap(left: list[Interval], right: list[Interval]) -> list[Interval]:
    out = []
    for a1, b1 in left:
        for a2, b2 in right:
            a, b = max(a1, a2), min(b1, b2)
            if b > a:
                out.append((a, b))
    return out


class HistoryAnalyzer:
    """Key figures of a History: how long the dispatcher was up, and how long it really ran.

    ``get_report()`` returns the original's four keys. Unlike the original it does not crash
    without STARTED/STOPPED events (the figures are None), reports runtime == uptime when the
    dispatcher was never paused, and counts paused time only while the dispatcher was up.
    """

    def __init__(self, history: History) -> None:
        self.history = history

    def _bounds(self) -> tuple[datetime, datetime] | None:
        start, end = self.history.get_start(), self.history.get_end()
        if start is None or end is None:
            return None
        return start, end

    def uptime_intervals(self) -> list[Interval] | None:
        bounds = self._bounds()
        if bounds is None:
            return None
        return _intervals(
            self.history.events,
            EventType.OPERATION_DISPATCHER_STARTED,
            EventType.OPERATION_DISPATCHER_STOPPED,
            *bounds,
        )

    def dispatcher_uptime_seconds(self) -> float | None:
        intervals = self.uptime_intervals()
        return None if intervals is None else _seconds(intervals)

    def dispatcher_paused_seconds(self) -> float | None:
        """Paused time while the dispatcher was up (0 when it was never paused)."""
        uptime = self.uptime_intervals()
        bounds = self._bounds()
        if uptime is None or bounds is None:
            return None
        paused = _intervals(
            self.history.events,
            EventType.OPERATION_DISPATCHER_PAUSED,
            EventType.OPERATION_DISPATCHER_RESUMED,
            *bounds,
        )
        return 0.0 if paused is None else _seconds(_overlap(paused, uptime))

    def dispatcher_runtime_seconds(self) -> float | None:
        uptime = self.dispatcher_uptime_seconds()
        paused = self.dispatcher_paused_seconds()
        if uptime is None or paused is None:
            return None
        return uptime - paused

    def _percentage(self, seconds: float | None) -> float | None:
        duration = self.history.get_duration_seconds()
        if seconds is None or not duration:
            return None
        return seconds / duration * 100.0

    def operation_count(self) -> int:
        """Distinct operations the events refer to."""
        return len(self.history.get_operation_ids())

    def completed_operation_count(self) -> int:
        """Finished operations (succeeded, failed or cancelled)."""
        return len(self.history.get_completed_operations())

    def successful_operation_count(self) -> int:
        """Operations that completed with outcome SUCCESS."""
        if self.history.operations is not None:
            return sum(
                1
                for op in self.history.operations
                if op.state is ExecutionState.COMPLETED and op.outcome is ExecutionOutcome.SUCCESS
            )
        return len(
            {
                e.operation_id
                for e in self.history.events
                if e.event_type is EventType.OPERATION_COMPLETED and e.operation_id is not None
            }
        )

    def get_report(self) -> dict[str, float | None]:
        uptime = self.dispatcher_uptime_seconds()
        runtime = self.dispatcher_runtime_seconds()
        return {
            "dispatcher_uptime_seconds": uptime,
            "dispatcher_uptime_percentage": self._percentage(uptime),
            "dispatcher_runtime_seconds": runtime,
            "dispatcher_runtime_percentage": self._percentage(runtime),
        }


__all__ = ["EventLog", "HistoryAnalyzer", "build_history", "copy_event"]

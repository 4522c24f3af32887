"""The data the dispatcher works on: operations, events, history, and their JSON form.

Plain slotted dataclasses (no pydantic, so the core imports in a few milliseconds and an
operation costs a few hundred bytes). Every constructor validates and coerces its fields, so an
``Operation`` that exists is a valid one; a bad value raises :class:`ValidationError` naming the
field and the reason. Datetimes are always UTC (a naive datetime is taken to be UTC already),
ids are UUIDs, and ``to_dict()`` / ``from_dict()`` round-trip through JSON with ISO 8601 ``Z``
timestamps, the wire form of the asyncio original.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Self
from uuid import UUID

from . import _checks
from ._checks import (
    MAX_INT_DIGITS,
    MAX_NESTING,
    check_json_data,
    to_utc,
    to_uuid,
)
from ._checks import boolean as _boolean
from ._checks import integer as _check_int
from ._checks import json_object as _json_object
from ._checks import not_too_far as _not_too_far
from ._checks import optional_text as _check_opt_str
from ._checks import release_conditions as _release_conditions
from ._checks import seconds as _check_seconds
from ._checks import text as _text
from ._checks import to_enum as _to_enum
from .errors import ValidationError

# --------------------------------------------------------------------------------------- enums


class ExecutionState(StrEnum):
    """Where an operation is in its lifecycle. Failed and cancelled operations are COMPLETED."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"


class ExecutionOutcome(StrEnum):
    """How a COMPLETED operation ended; NONE while it has not."""

    NONE = "NONE"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELLED = "CANCELLED"


class TerminationReason(StrEnum):
    """Why an operation failed or was cancelled (the order is the original's, plus INTERRUPTED)."""

    NONE = "NONE"
    USER_REQUEST = "USER_REQUEST"
    TIMEOUT = "TIMEOUT"
    DEPENDENCY_FAILED = "DEPENDENCY_FAILED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    EXTERNAL_ERROR = "EXTERNAL_ERROR"
    INTERRUPTED = "INTERRUPTED"


class DependencyType(StrEnum):
    """FINISH_TO_START waits for the provider's success, START_TO_START for its start."""

    FINISH_TO_START = "FINISH_TO_START"
    START_TO_START = "START_TO_START"


class EventType(StrEnum):
    """Every event the dispatcher emits; the values are the original's wire strings."""

    OPERATION_DISPATCHER_STARTED = "operation_dispatcher_started"
    OPERATION_DISPATCHER_STOPPED = "operation_dispatcher_stopped"
    OPERATION_DISPATCHER_PAUSED = "operation_dispatcher_paused"
    OPERATION_DISPATCHER_RESUMED = "operation_dispatcher_resumed"
    OPERATION_START_REQUESTED = "operation_start_requested"
    OPERATION_START_DENIED = "operation_start_denied"
    OPERATION_CANCEL_REQUESTED = "operation_cancel_requested"
    OPERATION_CANCEL_DENIED = "operation_cancel_denied"
    OPERATION_PAUSE_REQUESTED = "operation_pause_requested"
    OPERATION_PAUSE_DENIED = "operation_pause_denied"
    OPERATION_RESUME_REQUESTED = "operation_resume_requested"
    OPERATION_RESUME_DENIED = "operation_resume_denied"
    OPERATION_ADDED = "operation_added"
    OPERATION_UPDATED = "operation_updated"
    OPERATION_STARTED = "operation_started"
    OPERATION_COMPLETED = "operation_completed"
    OPERATION_FAILED = "operation_failed"
    OPERATION_PAUSED = "operation_paused"
    OPERATION_RESUMED = "operation_resumed"
    OPERATION_CANCELLED = "operation_cancelled"
    #: how far the current operation has got (meta_data: fraction, message); rate-limited
    OPERATION_PROGRESS = "operation_progress"

    @property
    def is_request(self) -> bool:
        """True for the *_REQUESTED handshake events (recorded, but not notified)."""
        return self._value_.endswith("_requested")  # (not .value: a property, per event)

    @property
    def is_dispatcher_event(self) -> bool:
        """True for the dispatcher's own lifecycle events (no operation id)."""
        return self.value.startswith("operation_dispatcher_")


FINISHED_EVENT_TYPES = frozenset(
    {EventType.OPERATION_COMPLETED, EventType.OPERATION_FAILED, EventType.OPERATION_CANCELLED}
)

# ------------------------------------------------------------------------- coercion helpers


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


_id_random = random.Random(random.SystemRandom().getrandbits(64))  # seeded from the OS
os.register_at_fork(  # a forked child must not repeat its parent's ids
    after_in_child=lambda: _id_random.seed(random.SystemRandom().getrandbits(64))
)
_VERSION_4 = (0x4 << 76) | (0x2 << 62)
_VERSION_MASK = ~((0xF << 76) | (0x3 << 62))


def new_id() -> UUID:
    """A random (version 4) UUID.

    Drawn from a private ``random.Random`` seeded from the OS, rather than ``uuid4()``'s
    ``os.urandom`` system call per id: ids are not secrets, and the dispatcher makes several per
    operation. A forked child re-seeds, so processes do not repeat each other's ids.
    """
    return UUID(int=(_id_random.getrandbits(128) & _VERSION_MASK) | _VERSION_4)


def _opt_utc(value: Any, field_name: str) -> datetime | None:
    return None if value is None else to_utc(value, field_name)


def format_datetime(value: datetime) -> str:
    """ISO 8601 in UTC with a trailing ``Z``, the wire form of every timestamp."""
    text = to_utc(value, "datetime").isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def check_meta_data(value: Any, field_name: str) -> dict[str, Any] | None:
    """Meta data (and decision data) given to the dispatcher: None or a JSON object."""
    return _checks.meta_data(value, field_name)


def to_json_value(value: Any) -> Any:
    """Turn a model, enum, UUID, datetime or a container of them into plain JSON values."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, _Model):
        return value.to_dict()
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json_value(v) for v in value]
    return str(value)


def _shared_empty(*_: Any, **__: Any) -> Any:
    raise TypeError(
        "this empty container is shared by the dispatcher's events and operations and is "
        "read-only; copy it first (list(...) / dict(...)), or read a snapshot"
    )


class _SharedEmptyList(list[Any]):
    """The one read-only empty list that every event without changes (and every stored
    operation without dependencies) points to, instead of ~56 B of its own.

    It is a ``list``, so the documented field types hold; changing it raises TypeError, so no
    holder can change what all the others see. Copies (``copy``, ``pickle``, :func:`copy_json`,
    every snapshot) are plain empty lists.
    """

    __slots__ = ()
    append = extend = insert = remove = pop = clear = sort = reverse = _shared_empty
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _shared_empty

    def __new__(cls, *args: Any) -> Any:
        # type(x)(items) (dataclasses.asdict, a copy by type) makes a plain list
        return list(*args)

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (list, ())


class _SharedEmptyDict(dict[Any, Any]):
    """The read-only empty dict shared like :data:`EMPTY_LIST` (event meta_data, operation
    release_conditions); ~64 B saved per holder."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _shared_empty
    clear = pop = popitem = setdefault = update = _shared_empty

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        return dict(*args, **kwargs)  # as for the list: a plain dict

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (dict, ())


#: Shared, read-only empty containers for what the dispatcher stores (see the classes above).
EMPTY_LIST: list[Any] = list.__new__(_SharedEmptyList)
EMPTY_DICT: dict[str, Any] = dict.__new__(_SharedEmptyDict)


def copy_json(value: Any) -> Any:
    """Copy dicts and lists all the way down; scalars (and anything else) are shared.

    Used for snapshots: a caller who changes the payload of an operation it got back must not
    change the one inside the dispatcher. It is far cheaper than ``copy.deepcopy``. The shared
    read-only empties come back as plain (changeable) empty containers.
    """
    kind = type(value)
    if kind is dict:
        return {k: v if type(v) not in _CONTAINERS else copy_json(v) for k, v in value.items()}
    if kind is list:
        return [v if type(v) not in _CONTAINERS else copy_json(v) for v in value]
    if kind is _SharedEmptyDict:
        return {}
    if kind is _SharedEmptyList:
        return []
    return value


_CONTAINERS = (dict, list, _SharedEmptyDict, _SharedEmptyList)


# ------------------------------------------------------------------------------ base model


class _Model:
    """Shared JSON plumbing of every model: ``to_dict`` and a strict ``from_dict``."""

    __slots__ = ()
    _field_names_cache: ClassVar[tuple[str, ...]]

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        names = cls.__dict__.get("_field_names_cache")
        if names is None:
            names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
            cls._field_names_cache = names
        return names

    def to_dict(self) -> dict[str, Any]:
        """A dict of plain JSON values (UUIDs and enums as strings, ISO 8601 ``Z`` times)."""
        return {name: to_json_value(getattr(self, name)) for name in self._names()}

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        """Build from a JSON dict; unknown, missing or mistyped fields raise ValidationError."""
        label = cls.__name__
        if not isinstance(data, dict):
            raise ValidationError(label, f"must be an object, got {type(data).__name__}")
        names = cls._names()
        unknown = sorted(k for k in data if k not in names)
        if unknown:
            raise ValidationError(
                str(unknown[0]), f"is not a field of {label} (fields: {', '.join(names)})"
            )
        missing = sorted(
            f.name
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
            and f.name not in data
        )
        if missing:
            raise ValidationError(missing[0], f"is required in {label}")
        return cls(**data)


# ----------------------------------------------------------------------------------- models


@dataclass(slots=True, kw_only=True, frozen=True)
class OperationDependency(_Model):
    """Makes the owning operation wait for another one (the provider)."""

    depends_on_operation_id: UUID
    dependency_type: DependencyType
    id: UUID = field(default_factory=new_id)
    created_at: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        setter = object.__setattr__
        setter(self, "id", to_uuid(self.id, "dependencies.id"))
        setter(
            self,
            "depends_on_operation_id",
            to_uuid(self.depends_on_operation_id, "dependencies.depends_on_operation_id"),
        )
        setter(
            self,
            "dependency_type",
            _to_enum(self.dependency_type, DependencyType, "dependencies.dependency_type"),
        )
        setter(self, "created_at", to_utc(self.created_at, "dependencies.created_at"))


def _to_dependency(value: Any) -> OperationDependency:
    if isinstance(value, OperationDependency):
        return value
    if isinstance(value, dict):
        return OperationDependency.from_dict(value)
    raise ValidationError(
        "dependencies", f"items must be dependency objects, got {type(value).__name__}"
    )


@dataclass(slots=True, kw_only=True, frozen=True)
class OperationProgress(_Model):
    """How far a started operation has got, as its executor last reported it.

    ``fraction`` is 0..1 (None: not known), ``message`` a short text for people (at most
    :data:`~._checks.MAX_PROGRESS_MESSAGE` characters), ``updated_at`` when it was reported.
    """

    fraction: float | None = None
    message: str | None = None
    updated_at: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        setter = object.__setattr__
        setter(self, "fraction", _checks.progress_fraction(self.fraction, "progress.fraction"))
        setter(self, "message", _checks.progress_message(self.message, "progress.message"))
        setter(self, "updated_at", to_utc(self.updated_at, "progress.updated_at"))


def _to_progress(value: Any) -> OperationProgress:
    if isinstance(value, OperationProgress):
        return value
    if isinstance(value, dict):
        return OperationProgress.from_dict(value)
    raise ValidationError(
        "progress", f"must be a progress object or None, got {type(value).__name__}"
    )


@dataclass(slots=True, kw_only=True, eq=True)
class Operation(_Model):
    """One piece of work for the resource: what to do (payload), when, and how it went.

    Only ``resource_id`` is required. ``planned_duration`` and ``timeout_seconds`` are in
    seconds. ``release_conditions`` maps signal names to the values they must have (and be
    fresh) before the operation may start.

    >>> op = Operation(resource_id="robot-1", payload={"task": "pickup"}, priority=10)
    """

    id: UUID = field(default_factory=new_id)
    job_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    resource_id: str
    priority: int = 0
    release_date: datetime | None = None
    planned_duration: float | None = None
    due_date: datetime | None = None
    dependencies: list[OperationDependency] = field(default_factory=list)
    state: ExecutionState = ExecutionState.QUEUED
    outcome: ExecutionOutcome = ExecutionOutcome.NONE
    termination_reason: TerminationReason = TerminationReason.NONE
    retry_count: int = 0
    start_time: datetime | None = None
    finish_time: datetime | None = None
    created_at: datetime = field(default_factory=utcnow)
    release_conditions: dict[str, Any] = field(default_factory=dict)
    timeout_seconds: float | None = None
    #: the last progress report (``report_progress``); None until one arrives
    progress: OperationProgress | None = None

    def __post_init__(self) -> None:
        self.id = to_uuid(self.id, "id")
        self.job_id = _check_opt_str(self.job_id, "job_id")
        self.payload = _json_object(self.payload, "payload")
        _text(self.resource_id, "resource_id")
        self.priority = _check_int(self.priority, "priority")
        if self.release_date is not None:
            self.release_date = _not_too_far(to_utc(self.release_date, "release_date"),
                                             "release_date")
        if self.planned_duration is not None:
            _check_seconds(self.planned_duration, "planned_duration")
        self.due_date = _opt_utc(self.due_date, "due_date")
        deps = self.dependencies
        if type(deps) is not list:
            if not isinstance(deps, list | tuple):
                raise ValidationError(
                    "dependencies", f"must be a list, got {type(deps).__name__}"
                )
            deps = list(deps)
        if deps:
            deps = [_to_dependency(d) for d in deps]
            for dep in deps:
                if dep.depends_on_operation_id == self.id:
                    raise ValidationError(
                        "dependencies", f"operation {self.id} cannot depend on itself"
                    )
        self.dependencies = deps
        self.state = _to_enum(self.state, ExecutionState, "state")
        self.outcome = _to_enum(self.outcome, ExecutionOutcome, "outcome")
        self.termination_reason = _to_enum(
            self.termination_reason, TerminationReason, "termination_reason"
        )
        self.retry_count = _check_int(self.retry_count, "retry_count", 0)
        self.start_time = _opt_utc(self.start_time, "start_time")
        self.finish_time = _opt_utc(self.finish_time, "finish_time")
        self.created_at = to_utc(self.created_at, "created_at")
        conditions = self.release_conditions
        if type(conditions) is not dict or conditions:
            conditions = _release_conditions(conditions, "release_conditions")
        self.release_conditions = conditions
        if self.timeout_seconds is not None:
            _check_seconds(self.timeout_seconds, "timeout_seconds")
        if self.progress is not None:
            self.progress = _to_progress(self.progress)
        # cross-field rules
        if (
            self.release_date is not None
            and self.due_date is not None
            and self.due_date <= self.release_date
        ):
            raise ValidationError("due_date", "must be after release_date")
        if (
            self.start_time is not None
            and self.finish_time is not None
            and self.finish_time < self.start_time
        ):
            raise ValidationError("finish_time", "must be after start_time")
        if self.state in (ExecutionState.RUNNING, ExecutionState.PAUSED) and self.start_time is None:
            raise ValidationError("start_time", f"is required while the operation is {self.state}")
        if self.progress is not None and self.state is ExecutionState.QUEUED:
            raise ValidationError("progress", "is reported only once the operation has started")

    def copy(self) -> Operation:
        """An independent snapshot: changing it (payload included) changes nothing here."""
        return _copy_operation(self)

    @property
    def is_finished(self) -> bool:
        """True once the operation is COMPLETED (succeeded, failed or cancelled)."""
        return self.state is ExecutionState.COMPLETED



def _build_operation_copier(shared_empties: bool = False) -> Callable[[Operation], Operation]:
    """Generate ``copy()`` as straight-line code, one assignment per field.

    Snapshots are taken on every read and several times per operation, so they must be cheap:
    generated code (as ``dataclasses`` itself generates ``__init__``) runs about three times
    faster than a loop over the field names, and skips re-validation of known-good values.
    ``shared_empties``: empty dependencies and release conditions become the shared read-only
    :data:`EMPTY_LIST` / :data:`EMPTY_DICT` (for the copy the dispatcher stores, never for one it
    hands out).
    """
    deep = {
        "payload": "_copy_json(self.payload)",
        "dependencies": "list(self.dependencies)",
        "release_conditions": "_copy_json(self.release_conditions)",
    }
    if shared_empties:
        deep["dependencies"] = "list(self.dependencies) if self.dependencies else _EMPTY_LIST"
        deep["release_conditions"] = (
            "_copy_json(self.release_conditions) if self.release_conditions else _EMPTY_DICT"
        )
    lines = ["def copy_operation(self):", "    clone = _new(_Operation)"]
    for f in dataclasses.fields(Operation):
        lines.append(f"    clone.{f.name} = {deep.get(f.name, f'self.{f.name}')}")
    lines.append("    return clone")
    namespace: dict[str, Any] = {
        "_new": object.__new__, "_Operation": Operation, "_copy_json": copy_json,
        "_EMPTY_LIST": EMPTY_LIST, "_EMPTY_DICT": EMPTY_DICT,
    }
    exec("\n".join(lines), namespace)  # noqa: S102 - fixed text built from our own field names
    return namespace["copy_operation"]


_copy_operation = _build_operation_copier()
#: The copy the dispatcher keeps of an operation it is given: like ``copy()``, but sharing the
#: read-only empties (~120 B saved per queued operation without dependencies or conditions).
stored_copy = _build_operation_copier(shared_empties=True)

#: Fields a caller may change with ``update_operation`` (the state machine owns the rest).
UPDATABLE_FIELDS = frozenset(
    {
        "payload",
        "priority",
        "release_date",
        "planned_duration",
        "due_date",
        "dependencies",
        "release_conditions",
        "timeout_seconds",
    }
)
#: Fields that only lifecycle transitions may change; updating them is refused with a reason.
LIFECYCLE_FIELDS = frozenset(
    {"state", "outcome", "termination_reason", "start_time", "finish_time", "retry_count"}
)


@dataclass(slots=True, kw_only=True, frozen=True)
class ChangeRecord(_Model):
    """One field of an operation that an event changed, with its value before and after."""

    field: str
    old_value: Any = None
    new_value: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.field, str) or not self.field:
            raise ValidationError("field", "must be a non-empty field name")


def change_record(field_name: str, old_value: Any, new_value: Any) -> ChangeRecord:
    """A ChangeRecord built without re-validation, for the dispatcher's own hot paths."""
    record = object.__new__(ChangeRecord)
    object.__setattr__(record, "field", field_name)
    object.__setattr__(record, "old_value", old_value)
    object.__setattr__(record, "new_value", new_value)
    return record


@dataclass(slots=True, kw_only=True, frozen=True)
class DispatchEvent(_Model):
    """Something that happened to the dispatcher or to one of its operations."""

    resource_id: str
    event_type: EventType
    id: UUID = field(default_factory=new_id)
    operation_id: UUID | None = None
    changes: list[ChangeRecord] = field(default_factory=list)
    meta_data: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        setter = object.__setattr__
        _text(self.resource_id, "resource_id")
        setter(self, "event_type", _to_enum(self.event_type, EventType, "event_type"))
        setter(self, "id", to_uuid(self.id, "id"))
        if self.operation_id is not None:
            setter(self, "operation_id", to_uuid(self.operation_id, "operation_id"))
        changes = self.changes
        if not isinstance(changes, list | tuple):
            raise ValidationError("changes", f"must be a list, got {type(changes).__name__}")
        if changes and not all(type(c) is ChangeRecord for c in changes):
            changes = [c if isinstance(c, ChangeRecord) else ChangeRecord.from_dict(c)
                       for c in changes]
        setter(self, "changes", list(changes) if type(changes) is not list else changes)
        setter(self, "meta_data", _json_object(self.meta_data, "meta_data"))
        setter(self, "created_at", to_utc(self.created_at, "created_at"))

    @classmethod
    def trusted(
        cls,
        resource_id: str,
        event_type: EventType,
        operation_id: UUID | None,
        changes: list[ChangeRecord],
        meta_data: dict[str, Any],
        id: UUID | None = None,
        created_at: datetime | None = None,
    ) -> DispatchEvent:
        """An event from values the dispatcher built itself: no re-validation (hot path)."""
        event = object.__new__(cls)
        setter = object.__setattr__
        setter(event, "resource_id", resource_id)
        setter(event, "event_type", event_type)
        setter(event, "id", new_id() if id is None else id)
        setter(event, "operation_id", operation_id)
        setter(event, "changes", changes)
        setter(event, "meta_data", meta_data)
        setter(event, "created_at", utcnow() if created_at is None else created_at)
        return event


@dataclass(slots=True, kw_only=True, frozen=True)
class TimeWindow(_Model):
    """An optional [start, end] range of time; either end may be open (None)."""

    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _opt_utc(self.start, "start"))
        object.__setattr__(self, "end", _opt_utc(self.end, "end"))
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValidationError("end", "must be after start")

    def contains(self, moment: datetime) -> bool:
        """True if ``moment`` lies inside the window (both bounds inclusive)."""
        return (self.start is None or moment >= self.start) and (
            self.end is None or moment <= self.end
        )


@dataclass(slots=True, kw_only=True)
class History(_Model):
    """The events of a time window and, when resolved, the operations they refer to."""

    resource_id: str
    window: TimeWindow = field(default_factory=TimeWindow)
    events: list[DispatchEvent] = field(default_factory=list)
    operations: list[Operation] | None = None
    created_at: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        _text(self.resource_id, "resource_id")
        if isinstance(self.window, dict):
            self.window = TimeWindow.from_dict(self.window)
        elif not isinstance(self.window, TimeWindow):
            raise ValidationError("window", "must be a TimeWindow")
        if not isinstance(self.events, list):
            raise ValidationError("events", "must be a list")
        self.events = [e if isinstance(e, DispatchEvent) else DispatchEvent.from_dict(e)
                       for e in self.events]
        self.created_at = to_utc(self.created_at, "created_at")
        if self.operations is None:
            return
        if not isinstance(self.operations, list):
            raise ValidationError("operations", "must be a list or null")
        self.operations = [o if isinstance(o, Operation) else Operation.from_dict(o)
                           for o in self.operations]
        referenced = self.get_operation_ids()
        seen: set[UUID] = set()
        for op in self.operations:
            if op.id in seen:
                raise ValidationError("operations", f"lists operation {op.id} twice")
            seen.add(op.id)
            if op.id not in referenced:
                raise ValidationError(
                    "operations", f"operation with id {op.id} is not referenced by any event"
                )

    def get_start(self) -> datetime | None:
        """The window's start, else the earliest event's time."""
        if self.window.start is not None:
            return self.window.start
        return min((e.created_at for e in self.events), default=None)

    def get_end(self) -> datetime | None:
        """The window's end, else the latest event's time."""
        if self.window.end is not None:
            return self.window.end
        return max((e.created_at for e in self.events), default=None)

    def get_duration_seconds(self) -> float | None:
        """Length of the history in seconds, or None when it has no start or end."""
        start, end = self.get_start(), self.get_end()
        if start is None or end is None:
            return None
        return (end - start).total_seconds()

    def get_operation_ids(self) -> set[UUID]:
        """Ids of every operation the events refer to."""
        return {e.operation_id for e in self.events if e.operation_id is not None}

    def get_completed_operations(self) -> list[UUID]:
        """Ids of the finished operations (each once), from the operations or the events."""
        if self.operations is not None:
            return [op.id for op in self.operations if op.state is ExecutionState.COMPLETED]
        seen: dict[UUID, None] = {}
        for event in self.events:
            if event.event_type in FINISHED_EVENT_TYPES and event.operation_id is not None:
                seen.setdefault(event.operation_id)
        return list(seen)


@dataclass(slots=True, kw_only=True)
class OperationDispatcherState(_Model):
    """A snapshot of the dispatcher as a whole, as ``get_state()`` and ``GET /dispatcher`` see it."""

    resource_id: str
    is_running: bool = False
    is_paused: bool = False
    queue_size: int = 0
    current_operation: Operation | None = None
    running_since: datetime | None = None
    uptime_seconds: float | None = None

    def __post_init__(self) -> None:
        _text(self.resource_id, "resource_id")
        if isinstance(self.current_operation, dict):
            self.current_operation = Operation.from_dict(self.current_operation)
        elif self.current_operation is not None and not isinstance(
            self.current_operation, Operation
        ):
            raise ValidationError(
                "current_operation",
                f"must be an Operation or null, got {type(self.current_operation).__name__}",
            )
        self.running_since = _opt_utc(self.running_since, "running_since")
        _boolean(self.is_running, "is_running")
        _boolean(self.is_paused, "is_paused")
        self.queue_size = _check_int(self.queue_size, "queue_size", 0)
        uptime = self.uptime_seconds
        if uptime is not None and (type(uptime) not in (int, float) or not uptime >= 0):
            raise ValidationError("uptime_seconds", "must be a number >= 0 or null")


#: the outcome each finishing event type gives, unless its changes say otherwise
FINISHED_OUTCOMES: dict[EventType, ExecutionOutcome] = {
    EventType.OPERATION_COMPLETED: ExecutionOutcome.SUCCESS,
    EventType.OPERATION_FAILED: ExecutionOutcome.FAILURE,
    EventType.OPERATION_CANCELLED: ExecutionOutcome.CANCELLED,
}


def finished_outcome(event: DispatchEvent) -> tuple[str, str]:
    """The outcome and termination reason a finishing event set, as their wire strings (its
    changes say; the event type gives the outcome when they do not)."""
    outcome = FINISHED_OUTCOMES.get(event.event_type, ExecutionOutcome.NONE).value
    reason = TerminationReason.NONE.value
    for change in event.changes:
        if change.field == "outcome":
            outcome = str(change.new_value)
        elif change.field == "termination_reason":
            reason = str(change.new_value)
    return outcome, reason


__all__ = [
    "FINISHED_OUTCOMES",
    "ChangeRecord",
    "DependencyType",
    "DispatchEvent",
    "finished_outcome",
    "EventType",
    "ExecutionOutcome",
    "ExecutionState",
    "History",
    "LIFECYCLE_FIELDS",
    "Operation",
    "OperationDependency",
    "OperationDispatcherState",
    "OperationProgress",
    "TerminationReason",
    "TimeWindow",
    "MAX_INT_DIGITS",
    "MAX_NESTING",
    "UPDATABLE_FIELDS",
    "check_json_data",
    "check_meta_data",
    "copy_json",
    "format_datetime",
    "to_json_value",
    "to_utc",
    "to_uuid",
    "utcnow",
]

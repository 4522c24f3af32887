"""The pydantic models of the REST API: one definition per shape, used twice.

flask-openapi3 validates every request against these models and builds ``/openapi.json`` from
the very same classes, so the documentation cannot drift from what the server accepts. Responses
are produced by the core models' ``to_dict()`` (the wire form of the original); the response
models here describe that form, and a test checks that they list the same fields.

Each request model knows how to explain its own validation errors in the original's error
envelope (``code`` per field, a message naming the field): see :meth:`RequestModel.describe`.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, NamedTuple, get_type_hints
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    create_model,
    model_validator,
)
from pydantic_core import ErrorDetails

from .. import _checks
from .._checks import MAX_RELEASE_AHEAD as MAX_RELEASE_AHEAD  # re-exported: the HTTP limits
from .._checks import MAX_SECONDS
from ..errors import ValidationError
from ..models import (
    LIFECYCLE_FIELDS,
    UPDATABLE_FIELDS,
    DependencyType,
    EventType,
    ExecutionOutcome,
    ExecutionState,
    TerminationReason,
)
from ..models import Operation as CoreOperation
from ..models import OperationDependency as CoreDependency
from .reason_schemas import BlockerDetail

#: Operations accepted by one ``POST /operations/add``.
MAX_OPERATIONS_PER_ADD = 1000
_PLUS_AS_SPACE = re.compile(r"^(\S+T\d\d:\d\d(?::\d\d(?:\.\d+)?)?) (\d\d:?\d\d)$")
_NUMBER_TEXT = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


# ------------------------------------------------------------------------------ field types


def _iso_text_only(value: Any) -> Any:
    """Accept ISO 8601 text (or a datetime), not pydantic's lenient Unix timestamps."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or _NUMBER_TEXT.match(value):
        raise ValueError("must be an ISO 8601 datetime with a timezone, e.g. 2026-01-31T08:00:00Z")
    # An unencoded "+02:00" in a query string arrives as " 02:00": take it as meant.
    return _PLUS_AS_SPACE.sub(r"\1+\2", value)


def core(check: Callable[..., Any], **options: Any) -> Callable[[Any, ValidationInfo], Any]:
    """A pydantic validator running one of the core's checks (None passes: optional fields).

    The core raises its ValidationError (a ValueError): pydantic reports it as ``value_error``
    with the exception in ``ctx``, and :func:`describe_error` shows its ``reason``.
    """

    def validate(value: Any, info: ValidationInfo) -> Any:
        return value if value is None else check(value, info.field_name or "value", **options)

    return validate


#: An ISO 8601 datetime with an explicit offset (``Z`` or ``+02:00``); naive ones are refused.
Timestamp = Annotated[
    AwareDatetime, BeforeValidator(_iso_text_only), AfterValidator(core(_checks.to_utc))
]
#: A release date: at most :data:`~operation_dispatcher._checks.MAX_RELEASE_AHEAD` ahead.
ReleaseDate = Annotated[Timestamp, AfterValidator(core(_checks.not_too_far))]
#: Seconds, as the core counts them: > 0, finite, <= MAX_SECONDS (JSON Schema shows the bounds).
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS, allow_inf_nan=False, strict=True)]
#: The wire form is narrower than Python's ints on purpose: JSON Schema's int64, which every
#: client language can hold (the core itself refuses only integers it cannot print).
Priority = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]
JsonObject = dict[str, Any]
SignalName = Annotated[str, Field(min_length=1, max_length=200)]


def _decoded_path(value: str) -> str:
    """werkzeug turns bytes of a URL that are not UTF-8 into U+FFFD: refuse, never store."""
    if "\ufffd" in value:
        raise ValueError("is not valid UTF-8 once percent-decoded")
    return value


PathName = Annotated[SignalName, AfterValidator(_decoded_path)]


# ------------------------------------------------------------------------- request models


class ErrorRule(NamedTuple):
    """How one kind of validation error reads in the envelope (a row of ``error_rules``).

    ``message`` may name ``{field}`` and ``{input!r}``; without one, the message is the rule the
    value broke, from pydantic's error ``type`` and ``ctx`` (:func:`describe_error`).
    ``details`` are added to the envelope's, before the ``field``.
    """

    code: str
    message: str | None = None
    details: dict[str, Any] | None = None


class Described:
    """Explains a model's validation errors in the original's envelope, from one table.

    ``error_rules`` maps (top-level field, pydantic error ``type``) to an :class:`ErrorRule`;
    the field ``""`` is the body itself and the type ``"*"`` any type. An error no row claims
    gets ``error_code`` and the rule it broke. The first error is the one told: pydantic reports
    them in the fields' order (unknown fields last), which is the original's order of checks.
    """

    error_code: ClassVar[str] = "invalid_request"
    error_rules: ClassVar[dict[tuple[str, str], ErrorRule]] = {}

    @classmethod
    def describe(cls, errors: Sequence[ErrorDetails]) -> tuple[str, str, dict[str, Any]]:
        """(code, message, details) for the first of pydantic's ``errors``."""
        return cls.explain(errors[0], tuple(errors[0]["loc"]))

    @classmethod
    def explain(
        cls, error: ErrorDetails, loc: tuple[Any, ...]
    ) -> tuple[str, str, dict[str, Any]]:
        """(code, message, details) for ``error`` at ``loc`` (relative to this model)."""
        name, field, rules = str(loc[0]) if loc else "", field_path(loc), cls.error_rules
        rule = rules.get((name, error["type"])) or rules.get((name, "*")) or ErrorRule(cls.error_code)
        if rule.message is None:
            message = describe_error(field, error)
        else:
            message = rule.message.format(field=field, input=error.get("input"))
        return rule.code, message, {**(rule.details or {}), **({"field": field} if field else {})}


class RequestModel(Described, BaseModel):
    """Base of every request model: unknown fields are errors, and errors speak the envelope."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The model's JSON Schema; called with no arguments, one shared copy per model.

        flask-openapi3 (4.x, ``request._validate_query``) calls ``model_json_schema()`` on every
        request to a route with a query model, only to see which fields are lists: that was
        0.24-0.42 ms, 1,100-2,200 Python calls and ~15 KB of short-lived objects per request,
        more than the view's own work. The schema of a class never changes, so the no-argument
        call is answered from a cache (one dict per model class). It is shared: read it, do not
        change it. Calls with arguments (the OpenAPI document's, with its ``ref_template``) are
        generated as before.
        """
        if args or kwargs:
            return super().model_json_schema(*args, **kwargs)
        return _default_json_schema(cls)


@functools.cache
def _default_json_schema(model: type[RequestModel]) -> dict[str, Any]:
    """pydantic's ``model_json_schema()`` of ``model``, generated once (bounded: one per class)."""
    return super(RequestModel, model).model_json_schema()


class OptionalBody(RequestModel):
    """A body that may be left out: no body (or ``null``) means the defaults."""

    @model_validator(mode="before")
    @classmethod
    def _none_is_empty(cls, data: Any) -> Any:
        return {} if data is None else data


class OperationPath(RequestModel):
    operation_id: UUID = Field(description="the operation's id (a UUID)")
    error_code: ClassVar[str] = "invalid_operation_id"
    error_rules: ClassVar[dict[tuple[str, str], ErrorRule]] = {
        ("operation_id", "*"): ErrorRule(
            "invalid_operation_id",
            "operation_id must be a UUID (badly formed hexadecimal UUID string: {input!r})",
        ),
    }


class RequestPath(RequestModel):
    request_id: UUID = Field(description="the request id (the id of the *_REQUESTED event)")
    error_code: ClassVar[str] = "invalid_request_id"
    error_rules: ClassVar[dict[tuple[str, str], ErrorRule]] = {
        ("request_id", "*"): ErrorRule(
            "invalid_request_id", "request_id must be a UUID, got {input!r}"
        ),
    }


class SignalPath(RequestModel):
    name: PathName = Field(description="the signal's name, e.g. plc.ready")
    error_code: ClassVar[str] = "invalid_signal_name"


class BridgePath(RequestModel):
    name: PathName = Field(description="the bridge's name, e.g. plc")
    error_code: ClassVar[str] = "invalid_bridge_name"


ListableState = Literal["QUEUED", "RUNNING", "PAUSED"]
VALID_LIST_STATES = sorted(ListableState.__args__)  # type: ignore[attr-defined]


class ListOperationsQuery(RequestModel):
    state: ListableState | None = Field(
        None, description="only operations in this state (QUEUED, RUNNING or PAUSED)"
    )
    error_rules: ClassVar[dict[tuple[str, str], ErrorRule]] = {
        ("state", "*"): ErrorRule(
            "invalid_state", "invalid state {input!r}", {"valid_states": VALID_LIST_STATES}
        ),
    }


_TIME_TEXT = (
    "{field} must be a valid ISO-8601 datetime with a timezone, e.g. 2026-01-31T08:00:00Z "
    "(got {input!r})"
)


class HistoryQuery(RequestModel):
    limit: int = Field(50, ge=1, le=1000, description="the most recent N events (1..1000)")
    from_time: Timestamp | None = Field(None, description="ISO 8601 with offset, inclusive")
    to_time: Timestamp | None = Field(None, description="ISO 8601 with offset, inclusive")
    resolve_operations: bool = Field(True, description="include the operations the events name")
    error_rules: ClassVar[dict[tuple[str, str], ErrorRule]] = {
        ("limit", "greater_than_equal"): ErrorRule("invalid_limit", "limit must be greater than 0"),
        ("limit", "less_than_equal"): ErrorRule(
            "invalid_limit", "limit must be less than or equal to 1000"
        ),
        ("limit", "*"): ErrorRule("invalid_limit", "limit must be an integer"),
        ("from_time", "*"): ErrorRule("invalid_from_time", _TIME_TEXT),
        ("to_time", "*"): ErrorRule("invalid_to_time", _TIME_TEXT),
        ("resolve_operations", "*"): ErrorRule(
            "invalid_resolve_operations", "resolve_operations must be a boolean"
        ),
    }


#: What ``include`` may ask ``/events/stream`` for besides the events (see ``http/live.py``).
LIVE_KINDS = ("requests", "signals", "bridges")


class EventStreamQuery(RequestModel):
    include_requests: bool = Field(
        False, description="also stream the *_REQUESTED events (the approval handshake)"
    )
    #: read as a string, kept as the set of its words (a 400 shows the value once: got=False)
    include: Annotated[
        str, AfterValidator(core(_checks.word_set, choices=LIVE_KINDS, got=False))
    ] = Field(
        "", max_length=200, validate_default=True,
        json_schema_extra={"example": "requests,signals,bridges"},
        description=(
            "also stream the state that has no event, as comma-separated words: `requests` "
            "(`event: request_opened` when a request waits for an answer), `signals` "
            "(`event: signal`, at most one per signal per 0.5 s, the latest value; "
            "`event: signals_resync` when too many changed at once) and `bridges` "
            "(`event: bridge` when a bridge goes online or offline)"
        ),
    )


# ------------------------------------------------------------ derived from the core models
#
# The operation fields a client sends are not restated here: :func:`derived` reads them, in the
# core's order, with the core's defaults, from the core dataclasses, and gives each the wire
# form of its declared type. A field added to ``Operation`` and to ``UPDATABLE_FIELDS`` is on
# the wire (and in ``/openapi.json``) at once; a type with no wire form stops the import.

MAX_DEPENDENCIES = 1000
#: The wire type of each type the core's dataclasses declare: the core's rules and limits, and
#: what the wire needs on top (no coercion, an offset on every datetime, JSON Schema's int64).
#: The core's enums (and lists of its dataclasses, see below) are added as they are derived.
WIRE_TYPES: dict[Any, Any] = {
    str | None: StrictStr | None,
    int: Priority,
    float | None: Seconds | None,
    datetime | None: Timestamp | None,
    dict[str, Any]: JsonObject,
    UUID: UUID,
}
#: Fields whose core check is narrower than their declared type's (``Operation.__post_init__``
#: runs ``not_too_far`` on the release date and ``release_conditions`` on the conditions).
FIELD_TYPES: dict[str, Any] = {
    "release_date": ReleaseDate | None,
    "release_conditions": dict[SignalName, Any],
}
#: What a client may set when adding an operation: what it may update, and the job id.
ADDABLE_FIELDS = UPDATABLE_FIELDS | {"job_id"}
#: Required over HTTP though the core has a default: the original refuses an operation without.
REQUIRED_ON_ADD = frozenset({"payload"})
#: The documentation of the fields of ``POST /operations/add``.
DESCRIPTIONS = {
    "payload": "what to do; any JSON object",
    "priority": "higher is more urgent under the default order",
    "release_date": "earliest start",
    "planned_duration": "seconds (informational)",
    "due_date": "informational",
    "release_conditions": "signal name -> required value",
    "timeout_seconds": "fail the operation with TIMEOUT if it runs longer",
}


def wire_type(core_class: type, name: str, hint: Any) -> Any:
    """The wire type of the field ``name`` that ``core_class`` declares as ``hint``."""
    if name in FIELD_TYPES:
        return FIELD_TYPES[name]
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        return hint  # the core's enums are the wire's: their values are the JSON strings
    if hint not in WIRE_TYPES:
        raise TypeError(f"{core_class.__name__}.{name}: no wire type for {hint!r} (WIRE_TYPES)")
    return WIRE_TYPES[hint]


def derived(
    name: str, core_class: type, names: Collection[str], *, doc: str | None = None,
    base: type[RequestModel] = RequestModel, partial: bool = False,
    required: Collection[str] = (), descriptions: Mapping[str, str] | None = None,
) -> type[RequestModel]:
    """A request model ``name`` with the fields ``names`` of the core dataclass ``core_class``.

    ``partial``: every field may be left out (an update); only an optional one may be null.
    ``required``: fields the wire requires though the core has a default.
    """
    hints = get_type_hints(core_class)
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(core_class):
        if field.name not in names:
            continue
        info: dict[str, Any] = {}
        if partial:
            info["default"] = None  # never validated: leaving a field out is not setting it
        elif field.name in required:
            pass
        elif field.default is not dataclasses.MISSING:
            info["default"] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            info["default_factory"] = field.default_factory
        if descriptions and field.name in descriptions:
            info["description"] = descriptions[field.name]
        fields[field.name] = (wire_type(core_class, field.name, hints[field.name]), Field(**info))
    model: type[RequestModel] = create_model(
        name, __base__=base, __doc__=doc, __module__=__name__, **fields
    )
    return model


def _set_by_client(core_class: type) -> list[str]:
    """The fields of ``core_class`` without a default: the rest (ids, times) are the core's."""
    return [
        f.name for f in dataclasses.fields(core_class)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]


DependencyItem = derived("DependencyItem", CoreDependency, _set_by_client(CoreDependency))
WIRE_TYPES[list[CoreDependency]] = Annotated[
    list[DependencyItem], Field(max_length=MAX_DEPENDENCIES)  # type: ignore[valid-type]
]
class _AddRules(RequestModel):
    """How an added operation's errors read; the fields are derived (:data:`AddOperationItem`)."""

    error_code: ClassVar[str] = "invalid_operation"
    error_rules: ClassVar[dict[tuple[str, str], ErrorRule]] = {
        ("", "*"): ErrorRule(
            "invalid_operations", "each list item must be a scheduled operation object"
        ),
        ("resource_id", "*"): ErrorRule(
            "resource_id_not_allowed",
            "resource_id must not be provided; it is assigned by the dispatcher resource",
        ),
        ("payload", "missing"): ErrorRule("missing_payload", "payload is required"),
        ("payload", "*"): ErrorRule("invalid_payload", "payload must be an object"),
    }
    #: The original's checks, per item: an object, no resource_id, a payload, then the rest.
    checked_first: ClassVar[tuple[str, ...]] = ("", "resource_id", "payload")


if TYPE_CHECKING:  # derived() builds it at import: to mypy, its base class is its type
    AddOperationItem = _AddRules
else:
    AddOperationItem = derived(
        "AddOperationItem", CoreOperation, ADDABLE_FIELDS, base=_AddRules,
        doc="One operation to queue; ``resource_id`` is the dispatcher's and must not be given.",
        required=REQUIRED_ON_ADD, descriptions=DESCRIPTIONS,
    )


class AddOperationItems(Described, RootModel[list[AddOperationItem]]):
    """The body of ``POST /operations/add``: a non-empty list of operations."""

    root: list[AddOperationItem] = Field(
        min_length=1, max_length=MAX_OPERATIONS_PER_ADD
    )
    error_code: ClassVar[str] = "invalid_operations"
    error_rules: ClassVar[dict[tuple[str, str], ErrorRule]] = {
        ("", "too_short"): ErrorRule("missing_operations", "operations list must not be empty"),
        ("", "too_long"): ErrorRule(
            "too_many_operations",
            f"operations list must not have more than {MAX_OPERATIONS_PER_ADD} items",
            {"max_items": MAX_OPERATIONS_PER_ADD},
        ),
        ("", "*"): ErrorRule(
            "invalid_operations", "request body must be a list of scheduled operations"
        ),
    }

    @classmethod
    def describe(cls, errors: Sequence[ErrorDetails]) -> tuple[str, str, dict[str, Any]]:
        """The first item's error, in the original's order of checks; told by the item model."""

        def rank(error: ErrorDetails) -> tuple[int | str, int]:  # loc[0]: the item's index
            loc, first = error["loc"], _AddRules.checked_first
            name = str(loc[1]) if len(loc) > 1 else ""
            return (loc[0] if loc else -1), (first.index(name) if name in first else len(first))

        error = min(errors, key=rank)
        loc = tuple(error["loc"])
        if not loc:
            return cls.explain(error, loc)
        code, message, details = AddOperationItem.explain(error, loc[1:])
        return code, message, {"index": loc[0], **details}


class _UpdateRules(RequestModel):
    """How an update's errors read; the fields are derived (:data:`UpdateOperationItem`)."""

    error_code: ClassVar[str] = "invalid_updates"
    error_rules: ClassVar[dict[tuple[str, str], ErrorRule]] = {
        ("", "*"): ErrorRule("invalid_updates", "request body must be an object of updates"),
    }

    @classmethod
    def describe(cls, errors: Sequence[ErrorDetails]) -> tuple[str, str, dict[str, Any]]:
        """Unknown fields first, all named at once; a lifecycle field is told why it is not one."""
        extra = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
        lifecycle = [name for name in extra if name in LIFECYCLE_FIELDS]
        if lifecycle:
            return (
                "invalid_updates",
                f"{lifecycle[0]} changes only through lifecycle transitions "
                "(start, pause, resume, complete, fail, cancel)",
                {"field": lifecycle[0]},
            )
        if extra:
            return (
                "invalid_updates",
                f"unsupported operation update fields: {extra}",
                {"field": extra[0], "updatable_fields": sorted(cls.model_fields)},
            )
        return super().describe(errors)


if TYPE_CHECKING:  # as AddOperationItem
    UpdateOperationItem = _UpdateRules
else:
    UpdateOperationItem = derived(
        "UpdateOperationItem", CoreOperation, UPDATABLE_FIELDS, base=_UpdateRules, partial=True,
        doc="Fields to change on a queued (or paused) operation; leave out what stays.",
    )


class LifecycleCommand(OptionalBody):
    """Optional body of pause and resume."""

    meta_data: JsonObject = Field(default_factory=dict, description="kept in the events")
    error_code: ClassVar[str] = "invalid_request_body"
    error_rules: ClassVar[dict[tuple[str, str], ErrorRule]] = {
        ("", "*"): ErrorRule("invalid_request_body", "request body must be an object"),
        ("meta_data", "*"): ErrorRule("invalid_meta_data", "meta_data must be an object"),
    }


class CancelOperationCommand(LifecycleCommand):
    """Optional body of cancel."""

    termination_reason: TerminationReason = Field(
        TerminationReason.INTERNAL_ERROR, description="why (default INTERNAL_ERROR)"
    )
    error_rules: ClassVar[dict[tuple[str, str], ErrorRule]] = {
        **LifecycleCommand.error_rules,
        ("termination_reason", "*"): ErrorRule(
            "invalid_termination_reason", "invalid termination_reason",
            {"valid_termination_reasons": [r.value for r in TerminationReason]},
        ),
    }


_FORCE = Field(
    False, description="finish it although an executor bridge runs it: the operator overrides "
                       "the machine (recorded in the event's meta_data); only the JSON true forces"
)
_FORCE_RULE = ErrorRule("invalid_force", "force must be true or false (got {input!r})")


class CompleteOperationCommand(LifecycleCommand):
    """Optional body of complete: a job done by hand (or reported by a program)."""

    force: StrictBool = _FORCE
    error_rules: ClassVar[dict[tuple[str, str], ErrorRule]] = {
        **LifecycleCommand.error_rules, ("force", "*"): _FORCE_RULE,
    }


class FailOperationCommand(CancelOperationCommand):
    """Optional body of fail."""

    force: StrictBool = _FORCE
    error_rules: ClassVar[dict[tuple[str, str], ErrorRule]] = {
        **CancelOperationCommand.error_rules, ("force", "*"): _FORCE_RULE,
    }


class DecisionBody(OptionalBody):
    """Optional body of approve and deny."""

    reasoning: StrictStr | None = Field(None, description="why; kept in the events")
    data: JsonObject | None = Field(None, description="kept with the decision")
    error_code: ClassVar[str] = "invalid_request_body"
    error_rules: ClassVar[dict[tuple[str, str], ErrorRule]] = {
        ("", "*"): ErrorRule("invalid_request_body", "request body must be an object"),
    }


class SignalUpdate(RequestModel):
    """Body of ``PUT /signals/<name>``."""

    value: Any = Field(description="any JSON value")
    max_age_seconds: Seconds | None = Field(
        None, description="the signal is stale (never holds) once older than this; left out "
                          "or null: the server's default ([http] signal_max_age_seconds, 60 s)"
    )
    error_code: ClassVar[str] = "invalid_signal"
    error_rules: ClassVar[dict[tuple[str, str], ErrorRule]] = {
        ("", "*"): ErrorRule("invalid_signal", "request body must be an object with a value"),
    }


# ------------------------------------------------------------------------ response models


class ResponseModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorResponse(ResponseModel):
    """Every error: ``error`` and ``message`` hold the same text; ``code`` is for programs."""

    error: str
    message: str
    code: str
    details: JsonObject | None = None


class OperationDependency(ResponseModel):
    id: UUID
    depends_on_operation_id: UUID
    dependency_type: DependencyType
    created_at: datetime


class OperationProgress(ResponseModel):
    """The last progress report of a started operation (``POST .../progress``, a bridge)."""

    fraction: float | None = Field(description="0..1; null: not known")
    message: str | None
    updated_at: datetime


class Operation(ResponseModel):
    id: UUID
    job_id: str | None
    payload: JsonObject
    resource_id: str
    priority: int
    release_date: datetime | None
    planned_duration: float | None = Field(description="seconds")
    due_date: datetime | None
    dependencies: list[OperationDependency]
    state: ExecutionState
    outcome: ExecutionOutcome
    termination_reason: TerminationReason
    retry_count: int
    start_time: datetime | None
    finish_time: datetime | None
    created_at: datetime
    release_conditions: JsonObject
    timeout_seconds: float | None = Field(description="seconds")
    progress: OperationProgress | None = Field(
        description="the last progress report; null until one arrives"
    )


class OperationStatus(ResponseModel):
    operation: Operation
    is_current_operation: bool
    elapsed_seconds: float | None = Field(
        None, description="seconds since a RUNNING operation started (compare planned_duration); "
        "null unless it is RUNNING",
    )


class OperationStatusList(RootModel[list[OperationStatus]]):
    pass


class ChangeRecord(ResponseModel):
    field: str
    old_value: Any = None
    new_value: Any = None


class DispatchEvent(ResponseModel):
    id: UUID
    resource_id: str
    operation_id: UUID | None
    event_type: EventType
    changes: list[ChangeRecord]
    meta_data: JsonObject = Field(default_factory=dict, examples=[{}])
    created_at: datetime


class DispatchEventList(RootModel[list[DispatchEvent]]):
    pass


class TimeWindow(ResponseModel):
    start: datetime | None = None
    end: datetime | None = None


class History(ResponseModel):
    resource_id: str
    window: TimeWindow
    events: list[DispatchEvent]
    operations: list[Operation] | None
    created_at: datetime


class OperationDispatcherState(ResponseModel):
    resource_id: str
    is_running: bool
    is_paused: bool
    queue_size: int
    current_operation: Operation | None
    running_since: datetime | None
    uptime_seconds: float | None
    runtime_thread_alive: bool = Field(description="the dispatcher thread is alive")
    runtime_last_error: str | None = Field(description="why the last start or stop failed")


class OperationDispatcherRuntimeActionResponse(ResponseModel):
    """The answer of start, stop, pause and resume (also when refused: then with a code)."""

    message: str
    state: OperationDispatcherState
    error: str | None = None
    code: str | None = None


class ExplainResponse(ResponseModel):
    operation_id: UUID
    state: ExecutionState
    blocked_by: list[str] = Field(
        description="release_date, release_condition:NAME, dependency:ID, cooldown, "
        "awaiting_approval, dispatcher_paused, dispatcher_not_running, resource_busy"
    )
    details: list[BlockerDetail] = Field(
        description="one per blocked_by entry, in the same order: its kind, a sentence to act "
        "on (text) and the facts behind it"
    )


class Signal(ResponseModel):
    name: str
    value: Any = None
    updated_at: datetime
    max_age_seconds: float | None
    stale: bool


class SignalList(RootModel[list[Signal]]):
    pass


class BridgeCounters(BaseModel):
    model_config = ConfigDict(extra="allow")  # a bridge kind may count more (serial: rejected)

    reads: int = Field(description="successful reads (Modbus requests, serial lines)")
    errors: int = Field(description="lost or failed connections, and I/O errors")
    reconnects: int = Field(description="connection attempts after a failure")
    malformed: int = Field(description="answers or lines that could not be understood")


class BridgeStatus(ResponseModel):
    name: str = Field(description="the prefix of its signals (<name>.<signal>, <name>.online)")
    kind: str = Field(description="modbus or serial")
    endpoint: str = Field(description="where the device is: tcp://host:port, a serial URL, ...")
    running: bool = Field(description="the bridge thread is alive")
    online: bool = Field(description="the device is connected and answering")
    last_error: str | None = Field(
        description="why the device is offline, or a configuration error it reported "
                          "(a Modbus exception response with the address and code)"
    )
    counters: BridgeCounters


class BridgeList(RootModel[list[BridgeStatus]]):
    pass


class PendingRequest(ResponseModel):
    request_id: UUID
    event_type: EventType
    operation_id: UUID
    created_at: datetime
    deadline: datetime | None  # null: no operator_timeout_seconds, it waits for an answer
    waiting_for: str


class PendingRequestList(RootModel[list[PendingRequest]]):
    pass


class DecisionResponse(ResponseModel):
    message: str
    request_id: UUID
    accepted: bool
    reasoning: str | None


class Health(ResponseModel):
    status: Literal["ok"]
    dispatcher_running: bool
    event_stream_clients: int


class ApiIndex(ResponseModel):
    name: str
    resource_id: str
    links: dict[str, str]


# ------------------------------------------------------------------------------ helpers


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("dependencies", 0, "dependency_type")`` -> ``dependencies[0].dependency_type``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


#: pydantic error ``type`` -> the rule it broke, in the envelope's words. Constraint texts take
#: their bound from the error's ``ctx`` (``{gt}``, ``{max_length}``...): pydantic's own English
#: ``msg`` is never read, so a pydantic upgrade cannot change what clients see.
_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "int_parsing_size": f"must be an integer of at most {_checks.MAX_INT_DIGITS} digits",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be a boolean",
    "bool_parsing": "must be a boolean",
    "string_type": "must be a string",
    "string_unicode": "must be valid Unicode",
    "dict_type": "must be an object",
    "list_type": "must be a list",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "uuid_type": "must be a UUID",
    "uuid_parsing": "must be a UUID",
    "uuid_version": "must be a UUID",
    "timezone_aware": "must have a timezone (e.g. a trailing Z or +02:00)",
    "datetime_type": "must be an ISO 8601 datetime with a timezone",
    "datetime_parsing": "must be an ISO 8601 datetime with a timezone",
    "datetime_from_date_parsing": "must be an ISO 8601 datetime with a timezone",
    "datetime_object_invalid": "must be an ISO 8601 datetime with a timezone",
    "enum": "must be one of {expected}",
    "literal_error": "must be one of {expected}",
    "json_invalid": "is not valid JSON",
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be greater than or equal to {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be less than or equal to {le}",
    "string_too_short": "must have at least {min_length} character(s)",
    "string_too_long": "must have at most {max_length} characters",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} items",
}


def _shown(value: Any) -> Any:
    """A bound as people write it: 1e9 as 1000000000, not 1000000000.0."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _rule(kind: str, ctx: dict[str, Any]) -> str:
    """The rule an error of pydantic ``type`` ``kind`` broke, from its ``ctx`` only."""
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        error = ctx["error"]  # what our own validator (or the core's check) raised
        return error.reason if isinstance(error, ValidationError) else str(error)
    template = _MESSAGES.get(kind)
    if template is None:
        return f"is invalid ({kind})"
    try:
        return template.format(**{key: _shown(value) for key, value in ctx.items()})
    except (KeyError, IndexError):  # a ctx without the bound: say the rule without it
        return template.split(" {")[0]


def describe_error(field: str, error: ErrorDetails) -> str:
    """A message naming the field, e.g. ``priority must be an integer (got 'high')``."""
    kind = error["type"]
    text = _rule(kind, error.get("ctx") or {})
    if kind not in ("missing", "extra_forbidden") and "input" in error:
        shown = repr(error["input"])
        if len(shown) > 60:
            shown = shown[:57] + "..."
        text = f"{text} (got {shown})"
    return f"{field} {text}" if field else text


#: The request models by name: a pydantic ValidationError's ``title`` names the model that failed.
REQUEST_MODELS: dict[str, type[Described]] = {
    cls.__name__: cls
    for cls in (
        OperationPath, RequestPath, SignalPath, BridgePath, ListOperationsQuery, HistoryQuery,
        EventStreamQuery, AddOperationItem, AddOperationItems, UpdateOperationItem,
        LifecycleCommand, CancelOperationCommand, CompleteOperationCommand,
        FailOperationCommand, DecisionBody, SignalUpdate,
    )
}


# ------------------------------------------------------------------------------ progress

#: A fraction of an operation: a real number 0..1 (no bool, no text, no NaN or infinity).
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False, strict=True)]


class ProgressReport(RequestModel):
    """Body of ``POST /operations/<id>/progress``: a fraction, a message, or both."""

    fraction: Fraction | None = Field(None, description="how much is done, 0..1; null: not known")
    message: StrictStr | None = Field(
        None, max_length=_checks.MAX_PROGRESS_MESSAGE,
        description=f"a short text for people (at most {_checks.MAX_PROGRESS_MESSAGE} characters)",
    )
    error_code: ClassVar[str] = "invalid_progress"
    error_rules: ClassVar[dict[tuple[str, str], ErrorRule]] = {
        ("", "*"): ErrorRule(
            "invalid_progress", "request body must be an object with fraction and/or message"
        ),
    }


REQUEST_MODELS[ProgressReport.__name__] = ProgressReport

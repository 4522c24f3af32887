"""The one set of input rules: every check raises ValidationError naming the public field.

Models, the ``OperationDispatcher`` constructor, the TOML config, the hardware bridges and the
HTTP schemas all check their input here, so a rule (and its limit) is written once and holds
for every way in. A check takes ``(value, name)`` — the value first, as ``to_utc`` and
``check_json_data`` always have — and returns the value, coerced where the rule says so.
Messages state the rule (``must be an integer > 0``), never Python internals.

Stdlib only: the core imports this in microseconds, and nothing here imports the rest of the
package.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from time import time
from typing import Any, TypeVar
from uuid import UUID

from .errors import ValidationError

#: Seconds accepted for every duration and timeout (about 31 years): longer waits cannot be
#: waited for by ``threading`` (its limit is ~292 years) and make no sense for a machine.
MAX_SECONDS = 1e9
#: How far ahead a release date may lie (the dispatcher waits for it on a condition variable).
MAX_RELEASE_AHEAD = timedelta(days=365 * 100)
_MAX_AHEAD_SECONDS = MAX_RELEASE_AHEAD.total_seconds()
#: How deeply JSON data may nest; deeper data is refused rather than hitting the recursion limit.
MAX_NESTING = 64
#: Integers with more decimal digits than this are refused: Python cannot turn them into text
#: (``str()``, ``json.dumps``) beyond 4,300 digits by default, so they could never be answered.
MAX_INT_DIGITS = 4300
INT_LIMIT = 10**MAX_INT_DIGITS
_INF = float("inf")
_NUMBERS = (int, float)

# ------------------------------------------------------------------------------ scalars


def _refuse(name: str, rule: str, value: Any, got: bool) -> ValidationError:
    """The error for a broken rule; with ``got``, the value shown (cut short) after it."""
    if got:
        if type(value) is int and not -INT_LIMIT < value < INT_LIMIT:  # repr() would raise
            shown = f"an integer of about {int(value.bit_length() * 0.30103)} digits"
        else:
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
        rule = f"{rule}, got {shown}"
    return ValidationError(name, rule)


def integer(
    value: Any, name: str, minimum: int | None = None, maximum: int | None = None,
    *, got: bool = True,
) -> int:
    """An int (never a bool: True would pass for 1) within the bounds, if any."""
    if (
        type(value) is not int
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
        or not -INT_LIMIT < value < INT_LIMIT
    ):
        raise _refuse(name, f"must be an integer{_bounds(minimum, maximum)}", value, got)
    return value


def _bounds(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" from {minimum} to {maximum}"
    if minimum == 1:
        return " > 0"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def seconds(
    value: Any, name: str, *, optional: bool = False, zero: bool = False, got: bool = True
) -> float | int | None:
    """A finite number of seconds, > 0 (>= 0 with ``zero``) and <= :data:`MAX_SECONDS`.

    Returned as given (an int stays an int: it round-trips through JSON unchanged).
    """
    if value is None and optional:
        return None
    if type(value) not in _NUMBERS or not (
        (0 <= value if zero else 0 < value) and value <= MAX_SECONDS  # also refuses nan
    ):
        low = ">= 0" if zero else "> 0"
        none = " or None" if optional else ""
        raise _refuse(name, f"must be a number {low} and <= {MAX_SECONDS:g}{none}", value, got)
    return value


def boolean(
    value: Any, name: str, words: tuple[str, str] = ("True", "False"), *, got: bool = True
) -> bool:
    """Exactly True or False: a flag that may start a machine is never read from a truthy value.

    ``words`` spells them as the caller's language does (TOML says ``true``/``false``).
    """
    if type(value) is not bool:
        raise _refuse(name, f"must be {words[0]} or {words[1]}", value, got)
    return value


def text(value: Any, name: str, *, got: bool = True) -> str:
    """A non-empty string of valid Unicode (no lone surrogates)."""
    if not isinstance(value, str) or not value:
        raise _refuse(name, "must be a non-empty string", value, got)
    check_text(value, name)
    return value


def optional_text(value: Any, name: str) -> str | None:
    """None, or a string (possibly empty) of valid Unicode."""
    if value is not None:
        if not isinstance(value, str):
            raise ValidationError(name, f"must be a string, got {type(value).__name__}")
        check_text(value, name)
    return value


def one_of(value: Any, name: str, choices: Collection[str], *, got: bool = True) -> str:
    """One of a few fixed words."""
    if type(value) is not str or value not in choices:
        raise _refuse(name, f"must be one of {', '.join(repr(c) for c in choices)}", value, got)
    return value


def word_set(value: Any, name: str, choices: Collection[str], *, got: bool = True) -> frozenset[str]:
    """A comma-separated list of a few fixed words (``"a,b"``; empty: none), as a set."""
    if type(value) is not str or len(value) > 200:
        raise _refuse(name, "must be a comma-separated list of words", value, got)
    words = frozenset(word.strip() for word in value.split(",") if word.strip())
    unknown = sorted(words - frozenset(choices))
    if unknown:
        raise _refuse(
            name, f"may only list {', '.join(repr(c) for c in choices)}", unknown[0], got
        )
    return words


def check_text(value: str, name: str) -> None:
    """Refuse lone surrogates (they are not characters and cannot be stored or sent)."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValidationError(
                name,
                f"contains a lone surrogate {value[exc.start]!r} at position {exc.start} "
                "(not valid Unicode)",
            ) from None


#: Longest MQTT topic prefix and topic level (a resource id in a topic) accepted.
MAX_TOPIC_PREFIX = 256
MAX_TOPIC_LEVEL = 128


def topic_level(value: Any, name: str, *, got: bool = True) -> str:
    """One level of an MQTT topic (a resource id): no ``/``, no wildcard, no ``$`` first.

    A ``+`` or ``#`` in a published topic is refused by the broker, a ``/`` would move the
    controller's topics under another name, and ``$`` topics are the broker's own.
    """
    text(value, name, got=got)
    if (
        len(value) > MAX_TOPIC_LEVEL or any(c in value for c in "/+#\0")
        or value.startswith("$") or not value.isprintable()
    ):
        raise _refuse(
            name, f"must be usable as one MQTT topic level: at most {MAX_TOPIC_LEVEL} printable "
            "characters without / + # and not starting with $", value, got,
        )
    return value


def topic_prefix(value: Any, name: str, *, got: bool = True) -> str:
    """An MQTT topic prefix: levels joined by ``/``, each a :func:`topic_level`."""
    text(value, name, got=got)
    levels = value.split("/")
    if len(value) > MAX_TOPIC_PREFIX or not all(levels):
        raise _refuse(
            name, f"must be at most {MAX_TOPIC_PREFIX} characters of topic levels joined by / "
            "(no empty level, no leading or trailing /)", value, got,
        )
    for level in levels:
        topic_level(level, name, got=got)
    return value


E = TypeVar("E", bound=StrEnum)


def to_enum(value: Any, enum_cls: type[E], name: str) -> E:
    """A member of ``enum_cls``, from itself or its value."""
    if type(value) is enum_cls:
        return value
    try:
        return enum_cls(value)
    except ValueError:
        valid = ", ".join(m.value for m in enum_cls)
        raise ValidationError(name, f"must be one of {valid}; got {value!r}") from None


def to_uuid(value: Any, name: str) -> UUID:
    """A UUID; text in any form ``uuid.UUID`` accepts is parsed."""
    if type(value) is UUID:
        return value
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            raise ValidationError(name, f"must be a UUID, got {value!r}") from None
    if isinstance(value, UUID):
        return value
    raise ValidationError(name, f"must be a UUID, got {type(value).__name__}")


# ------------------------------------------------------------------------------ datetimes


def to_utc(value: Any, name: str) -> datetime:
    """An aware UTC datetime; naive means UTC, ISO 8601 text is parsed."""
    if isinstance(value, datetime):
        if value.tzinfo is UTC:
            return value
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValidationError(name, "is out of the range of datetimes") from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValidationError(name, f"must be an ISO 8601 datetime, got {value!r}") from None
        return to_utc(parsed, name)
    raise ValidationError(name, f"must be a datetime, got {type(value).__name__}")


def not_too_far(value: datetime, name: str) -> datetime:
    """Refuse an aware release date more than :data:`MAX_RELEASE_AHEAD` from now.

    Compared as POSIX seconds: no datetime is built per call (operations are made by the 100k).
    """
    if value.timestamp() - time() > _MAX_AHEAD_SECONDS:
        raise ValidationError(name, f"must be less than {MAX_RELEASE_AHEAD.days // 365} years from now")
    return value


# ------------------------------------------------------------------------------ JSON data


class RefusedJSON(ValueError):
    """JSON text no reader here takes although it is JSON: an integer over
    :data:`MAX_INT_DIGITS` digits, or nesting deeper than the stack allows."""


def _no_constant(word: str) -> Any:
    raise ValueError(f"{word} is not JSON")


def _int_or_refuse(text: str) -> int:
    if len(text) - text.startswith("-") > MAX_INT_DIGITS:
        raise RefusedJSON(f"an integer of more than {MAX_INT_DIGITS} digits")
    return int(text)


def _int_or_limit(text: str) -> int:
    return int(text) if len(text) - text.startswith("-") <= MAX_INT_DIGITS else INT_LIMIT


def load_json(text: str, *, mark_long_ints: bool = False) -> Any:
    """``json.loads`` under the rules every reader here shares (HTTP, MQTT, serial ``SIG``).

    Raises ValueError, its text the reason, for text that is not JSON, ``NaN``, ``Infinity``
    and ``-Infinity`` included (Python's reader takes them, other readers do not), and
    :class:`RefusedJSON` for an integer over :data:`MAX_INT_DIGITS` digits (counted here: the
    interpreter's own limit is process-wide, and ``PYTHONINTMAXSTRDIGITS=0`` lifts it) or
    nesting that exhausts the stack. With ``mark_long_ints`` such an integer reads as
    :data:`INT_LIMIT` instead, which :func:`check_json_data` refuses naming where it is.
    What parses may still be unusable (``1e999`` reads as inf): check_json_data says so.
    """
    import json  # here: this module stays stdlib-light for the core's import time

    parse_int = _int_or_limit if mark_long_ints else _int_or_refuse
    try:
        return json.loads(text, parse_constant=_no_constant, parse_int=parse_int)
    except RecursionError:
        raise RefusedJSON(f"nested deeper than {MAX_NESTING} levels") from None


def parse_json(payload: bytes | str, name: str) -> Any:
    """The value of strict JSON text (:func:`load_json`), else ValidationError ``is not a JSON
    document``; the text must be UTF-8."""
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes | bytearray) else payload
        return load_json(text)
    except (UnicodeDecodeError, ValueError):
        raise ValidationError(name, "is not a JSON document") from None


def check_json_data(value: Any, name: str) -> None:
    """Refuse what standard JSON cannot carry, anywhere inside ``value``.

    Non-finite floats (``inf``, ``nan``: every JSON reader chokes on ``Infinity``), integers
    over :data:`MAX_INT_DIGITS` digits, text with lone surrogates (``"\\ud800"`` is not
    Unicode and cannot be encoded as UTF-8), non-text object keys and nesting deeper than
    :data:`MAX_NESTING`. The error names the path, e.g. ``payload.items[2]``. Other scalars
    are left alone (they are shown as text).
    """
    try:
        _scan(value, name, paths=False)  # fast: no path text built for good data
    except ValidationError:
        _scan(value, name, paths=True)  # again, to name where the problem is
        raise


def _scan(value: Any, name: str, *, paths: bool) -> None:
    stack: list[tuple[Any, str, int]] = [(value, name, 1)]
    while stack:
        item, path, depth = stack.pop()
        kind = type(item)
        if kind is str:
            check_text(item, path)
        elif kind is float:
            if item != item or item in (_INF, -_INF):
                raise ValidationError(path, f"must be a finite number, got {item!r}")
        elif kind is int:
            if not -INT_LIMIT < item < INT_LIMIT:
                raise ValidationError(path, f"is an integer of more than {MAX_INT_DIGITS} digits")
        elif kind is dict or kind is list or kind is tuple:
            if depth > MAX_NESTING:
                raise ValidationError(name, f"nests deeper than {MAX_NESTING} levels")
            if kind is dict:
                for key, child in item.items():
                    if type(key) is not str:
                        raise ValidationError(
                            path, f"keys must be text, got {type(key).__name__} {key!r:.40}"
                        )
                    if not key.isascii():
                        check_text(key, f"{path} key {key[:40]!r}")
                    if type(child) not in _SAFE_SCALARS:
                        stack.append((child, f"{path}.{key}" if paths else path, depth + 1))
            else:
                for index, child in enumerate(item):
                    if type(child) not in _SAFE_SCALARS:
                        stack.append((child, f"{path}[{index}]" if paths else path, depth + 1))


_SAFE_SCALARS = frozenset({bool, type(None)})


def json_object(value: Any, name: str) -> dict[str, Any]:
    """A dict of JSON data (a dict subclass is copied into a plain dict)."""
    if type(value) is not dict:
        if not isinstance(value, dict):
            raise ValidationError(name, f"must be an object (dict), got {type(value).__name__}")
        value = dict(value)
    check_json_data(value, name)
    return value


def meta_data(value: Any, name: str) -> dict[str, Any] | None:
    """Meta data (and decision data) given to the dispatcher: None or a JSON object."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationError(
            name, f"must be an object (dict) or None, got {type(value).__name__}"
        )
    check_json_data(value, name)
    return value


def release_conditions(value: Any, name: str) -> dict[str, Any]:
    """Signal name -> required value: non-empty names, JSON values."""
    if type(value) is dict:
        conditions = value
    elif isinstance(value, Mapping):
        conditions = dict(value)
    else:
        raise ValidationError(
            name, f"must be a mapping of signal names to values, got {type(value).__name__}"
        )
    for key in conditions:
        if not isinstance(key, str) or not key:
            raise ValidationError(name, "keys must be non-empty signal names")
    check_json_data(conditions, name)
    return conditions


# ------------------------------------------------------------------------------ progress

#: Longest progress message, in characters: a status line for an operator's screen, not a log
#: (a device repeating a long text every few hundred ms must not bloat events and journal).
MAX_PROGRESS_MESSAGE = 200


def progress_fraction(value: Any, name: str = "fraction") -> float | None:
    """None, or how much of an operation is done: a real finite number from 0 to 1.

    A bool is refused (``True`` is not 100 %), and so are text, NaN and infinities. Returned
    as a float.
    """
    if value is None:
        return None
    if type(value) not in _NUMBERS or not 0 <= value <= 1:  # also refuses nan
        raise _refuse(name, "must be a number from 0 to 1 (or None)", value, True)
    return float(value)


def progress_message(value: Any, name: str = "message") -> str | None:
    """None, or a progress message: text of at most :data:`MAX_PROGRESS_MESSAGE` characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(name, f"must be a string or None, got {type(value).__name__}")
    if len(value) > MAX_PROGRESS_MESSAGE:
        raise ValidationError(
            name, f"must have at most {MAX_PROGRESS_MESSAGE} characters, got {len(value)}"
        )
    check_text(value, name)
    return value


# --------------------------------------------------------------- OperationDispatcher(...)


def dispatcher_arguments(
    *,
    resource_id: Any,
    poll_interval_seconds: Any,
    start_request_max_retries: Any,
    start_request_retry_cooldown_seconds: Any,
    request_event_timeout_seconds: Any,
    default_planned_duration: Any,
    recovery: Any,
    start_paused: Any,
    strict_order: Any,
    updatable_fields: Iterable[str] | None,
    allowed_fields: frozenset[str],
    default_fields: frozenset[str],
    event_retention: Any,
    operation_retention: Any,
    default_release_conditions: Any,
) -> tuple[frozenset[str], dict[str, Any]]:
    """Check the constructor's arguments, each by its own name; (updatable fields, defaults).

    Runs before anything is opened, so a bad argument leaves no journal file locked.
    """
    text(resource_id, "resource_id")
    seconds(poll_interval_seconds, "poll_interval_seconds")
    integer(start_request_max_retries, "start_request_max_retries", 1)
    seconds(start_request_retry_cooldown_seconds, "start_request_retry_cooldown_seconds", zero=True)
    seconds(request_event_timeout_seconds, "request_event_timeout_seconds", optional=True)
    seconds(default_planned_duration, "default_planned_duration", optional=True)
    one_of(recovery, "recovery", ("fail", "pause"))
    boolean(start_paused, "start_paused")
    boolean(strict_order, "strict_order")
    integer(event_retention, "event_retention", 1)
    integer(operation_retention, "operation_retention", 0)
    if updatable_fields is None:
        fields = default_fields
    elif isinstance(updatable_fields, str) or not isinstance(updatable_fields, Iterable):
        raise ValidationError("updatable_fields", "must be a collection of field names")
    else:
        fields = frozenset(updatable_fields)
    unsupported = sorted(str(f) for f in fields - allowed_fields)
    if unsupported:
        raise ValidationError("updatable_fields", f"contains unsupported fields: {unsupported}")
    defaults: dict[str, Any] = {}
    if default_release_conditions is not None:
        defaults = release_conditions(
            dict(default_release_conditions) if isinstance(default_release_conditions, Mapping)
            else default_release_conditions,
            "default_release_conditions",
        )
    return fields, defaults


__all__ = [
    "INT_LIMIT",
    "MAX_INT_DIGITS",
    "MAX_NESTING",
    "MAX_PROGRESS_MESSAGE",
    "MAX_RELEASE_AHEAD",
    "MAX_SECONDS",
    "RefusedJSON",
    "boolean",
    "check_json_data",
    "check_text",
    "dispatcher_arguments",
    "integer",
    "json_object",
    "load_json",
    "meta_data",
    "not_too_far",
    "one_of",
    "optional_text",
    "parse_json",
    "progress_fraction",
    "progress_message",
    "release_conditions",
    "seconds",
    "text",
    "to_enum",
    "to_utc",
    "to_uuid",
    "word_set",
]

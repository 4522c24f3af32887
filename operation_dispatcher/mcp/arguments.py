"""Argument types of the tools, and the one translation of core errors into ToolErrors.

The SDK validates arguments against these types before a tool runs. They are strict: a string
is never read as a boolean or a number ("true" for ``resolve_operations`` is an error, as is
``5.0`` for a limit), numbers are bounded and finite. What the types cannot say (the rules of
a payload, a release date) the core checks, and its ValidationError comes back as a ToolError
naming the argument. Only a ToolError's text reaches the agent, so every expected failure is one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field, StrictInt, StrictStr

from .._checks import MAX_SECONDS
from ..errors import (
    DispatcherError,
    OperationNotFound,
    RequestClosed,
    UnknownRequest,
    ValidationError,
)

#: A UUID as text (any form ``uuid.UUID`` reads); checked by the core.
OperationId = Annotated[StrictStr, Field(min_length=1, max_length=64,
                                         description="the operation's id (a UUID)")]
RequestId = Annotated[StrictStr, Field(min_length=1, max_length=64,
                                       description="the request's id (a UUID, from "
                                       "dispatcher_list_requests)")]
#: ISO 8601 with an offset, e.g. 2026-01-31T08:00:00Z.
Timestamp = Annotated[StrictStr, Field(max_length=64, description=(
    "ISO 8601 datetime with a timezone offset, e.g. 2026-01-31T08:00:00Z"))]
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS, allow_inf_nan=False, strict=True)]
Priority = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]
Reasoning = Annotated[StrictStr, Field(min_length=1, max_length=2000, description=(
    "why: recorded with the decision in the request's event"))]
ListableState = Literal["QUEUED", "RUNNING", "PAUSED"]


def timestamp(value: str | None, name: str) -> datetime | None:
    """``value`` as an aware datetime; a time without an offset is refused (whose clock?)."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ToolError(
            f"{name} must be an ISO 8601 datetime with an offset, e.g. 2026-01-31T08:00:00Z "
            f"(got {value!r})"
        ) from None
    if parsed.tzinfo is None:
        raise ToolError(
            f"{name} needs a timezone offset (Z or +02:00): {value!r} could be any local time"
        )
    return parsed


def aware(values: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """``values`` with the datetime texts among ``names`` parsed (see :func:`timestamp`)."""
    return {
        key: timestamp(value, key) if key in names and isinstance(value, str) else value
        for key, value in values.items()
    }


@contextmanager
def tool_errors() -> Iterator[None]:
    """Turn the core's errors into ToolErrors whose text says what to do next."""
    try:
        yield
    except ValidationError as exc:
        raise ToolError(f"invalid argument {exc.field}: {exc.reason}") from None
    except OperationNotFound as exc:
        raise ToolError(
            f"{exc}: dispatcher_list_operations lists the queued and current ones"
        ) from None
    except UnknownRequest as exc:
        raise ToolError(
            f"{exc}: dispatcher_list_requests lists the requests waiting for an answer"
        ) from None
    except RequestClosed as exc:
        raise ToolError(f"{exc}: it can no longer be answered") from None
    except DispatcherError as exc:
        raise ToolError(str(exc)) from None


__all__ = [
    "ListableState",
    "OperationId",
    "Priority",
    "Reasoning",
    "RequestId",
    "Seconds",
    "Timestamp",
    "aware",
    "timestamp",
    "tool_errors",
]

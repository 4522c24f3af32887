"""``GET /forecast``: when each queued operation is expected to start and end, or why unknown.

The answer is :meth:`OperationDispatcher.forecast` as of the moment in ``generated_at``; the
model and its assumptions are in :mod:`operation_dispatcher.forecast`.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from flask import Response
from flask_openapi3 import APIBlueprint, Tag
from pydantic import Field

from ..models import ExecutionState, format_datetime, utcnow
from .schemas import ResponseModel
from .state import api_blueprint, api_state, json_response

TAG = Tag(name="Forecast", description="expected starts and ends of the queued operations")


class ForecastOperation(ResponseModel):
    """One operation's forecast (the fields of ``ForecastEntry.to_dict()``)."""

    operation_id: UUID
    job_id: str | None
    state: ExecutionState = Field(description="RUNNING or PAUSED for the current operation")
    expected_start: datetime | None = Field(description="null when blocked_by says why")
    expected_end: datetime | None = Field(
        description="null when the start is unknown, the operation has no planned_duration, "
        "or it is paused"
    )
    blocked_by: str | None = Field(
        description="what makes the start unknown: release_condition:NAME, dependency:ID, "
        "awaiting_approval, dispatcher_paused, dispatcher_not_running, operation:ID (waits "
        "behind an operation whose start or end is unknown); operation_paused for the paused "
        "current operation's end; null when the start is known"
    )
    misses_due_date: bool | None = Field(
        description="true: ends after due_date (or cannot end before it); false: ends in "
        "time; null: no due_date, or the end is unknown"
    )
    due_date: datetime | None
    overrun: bool = Field(
        description="the running operation is past its planned end: its end is taken as now"
    )


class ForecastResponse(ResponseModel):
    generated_at: datetime = Field(description="the moment the forecast is for")
    operations: list[ForecastOperation] = Field(
        description="the current operation first (if any), then the queue in dispatch order"
    )


#: The ``/forecast`` route, shared by every app; the view reads its app's dispatcher.
forecast_blueprint: APIBlueprint = api_blueprint("forecast", __name__, TAG)


@forecast_blueprint.get(
    "/forecast", operation_id="get_forecast",
    summary="Expected start and end of each queued operation, or what keeps them unknown",
    description="One resource, operations one at a time in dispatch order, planned durations; "
    "no time is made up for an operation that waits on a condition, an approval or a paused "
    "dispatcher (see the README's Forecast section).",
    responses={200: ForecastResponse},
)
def get_forecast() -> Response:
    now = utcnow()
    entries = api_state().dispatcher.forecast(now=now)
    return json_response({
        "generated_at": format_datetime(now),
        "operations": [entry.to_dict() for entry in entries],
    })


__all__ = ["ForecastOperation", "ForecastResponse", "forecast_blueprint"]

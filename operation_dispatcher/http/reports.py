"""``GET /reports/kpis``: the HistoryAnalyzer figures of a time window, for the dashboard.

The window's events come from the dispatcher's history (the journal when there is one), at most
:data:`MAX_KPI_EVENTS` of them (the most recent; ``truncated`` says so). A window that reaches
the present while the dispatcher runs (or is paused) since before it began holds no start (or
pause) event: the report then counts the dispatcher as up (or paused) from the window's start,
which is what the dispatcher's state says, instead of reporting no figure at all.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from ..history import HistoryAnalyzer
from ..models import DispatchEvent, EventType, History, TimeWindow, format_datetime, utcnow
from .errors import ApiError
from .schemas import ErrorResponse
from .state import api_blueprint, api_state, json_response
from .webui_schemas import KpiQuery, KpiReport

TAG = Tag(name="Reports", description="key figures of the history")
#: Events one report analyses at most (the most recent of the window).
MAX_KPI_EVENTS = 100_000
#: The window when the query names none: the last hour.
DEFAULT_WINDOW = timedelta(hours=1)
_UP = (EventType.OPERATION_DISPATCHER_STARTED, EventType.OPERATION_DISPATCHER_STOPPED)
_PAUSE = (EventType.OPERATION_DISPATCHER_PAUSED, EventType.OPERATION_DISPATCHER_RESUMED)

#: ``/reports/kpis``, shared by every app.
reports_blueprint: APIBlueprint = api_blueprint("reports", __name__, TAG)


@reports_blueprint.get(
    "/reports/kpis", operation_id="get_kpis",
    summary="Uptime, runtime and operation counts of a window (default: the last hour)",
    responses={200: KpiReport, 400: ErrorResponse},
)
def get_kpis(query: KpiQuery) -> Response:
    now = utcnow()
    end = query.to_time or now
    start = query.from_time or end - DEFAULT_WINDOW
    if start > end:
        raise ApiError(400, "invalid_time_range", "from_time must be less than or equal to to_time")
    dispatcher = api_state().dispatcher
    events = dispatcher.get_history(from_time=start, to_time=end,
                                    limit=MAX_KPI_EVENTS + 1).events
    truncated = len(events) > MAX_KPI_EVENTS
    if truncated:
        events = events[-MAX_KPI_EVENTS:]
    analysed = len(events)
    if end >= now - timedelta(seconds=1):
        events = _with_present_state(events, start, dispatcher.resource_id,
                                     dispatcher.is_running, dispatcher.is_paused)
    analyzer = HistoryAnalyzer(History(
        resource_id=dispatcher.resource_id, window=TimeWindow(start=start, end=end),
        events=events,
    ))
    report = analyzer.get_report()
    return json_response({
        "from_time": format_datetime(start),
        "to_time": format_datetime(end),
        "events": analysed,
        "truncated": truncated,
        **report,
        "operation_count": analyzer.operation_count(),
        "completed_operation_count": analyzer.completed_operation_count(),
        "successful_operation_count": analyzer.successful_operation_count(),
    })


def _with_present_state(
    events: list[DispatchEvent], start: datetime, resource_id: str, running: bool, paused: bool,
) -> list[DispatchEvent]:
    """``events`` plus a start (and pause) mark at ``start`` when the dispatcher is up (and
    paused) now and the window shows no such change: it has been so since before the window."""
    kinds = {event.event_type for event in events}
    marks = []
    if running and not kinds.intersection(_UP):
        marks.append(DispatchEvent(resource_id=resource_id, created_at=start,
                                   event_type=EventType.OPERATION_DISPATCHER_STARTED))
    if running and paused and not kinds.intersection(_PAUSE):
        marks.append(DispatchEvent(resource_id=resource_id, created_at=start,
                                   event_type=EventType.OPERATION_DISPATCHER_PAUSED))
    return [*marks, *events] if marks else events


__all__ = ["DEFAULT_WINDOW", "MAX_KPI_EVENTS", "reports_blueprint"]

"""History Gantt charts for notebooks and reports, on plotly (the ``vis`` extra).

The original's API and rules (``build_history_gantt_figure``, ``show_history_gantt``): one row
per operation, coloured by outcome, with its paused spans marked, and a ``dispatcher`` row that
shows when the dispatcher ran and when it was paused. The core never imports this module, so
plotly is needed only by those who draw; without it, a call raises ImportError naming the extra.

The figure is built from ``plotly.graph_objects`` (one horizontal bar trace per status, the way
``plotly.express.timeline`` draws, without needing pandas), so ``fig.data`` can be inspected:
each trace is named after its status, ``y`` holds the row labels, ``base`` the bar starts and
``x`` the bar lengths in milliseconds; ``customdata`` holds (status, start, end, operation id).
"""

from __future__ import annotations

import os
import webbrowser
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from .models import (
    DispatchEvent,
    EventType,
    ExecutionOutcome,
    History,
    Operation,
    format_datetime,
)

if TYPE_CHECKING:
    import plotly.graph_objects as go  # type: ignore[import-untyped]

#: The original's colours; the statuses it did not colour get the next three.
COLOURS: dict[str, str] = {
    "SUCCESS": "#22c55e",
    "FAILURE": "#ef4444",
    "CANCELLED": "#f59e0b",
    "PAUSED": "#f97316",
    "DISPATCHER_RUNNING": "#38bdf8",
    "DISPATCHER_PAUSED": "#a78bfa",
    "RUNNING": "#3b82f6",
    "QUEUED": "#94a3b8",
    "COMPLETED": "#64748b",
}
#: The row of the dispatcher's own running and paused spans.
DISPATCHER_ROW = "dispatcher"
#: Where ``show_history_gantt`` writes the chart in a remote session (no browser to open).
REMOTE_HTML = "history_gantt.html"
NO_OPERATIONS = "No operations in history"
_REMOTE_VARIABLES = ("SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY", "VSCODE_IPC_HOOK_CLI")
_MIN_BAR = timedelta(seconds=1)
_OUTCOME_OF = {
    EventType.OPERATION_COMPLETED: ExecutionOutcome.SUCCESS,
    EventType.OPERATION_FAILED: ExecutionOutcome.FAILURE,
    EventType.OPERATION_CANCELLED: ExecutionOutcome.CANCELLED,
}


def _plotly() -> Any:
    """plotly.graph_objects, or an ImportError that says how to get it."""
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise ImportError(
            "the history Gantt chart needs plotly: pip install 'operation-dispatcher[vis]'"
        ) from None
    return go


@dataclass(frozen=True, slots=True)
class Segment:
    """One bar of the chart: a row, a status (its colour) and a span of time."""

    row: str
    status: str
    start: datetime
    end: datetime
    operation_id: UUID | None = None


# ------------------------------------------------------------------------------ the rows


def operation_segments(history: History) -> list[Segment]:
    """The bars of the operation rows, by the original's rules.

    Label: ``payload["name"]``, else ``payload["task"]``, else ``operation-N`` (1-based). Start:
    ``start_time``, else ``created_at``; end: ``finish_time``, else start + ``planned_duration``
    seconds, else start + 1 s; at least 1 s long. Status: the outcome unless NONE, else the
    state. OPERATION_PAUSED -> OPERATION_RESUMED pairs split the bar; the paused parts are
    ``PAUSED``. Without resolved operations, one 1 s bar per terminal event is derived.
    """
    if not history.operations:
        return _derived_segments(history.events)
    by_operation: dict[UUID, list[DispatchEvent]] = {}
    for event in history.events:
        if event.operation_id is not None:
            by_operation.setdefault(event.operation_id, []).append(event)
    segments: list[Segment] = []
    for position, op in enumerate(history.operations, start=1):
        start = op.start_time or op.created_at
        end = op.finish_time
        if end is None:
            end = start + (
                timedelta(seconds=op.planned_duration) if op.planned_duration else _MIN_BAR
            )
        end = max(end, start + _MIN_BAR)
        label = _label(op, position)
        status = op.outcome.value if op.outcome is not ExecutionOutcome.NONE else op.state.value
        paused = _paused_spans(by_operation.get(op.id, []), start, end)
        cursor = start
        for pause_start, pause_end in paused:
            if pause_start > cursor:
                segments.append(Segment(label, status, cursor, pause_start, op.id))
            segments.append(Segment(label, "PAUSED", pause_start, pause_end, op.id))
            cursor = pause_end
        if end > cursor:
            segments.append(Segment(label, status, cursor, end, op.id))
    return segments


def _label(op: Operation, position: int) -> str:
    for key in ("name", "task"):
        value = op.payload.get(key)
        if value is not None and value != "":
            return str(value)
    return f"operation-{position}"


def _paused_spans(
    events: list[DispatchEvent], start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """PAUSED -> RESUMED pairs of one operation within its bar; a pause never resumed lasts to
    the end of the bar."""
    spans: list[tuple[datetime, datetime]] = []
    opened: datetime | None = None
    for event in sorted(events, key=lambda e: e.created_at):
        if event.event_type is EventType.OPERATION_PAUSED and opened is None:
            opened = event.created_at
        elif event.event_type is EventType.OPERATION_RESUMED and opened is not None:
            spans.append((opened, event.created_at))
            opened = None
    if opened is not None:
        spans.append((opened, end))
    clipped = [(max(a, start), min(b, end)) for a, b in spans]
    return [(a, b) for a, b in clipped if b > a]


def _derived_segments(events: list[DispatchEvent]) -> list[Segment]:
    """One bar per operation with a terminal event: the second before it, its outcome."""
    segments: list[Segment] = []
    seen: set[UUID] = set()
    for event in sorted(events, key=lambda e: e.created_at):
        outcome = _OUTCOME_OF.get(event.event_type)
        if outcome is None or event.operation_id is None or event.operation_id in seen:
            continue
        seen.add(event.operation_id)
        segments.append(Segment(
            f"operation-{len(seen)}", outcome.value, event.created_at - _MIN_BAR,
            event.created_at, event.operation_id,
        ))
    return segments


def dispatcher_segments(history: History) -> list[Segment]:
    """The dispatcher row, from its STARTED, STOPPED, PAUSED and RESUMED events.

    ``DISPATCHER_RUNNING`` while started and not paused, ``DISPATCHER_PAUSED`` while started and
    paused, nothing while stopped (a pause may be set while stopped: it shows from the next
    start). A span still open at the end runs to the window's end, else to the last event; a
    first STOPPED (or RESUMED) event means it was running (or paused) since the history began.
    """
    marks = sorted(
        (e for e in history.events if e.event_type.is_dispatcher_event),
        key=lambda e: e.created_at,
    )
    begin, end = history.get_start(), history.get_end()
    if not marks or begin is None or end is None:
        return []
    kinds = [e.event_type for e in marks]
    running = _first_of(kinds, _STARTED, _STOPPED) is _STOPPED
    paused = _first_of(kinds, _PAUSED, _RESUMED) is _RESUMED
    segments: list[Segment] = []
    status, since = _dispatcher_status(running, paused), begin
    for event in marks:
        kind = event.event_type
        if kind in (_STARTED, _STOPPED):
            running = kind is _STARTED
        else:
            paused = kind is _PAUSED
        now = _dispatcher_status(running, paused)
        if now != status:
            if status is not None and event.created_at > since:
                segments.append(Segment(DISPATCHER_ROW, status, since, event.created_at))
            status, since = now, event.created_at
    if status is not None and end > since:
        segments.append(Segment(DISPATCHER_ROW, status, since, end))
    return segments


_STARTED = EventType.OPERATION_DISPATCHER_STARTED
_STOPPED = EventType.OPERATION_DISPATCHER_STOPPED
_PAUSED = EventType.OPERATION_DISPATCHER_PAUSED
_RESUMED = EventType.OPERATION_DISPATCHER_RESUMED


def _first_of(kinds: list[EventType], *wanted: EventType) -> EventType | None:
    return next((kind for kind in kinds if kind in wanted), None)


def _dispatcher_status(running: bool, paused: bool) -> str | None:
    if not running:
        return None
    return "DISPATCHER_PAUSED" if paused else "DISPATCHER_RUNNING"


# ------------------------------------------------------------------------------ the figure


def build_history_gantt_figure(history: History, title: str = "Operation History") -> go.Figure:
    """A Gantt chart of ``history`` (see the module docstring and :func:`operation_segments`).

    Rows top to bottom: the operations in the history's order, then ``dispatcher``. With no
    operations at all, an empty figure that says "No operations in history".
    """
    go = _plotly()
    if not isinstance(history, History):
        raise TypeError(f"history must be a History, got {type(history).__name__}")
    figure = go.Figure()
    figure.update_layout(
        title=title, showlegend=True, barmode="overlay",
        xaxis={"title": {"text": "Time (UTC)"}, "type": "date"},
        yaxis={"title": {"text": "Operation"}, "autorange": "reversed"},
    )
    operations = operation_segments(history)
    if not operations:
        figure.add_annotation(
            text=NO_OPERATIONS, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
        )
        return figure
    segments = operations + dispatcher_segments(history)
    rows = list(dict.fromkeys(s.row for s in segments))
    figure.update_yaxes(categoryorder="array", categoryarray=rows)
    statuses = list(dict.fromkeys(s.status for s in segments))
    statuses.sort(key=lambda s: list(COLOURS).index(s) if s in COLOURS else len(COLOURS))
    for status in statuses:
        mine = [s for s in segments if s.status == status]
        figure.add_trace(go.Bar(
            name=status, orientation="h", legendgroup=status,
            y=[s.row for s in mine],
            base=[format_datetime(s.start) for s in mine],
            x=[(s.end - s.start) / timedelta(milliseconds=1) for s in mine],
            marker={"color": COLOURS.get(status, "#a3a3a3")},
            customdata=[
                [status, format_datetime(s.start), format_datetime(s.end),
                 "" if s.operation_id is None else str(s.operation_id)]
                for s in mine
            ],
            hovertemplate=(
                "%{y}<br>%{customdata[0]}<br>%{customdata[1]} to %{customdata[2]}"
                "<br>%{customdata[3]}<extra></extra>"
            ),
        ))
    return figure


def write_history_gantt_html(figure: go.Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``figure`` as one HTML file that needs no network (plotly.js inlined)."""
    target = Path(path)
    figure.write_html(str(target), include_plotlyjs=True, full_html=True, auto_open=False)
    return target


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython  # type: ignore[import-not-found]
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _remote_session() -> bool:
    return any(os.environ.get(name) for name in _REMOTE_VARIABLES)


def show_history_gantt(
    history: History,
    title: str = "Operation History",
    auto_open: bool = True,
    output_html_path: str | os.PathLike[str] | None = None,
    notebook_renderer: str = "plotly_mimetype",
) -> go.Figure:
    """Build the chart and show it where it can be seen; returns the figure.

    In the first case that applies: write it to ``output_html_path`` (and open it in a browser
    if ``auto_open``); show it in Jupyter with ``notebook_renderer``; in a remote session (SSH,
    VS Code remote) write ``./history_gantt.html`` without opening it; else ``figure.show()``.
    """
    figure = build_history_gantt_figure(history, title=title)
    if output_html_path is not None:
        target = write_history_gantt_html(figure, output_html_path)
        if auto_open:
            webbrowser.open(target.resolve().as_uri())
    elif _in_notebook():
        figure.show(renderer=notebook_renderer)
    elif _remote_session():
        write_history_gantt_html(figure, REMOTE_HTML)
    else:
        figure.show()
    return figure


__all__ = [
    "COLOURS",
    "DISPATCHER_ROW",
    "Segment",
    "build_history_gantt_figure",
    "dispatcher_segments",
    "operation_segments",
    "show_history_gantt",
    "write_history_gantt_html",
]

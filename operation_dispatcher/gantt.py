"""``operation-dispatcher gantt``: a history Gantt chart from a journal file, as one HTML page.

    operation-dispatcher gantt --journal FILE [--from ISO] [--to ISO] [--limit N]
                               [--title TEXT] -o OUT.html

The journal is opened **read-only** (SQLite ``mode=ro``): nothing in it changes, and no prune
runs (SQLite may leave its empty ``-wal``/``-shm`` files beside it). A dispatcher that has the
journal open holds it exclusively, so stop it first (or read ``GET /operations/history`` from
its API). The page inlines plotly.js: it opens with no network access.

Exit status: 0 written; 1 the journal cannot be read (missing, not a journal, in use) or holds
no operation in the window, or the page cannot be written; 2 bad arguments (dates, limit) or
plotly is not installed (the ``vis`` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _checks
from .errors import ValidationError
from .models import DispatchEvent, History, Operation, TimeWindow, format_datetime, to_utc
from .visualization import build_history_gantt_figure, write_history_gantt_html

if TYPE_CHECKING:
    import sqlite3

#: Events read at most (the most recent ones in the window): a chart of more is unreadable,
#: and memory stays bounded however long the journal is.
DEFAULT_LIMIT = 100_000
#: The largest ``--limit`` accepted (a chart of a million events is as much as a browser draws).
MAX_LIMIT = 1_000_000
_CHUNK = 500  # ids per SELECT ... IN (...) (SQLite's bound on variables is far above this)


class GanttError(Exception):
    """Why the chart cannot be made; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def add_parser(commands: Any) -> None:
    """Add ``gantt`` to the command line's sub-commands."""
    gantt = commands.add_parser(
        "gantt", help="draw the history of a journal file as a Gantt chart (one HTML page)",
        description="Draw the history of a journal file as a Gantt chart in one self-contained "
                    "HTML page (needs the vis extra: pip install 'operation-dispatcher[vis]'). "
                    "The journal is read only; stop the dispatcher that has it open first.",
    )
    gantt.add_argument("--journal", metavar="FILE", required=True, help="the SQLite journal")
    gantt.add_argument("--from", dest="from_time", metavar="ISO",
                       help="events from this time (ISO 8601; no offset means UTC)")
    gantt.add_argument("--to", dest="to_time", metavar="ISO", help="events up to this time")
    gantt.add_argument("--limit", type=int, default=DEFAULT_LIMIT, metavar="N",
                       help=f"read at most the N most recent events (default {DEFAULT_LIMIT})")
    gantt.add_argument("--title", metavar="TEXT", help="the chart's title")
    gantt.add_argument("-o", "--output", metavar="OUT.html", required=True,
                       help="the HTML file to write")


def gantt_command(args: argparse.Namespace, prog: str) -> int:
    """Run ``gantt``; one line on stderr and a non-zero status when it cannot."""
    try:
        written, history = _draw(args)
    except GanttError as exc:
        print(f"{prog} gantt: {exc}", file=sys.stderr)
        return exc.status
    count = len(history.operations or [])
    print(f"{written}: {count} operations, {len(history.events)} events")
    return 0


def _draw(args: argparse.Namespace) -> tuple[Path, History]:
    from_time = _moment(args.from_time, "--from")
    to_time = _moment(args.to_time, "--to")
    if from_time is not None and to_time is not None and to_time < from_time:
        raise GanttError("--to must not be before --from", 2)
    try:
        _checks.integer(args.limit, "--limit", 1, MAX_LIMIT)
    except ValidationError as exc:
        raise GanttError(str(exc), 2) from None
    if _same_file(args.output, args.journal):
        raise GanttError(f"-o {args.output} would overwrite the journal itself", 2)
    history = read_history(args.journal, from_time, to_time, args.limit)
    if not history.operations:
        window = f" between {_shown(from_time)} and {_shown(to_time)}" if (
            from_time or to_time) else ""
        raise GanttError(f"{args.journal} holds no operations{window}: nothing to draw")
    title = args.title or f"Operation history of {history.resource_id}"
    try:
        figure = build_history_gantt_figure(history, title=title)
    except ImportError as exc:
        raise GanttError(str(exc), 2) from None
    try:
        written = write_history_gantt_html(figure, args.output)
    except OSError as exc:
        raise GanttError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    return written, history


def _same_file(output: str, journal: str) -> bool:
    """Whether ``output`` is the journal or one of SQLite's files beside it."""
    target = Path(output).resolve()
    base = Path(journal).resolve()
    return target in {base, base.with_name(base.name + "-wal"), base.with_name(base.name + "-shm")}


def _moment(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        return to_utc(text, option)
    except ValidationError:
        shown = repr(text) if len(text) <= 60 else repr(text[:57]) + "..."
        raise GanttError(
            f"{option} must be an ISO 8601 datetime such as 2026-01-31T08:00:00Z, got {shown}", 2
        ) from None


def _shown(moment: datetime | None) -> str:
    return "the beginning" if moment is None else format_datetime(moment)


# ------------------------------------------------------------------------------ reading


def read_history(
    path: str, from_time: datetime | None = None, to_time: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
) -> History:
    """The events of a journal between ``from_time`` and ``to_time`` (the most recent
    ``limit``), with the operations they name, read without changing the file."""
    import sqlite3  # only here: the command line loads no SQLite until a journal is read

    from .journal import APPLICATION_ID, SCHEMA_VERSION, select_events

    file = Path(path)
    if not file.exists():
        raise GanttError(f"{path}: no such journal file")
    if not file.is_file():
        raise GanttError(f"{path}: not a file")
    try:
        conn = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True, timeout=0.0)
    except sqlite3.Error as exc:
        raise GanttError(f"{path}: cannot open: {exc}") from None
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id != APPLICATION_ID or version < 1:
            raise GanttError(f"{path}: not an operation-dispatcher journal")
        if version > SCHEMA_VERSION:
            raise GanttError(
                f"{path}: schema version {version} is newer than this release understands "
                f"({SCHEMA_VERSION}); upgrade operation-dispatcher"
            )
        events = select_events(conn, from_time, to_time, limit)
        operations = _operations(conn, events)
        resource = _resource(conn, events)
    except sqlite3.Error as exc:
        raise GanttError(f"{path}: {_reason(exc)}") from None
    except (ValueError, KeyError, TypeError) as exc:  # a row that is not what a journal writes
        raise GanttError(f"{path}: an entry cannot be read ({exc})") from None
    finally:
        conn.close()
    return History(
        resource_id=resource, window=TimeWindow(start=from_time, end=to_time),
        events=events, operations=operations,
    )


def _reason(exc: sqlite3.Error) -> str:
    text = str(exc)
    lowered = text.lower()
    if "locked" in lowered or "busy" in lowered:
        return (f"{text}: a running dispatcher has it open (stop it first, or read GET "
                "/operations/history from its API)")
    if "not a database" in lowered or "malformed" in lowered:
        return f"{text}: not an operation-dispatcher journal, or a damaged one"
    return text


def _operations(conn: sqlite3.Connection, events: list[DispatchEvent]) -> list[Operation]:
    """The operations the events name, in the order they first appear (pruned ones skipped)."""
    ids = list(dict.fromkeys(str(e.operation_id) for e in events if e.operation_id is not None))
    found: dict[str, Operation] = {}
    for index in range(0, len(ids), _CHUNK):
        chunk = ids[index:index + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        for op_id, data in conn.execute(
            f"SELECT id, data FROM operations WHERE id IN ({marks})", chunk
        ):
            found[op_id] = Operation.from_dict(json.loads(data))
    return [found[op_id] for op_id in ids if op_id in found]


def _resource(conn: sqlite3.Connection, events: list[DispatchEvent]) -> str:
    row = conn.execute("SELECT value FROM dispatcher_state WHERE key = 'resource_id'").fetchone()
    if row is not None and isinstance(row[0], str) and row[0]:
        return str(row[0])
    return events[0].resource_id if events else "unknown"


__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "GanttError", "add_parser", "gantt_command", "read_history"]

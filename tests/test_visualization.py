"""The notebook Gantt chart on the original's rules (labels, bars, pauses, the dispatcher row,
colours), ``show_history_gantt``'s outputs, and ``operation-dispatcher gantt`` on a real
journal file."""

from __future__ import annotations

import hashlib
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from conftest import EventRecorder

from operation_dispatcher import (
    DispatchEvent,
    EventType,
    ExecutionOutcome,
    ExecutionState,
    History,
    Operation,
    OperationDispatcher,
    TimeWindow,
)
from operation_dispatcher.cli import main
from operation_dispatcher.visualization import (
    COLOURS,
    NO_OPERATIONS,
    build_history_gantt_figure,
    show_history_gantt,
)

T0 = datetime(2026, 3, 2, 8, 0, 0, tzinfo=UTC)
R = "cell-1"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def event(kind: EventType, seconds: float, op: Operation | None = None) -> DispatchEvent:
    return DispatchEvent(
        resource_id=R, event_type=kind, created_at=at(seconds),
        operation_id=None if op is None else op.id,
    )


def finished(payload: dict[str, Any], start: float, end: float | None, **fields: Any) -> Operation:
    fields.setdefault("state", ExecutionState.COMPLETED)
    fields.setdefault("outcome", ExecutionOutcome.SUCCESS)
    return Operation(
        resource_id=R, payload=payload, created_at=at(start - 5), start_time=at(start),
        finish_time=None if end is None else at(end), **fields,
    )


def bars(figure: Any) -> list[tuple[str, str, datetime, datetime]]:
    """(row, status, start, end) of every bar, sorted by row order then start."""
    found = []
    for trace in figure.data:
        for row, base, length, data in zip(trace.y, trace.base, trace.x, trace.customdata,
                                           strict=True):
            start = datetime.fromisoformat(base)
            end = start + timedelta(milliseconds=length)
            assert data[0] == trace.name
            assert datetime.fromisoformat(data[2]) == end
            found.append((row, trace.name, start, end))
    return sorted(found, key=lambda b: (b[2], b[0]))


def history_of(ops: list[Operation], events: list[DispatchEvent], **window: Any) -> History:
    referencing = [event(EventType.OPERATION_ADDED, -5, op) for op in ops]
    return History(resource_id=R, events=referencing + events, operations=ops,
                   window=TimeWindow(**window))


# ------------------------------------------------------------------------ the figure


def test_labels_bars_and_statuses_follow_the_originals_rules() -> None:
    named = finished({"name": "pick", "task": "ignored"}, 0, 10)
    tasked = finished({"task": "place"}, 10, 12, outcome=ExecutionOutcome.FAILURE)
    planned = Operation(  # running: no finish time, so start + planned_duration
        resource_id=R, payload={}, state=ExecutionState.RUNNING, start_time=at(20),
        planned_duration=30, created_at=at(15),
    )
    queued = Operation(resource_id=R, payload={"name": ""}, created_at=at(40))  # created_at, 1 s
    short = finished({"task": "blink"}, 60, 60.2, outcome=ExecutionOutcome.CANCELLED)
    figure = build_history_gantt_figure(history_of([named, tasked, planned, queued, short], []))
    assert bars(figure) == [
        ("pick", "SUCCESS", at(0), at(10)),
        ("place", "FAILURE", at(10), at(12)),
        ("operation-3", "RUNNING", at(20), at(50)),
        ("operation-4", "QUEUED", at(40), at(41)),  # empty name: the position (1-based)
        ("blink", "CANCELLED", at(60), at(61)),  # at least 1 s
    ]
    colours = {trace.name: trace.marker.color for trace in figure.data}
    assert colours["SUCCESS"] == "#22c55e"
    assert colours["FAILURE"] == "#ef4444"
    assert colours["CANCELLED"] == "#f59e0b"


def test_pauses_split_the_bar() -> None:
    op = finished({"name": "weld"}, 0, 60)
    events = [
        event(EventType.OPERATION_PAUSED, 10, op), event(EventType.OPERATION_RESUMED, 20, op),
        event(EventType.OPERATION_PAUSED, 50, op),  # never resumed: paused to the bar's end
    ]
    figure = build_history_gantt_figure(history_of([op], events))
    assert bars(figure) == [
        ("weld", "SUCCESS", at(0), at(10)),
        ("weld", "PAUSED", at(10), at(20)),
        ("weld", "SUCCESS", at(20), at(50)),
        ("weld", "PAUSED", at(50), at(60)),
    ]
    paused = next(t for t in figure.data if t.name == "PAUSED")
    assert paused.marker.color == COLOURS["PAUSED"] == "#f97316"


def test_the_dispatcher_row_shows_running_and_paused_spans() -> None:
    op = finished({"name": "pick"}, 5, 8)
    events = [
        event(EventType.OPERATION_DISPATCHER_STARTED, 0),
        event(EventType.OPERATION_DISPATCHER_PAUSED, 10),
        event(EventType.OPERATION_DISPATCHER_RESUMED, 15),
        event(EventType.OPERATION_DISPATCHER_STOPPED, 20),
        event(EventType.OPERATION_DISPATCHER_PAUSED, 25),  # paused while stopped: not drawn
        event(EventType.OPERATION_DISPATCHER_STARTED, 30),  # starts paused
        event(EventType.OPERATION_DISPATCHER_RESUMED, 40),  # open: runs to the window's end
    ]
    figure = build_history_gantt_figure(history_of([op], events, end=at(100)))
    row = [b for b in bars(figure) if b[0] == "dispatcher"]
    assert row == [
        ("dispatcher", "DISPATCHER_RUNNING", at(0), at(10)),
        ("dispatcher", "DISPATCHER_PAUSED", at(10), at(15)),
        ("dispatcher", "DISPATCHER_RUNNING", at(15), at(20)),
        ("dispatcher", "DISPATCHER_PAUSED", at(30), at(40)),
        ("dispatcher", "DISPATCHER_RUNNING", at(40), at(100)),
    ]
    colours = {trace.name: trace.marker.color for trace in figure.data}
    assert colours["DISPATCHER_RUNNING"] == "#38bdf8"
    assert colours["DISPATCHER_PAUSED"] == "#a78bfa"
    # rows: the operations top to bottom, the dispatcher last; y reversed
    assert list(figure.layout.yaxis.categoryarray) == ["pick", "dispatcher"]


def test_a_dispatcher_already_running_when_the_window_opens() -> None:
    op = finished({"name": "pick"}, 5, 8)
    events = [event(EventType.OPERATION_DISPATCHER_STOPPED, 20)]
    figure = build_history_gantt_figure(history_of([op], events, start=at(0)))
    assert [b for b in bars(figure) if b[0] == "dispatcher"] == [
        ("dispatcher", "DISPATCHER_RUNNING", at(0), at(20)),
    ]


def test_the_layout() -> None:
    figure = build_history_gantt_figure(history_of([finished({}, 0, 1)], []), title="Cell 1")
    layout = figure.layout
    assert layout.title.text == "Cell 1"
    assert layout.xaxis.title.text == "Time (UTC)" and layout.xaxis.type == "date"
    assert layout.yaxis.title.text == "Operation" and layout.yaxis.autorange == "reversed"
    assert layout.showlegend is True
    assert all(trace.orientation == "h" for trace in figure.data)


def test_without_resolved_operations_bars_come_from_terminal_events() -> None:
    ids = [UUID(int=n) for n in (1, 2, 3)]

    def on(kind: EventType, seconds: float, n: int) -> DispatchEvent:
        return DispatchEvent(resource_id=R, event_type=kind, created_at=at(seconds),
                             operation_id=ids[n])

    events = [
        on(EventType.OPERATION_STARTED, 0, 0), on(EventType.OPERATION_COMPLETED, 10, 0),
        on(EventType.OPERATION_FAILED, 20, 1), on(EventType.OPERATION_CANCELLED, 30, 2),
        on(EventType.OPERATION_STARTED, 40, 2),  # not terminal: no bar of its own
    ]
    figure = build_history_gantt_figure(History(resource_id=R, events=events))
    assert bars(figure) == [
        ("operation-1", "SUCCESS", at(9), at(10)),
        ("operation-2", "FAILURE", at(19), at(20)),
        ("operation-3", "CANCELLED", at(29), at(30)),
    ]


def test_no_operations_gives_an_empty_figure_that_says_so() -> None:
    events = [event(EventType.OPERATION_DISPATCHER_STARTED, 0)]
    figure = build_history_gantt_figure(History(resource_id=R, events=events))
    assert len(figure.data) == 0
    assert [a.text for a in figure.layout.annotations] == [NO_OPERATIONS]
    assert NO_OPERATIONS == "No operations in history"


def test_only_a_history_is_drawn() -> None:
    with pytest.raises(TypeError, match="History"):
        build_history_gantt_figure({"events": []})  # type: ignore[arg-type]


def test_without_plotly_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "plotly", None)
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    with pytest.raises(ImportError, match=r"operation-dispatcher\[vis\]"):
        build_history_gantt_figure(History(resource_id=R))


# ------------------------------------------------------------------------ show_history_gantt


def offline(html: str) -> None:
    """The page loads nothing from the network: no script or stylesheet from http(s)."""
    assert "plotly" in html.lower()
    assert not re.search(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", html, re.I)
    assert not re.search(r"<link[^>]*\bhref\s*=\s*[\"']?(https?:)?//", html, re.I)


def test_show_writes_the_page_it_is_given(tmp_path: Path) -> None:
    target = tmp_path / "chart.html"
    history = history_of([finished({"name": "pick"}, 0, 10)], [])
    figure = show_history_gantt(history, auto_open=False, output_html_path=target)
    assert figure.data[0].y == ("pick",)
    offline(target.read_text(encoding="utf-8"))


def test_show_in_a_remote_session_writes_a_file_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SSH_CONNECTION", "10.0.0.1 22 10.0.0.2 22")
    show_history_gantt(history_of([finished({"name": "pick"}, 0, 10)], []))
    offline((tmp_path / "history_gantt.html").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------ the gantt command


def make_journal(path: Path) -> dict[str, Operation]:
    """A real journal: one operation paused and resumed, one failed, one cancelled while the
    dispatcher was paused."""
    dispatcher = OperationDispatcher(R, journal=path)
    try:
        recorder = EventRecorder(dispatcher)
        dispatcher.start()
        pick = dispatcher.add_operation(
            Operation(resource_id=R, payload={"name": "pick"}, planned_duration=5)
        )
        recorder.wait_for(EventType.OPERATION_STARTED, operation_id=pick.id)
        assert dispatcher.pause_operation(pick.id) and dispatcher.resume_operation(pick.id)
        dispatcher.complete_operation(pick.id)
        drop = dispatcher.add_operation(Operation(resource_id=R, payload={"task": "drop"}))
        recorder.wait_for(EventType.OPERATION_STARTED, operation_id=drop.id)
        dispatcher.fail_operation(drop.id)
        dispatcher.pause_dispatcher_runtime()
        left = dispatcher.add_operation(Operation(resource_id=R, payload={}))
        dispatcher.cancel_operation(left.id)
        dispatcher.resume_dispatcher_runtime()
    finally:
        dispatcher.close()
    return {"pick": pick, "drop": drop, "left": left}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_gantt_draws_a_journal_into_one_offline_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "cell.db"
    make_journal(journal)
    before = digest(journal)
    out = tmp_path / "out.html"
    assert main(["gantt", "--journal", str(journal), "-o", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"{out}: 3 operations, ")
    html = out.read_text(encoding="utf-8")
    offline(html)
    for text in ("pick", "drop", "operation-3", f"Operation history of {R}"):
        assert text in html, text
    assert set(re.findall(r'"name":"([A-Z_]+)"', html)) == {
        "SUCCESS", "FAILURE", "CANCELLED", "PAUSED", "DISPATCHER_RUNNING", "DISPATCHER_PAUSED",
    }
    assert digest(journal) == before  # read only


def test_gantt_window_and_title(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = tmp_path / "cell.db"
    ops = make_journal(journal)
    out = tmp_path / "out.html"
    # naive times are UTC; a window that ends before the third operation was made leaves it out
    to_time = ops["left"].created_at.replace(tzinfo=None).isoformat()
    assert main(["gantt", "--journal", str(journal), "--to", to_time, "--title", "Shift 1",
                 "-o", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"{out}: 2 operations, ")
    html = out.read_text(encoding="utf-8")
    assert "Shift 1" in html and "operation-3" not in html


@pytest.mark.parametrize(
    ("arguments", "status", "message"),
    [
        (["--from", "yesterday"], 2, "--from must be an ISO 8601 datetime"),
        (["--to", "2026-13-01"], 2, "--to must be an ISO 8601 datetime"),
        (["--from", "2026-01-02", "--to", "2026-01-01"], 2, "--to must not be before --from"),
        (["--limit", "0"], 2, "--limit must be an integer from 1 to 1000000, got "),
        (["--limit", "1" + "0" * 30], 2, "--limit must be an integer from 1 to 1000000, got "),
        (["--to", "9999-12-31T23:59:59-01:00"], 2, "--to must be an ISO 8601 datetime"),
        (["--from", "x" * 100_000], 2, "got '" + "x" * 57 + "'...\n"),  # cut short
        (["--from", "2000-01-01T00:00:00Z", "--to", "2000-01-02T00:00:00+00:00"], 1,
         "holds no operations between 2000-01-01T00:00:00Z and 2000-01-02T00:00:00Z"),
    ],
)
def test_gantt_refuses_bad_arguments_and_empty_windows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], status: int,
    message: str,
) -> None:
    journal = tmp_path / "cell.db"
    make_journal(journal)
    out = tmp_path / "out.html"
    assert main(["gantt", "--journal", str(journal), *arguments, "-o", str(out)]) == status
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_gantt_of_an_empty_journal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = tmp_path / "empty.db"
    OperationDispatcher(R, journal=journal).close()
    assert main(["gantt", "--journal", str(journal), "-o", str(tmp_path / "o.html")]) == 1
    assert "holds no operations: nothing to draw" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such journal file"),
        (b"hello", "not an operation-dispatcher journal"),
        (b"", "not an operation-dispatcher journal"),
    ],
)
def test_gantt_refuses_what_is_not_a_journal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, message: str
) -> None:
    journal = tmp_path / "file.db"
    if content is not None:
        journal.write_bytes(content)
    assert main(["gantt", "--journal", str(journal), "-o", str(tmp_path / "o.html")]) == 1
    assert message in capsys.readouterr().err
    if content is not None:
        assert journal.read_bytes() == content  # untouched


def test_gantt_refuses_a_journal_in_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "cell.db"
    make_journal(journal)
    holder = OperationDispatcher(R, journal=journal)  # holds it exclusively
    try:
        assert main(["gantt", "--journal", str(journal), "-o", str(tmp_path / "o.html")]) == 1
    finally:
        holder.close()
    assert "a running dispatcher has it open" in capsys.readouterr().err


def test_gantt_says_when_it_cannot_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "cell.db"
    make_journal(journal)
    out = tmp_path / "missing-folder" / "o.html"
    assert main(["gantt", "--journal", str(journal), "-o", str(out)]) == 1
    assert f"cannot write {out}" in capsys.readouterr().err


def test_gantt_without_plotly_names_the_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = tmp_path / "cell.db"
    make_journal(journal)
    monkeypatch.setitem(sys.modules, "plotly", None)
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    out = tmp_path / "o.html"
    assert main(["gantt", "--journal", str(journal), "-o", str(out)]) == 2
    assert "pip install 'operation-dispatcher[vis]'" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_gantt_never_writes_over_the_journal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    journal = tmp_path / "cell.db"
    make_journal(journal)
    before = digest(journal)
    out = f"{tmp_path}/./cell.db{suffix}"
    assert main(["gantt", "--journal", str(journal), "-o", out]) == 2
    assert "would overwrite the journal itself" in capsys.readouterr().err
    assert digest(journal) == before


def test_gantt_refuses_a_newer_journal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import sqlite3

    journal = tmp_path / "cell.db"
    make_journal(journal)
    conn = sqlite3.connect(journal)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    assert main(["gantt", "--journal", str(journal), "-o", str(tmp_path / "o.html")]) == 1
    assert "schema version 99 is newer" in capsys.readouterr().err


def test_gantt_refuses_a_folder_and_a_damaged_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    out = tmp_path / "o.html"
    assert main(["gantt", "--journal", str(tmp_path), "-o", str(out)]) == 1
    assert f"{tmp_path}: not a file" in capsys.readouterr().err
    journal = tmp_path / "cell.db"
    make_journal(journal)
    conn = sqlite3.connect(journal)
    conn.execute("UPDATE events SET data = '{\"event_type\": \"no such type\"}' "
                 "WHERE seq = (SELECT MAX(seq) FROM events)")
    conn.commit()
    conn.close()
    assert main(["gantt", "--journal", str(journal), "-o", str(out)]) == 1
    assert "an entry cannot be read" in capsys.readouterr().err
    assert not out.exists()

"""The forecast while a simulated cell works, then its history as a Gantt chart (one HTML page).

* A SimulatedOperationRunner plays the machine: it runs each started operation for its
  planned_duration and completes it.
* While "pick" runs, ``dispatcher.forecast()`` says when the other jobs are expected to start
  and end. "inspect" waits for a camera that never reports ready, so it gets no made-up time,
  only the reason; "weld" is due too soon and is flagged. Paused, the dispatcher starts
  nothing, and the forecast says so.
* "pick" is paused and resumed once, and so is the dispatcher: the chart shows both.
* At the end the history is drawn into ``dispatcher_history.html`` in the current folder (it
  opens without network access). Needs plotly: ``pip install 'operation-dispatcher[vis]'``.

    python examples/dispatcher_visualization.py
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from operation_dispatcher import (
    DispatcherError,
    DispatchEvent,
    EventType,
    Operation,
    OperationDispatcher,
    SimulatedOperationRunner,
)
from operation_dispatcher.forecast import ForecastEntry

RESOURCE = "cell-1"
OUTPUT = "dispatcher_history.html"
started: dict[str, threading.Event] = {}
completed = threading.Semaphore(0)


def on_notification(event: DispatchEvent) -> None:
    if event.event_type is EventType.OPERATION_STARTED:
        started.setdefault(str(event.operation_id), threading.Event()).set()
    elif event.event_type is EventType.OPERATION_COMPLETED:
        completed.release()


def show(title: str, entries: list[ForecastEntry], names: dict[str, str]) -> None:
    """One line per operation: expected start and end (seconds from now), or the blocker."""
    print(f"forecast {title}:")
    now = datetime.now(UTC)
    for entry in entries:
        name = names[str(entry.operation_id)]
        if entry.expected_start is None:
            print(f"  {name:8} waiting on {entry.blocked_by}")
            continue
        start = (entry.expected_start - now).total_seconds()
        end = "?" if entry.expected_end is None else f"{(entry.expected_end - now).total_seconds():+.1f} s"
        late = "  misses its due date" if entry.misses_due_date else ""
        print(f"  {name:8} {entry.state.value:8} start {start:+.1f} s  end {end}{late}")


def main() -> None:
    dispatcher = OperationDispatcher(RESOURCE, on_notification_callback=on_notification)
    machine = SimulatedOperationRunner(dispatcher=dispatcher)
    soon = datetime.now(UTC) + timedelta(seconds=1)
    jobs = {
        "pick": Operation(resource_id=RESOURCE, payload={"name": "pick"}, planned_duration=0.8,
                          priority=9),
        "place": Operation(resource_id=RESOURCE, payload={"name": "place"}, planned_duration=0.4,
                           priority=5),
        "inspect": Operation(resource_id=RESOURCE, payload={"name": "inspect"},
                             planned_duration=0.3, priority=4,
                             release_conditions={"camera.ready": True}),
        "weld": Operation(resource_id=RESOURCE, payload={"name": "weld"}, planned_duration=0.4,
                          priority=1, due_date=soon),
    }
    names = {str(op.id): name for name, op in jobs.items()}
    for op in jobs.values():
        started[str(op.id)] = threading.Event()
    with dispatcher, machine:
        dispatcher.add_operations(list(jobs.values()))
        pick = jobs["pick"].id
        if not started[str(pick)].wait(5):
            raise SystemExit("pick did not start")
        try:
            dispatcher.pause_operation(pick)  # the machine pauses it, and keeps time
            time.sleep(0.1)  # (only so that the pause shows in the chart)
            dispatcher.resume_operation(pick)
        except DispatcherError as exc:  # a very slow computer: pick has finished already
            print(f"pick could not be paused: {exc}")
        show("while pick runs", dispatcher.forecast(), names)
        dispatcher.pause_dispatcher_runtime()
        show("with the dispatcher paused", dispatcher.forecast(), names)
        time.sleep(0.1)
        dispatcher.resume_dispatcher_runtime()
        for _ in range(3):  # pick, place and weld; inspect waits for the camera
            if not completed.acquire(timeout=10):
                raise SystemExit("the jobs did not complete")
        dispatcher.cancel_operation(jobs["inspect"].id)
        history = dispatcher.get_history(resolve_operations=True)
    try:
        from operation_dispatcher.visualization import show_history_gantt

        figure = show_history_gantt(
            history, title=f"{RESOURCE}: history", auto_open=False, output_html_path=OUTPUT,
        )
    except ImportError as exc:
        raise SystemExit(str(exc)) from None
    bars = sum(len(trace.y) for trace in figure.data)
    print(f"wrote {OUTPUT}: {len(history.operations or [])} operations, {bars} bars")


if __name__ == "__main__":
    main()

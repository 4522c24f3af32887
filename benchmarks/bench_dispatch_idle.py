"""OperationDispatcher idle CPU: process CPU seconds over a 5 s window in three idle situations.

(a) ``empty``: a started dispatcher with nothing queued;
(b) ``running``: one operation RUNNING (approved by the request callback, never completed) and
    100 more queued behind it;
(c) ``blocked``: 100 queued operations whose release condition names a signal that is never set.

Each window opens after the setup has settled (every event delivered, then a short pause) and
measures the whole process's CPU time (user + system, all threads) while the main thread sleeps;
``wakeups`` counts the voluntary context switches of all the process's threads in the window, so
a loop that polls shows up even when each wake-up is cheap.

Baseline, in the same run: the same 5 s window with one extra thread blocked in
``Condition.wait()`` and nothing else going on.

Target (design.md section 11): < 0.02 CPU-s per window, each situation.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from benchmarks.common import cpu_seconds, emit
from operation_dispatcher import DispatchEvent, EventType, Operation, OperationDispatcher

RESOURCE = "robot-1"
WINDOW_SECONDS = 5.0
SETTLE_SECONDS = 0.3
QUEUED = 100
SIGNAL = "plc.never_ready"
TARGET = "< 0.02 CPU-s"


def context_switches() -> int | None:
    """Voluntary context switches of every thread of this process, or None where unknown."""
    total = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
        except OSError:
            continue  # the thread ended meanwhile
    return total


def measure_window() -> tuple[float, int | None]:
    """(process CPU seconds, thread wake-ups) over WINDOW_SECONDS of the main thread sleeping."""
    time.sleep(SETTLE_SECONDS)
    switches = context_switches()
    start = cpu_seconds()
    time.sleep(WINDOW_SECONDS)
    used = cpu_seconds() - start
    after = context_switches()
    # The main thread's own sleep is one voluntary switch: not the subject's doing.
    wakeups = None if switches is None or after is None else max(0, after - switches - 1)
    return used, wakeups


def baseline_window() -> tuple[float, int | None]:
    cond = threading.Condition()
    stop = False

    def wait_forever() -> None:
        with cond:
            while not stop:
                cond.wait()

    thread = threading.Thread(target=wait_forever, name="baseline-waiter", daemon=True)
    thread.start()
    try:
        return measure_window()
    finally:
        with cond:
            stop = True
            cond.notify()
        thread.join(5)


def dispatcher_window(
    setup: Callable[[OperationDispatcher], None], **kwargs: object
) -> tuple[float, int | None, dict[str, object]]:
    """Start a dispatcher, run ``setup`` on it, settle, measure; also returns its state."""
    dispatcher = OperationDispatcher(RESOURCE, **kwargs)  # type: ignore[arg-type]
    dispatcher.start()
    try:
        setup(dispatcher)
        if not dispatcher.drain_events(10):
            raise RuntimeError("events were not delivered")
        used, wakeups = measure_window()
        state = dispatcher.get_state()
        current = state.current_operation
        info: dict[str, object] = {
            "queued": state.queue_size,
            "current": None if current is None else current.state.value,
        }
    finally:
        dispatcher.stop(10)
    return used, wakeups, info


def setup_empty(dispatcher: OperationDispatcher) -> None:
    pass


def setup_running(dispatcher: OperationDispatcher) -> None:
    running = threading.Event()

    def on_event(event: DispatchEvent) -> None:
        if event.event_type is EventType.OPERATION_STARTED:
            running.set()

    dispatcher.subscribe(on_event)
    dispatcher.add_operations(
        [Operation(resource_id=RESOURCE, payload={"n": i}) for i in range(QUEUED + 1)]
    )
    if not running.wait(10):
        raise RuntimeError("no operation started")


def setup_blocked(dispatcher: OperationDispatcher) -> None:
    dispatcher.add_operations(
        [
            Operation(resource_id=RESOURCE, payload={"n": i}, release_conditions={SIGNAL: True})
            for i in range(QUEUED)
        ]
    )
    # Wait until the loop has looked at every operation and found it blocked.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        blocked = [dispatcher.explain(op.id) for op in dispatcher.get_schedule()]
        if all(f"release_condition:{SIGNAL}" in b["blocked_by"] for b in blocked):
            return
        time.sleep(0.01)
    raise RuntimeError("operations did not become blocked")


def main() -> None:
    base_cpu, base_wakeups = baseline_window()
    cases = (
        ("empty", setup_empty, {}, "started dispatcher, empty queue"),
        (
            "running",
            setup_running,
            {"on_request_callback": lambda event: True},
            f"one RUNNING (approved, never completed) + {QUEUED} queued",
        ),
        (
            "blocked",
            setup_blocked,
            {},
            f"{QUEUED} queued, all held by release condition {SIGNAL!r} never set",
        ),
    )
    for name, setup, kwargs, desc in cases:
        used, wakeups, info = dispatcher_window(setup, **kwargs)
        emit(
            f"dispatch.idle_cpu.{name}",
            used,
            "CPU-s",
            base_cpu,
            target=TARGET,
            window_s=WINDOW_SECONDS,
            wakeups=wakeups,
            baseline_wakeups=base_wakeups,
            desc=desc,
            baseline_desc="one thread blocked in Condition.wait(), same window length",
            **info,
        )


if __name__ == "__main__":
    main()

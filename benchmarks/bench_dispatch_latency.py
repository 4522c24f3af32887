"""OperationDispatcher latencies: decide() -> OPERATION_STARTED and cancel -> OPERATION_CANCELLED.

Approval: the request callback returns PENDING and hands the request to the main thread, which
waits until the request is parked on ``decide()`` (``pending_requests()`` says so), reads
``perf_counter`` and calls ``decide(request_id, True)``; a subscriber reads ``perf_counter`` when
OPERATION_STARTED reaches it (on the event thread). Each operation is completed, and its events
drained, before the next one is added. Median over REPEAT operations.

Cancel: a dispatcher without a request callback (so the cancel is approved at once) runs one
operation; the main thread reads ``perf_counter`` and calls ``cancel_operation`` on it, and a
subscriber reads ``perf_counter`` when OPERATION_CANCELLED reaches it. Median over REPEAT.

Baseline for both, sampled alternately with ours: the Condition wake-up latency between two
threads, from just before ``notify()`` (lock taken, flag set) to the waiting thread running again.

Targets (design.md section 11): approval -> STARTED median <= 3 x the wake-up; cancel -> CANCELLED
median <= 150 us.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

from benchmarks.common import emit, percentile
from operation_dispatcher import (
    PENDING,
    DispatchEvent,
    EventType,
    Operation,
    OperationDispatcher,
)

RESOURCE = "robot-1"
REPEAT = 300
WARMUP = 20
SETTLE_SECONDS = 0.001  # let the threads of one repetition go back to sleep before timing
WAIT_SECONDS = 10.0


class WakeupProbe:
    """The baseline: a thread blocked in ``Condition.wait()`` and the time it takes to wake it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._go = False
        self._stop = False
        self._sent = 0.0
        self._woke = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._wait_loop, name="baseline-waiter", daemon=True)
        self._thread.start()

    def _wait_loop(self) -> None:
        with self._cond:
            while True:
                while not self._go and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                self._woke = time.perf_counter()
                self._go = False
                self._done.set()

    def sample_us(self) -> float:
        """One wake-up, in microseconds: notify() called -> waiter running."""
        self._done.clear()
        time.sleep(SETTLE_SECONDS)
        with self._cond:
            self._go = True
            self._sent = time.perf_counter()
            self._cond.notify()
        if not self._done.wait(WAIT_SECONDS):
            raise RuntimeError("baseline waiter did not wake")
        return (self._woke - self._sent) * 1e6

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(5)


def _wait_until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.0002)


def approval_latencies(probe: WakeupProbe, repeat: int) -> tuple[list[float], list[float]]:
    """(decide -> STARTED delivered, Condition wake-up) samples in us, taken alternately."""
    requests: list[DispatchEvent] = []
    started_at: dict[Any, float] = {}
    started = threading.Event()

    def on_request(event: DispatchEvent) -> Any:
        requests.append(event)
        return PENDING

    def on_event(event: DispatchEvent) -> None:
        if event.event_type is EventType.OPERATION_STARTED:
            started_at[event.operation_id] = time.perf_counter()
            started.set()

    dispatcher = OperationDispatcher(
        RESOURCE, on_request_callback=on_request, request_event_timeout_seconds=60.0
    )
    dispatcher.subscribe(on_event)
    ours: list[float] = []
    base: list[float] = []
    dispatcher.start()
    try:
        for i in range(repeat):
            started.clear()
            op = dispatcher.add_operation(Operation(resource_id=RESOURCE, payload={"n": i}))
            _wait_until(lambda i=i: len(requests) > i, "the start request")
            request_id = requests[i].id
            _wait_until(
                lambda request_id=request_id: any(
                    p.request_id == request_id and p.waiting_for == "decide()"
                    for p in dispatcher.pending_requests()
                ),
                "the callback to return PENDING",
            )
            dispatcher.drain_events(WAIT_SECONDS)
            time.sleep(SETTLE_SECONDS)
            sent = time.perf_counter()
            dispatcher.decide(request_id, True)
            if not started.wait(WAIT_SECONDS):
                raise RuntimeError("OPERATION_STARTED never arrived")
            ours.append((started_at[op.id] - sent) * 1e6)
            dispatcher.complete_operation(op.id)
            dispatcher.drain_events(WAIT_SECONDS)
            base.append(probe.sample_us())
    finally:
        dispatcher.stop(10)
    return ours, base


def cancel_latencies(
    probe: WakeupProbe, repeat: int
) -> tuple[list[float], list[float], list[float]]:
    """(cancel -> CANCELLED delivered, Condition wake-up, cancel call itself) samples in us."""
    cancelled_at: dict[Any, float] = {}
    running = threading.Event()
    cancelled = threading.Event()

    def on_event(event: DispatchEvent) -> None:
        kind = event.event_type
        if kind is EventType.OPERATION_CANCELLED:
            cancelled_at[event.operation_id] = time.perf_counter()
            cancelled.set()
        elif kind is EventType.OPERATION_STARTED:
            running.set()

    dispatcher = OperationDispatcher(RESOURCE)  # no request callback: every request approved
    dispatcher.subscribe(on_event)
    ours: list[float] = []
    base: list[float] = []
    calls: list[float] = []
    dispatcher.start()
    try:
        for i in range(repeat):
            running.clear()
            cancelled.clear()
            op = dispatcher.add_operation(Operation(resource_id=RESOURCE, payload={"n": i}))
            if not running.wait(WAIT_SECONDS):
                raise RuntimeError("OPERATION_STARTED never arrived")
            dispatcher.drain_events(WAIT_SECONDS)
            time.sleep(SETTLE_SECONDS)
            sent = time.perf_counter()
            result = dispatcher.cancel_operation(op.id)
            returned = time.perf_counter()
            if result is None:
                raise RuntimeError("cancel_operation was refused")
            if not cancelled.wait(WAIT_SECONDS):
                raise RuntimeError("OPERATION_CANCELLED never arrived")
            ours.append((cancelled_at[op.id] - sent) * 1e6)
            calls.append((returned - sent) * 1e6)
            dispatcher.drain_events(WAIT_SECONDS)
            base.append(probe.sample_us())
    finally:
        dispatcher.stop(10)
    return ours, base, calls



def main() -> None:
    probe = WakeupProbe()
    try:
        approval_latencies(probe, WARMUP)
        ours, base = approval_latencies(probe, REPEAT)
        wake = statistics.median(base)
        emit(
            "dispatch.approval_to_started",
            statistics.median(ours),
            "us",
            wake,
            target=f"<= {3 * wake:.1f} us",
            repeat=REPEAT,
            p90_us=percentile(ours, 90),
            baseline_p90_us=percentile(base, 90),
            desc="decide(request_id, True) called -> OPERATION_STARTED delivered to a subscriber "
            "(callback returned PENDING), median",
            baseline_desc="Condition.notify() -> the waiting thread running, median",
            target_rule="median <= 3 x baseline median",
        )

        cancel_latencies(probe, WARMUP)
        ours, base, calls = cancel_latencies(probe, REPEAT)
        emit(
            "dispatch.cancel_to_cancelled",
            statistics.median(ours),
            "us",
            statistics.median(base),
            target="<= 150 us",
            repeat=REPEAT,
            p90_us=percentile(ours, 90),
            baseline_p90_us=percentile(base, 90),
            cancel_call_us=statistics.median(calls),
            desc="cancel_operation(running op) called -> OPERATION_CANCELLED delivered to a "
            "subscriber (no request callback), median",
            baseline_desc="Condition.notify() -> the waiting thread running, median",
        )
    finally:
        probe.close()


if __name__ == "__main__":
    main()

"""Child program of test_journal_crash.py: a journaled dispatcher under a steady workload.

Usage: ``python journal_child.py JOURNAL RECOVERY SEED``. It runs until it is killed. Every line
it reports on stdout is written with one ``os.write`` (atomic on a pipe: a SIGKILL never leaves
half a line), after the fact it reports:

``READY {"current": [id, state] | null, "queued": n}``
    the dispatcher is open on the journal (recovery done) and its loop is about to start;
``ADD <id>``
    ``add_operation``/``add_operations`` returned: the add is acknowledged;
``STARTED <id>``
    an OPERATION_STARTED event reached a subscriber;
``ERROR <text>``
    something unexpected happened (the parent fails the test).

Workload: the main thread adds operations (one at a time or in small batches) while fewer than
four are queued; the request callback approves at once, denies, or answers PENDING and lets a
decider thread call ``decide()``; a completer thread completes (sometimes fails, or pauses and
resumes first) every operation that starts.
"""

from __future__ import annotations

import json
import os
import queue
import random
import sys
import threading
import traceback

from operation_dispatcher import (
    PENDING,
    EventType,
    ExecutionState,
    Operation,
    OperationDispatcher,
    RequestClosed,
    TerminationReason,
    UnknownRequest,
)

RESOURCE = "robot-1"
_out_lock = threading.Lock()


def report(*words: object) -> None:
    line = " ".join(str(w) for w in words) + "\n"
    with _out_lock:
        os.write(1, line.encode())


def guarded(fn):
    """Run ``fn`` and report anything it raises as ERROR (a thread must not die silently)."""

    def run(*args):
        try:
            return fn(*args)
        except BaseException:  # noqa: B036 - report everything, then let it propagate
            report("ERROR", json.dumps(traceback.format_exc()))
            raise

    return run


def main(path: str, recovery: str, seed: int) -> None:
    rng = random.Random(seed)
    to_decide: queue.Queue = queue.Queue()
    to_finish: queue.Queue = queue.Queue()
    room = threading.Condition()  # the adder waits here for the queue to shrink

    def on_request(event):
        if event.event_type is not EventType.OPERATION_START_REQUESTED:
            return True  # pause, resume: approve
        draw = rng.random()
        if draw < 0.25:
            to_decide.put(event.id)
            return PENDING
        if draw < 0.32:
            return False
        return True

    dispatcher = OperationDispatcher(
        RESOURCE,
        journal=path,
        recovery=recovery,
        on_request_callback=on_request,
        start_request_retry_cooldown_seconds=0.002,
        start_request_max_retries=1_000_000,
        request_event_timeout_seconds=5.0,
    )
    current = dispatcher.current_operation
    report(
        "READY",
        json.dumps(
            {
                "current": None if current is None else [str(current.id), current.state.value],
                "queued": len(dispatcher.get_schedule()),
            }
        ),
    )

    def on_event(event):
        if event.event_type is EventType.OPERATION_STARTED:
            report("STARTED", event.operation_id)
            to_finish.put(event.operation_id)
        elif event.event_type in (
            EventType.OPERATION_COMPLETED,
            EventType.OPERATION_FAILED,
            EventType.OPERATION_CANCELLED,
        ):
            with room:
                room.notify_all()

    dispatcher.subscribe(guarded(on_event))

    @guarded
    def decider() -> None:
        while True:
            request_id = to_decide.get()
            try:
                dispatcher.decide(request_id, rng.random() < 0.9, "decided later")
            except (RequestClosed, UnknownRequest):
                pass  # timed out meanwhile: fine

    @guarded
    def completer() -> None:
        while True:
            op_id = to_finish.get()
            if rng.random() < 0.5:
                # let the kill land while the operation runs (a workload delay, not a wait)
                threading.Event().wait(rng.random() * 0.004)
            draw = rng.random()
            if draw < 0.08:
                dispatcher.fail_operation(op_id, TerminationReason.EXTERNAL_ERROR)
                continue
            if draw < 0.16 and dispatcher.pause_operation(op_id):
                threading.Event().wait(rng.random() * 0.004)
                if not dispatcher.resume_operation(op_id):
                    to_finish.put(op_id)  # still paused: try again later
                    continue
            dispatcher.complete_operation(op_id)

    for target in (decider, completer):
        threading.Thread(target=target, daemon=True).start()
    dispatcher.start()

    if current is not None and current.state is ExecutionState.PAUSED:
        # recovery="pause": the operator's turn. Resume (then complete) or cancel.
        if rng.random() < 0.5:
            if dispatcher.resume_operation(current.id):
                to_finish.put(current.id)
        else:
            dispatcher.cancel_operation(current.id, TerminationReason.USER_REQUEST)

    while True:
        with room:
            room.wait_for(lambda: dispatcher.get_state().queue_size < 4, timeout=0.05)
        size = 1 if rng.random() < 0.7 else rng.randint(2, 5)
        ops = [
            Operation(resource_id=RESOURCE, priority=rng.randint(0, 3), payload={"n": i})
            for i in range(size)
        ]
        if size == 1:
            stored = [dispatcher.add_operation(ops[0])]
        else:
            stored = dispatcher.add_operations(ops)
        for op in stored:
            report("ADD", op.id)


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    except BaseException:  # noqa: B036
        report("ERROR", json.dumps(traceback.format_exc()))
        raise

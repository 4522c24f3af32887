"""Callbacks, a denial with retry, and an approval given later from another thread.

* The request callback denies the first start request for "calibrate" (the machine is not
  warmed up), so the dispatcher emits OPERATION_START_DENIED, cools down and asks again.
* For "weld" it answers PENDING: an operator (here: a thread) approves it later with
  ``dispatcher.decide(request_id, True)``.
* A SimulatedOperationRunner plays the machine: it completes each started operation after its
  planned_duration (seconds).

    python examples/dispatcher.py
"""

from __future__ import annotations

import threading

from operation_dispatcher import (
    PENDING,
    DispatchEvent,
    EventType,
    Operation,
    OperationDispatcher,
    RequestDecision,
    SimulatedOperationRunner,
)

all_done = threading.Event()
finished: list[str] = []
warmed_up = False
operator_queue: list[DispatchEvent] = []
operator_wakeup = threading.Condition()


def on_request(event: DispatchEvent) -> object:
    global warmed_up
    if event.event_type is not EventType.OPERATION_START_REQUESTED:
        return True  # allow cancel/pause/resume
    task = dispatcher.get_operation(event.operation_id).payload["task"]
    if task == "calibrate" and not warmed_up:
        warmed_up = True
        return RequestDecision(False, reasoning="spindle not warmed up yet")
    if task == "weld":
        with operator_wakeup:
            operator_queue.append(event)
            operator_wakeup.notify()
        return PENDING  # answered later by the operator thread
    return True


def operator() -> None:
    """Stands in for a person clicking "approve" in a UI, or an MCP agent."""
    with operator_wakeup:
        operator_wakeup.wait_for(lambda: operator_queue)
        event = operator_queue.pop()
    print("operator approves", event.id)
    dispatcher.decide(event.id, True, reasoning="operator checked the fixture")


def on_notification(event: DispatchEvent) -> None:
    detail = event.meta_data.get("reasoning", "")
    print(f"{event.event_type.value:32} {event.operation_id or ''} {detail}")
    if event.event_type is EventType.OPERATION_COMPLETED:
        finished.append(str(event.operation_id))
        if len(finished) == 3:
            all_done.set()


dispatcher = OperationDispatcher(
    "cnc-1",
    on_request_callback=on_request,
    on_notification_callback=on_notification,
    start_request_retry_cooldown_seconds=0.2,
)


def main() -> None:
    machine = SimulatedOperationRunner(dispatcher=dispatcher)
    operator_thread = threading.Thread(target=operator, name="operator")
    operator_thread.start()
    with dispatcher, machine:
        dispatcher.add_operations(
            [
                Operation(resource_id="cnc-1", payload={"task": "calibrate"}, priority=10,
                          planned_duration=0.3),
                Operation(resource_id="cnc-1", payload={"task": "weld"}, priority=5,
                          planned_duration=0.3),
                Operation(resource_id="cnc-1", payload={"task": "polish"}, priority=1,
                          planned_duration=0.3),
            ]
        )
        if not all_done.wait(timeout=15):
            raise SystemExit("not every operation finished")
    operator_thread.join()
    history = dispatcher.get_history(resolve_operations=True)
    print(f"{len(history.operations or [])} operations, {len(history.events)} events in history")


if __name__ == "__main__":
    main()

"""Quickstart: queue an operation, approve its start, report its completion, cancel another.

The asyncio original's README quickstart, made synchronous: no event loop, just a dispatcher
thread started by the ``with`` block.

    python examples/quickstart.py
"""

from __future__ import annotations

import threading

from operation_dispatcher import DispatchEvent, EventType, Operation, OperationDispatcher

started = threading.Event()


def on_request(event: DispatchEvent) -> bool:
    """Business logic: may this operation start, pause, resume or be cancelled?

    It is asked for all four (event.event_type says which): approve them all here, or
    cancel_operation() would be denied and return None. Only an exact True approves; False,
    None or anything else denies.
    """
    return True


def on_notification(event: DispatchEvent) -> None:
    """Observe lifecycle events (runs on the dispatcher's event thread, in order)."""
    print(f"{event.event_type.value:32} {event.operation_id or ''}")
    if event.event_type is EventType.OPERATION_STARTED:
        started.set()


def main() -> None:
    with OperationDispatcher(
        resource_id="robot-1",
        on_request_callback=on_request,
        on_notification_callback=on_notification,
    ) as dispatcher:
        operation = dispatcher.add_operation(
            Operation(payload={"task": "pickup"}, resource_id="robot-1", priority=10)
        )
        if not started.wait(timeout=5):
            raise SystemExit("the operation did not start")
        # A second one waits behind it; cancelling asks on_request too (None if it denies).
        queued = dispatcher.add_operation(
            Operation(payload={"task": "dropoff"}, resource_id="robot-1")
        )
        cancelled = dispatcher.cancel_operation(queued.id)
        if cancelled is None:
            raise SystemExit("the cancel was denied")
        print(f"cancelled: {cancelled.state} / {cancelled.outcome}")
        # The dispatcher never executes work itself: the machine (here: us) reports the end.
        done = dispatcher.complete_operation(operation.id)
        print(f"finished: {done.state} / {done.outcome}")


if __name__ == "__main__":
    main()

"""The DispatchQueue on its own: ordering, pulling and completing without a dispatcher thread.

    python examples/dispatch_queue.py
"""

from __future__ import annotations

from operation_dispatcher import DispatchQueue, Operation


def main() -> None:
    queue = DispatchQueue("robot-1")
    queue.add(Operation(resource_id="robot-1", payload={"task": "dropoff"}, priority=5))
    queue.add(Operation(resource_id="robot-1", payload={"task": "pickup"}, priority=10))

    print("dispatch order:", [op.payload["task"] for op in queue.list()])
    while (operation := queue.next()) is not None:  # pull the head: it becomes current
        print("running:", operation.payload["task"])
        queue.complete(operation)  # archive it and free the slot
        print("finished so far (most recent first):",
              [op.payload["task"] for op in queue.history()])


if __name__ == "__main__":
    main()

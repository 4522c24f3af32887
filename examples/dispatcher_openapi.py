"""The REST API inside your own threaded program (needs the ``api`` extra).

Your program keeps its threads; the API server is one more: ``ApiServer`` runs waitress on a
background thread and ``stop()`` ends it. Here

* the "machine" is a thread of ours that takes started operations from a queue, works on them
  and reports ``complete_operation`` (the dispatcher never executes work itself);
* the request callback approves everything but a "weld" while the welder is cold;
* the main thread plays an HTTP client (stdlib ``urllib``): it queues three operations through
  ``POST /operations/add``, follows them with ``GET /operations/<id>`` and prints the history.

    pip install -e '.[api]'
    python examples/dispatcher_openapi.py            # runs the scenario, then exits
    python examples/dispatcher_openapi.py --serve    # ... then keeps serving until Ctrl-C
                                                     # (Swagger UI: http://127.0.0.1:8080/apidocs)
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
import time
import urllib.request
from typing import Any
from uuid import UUID

from operation_dispatcher import DispatchEvent, EventType, OperationDispatcher, RequestDecision
from operation_dispatcher.http import ApiServer, create_app

welder_warm = threading.Event()
started: queue.Queue[UUID | None] = queue.Queue()


def on_request(event: DispatchEvent) -> object:
    """Business logic: may this start? (Runs on a dispatcher worker thread.)"""
    if event.event_type is not EventType.OPERATION_START_REQUESTED:
        return True
    op = dispatcher.get_operation(event.operation_id)
    if op is not None and op.payload.get("task") == "weld" and not welder_warm.is_set():
        welder_warm.set()  # it warms up while we say no; the retry after the cooldown passes
        return RequestDecision(False, "welder is cold")
    return True


def on_notification(event: DispatchEvent) -> None:
    print(f"  event: {event.event_type.value}")
    if event.event_type is EventType.OPERATION_STARTED:
        started.put(event.operation_id)


def machine() -> None:
    """Our own worker thread: does the work of each started operation, then reports it."""
    while (operation_id := started.get()) is not None:
        time.sleep(0.05)  # the "work"
        dispatcher.complete_operation(operation_id, meta_data={"worker": "machine-thread"})


def call(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


dispatcher = OperationDispatcher(
    "press-1",
    on_request_callback=on_request,
    on_notification_callback=on_notification,
    start_request_retry_cooldown_seconds=0.2,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 (default): any free port")
    parser.add_argument("--serve", action="store_true", help="keep serving until Ctrl-C")
    args = parser.parse_args()

    worker = threading.Thread(target=machine, name="machine")
    worker.start()
    dispatcher.start()
    server = ApiServer(create_app(dispatcher), "127.0.0.1", args.port)
    server.start()
    print(f"API on {server.url} (Swagger UI: {server.url}/apidocs)")
    try:
        added = call("POST", f"{server.url}/operations/add", [
            {"payload": {"task": "cut"}, "priority": 5},
            {"payload": {"task": "weld"}, "priority": 3},
            {"payload": {"task": "polish"}, "priority": 1},
        ])
        ids = [item["operation"]["id"] for item in added]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # a client polling, as a dashboard would
            states = [call("GET", f"{server.url}/operations/{i}")["operation"]["state"]
                      for i in ids]
            if all(state == "COMPLETED" for state in states):
                break
            time.sleep(0.05)
        for op_id in ids:
            op = call("GET", f"{server.url}/operations/{op_id}")["operation"]
            print(f"{op['payload']['task']}: {op['state']} / {op['outcome']}")
        history = call("GET", f"{server.url}/operations/history?limit=1000")
        denied = [e for e in history["events"] if e["event_type"] == "operation_start_denied"]
        print(f"history: {len(history['events'])} events, {len(denied)} denial(s)")
        if args.serve:
            print("serving; Ctrl-C stops")
            threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        dispatcher.stop()
        started.put(None)
        worker.join()
    print("stopped")


if __name__ == "__main__":
    main()

"""REST API: requests/s through a loopback HTTP client, beside a bare Flask route.

Both apps run on the same server stack (``ApiServer``: waitress on a background thread) in the
same process and run, and are called by the same client (``http.client``, one keep-alive
connection), in alternating rounds so drift hits both alike; each figure is the median round.

* ``http.add_one``: ``POST /operations/add`` with one operation (validated by the pydantic model,
  queued by the dispatcher, answered 201 with its OperationStatus). Baseline: a bare Flask route
  that parses the same JSON body and answers a small JSON list. Target: ratio >= 0.5.
* ``http.list_10k``: ``GET /operations`` with 10,000 operations queued (10,000 snapshots turned
  into JSON, ~5 MB). Baseline: a bare Flask route answering the same 10,000 dicts, built once in
  advance, so the ratio is what taking the snapshots and ``to_dict()`` cost on top of the JSON.
"""

from __future__ import annotations

import http.client
import json
import logging
import statistics
import time
from typing import Any

from flask import Flask, jsonify, request

from benchmarks.common import emit
from operation_dispatcher import Operation, OperationDispatcher
from operation_dispatcher.http import ApiServer, create_app

RESOURCE = "robot-1"
ADD_REQUESTS = 1500
ADD_ROUNDS = 5
QUEUED = 10_000
LIST_REQUESTS = 8
LIST_ROUNDS = 3


def bare_app(list_body: list[dict[str, Any]]) -> Flask:
    app = Flask("bare")

    @app.post("/bare")
    def bare() -> Any:
        data = request.get_json()
        return jsonify([{"received": len(data)}]), 201

    @app.get("/bare-list")
    def bare_list() -> Any:
        return jsonify(list_body)

    return app


def rate(port: int, method: str, path: str, body: bytes | None, count: int, status: int) -> float:
    """Requests/s for ``count`` sequential requests on one keep-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    try:
        started = time.perf_counter()
        for _ in range(count):
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status != status:
                raise RuntimeError(f"{method} {path}: {response.status}")
        return count / (time.perf_counter() - started)
    finally:
        connection.close()


def main() -> None:
    logging.getLogger("waitress").setLevel(logging.ERROR)
    add_body = json.dumps([{"payload": {"task": "pick", "bin": 7}, "priority": 3}]).encode()

    # --- POST /operations/add (one operation) vs a bare POST route
    dispatcher = OperationDispatcher(RESOURCE, operation_retention=100)
    api = ApiServer(create_app(dispatcher), port=0, threads=4)
    bare = ApiServer(bare_app([]), port=0, threads=4)
    api.start()
    bare.start()
    try:
        rate(api.port, "POST", "/operations/add", add_body, 200, 201)  # warm-up
        rate(bare.port, "POST", "/bare", add_body, 200, 201)
        ours, base = [], []
        for _ in range(ADD_ROUNDS):
            ours.append(rate(api.port, "POST", "/operations/add", add_body, ADD_REQUESTS, 201))
            base.append(rate(bare.port, "POST", "/bare", add_body, ADD_REQUESTS, 201))
        emit(
            "http.add_one", statistics.median(ours), "req/s", statistics.median(base),
            target=">= 0.5",
            meets_target=statistics.median(ours) / statistics.median(base) >= 0.5,
            requests=ADD_REQUESTS, rounds=ADD_ROUNDS, client="http.client keep-alive",
            baseline_desc="bare Flask POST route parsing the same JSON, same waitress stack",
            queued_at_end=dispatcher.get_state().queue_size,
        )
    finally:
        api.stop()
        bare.stop()
        dispatcher.stop()

    # --- GET /operations with 10,000 queued vs the same JSON from a bare route
    dispatcher = OperationDispatcher(RESOURCE)
    dispatcher.add_operations(
        Operation(resource_id=RESOURCE, payload={"task": "pick", "n": i}, priority=i % 10)
        for i in range(QUEUED)
    )
    prebuilt = [
        {"operation": op.to_dict(), "is_current_operation": False}
        for op in dispatcher.get_schedule()
    ]
    api = ApiServer(create_app(dispatcher), port=0, threads=4)
    bare = ApiServer(bare_app(prebuilt), port=0, threads=4)
    api.start()
    bare.start()
    try:
        rate(api.port, "GET", "/operations", None, 2, 200)
        rate(bare.port, "GET", "/bare-list", None, 2, 200)
        ours, base = [], []
        for _ in range(LIST_ROUNDS):
            ours.append(rate(api.port, "GET", "/operations", None, LIST_REQUESTS, 200))
            base.append(rate(bare.port, "GET", "/bare-list", None, LIST_REQUESTS, 200))
        emit(
            "http.list_10k", statistics.median(ours), "req/s", statistics.median(base),
            queued=QUEUED, requests=LIST_REQUESTS, rounds=LIST_ROUNDS,
            baseline_desc="bare Flask route returning the same 10,000 prebuilt dicts",
        )
    finally:
        api.stop()
        bare.stop()
        dispatcher.stop()


if __name__ == "__main__":
    main()

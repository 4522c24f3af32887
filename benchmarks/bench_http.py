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
* ``http.create_app``: milliseconds per ``create_app(dispatcher)`` after the first in the process
  (the blueprints and the OpenAPI document are built once per process, not per app). Baseline:
  a bare Flask app with the same URL rules and empty views, the floor any Flask app with these
  routes pays (werkzeug compiles every rule per app). Target: < 20 ms. ``first_ms`` is the first
  app of the process, ``openapi_first_ms`` the first ``GET /openapi.json`` (it builds the shared
  document), ``openapi_next_ms`` one in another app after that (a copy).
* ``http.history_query``: ``GET /operations/history?limit=10&resolve_operations=false`` with 100
  events recorded, a route whose query string flask-openapi3 validates against a pydantic model
  (``HistoryQuery``). Baseline: a bare Flask route that reads the same two arguments by hand and
  does the same handler work (``get_history`` of the same dispatcher, ``to_dict``, JSON), so the
  ratio is what the query validation and the API's request hooks cost on top of that work.
  Target: ratio >= 0.5, like ``http.add_one``.
"""

from __future__ import annotations

import http.client
import json
import logging
import statistics
import time
from typing import Any

from flask import Flask, jsonify, request

from benchmarks.common import emit, timer
from operation_dispatcher import Operation, OperationDispatcher
from operation_dispatcher.http import ApiServer, create_app

RESOURCE = "robot-1"
ADD_REQUESTS = 1500
ADD_ROUNDS = 5
QUEUED = 10_000
LIST_REQUESTS = 8
LIST_ROUNDS = 3
APPS = 30  # create_app calls timed after the first
HISTORY_EVENTS = 100
HISTORY_PATH = "/operations/history?limit=10&resolve_operations=false"
HISTORY_REQUESTS = 1500
HISTORY_ROUNDS = 5


def bare_app(
    list_body: list[dict[str, Any]], dispatcher: OperationDispatcher | None = None
) -> Flask:
    app = Flask("bare")

    @app.post("/bare")
    def bare() -> Any:
        data = request.get_json()
        return jsonify([{"received": len(data)}]), 201

    @app.get("/bare-list")
    def bare_list() -> Any:
        return jsonify(list_body)

    @app.get("/bare-history")
    def bare_history() -> Any:
        assert dispatcher is not None
        limit = int(request.args.get("limit", "50"))
        resolve = request.args.get("resolve_operations", "true") == "true"
        history = dispatcher.get_history(resolve_operations=resolve, limit=limit)
        return jsonify(history.to_dict())

    return app


def bare_routes_app(rules: list[tuple[str, list[str]]]) -> Flask:
    """A Flask app with the same URL rules (and methods) as the API, and empty views."""
    app = Flask("bare-routes")
    for index, (rule, methods) in enumerate(rules):
        app.add_url_rule(rule, f"view_{index}", _empty_view, methods=methods)
    return app


def _empty_view(**_kwargs: Any) -> str:
    return ""


def create_app_ms() -> None:
    """``http.create_app``: ms per app after the first, beside a bare Flask app's floor."""
    dispatchers = [OperationDispatcher(RESOURCE) for _ in range(APPS + 2)]
    with timer() as first:
        app = create_app(dispatchers[0])
    with timer() as openapi_first:
        app.test_client().get("/openapi.json")
    with timer() as openapi_next:
        create_app(dispatchers[1]).test_client().get("/openapi.json")
    rules = [
        (rule.rule, sorted(rule.methods or ()))
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
    ]
    ours, base = [], []
    for dispatcher in dispatchers[2:]:
        with timer() as timed:
            create_app(dispatcher)
        ours.append(timed.ms)
        with timer() as timed:
            bare_routes_app(rules)
        base.append(timed.ms)
    emit(
        "http.create_app", statistics.median(ours), "ms", statistics.median(base),
        target="< 20 ms", apps=APPS, routes=len(rules), first_ms=first.ms,
        openapi_first_ms=openapi_first.ms, openapi_next_ms=openapi_next.ms,
        baseline_desc="bare Flask app with the same URL rules and empty views",
    )


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


def history_query() -> None:
    """``http.history_query``: a query-validated GET beside a bare route doing the same work."""
    dispatcher = OperationDispatcher(RESOURCE)
    dispatcher.add_operations(
        Operation(resource_id=RESOURCE, payload={"n": i}) for i in range(HISTORY_EVENTS)
    )
    api = ApiServer(create_app(dispatcher), port=0, threads=4)
    bare = ApiServer(bare_app([], dispatcher), port=0, threads=4)
    bare_path = "/bare-history?limit=10&resolve_operations=false"
    api.start()
    bare.start()
    try:
        rate(api.port, "GET", HISTORY_PATH, None, 200, 200)  # warm-up
        rate(bare.port, "GET", bare_path, None, 200, 200)
        ours, base = [], []
        for _ in range(HISTORY_ROUNDS):
            ours.append(rate(api.port, "GET", HISTORY_PATH, None, HISTORY_REQUESTS, 200))
            base.append(rate(bare.port, "GET", bare_path, None, HISTORY_REQUESTS, 200))
        emit(
            "http.history_query", statistics.median(ours), "req/s", statistics.median(base),
            target=">= 0.5",
            meets_target=statistics.median(ours) / statistics.median(base) >= 0.5,
            path=HISTORY_PATH, events=HISTORY_EVENTS, requests=HISTORY_REQUESTS,
            rounds=HISTORY_ROUNDS, client="http.client keep-alive",
            baseline_desc="bare Flask route parsing the same query by hand, same get_history "
                          "and JSON, same waitress stack",
        )
    finally:
        api.stop()
        bare.stop()
        dispatcher.stop()


def main() -> None:
    logging.getLogger("waitress").setLevel(logging.ERROR)
    create_app_ms()
    history_query()
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

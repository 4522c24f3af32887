"""MCP server: the round trip of a ``dispatcher_get_state`` tool call, beside ``GET /dispatcher``.

Both read the same dispatcher state (one operation running, 100 queued) in the same process
and run, in alternating rounds so drift hits both alike; figures are medians and p99 over every
call of every round.

* ``mcp.get_state.inproc``: ``mcp.Client(server)`` in-process (the SDK's direct path: no
  JSON-RPC framing, the tool on an AnyIO worker thread, the result validated against its output
  schema). Baseline: the REST API's ``GET /dispatcher`` through Flask's test client (no socket).
* ``mcp.get_state.http``: streamable HTTP on loopback (uvicorn on its background thread, the
  SDK's client on one keep-alive connection, the bearer-token gate on). Baseline:
  ``GET /dispatcher`` on waitress (``ApiServer``) through ``http.client``, one keep-alive
  connection, the same token.
"""

from __future__ import annotations

import http.client
import logging
import statistics
import time
from collections.abc import Awaitable, Callable

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from benchmarks.common import emit, percentile
from operation_dispatcher import Operation, OperationDispatcher
from operation_dispatcher.credentials import Credentials
from operation_dispatcher.http import ApiServer, create_app
from operation_dispatcher.mcp import McpHttpServer, create_mcp_server

RESOURCE = "robot-1"
TOKEN = "bench-token"
CALLS = 300  # per round
ROUNDS = 4
WARMUP = 30


def busy_dispatcher() -> OperationDispatcher:
    """One running operation and 100 queued: a state with a current operation to copy."""
    dispatcher = OperationDispatcher(RESOURCE)
    dispatcher.start()
    dispatcher.add_operations([Operation(resource_id=RESOURCE, payload={"n": n}) for n in range(101)])
    while dispatcher.current_operation is None:  # the loop starts the first one at once
        time.sleep(0.001)
    return dispatcher


async def timed_calls(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    """Seconds per awaited ``call()``."""
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


def mcp_samples(target: object, count: int) -> list[float]:
    async def main() -> list[float]:
        async with Client(target) as client:  # type: ignore[arg-type]

            async def call() -> None:
                result = await client.call_tool("dispatcher_get_state", {})
                assert not result.is_error, result.content

            await timed_calls(call, WARMUP)
            return await timed_calls(call, count)

    return anyio.run(main)


def rest_samples(get: Callable[[], bytes], count: int) -> list[float]:
    for _ in range(WARMUP):
        get()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        get()
        samples.append(time.perf_counter() - started)
    return samples


def report(bench: str, unit: str, scale: float, ours: list[float], base: list[float]) -> None:
    emit(
        bench, statistics.median(ours) * scale, unit, statistics.median(base) * scale,
        p99=percentile(ours, 99) * scale, baseline_p99=percentile(base, 99) * scale,
        calls=len(ours), baseline_name="REST GET /dispatcher",
    )


def in_process(dispatcher: OperationDispatcher) -> None:
    server = create_mcp_server(dispatcher)
    client = create_app(dispatcher).test_client()

    def get() -> bytes:
        response = client.get("/dispatcher")
        assert response.status_code == 200
        return response.data

    ours: list[float] = []
    base: list[float] = []
    for _ in range(ROUNDS):
        ours += mcp_samples(server, CALLS)
        base += rest_samples(get, CALLS)
    report("mcp.get_state.inproc", "us", 1e6, ours, base)


def over_http(dispatcher: OperationDispatcher) -> None:
    credentials = Credentials.build(TOKEN, None)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    mcp_http = McpHttpServer(create_mcp_server(dispatcher), port=0, credentials=credentials)
    rest = ApiServer(create_app(dispatcher, token=TOKEN), port=0)
    with mcp_http, rest:
        connection = http.client.HTTPConnection(rest.host, rest.port, timeout=30)

        def get() -> bytes:  # (a connection idle for 10 s is closed by the server: reconnects)
            connection.request("GET", "/dispatcher", headers=headers)
            response = connection.getresponse()
            body = response.read()
            assert response.status == 200, body
            return body

        def transport() -> object:
            return streamable_http_client(mcp_http.url,
                                          http_client=httpx2.AsyncClient(headers=headers))

        ours: list[float] = []
        base: list[float] = []
        for _ in range(ROUNDS):
            ours += mcp_samples(transport(), CALLS)
            connection.close()  # a fresh keep-alive connection per round, as the MCP client's
            base += rest_samples(get, CALLS)
        connection.close()
    report("mcp.get_state.http", "ms", 1e3, ours, base)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)  # before the SDK's own INFO-level setup
    dispatcher = busy_dispatcher()
    try:
        in_process(dispatcher)
        over_http(dispatcher)
    finally:
        dispatcher.close()


if __name__ == "__main__":
    main()

"""McpHttpServer: the MCP server over streamable HTTP, on a background thread, stopped on demand.

``MCPServer.streamable_http_app()`` (a Starlette app) is wrapped in :class:`BearerTokenGate`
and served by ``uvicorn.Server`` on a named thread. The socket is bound by the constructor, so
a port in use fails there (and port 0's choice is known at once). :meth:`McpHttpServer.stop`
sets ``should_exit`` and joins: uvicorn notices within 0.1 s, gives requests in progress
``graceful_seconds`` to finish, cancels the rest, and ends the SDK's session manager.

uvicorn itself never drops a client that connects and stays silent, or sends half a request:
each would hold a socket forever. Its h11 protocol is used here with the REST server's bounds
(:class:`_BoundedH11`): at most ``connection_limit`` sockets (more are closed at once), and a
socket that receives nothing for ``idle_timeout_seconds`` while no request of it is being
answered is closed (a tool call that waits, e.g. a cancel waiting for an operator, is not idle).

The gate checks the REST API's bearer tokens (:class:`~..credentials.Credentials`, the same
table and comparison): an unknown or missing token is refused with 401, a token without the
``read`` scope with 403; each tool then checks its own scope (:mod:`.access`). It is a small
ASGI wrapper, not the SDK's OAuth settings: the cell's tokens are static bearer tokens.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from typing import Any

import h11
import uvicorn
from mcp.server.mcpserver import MCPServer
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..credentials import Credentials, bearer_token
from .access import CALLER_KEY, GATE_SCOPE, Caller

log = logging.getLogger(__name__)

#: Concurrent MCP sessions (each holds a task and its streams); more are refused by the SDK.
DEFAULT_MAX_SESSIONS = 64
#: Seconds an idle session is kept.
DEFAULT_SESSION_IDLE_SECONDS = 600.0
#: The largest request body accepted (a tool call's arguments).
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
#: Seconds requests in progress get to finish on stop before they are cancelled.
DEFAULT_GRACEFUL_SECONDS = 0.5
#: Sockets served at once (as the REST server's); more are closed as they come.
DEFAULT_CONNECTION_LIMIT = 1000
#: Seconds a socket may stay silent while none of its requests is being answered.
DEFAULT_IDLE_TIMEOUT = 10.0

Scope = dict[str, Any]


class BearerTokenGate:
    """ASGI middleware: HTTP requests need a known bearer token with the ``read`` scope.

    The caller (token name and scopes) is put into the request's scope under
    :data:`~.access.CALLER_KEY` for the tools. Lifespan messages pass through.
    """

    def __init__(self, app: Any, credentials: Credentials | None) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.credentials is None:
            await self.app(scope, receive, send)
            return
        presented = bearer_token(_header(scope, b"authorization"))
        match = None if presented is None else self.credentials.identify(presented)
        if match is None:
            await _refuse(send, 401, "unauthorized",
                          "missing or wrong bearer token: send the header "
                          "'Authorization: Bearer <token>'")
            return
        if GATE_SCOPE not in match.scopes:
            await _refuse(send, 403, "insufficient_scope",
                          f"this token lacks the scope {GATE_SCOPE!r} that MCP needs")
            return
        caller = Caller(match.name or "mcp", match.scopes)
        await self.app({**scope, CALLER_KEY: caller}, receive, send)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


async def _refuse(send: Any, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": message, "message": message, "code": code}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _BoundedH11(H11Protocol):
    """uvicorn's h11 protocol, bounded: see the module's docstring. Subclassed per server by
    :func:`_bounded_h11` with its limits."""

    connection_limit = DEFAULT_CONNECTION_LIMIT
    idle_timeout_seconds = DEFAULT_IDLE_TIMEOUT
    _last_data = 0.0
    _idle_timer: Any = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.connection_limit:
            log.warning("MCP: more than %d sockets open: %s refused", self.connection_limit,
                        self.client)
            transport.close()
            return
        self._last_data = self.loop.time()
        self._idle_timer = self.loop.call_later(self.idle_timeout_seconds, self._check_idle)

    def data_received(self, data: bytes) -> None:
        self._last_data = self.loop.time()
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        super().connection_lost(exc)

    def _check_idle(self) -> None:
        if self.transport.is_closing():
            return
        silent = self.loop.time() - self._last_data
        answering = self.conn.their_state is h11.DONE  # the request is in: being answered
        if silent >= self.idle_timeout_seconds and not answering:
            self.transport.close()
            return
        wait = self.idle_timeout_seconds - silent if silent < self.idle_timeout_seconds else 1.0
        self._idle_timer = self.loop.call_later(wait, self._check_idle)


def _bounded_h11(connection_limit: int, idle_timeout_seconds: float) -> type[_BoundedH11]:
    return type("BoundedH11", (_BoundedH11,), {
        "connection_limit": connection_limit, "idle_timeout_seconds": idle_timeout_seconds,
    })


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, telling a waiting thread when startup is over (done or failed)."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self._ready.set()


class McpHttpServer:
    """Serve ``server`` over streamable HTTP at ``http://host:port/mcp`` from a background thread.

    >>> with McpHttpServer(create_mcp_server(dispatcher), port=0) as mcp_http:
    ...     print(mcp_http.url)                      # http://127.0.0.1:PORT/mcp

    :param server: a server from :func:`~.server.create_mcp_server` (one per transport).
    :param credentials: the REST API's tokens (``Credentials.build(token, tokens)``); None:
        no token needed (bind to 127.0.0.1 then).
    :param max_sessions: concurrent MCP sessions.
    :param connection_limit: sockets served at once; more are closed as they come.
    :param idle_timeout_seconds: a socket silent this long, none of its requests being
        answered, is closed.
    :param graceful_seconds: what requests in progress get to finish on :meth:`stop`.
    """

    def __init__(
        self,
        server: MCPServer,
        host: str = "127.0.0.1",
        port: int = 8081,
        *,
        credentials: Credentials | None = None,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        session_idle_seconds: float = DEFAULT_SESSION_IDLE_SECONDS,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        graceful_seconds: float = DEFAULT_GRACEFUL_SECONDS,
        connection_limit: int = DEFAULT_CONNECTION_LIMIT,
        idle_timeout_seconds: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        app = server.streamable_http_app(
            json_response=True, max_sessions=max_sessions,
            session_idle_timeout=session_idle_seconds, max_request_body_size=max_body_bytes,
            host=host,
        )
        self.app = BearerTokenGate(app, credentials)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto named: asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and
        # an accepted socket inherits it (without, Nagle + delayed ACK add ~40 ms per answer)
        self._socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind((host, port))
            self._socket.listen(128)
        except OSError:
            self._socket.close()
            raise
        self.host, self.port = host, int(self._socket.getsockname()[1])
        config = uvicorn.Config(
            self.app, lifespan="on", log_config=None, access_log=False,
            http=_bounded_h11(connection_limit, idle_timeout_seconds),
            timeout_graceful_shutdown=graceful_seconds,  # type: ignore[arg-type]
        )
        self._ready = threading.Event()
        self._uvicorn = _Uvicorn(config, self._ready)
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/mcp"

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> None:
        """Start serving on a thread named after the address; returns once it serves.

        Raises RuntimeError when the server does not start (its cause is logged).
        """
        if self._thread is not None:
            raise RuntimeError("the MCP server was already started")
        self._thread = threading.Thread(
            target=self._serve, name=f"operation-dispatcher-mcp[{self.host}:{self.port}]",
            daemon=True,
        )
        self._thread.start()
        if not self._ready.wait(timeout) or not self._uvicorn.started:
            self.stop()
            raise RuntimeError(f"the MCP server on {self.url} did not start: {self.error}")

    def _serve(self) -> None:
        try:
            self._uvicorn.run(sockets=[self._socket])
        except BaseException as exc:  # SystemExit: uvicorn's answer to a failed startup
            self.error = exc
            log.exception("the MCP server on %s failed", self.url)
        finally:
            self._ready.set()
            self._socket.close()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop serving and join the thread (safe to call twice, or before :meth:`start`)."""
        self._uvicorn.should_exit = True
        thread = self._thread
        if thread is None:
            self._socket.close()
            return
        if thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("the MCP server thread %s did not stop in %s s", thread.name, timeout)

    def __enter__(self) -> McpHttpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = [
    "DEFAULT_CONNECTION_LIMIT",
    "DEFAULT_GRACEFUL_SECONDS",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_SESSION_IDLE_SECONDS",
    "BearerTokenGate",
    "McpHttpServer",
]

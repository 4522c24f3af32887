"""McpHttpServer: the MCP server over streamable HTTP, on a background thread, stopped on demand.

``MCPServer.streamable_http_app()`` (a Starlette app) is wrapped in :class:`BearerTokenGate`
and served by ``uvicorn.Server`` on a named thread. The socket is bound by the constructor, so
a port in use fails there (and port 0's choice is known at once). :meth:`McpHttpServer.stop`
sets ``should_exit`` and joins: uvicorn notices within 0.1 s, gives requests in progress
``graceful_seconds`` to finish, cancels the rest, and ends the SDK's session manager.

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

import uvicorn
from mcp.server.mcpserver import MCPServer

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
    "DEFAULT_GRACEFUL_SECONDS",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_SESSION_IDLE_SECONDS",
    "BearerTokenGate",
    "McpHttpServer",
]

"""ApiServer: a WSGI app served by waitress on a background thread, stopped on demand.

waitress has no "serve in the background, then stop" call of its own: ``create_server()`` binds
the socket, and its ``run()`` loops until the process ends. Here the loop runs one poll at a time
on a named thread until :meth:`ApiServer.stop` sets a flag and pulls waitress's trigger (a pipe
the loop also polls), so the stop is immediate, not a timeout later. The sockets and worker
threads are closed by the serving thread itself, the only one allowed to touch waitress's map.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

try:
    from waitress import wasyncore
    from waitress.server import create_server
except ImportError:  # pragma: no cover - part of the api extra
    raise ImportError(
        "ApiServer needs waitress: pip install 'operation-dispatcher[api]'"
    ) from None

log = logging.getLogger(__name__)


class ApiServer:
    """Serve ``app`` with waitress on ``host:port`` from a background thread.

    >>> with ApiServer(create_app(dispatcher), port=0) as server:   # port 0: any free port
    ...     print(server.url)

    :param app: a WSGI application (usually from :func:`~.app.create_app`).
    :param host: the address to bind; 127.0.0.1 unless you mean to serve the network.
    :param port: the port; 0 picks a free one (read it back from :attr:`port`).
    :param threads: waitress worker threads (each open event stream holds one).
    :param options: further waitress adjustments (e.g. ``channel_timeout``).
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        threads: int = 12,
        **options: Any,
    ) -> None:
        self.app = app
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # Bodies are checked (and refused with a JSON 413) by the app; waitress's own limit only
        # bounds what it buffers before the app sees the request.
        options.setdefault("max_request_body_size", 64 * 1024 * 1024)
        options.setdefault("ident", "operation-dispatcher")
        options.setdefault("clear_untrusted_proxy_headers", True)
        self._server = create_server(app, host=host, port=port, threads=threads, **options)

    @property
    def host(self) -> str:
        return str(self._server.effective_host)

    @property
    def port(self) -> int:
        return int(self._server.effective_port)

    @property
    def url(self) -> str:
        host = self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def start(self) -> None:
        """Start serving on a thread named after the address; returns at once."""
        if self._thread is not None:
            raise RuntimeError("the server was already started")
        self._thread = threading.Thread(
            target=self._serve, name=f"operation-dispatcher-http[{self.host}:{self.port}]",
            daemon=True,
        )
        self._thread.start()

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` (from another thread or a signal)."""
        self._serve()

    def _serve(self) -> None:
        server = self._server
        try:
            while not self._stopping.is_set():
                wasyncore.loop(
                    timeout=server.adj.asyncore_loop_timeout, map=server._map,
                    use_poll=True, count=1,
                )
        finally:
            server.task_dispatcher.shutdown(timeout=5)
            wasyncore.close_all(server._map)

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop accepting, end open event streams, finish the requests in progress, join."""
        state = getattr(self.app, "extensions", {}).get("operation_dispatcher")
        if state is not None:
            state.close()  # event streams would otherwise hold their threads until a heartbeat
        self._stopping.set()
        try:
            self._server.pull_trigger()
        except OSError:
            pass  # already closed
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("the HTTP server thread %s did not stop in %s s", thread.name, timeout)
        elif thread is None:
            # never started: close the listening socket ourselves
            self._server.task_dispatcher.shutdown(timeout=1)
            wasyncore.close_all(self._server._map)

    def __enter__(self) -> ApiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["ApiServer"]

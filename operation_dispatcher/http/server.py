"""ApiServer: a WSGI app served by waitress on a background thread, stopped on demand.

waitress has no "serve in the background, then stop" call of its own: ``create_server()`` binds
the socket, and its ``run()`` loops until the process ends. Here the loop runs one poll at a time
on a named thread until :meth:`ApiServer.stop` sets a flag and pulls waitress's trigger (a pipe
the loop also polls), so the stop is immediate, not a timeout later. The sockets and worker
threads are closed by the serving thread itself, the only one allowed to touch waitress's map.

Hostile or broken clients are bounded (waitress's defaults let ~100 idle sockets stall every
route for two minutes):

* ``connection_limit`` (default 1000) sockets are served at once; more wait in the kernel's
  backlog. It is far above what one machine's operators and tools open, so idle sockets do not
  lock the API out before the idle timeout drops them.
* ``idle_timeout_seconds`` (default 10): a socket that sends no complete request (or nothing
  after its last answer) for this long is closed; checked every second. A request in progress
  (an event stream included) is never idle.
* ``write_timeout_seconds`` (default 15): a client that takes no byte of its answer for this
  long while bytes wait for it (it stopped reading) is disconnected, with a log line, so it
  cannot hold a worker thread (waitress would wait for it forever).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

# waitress ships no type hints, and types-waitress leaves out what this module reads
# (effective_host/port, _map) and types active_channels as one channel instead of a dict:
# read as Any rather than cast around wrong stubs.
try:
    from waitress import wasyncore  # type: ignore[import-untyped]
    from waitress.channel import HTTPChannel  # type: ignore[import-untyped]
    from waitress.server import create_server  # type: ignore[import-untyped]
    from waitress.task import WSGITask  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - part of the api extra
    raise ImportError(
        "ApiServer needs waitress: pip install 'operation-dispatcher[api]'"
    ) from None

from .state import STATE_KEY

log = logging.getLogger(__name__)

#: Sockets served at once (waitress's default, 100, is reached by a hundred idle sockets).
DEFAULT_CONNECTION_LIMIT = 1000
#: Seconds a socket may stay silent before a complete request (or after its answer).
DEFAULT_IDLE_TIMEOUT = 10
#: Seconds a client may take no byte while its answer waits for it.
DEFAULT_WRITE_TIMEOUT = 15.0
#: The WSGI environ key of a callable: bytes of the answer not yet taken by the client.
UNSENT_BYTES_KEY = "operation_dispatcher.unsent_bytes"
#: The WSGI environ key of ``on_close(callback)``: ``callback()`` is called (on the serving
#: thread, so it must not wait) when the server closes the client's socket, for whatever reason.
ON_CLOSE_KEY = "operation_dispatcher.on_close"
_REAP_EVERY = 1.0  # seconds between two looks for stalled clients


class _Task(WSGITask):
    """waitress's task, telling the app how much of its answer the client has not taken yet
    and when its socket is closed (the event stream needs both; see :mod:`.events`)."""

    def get_environment(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environment()
        channel = self.channel
        environ[UNSENT_BYTES_KEY] = lambda: channel.total_outbufs_len
        environ[ON_CLOSE_KEY] = channel.on_close
        return environ


class _Channel(HTTPChannel):
    """waitress's channel, telling whoever asked when it closes (a waiting event stream would
    otherwise learn of it only at its next write)."""

    task_class = _Task

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._close_callbacks: list[Callable[[], None]] = []
        self._close_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once when the socket closes (at once if it is closed)."""
        with self._close_lock:
            if self.connected:
                self._close_callbacks.append(callback)
                return
        callback()

    def handle_close(self) -> None:
        super().handle_close()
        with self._close_lock:
            callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a close callback of %s failed", _peer(self))


class ApiServer:
    """Serve ``app`` with waitress on ``host:port`` from a background thread.

    >>> with ApiServer(create_app(dispatcher), port=0) as server:   # port 0: any free port
    ...     print(server.url)

    :param app: a WSGI application (usually from :func:`~.app.create_app`).
    :param host: the address to bind; 127.0.0.1 unless you mean to serve the network.
    :param port: the port; 0 picks a free one (read it back from :attr:`port`).
    :param threads: waitress worker threads (each open event stream holds one).
    :param connection_limit: sockets served at once; more wait in the kernel's backlog.
    :param idle_timeout_seconds: a socket silent this long without a request in progress is
        closed (whole seconds, >= 1).
    :param write_timeout_seconds: a client that takes no byte of its waiting answer for this
        long is disconnected.
    :param options: further waitress adjustments (e.g. ``backlog``).
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        threads: int = 12,
        connection_limit: int = DEFAULT_CONNECTION_LIMIT,
        idle_timeout_seconds: int = DEFAULT_IDLE_TIMEOUT,
        write_timeout_seconds: float = DEFAULT_WRITE_TIMEOUT,
        **options: Any,
    ) -> None:
        if type(idle_timeout_seconds) is not int or idle_timeout_seconds < 1:
            raise ValueError("idle_timeout_seconds must be a whole number of seconds >= 1")
        if not 0 < write_timeout_seconds < float("inf"):
            raise ValueError("write_timeout_seconds must be a finite number > 0")
        self.app = app
        self.write_timeout_seconds = float(write_timeout_seconds)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # Bodies are checked (and refused with a JSON 413) by the app; waitress's own limit only
        # bounds what it buffers before the app sees the request.
        options.setdefault("max_request_body_size", 64 * 1024 * 1024)
        options.setdefault("ident", "operation-dispatcher")
        options.setdefault("clear_untrusted_proxy_headers", True)
        options.setdefault("cleanup_interval", 1)  # look for idle sockets every second
        options.setdefault("asyncore_use_poll", True)  # select() fails beyond 1024 sockets
        self._server = create_server(
            app, host=host, port=port, threads=threads, connection_limit=connection_limit,
            channel_timeout=idle_timeout_seconds, **options,
        )
        self._server.channel_class = _Channel
        _warn_if_few_descriptors(connection_limit)

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

    def _serve(self) -> None:
        server = self._server
        next_reap = time.monotonic() + _REAP_EVERY
        try:
            while not self._stopping.is_set():
                wasyncore.loop(
                    timeout=server.adj.asyncore_loop_timeout, map=server._map,
                    use_poll=True, count=1,
                )
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + _REAP_EVERY
                    self._drop_stalled_clients()
        finally:
            server.task_dispatcher.shutdown(timeout=5)
            wasyncore.close_all(server._map)

    def _drop_stalled_clients(self) -> None:
        """Close the sockets whose client took no byte for the write timeout while bytes wait.

        waitress never gives up on such a client: the worker thread writing the answer waits
        for it forever once its buffer is full. Closing the channel (here, in the serving
        thread that owns it) wakes that worker, whose write then fails.
        """
        cutoff = time.time() - self.write_timeout_seconds  # waitress keeps wall-clock times
        for channel in list(self._server.active_channels.values()):
            if channel.total_outbufs_len and channel.last_activity < cutoff:
                log.warning(
                    "HTTP client %s took no data for %.0f s (%d bytes waiting): disconnected",
                    _peer(channel), self.write_timeout_seconds, channel.total_outbufs_len,
                )
                channel.will_close = True
                channel.handle_close()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop accepting, end open event streams and the metrics' event subscription, finish
        the requests in progress, join."""
        from .metrics import METRICS_KEY  # loaded already: create_app installs the metrics

        extensions = getattr(self.app, "extensions", {})
        state = extensions.get(STATE_KEY)
        if state is not None:
            state.close()  # event streams would otherwise hold their threads until a heartbeat
        metrics = extensions.get(METRICS_KEY)
        if metrics is not None:
            metrics.close()  # the dispatcher may live on: it must not feed a stopped server
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


def _peer(channel: Any) -> str:
    addr = getattr(channel, "addr", None)
    return f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) and len(addr) >= 2 else "?"


def _warn_if_few_descriptors(connection_limit: int) -> None:
    """Each socket is a file descriptor: say so when the process may not open enough."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < connection_limit + 64:
        log.warning(
            "the open-file limit (%d) is below connection_limit (%d) + 64: raise it "
            "(ulimit -n) or lower connection_limit", soft, connection_limit,
        )


def raise_open_file_limit(needed: int) -> int:
    """Raise this process's soft open-file limit towards ``needed`` (never above the hard
    limit); returns the soft limit now in force. For the program that owns the process (the
    CLI), not for a library that merely embeds the server."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return needed
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return needed if soft == resource.RLIM_INFINITY else soft
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


__all__ = [
    "DEFAULT_CONNECTION_LIMIT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_WRITE_TIMEOUT",
    "ON_CLOSE_KEY",
    "UNSENT_BYTES_KEY",
    "ApiServer",
    "raise_open_file_limit",
]

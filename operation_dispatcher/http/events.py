"""``GET /events/stream``: the dispatcher's events as Server-Sent Events.

Each client gets its own queue, filled by a dispatcher subscription on the dispatcher's event
thread, which must never wait for a slow client. The queue is bounded in events *and* bytes
(``queue_size``, ``buffer_bytes``): a full queue drops the event and the client is told how many
it lost (``event: events_dropped``). The response generator waits on the queue and sends a
comment line as a heartbeat when nothing happened for ``heartbeat_seconds``. An idle stream
wakes for nothing else: it costs the server one heartbeat per ``heartbeat_seconds``.

A client that went away is noticed when a write to it fails, at the latest at the second
heartbeat after it left; the server tells the stream at once when it closes the socket itself
(:data:`~.server.ON_CLOSE_KEY`), and the stream then ends and frees its slot. A client that
stops reading is disconnected and its slot freed, with a log line: before each message the
generator asks the server how many bytes of the stream the client has not taken yet (waitress,
through :data:`~.server.UNSENT_BYTES_KEY`); over ``buffer_bytes`` ends the stream. A client that
takes nothing at all for the server's write timeout is closed by the server itself (see
:mod:`.server`). Under another WSGI server only the queue bound applies. When the server stops,
every stream ends at once.

Every event is one SSE message: ``id`` is the event id, ``event`` its type (for example
``operation_started``), ``data`` the event's JSON. A client that asks with ``include`` also gets
the frames of :mod:`.live` (``request_opened``, ``signal``, ``signals_resync``, ``bridge``),
which have no ``id``: they are state, not journal events.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import TYPE_CHECKING

from flask import Response, request
from flask_openapi3 import APIBlueprint, Tag

from .. import _checks
from .errors import ApiError
from .live import DEFAULT_INTERVAL, LiveFrames
from .schemas import ErrorResponse, EventStreamQuery
from .server import ON_CLOSE_KEY, UNSENT_BYTES_KEY
from .state import api_blueprint, api_state

if TYPE_CHECKING:
    from ..dispatcher import OperationDispatcher
    from ..models import DispatchEvent
    from .state import Bridge

log = logging.getLogger(__name__)
TAG = Tag(name="Events", description="live events (Server-Sent Events)")
#: Bytes one stream client may have waiting, in its queue and again unsent at the server.
DEFAULT_STREAM_BUFFER_BYTES = 2 * 1024 * 1024
_CLOSE = "close"  # a client's ending reason when the server shuts down
_GONE = "gone"  # ... when the server closed the client's socket


def format_event(event: DispatchEvent) -> str | None:
    """One SSE message for ``event``; None (and a log line) if it is not standard JSON."""
    try:
        data = json.dumps(event.to_dict(), separators=(",", ":"), allow_nan=False)
    except ValueError:
        log.exception("event %s cannot be sent as JSON; left out of the event streams", event.id)
        return None
    return f"id: {event.id}\nevent: {event.event_type.value}\ndata: {data}\n\n"


class _Client:
    """One stream's queue of ready-made messages, bounded in count and bytes."""

    __slots__ = ("_cond", "_items", "_bytes", "max_items", "max_bytes", "dropped", "ended",
                 "unsubscribe", "peer", "live")

    def __init__(self, max_items: int, max_bytes: int, peer: str,
                 live: frozenset[str] = frozenset()) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._items: deque[str] = deque()
        self._bytes = 0
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.dropped = 0
        self.ended: str | None = None  # why the stream must end (the server closes)
        self.unsubscribe: Callable[[], None] | None = None
        self.peer = peer
        self.live = live  # the kinds of live frames it asked for (see .live)

    def offer(self, message: str) -> None:
        """Queue a message (event thread); drop it when the queue is full in count or bytes.

        A message larger than the whole budget still goes into an empty queue, or no client
        could ever receive it.
        """
        with self._cond:
            size = len(message)  # ASCII: json.dumps escapes everything else
            if self._items and (
                len(self._items) >= self.max_items or self._bytes + size > self.max_bytes
            ):
                self.dropped += 1
                return
            self._items.append(message)
            self._bytes += size
            self._cond.notify()

    def end(self, reason: str) -> None:
        with self._cond:
            self.ended = reason
            self._cond.notify()

    def take(self, timeout: float) -> tuple[str | None, int]:
        """The next message (None after ``timeout``) and the number of events lost before it."""
        with self._cond:
            if not self._items and self.ended is None:
                self._cond.wait(timeout)
            lost, self.dropped = self.dropped, 0
            if self.ended is not None or not self._items:
                return None, lost
            message = self._items.popleft()
            self._bytes -= len(message)
            return message, lost


class EventStreams:
    """The open event-stream clients of one app."""

    def __init__(
        self,
        dispatcher: OperationDispatcher,
        *,
        heartbeat_seconds: float = 15.0,
        queue_size: int = 1000,
        max_clients: int = 4,
        buffer_bytes: int = DEFAULT_STREAM_BUFFER_BYTES,
        bridges: Mapping[str, Bridge] | None = None,
        live_interval: float = DEFAULT_INTERVAL,
    ) -> None:
        _checks.seconds(heartbeat_seconds, "heartbeat_seconds")  # ValidationError: a ValueError
        _checks.integer(buffer_bytes, "buffer_bytes", minimum=1024)
        _checks.integer(queue_size, "queue_size", minimum=1)
        self._dispatcher = dispatcher
        self.heartbeat_seconds = heartbeat_seconds
        self.queue_size = queue_size
        self.max_clients = max_clients
        self.buffer_bytes = buffer_bytes
        self._lock = threading.Lock()
        self._clients: set[_Client] = set()
        self._last: tuple[object, str | None] = (None, None)  # (event id, message): one cache
        self.closing = threading.Event()
        self.live = LiveFrames(dispatcher, self._send, bridges=bridges, interval=live_interval)

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._clients)

    def open(self, include_requests: bool, peer: str = "?",
             live: frozenset[str] = frozenset()) -> _Client:
        client = _Client(self.queue_size, self.buffer_bytes, peer, live)
        with self._lock:
            if self.closing.is_set():
                raise ApiError(503, "server_closing", "the server is shutting down")
            if len(self._clients) >= self.max_clients:
                raise ApiError(
                    503, "too_many_event_streams",
                    f"at most {self.max_clients} event streams may be open at once",
                )
            self._clients.add(client)
        client.unsubscribe = self._dispatcher.subscribe(
            lambda event: self._deliver(client, event), include_requests=include_requests
        )
        if live:
            self.live.join()
        return client

    def _send(self, kind: str, message: str) -> None:
        """Queue a live frame for every client that asked for ``kind`` (never waits)."""
        with self._lock:
            clients = [client for client in self._clients if kind in client.live]
        for client in clients:
            client.offer(message)

    def _deliver(self, client: _Client, event: DispatchEvent) -> None:
        """On the event thread: format each event once for every client, then queue it."""
        event_id, message = self._last
        if event_id != event.id:
            message = format_event(event)
            self._last = (event.id, message)
        if message is not None:
            client.offer(message)

    def release(self, client: _Client) -> None:
        if client.unsubscribe is not None:
            client.unsubscribe()
            client.unsubscribe = None
        with self._lock:
            known = client in self._clients
            self._clients.discard(client)
        if known and client.live:
            self.live.leave()

    def close_all(self) -> None:
        """End every stream now (the server shuts down)."""
        self.closing.set()
        self.live.close()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.end(_CLOSE)

    def response_body(
        self, client: _Client, unsent_bytes: Callable[[], int] | None = None,
        gone: Callable[[], bool] | None = None,
    ) -> _StreamBody:
        """The response body of one client: iterate it for the SSE text; closing it releases
        the client (also when the server never started to iterate it).

        :param unsent_bytes: how many bytes of the stream the client has not taken yet.
        :param gone: True once the client's connection is closed.
        """
        return _StreamBody(self, client, unsent_bytes, gone)

    def messages(
        self, client: _Client, unsent_bytes: Callable[[], int] | None = None,
        gone: Callable[[], bool] | None = None,
    ) -> Generator[str, None, None]:
        """The SSE text of one client, until it goes away, stops reading or the server closes."""
        try:
            yield f"retry: 3000\n: connected to {self._dispatcher.resource_id}\n\n"
            next_heartbeat = time.monotonic() + self.heartbeat_seconds
            while not self.closing.is_set():
                # nothing but a message, the heartbeat or the end wakes an idle stream
                message, lost = client.take(max(0.0, next_heartbeat - time.monotonic()))
                if client.ended is not None or (gone is not None and gone()):
                    return
                if lost:
                    dropped = f"event: events_dropped\ndata: {json.dumps({'dropped': lost})}\n\n"
                    message = dropped + (message or "")
                elif message is None:
                    if time.monotonic() < next_heartbeat:
                        continue
                    message = ": heartbeat\n\n"
                if unsent_bytes is not None and not self._has_room(client, unsent_bytes()):
                    return
                next_heartbeat = time.monotonic() + self.heartbeat_seconds
                yield message
        finally:
            self.release(client)

    def _has_room(self, client: _Client, unsent: int) -> bool:
        if unsent <= self.buffer_bytes:
            return True
        log.warning(
            "event stream client %s stopped reading (%d bytes not taken, budget %d): "
            "disconnected", client.peer, unsent, self.buffer_bytes,
        )
        return False


class _StreamBody:
    __slots__ = ("_streams", "_client", "_messages")

    def __init__(
        self, streams: EventStreams, client: _Client,
        unsent_bytes: Callable[[], int] | None, gone: Callable[[], bool] | None,
    ) -> None:
        self._streams = streams
        self._client = client
        self._messages = streams.messages(client, unsent_bytes, gone)

    def __iter__(self) -> Iterator[str]:
        return self._messages

    def close(self) -> None:
        self._messages.close()
        self._streams.release(self._client)


#: The ``/events/stream`` route, shared by every app; the view reads its app's streams.
events_blueprint: APIBlueprint = api_blueprint("events", __name__, TAG)


@events_blueprint.get(
    "/events/stream", operation_id="stream_events",
    summary="Every event from now on, as Server-Sent Events (with heartbeats)",
    responses={
        200: {
            "description": (
                "an endless text/event-stream: one message per event (`id`: the event id, "
                "`event`: its type, `data`: its JSON), a `: heartbeat` comment when idle, and "
                "with `include` the live frames `request_opened`, `signal`, `signals_resync` "
                "and `bridge` (no `id`; see the `include` parameter)"
            ),
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        503: ErrorResponse,
    },
)
def stream_events(query: EventStreamQuery) -> Response:
    streams = api_state().streams
    environ = request.environ
    peer = f"{environ.get('REMOTE_ADDR', '?')}:{environ.get('REMOTE_PORT', '?')}"
    client = streams.open(query.include_requests, peer, query.include)  # type: ignore[arg-type]
    on_close = environ.get(ON_CLOSE_KEY)
    if on_close is not None:  # the server closed the socket: end the stream now, not later
        on_close(lambda: client.end(_GONE))
    return Response(
        streams.response_body(
            client, environ.get(UNSENT_BYTES_KEY), environ.get("waitress.client_disconnected")
        ),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


__all__ = ["DEFAULT_STREAM_BUFFER_BYTES", "EventStreams", "events_blueprint", "format_event"]

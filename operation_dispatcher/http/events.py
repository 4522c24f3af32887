"""``GET /events/stream``: the dispatcher's events as Server-Sent Events.

Each client gets its own bounded queue, filled by a dispatcher subscription (on the dispatcher's
event thread, which must never wait for a slow client: a full queue drops the event and the
client is told how many it lost). The response generator waits on the queue and sends a comment
line as a heartbeat when nothing happened for ``heartbeat_seconds``; writing the heartbeat is how
a client that went away is noticed (the server raises on the write), and the generator's
``finally`` then unsubscribes it.

Every event is one SSE message: ``id`` is the event id, ``event`` its type (for example
``operation_started``), ``data`` the event's JSON.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from .errors import ApiError
from .schemas import ErrorResponse, EventStreamQuery
from .state import ApiState, api_blueprint

if TYPE_CHECKING:
    from ..dispatcher import OperationDispatcher
    from ..models import DispatchEvent

TAG = Tag(name="Events", description="live events (Server-Sent Events)")
_CLOSE = object()  # put in a client's queue to end its stream


class _Client:
    __slots__ = ("queue", "dropped", "unsubscribe")

    def __init__(self, size: int) -> None:
        self.queue: queue.Queue[object] = queue.Queue(maxsize=size)
        self.dropped = 0
        self.unsubscribe: Callable[[], None] | None = None

    def on_event(self, event: DispatchEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1  # only the event thread writes it; the reader swaps it for 0

    def close(self) -> None:
        try:
            self.queue.put_nowait(_CLOSE)
        except queue.Full:
            pass  # the reader is behind; it sees the closing flag after the next item


class EventStreams:
    """The open event-stream clients of one app."""

    def __init__(
        self,
        dispatcher: OperationDispatcher,
        *,
        heartbeat_seconds: float = 15.0,
        queue_size: int = 1000,
        max_clients: int = 4,
    ) -> None:
        if heartbeat_seconds <= 0:
            raise ValueError("heartbeat_seconds must be > 0")
        self._dispatcher = dispatcher
        self.heartbeat_seconds = heartbeat_seconds
        self.queue_size = queue_size
        self.max_clients = max_clients
        self._lock = threading.Lock()
        self._clients: set[_Client] = set()
        self.closing = threading.Event()

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._clients)

    def open(self, include_requests: bool) -> _Client:
        client = _Client(self.queue_size)
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
            client.on_event, include_requests=include_requests
        )
        return client

    def release(self, client: _Client) -> None:
        if client.unsubscribe is not None:
            client.unsubscribe()
            client.unsubscribe = None
        with self._lock:
            self._clients.discard(client)

    def close_all(self) -> None:
        """End every stream now (the server shuts down)."""
        self.closing.set()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.close()

    def response_body(self, client: _Client) -> _StreamBody:
        """The response body of one client: iterate it for the SSE text; closing it releases
        the client (also when the server never started to iterate it)."""
        return _StreamBody(self, client)

    def messages(self, client: _Client) -> Iterator[str]:
        """The SSE text of one client, until it goes away or the server closes."""
        try:
            yield f"retry: 3000\n: connected to {self._dispatcher.resource_id}\n\n"
            while not self.closing.is_set():
                try:
                    item = client.queue.get(timeout=self.heartbeat_seconds)
                except queue.Empty:
                    yield ": heartbeat\n\n"
                    continue
                if item is _CLOSE:
                    return
                if client.dropped:
                    lost, client.dropped = client.dropped, 0
                    yield f"event: events_dropped\ndata: {json.dumps({'dropped': lost})}\n\n"
                event: DispatchEvent = item  # type: ignore[assignment]
                data = json.dumps(event.to_dict(), separators=(",", ":"))
                yield f"id: {event.id}\nevent: {event.event_type.value}\ndata: {data}\n\n"
        finally:
            self.release(client)


class _StreamBody:
    __slots__ = ("_streams", "_client", "_messages")

    def __init__(self, streams: EventStreams, client: _Client) -> None:
        self._streams = streams
        self._client = client
        self._messages = streams.messages(client)

    def __iter__(self) -> Iterator[str]:
        return self._messages

    def close(self) -> None:
        self._messages.close()
        self._streams.release(self._client)


def events_blueprint(state: ApiState) -> APIBlueprint:
    """The ``/events/stream`` route."""
    bp = api_blueprint("events", __name__, TAG, state)
    streams = state.streams

    @bp.get(
        "/events/stream", operation_id="stream_events",
        summary="Every event from now on, as Server-Sent Events (with heartbeats)",
        responses={
            200: {
                "description": "an endless text/event-stream; one message per event",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            503: ErrorResponse,
        },
    )
    def stream_events(query: EventStreamQuery) -> Response:
        client = streams.open(query.include_requests)
        return Response(
            streams.response_body(client),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return bp


__all__ = ["EventStreams", "events_blueprint"]

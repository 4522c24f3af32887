"""MqttLink: one dispatcher on the plant's broker (paho-mqtt, extra ``mqtt``).

Threads: paho's network thread (``loop_start``) receives commands and responses and runs the
connect callbacks; the dispatcher's event thread hands each event to :meth:`_on_event`; the
link's state thread (``operation-dispatcher-mqtt-state[<resource>]``) publishes the coalesced
state and the open approval requests; the command worker
(``operation-dispatcher-mqtt-commands[<resource>]``) runs commands and the response worker
(``...-responses[<resource>]``) answers approval requests. No dispatcher call runs on paho's
thread, so a cancel that waits for an approval never stalls the link, and the response that
approves it does not queue behind it.

Events go through our own :class:`~.outbox.Outbox` (see there for why), keyed by the store's
``seq``: published while connected, kept until the broker's PUBACK, published again in order on
every (re)connect. One lock of the link (never held while calling the dispatcher) orders the
outbox, the publish calls and the connected flag, so no event overtakes another.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any
from uuid import UUID

from .. import _checks
from ..models import DispatchEvent
from ..progress import elapsed_seconds
from ..reasons import blocked_counts
from . import topics as t
from .client import make_client, require_paho
from .commands import (
    CommandError,
    CommandHandler,
    CommandResult,
    CommandWorker,
    decode,
    parse,
)
from .outbox import Outbox
from .settings import MqttSettings

if TYPE_CHECKING:
    from ..dispatcher import OperationDispatcher

#: At most one state message per this many seconds (changes in between are coalesced).
STATE_INTERVAL_SECONDS = 0.5
#: The state message counts blockers over the first this many queued operations.
MAX_EXPLAINED = 100
#: The state message lists at most this many open requests (it counts them all).
MAX_LISTED_REQUESTS = 100
#: Request ids remembered as announced (those no longer open are forgotten first).
_ANNOUNCED_LIMIT = 1024
#: Messages paho may hold beyond twice the outbox (states, results, connection messages).
PAHO_QUEUE_MARGIN = 1000
#: The policies whose requests are published (``approvals`` "operator" and "mqtt").
PUBLISHED_WAITING_FOR = ("operator", "mqtt")


class MqttLink:
    """Publishes a dispatcher's connection, state, events and requests; takes its commands.

    :param dispatcher: the dispatcher to report and command.
    :param settings: the broker and the topic prefix (``[mqtt]``).
    :param state_interval_seconds: the least time between two state messages.

    ``start()`` returns at once (the broker may be down: events wait in the outbox and the
    link keeps trying); ``stop()`` publishes what it can, then OFFLINE, and ends every thread.
    """

    def __init__(
        self,
        dispatcher: OperationDispatcher,
        settings: MqttSettings,
        *,
        state_interval_seconds: float = STATE_INTERVAL_SECONDS,
        logger: logging.Logger | None = None,
    ) -> None:
        self._queue_full = require_paho().MQTT_ERR_QUEUE_SIZE
        resource_id = dispatcher.resource_id
        _checks.topic_level(resource_id, "resource_id")
        _checks.seconds(state_interval_seconds, "state_interval_seconds", zero=True)
        self._dispatcher = dispatcher
        self._settings = settings
        self._interval = float(state_interval_seconds)
        self._log = logger or logging.getLogger(__name__)
        self.topics = t.Topics(settings.prefix, resource_id)
        self._headers = t.Headers(resource_id)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._outbox = Outbox(settings.buffer_size)
        self._inflight: dict[int, int] = {}  # paho message id -> seq of an event
        self._acked: deque[int] = deque()  # message ids paho saw acknowledged (lock-free)
        self._ack_seen = threading.Event()
        self._connected = False
        self._subscribed = False  # the broker confirmed the commands/responses subscription
        self._dirty = True
        self._announce: bool | None = None  # None: nothing; False: new requests; True: all
        self._announced: OrderedDict[UUID, None] = OrderedDict()
        self._last_seq = 0
        self._stopping = False
        self._client: Any = None
        self._state_thread: threading.Thread | None = None
        self._unsubscribe: list[Any] = []
        self._handler = CommandHandler(dispatcher)
        self._worker = CommandWorker(f"operation-dispatcher-mqtt-commands[{resource_id}]")
        # responses have a worker of their own: a command may be waiting for the very approval
        # a response brings (a cancel under approvals.cancel = "mqtt")
        self._responses = CommandWorker(f"operation-dispatcher-mqtt-responses[{resource_id}]")
        #: connections made so far (a reconnect counts again)
        self.connections = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Subscribe to the dispatcher, start the threads and connect (in the background)."""
        if self._client is not None:
            raise RuntimeError("the MQTT link is already started")
        resource_id = self._dispatcher.resource_id
        will = self._message(t.CONNECTION, {"connectionState": t.CONNECTIONBROKEN})
        client = make_client(self._settings, self._settings.client_id_for(resource_id),
                             will=(self.topics.of(t.CONNECTION), will))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        # paho keeps what it was given until acknowledged: bounded, so that a broker that stops
        # reading (but keeps the socket open) cannot grow it without limit. Room for every
        # event twice (its own copy and ours after a reconnect) plus states and results
        client.max_queued_messages_set(2 * self._settings.buffer_size + PAHO_QUEUE_MARGIN)
        with self._lock:
            self._stopping = False
            self._client = client
        self._unsubscribe = [
            self._dispatcher.subscribe(self._on_event, include_requests=True, with_seq=True),
            self._dispatcher.signals.subscribe(lambda signal: self._touch()),
            self._dispatcher.watch_requests(lambda request: self._request_opened()),
        ]
        self._worker.start()
        self._responses.start()
        self._state_thread = threading.Thread(
            target=self._state_loop, name=f"operation-dispatcher-mqtt-state[{resource_id}]",
            daemon=True,
        )
        self._state_thread.start()
        client.connect_async(self._settings.host, self._settings.port, self._settings.keepalive)
        client.loop_start()

    def stop(self, timeout: float = 5.0) -> None:
        """Publish the events still unacknowledged (up to ``timeout``), then OFFLINE
        (retained), disconnect and end every thread."""
        client = self._client
        if client is None:
            return
        deadline = time.monotonic() + timeout
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._state_thread is not None:
            self._state_thread.join(max(0.0, deadline - time.monotonic()))
            self._state_thread = None
        self._responses.stop(max(0.0, deadline - time.monotonic()))
        self._worker.stop(max(0.0, deadline - time.monotonic()))
        if not self._wait_acknowledged(deadline):
            with self._lock:
                left = len(self._outbox)
            self._log.warning("MQTT: stopping with %d events unacknowledged (the journal has "
                              "them: GET /operations/history)", left)
        if self.is_connected:
            info = client.publish(self.topics.of(t.CONNECTION),
                                  self._message(t.CONNECTION, {"connectionState": t.OFFLINE}),
                                  qos=1, retain=True)
            try:
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                self._log.warning("MQTT: OFFLINE could not be published")
        client.disconnect()
        client.loop_stop()
        with self._lock:
            self._client = None
            self._connected = self._subscribed = False

    def _wait_acknowledged(self, deadline: float) -> bool:
        """Wait until the broker acknowledged every event (False if it did not by then)."""
        while True:
            with self._lock:
                self._settle()
                if not self._outbox or not self._connected:
                    return not self._outbox
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._ack_seen.wait(remaining)
            self._ack_seen.clear()

    def __enter__(self) -> MqttLink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ what it shows
    @property
    def is_connected(self) -> bool:
        with self._lock:
            return self._connected

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Block until connected to the broker and subscribed to the commands and responses
        (False on timeout)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._connected and self._subscribed, timeout)

    @property
    def buffered(self) -> int:
        """Events not yet acknowledged by the broker."""
        with self._lock:
            self._settle()
            return len(self._outbox)

    @property
    def dropped(self) -> int:
        """Events dropped unacknowledged because the outbox was full."""
        with self._lock:
            return self._outbox.dropped

    # ------------------------------------------------------------------ paho's thread
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            self._log.warning("MQTT: %s:%s refused the connection: %s", self._settings.host,
                              self._settings.port, reason_code)
            return
        client.subscribe([(self.topics.of(name), 1) for name in t.SUBSCRIBED])
        client.publish(self.topics.of(t.CONNECTION),
                       self._message(t.CONNECTION, {"connectionState": t.ONLINE}),
                       qos=1, retain=True)
        with self._cond:
            self._settle()
            self._inflight.clear()  # ids of the last connection: paho's resends settle nothing
            for seq, payload in self._outbox.pending():  # in seq order, before any new event
                self._send_event(seq, payload)
            self._connected = True
            self.connections += 1
            self._dirty = True
            self._announce = True  # publish every open request again: it may have been missed
            self._cond.notify_all()
        self._log.info("MQTT: connected to %s:%s", self._settings.host, self._settings.port)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        with self._lock:
            was, self._connected = self._connected, False
            self._subscribed = False
        if was and not self._stopping:
            self._log.warning("MQTT: lost the broker (%s); reconnecting", reason_code)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any,
                      properties: Any) -> None:
        refused = [code for code in reason_codes if code.is_failure]
        if refused:  # the broker's ACL, say: no command can reach this controller
            self._log.error("MQTT: the broker refused the subscription to %s/%s: %s",
                            self.topics.of(""), "{commands,responses}", refused)
            return
        with self._cond:
            self._subscribed = True
            self._cond.notify_all()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any,
                    properties: Any) -> None:
        # called with paho's message lock held: no lock of ours here (publish() waits on it)
        self._acked.append(mid)
        self._ack_seen.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        name = message.topic.rsplit("/", 1)[-1]
        if name == t.COMMANDS:
            try:
                command = parse(message.payload)
            except CommandError as exc:
                self._answer(CommandResult.refused(exc, None, getattr(exc, "command_id", None)))
                return
            self._submit(self._worker, lambda: self._handler.handle(command), command.command,
                         command.command_id)
        elif name == t.RESPONSES:
            try:
                data = decode(message.payload, "response")
            except CommandError as exc:
                self._answer(CommandResult.refused(exc, "respond", None))
                return
            command_id = data.get("command_id")
            self._submit(self._responses, lambda: self._handler.respond(data), "respond",
                         command_id if isinstance(command_id, str) else None)

    def _submit(self, worker: CommandWorker, run: Any, command: str,
                command_id: str | None) -> None:
        if not worker.submit(run, self._answer):
            self._answer(CommandResult.refused(CommandError(
                503, "command_queue_full", "too many commands waiting; nothing was applied, "
                "send it again later"), command, command_id))

    def _answer(self, result: CommandResult) -> None:
        client = self._client
        if client is not None:
            client.publish(self.topics.of(t.COMMAND_RESULTS),
                           self._message(t.COMMAND_RESULTS, result.to_body()), qos=1)

    # ------------------------------------------------------------------ events
    def _on_event(self, event: DispatchEvent, seq: int | None) -> None:
        """On the dispatcher's event thread: into the outbox, and out if connected."""
        if seq is None:  # every event of a dispatcher has one; nothing to key it by otherwise
            return
        payload = self._message(t.EVENTS, {"seq": seq, "event": event.to_dict()})
        with self._cond:
            self._settle()
            self._outbox.put(seq, payload)
            self._last_seq = seq
            if self._connected:
                self._send_event(seq, payload)
            self._dirty = True
            self._cond.notify_all()

    def _send_event(self, seq: int, payload: bytes) -> None:
        """Hand one event to paho (lock held: publish order is seq order)."""
        info = self._client.publish(self.topics.of(t.EVENTS), payload, qos=1)
        if info.rc != self._queue_full:  # refused: it stays in the outbox for the reconnect
            self._inflight[info.mid] = seq

    def _settle(self) -> None:
        """Drop acknowledged events from the outbox (lock held)."""
        acked, inflight, outbox = self._acked, self._inflight, self._outbox
        while acked:
            seq = inflight.pop(acked.popleft(), None)
            if seq is not None:
                outbox.ack(seq)

    def _request_opened(self) -> None:
        """A request waits for decide(): the state thread publishes it (and the new state)."""
        with self._cond:
            self._dirty = True
            self._announce = self._announce or False
            self._cond.notify_all()

    def _touch(self) -> None:
        with self._cond:
            self._dirty = True
            self._cond.notify_all()

    # ------------------------------------------------------------------ the state thread
    def _state_loop(self) -> None:
        """Open requests at once; the state at most once per interval (changes coalesce)."""
        last = float("-inf")
        while True:
            with self._cond:
                while not self._stopping and not (
                    self._connected and (self._dirty or self._announce is not None)
                ):
                    self._cond.wait()
                if self._stopping:
                    return
                wait = last + self._interval - time.monotonic()
                state_due = self._dirty and wait <= 0
                if self._announce is None and not state_due:
                    self._cond.wait(wait)
                    continue
                announce, self._announce = self._announce, None
                if state_due:
                    self._dirty = False
                self._settle()
            try:
                if announce is not None:
                    self._announce_requests(everything=announce)
                if state_due:
                    self._publish_state()
            except Exception:  # a failed read must not end the thread: the next change retries
                self._log.exception("MQTT: publishing the state failed")
            if state_due:
                last = time.monotonic()

    def _publish_state(self) -> None:
        dispatcher = self._dispatcher
        state = dispatcher.get_state()
        blocked, examined = blocked_counts(dispatcher, MAX_EXPLAINED)
        requests = dispatcher.pending_requests()
        with self._lock:
            last_seq, buffered, dropped = self._last_seq, len(self._outbox), self._outbox.dropped
        current = state.current_operation
        body = {
            "state": state.to_dict(),
            "elapsed_seconds": None if current is None else elapsed_seconds(current),
            "blocked": dict(sorted(blocked.items())),
            "blocked_examined": examined,
            "pending_request_count": len(requests),
            "pending_requests": [r.to_dict() for r in requests[:MAX_LISTED_REQUESTS]],
            "last_seq": last_seq,
            "outbox": {"buffered": buffered, "dropped": dropped},
        }
        self._publish(t.STATE, body, retain=True)

    def _announce_requests(self, everything: bool) -> None:
        """Publish the open requests of the policies "operator" and "mqtt" (only new ones,
        unless ``everything``), each with a snapshot of its operation."""
        open_ids = set()
        for request in self._dispatcher.pending_requests():
            if request.waiting_for not in PUBLISHED_WAITING_FOR:
                continue
            open_ids.add(request.request_id)
            if request.request_id in self._announced and not everything:
                continue
            op = self._dispatcher.get_operation(request.operation_id)
            self._publish(t.REQUESTS, {
                "request": request.to_dict(),
                "operation": None if op is None else op.to_dict(),
            })
            self._announced[request.request_id] = None
        for request_id in [r for r in self._announced if r not in open_ids]:
            del self._announced[request_id]
        while len(self._announced) > _ANNOUNCED_LIMIT:
            self._announced.popitem(last=False)

    # ------------------------------------------------------------------ helpers
    def _message(self, topic: str, body: dict[str, Any]) -> bytes:
        return t.encode(self._headers.stamp(topic, body))

    def _publish(self, topic: str, body: dict[str, Any], retain: bool = False) -> None:
        client = self._client
        if client is not None:
            client.publish(self.topics.of(topic), self._message(topic, body), qos=1,
                           retain=retain)


__all__ = ["MAX_EXPLAINED", "MqttLink", "PUBLISHED_WAITING_FOR", "STATE_INTERVAL_SECONDS"]

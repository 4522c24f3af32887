"""FleetView: every controller on a broker, from their retained connection and state messages.

``operation-dispatcher fleet --broker HOST:PORT`` prints it as a live table; ``--json`` prints
one snapshot for scripts. Whatever arrives is untrusted (anyone on the broker may publish under
the prefix): a message that is too large, not strict JSON (the MQTT commands' refusal: no NaN,
no infinities, no huge integers, no deep nesting) or not of the expected shape is counted by
reason, logged once per reason, and ignored; a field of the wrong type, out of range or not
printable (a terminal escape would redraw the operator's screen) is shown as unknown; at most
:data:`MAX_CONTROLLERS` controllers are tracked.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from .. import _checks
from ..errors import ValidationError
from . import topics as t
from .client import make_client
from .settings import MqttSettings

#: Controllers tracked at most (a flood of new names beyond it is counted and ignored).
MAX_CONTROLLERS = 10_000
#: A state or connection message larger than this is ignored.
MAX_MESSAGE_BYTES = 1024 * 1024
_CONNECTION_STATES = (t.ONLINE, t.OFFLINE, t.CONNECTIONBROKEN)
#: Why a message was ignored (the keys of :attr:`FleetView.ignored_by_reason`: a fixed set).
IGNORED_REASONS = ("topic", "too_large", "not_json", "unusable_json", "not_an_object",
                   "too_many_controllers", "unknown_controller", "bad_connection", "bad_state")

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Controller:
    """What the fleet view knows of one controller."""

    resource_id: str
    connection: str | None = None
    connection_at: str | None = None
    is_running: bool | None = None
    is_paused: bool | None = None
    queue_size: int | None = None
    current_operation: dict[str, Any] | None = None
    elapsed_seconds: float | None = None
    pending_requests: int | None = None
    blocked: dict[str, int] = field(default_factory=dict)
    last_seq: int | None = None
    state_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    @property
    def dispatcher(self) -> str:
        if self.is_running is None:
            return "?"
        if not self.is_running:
            return "stopped"
        return "paused" if self.is_paused else "running"


def _int(value: Any) -> int | None:
    return value if type(value) is int and 0 <= value < 2**63 else None


def _text(value: Any, limit: int = 64) -> str | None:
    """Printable text cut to ``limit``, else None (a control character could redraw a terminal)."""
    return value[:limit] if isinstance(value, str) and value[:limit].isprintable() else None


def _fraction(value: Any) -> float | None:
    try:
        return _checks.progress_fraction(value)
    except ValidationError:
        return None


def _seconds(value: Any) -> float | int | None:
    try:
        return _checks.seconds(value, "elapsed_seconds", optional=True, zero=True, got=False)
    except ValidationError:
        return None


class FleetView:
    """Subscribes to ``<prefix>/+/connection`` and ``<prefix>/+/state``; thread-safe reads."""

    def __init__(self, settings: MqttSettings, *, max_controllers: int = MAX_CONTROLLERS) -> None:
        self._settings = settings
        self._prefix = settings.prefix
        self._max = max_controllers
        self._cond = threading.Condition()
        self._controllers: dict[str, Controller] = {}
        self._client: Any = None
        self._subscribed = False
        #: messages ignored: malformed, too large, or beyond max_controllers
        self.ignored = 0
        #: the same, by reason (:data:`IGNORED_REASONS`); each reason is logged once
        self.ignored_by_reason = dict.fromkeys(IGNORED_REASONS, 0)
        #: messages applied (each one changes :attr:`version`)
        self.version = 0

    def start(self) -> None:
        client_id = f"operation-dispatcher-fleet-{uuid.uuid4().hex[:12]}"
        client = make_client(self._settings, client_id)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        client.connect_async(self._settings.host, self._settings.port, self._settings.keepalive)
        client.loop_start()

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def __enter__(self) -> FleetView:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ reading
    def wait_subscribed(self, timeout: float | None = None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._subscribed, timeout)

    def wait_for(self, predicate: Any, timeout: float | None = None) -> bool:
        """Block until ``predicate(view)`` is true (checked after every change)."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def wait_quiet(self, quiet: float, timeout: float) -> None:
        """Wait until no message came for ``quiet`` seconds (the retained ones are in), or
        ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                seen = self.version
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(min(quiet, remaining))
                if self.version == seen:
                    return

    def controllers(self) -> list[Controller]:
        """Copies of every controller, by resource id."""
        with self._cond:
            return [Controller(**c.to_dict()) for _, c in sorted(self._controllers.items())]

    def get(self, resource_id: str) -> Controller | None:
        with self._cond:
            found = self._controllers.get(resource_id)
            return None if found is None else Controller(**found.to_dict())

    def snapshot(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self.controllers()]

    # ------------------------------------------------------------------ paho's thread
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            return
        client.subscribe([(t.Topics.wildcard(self._prefix, t.CONNECTION), 1),
                          (t.Topics.wildcard(self._prefix, t.STATE), 1)])

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any,
                      properties: Any) -> None:
        with self._cond:
            self._subscribed = True
            self._cond.notify_all()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        first = False
        with self._cond:
            reason = self._apply(message.topic, message.payload)
            if reason is None:
                self.version += 1
            else:
                self.ignored += 1
                self.ignored_by_reason[reason] += 1
                first = self.ignored_by_reason[reason] == 1
            self._cond.notify_all()
        if first:  # once per reason: a flood of junk must not flood the log
            log.warning("fleet view: ignored a message on %.200r (%s); further ones of this "
                        "kind are only counted", message.topic, reason)

    def _apply(self, topic: str, payload: bytes) -> str | None:
        """Take one message into the table (lock held); why it is ignored, or None."""
        where = t.Topics.split(self._prefix, topic)
        if where is None:
            return "topic"
        resource_id, name = where
        try:
            _checks.topic_level(resource_id, "resource_id")
        except ValidationError:
            return "topic"
        if not payload:  # a retained message cleared: the controller is gone
            return None if self._controllers.pop(resource_id, None) else "unknown_controller"
        if len(payload) > MAX_MESSAGE_BYTES:
            return "too_large"
        try:
            data = _checks.parse_json(payload, name)
        except ValidationError:
            return "not_json"
        try:
            _checks.check_json_data(data, name)
        except ValidationError:
            return "unusable_json"
        if not isinstance(data, dict):
            return "not_an_object"
        controller = self._controllers.get(resource_id)
        if controller is None:
            if len(self._controllers) >= self._max:
                return "too_many_controllers"
            controller = Controller(resource_id)
        if name == t.CONNECTION:
            state = data.get("connectionState")
            if state not in _CONNECTION_STATES:
                return "bad_connection"
            controller.connection = state
            controller.connection_at = _text(data.get("timestamp"))
        elif name == t.STATE:
            if not self._apply_state(controller, data):
                return "bad_state"
        else:
            return "topic"
        self._controllers[resource_id] = controller
        return None

    @staticmethod
    def _apply_state(controller: Controller, data: dict[str, Any]) -> bool:
        state = data.get("state")
        if not isinstance(state, dict):
            return False
        running, paused = state.get("is_running"), state.get("is_paused")
        if type(running) is not bool or type(paused) is not bool:
            return False
        controller.is_running, controller.is_paused = running, paused
        controller.queue_size = _int(state.get("queue_size"))
        current = state.get("current_operation")
        controller.current_operation = None
        if isinstance(current, dict):
            progress = current.get("progress")
            fraction = progress.get("fraction") if isinstance(progress, dict) else None
            controller.current_operation = {
                "id": _text(current.get("id")),
                "state": _text(current.get("state")),
                "job_id": _text(current.get("job_id")),
                "progress": _fraction(fraction),
                "message": _text(progress.get("message"), 80)
                if isinstance(progress, dict) else None,
            }
        controller.elapsed_seconds = _seconds(data.get("elapsed_seconds"))
        controller.pending_requests = _int(data.get("pending_request_count"))
        blocked = data.get("blocked")
        controller.blocked = {
            k[:40]: v for k, v in islice(blocked.items(), 16)
            if _text(k, 40) is not None and _int(v) is not None
        } if isinstance(blocked, dict) else {}
        controller.last_seq = _int(data.get("last_seq"))
        controller.state_at = _text(data.get("timestamp"))
        return True


_COLUMNS = ("RESOURCE", "CONNECTION", "DISPATCHER", "CURRENT OPERATION", "PROGRESS", "QUEUE",
            "PENDING", "BLOCKED")


def render_table(controllers: list[Controller]) -> str:
    """The fleet as a fixed-width text table (one line per controller)."""
    rows = [_COLUMNS]
    for c in controllers:
        op = c.current_operation
        current = "-" if op is None else f"{(op['id'] or '?')[:8]} {op['state'] or '?'}"
        progress = "-"
        if op is not None and op["progress"] is not None:
            progress = f"{op['progress'] * 100:.0f}%"
        if c.elapsed_seconds is not None:
            progress += f" {c.elapsed_seconds:.0f}s"
        blocked = ", ".join(f"{k}:{v}" for k, v in c.blocked.items()) or "-"
        rows.append((
            c.resource_id, c.connection or "?", c.dispatcher, current, progress,
            "?" if c.queue_size is None else str(c.queue_size),
            "?" if c.pending_requests is None else str(c.pending_requests), blocked,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


__all__ = ["Controller", "FleetView", "IGNORED_REASONS", "MAX_CONTROLLERS", "render_table"]

"""Topics and message shapes of the MQTT link (pure: no paho).

VDA-5050-like: the real standard's topic is ``interfaceName/majorVersion/manufacturer/
serialNumber/<topic>``; here it is ``<prefix>/<resource_id>/<topic>``, and every message starts
with the standard's header fields: ``headerId`` (counts the messages of one topic from 1, per
controller process), ``timestamp`` (ISO 8601 UTC), ``version``, ``manufacturer`` and
``serialNumber`` (the resource id). The rest of each message is snake_case, in the shapes the
REST API uses (an event is ``GET /operations/<id>/events``' item, a request ``GET /requests``').
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass
from typing import Any

from ..models import format_datetime, utcnow

#: ``version`` of every message (the layout of these payloads, not the package version)
MESSAGE_VERSION = "1.0.0"
MANUFACTURER = "operation-dispatcher"

# the topics of one controller, under <prefix>/<resource_id>/
CONNECTION = "connection"
STATE = "state"
EVENTS = "events"
REQUESTS = "requests"
RESPONSES = "responses"
COMMANDS = "commands"
COMMAND_RESULTS = "command_results"
#: (topic, QoS, retained) of what a controller publishes
PUBLISHED = (
    (CONNECTION, 1, True),
    (STATE, 1, True),
    (EVENTS, 1, False),
    (REQUESTS, 1, False),
    (COMMAND_RESULTS, 1, False),
)
#: what a controller subscribes to (QoS 1)
SUBSCRIBED = (COMMANDS, RESPONSES)

# connectionState values (as VDA 5050 spells them)
ONLINE = "ONLINE"
OFFLINE = "OFFLINE"
CONNECTIONBROKEN = "CONNECTIONBROKEN"


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic names of one controller."""

    prefix: str
    resource_id: str

    def of(self, name: str) -> str:
        return f"{self.prefix}/{self.resource_id}/{name}"

    @staticmethod
    def wildcard(prefix: str, name: str) -> str:
        """Every controller's ``name`` topic under ``prefix`` (what the fleet view reads)."""
        return f"{prefix}/+/{name}"

    @staticmethod
    def split(prefix: str, topic: str) -> tuple[str, str] | None:
        """``(resource_id, name)`` of a topic under ``prefix``, or None for any other topic."""
        head = prefix + "/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head):].split("/")
        if len(parts) != 2 or not parts[0]:
            return None
        return parts[0], parts[1]


class Headers:
    """The header of each message: a ``headerId`` counter per topic (thread-safe)."""

    def __init__(self, resource_id: str) -> None:
        self._resource_id = resource_id
        self._lock = threading.Lock()
        self._counters: dict[str, itertools.count[int]] = {}

    def stamp(self, topic: str, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` after the header fields of the next message on ``topic``."""
        with self._lock:
            counter = self._counters.get(topic)
            if counter is None:
                counter = self._counters[topic] = itertools.count(1)
            header_id = next(counter)
        return {
            "headerId": header_id,
            "timestamp": format_datetime(utcnow()),
            "version": MESSAGE_VERSION,
            "manufacturer": MANUFACTURER,
            "serialNumber": self._resource_id,
            **body,
        }


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


__all__ = [
    "COMMANDS",
    "COMMAND_RESULTS",
    "CONNECTION",
    "CONNECTIONBROKEN",
    "EVENTS",
    "Headers",
    "MANUFACTURER",
    "MESSAGE_VERSION",
    "OFFLINE",
    "ONLINE",
    "PUBLISHED",
    "REQUESTS",
    "RESPONSES",
    "STATE",
    "SUBSCRIBED",
    "Topics",
    "encode",
]

"""MqttSettings: the ``[mqtt]`` table of ``serve``'s config, checked without importing paho.

``check-config`` lists every problem at once, each with its key, like the other sections; a
secret (the password) is never echoed back in an error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .. import _checks
from ..errors import ValidationError

DEFAULT_PORT = 1883
DEFAULT_PREFIX = "operation-dispatcher"
DEFAULT_KEEPALIVE = 30
#: events kept until the broker acknowledged them (see :mod:`.outbox`)
DEFAULT_BUFFER_SIZE = 10_000
MAX_BUFFER_SIZE = 1_000_000
#: MQTT 3.1.1 allows any client id length; brokers commonly cap it, and a flood must not pass.
MAX_CLIENT_ID = 128


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """Where and how one controller talks to the plant's broker."""

    host: str
    port: int = DEFAULT_PORT
    prefix: str = DEFAULT_PREFIX
    #: default ``operation-dispatcher-<resource_id>`` (two controllers may not share one)
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    #: TLS is on when a CA file is named; tls_cert/tls_key add a client certificate
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    keepalive: int = DEFAULT_KEEPALIVE
    buffer_size: int = DEFAULT_BUFFER_SIZE

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> MqttSettings:
        """Build from a TOML table; raises ValidationError for its first problem."""
        problems = mqtt_problems(table)
        if problems:
            key, rule = problems[0]
            raise ValidationError(key, rule)
        return cls(**{f.name: table[f.name] for f in fields(cls) if f.name in table})

    @property
    def uses_tls(self) -> bool:
        return self.tls_ca is not None

    def client_id_for(self, resource_id: str) -> str:
        return self.client_id or f"operation-dispatcher-{resource_id}"


def _readable_file(value: Any, name: str) -> str:
    _checks.text(value, name, got=False)
    if not os.path.isfile(value) or not os.access(value, os.R_OK):
        raise ValidationError(name, f"must name a readable file ({value!r} is not one)")
    return value


def _client_id(value: Any, name: str) -> str:
    _checks.text(value, name, got=False)
    if len(value) > MAX_CLIENT_ID or not value.isprintable():
        raise ValidationError(name, f"must be at most {MAX_CLIENT_ID} printable characters")
    return value


_CHECKS: dict[str, Any] = {
    "host": lambda v, n: _checks.text(v, n, got=False),
    "port": lambda v, n: _checks.integer(v, n, 1, 65535, got=False),
    "prefix": lambda v, n: _checks.topic_prefix(v, n, got=False),
    "client_id": _client_id,
    "username": lambda v, n: _checks.text(v, n, got=False),
    "password": lambda v, n: _checks.text(v, n, got=False),
    "tls_ca": _readable_file,
    "tls_cert": _readable_file,
    "tls_key": _readable_file,
    # MQTT carries keepalive in two bytes; below 5 s a busy broker would drop healthy clients
    "keepalive": lambda v, n: _checks.integer(v, n, 5, 65535, got=False),
    "buffer_size": lambda v, n: _checks.integer(v, n, 1, MAX_BUFFER_SIZE, got=False),
}
KEYS = tuple(_CHECKS)


def mqtt_problems(
    table: Any, section: str = "mqtt", resource_id: str | None = None
) -> list[tuple[str, str]]:
    """Every problem of an ``[mqtt]`` table, as (key, rule) pairs; empty when usable.

    ``resource_id`` (the dispatcher's) becomes a topic level, so it is checked as one.
    """
    if not isinstance(table, Mapping):
        return [(section, "must be a table ([mqtt])")]
    problems: list[tuple[str, str]] = []
    for key, value in table.items():
        where = f"{section}.{key}"
        check = _CHECKS.get(key)
        if check is None:
            problems.append((where, f"unknown key (known: {', '.join(KEYS)})"))
            continue
        try:
            check(value, key)
        except ValidationError as exc:
            problems.append((where, exc.reason))
    if "host" not in table:
        problems.append((f"{section}.host", "required: the broker's host name or address"))
    if "password" in table and "username" not in table:
        problems.append((f"{section}.password", "needs username (a password alone is never sent)"))
    for key in ("tls_cert", "tls_key"):
        if key in table and "tls_ca" not in table:
            problems.append((f"{section}.{key}", "needs tls_ca (TLS is on when a CA file is named)"))
    if ("tls_cert" in table) != ("tls_key" in table):
        missing = "tls_key" if "tls_cert" in table else "tls_cert"
        problems.append((f"{section}.{missing}", "tls_cert and tls_key go together"))
    if resource_id is not None:
        try:
            _checks.topic_level(resource_id, "dispatcher.resource_id", got=False)
        except ValidationError as exc:
            problems.append(("dispatcher.resource_id", f"{exc.reason} (it names the "
                                                       "controller's MQTT topics)"))
    return problems


__all__ = [
    "DEFAULT_BUFFER_SIZE",
    "DEFAULT_KEEPALIVE",
    "DEFAULT_PORT",
    "DEFAULT_PREFIX",
    "KEYS",
    "MqttSettings",
    "mqtt_problems",
]

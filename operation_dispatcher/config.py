"""The TOML configuration of ``operation-dispatcher serve``.

Sections (every one optional)::

    [dispatcher]                       # the OperationDispatcher
    resource_id = "robot-1"
    start_paused = false
    start_request_max_retries = 5
    start_request_retry_cooldown_seconds = 1.0
    request_event_timeout_seconds = 5.0
    default_planned_duration = 30.0    # seconds; leave out for none
    strict_order = false
    event_retention = 10000
    operation_retention = 10000
    sort_rules = [{field = "priority", direction = "desc"}]
    default_release_conditions = { "door.closed" = true }  # every added operation gets these

    [approvals]                        # who answers each request kind (approval_policy.py)
    start = "operator"                 # "auto" (default), "operator" or "deny"; also cancel,
    cancel = "auto"                    # pause, resume
    operator_timeout_seconds = 600     # leave out to wait for the operator however long
    operator_when_payload = ["needs_operator"]  # "operator" only for operations flagged so

    [journal]
    path = "./operation-dispatcher.db" # ":memory:" for none
    recovery = "fail"                  # or "pause": what happens to an interrupted operation
    max_bytes = 268435456              # drop the oldest finished history beyond this; 0: no limit
    slow_write_seconds = 1.0           # log a warning for a write (commit) slower than this

    [http]
    host = "127.0.0.1"
    port = 8080
    token = "..."                      # or OPERATION_DISPATCHER_TOKEN; leave out for none
    tokens = { mes = { token = "...", scopes = ["read", "submit"] } }  # named, scoped tokens
    threads = 12
    connection_limit = 1000            # sockets served at once; more wait in the backlog
    idle_timeout_seconds = 10          # close a socket silent this long (no request running)
    write_timeout_seconds = 15.0       # disconnect a client that takes no byte this long
    stream_buffer_bytes = 2097152      # per event stream: queued, and unsent, before dropping
    max_event_streams = 4
    heartbeat_seconds = 15.0
    max_body_bytes = 1048576
    signal_max_age_seconds = 60.0      # max age of a PUT /signals/<name> that names none

    [mqtt]                             # the plant's MQTT broker (operation_dispatcher/mqtt/)
    host = "broker.plant.local"        # required; every other key has a default
    port = 1883
    prefix = "operation-dispatcher"    # topics <prefix>/<resource_id>/{connection,state,...}
    client_id = "..."                  # default operation-dispatcher-<resource_id>
    username = "..."                   # password = "..." needs it
    tls_ca = "/etc/ssl/plant-ca.pem"   # TLS on; tls_cert + tls_key: a client certificate
    keepalive = 30
    buffer_size = 10000                # events kept until the broker acknowledged them

    [mcp]                              # the MCP server for LLM agents (extra "mcp")
    port = 8081                        # serve it over streamable HTTP; leave out for none
    host = "127.0.0.1"                 # the tokens of [http] guard it too

    [[bridges]]                        # one table per hardware bridge, see operation_dispatcher.bridges
    type = "modbus"                    # or "serial"
    name = "plc"                       # its signals are plc.<signal>, its health plc.online
    host = "127.0.0.1"                 # ...every other key is an argument of the bridge class

Every problem is reported with its key, all at once: ``load_config`` raises :class:`ConfigError`
whose ``errors`` list reads like ``dispatcher.start_request_max_retries: must be an integer > 0``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, cast

from . import _checks
from .approval_policy import ApprovalPolicy, Policy, policy_problems
from .errors import DispatcherError, ValidationError
from .mqtt.settings import MqttSettings, mqtt_problems

#: The journal file used when neither the config nor the command line names one.
DEFAULT_JOURNAL = "./operation-dispatcher.db"


class ConfigError(DispatcherError, ValueError):
    """A configuration file that cannot be used; ``errors`` lists every problem with its key."""

    def __init__(self, errors: list[str], source: str | None = None) -> None:
        self.errors = list(errors)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{len(self.errors)} configuration error(s):\n  " +
                         "\n  ".join(self.errors))


@dataclass(frozen=True)
class DispatcherSettings:
    resource_id: str = "resource-1"
    start_paused: bool = False
    start_request_max_retries: int = 5
    start_request_retry_cooldown_seconds: float = 1.0
    request_event_timeout_seconds: float = 5.0
    default_planned_duration: float | None = None
    strict_order: bool = False
    event_retention: int = 10_000
    operation_retention: int = 10_000
    sort_rules: tuple[tuple[str, str], ...] | None = None
    default_release_conditions: dict[str, Any] | None = None


@dataclass(frozen=True)
class JournalSettings:
    path: str = DEFAULT_JOURNAL
    recovery: str = "fail"
    #: the journal's live pages are kept within this size (0: no limit; see Journal.max_bytes)
    max_bytes: int = 256 * 1024 * 1024
    slow_write_seconds: float = 1.0

    def journal_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``Journal`` (besides the path)."""
        return {
            "max_bytes": self.max_bytes or None, "slow_write_seconds": self.slow_write_seconds,
        }


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    #: named tokens: name -> {"token": ..., "scopes": [...]} (see http/auth.py)
    tokens: dict[str, dict[str, Any]] | None = None
    threads: int = 12
    connection_limit: int = 1000
    idle_timeout_seconds: int = 10
    write_timeout_seconds: float = 15.0
    stream_buffer_bytes: int = 2 * 1024 * 1024
    max_event_streams: int = 4
    heartbeat_seconds: float = 15.0
    max_body_bytes: int = 1024 * 1024
    signal_max_age_seconds: float = 60.0


@dataclass(frozen=True)
class McpSettings:
    #: the port of the streamable-HTTP transport ``serve`` runs beside the REST API (None: none)
    port: int | None = None
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class Config:
    """A validated configuration (defaults for everything left out)."""

    dispatcher: DispatcherSettings = field(default_factory=DispatcherSettings)
    journal: JournalSettings = field(default_factory=JournalSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    approvals: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    mcp: McpSettings = field(default_factory=McpSettings)
    bridges: list[dict[str, Any]] = field(default_factory=list)
    source: str | None = None
    #: the ``[mqtt]`` section, None when the config has none (no broker)
    mqtt: MqttSettings | None = None

    def dispatcher_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``OperationDispatcher`` (resource_id and journal included)."""
        from .queue import SortDirection, SortField, SortRule

        settings = self.dispatcher
        kwargs: dict[str, Any] = {
            name: getattr(settings, name)
            for name in (
                "resource_id", "start_paused", "start_request_max_retries",
                "start_request_retry_cooldown_seconds", "request_event_timeout_seconds",
                "default_planned_duration", "strict_order", "event_retention",
                "operation_retention", "default_release_conditions",
            )
        }
        if settings.sort_rules is not None:
            kwargs["dispatch_queue_sort_rules"] = [
                SortRule(SortField(name), SortDirection(direction))
                for name, direction in settings.sort_rules
            ]
        path = self.journal.path
        kwargs["journal"] = None if path == ":memory:" else path
        kwargs["recovery"] = self.journal.recovery
        kwargs["approval_policy"] = self.approvals
        return kwargs


# ------------------------------------------------------------------------------ checks

#: Checks the value of one key (named by the second argument) and raises ValidationError: the
#: rules are the core's own (:mod:`._checks`), so a file and ``OperationDispatcher(...)`` agree.
Check = Callable[[Any, str], Any]


# Each error line already names its key in the user's own file: it states the rule only.


def _integer(minimum: int, maximum: int | None = None) -> Check:
    return partial(_checks.integer, minimum=minimum, maximum=maximum, got=False)


def _seconds(*, zero: bool = False) -> Check:
    return partial(_checks.seconds, zero=zero, got=False)


def _journal_bytes(value: Any, name: str) -> None:
    """0 (no limit) or within the journal's own bounds."""
    from .journal_limits import MAX_MAX_BYTES, MIN_MAX_BYTES  # sqlite3: only with a journal

    _checks.integer(value, name, minimum=0, maximum=MAX_MAX_BYTES, got=False)
    if 0 < value < MIN_MAX_BYTES:
        raise ValidationError(name, f"must be 0 (no limit) or an integer >= {MIN_MAX_BYTES}")


def _boolean(value: Any, name: str) -> bool:
    return _checks.boolean(value, name, ("true", "false"), got=False)  # as TOML spells them


def _text(value: Any, name: str) -> str:
    return _checks.text(value, name, got=False)


def _one_of(*choices: str) -> Check:
    return partial(_checks.one_of, choices=choices, got=False)


def _sort_rules(value: Any, name: str) -> None:
    from .queue import SortDirection, SortField

    names = [f.value for f in SortField]
    directions = [d.value for d in SortDirection]
    if not isinstance(value, list) or not value:
        raise ValidationError(name, "must be a non-empty list of {field = ..., direction = ...} tables")
    for index, rule in enumerate(value):
        if not isinstance(rule, dict) or set(rule) != {"field", "direction"}:
            raise ValidationError(
                name, f"[{index}] must be a table with exactly the keys field and direction"
            )
        if rule["field"] not in names:
            raise ValidationError(name, f"[{index}].field must be one of {', '.join(names)}")
        if rule["direction"] not in directions:
            raise ValidationError(
                name, f"[{index}].direction must be one of {', '.join(directions)}"
            )


def _release_conditions(value: Any, name: str) -> None:
    if not isinstance(value, dict):
        raise ValidationError(
            name, "must be a table of signal names to values, e.g. { \"door.closed\" = true }"
        )
    _checks.release_conditions(value, name)


def _tokens_table(value: Any, name: str) -> None:
    """Only the shape here: every token's own problems are listed after the section
    (:func:`_token_errors`), one line per key."""
    if not isinstance(value, dict):
        raise ValidationError(
            name, 'must be a table of names to {token = "...", scopes = [...]} tables'
        )


#: The scopes a named token may hold (``http/auth.py`` maps every route to one of them).
SCOPES = ("read", "submit", "operate", "admin")
_TOKEN_KEYS = ("token", "scopes")


def token_problems(
    tokens: Any, name: str = "tokens", single: str | None = None
) -> list[tuple[str, str]]:
    """Every problem of a ``tokens`` mapping, as (key, rule) pairs; empty when usable.

    ``single`` is the all-scopes token, if any: a named token may not repeat it (nor another
    named token), since one value cannot mean two sets of rights.
    """
    if not isinstance(tokens, Mapping):
        return [(name, "must be a table of names to {token = \"...\", scopes = [...]} tables")]
    if not tokens:  # it would lock every route but /health while looking like "no tokens"
        return [(name, "must name at least one token (leave it out for none)")]
    problems: list[tuple[str, str]] = []
    seen: dict[str, str] = {} if single is None else {single: "token"}
    for label, entry in tokens.items():
        key = f"{name}.{label}"
        if not isinstance(label, str) or not label:
            problems.append((name, "token names must be non-empty strings"))
            continue
        if not isinstance(entry, Mapping):
            problems.append((key, "must be a table {token = \"...\", scopes = [...]}"))
            continue
        for extra in sorted(set(entry) - set(_TOKEN_KEYS)):
            problems.append((f"{key}.{extra}", f"unknown key (known: {', '.join(_TOKEN_KEYS)})"))
        problems.extend(_scope_problems(entry.get("scopes"), f"{key}.scopes"))
        value = entry.get("token")
        problem = _token_value_problem(value)
        if problem:
            problems.append((f"{key}.token", problem))
            continue
        token = cast(str, value)  # _token_value_problem passes only non-empty strings
        if token in seen:
            problems.append((f"{key}.token", f"must differ from {seen[token]} (the same value "
                             "cannot carry two sets of scopes)"))
        else:
            seen[token] = f"{key}.token"
    return problems


def _token_value_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return "required: a non-empty string"
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        return "must be printable ASCII without spaces (it is sent in an HTTP header)"
    return None


def _scope_problems(scopes: Any, key: str) -> list[tuple[str, str]]:
    rule = f"must be a non-empty list of scopes, each one of {', '.join(SCOPES)}"
    if not isinstance(scopes, list | tuple) or not scopes:
        return [(key, rule)]
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        return [(key, f"unknown scope(s) {', '.join(map(repr, unknown))}: {rule}")]
    return []


def _token_errors(http: Mapping[str, Any]) -> list[str]:
    """Every problem of ``[http.tokens]`` (also a value that repeats ``http.token``)."""
    if not isinstance(http.get("tokens"), dict):
        return []
    token = http.get("token")
    single = token if isinstance(token, str) and token else None
    return [f"http.{key}: {rule}" for key, rule in token_problems(http["tokens"], "tokens", single)]


def _approval_errors(table: Any) -> list[str]:
    """Every problem of ``[approvals]``, and "operator" for cancel, pause or resume without a
    timeout: that answer is awaited in the caller's HTTP request, which would hold one of the
    server's threads for as long as the operator is away (enough of them, and the operator's
    own approve could find no thread to run on)."""
    errors = [f"{key}: {rule}" for key, rule in policy_problems(table, "approvals")]
    if not isinstance(table, Mapping) or "operator_timeout_seconds" in table:
        return errors
    for kind in ("cancel", "pause", "resume"):
        value = table.get(kind)
        if value in (Policy.OPERATOR.value, Policy.MQTT.value):
            errors.append(
                f'approvals.{kind}: "{value}" needs approvals.operator_timeout_seconds (a '
                f"{kind} waits for the answer inside its HTTP request, holding a server thread)"
            )
    return errors


def _mqtt_errors(data: Mapping[str, Any], resource_id: Any) -> list[str]:
    """Every problem of ``[mqtt]``, and an ``"mqtt"`` approval policy without a broker."""
    table = data.get("mqtt")
    errors = []
    if table is not None:
        rid = resource_id if isinstance(resource_id, str) and resource_id else None
        errors += [f"{key}: {rule}" for key, rule in mqtt_problems(table, "mqtt", rid)]
    approvals = data.get("approvals")
    if table is None and isinstance(approvals, Mapping):
        for kind, value in approvals.items():
            if value == Policy.MQTT.value:
                errors.append(
                    f'approvals.{kind}: "mqtt" needs an [mqtt] section (a broker to publish '
                    "the request on)"
                )
    return errors

_SECTIONS: dict[str, dict[str, Check]] = {
    "dispatcher": {
        "resource_id": _text,
        "start_paused": _boolean,
        "start_request_max_retries": _integer(1),
        "start_request_retry_cooldown_seconds": _seconds(zero=True),
        "request_event_timeout_seconds": _seconds(),
        "default_planned_duration": _seconds(),
        "strict_order": _boolean,
        "event_retention": _integer(1),
        "operation_retention": _integer(1),
        "sort_rules": _sort_rules,
        "default_release_conditions": _release_conditions,
    },
    "journal": {
        "path": _text,
        "recovery": _one_of("fail", "pause"),
        "max_bytes": _journal_bytes,
        "slow_write_seconds": _seconds(),
    },
    "http": {
        "host": _text,
        "port": _integer(0, 65535),
        "token": _text,
        "tokens": _tokens_table,
        "threads": _integer(1, 1000),
        "connection_limit": _integer(1, 1_000_000),
        "idle_timeout_seconds": _integer(1, 86_400),
        "write_timeout_seconds": _seconds(),
        "stream_buffer_bytes": _integer(1024),
        "max_event_streams": _integer(0, 1000),
        "heartbeat_seconds": _seconds(),
        "max_body_bytes": _integer(1),
        "signal_max_age_seconds": _seconds(),
    },
    "mcp": {
        "port": _integer(0, 65535),
        "host": _text,
    },
}
_RESERVED = ("approvals", "mqtt", "bridges")
_SETTINGS = {
    "dispatcher": DispatcherSettings, "journal": JournalSettings, "http": HttpSettings,
    "mcp": McpSettings,
}


def parse_config(data: Mapping[str, Any], source: str | None = None) -> Config:
    """Validate a parsed TOML document; raises ConfigError listing every problem by key."""
    errors: list[str] = []
    known = [*_SECTIONS, *_RESERVED]
    for name in data:
        if name not in known:
            errors.append(f"{name}: unknown section (known: {', '.join(known)})")
    sections: dict[str, dict[str, Any]] = {}
    for section, checks in _SECTIONS.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            errors.append(f"{section}: must be a table ([{section}])")
            continue
        values: dict[str, Any] = {}
        for key, value in table.items():
            check = checks.get(key)
            if check is None:
                errors.append(
                    f"{section}.{key}: unknown key (known: {', '.join(checks)})"
                )
                continue
            try:
                check(value, key)
            except ValidationError as exc:
                errors.append(f"{section}.{exc.field}: {exc.reason}")
                continue
            if key == "sort_rules":
                value = tuple((rule["field"], rule["direction"]) for rule in value)
            values[key] = value
        sections[section] = values
    http = sections.get("http", {})
    errors.extend(_token_errors(http))
    if http.get("max_event_streams", 4) >= http.get("threads", 12):
        errors.append(
            "http.max_event_streams: must be less than http.threads "
            "(each open event stream holds a server thread)"
        )
    approvals = data.get("approvals", {})
    errors.extend(_approval_errors(approvals))
    dispatcher_table = data.get("dispatcher")
    errors.extend(_mqtt_errors(data, (
        dispatcher_table.get("resource_id", DispatcherSettings.resource_id)
        if isinstance(dispatcher_table, dict) else None
    )))
    bridges = data.get("bridges", [])
    if not isinstance(bridges, list):
        errors.append("bridges: must be a list of tables ([[bridges]])")
        bridges = []
    elif bridges:
        from .bridges import bridge_errors  # imports only the kinds used (entry points)

        errors.extend(bridge_errors(bridges))
    if errors:
        raise ConfigError(errors, source)
    built = {
        section: _SETTINGS[section](**{
            key: value for key, value in sections.get(section, {}).items()
            if key in {f.name for f in fields(_SETTINGS[section])}
        })
        for section in _SETTINGS
    }
    return Config(
        dispatcher=built["dispatcher"], journal=built["journal"], http=built["http"],
        approvals=ApprovalPolicy.from_mapping(approvals), mcp=built["mcp"],
        bridges=[dict(b) for b in bridges], source=source,
        mqtt=None if "mqtt" not in data else MqttSettings.from_mapping(data["mqtt"]),
    )


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML file; raises ConfigError (also for a missing or broken file)."""
    source = str(path)
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError([f"{source}: no such file"], source) from None
    except OSError as exc:
        raise ConfigError([f"{source}: cannot be read ({exc.strerror})"], source) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: not valid TOML ({exc})"], source) from None
    return parse_config(data, source)


def check_config(path: str | Path) -> list[str]:
    """Every problem of a config file, each with its key; empty when it is fine."""
    try:
        load_config(path)
    except ConfigError as exc:
        return exc.errors
    return []


__all__ = [
    "DEFAULT_JOURNAL",
    "Config",
    "ConfigError",
    "DispatcherSettings",
    "HttpSettings",
    "JournalSettings",
    "McpSettings",
    "SCOPES",
    "check_config",
    "load_config",
    "parse_config",
    "token_problems",
]

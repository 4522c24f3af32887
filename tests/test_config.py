"""config.py: the TOML file of ``operation-dispatcher serve``; every error named by its key."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from operation_dispatcher import OperationDispatcher, SortDirection, SortField, ValidationError
from operation_dispatcher.config import (
    DEFAULT_JOURNAL,
    Config,
    ConfigError,
    check_config,
    load_config,
    parse_config,
)

FULL = """
[dispatcher]
resource_id = "press-7"
start_paused = true
start_request_max_retries = 3
start_request_retry_cooldown_seconds = 0.5
request_event_timeout_seconds = 2
default_planned_duration = 12.5
strict_order = true
event_retention = 500
operation_retention = 600
sort_rules = [{field = "priority", direction = "desc"}, {field = "created_at", direction = "asc"}]

[journal]
path = ":memory:"
recovery = "pause"

[http]
host = "0.0.0.0"
port = 9000
token = "t0k3n"
threads = 6
max_event_streams = 2
heartbeat_seconds = 5
max_body_bytes = 2048

[mcp]
port = 9001

[[bridges]]
type = "serial"
name = "mcu"
url = "socket://127.0.0.1:7001"

[[bridges]]
type = "modbus"
name = "plc"
host = "127.0.0.1"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dispatcher.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_full_config_is_read(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    assert config.dispatcher.resource_id == "press-7"
    assert config.dispatcher.start_paused is True
    assert config.dispatcher.sort_rules == (("priority", "desc"), ("created_at", "asc"))
    assert config.journal.path == ":memory:" and config.journal.recovery == "pause"
    assert config.http.port == 9000 and config.http.token == "t0k3n"
    assert config.mcp.port == 9001 and config.mcp.host == "127.0.0.1"
    assert [b["type"] for b in config.bridges] == ["serial", "modbus"]
    kwargs = config.dispatcher_kwargs()
    assert kwargs["journal"] is None and kwargs["recovery"] == "pause"
    assert kwargs["dispatch_queue_sort_rules"][0].field is SortField.PRIORITY
    assert kwargs["dispatch_queue_sort_rules"][0].direction is SortDirection.DESC
    dispatcher = OperationDispatcher(**kwargs)
    try:
        assert dispatcher.resource_id == "press-7" and dispatcher.is_paused
        assert dispatcher.strict_order
    finally:
        dispatcher.close()
    assert check_config(write(tmp_path, FULL)) == []


def test_defaults() -> None:
    config = parse_config({})
    assert config == Config()
    assert config.journal.path == DEFAULT_JOURNAL == "./operation-dispatcher.db"
    assert config.http.host == "127.0.0.1" and config.http.port == 8080
    assert config.http.token is None
    assert config.dispatcher_kwargs()["journal"] == DEFAULT_JOURNAL


def test_every_error_is_reported_with_its_key(tmp_path: Path) -> None:
    text = """
[dispatcher]
start_request_max_retries = 0
request_event_timeout_seconds = "5"
start_paused = "yes"
colour = "red"
sort_rules = [{field = "size", direction = "desc"}]
default_planned_duration = -1

[journal]
recovery = "retry"

[http]
port = 70000
threads = 2
max_event_streams = 4
heartbeat_seconds = 1e300

[logging]
level = "debug"

[[bridges]]
type = "serial"
"""
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text))
    errors = raised.value.errors
    assert "dispatcher.start_request_max_retries: must be an integer > 0" in errors
    expected_keys = [
        "dispatcher.start_request_max_retries:", "dispatcher.request_event_timeout_seconds:",
        "dispatcher.start_paused:", "dispatcher.colour: unknown key",
        "dispatcher.sort_rules:", "dispatcher.default_planned_duration:",
        "journal.recovery:", "http.port:", "http.heartbeat_seconds:",
        "http.max_event_streams:", "logging: unknown section",
        "bridges[0].name: required", "bridges[0].url: required",
    ]
    for key in expected_keys:
        assert any(error.startswith(key) for error in errors), (key, errors)
    assert len(errors) == len(expected_keys)
    assert check_config(write(tmp_path, text)) == errors
    assert "13 configuration error(s)" in str(raised.value)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[dispatcher\n", "not valid TOML"),
        ("dispatcher = 3\n", "dispatcher: must be a table"),
        ("bridges = 3\n", "bridges: must be a list of tables"),
        ("bridges = [1]\n", "bridges[0]: must be a table"),
        ("mcp = [1]\n", "mcp: must be a table"),
        ("[mcp]\nport = 70000\n", "mcp.port: must be an integer from 0 to 65535"),
        ("[mcp]\nport = \"8081\"\n", "mcp.port: must be an integer from 0 to 65535"),
        ("[mcp]\nport = 8081.0\n", "mcp.port: must be an integer from 0 to 65535"),
        ("[mcp]\nport = true\n", "mcp.port: must be an integer from 0 to 65535"),
        ("[mcp]\nhost = \"\"\n", "mcp.host: must be a non-empty string"),
        ("[mcp]\nenabled = true\n", "mcp.enabled: unknown key (known: port, host)"),
        ("[http]\ntoken = \"\"\n", "http.token: must be a non-empty string"),
        ("[dispatcher]\nevent_retention = 1.5\n", "dispatcher.event_retention: must be an integer"),
        ("[dispatcher]\nstart_request_max_retries = true\n",
         "dispatcher.start_request_max_retries: must be an integer > 0"),
    ],
)
def test_single_errors(tmp_path: Path, text: str, error: str) -> None:
    errors = check_config(write(tmp_path, text))
    assert len(errors) == 1 and error in errors[0], errors


def test_missing_file(tmp_path: Path) -> None:
    errors = check_config(tmp_path / "nope.toml")
    assert errors == [f"{tmp_path / 'nope.toml'}: no such file"]


# ------------------------------------------------------ issue 11: one set of rules, one wording


@pytest.mark.parametrize(
    ("key", "values"),
    [
        ("request_event_timeout_seconds", ["5", 0, -1, True, math.nan, 2e9, 1e9, 0.5, 5]),
        ("start_request_retry_cooldown_seconds", [-1, 0, 0.0, "1", 1e9 + 1, 3]),
        ("default_planned_duration", [0, math.inf, 30, 1e10]),
        ("start_request_max_retries", [0, 1, True, 2.0, 7]),
        ("event_retention", [0, 1, 1.5, 10]),
        ("start_paused", [0, "false", False, True]),
        ("default_release_conditions", [{"door": math.nan}, {"": 1}, {"door": True}]),
    ],
)
def test_a_config_key_and_the_constructor_argument_follow_one_rule(
    key: str, values: list[Any]
) -> None:
    """What the file refuses the Python API refuses, and by the same name (one set of checks)."""
    for value in values:
        try:
            parse_config({"dispatcher": {key: value}})
        except ConfigError as exc:
            config_error: str | None = exc.errors[0]
        else:
            config_error = None
        try:
            OperationDispatcher("r", **{key: value}).stop()
        except ValidationError as exc:
            assert config_error is not None, (key, value, "accepted by the file only")
            assert config_error.startswith(f"dispatcher.{exc.field}: "), (config_error, exc)
        else:
            assert config_error is None, (key, value, "accepted by the constructor only")


def test_a_bad_default_release_condition_is_named_by_its_key() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({"dispatcher": {"default_release_conditions": {"door": math.inf}}})
    assert raised.value.errors == [
        "dispatcher.default_release_conditions.door: must be a finite number, got inf"
    ]

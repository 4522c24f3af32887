"""``[mqtt]`` in the config (every problem at once, attacks refused, no secret echoed), the
``"mqtt"`` approval policy, and the pure command parsing."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import RESOURCE, op, wait_until

from operation_dispatcher import ApprovalPolicy, OperationDispatcher
from operation_dispatcher.approval_policy import Policy
from operation_dispatcher.cli import main
from operation_dispatcher.config import ConfigError, parse_config
from operation_dispatcher.errors import ValidationError
from operation_dispatcher.mqtt import MqttSettings
from operation_dispatcher.mqtt.commands import (
    MAX_COMMAND_BYTES,
    CommandError,
    CommandHandler,
    parse,
)
from operation_dispatcher.mqtt.outbox import Outbox


def errors_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.errors


def test_an_mqtt_section_needs_only_a_host() -> None:
    config = parse_config({"mqtt": {"host": "broker.plant.local"}})
    assert config.mqtt == MqttSettings(host="broker.plant.local")
    assert (config.mqtt.port, config.mqtt.prefix, config.mqtt.keepalive,
            config.mqtt.buffer_size) == (1883, "operation-dispatcher", 30, 10_000)
    assert config.mqtt.client_id_for("cell-1") == "operation-dispatcher-cell-1"
    assert parse_config({}).mqtt is None


def test_every_problem_of_the_mqtt_section_is_listed_at_once(tmp_path: Path) -> None:
    errors = errors_of({"mqtt": {
        "port": True, "prefix": "plant/+/x", "client_id": "c" * 500, "username": 5,
        "password": "hunter2-secret", "keepalive": float("nan"), "buffer_size": 10**30,
        "tls_cert": str(tmp_path / "missing.pem"), "colour": "blue",
    }})
    keys = [error.split(":", 1)[0] for error in errors]
    for key in ("mqtt.port", "mqtt.prefix", "mqtt.client_id", "mqtt.username",
                "mqtt.keepalive", "mqtt.buffer_size", "mqtt.tls_cert", "mqtt.colour",
                "mqtt.host", "mqtt.tls_key"):
        assert key in keys, (key, errors)
    assert not any("hunter2-secret" in error for error in errors)


@pytest.mark.parametrize("field, value", [
    ("port", "1883"), ("port", 0), ("port", 65536), ("port", 1.5), ("port", 10**400),
    ("prefix", ""), ("prefix", "#"), ("prefix", "$SYS"), ("prefix", "a//b"), ("prefix", "/a"),
    ("prefix", "a/"), ("prefix", "p" * 300), ("prefix", "a\x00b"), ("prefix", "\ud800"),
    ("prefix", ["a"]), ("host", ""), ("host", None), ("keepalive", 1), ("keepalive", 70000),
    ("keepalive", float("inf")), ("buffer_size", 0), ("buffer_size", "10"),
    ("client_id", "a\nb"), ("tls_ca", 1),
])
def test_hostile_mqtt_values_are_refused(field: str, value: Any) -> None:
    table = {"host": "b", field: value}
    errors = errors_of({"mqtt": table})
    assert any(error.startswith(f"mqtt.{field}:") for error in errors), errors


def test_the_resource_id_must_be_one_topic_level_when_there_is_a_broker() -> None:
    errors = errors_of({"dispatcher": {"resource_id": "line/cell+1"}, "mqtt": {"host": "b"}})
    assert any(e.startswith("dispatcher.resource_id:") for e in errors)
    parse_config({"dispatcher": {"resource_id": "line/cell+1"}})  # no broker: no topic


def test_the_mqtt_policy_needs_a_broker_and_a_timeout_where_a_thread_waits() -> None:
    errors = errors_of({"approvals": {"start": "mqtt", "cancel": "mqtt"}})
    assert any(e.startswith('approvals.start: "mqtt" needs an [mqtt] section') for e in errors)
    assert any(e.startswith('approvals.cancel: "mqtt" needs approvals.operator_timeout')
               for e in errors)
    config = parse_config({"approvals": {"start": "mqtt", "cancel": "mqtt",
                                         "operator_timeout_seconds": 60},
                           "mqtt": {"host": "b"}})
    assert config.approvals.start is Policy.MQTT and config.approvals.cancel is Policy.MQTT
    assert errors_of({"approvals": {"start": "MQTT"}})  # only the exact word


def test_check_config_lists_every_mqtt_error(tmp_path: Path, capsys) -> None:
    path = tmp_path / "cell.toml"
    path.write_text('[approvals]\nstart = "mqtt"\n[mqtt]\nport = "x"\nprefix = "a/#"\n')
    assert main(["check-config", str(path)]) == 1
    out = capsys.readouterr().out
    for key in ("mqtt.port", "mqtt.prefix", "mqtt.host"):
        assert f"{path}: {key}:" in out, out


def test_the_mqtt_policy_leaves_the_request_pending_like_operator() -> None:
    policy = ApprovalPolicy(start="mqtt", operator_when_payload=("needs_central",))
    heard = threading.Event()
    with OperationDispatcher(RESOURCE, approval_policy=policy) as dispatcher:
        dispatcher.watch_requests(lambda request: heard.set())
        flagged = dispatcher.add_operation(op(payload={"needs_central": True}))
        assert heard.wait(5)
        pending = dispatcher.pending_requests()
        assert [(p.operation_id, p.waiting_for) for p in pending] == [(flagged.id, "mqtt")]
        dispatcher.decide(pending[0].request_id, True)
        wait_until(lambda: dispatcher.current_operation is not None, what="the start")
        dispatcher.complete_operation(flagged.id)
        plain = dispatcher.add_operation(op())  # not flagged: "auto", nobody is asked
        wait_until(lambda: (dispatcher.current_operation or plain).id == plain.id
                   and dispatcher.current_operation is not None, what="the plain start")
        assert dispatcher.pending_requests() == []
    with pytest.raises(ValidationError, match="'mqtt'"):
        ApprovalPolicy(start="central")


# ------------------------------------------------------------------------------ pure parts


def test_parse_refuses_before_anything_runs() -> None:
    with pytest.raises(CommandError) as caught:
        parse(b"x" * (MAX_COMMAND_BYTES + 1))
    assert (caught.value.status, caught.value.code) == (413, "request_too_large")
    with pytest.raises(CommandError) as caught:
        parse(b'{"command": "cancel", "command_id": "\\ud800x", "args": {}}')
    assert caught.value.code == "invalid_command"
    command = parse(b'{"command_id": "c-1", "command": "pause_dispatcher", "headerId": 3}')
    assert (command.command, command.command_id, command.args) == ("pause_dispatcher", "c-1", {})


def test_the_handler_remembers_a_bounded_number_of_command_ids() -> None:
    from operation_dispatcher.mqtt import commands

    with OperationDispatcher(RESOURCE, start_paused=True) as dispatcher:
        handler = CommandHandler(dispatcher)
        for index in range(commands.REMEMBERED_COMMANDS + 10):
            handler.handle(parse(f'{{"command_id": "c{index}", "command": "resume_dispatcher"}}'
                                 .encode()))
        assert len(handler._done) == commands.REMEMBERED_COMMANDS
        # the same id for another command is not taken for a duplicate
        again = handler.handle(parse(b'{"command_id": "c20", "command": "pause_dispatcher"}'))
        assert again.ok and dispatcher.is_paused


def test_the_outbox_keeps_the_newest_and_counts_what_it_dropped() -> None:
    box = Outbox(3)
    for seq in range(1, 6):
        box.put(seq, b"%d" % seq)
    box.ack(4)
    assert [seq for seq, _ in box.pending()] == [3, 5]
    assert (box.dropped, box.last_dropped_seq) == (2, 2)
    with pytest.raises(ValueError):
        Outbox(0)


def _answer(handler: CommandHandler, command: str, args: dict[str, Any]) -> tuple[int, str]:
    result = handler.handle(parse(json.dumps({"command": command, "args": args}).encode()))
    assert result.error is not None, result
    return result.status, result.error["code"]


def test_hostile_arguments_are_refused_with_the_rest_codes() -> None:
    with OperationDispatcher(RESOURCE, start_paused=True) as dispatcher:
        handler = CommandHandler(dispatcher)
        queued = str(dispatcher.add_operation(op()).id)
        cases: list[tuple[str, dict[str, Any], tuple[int, str]]] = [
            ("add", {"operations": "x"}, (400, "invalid_operations")),
            ("add", {"operations": [1]}, (400, "invalid_operation")),
            ("add", {"operations": [{"priority": 1}]}, (400, "invalid_operation")),
            ("add", {"operations": [{"payload": {}}] * 1001}, (400, "too_many_operations")),
            ("add", {"operations": [{"payload": {}, "id": "not-a-uuid"}]},
             (400, "invalid_operation")),
            ("add", {"operations": [{"payload": {}, "planned_duration": -1}]},
             (400, "invalid_operation")),
            ("add", {"operations": [{"payload": {}, "dependencies": [
                {"depends_on_operation_id": "00000000-0000-4000-8000-000000000000",
                 "dependency_type": "FINISH_TO_START"}]}]}, (400, "operation_rejected")),
            ("update", {"operation_id": queued}, (400, "invalid_updates")),
            ("update", {"operation_id": queued, "updates": {"state": "RUNNING"}},
             (400, "invalid_updates")),
            ("update", {"operation_id": queued, "updates": {"priority": True}},
             (400, "invalid_updates")),
            ("cancel", {}, (400, "invalid_command")),
            ("cancel", {"operation_id": queued, "termination_reason": 5},
             (400, "invalid_termination_reason")),
            ("progress", {"operation_id": queued, "fraction": "half"}, (400, "invalid_progress")),
            ("progress", {"operation_id": queued, "fraction": 0.5},
             (409, "operation_not_running")),
        ]
        for command, args, expected in cases:
            assert _answer(handler, command, args) == expected, (command, args)
        assert [str(o.id) for o in dispatcher.get_schedule()] == [queued]


def test_an_unknown_operation_is_a_404_with_its_id_for_every_command() -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    with OperationDispatcher(RESOURCE, start_paused=True) as dispatcher:
        handler = CommandHandler(dispatcher)
        for command, args in (
            ("update", {"updates": {"priority": 1}}), ("cancel", {}), ("pause", {}),
            ("resume", {}), ("complete", {}), ("fail", {}), ("progress", {"fraction": 0.5}),
        ):
            result = handler.handle(parse(json.dumps(
                {"command": command, "args": {"operation_id": unknown, **args}}).encode()))
            assert (result.status, result.error) == (404, {
                "code": "operation_not_found", "message": "operation not found",
                "details": {"operation_id": unknown},
            }), command


def test_hostile_responses_are_refused_and_decide_nothing() -> None:
    policy = ApprovalPolicy(start="mqtt")
    heard = threading.Event()
    with OperationDispatcher(RESOURCE, approval_policy=policy) as dispatcher:
        dispatcher.watch_requests(lambda request: heard.set())
        dispatcher.add_operation(op())
        assert heard.wait(5)
        request_id = str(dispatcher.pending_requests()[0].request_id)
        handler = CommandHandler(dispatcher)
        cases: list[dict[str, Any]] = [
            {"request_id": request_id, "accepted": "true"},
            {"request_id": request_id, "accepted": 1},
            {"request_id": request_id},
            {"request_id": "nope", "accepted": True},
            {"request_id": request_id, "accepted": True, "data": "x"},
            {"request_id": request_id, "accepted": True, "answered_by": "m" * 500},
            {"request_id": request_id, "accepted": True, "answered_by": 7},
            {"request_id": request_id, "accepted": True, "extra": 1},
            {"request_id": request_id, "accepted": True, "data": {"deep": [[[[]]]] * 1,
                                                                   "n": 10**5000}},
        ]
        for body in cases:
            result = handler.respond(body)
            assert (result.status, result.error["code"]) == (400, "invalid_response"), body
        assert [str(r.request_id) for r in dispatcher.pending_requests()] == [request_id]
        assert handler.respond({"request_id": request_id, "accepted": False}).ok


def test_the_fleet_demo_cell_config_is_valid_once_filled_in(tmp_path: Path) -> None:
    import string

    from operation_dispatcher.config import load_config

    template = Path(__file__).resolve().parent.parent / "examples" / "fleet" / "cell.toml"
    path = tmp_path / "cell-3.toml"
    path.write_text(string.Template(template.read_text()).substitute(
        resource_id="cell-3", journal=tmp_path / "cell-3.db", http_port=8083,
        start_policy="mqtt", mqtt_port=18830, plc_port=15023,
    ))
    config = load_config(path)
    assert config.mqtt is not None and config.mqtt.port == 18830
    assert config.approvals.start is Policy.MQTT and config.bridges[0]["port"] == 15023

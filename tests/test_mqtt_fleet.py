"""The fleet view: every controller on one broker, from retained messages; junk and floods of
names are ignored within bounds; ``operation-dispatcher fleet`` as a table and as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from conftest import op, wait_until

from operation_dispatcher import OperationDispatcher
from operation_dispatcher.mqtt import FleetView, MqttLink, MqttSettings
from operation_dispatcher.mqtt.fleet import render_table
from operation_dispatcher.mqtt.localbroker import LocalBroker

PREFIX = "operation-dispatcher"


@pytest.fixture
def fleet(make_broker: Callable[..., LocalBroker]) -> Iterator[dict[str, Any]]:
    """A broker and three cells (dispatcher + link) on it; everything stopped at teardown."""
    broker = make_broker()
    settings = MqttSettings(host=broker.host, port=broker.port)
    cells = []
    for name in ("cell-a", "cell-b", "cell-c"):
        dispatcher = OperationDispatcher(name, start_paused=name == "cell-c")
        link = MqttLink(dispatcher, settings, state_interval_seconds=0.05)
        link.start()
        dispatcher.start()
        cells.append((dispatcher, link))
    yield {"broker": broker, "settings": settings, "cells": cells}
    for dispatcher, link in cells:
        dispatcher.stop(timeout=5)
        link.stop()


def test_the_fleet_view_shows_every_controller_and_its_work(fleet) -> None:
    (a, _), (b, link_b), (c, _) = fleet["cells"]
    running = a.add_operation(op(resource_id="cell-a"))
    a.report_progress(running.id, 0.4)
    c.add_operations([op(resource_id="cell-c"), op(resource_id="cell-c")])
    with FleetView(fleet["settings"]) as view:
        assert view.wait_for(lambda v: (
            len(v.controllers()) == 3
            and (v.get("cell-a").current_operation or {}).get("progress") == 0.4
            and v.get("cell-c").queue_size == 2), timeout=10)
        rows = {c.resource_id: c for c in view.controllers()}
        assert rows["cell-a"].connection == "ONLINE" and rows["cell-a"].dispatcher == "running"
        assert rows["cell-c"].dispatcher == "paused"
        assert rows["cell-c"].blocked == {"dispatcher_paused": 2}
        table = render_table(view.controllers())
        lines = table.splitlines()
        assert lines[0].split()[:3] == ["RESOURCE", "CONNECTION", "DISPATCHER"]
        assert any(line.startswith("cell-a") and "40%" in line and "RUNNING" in line
                   for line in lines)
        b.stop(timeout=5)
        link_b.stop()
        assert view.wait_for(lambda v: v.get("cell-b").connection == "OFFLINE", timeout=10)
        assert view.ignored == 0


def test_the_fleet_view_ignores_junk_and_bounds_a_flood_of_names(make_broker) -> None:
    broker = make_broker()
    settings = MqttSettings(host=broker.host, port=broker.port)
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    publisher.connect(broker.host, broker.port)
    publisher.loop_start()
    try:
        with FleetView(settings, max_controllers=5) as view:
            assert view.wait_subscribed(10)
            junk = [
                (f"{PREFIX}/x/state", b"not json"),
                (f"{PREFIX}/x/state", b"[1]"),
                (f"{PREFIX}/x/state", json.dumps({"state": {"is_running": "yes",
                                                            "is_paused": False}})),
                (f"{PREFIX}/x/connection", json.dumps({"connectionState": "MAYBE"})),
                (f"{PREFIX}/x/state", b"[" * 100_000 + b"]" * 100_000),
                (f"{PREFIX}/x/state", b"{" + b" " * (1024 * 1024) + b"}"),
            ]
            for topic, payload in junk:
                publisher.publish(topic, payload, qos=1).wait_for_publish(10)
            wait_until(lambda: view.ignored == len(junk), 10, "the junk to be counted")
            assert view.controllers() == []
            for index in range(50):
                publisher.publish(f"{PREFIX}/cell-{index}/connection",
                                  json.dumps({"connectionState": "ONLINE"}), qos=1)
            wait_until(lambda: view.version + view.ignored >= len(junk) + 50, 10, "the flood")
            assert len(view.controllers()) == 5
            state = {"state": {"is_running": True, "is_paused": False, "queue_size": -3,
                               "current_operation": {"id": 5, "progress": "x"}},
                     "blocked": {"a" * 100: 1, "b": "many"}, "pending_request_count": 2**70}
            publisher.publish(f"{PREFIX}/cell-0/state", json.dumps(state), qos=1)
            assert view.wait_for(lambda v: v.get("cell-0").is_running is True, 10)
            shown = view.get("cell-0")
            assert shown.queue_size is None and shown.pending_requests is None
            assert shown.current_operation == {"id": None, "state": None, "job_id": None,
                                               "progress": None, "message": None}
            assert shown.blocked == {"a" * 40: 1}
            render_table(view.controllers())  # renders whatever was accepted
    finally:
        publisher.disconnect()
        publisher.loop_stop()


def test_the_fleet_view_refuses_what_the_mqtt_commands_refuse_and_shows_no_bad_field(
    make_broker, caplog: pytest.LogCaptureFixture,
) -> None:
    """Non-finite and huge numbers, deep nesting and lone surrogates never reach the table
    (the commands' strict JSON); a field out of range or unprintable is shown as unknown."""
    broker = make_broker()
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    publisher.connect(broker.host, broker.port)
    publisher.loop_start()
    good = {"state": {"is_running": True, "is_paused": False}}
    hostile = [
        ("not_json", b'{"state": {"is_running": true, "is_paused": false}, "elapsed_seconds": NaN}'),
        ("not_json", b'{"connectionState": "ONLINE", "timestamp": Infinity}'),
        ("not_json", b'{"connectionState": "ONLINE", "n": ' + b"9" * 5000 + b"}"),
        ("not_json", b'{"connectionState": "ONLINE", "t": "\xff"}'),
        ("unusable_json", b'{"state": {"is_running": true, "is_paused": false}, '
                          b'"elapsed_seconds": 1e999}'),
        ("unusable_json", b'{"connectionState": "ONLINE", "x": "\\ud800"}'),
        ("unusable_json", b'{"connectionState": "ONLINE", "x": ' + b"[" * 100 + b"]" * 100 + b"}"),
        ("not_an_object", b'"ONLINE"'),
        ("not_an_object", b"null"),
    ]
    try:
        with FleetView(MqttSettings(host=broker.host, port=broker.port)) as view:
            assert view.wait_subscribed(10)
            for index, (_, payload) in enumerate(hostile):
                kind = "state" if b'"state"' in payload else "connection"
                publisher.publish(f"{PREFIX}/h{index}/{kind}", payload, qos=1).wait_for_publish(10)
            wait_until(lambda: view.ignored == len(hostile), 10, "the hostile messages counted")
            assert view.controllers() == []
            expected = {reason: 0 for reason in view.ignored_by_reason}
            for reason, _ in hostile:
                expected[reason] += 1
            assert view.ignored_by_reason == expected
            wait_until(lambda: len(caplog.records) >= 3, 10, "the warnings")
            warned = [r.getMessage() for r in caplog.records if "fleet view" in r.getMessage()]
            assert len(warned) == 3  # once per reason, not once per message
            assert all("further ones of this kind are only counted" in w for w in warned)

            state = dict(good, elapsed_seconds=1e300, blocked={"\x1b[2J": 1, "ok": 2},
                         state={"is_running": True, "is_paused": False, "current_operation": {
                             "id": "\x1b[2Jowned", "state": "RUNNING",
                             "progress": {"fraction": 1e300, "message": "x" * 10_000}}})
            publisher.publish(f"{PREFIX}/cell/state", json.dumps(state), qos=1)
            assert view.wait_for(lambda v: v.get("cell") is not None, 10)
            shown = view.get("cell")
            assert shown.elapsed_seconds is None  # not a 300-digit column
            assert shown.blocked == {"ok": 2}
            assert shown.current_operation == {"id": None, "state": "RUNNING", "job_id": None,
                                               "progress": None, "message": "x" * 80}
            assert "\x1b" not in render_table(view.controllers())
    finally:
        publisher.disconnect()
        publisher.loop_stop()


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "operation_dispatcher", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_the_fleet_command_prints_json_and_refuses_bad_options(fleet, tmp_path: Path) -> None:
    broker = fleet["broker"]
    (a, _), _, _ = fleet["cells"]
    a.add_operation(op(resource_id="cell-a"))
    wait_until(lambda: a.current_operation is not None, what="a start")
    result = run_cli("fleet", "--broker", f"{broker.host}:{broker.port}", "--json",
                     "--wait", "5")
    assert result.returncode == 0, result.stderr
    rows = {row["resource_id"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {"cell-a", "cell-b", "cell-c"}
    assert rows["cell-a"]["connection"] == "ONLINE"
    assert rows["cell-a"]["current_operation"]["state"] == "RUNNING"

    bad = run_cli("fleet", "--broker", "host:port", "--json")
    assert bad.returncode == 2 and "--broker must be HOST or HOST:PORT" in bad.stderr
    bad = run_cli("fleet", "--broker", "h:1", "--prefix", "a/+", "--tls-cert",
                  str(tmp_path / "missing.pem"), "--wait", "0")
    assert bad.returncode == 2
    for expected in ("--prefix:", "--tls-cert: must name a readable file", "--wait:"):
        assert expected in bad.stderr, bad.stderr
    nobody = run_cli("fleet", "--broker", f"127.0.0.1:{broker.port + 1 if broker.port < 65535 else 1}",
                     "--json", "--wait", "1")
    assert nobody.returncode == 1 and "no answer from the broker" in nobody.stderr


@pytest.mark.slow
def test_the_live_fleet_table_redraws_and_stops_on_sigint(fleet) -> None:
    import signal

    from served import read_until

    def online(text: str) -> set[str]:
        return {line.split()[0] for line in text.splitlines() if line.split()[1:2] == ["ONLINE"]}

    broker = fleet["broker"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "operation_dispatcher", "fleet", "--broker",
         f"{broker.host}:{broker.port}", "--interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    seen = online(read_until(proc, lambda text: online(text) == {"cell-a", "cell-b", "cell-c"},
                             20))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert seen == {"cell-a", "cell-b", "cell-c"}
    assert proc.returncode == 0, err

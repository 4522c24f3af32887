"""The MQTT link against a real mosquitto: retained connection and state, events with their
journal seq, the last will, a central approver, commands and their results, hostile input, a
broker restart mid-stream and TLS."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from conftest import RESOURCE, EventRecorder, op, wait_until
from mqtt_helpers import PREFIX, Central, Subscriber, make_ca

from operation_dispatcher import ApprovalPolicy, EventType, OperationDispatcher
from operation_dispatcher.mqtt import MqttLink, MqttSettings
from operation_dispatcher.mqtt.commands import COMMAND_QUEUE_SIZE, MAX_COMMAND_BYTES
from operation_dispatcher.mqtt.localbroker import LocalBroker

BASE = f"{PREFIX}/{RESOURCE}"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

Cell = tuple[LocalBroker, OperationDispatcher, MqttLink]


@pytest.fixture
def cell(
    make_broker: Callable[..., LocalBroker],
    make_dispatcher: Callable[..., OperationDispatcher],
    tmp_path: Path,
) -> Iterator[Callable[..., Cell]]:
    """``cell(broker=None, settings=None, **dispatcher_kwargs)``: a dispatcher with a journal
    and a started, connected link (stopped at teardown, before the dispatcher is closed)."""
    links: list[MqttLink] = []

    def factory(broker: LocalBroker | None = None, settings: dict[str, Any] | None = None,
                **kwargs: Any) -> Cell:
        broker = broker or make_broker()
        kwargs.setdefault("journal", tmp_path / f"journal-{len(links)}.db")
        dispatcher = make_dispatcher(**kwargs)
        link = MqttLink(dispatcher, MqttSettings(host=broker.host, port=broker.port,
                                                 **(settings or {})),
                        state_interval_seconds=0.05)
        links.append(link)
        link.start()
        assert link.wait_connected(10)
        return broker, dispatcher, link

    yield factory
    for link in links:
        link.stop()


class Clients:
    """Test-side MQTT clients, every one closed at teardown."""

    def __init__(self) -> None:
        self.made: list[Subscriber] = []

    def subscriber(self, broker: LocalBroker, *args: Any, **kwargs: Any) -> Subscriber:
        self.made.append(Subscriber(broker, *args, **kwargs))
        return self.made[-1]

    def central(self, broker: LocalBroker, *args: Any, **kwargs: Any) -> Central:
        central = Central(broker, *args, **kwargs)
        self.made.append(central)
        return central


@pytest.fixture
def clients() -> Iterator[Clients]:
    made = Clients()
    yield made
    for client in made.made:
        client.close()


def journal_rows(path: Path) -> list[tuple[int, str]]:
    with closing(sqlite3.connect(path)) as conn:
        return list(conn.execute("SELECT seq, id FROM events ORDER BY seq"))


def assert_header(body: dict[str, Any], resource_id: str = RESOURCE) -> None:
    assert type(body["headerId"]) is int and body["headerId"] >= 1
    assert ISO.match(body["timestamp"]), body["timestamp"]
    assert body["serialNumber"] == resource_id
    assert body["manufacturer"] == "operation-dispatcher" and body["version"]


# ------------------------------------------------------------------------------ retained


def test_connection_and_state_are_retained_for_a_fresh_subscriber(clients, cell) -> None:
    broker, dispatcher, link = cell(start_paused=True)
    dispatcher.start()
    added = dispatcher.add_operation(op(payload={"job": 1}))
    live = clients.subscriber(broker, f"{BASE}/state")
    live.first("state", lambda b: b["state"]["queue_size"] == 1)

    fresh = clients.subscriber(broker, [f"{BASE}/connection", f"{BASE}/state"])
    online = fresh.first("connection")
    assert online.retain and online.body["connectionState"] == "ONLINE"
    assert_header(online.body)
    state = fresh.first("state")
    assert state.retain
    assert_header(state.body)
    assert state.body["state"]["is_paused"] is True and state.body["state"]["queue_size"] == 1
    assert state.body["blocked"] == {"dispatcher_paused": 1}
    assert state.body["last_seq"] >= 1

    dispatcher.resume_dispatcher_runtime()  # it starts: the state names it, with progress
    dispatcher.report_progress(added.id, 0.5, "half way")
    body = live.first("state", lambda b: (b["state"]["current_operation"] or {}).get(
        "progress") is not None).body
    assert body["state"]["current_operation"]["id"] == str(added.id)
    assert body["state"]["current_operation"]["progress"]["fraction"] == 0.5
    assert body["elapsed_seconds"] >= 0

    link.stop()
    later = clients.subscriber(broker, f"{BASE}/connection")
    offline = later.first("connection")
    assert offline.retain and offline.body["connectionState"] == "OFFLINE"


def test_every_event_is_published_with_its_journal_seq(clients, cell, tmp_path: Path) -> None:
    broker, dispatcher, link = cell(journal=tmp_path / "events.db", start_paused=True)
    sub = clients.subscriber(broker, f"{BASE}/events")
    dispatcher.start()
    ops = dispatcher.add_operations([op(payload={"n": i}) for i in range(5)])
    dispatcher.cancel_operation(ops[0].id)
    dispatcher.resume_dispatcher_runtime()
    wait_until(lambda: dispatcher.current_operation is not None, what="a start")
    dispatcher.complete_operation(dispatcher.current_operation.id)
    assert dispatcher.drain_events(5)
    assert dispatcher.journal is not None
    last = dispatcher.journal.last_event_seq
    sub.wait_for(lambda: any(m.body["seq"] == last for m in sub.of("events")))
    link.stop()
    dispatcher.close(timeout=5)
    published = [(m.body["seq"], m.body["event"]["id"]) for m in sub.of("events")]
    rows = [row for row in journal_rows(tmp_path / "events.db") if row[0] <= last]
    assert published == rows  # each once, in order, with the journal's seq
    for message in sub.of("events"):
        assert not message.retain
        assert_header(message.body)


# ------------------------------------------------------------------------------ last will


@pytest.mark.slow
def test_the_last_will_says_connectionbroken_after_sigkill(
    clients, make_broker, serve, tmp_path: Path,
) -> None:
    broker = make_broker()
    config = tmp_path / "cell.toml"
    config.write_text(
        f'[dispatcher]\nresource_id = "{RESOURCE}"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nkeepalive = 5\n'
    )
    live = clients.subscriber(broker, f"{BASE}/connection")
    served = serve("--config", str(config), "--journal", str(tmp_path / "j.db"))
    live.first("connection", lambda b: b["connectionState"] == "ONLINE", timeout=20)
    served.proc.send_signal(signal.SIGKILL)
    served.proc.communicate(timeout=30)
    broken = live.first("connection", lambda b: b["connectionState"] == "CONNECTIONBROKEN")
    assert not broken.retain  # a live subscriber gets it as it happens
    fresh = clients.subscriber(broker, f"{BASE}/connection")
    kept = fresh.first("connection")
    assert kept.retain and kept.body["connectionState"] == "CONNECTIONBROKEN"
    assert_header(kept.body)


# ------------------------------------------------------------------------------ approvals


def test_a_central_approver_answers_over_mqtt_and_the_operation_starts(clients, cell) -> None:
    broker, dispatcher, link = cell(approval_policy=ApprovalPolicy(start="mqtt"))
    recorder = EventRecorder(dispatcher)
    central = clients.central(broker, RESOURCE)
    dispatcher.start()
    added = dispatcher.add_operation(op(payload={"part": "A-17"}))
    message = central.first("requests")
    body = message.body
    assert_header(body)
    assert not message.retain
    request = body["request"]
    assert request["waiting_for"] == "mqtt" and request["operation_id"] == str(added.id)
    assert body["operation"]["payload"] == {"part": "A-17"}
    state = central.first("state", lambda b: b["pending_request_count"] == 1).body
    assert state["pending_requests"][0]["request_id"] == request["request_id"]

    # a doubtful answer approves nothing
    refused = central.send(json.dumps({"command_id": "r0", "request_id": request["request_id"],
                                       "accepted": "yes"}), "r0", topic="responses")
    assert (refused["status"], refused["error"]["code"]) == (400, "invalid_response")
    assert [r.request_id for r in dispatcher.pending_requests()] != []

    answer = central.send(json.dumps({
        "command_id": "r1", "request_id": request["request_id"], "accepted": True,
        "reasoning": "cell is clear", "answered_by": "mes-1",
    }), "r1", topic="responses")
    assert answer["ok"] and answer["status"] == 200 and answer["command"] == "respond"
    recorder.wait_for(EventType.OPERATION_STARTED)
    requested = [e for e in dispatcher.list_events(added.id)
                 if e.event_type is EventType.OPERATION_START_REQUESTED]
    decision = requested[-1].meta_data["request_decision"]
    assert decision["accepted"] is True
    assert decision["data"] == {"channel": "mqtt", "answered_by": "mes-1"}

    again = central.send(json.dumps({"command_id": "r2", "request_id": request["request_id"],
                                     "accepted": False}), "r2", topic="responses")
    assert (again["status"], again["error"]["code"]) == (409, "request_closed")
    unknown = central.send(json.dumps({"command_id": "r3", "accepted": True,
                                       "request_id": "00000000-0000-4000-8000-000000000000"}),
                           "r3", topic="responses")
    assert (unknown["status"], unknown["error"]["code"]) == (404, "request_not_found")


def test_operator_requests_are_published_too_and_a_cancel_waits_off_pahos_thread(
    clients, cell,
) -> None:
    broker, dispatcher, link = cell(approval_policy=ApprovalPolicy(
        cancel="operator", operator_timeout_seconds=30))
    central = clients.central(broker, RESOURCE)
    dispatcher.start()
    running = dispatcher.add_operation(op())
    wait_until(lambda: dispatcher.current_operation is not None, what="the start")
    seen = len(central.of("command_results"))
    central.publish(f"{BASE}/commands", json.dumps({
        "command_id": "cancel-1", "command": "cancel", "args": {"operation_id": str(running.id)},
    }))
    request = central.first("requests").body["request"]  # the cancel waits for an answer...
    assert request["waiting_for"] == "operator"
    # ...and meanwhile paho's thread goes on: a malformed command is answered at once
    assert central.send(b"junk", None)["error"]["code"] == "invalid_json"
    answer = central.send(json.dumps({"request_id": request["request_id"], "accepted": True,
                                      "command_id": "yes"}), "yes", topic="responses")
    assert answer["ok"]
    result = central.result("cancel-1", after=seen)
    assert result["ok"] and result["result"]["operation"]["outcome"] == "CANCELLED"


# ------------------------------------------------------------------------------ commands


def test_every_command_is_answered_with_its_result(clients, cell) -> None:
    broker, dispatcher, link = cell(start_paused=True)
    central = clients.central(broker, RESOURCE)
    dispatcher.start()

    added = central.command("add", {"operations": [
        {"payload": {"n": 1}, "priority": 5}, {"payload": {"n": 2}},
    ]})
    assert added["ok"] and added["status"] == 201 and added["command"] == "add"
    first, second = (s["operation"]["id"] for s in added["result"])
    assert_header(central.of("command_results")[-1].body)

    updated = central.command("update", {"operation_id": second, "updates": {"priority": 9}})
    assert updated["status"] == 200 and updated["result"]["operation"]["priority"] == 9
    assert central.command("pause", {"operation_id": first})["error"]["code"] == \
        "operation_not_running"

    assert central.command("resume_dispatcher")["status"] == 200
    wait_until(lambda: dispatcher.current_operation is not None, what="a start")
    current = str(dispatcher.current_operation.id)
    assert current == second  # the higher priority
    assert central.command("pause", {"operation_id": current})["status"] == 200
    assert central.command("resume", {"operation_id": current})["status"] == 200
    progress = central.command("progress", {"operation_id": current, "fraction": 0.25})
    assert progress["result"]["operation"]["progress"]["fraction"] == 0.25
    assert central.command("pause_dispatcher")["status"] == 200
    assert central.command("pause_dispatcher")["error"]["code"] == "dispatcher_already_paused"
    done = central.command("complete", {"operation_id": current, "meta_data": {"by": "mes"}})
    assert done["status"] == 200 and done["result"]["operation"]["outcome"] == "SUCCESS"
    failed = central.command("fail", {"operation_id": current})
    assert (failed["status"], failed["error"]["code"]) == (409, "operation_not_running")
    cancelled = central.command("cancel", {"operation_id": first,
                                           "termination_reason": "USER_REQUEST"})
    assert cancelled["result"]["operation"]["termination_reason"] == "USER_REQUEST"
    assert central.command("resume_dispatcher")["status"] == 200
    assert central.command("resume_dispatcher")["error"]["code"] == "dispatcher_not_paused"

    # fail with force on an executor-free running operation
    third = central.command("add", {"operations": [{"payload": {}}]})["result"][0]
    wait_until(lambda: dispatcher.current_operation is not None, what="a start")
    fail = central.command("fail", {"operation_id": third["operation"]["id"],
                                    "termination_reason": "EXTERNAL_ERROR", "force": True})
    assert fail["result"]["operation"]["outcome"] == "FAILURE"


def test_a_repeated_command_id_is_answered_again_not_run_again(clients, cell) -> None:
    broker, dispatcher, link = cell(start_paused=True)
    central = clients.central(broker, RESOURCE)
    payload = json.dumps({"command_id": "same", "command": "add",
                          "args": {"operations": [{"payload": {}}]}})
    first = central.send(payload, "same")
    second = central.send(payload, "same")  # what a QoS 1 duplicate looks like
    header = {"headerId", "timestamp"}
    assert {k: v for k, v in first.items() if k not in header} == {
        k: v for k, v in second.items() if k not in header}
    assert first["status"] == 201
    assert len(dispatcher.get_schedule()) == 1


def test_commands_answer_with_the_rest_apis_status_and_code(clients, cell, make_client) -> None:
    broker, dispatcher, link = cell()
    client = make_client(dispatcher)  # (it starts the dispatcher)
    central = clients.central(broker, RESOURCE)
    queued = str(dispatcher.add_operation(op(release_conditions={"never.set": True})).id)
    unknown = "00000000-0000-4000-8000-000000000000"
    cases: list[tuple[str, dict[str, Any], str, dict[str, Any] | None]] = [
        ("cancel", {"operation_id": unknown}, f"/operations/{unknown}/cancel", {}),
        ("pause", {"operation_id": unknown}, f"/operations/{unknown}/pause", {}),
        ("pause", {"operation_id": queued}, f"/operations/{queued}/pause", {}),
        ("resume", {"operation_id": queued}, f"/operations/{queued}/resume", {}),
        ("complete", {"operation_id": queued}, f"/operations/{queued}/complete", {}),
        ("fail", {"operation_id": unknown}, f"/operations/{unknown}/fail", {}),
        ("progress", {"operation_id": queued, "fraction": 0.5},
         f"/operations/{queued}/progress", {"fraction": 0.5}),
        ("update", {"operation_id": unknown, "updates": {"priority": 1}},
         f"/operations/{unknown}/update", {"priority": 1}),
        ("cancel", {"operation_id": queued, "termination_reason": "BOGUS"},
         f"/operations/{queued}/cancel", {"termination_reason": "BOGUS"}),
        ("add", {"operations": []}, "/operations/add", []),
        ("resume_dispatcher", {}, "/dispatcher/resume", None),
    ]
    for command, args, path, body in cases:
        answer = central.command(command, args)
        response = client.post(path, json=body) if body is not None else client.post(path)
        rest = response.json()
        assert answer["error"] is not None, (command, args, answer)
        assert (answer["status"], answer["error"]["code"]) == (response.status_code,
                                                               rest["code"]), (command, args)


# ------------------------------------------------------------------------------ hostile input


def test_malformed_and_oversized_commands_are_refused_and_nothing_is_applied(
    clients, cell,
) -> None:
    broker, dispatcher, link = cell(start_paused=True)
    central = clients.central(broker, RESOURCE)
    dispatcher.start()
    queued = dispatcher.add_operation(op())
    assert dispatcher.drain_events(5)
    events_before = len(dispatcher.get_history().events)
    oid = str(queued.id)
    cases: list[tuple[bytes | str, str | None, int, str]] = [
        (b"not json", None, 400, "invalid_json"),
        (b"\xff\xfe", None, 400, "invalid_json"),
        ("[1, 2]", None, 400, "invalid_command"),
        ('{"command_id": "n", "command": "cancel", "args": {"operation_id": NaN}}', None, 400,
         "invalid_json"),
        ('{"command_id": "i", "command": "cancel", "args": {"x": Infinity}}', None, 400,
         "invalid_json"),
        (json.dumps({"command_id": "u", "command": "explode"}), "u", 400, "unknown_command"),
        (json.dumps({"command_id": "k", "command": "cancel", "extra": 1}), "k", 400,
         "invalid_command"),
        (json.dumps({"command_id": "a", "command": "cancel", "args": [oid]}), "a", 400,
         "invalid_command"),
        (json.dumps({"command_id": "x", "command": "cancel",
                     "args": {"operation_id": oid, "why": 1}}), "x", 400, "invalid_command"),
        (json.dumps({"command_id": "o", "command": "cancel", "args": {"operation_id": 7}}),
         "o", 400, "invalid_operation_id"),
        (json.dumps({"command_id": "f", "command": "complete",
                     "args": {"operation_id": oid, "force": "true"}}), "f", 400,
         "invalid_request_body"),
        (json.dumps({"command_id": "m", "command": "cancel",
                     "args": {"operation_id": oid, "meta_data": "x"}}), "m", 400,
         "invalid_request_body"),
        (json.dumps({"command_id": "p", "command": "add", "args": {"operations": [
            {"payload": {}, "priority": "high"}]}}), "p", 400, "invalid_operation"),
        (json.dumps({"command_id": "s", "command": "add", "args": {"operations": [
            {"payload": {}, "state": "RUNNING"}]}}), "s", 400, "invalid_operation"),
        ('{"command_id": "h", "command": "add", "args": {"operations": [{"payload": {}, '
         '"priority": ' + "9" * 5000 + "}]}}", None, 400, "invalid_json"),
        ('{"command_id": "d", "command": "add", "args": {"operations": [{"payload": '
         + "[" * 100_000 + "]" * 100_000 + "}]}}", None, 400, "invalid_json"),
        ('{"command_id": "d2", "command": "add", "args": {"operations": [{"payload": '
         + "[" * 100 + "]" * 100 + "}]}}", "d2", 400, "invalid_command"),
        (json.dumps({"command_id": "big", "command": "add", "args": {"operations": [
            {"payload": {"blob": "x" * MAX_COMMAND_BYTES}}]}}), None, 413, "request_too_large"),
        (json.dumps({"command_id": 5, "command": "pause_dispatcher"}), None, 400,
         "invalid_command"),
    ]
    for payload, command_id, status, code in cases:
        answer = central.send(payload, command_id)
        assert answer["ok"] is False, payload[:80]
        assert (answer["status"], answer["error"]["code"]) == (status, code), payload[:80]
    assert [o.id for o in dispatcher.get_schedule()] == [queued.id]
    assert dispatcher.is_paused
    assert len(dispatcher.get_history().events) == events_before


@pytest.mark.slow
def test_a_command_flood_is_refused_beyond_the_queue_and_nothing_refused_is_applied(
    clients, cell,
) -> None:
    broker, dispatcher, link = cell(approval_policy=ApprovalPolicy(
        cancel="mqtt", operator_timeout_seconds=60))
    central = clients.central(broker, RESOURCE)
    dispatcher.start()
    running = dispatcher.add_operation(op())
    wait_until(lambda: dispatcher.current_operation is not None, what="the start")
    central.publish(f"{BASE}/commands", json.dumps({  # holds the worker: it waits for approval
        "command_id": "hold", "command": "cancel", "args": {"operation_id": str(running.id)}}))
    request = central.first("requests").body["request"]
    flood = COMMAND_QUEUE_SIZE + 100
    for index in range(flood):
        central.client.publish(f"{BASE}/commands", json.dumps({
            "command_id": f"f{index}", "command": "add",
            "args": {"operations": [{"payload": {"n": index}}]}}), qos=1)
    central.wait_for(lambda: sum(m.body["status"] == 503 for m in central.of(
        "command_results")) >= flood - COMMAND_QUEUE_SIZE, what="the refusals")
    central.send(json.dumps({"request_id": request["request_id"], "accepted": False,
                             "command_id": "no"}), "no", topic="responses")
    central.wait_for(lambda: len({m.body["command_id"] for m in central.of("command_results")
                                  if m.body["command_id"].startswith("f")}) == flood,
                     timeout=30, what="every flood command answered")
    answers = {m.body["command_id"]: m.body for m in central.of("command_results")}
    accepted = [a for k, a in answers.items() if k.startswith("f") and a["ok"]]
    refused = [a for k, a in answers.items() if k.startswith("f") and not a["ok"]]
    assert all(a["error"]["code"] == "command_queue_full" for a in refused)
    assert len(refused) >= flood - COMMAND_QUEUE_SIZE
    assert len(dispatcher.get_schedule()) == len(accepted)  # only what was accepted was added


# ------------------------------------------------------------------------------ restart


@pytest.mark.slow
def test_a_broker_restart_mid_stream_loses_and_reorders_no_event(
    clients, make_broker, cell, tmp_path: Path,
) -> None:
    broker = make_broker(persistence=True)
    broker_, dispatcher, link = cell(broker=broker, start_paused=True)
    sub = clients.subscriber(broker, f"{BASE}/events", client_id="central-history",
                     clean_session=False)
    dispatcher.start()
    total = 300
    restarted = threading.Event()

    def produce() -> None:
        for index in range(total):
            dispatcher.add_operation(op(payload={"n": index}))
            if index == 100:
                restarted.wait(30)  # events 100.. are published while the broker is away

    producer = threading.Thread(target=produce, name="test-producer")
    producer.start()
    sub.wait_for(lambda: len(sub.of("events")) >= 50, what="the first events")
    broker.stop()
    wait_until(lambda: not link.is_connected, what="the link to notice")
    restarted.set()
    producer.join(30)
    broker.start()
    assert dispatcher.journal is not None
    last = dispatcher.journal.last_event_seq
    first_seq = sub.of("events")[0].body["seq"]

    def deduped() -> list[int]:
        seen: set[int] = set()
        order = []
        for message in sub.of("events"):
            seq = message.body["seq"]
            if seq not in seen:
                seen.add(seq)
                order.append(seq)
        return order

    sub.wait_for(lambda: last in deduped(), timeout=30, what=f"seq {last}")
    assert deduped() == list(range(first_seq, last + 1))
    assert link.dropped == 0


# ------------------------------------------------------------------------------ TLS


def test_tls_with_a_generated_ca_and_a_client_certificate(
    clients, make_broker, cell, tmp_path: Path,
) -> None:
    files = make_ca(tmp_path / "pki")
    broker = make_broker(tls=(files["ca.pem"], files["server.pem"], files["server.key"]),
                         require_certificate=True)
    tls = {"tls_ca": files["ca.pem"], "tls_cert": files["client.pem"],
           "tls_key": files["client.key"]}
    _, dispatcher, link = cell(broker=broker, settings=tls)
    sub = clients.subscriber(broker, f"{BASE}/connection", settings=MqttSettings(host="x", **tls))
    assert sub.first("connection").body["connectionState"] == "ONLINE"


@pytest.mark.slow  # paho's first retry comes 1 s after the refused connection
def test_a_broker_down_at_start_gets_the_events_once_it_is_up(
    clients, make_dispatcher, tmp_path: Path,
) -> None:
    broker = LocalBroker(tmp_path / "late-broker")  # not started yet: nothing listens
    dispatcher = make_dispatcher(journal=tmp_path / "late.db", start_paused=True)
    link = MqttLink(dispatcher, MqttSettings(host=broker.host, port=broker.port),
                    state_interval_seconds=0.05)
    link.start()
    try:
        dispatcher.start()
        dispatcher.add_operations([op(), op()])
        assert dispatcher.drain_events(5)
        assert not link.is_connected and link.buffered >= 3
        broker.start()
        sub = clients.subscriber(broker, f"{BASE}/#")
        assert link.wait_connected(15)
        assert dispatcher.journal is not None
        last = dispatcher.journal.last_event_seq
        sub.wait_for(lambda: [m.body["seq"] for m in sub.of("events")] ==
                     list(range(1, last + 1)), what="every event, in order")
        wait_until(lambda: link.buffered == 0, what="the acknowledgements")
    finally:
        link.stop()
        broker.stop()


@pytest.mark.slow  # paho's first retry comes 1 s after the refused connection
def test_an_outbox_overflow_is_a_seq_gap_that_the_history_fills(
    clients, make_dispatcher, make_client, tmp_path: Path,
) -> None:
    broker = LocalBroker(tmp_path / "late-broker")
    dispatcher = make_dispatcher(journal=tmp_path / "gap.db", start_paused=True)
    link = MqttLink(dispatcher, MqttSettings(host=broker.host, port=broker.port, buffer_size=3),
                    state_interval_seconds=0.05)
    link.start()
    try:
        api = make_client(dispatcher)  # the controller's REST API (it starts the dispatcher)
        dispatcher.add_operations([op(payload={"n": i}) for i in range(6)])
        assert dispatcher.drain_events(5)
        assert dispatcher.journal is not None
        last = dispatcher.journal.last_event_seq
        assert link.dropped == last - 3 and link.buffered == 3
        broker.start()
        sub = clients.subscriber(broker, [f"{BASE}/events", f"{BASE}/state"])
        assert link.wait_connected(15)
        sub.wait_for(lambda: len(sub.of("events")) == 3, what="the three kept events")
        received = [m.body for m in sub.of("events")]
        assert [b["seq"] for b in received] == [last - 2, last - 1, last]
        state = sub.first("state", lambda b: b["last_seq"] == last).body
        assert state["outbox"]["dropped"] == last - 3

        # the gap (seq 1 .. last - 3) from the journal, as the README says
        response = api.get("/operations/history",
                           query_string={"to_time": received[0]["event"]["created_at"]})
        history = [e["id"] for e in response.json()["events"]]
        have = {b["event"]["id"] for b in received}
        recovered = [eid for eid in history if eid not in have]
        link.stop()
        dispatcher.close(timeout=5)
        rows = journal_rows(tmp_path / "gap.db")
        assert recovered + [b["event"]["id"] for b in received] == [eid for _, eid in rows
                                                                      if _ <= last]
    finally:
        link.stop()
        broker.stop()


@pytest.mark.slow
def test_serve_with_an_mqtt_section_takes_commands_and_says_offline_on_sigterm(
    clients, make_broker, serve, tmp_path: Path,
) -> None:
    broker = make_broker()
    config = tmp_path / "cell.toml"
    config.write_text(
        f'[dispatcher]\nresource_id = "{RESOURCE}"\nstart_paused = true\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
    )
    central = clients.central(broker, RESOURCE)
    events = clients.subscriber(broker, f"{BASE}/events")
    served = serve("--config", str(config), "--journal", str(tmp_path / "j.db"))
    central.first("state", lambda b: b["state"]["is_running"], timeout=20)
    added = central.command("add", {"operations": [{"payload": {"via": "mqtt"}}]})
    assert added["status"] == 201
    operation_id = added["result"][0]["operation"]["id"]
    assert served.get(f"/operations/{operation_id}").json()["operation"]["payload"] == {
        "via": "mqtt"}
    status, _out, err = served.stop(signal.SIGTERM)
    assert status == 0, err
    assert "Traceback" not in err, err
    types = [m.body["event"]["event_type"] for m in events.of("events")]
    assert types[0] == "operation_dispatcher_started"
    assert types[-1] == "operation_dispatcher_stopped"  # the link stops after the dispatcher
    fresh = clients.subscriber(broker, f"{BASE}/connection")
    assert fresh.first("connection").body["connectionState"] == "OFFLINE"


def test_username_and_password_log_in_and_a_wrong_password_is_refused(
    clients, make_broker, make_dispatcher, cell, tmp_path: Path,
) -> None:
    passwords = tmp_path / "passwords"
    passwords.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), "cell", "s3cret"], check=True,
                   capture_output=True, timeout=30)
    broker = make_broker(password_file=str(passwords))
    _, dispatcher, link = cell(broker=broker, settings={"username": "cell",
                                                        "password": "s3cret"})
    assert link.is_connected

    refused = MqttLink(make_dispatcher(), MqttSettings(
        host=broker.host, port=broker.port, username="cell", password="wrong",
        client_id="intruder"))
    refused.start()
    try:
        assert not refused.wait_connected(1.5)
    finally:
        refused.stop()


def test_state_messages_are_coalesced_to_one_per_half_second_and_end_current(
    clients, make_broker, make_dispatcher,
) -> None:
    from datetime import datetime

    broker = make_broker()
    dispatcher = make_dispatcher(start_paused=True)
    link = MqttLink(dispatcher, MqttSettings(host=broker.host, port=broker.port))
    sub = clients.subscriber(broker, f"{BASE}/state")
    link.start()
    try:
        assert link.wait_connected(10)
        dispatcher.start()
        for _ in range(5):  # 200 changes within about a second
            dispatcher.add_operations([op() for _ in range(40)])
            dispatcher.drain_events(5)
        sub.first("state", lambda b: b["state"]["queue_size"] == 200)
        stamps = [datetime.fromisoformat(m.body["timestamp"].replace("Z", "+00:00"))
                  for m in sub.of("state")]
        gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:], strict=False)]
        assert len(stamps) < 10 and all(gap >= 0.45 for gap in gaps), gaps
    finally:
        link.stop()

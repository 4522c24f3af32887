"""The live frames of ``/events/stream?include=...`` (``http/live.py``): open requests, coalesced
signal changes and bridge health, so that the dashboard polls nothing; and the idle stream that
wakes only for its heartbeat. Real waitress servers on loopback ports, a real serial device
simulator over TCP for the bridge."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import pytest
from conftest import EventRecorder, assert_error, wait_until
from test_http_api import open_stream

from firmware_bridges.serial_line import SerialLineBridge
from firmware_bridges.simulators.serial_device import SerialDeviceSimulator
from operation_dispatcher import ApprovalPolicy, EventType, OperationDispatcher
from operation_dispatcher.http.events import EventStreams
from operation_dispatcher.http.live import LiveFrames
from operation_dispatcher.signals import SignalBoard

EVERYTHING = "requests,signals,bridges"


class Frames:
    """What a :class:`LiveFrames` sends, by kind, with a condition to wait on."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.sent: list[tuple[str, str]] = []

    def send(self, kind: str, message: str) -> None:
        with self.cond:
            self.sent.append((kind, message))
            self.cond.notify_all()

    def wait_for(self, test: Callable[[], bool], timeout: float = 10.0) -> None:
        with self.cond:
            assert self.cond.wait_for(test, timeout), self.sent[-5:]

    def named(self, name: str) -> list[dict[str, Any]]:
        import json

        with self.cond:
            found = []
            for _kind, message in self.sent:
                head, _, data = message.partition("\ndata: ")
                if head == f"event: {name}":
                    found.append(json.loads(data))
            return found


@pytest.fixture
def relay(make_dispatcher: Callable[..., OperationDispatcher]) -> Iterator[Callable[..., Any]]:
    made: list[LiveFrames] = []

    def factory(**kwargs: Any) -> tuple[OperationDispatcher, LiveFrames, Frames]:
        dispatcher = make_dispatcher()
        frames = Frames()
        live = LiveFrames(dispatcher, frames.send, **kwargs)
        live.join()
        made.append(live)
        return dispatcher, live, frames

    yield factory
    for live in made:
        live.close()


# ------------------------------------------------------------------------ on the stream


def test_a_request_opened_is_on_the_stream_and_closes_as_its_requested_event(
    make_api: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher(approval_policy=ApprovalPolicy(start="operator"))
    recorder = EventRecorder(dispatcher)
    api = make_api(dispatcher)
    reader = open_stream(api, include_requests="true", include="requests")
    try:
        op = api.add({"payload": {"task": "drill"}})[0]
        reader.wait_for(lambda: bool(reader.events("request_opened")))
        opened = reader.events("request_opened")[0]
        assert [opened] == api.get("/requests").json()  # the list's item, as it is
        assert opened["operation_id"] == op["id"]
        assert opened["waiting_for"] == "operator"
        frame = next(m for m in reader.messages if m["event"] == "request_opened")
        assert "id" not in frame  # state, not a journal event
        answer = api.post(f"/requests/{opened['request_id']}/approve", json={})
        assert answer.status_code == 200, answer.text
        recorder.wait_for(EventType.OPERATION_STARTED, operation_id=UUID(op["id"]))
        reader.wait_for(lambda: bool(reader.events("operation_start_requested")))
        closed = reader.events("operation_start_requested")[0]
        assert closed["id"] == opened["request_id"]
        assert closed["meta_data"]["request_decision"]["accepted"] is True
    finally:
        reader.close()


def test_a_stream_without_include_gets_no_live_frame(
    make_api: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    """Consumers written for the lifecycle events (CLI, MCP, MQTT) see exactly what they saw."""
    dispatcher = make_dispatcher(approval_policy=ApprovalPolicy(start="operator"))
    api = make_api(dispatcher)
    plain = open_stream(api, include_requests="true")
    live = open_stream(api, include=EVERYTHING)
    try:
        dispatcher.signals.set("door.closed", True)
        api.add({"payload": {}})
        live.wait_for(lambda: bool(live.events("request_opened")) and bool(live.events("signal")))
        dispatcher.signals.set("door.closed", False)
        live.wait_for(lambda: len(live.events("signal")) == 2)
        dispatcher.pause_dispatcher_runtime()  # a lifecycle event after every frame above
        plain.wait_for(lambda: bool(plain.events("operation_dispatcher_paused")))
        assert {m["event"] for m in plain.messages} == {
            "operation_added", "operation_dispatcher_paused"}
        assert live.events("signal")[-1]["value"] is False
    finally:
        plain.close()
        live.close()


@pytest.mark.parametrize("include, reason", [
    ("signals,weather", "may only list 'requests', 'signals', 'bridges'"),
    ("x" * 201, "at most 200 characters"),
])
def test_a_bad_include_is_refused_with_400(
    make_api: Callable[..., Any], include: str, reason: str,
) -> None:
    api = make_api()
    body = assert_error(api.get("/events/stream", params={"include": include}), 400,
                        "invalid_request", field="include")
    assert reason in body["message"]
    assert body["message"].count("got ") == 1  # the value shown once, not twice
    assert api.get("/health").json()["event_stream_clients"] == 0


def test_include_takes_spaces_repeats_and_nothing(make_api: Callable[..., Any]) -> None:
    api = make_api()
    for include in (" signals , signals ", ""):
        reader = open_stream(api, include=include)
        reader.close()


def test_server_stop_ends_live_streams_at_once_and_the_relay_thread(
    make_api: Callable[..., Any],
) -> None:
    api = make_api(heartbeat_seconds=60)  # no heartbeat would come in time
    reader = open_stream(api, include=EVERYTHING)
    streams: EventStreams = api.app.extensions["operation_dispatcher"].streams
    reader.wait_for(lambda: bool(reader.comments))
    assert streams.live.running
    started = time.monotonic()
    api.server.stop()
    reader.wait_for(lambda: reader.messages[-1:] == [{"event": "<end>"}])
    assert time.monotonic() - started < 5
    assert not streams.live.running
    assert not any(t.name.startswith("operation-dispatcher-live-frames")
                   for t in threading.enumerate())
    reader.close()


def test_the_relay_runs_only_while_a_client_wants_frames(make_api: Callable[..., Any]) -> None:
    api = make_api()
    streams: EventStreams = api.app.extensions["operation_dispatcher"].streams
    plain = open_stream(api)
    assert not streams.live.running  # a lifecycle-only client costs no relay
    first, second = open_stream(api, include="signals"), open_stream(api, include="requests")
    assert streams.live.running
    first.close()
    second.close()
    wait_until(lambda: api.get("/health").json()["event_stream_clients"] == 1,
               what="both live clients noticed gone (at their next heartbeat)")
    assert not streams.live.running
    plain.close()


# ------------------------------------------------------------------------ coalescing


def test_a_flooded_signal_is_coalesced_latest_value_wins(relay: Callable[..., Any]) -> None:
    dispatcher, live, frames = relay(interval=0.3)
    board = dispatcher.signals
    started = time.monotonic()
    for n in range(20_000):
        board.set("spindle.rpm", n)
    flooded = time.monotonic() - started
    frames.wait_for(lambda: any(s["value"] == 19_999 for s in frames.named("signal")))
    took = time.monotonic() - started
    sent = frames.named("signal")
    # the first change goes out at once, then at most one frame per interval
    assert len(sent) <= 2 + took / 0.3, (len(sent), flooded, took)
    assert sent[-1]["value"] == 19_999
    assert [s["value"] for s in sent] == sorted(s["value"] for s in sent)


def test_many_signal_names_stay_bounded_and_ask_for_one_resync(
    relay: Callable[..., Any],
) -> None:
    dispatcher, live, frames = relay(interval=0.5, max_names=50)
    board = dispatcher.signals
    board.set("first", 0)
    frames.wait_for(lambda: bool(frames.named("signal")))  # the next flush is 0.5 s away
    for n in range(5_000):
        board.set(f"device.invented.{n}", n, max_age_seconds=60)
        assert len(live._changed) <= 50
    frames.wait_for(lambda: bool(frames.named("signals_resync")))
    assert len(frames.named("signal")) == 1  # the 5,000 never became frames
    assert len(live._changed) == 0
    assert len(live._deadlines) <= 50


def test_a_signal_nobody_confirms_is_sent_again_when_it_goes_stale(
    relay: Callable[..., Any],
) -> None:
    dispatcher, live, frames = relay(interval=0.1)
    dispatcher.signals.set("plc.ready", True, max_age_seconds=0.3)
    frames.wait_for(lambda: len(frames.named("signal")) == 2, timeout=5)
    fresh, stale = frames.named("signal")
    assert (fresh["stale"], stale["stale"]) == (False, True)
    assert stale["value"] is True and stale["updated_at"] == fresh["updated_at"]


def test_a_confirmed_signal_is_not_sent_again(relay: Callable[..., Any]) -> None:
    dispatcher, live, frames = relay(interval=0.05)
    board = dispatcher.signals
    board.set("plc.ready", True, max_age_seconds=0.8)
    frames.wait_for(lambda: len(frames.named("signal")) == 1)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # a bridge re-confirming at 100 Hz, over 2 max ages
        board.set("plc.ready", True, max_age_seconds=0.8)
        time.sleep(0.01)  # the bridge's poll interval, not a synchronisation
    assert len(frames.named("signal")) == 1
    assert "plc.ready" in live._deadlines  # still watched


def test_expiring_a_fresh_signal_tells_the_listeners_once() -> None:
    board = SignalBoard()
    heard: list[tuple[str, bool]] = []
    board.subscribe(lambda signal: heard.append((signal.name, signal.is_stale())))
    board.set("mcu.ready", True)
    assert board.expire("mcu.ready")
    assert board.expire("mcu.ready")  # stale already: nothing changed
    assert not board.expire("nothing")
    assert heard == [("mcu.ready", False), ("mcu.ready", True)]


# ------------------------------------------------------------------------ bridges


def test_a_bridge_going_online_and_offline_is_on_the_stream(
    make_api: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher],
    make_sim: Callable[..., SerialDeviceSimulator],
) -> None:
    device = make_sim(run_seconds=None, signals={"ready": True}, repeat_seconds=0.05)
    dispatcher = make_dispatcher()
    bridge = SerialLineBridge(dispatcher, "mcu", device.url, reconnect_initial=0.02,
                              reconnect_max=0.1)
    api = make_api(dispatcher, bridges=[bridge])
    reader = open_stream(api, include="bridges,signals")
    bridge.start()
    try:
        reader.wait_for(lambda: any(b["online"] for b in reader.events("bridge")))
        assert reader.events("bridge")[-1] == {**api.get("/bridges/mcu").json(),
                                               "counters": reader.events("bridge")[-1]["counters"]}
        reader.wait_for(lambda: any(s["name"] == "mcu.ready" for s in reader.events("signal")))
        device.stop()
        reader.wait_for(lambda: not reader.events("bridge")[-1]["online"])
        assert reader.events("bridge")[-1]["last_error"]
        reader.wait_for(lambda: [s["stale"] for s in reader.events("signal")
                                 if s["name"] == "mcu.ready"][-1] is True)
        # a flapping device: at most one bridge frame per 0.5 s
        times = [m for m in reader.messages if m.get("event") == "bridge"]
        assert len(times) <= 4
    finally:
        bridge.stop()
        reader.close()


# ------------------------------------------------------------------------ idle streams


def test_an_idle_stream_waits_for_its_heartbeat_not_a_poll(
    make_dispatcher: Callable[..., OperationDispatcher], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It used to wake once a second per client to ask the server whether the socket closed
    (which it could not see while the request ran): 0.1 ms/s of CPU per idle page."""
    from operation_dispatcher.http import events

    asked: list[float] = []

    class RecordingClient(events._Client):
        __slots__ = ()

        def take(self, timeout: float) -> tuple[str | None, int]:
            asked.append(timeout)
            return super().take(timeout)

    monkeypatch.setattr(events, "_Client", RecordingClient)
    streams = EventStreams(make_dispatcher(), heartbeat_seconds=30)
    client = streams.open(False, live=frozenset({"signals"}))
    body = streams.messages(client)
    assert next(body).startswith("retry:")
    ended = threading.Event()

    def drain() -> None:
        for _message in body:
            pass
        ended.set()

    thread = threading.Thread(target=drain, name="drain-idle-stream")
    thread.start()
    wait_until(lambda: asked, what="the stream to wait")
    streams.close_all()
    assert ended.wait(5), "close_all() did not end the waiting stream"
    thread.join(5)
    assert asked and min(asked) > 29  # one wait for the whole heartbeat
    assert streams.client_count == 0 and not streams.live.running


@pytest.mark.slow
def test_a_client_that_left_frees_its_slot_at_the_first_failed_heartbeat(
    make_api: Callable[..., Any],
) -> None:
    """waitress reads nothing while a request runs, so a client's leaving shows only when a
    write to it fails, on the server's thread; that thread now ends the stream at once
    (``ON_CLOSE_KEY``) instead of leaving it to find out at its next heartbeat."""
    import socket
    import struct

    api = make_api(heartbeat_seconds=3.0)
    host, port = api.server.host, api.server.port
    sock = socket.create_connection((host, port))
    sock.sendall(b"GET /events/stream?include=signals HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.settimeout(10)
    seen = b""
    while b"connected to" not in seen:
        seen += sock.recv(4096)
    wait_until(lambda: api.get("/health").json()["event_stream_clients"] == 1, what="a stream")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # a reset: the first heartbeat's send fails
    left = time.monotonic()
    wait_until(lambda: api.get("/health").json()["event_stream_clients"] == 0, timeout=10,
               what="the slot freed")
    took = time.monotonic() - left
    assert took < 5.0, f"freed {took:.1f} s after the client left (heartbeat 3 s)"
    streams: EventStreams = api.app.extensions["operation_dispatcher"].streams
    assert not streams.live.running

"""MQTT link: latency, throughput and a 100-controller fleet on one real mosquitto.

Every figure is measured beside a bare paho publisher/subscriber doing the same on the same
broker in the same run (the floor: the broker, paho and the loopback). The broker is a local
mosquitto (Debian package) on a free loopback port, config and data in a temp folder.

* ``mqtt.event_latency.median`` / ``.p99``: ``add_operation`` on a paused dispatcher (one
  OPERATION_ADDED event) -> that event received by a subscriber, one at a time. Baseline: a
  bare ``publish`` of a payload of the same size -> received.
* ``mqtt.events_per_s``: events one controller sustains at QoS 1 (``add_operations`` of 100
  at a time, journal in memory), counted when the subscriber has all of them. Baseline: bare
  QoS 1 publishes of the same payload size, counted the same way.
* ``mqtt.fleet100.messages_per_s``: 100 controllers (a dispatcher and an MqttLink each, in
  threads of one process: each a real client), each adding and cancelling one operation every
  :data:`TICK` s for :data:`FLEET_SECONDS` s; every message (events, coalesced states) counted
  by one wildcard subscriber. Baseline: 100 bare paho clients offering the same number of
  messages per tick. ``bare_flat_out_messages_per_s``: the same 100 bare clients publishing as
  fast as paho lets them (what this broker and machine carry at most).
* ``mqtt.fleet100.refresh_ms``: under that load, a controller's dispatcher paused -> the fleet
  view shows it paused (the link publishes state at most every 0.5 s: that is most of it).
  Baseline: a bare state message published -> the fleet view shows it.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from benchmarks.common import emit, percentile
from operation_dispatcher import Operation, OperationDispatcher
from operation_dispatcher.mqtt import FleetView, MqttLink, MqttSettings
from operation_dispatcher.mqtt.localbroker import LocalBroker

PREFIX = "operation-dispatcher"
LATENCY_SAMPLES = 300
THROUGHPUT_EVENTS = 5000
FLEET = 100
FLEET_SECONDS = 5.0
#: each simulated controller adds and cancels one operation per tick
TICK = 0.5
REFRESH_SAMPLES = 10


class Counter:
    """A subscriber that counts messages and notes when each ``seq`` (or marker) arrived."""

    def __init__(self, broker: LocalBroker, topic: str, key: str | None = "seq") -> None:
        self.cond = threading.Condition()
        self.count = 0
        self.arrived: dict[Any, float] = {}
        self.key = key
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        subscribed.wait(10)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        now = time.perf_counter()
        mark = None
        if self.key is not None:
            mark = json.loads(message.payload).get(self.key)
        with self.cond:
            self.count += 1
            if mark is not None:
                self.arrived.setdefault(mark, now)
            self.cond.notify_all()

    def wait(self, predicate: Any, timeout: float = 60) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise TimeoutError("the subscriber did not get the messages")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def bare_client(broker: LocalBroker) -> Any:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def latency(broker: LocalBroker, settings: MqttSettings) -> None:
    dispatcher = OperationDispatcher("bench-latency", start_paused=True)
    link = MqttLink(dispatcher, settings)
    link.start()
    link.wait_connected(10)
    dispatcher.start()
    sub = Counter(broker, f"{PREFIX}/bench-latency/events")
    ours = []
    for _ in range(LATENCY_SAMPLES):
        seen = sub.count
        began = time.perf_counter()
        dispatcher.add_operation(Operation(resource_id="bench-latency", payload={"n": 1}))
        sub.wait(lambda seen=seen: sub.count > seen)
        ours.append(max(sub.arrived.values()) - began)
    size = len(json.dumps({"seq": 1, "event": {"x": "y" * 300}}))
    sub.close()
    dispatcher.close(timeout=5)
    link.stop()

    bare_sub = Counter(broker, f"{PREFIX}/bare-latency", key="n")
    publisher = bare_client(broker)
    bare = []
    for index in range(LATENCY_SAMPLES):
        began = time.perf_counter()
        publisher.publish(f"{PREFIX}/bare-latency", json.dumps({"n": index, "pad": "y" * size}),
                          qos=1)
        bare_sub.wait(lambda index=index: index in bare_sub.arrived)
        bare.append(bare_sub.arrived[index] - began)
    publisher.disconnect()
    publisher.loop_stop()
    bare_sub.close()
    for name, ours_value, bare_value in (
        ("median", statistics.median(ours), statistics.median(bare)),
        ("p99", percentile(ours, 99), percentile(bare, 99)),
    ):
        emit(f"mqtt.event_latency.{name}", ours_value * 1000, "ms", bare_value * 1000,
             samples=LATENCY_SAMPLES)


def throughput(broker: LocalBroker, settings: MqttSettings) -> None:
    dispatcher = OperationDispatcher("bench-rate", start_paused=True,
                                     event_retention=THROUGHPUT_EVENTS * 2)
    link = MqttLink(dispatcher, MqttSettings(host=broker.host, port=broker.port,
                                             buffer_size=THROUGHPUT_EVENTS * 2))
    link.start()
    link.wait_connected(10)
    dispatcher.start()
    sub = Counter(broker, f"{PREFIX}/bench-rate/events")
    assert dispatcher.drain_events(5)
    first = None
    began = time.perf_counter()
    for _ in range(THROUGHPUT_EVENTS // 100):
        added = dispatcher.add_operations(
            [Operation(resource_id="bench-rate", payload={"n": 1}) for _ in range(100)])
        first = first or added
    assert dispatcher.drain_events(60)
    sub.wait(lambda: sub.count >= THROUGHPUT_EVENTS)
    ours = THROUGHPUT_EVENTS / (time.perf_counter() - began)
    sub.close()
    dispatcher.close(timeout=5)
    link.stop()

    bare_sub = Counter(broker, f"{PREFIX}/bare-rate", key=None)
    publisher = bare_client(broker)
    payload = json.dumps({"seq": 1, "pad": "y" * 600})
    began = time.perf_counter()
    for _ in range(THROUGHPUT_EVENTS):
        publisher.publish(f"{PREFIX}/bare-rate", payload, qos=1)
    bare_sub.wait(lambda: bare_sub.count >= THROUGHPUT_EVENTS)
    bare = THROUGHPUT_EVENTS / (time.perf_counter() - began)
    publisher.disconnect()
    publisher.loop_stop()
    bare_sub.close()
    emit("mqtt.events_per_s", ours, "events/s", bare, events=THROUGHPUT_EVENTS,
         journal="memory")


def fleet(broker: LocalBroker, settings: MqttSettings) -> None:
    cells = []
    for index in range(FLEET):
        dispatcher = OperationDispatcher(f"cell-{index:03d}", start_paused=True,
                                         event_retention=1000)
        link = MqttLink(dispatcher, settings)
        link.start()
        dispatcher.start()
        cells.append((dispatcher, link))
    for _, link in cells:
        link.wait_connected(30)
    view = FleetView(settings)
    view.start()
    if not view.wait_for(lambda v: sum(c.resource_id.startswith("cell-") and c.is_running is True
                                       for c in v.controllers()) == FLEET, 30):
        raise TimeoutError("the fleet view did not see every controller")
    counter = Counter(broker, f"{PREFIX}/#", key=None)
    stop = threading.Event()

    def produce(dispatcher: OperationDispatcher) -> None:
        """Every TICK: an operation added and cancelled (its events and a state change)."""
        next_tick = time.monotonic()
        while not stop.is_set():
            added = dispatcher.add_operation(
                Operation(resource_id=dispatcher.resource_id, payload={}))
            dispatcher.cancel_operation(added.id)
            next_tick += TICK
            stop.wait(max(0.0, next_tick - time.monotonic()))

    threads = [threading.Thread(target=produce, args=(d,), name=f"bench-{d.resource_id}")
               for d, _ in cells]
    start_count = counter.count
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    refresh = []
    for sample in range(REFRESH_SAMPLES):
        dispatcher = cells[sample * 7 % FLEET][0]
        t0 = time.perf_counter()
        dispatcher.resume_dispatcher_runtime()
        rid = dispatcher.resource_id
        view.wait_for(lambda v, rid=rid: not v.get(rid).is_paused, 30)
        refresh.append(time.perf_counter() - t0)
        dispatcher.pause_dispatcher_runtime()
    remaining = FLEET_SECONDS - (time.perf_counter() - began)
    if remaining > 0:
        stop.wait(remaining)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    ours_count = counter.count - start_count
    ours = ours_count / elapsed
    counter.close()
    for dispatcher, link in cells:
        dispatcher.close(timeout=5)
        link.stop()

    # 100 bare clients offering the same messages at the same pace; then flat out
    bare_counter = Counter(broker, f"{PREFIX}/bare-fleet/#", key=None)
    publishers = [bare_client(broker) for _ in range(FLEET)]
    per_tick = max(1, round(ours_count / FLEET / (elapsed / TICK)))
    payload = json.dumps({"seq": 1, "pad": "y" * 600})
    paced = threading.Event()

    def offer(client: Any, index: int) -> None:
        next_tick = time.monotonic()
        while not paced.is_set():
            for _ in range(per_tick):
                client.publish(f"{PREFIX}/bare-fleet/{index}/events", payload, qos=1)
            next_tick += TICK
            paced.wait(max(0.0, next_tick - time.monotonic()))

    offered = [threading.Thread(target=offer, args=(c, i), name=f"bench-bare-{i}")
               for i, c in enumerate(publishers)]
    began = time.perf_counter()
    for thread in offered:
        thread.start()
    paced.wait(FLEET_SECONDS)
    paced.set()
    for thread in offered:
        thread.join()
    bare = bare_counter.count / (time.perf_counter() - began)
    bare_refresh = []
    state = {"state": {"is_running": True, "is_paused": False, "queue_size": 0}}
    for index in range(REFRESH_SAMPLES):
        rid = f"bare-{index}"
        t0 = time.perf_counter()
        publishers[0].publish(f"{PREFIX}/{rid}/state", json.dumps(state), qos=1, retain=True)
        view.wait_for(lambda v, rid=rid: v.get(rid) is not None, 30)
        bare_refresh.append(time.perf_counter() - t0)
        publishers[0].publish(f"{PREFIX}/{rid}/state", b"", qos=1, retain=True)
    view.stop()

    flat_out = 200  # messages per bare client, as fast as paho sends them
    before = bare_counter.count

    def blast(client: Any, index: int) -> None:
        for _ in range(flat_out):
            client.publish(f"{PREFIX}/bare-fleet/{index}/events", payload, qos=1)

    blasters = [threading.Thread(target=blast, args=(c, i), name=f"bench-blast-{i}")
                for i, c in enumerate(publishers)]
    began = time.perf_counter()
    for thread in blasters:
        thread.start()
    for thread in blasters:
        thread.join()
    bare_counter.wait(lambda: bare_counter.count - before >= flat_out * FLEET, 120)
    capacity = flat_out * FLEET / (time.perf_counter() - began)
    for client in publishers:
        client.disconnect()
        client.loop_stop()
    bare_counter.close()
    emit("mqtt.fleet100.messages_per_s", ours, "messages/s", bare, controllers=FLEET,
         tick_seconds=TICK, seconds=round(elapsed, 1),
         bare_flat_out_messages_per_s=round(capacity))
    emit("mqtt.fleet100.refresh_ms", statistics.median(refresh) * 1000, "ms",
         statistics.median(bare_refresh) * 1000, samples=REFRESH_SAMPLES,
         max_ms=round(max(refresh) * 1000, 1), state_interval_seconds=0.5)


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as folder:
        with LocalBroker(Path(folder)) as broker:
            settings = MqttSettings(host=broker.host, port=broker.port)
            latency(broker, settings)
            throughput(broker, settings)
            fleet(broker, settings)


if __name__ == "__main__":
    main()

"""Real MQTT clients for the link's tests: a recording subscriber, a central system, a CA.

Every client is a real paho client on the test's own mosquitto (``make_broker`` fixture);
waits are on a condition variable that each received message notifies.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from operation_dispatcher.mqtt import MqttSettings
from operation_dispatcher.mqtt.localbroker import LocalBroker

PREFIX = "operation-dispatcher"


@dataclass(frozen=True)
class Received:
    topic: str
    retain: bool
    payload: bytes

    @property
    def body(self) -> Any:
        return json.loads(self.payload)

    @property
    def name(self) -> str:
        return self.topic.rsplit("/", 1)[-1]


class Subscriber:
    """A paho client that records every message of ``topics`` in arrival order."""

    def __init__(
        self, broker: LocalBroker, topics: str | list[str] = f"{PREFIX}/#", *,
        client_id: str | None = None, clean_session: bool = True,
        settings: MqttSettings | None = None,
    ) -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"test-{uuid.uuid4().hex}",
            clean_session=clean_session, protocol=mqtt.MQTTv311,
        )
        if settings is not None and settings.tls_ca:
            self.client.tls_set(settings.tls_ca, settings.tls_cert, settings.tls_key)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.topics = [topics] if isinstance(topics, str) else topics
        self.cond = threading.Condition()
        self.received: list[Received] = []
        self.subscriptions = 0
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, 30)
        self.client.loop_start()
        self.wait_for(lambda: self.subscriptions > 0, what="SUBACK")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe([(topic, 1) for topic in self.topics])

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, codes: Any, props: Any) -> None:
        with self.cond:
            self.subscriptions += 1
            self.cond.notify_all()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self.cond:
            self.received.append(Received(message.topic, bool(message.retain), message.payload))
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0,
                 what: str = "messages") -> Any:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not (result := predicate()):
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"timed out waiting for {what}; got {self.summary()}"
                self.cond.wait(remaining)
            return result

    def of(self, name: str) -> list[Received]:
        with self.cond:
            return [m for m in self.received if m.name == name]

    def first(self, name: str, predicate: Callable[[Any], Any] = lambda body: True,
              timeout: float = 10.0) -> Received:
        def find() -> Received | None:
            for message in self.received:
                if message.name == name and predicate(message.body):
                    return message
            return None
        return self.wait_for(find, timeout, what=f"a {name} message")

    def summary(self) -> str:
        return ", ".join(f"{m.topic}{'(r)' if m.retain else ''}" for m in self.received[-20:])

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Central(Subscriber):
    """A central system: sends commands to one controller and waits for their results."""

    def __init__(self, broker: LocalBroker, resource_id: str, **kwargs: Any) -> None:
        self.base = f"{PREFIX}/{resource_id}"
        super().__init__(broker, [f"{self.base}/command_results", f"{self.base}/requests",
                                  f"{self.base}/state"], **kwargs)
        self._ids = 0

    def command(self, command: str, args: dict[str, Any] | None = None,
                timeout: float = 10.0, **extra: Any) -> dict[str, Any]:
        self._ids += 1
        command_id = f"c{self._ids}-{uuid.uuid4().hex[:6]}"
        body: dict[str, Any] = {"command_id": command_id, "command": command, **extra}
        if args is not None:
            body["args"] = args
        return self.send(json.dumps(body), command_id, timeout)

    def send(self, payload: bytes | str, command_id: str | None, timeout: float = 10.0,
             topic: str = "commands") -> dict[str, Any]:
        seen = len(self.of("command_results"))
        self.publish(f"{self.base}/{topic}", payload)
        return self.result(command_id, timeout, after=seen)

    def result(self, command_id: str | None, timeout: float = 10.0,
               after: int = 0) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for message in self.of("command_results")[after:]:
                body = message.body
                if body["command_id"] == command_id:
                    return body
            return None
        return self.wait_for(find, timeout, what=f"the result of {command_id}")


def make_ca(folder: Path) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (openssl CLI)."""
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True,
                       timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.pem")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, cn in (("server", "127.0.0.1"), ("client", "cell-client")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", "san.ext")
    return {name: str(folder / name) for name in (
        "ca.pem", "server.pem", "server.key", "client.pem", "client.key")}

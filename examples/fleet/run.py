"""The fleet demo (``make fleet-demo``): three cells on one local MQTT broker, and the fleet view.

1. a mosquitto on a free loopback port, its config and data in a temp folder;
2. three ``operation-dispatcher serve --demo`` processes (each with its simulated PLC on a port
   of its own, its REST API, and ``[mqtt]`` pointing at the broker), configs from ``cell.toml``;
3. a central approver: a plain paho client that approves every request cell-3 publishes
   (cell-3's ``approvals.start = "mqtt"``), as a plant's MES would;
4. ``operation-dispatcher fleet`` in the foreground.

Ctrl-C stops everything (the cells, the approver, the broker) and removes the temp folder.
"""

from __future__ import annotations

import json
import signal
import string
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from operation_dispatcher.mqtt.localbroker import LocalBroker, free_port

HERE = Path(__file__).resolve().parent
PREFIX = "operation-dispatcher"
CELLS = (("cell-1", "auto"), ("cell-2", "auto"), ("cell-3", "mqtt"))


def approver(port: int, stop: threading.Event) -> None:
    """Approve every request a cell publishes, one second later (an MES that said yes)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fleet-demo-approver")

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe(f"{PREFIX}/+/requests", qos=1)

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        request = json.loads(message.payload)["request"]
        answer = {"request_id": request["request_id"], "accepted": True,
                  "answered_by": "fleet-demo-approver", "reasoning": "demo: always yes"}
        topic = message.topic.rsplit("/", 1)[0] + "/responses"
        threading.Timer(1.0, client.publish, (topic, json.dumps(answer), 1)).start()

    client.on_connect, client.on_message = on_connect, on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()


def main() -> int:
    template = string.Template((HERE / "cell.toml").read_text())
    with tempfile.TemporaryDirectory(prefix="fleet-demo-") as folder:
        broker = LocalBroker(Path(folder) / "broker", own_session=True).start()
        print(f"fleet-demo: mosquitto on 127.0.0.1:{broker.port} (pid {broker.pid})", flush=True)
        cells: list[subprocess.Popen[bytes]] = []
        stop = threading.Event()
        approving = threading.Thread(target=approver, args=(broker.port, stop),
                                     name="fleet-demo-approver")
        approving.start()
        previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(
            KeyboardInterrupt()))
        try:
            for resource_id, policy in CELLS:
                config = Path(folder) / f"{resource_id}.toml"
                http_port = free_port()
                config.write_text(template.substitute(
                    resource_id=resource_id, journal=Path(folder) / f"{resource_id}.db",
                    http_port=http_port, start_policy=policy, mqtt_port=broker.port,
                    plc_port=free_port(),
                ))
                cells.append(subprocess.Popen(
                    [sys.executable, "-m", "operation_dispatcher", "serve", "--demo",
                     "--config", str(config), "--log-level", "WARNING"],
                    stdout=subprocess.DEVNULL,
                ))
                print(f"fleet-demo: {resource_id} on http://127.0.0.1:{http_port} "
                      f"(approvals.start = {policy!r})", flush=True)
            fleet = subprocess.run([sys.executable, "-m", "operation_dispatcher", "fleet",
                                    "--broker", f"127.0.0.1:{broker.port}"], check=False)
            return fleet.returncode
        except KeyboardInterrupt:
            return 0
        finally:
            signal.signal(signal.SIGTERM, previous)
            for cell in cells:
                cell.send_signal(signal.SIGTERM)
            for cell in cells:
                try:
                    cell.wait(15)
                except subprocess.TimeoutExpired:
                    cell.kill()
                    cell.wait()
            stop.set()
            approving.join(5)
            broker.stop()
            print("fleet-demo: stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())

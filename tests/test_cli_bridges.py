"""End to end: ``operation-dispatcher serve --config examples/plc.toml`` against a real PLC.

The PLC is the simulator (pymodbus' own server) on a free port of 127.0.0.1; the example config
is used as shipped, only pointed at that port. Operations added over HTTP run on the PLC
through the Modbus bridge and finish by its done or error bit.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from served import Served

from firmware_bridges.simulators.plc import PlcSimulator, free_port
from operation_dispatcher.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example_config(tmp_path: Path, name: str, port: int) -> Path:
    """The example config with its bridge pointed at ``port`` (everything else as shipped)."""
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    text, replaced = re.subn(r"(?m)^(port = |serial_port = \"socket://127\.0\.0\.1:)502[01]\b",
                             rf"\g<1>{port}", text)
    assert replaced == 1, "the example's bridge port moved: update this test"
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def completed(body: Any) -> bool:
    return body["operation"]["state"] == "COMPLETED" and body["operation"]["outcome"] == "SUCCESS"


def last_event(served: Served, op_id: str) -> dict[str, Any]:
    events = served.get(f"/operations/{op_id}/events").json()
    return events[-1] if isinstance(events, list) else events["events"][-1]


def wait_for(served: Served, path: str, predicate: Callable[[Any], bool], timeout: float = 15.0) -> Any:
    """GET ``path`` until ``predicate(json)`` holds; the last JSON body."""
    return served.poll(path, predicate, timeout)


@pytest.fixture(params=["plc.toml", "plc-rtu.toml"])
def example(request: pytest.FixtureRequest) -> str:
    """Each PLC example: Modbus TCP, and Modbus RTU (RTU frames over TCP)."""
    return request.param


@pytest.fixture
def plc(example: str) -> Iterator[PlcSimulator]:
    framer = "rtu" if "rtu" in example else "tcp"
    simulator = PlcSimulator(cycle_time=0.1, failing_programs={99: 42}, ready=True, framer=framer)
    simulator.start()
    yield simulator
    simulator.stop()


def test_an_operation_added_over_http_runs_on_the_plc(
    serve: Callable[..., Served], plc: PlcSimulator, example: str, tmp_path: Path
) -> None:
    config = example_config(tmp_path, example, plc.port)
    server = serve("--config", str(config), "--journal", str(tmp_path / "cell.db"))
    bridges = wait_for(server, "/bridges", lambda body: body and body[0]["online"])
    assert bridges[0]["name"] == "plc" and f"127.0.0.1:{plc.port}" in bridges[0]["endpoint"]

    added = server.post("/operations/add", json=[
        {"payload": {"program": 3}, "release_conditions": {"plc.ready": True}},
    ])
    assert added.status_code == 201, added.text
    op_id = added.json()[0]["operation"]["id"]
    wait_for(server, f"/operations/{op_id}", completed)
    assert last_event(server, op_id)["meta_data"]["bridge"] == "plc"
    assert plc.programs_run == [3]

    failing = server.post("/operations/add", json=[{"payload": {"program": 99}}]).json()
    failing_id = failing[0]["operation"]["id"]
    failed = wait_for(server, f"/operations/{failing_id}",
                      lambda body: body["operation"]["outcome"] == "FAILURE")
    assert failed["operation"]["termination_reason"] == "EXTERNAL_ERROR"
    assert last_event(server, failing_id)["meta_data"]["plc_error_code"] == 42

    signals = {s["name"]: s for s in server.get("/signals").json()}
    assert signals["plc.ready"]["value"] is True and signals["plc.mode"]["value"] in {"error", "idle"}
    assert signals["plc.temperature"]["value"] == pytest.approx(21.5)
    status, out, err = server.stop()
    assert status == 0, err
    assert "stopped" in out


def test_an_operation_waits_for_the_ready_bit_and_a_vanished_plc_holds_it(
    serve: Callable[..., Served], plc: PlcSimulator, example: str, tmp_path: Path
) -> None:
    plc.set_ready(False)
    config = example_config(tmp_path, example, plc.port)
    server = serve("--config", str(config), "--journal", ":memory:")
    wait_for(server, "/signals", lambda body: any(
        s["name"] == "plc.ready" and s["value"] is False for s in body))
    op_id = server.post("/operations/add", json=[
        {"payload": {"program": 1}, "release_conditions": {"plc.ready": True}},
    ]).json()[0]["operation"]["id"]
    assert server.get(f"/operations/{op_id}").json()["operation"]["state"] == "QUEUED"

    plc.stop()  # the PLC vanishes: its signals go stale, the bridge goes offline
    wait_for(server, "/bridges/plc", lambda body: body["online"] is False)
    plc.set_ready(True)
    stale = {s["name"]: s for s in server.get("/signals").json()}
    assert stale["plc.ready"]["stale"] or stale["plc.ready"]["value"] is False
    assert server.get(f"/operations/{op_id}").json()["operation"]["state"] == "QUEUED"

    plc.start()  # back on the same port, now ready: the bridge reconnects and the op runs
    wait_for(server, f"/operations/{op_id}", completed)
    assert server.get("/bridges/plc").json()["counters"]["reconnects"] >= 1
    assert server.stop()[0] == 0


def test_make_demo_runs_the_operations_on_a_simulated_plc(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    config = example_config(tmp_path, "plc.toml", free_port())
    server = serve("--demo", "--config", str(config), "--journal", ":memory:")
    history = wait_for(server, "/operations/history?limit=1000", lambda body: any(
        e["event_type"] == "operation_completed" for e in body["events"]), timeout=30)
    finished = [e for e in history["events"] if e["event_type"] == "operation_completed"]
    assert finished[0]["meta_data"]["bridge"] == "plc"  # finished by the PLC's done bit, not in-process
    assert server.get("/bridges/plc").json()["online"] is True
    assert server.stop()[0] == 0


def test_serve_refuses_a_bridge_config_error_with_its_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[[bridges]]\ntype = "modbus"\nname = "plc"\nhost = "127.0.0.1"\n'
                      '[bridges.signals]\nready = {kind = "coil", address = -1}\n')
    assert main(["serve", "--config", str(config), "--journal", ":memory:", "--port", "0"]) == 2
    assert "bridges[0].signals.ready.address: must be an integer 0..65535" in capsys.readouterr().err


def test_the_demo_reports_a_busy_plc_port_and_exits_1(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = example_config(tmp_path, "plc.toml", busy.getsockname()[1])
        done = subprocess.run(
            [sys.executable, "-m", "operation_dispatcher", "serve", "--demo", "--config", str(config),
             "--journal", ":memory:", "--port", "0", "--log-level", "WARNING"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )
    assert done.returncode == 1, done.stderr
    assert "simulated PLC cannot listen on 127.0.0.1:" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_refuses_two_executors_naming_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 10, A.2: two bridges that both run jobs would both act on every started operation."""
    config = tmp_path / "two.toml"
    config.write_text(
        '[[bridges]]\ntype = "modbus"\nname = "plc"\nhost = "127.0.0.1"\n'
        '[bridges.executor]\nprogram_register = 0\nstart_coil = 0\ndone_coil = 1\nerror_coil = 2\n'
        '[[bridges]]\ntype = "serial"\nname = "mcu"\nurl = "loop://"\nexecutor = true\n'
    )
    assert main(["serve", "--config", str(config), "--journal", ":memory:", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "only one bridge may run the machine's jobs" in err
    assert "bridges[0] ('plc') and bridges[1] ('mcu')" in err


def cell_config(tmp_path: Path, plc_port: int, panel_port: int) -> Path:
    """examples/cell.toml with its two devices moved to free ports (everything else as shipped)."""
    text = (EXAMPLES / "cell.toml").read_text(encoding="utf-8")
    text, plc = re.subn(r"(?m)^port = 5020\b", f"port = {plc_port}", text)
    text, panel = re.subn(r"socket://127\.0\.0\.1:7001\b", f"socket://127.0.0.1:{panel_port}", text)
    assert (plc, panel) == (1, 1), "the example's device ports moved: update this test"
    path = tmp_path / "cell.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.slow
def test_make_demo_runs_the_cell_with_both_devices_and_an_operator(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    """`make demo` (examples/cell.toml with --demo): the PLC runs the jobs, the serial panel's
    door switch releases them, the role tokens hold, and a job flagged needs_operator waits for
    a person's approval."""
    config = cell_config(tmp_path, free_port(), free_port())
    server = serve("--demo", "--config", str(config), "--journal", ":memory:")
    supervisor = {"Authorization": "Bearer supervisor-change-me"}
    assert server.get("/operations").status_code == 401  # tokens are on
    server.poll("/bridges", lambda body: len(body) == 2 and all(b["online"] for b in body),
                timeout=20, headers=supervisor)
    signals = {s["name"]: s["value"] for s in server.get("/signals", headers=supervisor).json()}
    assert signals["panel.door_closed"] in (0, 1)  # read from the simulated serial panel

    # the MES may add but not approve; the flagged job waits for the operator
    mes = {"Authorization": "Bearer mes-change-me"}
    added = server.post("/operations/add", headers=mes, json=[{
        "payload": {"program": 1, "needs_operator": True}, "priority": 100}])
    assert added.status_code == 201, added.text
    op_id = added.json()[0]["operation"]["id"]
    deadline = time.monotonic() + 30  # the door may be open for a while
    while True:
        requests_now = server.get("/requests", headers=supervisor).json()
        pending = [r for r in requests_now if r["operation_id"] == op_id]
        if pending:
            break
        for other in requests_now:  # a demo job that holds the machine for a person: go
            server.post(f"/requests/{other['request_id']}/approve", headers=supervisor, json={})
        assert time.monotonic() < deadline, "the flagged job never asked the operator"
        time.sleep(0.05)
    assert pending[0]["waiting_for"] == "operator" and pending[0]["deadline"] is None
    path = f"/requests/{pending[0]['request_id']}/approve"
    assert server.post(path, headers=mes, json={}).status_code == 403
    operator = {"Authorization": "Bearer operator-change-me"}
    assert server.post(path, headers=operator, json={"reasoning": "part loaded"}).status_code == 200
    server.poll(f"/operations/{op_id}", lambda body: body["operation"]["state"] == "COMPLETED",
                timeout=30, headers=operator)
    events = server.get(f"/operations/{op_id}/events", headers=operator).json()
    events = events if isinstance(events, list) else events["events"]
    assert events[-1]["meta_data"]["bridge"] == "plc"  # the PLC's done bit finished it
    assert server.stop()[0] == 0

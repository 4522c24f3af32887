"""A PLC job running when the controller is killed: after the restart the Modbus executor
re-attaches to it and the PLC's done bit completes it; no start is ever sent again (issue
"Fail safe", B.6). Real parts: ``serve`` in a subprocess killed with SIGKILL, pymodbus' server.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import wait_until
from served import Served
from test_cli_bridges import completed, example_config, wait_for

from firmware_bridges.simulators.plc import PlcSimulator


@pytest.fixture
def slow_plc() -> Iterator[PlcSimulator]:
    simulator = PlcSimulator(cycle_time=1.0, ready=True)
    simulator.start()
    yield simulator
    simulator.stop()


def _config(tmp_path: Path, port: int, recovery: str) -> Path:
    path = example_config(tmp_path, "plc.toml", port)
    text, replaced = re.subn(r"(?m)^\[journal\]$", f'[journal]\nrecovery = "{recovery}"',
                             path.read_text(encoding="utf-8"))
    assert replaced == 1
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("recovery", ["fail", "pause"])
def test_a_killed_controller_reattaches_to_the_running_plc_job(
    serve: Callable[..., Served], slow_plc: PlcSimulator, tmp_path: Path, recovery: str
) -> None:
    config = _config(tmp_path, slow_plc.port, recovery)
    journal = str(tmp_path / "cell.db")
    first = serve("--config", str(config), "--journal", journal)
    added = first.post("/operations/add", json=[{"payload": {"program": 3}}])
    assert added.status_code == 201, added.text
    op_id = added.json()[0]["operation"]["id"]
    wait_for(first, f"/operations/{op_id}",
             lambda body: body["operation"]["state"] == "RUNNING", timeout=10)
    wait_until(lambda: slow_plc.programs_run == [3], what="the PLC to start program 3")
    first.stop(signal.SIGKILL)  # mid-cycle: the PLC runs on without its controller

    second = serve("--config", str(config), "--journal", journal)
    body = wait_for(second, f"/operations/{op_id}",
                    lambda body: body["operation"]["state"] == "COMPLETED", timeout=15)
    assert completed(body), body
    assert slow_plc.programs_run == [3]  # never started twice
    events = second.get(f"/operations/{op_id}/events").json()
    events = events if isinstance(events, list) else events["events"]
    types = [e["event_type"] for e in events]
    assert types.count("operation_started") == 1, types
    assert "operation_failed" not in types and "operation_paused" not in types, types
    assert events[-1]["meta_data"]["bridge"] == "plc"
    status, _, err = second.stop()
    assert status == 0, err

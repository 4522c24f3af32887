"""Progress from the hardware (issue 12, item 3): serial ``PROG`` lines and the Modbus register.

Real peers only: the serial device simulator on a TCP socket (pyserial's ``socket://``), the
PLC simulator on pymodbus' own server, and ``operation-dispatcher serve`` as a subprocess with a
real SQLite journal for the end-to-end test (status, event stream, restart).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import RESOURCE, EventRecorder, wait_signal, wait_until
from plc_helpers import EXECUTOR, PLC, bridge_factory, started
from served import Served

from firmware_bridges import serial_protocol as proto
from firmware_bridges.modbus import ModbusBridge
from firmware_bridges.serial_line import SerialLineBridge
from firmware_bridges.simulators.plc import PlcSimulator
from firmware_bridges.simulators.serial_device import SerialDeviceSimulator
from operation_dispatcher import EventType, Operation, OperationDispatcher
from operation_dispatcher.bridges import bridge_errors
from operation_dispatcher.errors import ValidationError

PROGRESS = EventType.OPERATION_PROGRESS
COMPLETED = EventType.OPERATION_COMPLETED


# ------------------------------------------------------------------------------ the protocol


def test_prog_lines_parse() -> None:
    msg = proto.parse_device_line("PROG op-1 42")
    assert (msg.kind, msg.operation_id, msg.value, msg.message) == ("PROG", "op-1", 42.0, None)
    msg = proto.parse_device_line("PROG op-1 99.5   seam 3 of 4  ")
    assert (msg.value, msg.message) == (99.5, "seam 3 of 4")
    assert proto.parse_device_line("PROG x 100").value == 100.0
    assert proto.parse_device_line("PROG x 0.000001").value == pytest.approx(1e-6)
    line = proto.add_checksum("PROG x 50 half")
    assert proto.parse_device_line(line, use_checksum=True).message == "half"


@pytest.mark.parametrize("line", [
    "PROG", "PROG op-1", "PROG op-1 abc", "PROG op-1 -5", "PROG op-1 +5", "PROG op-1 100.1",
    "PROG op-1 101", "PROG op-1 1000", "PROG op-1 nan", "PROG op-1 inf", "PROG op-1 1e2",
    "PROG op-1 0x10", "PROG op-1 5,5", "PROG op-1 .5", "PROG op-1 5.", "PROG op-1 1.1234567",
    "PROG op-1 \u0665",  # an Arabic-Indic five: a digit to Python, not to the protocol
])
def test_bad_prog_lines_are_malformed(line: str) -> None:
    with pytest.raises(proto.MalformedLine):
        proto.parse_device_line(line)


def test_format_progress() -> None:
    assert proto.format_progress("op-1", 42) == "PROG op-1 42"
    assert proto.format_progress("op-1", 33.3333, "step 2") == "PROG op-1 33.333 step 2"
    assert proto.parse_device_line(proto.format_progress("x", 12.5)).value == 12.5
    for bad in (-1, 100.5, float("nan"), float("inf"), True, "50"):
        with pytest.raises(ValueError):
            proto.format_progress("op-1", bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        proto.format_progress("op-1", 5, "two\nlines")


# ------------------------------------------------------------------------------ serial bridge


@pytest.fixture
def serial_cell(make_dispatcher, make_sim) -> Iterator[Callable[..., Any]]:
    """``serial_cell(**sim_kwargs)`` -> (dispatcher, recorder, bridge, simulator), all started."""
    bridges: list[SerialLineBridge] = []

    def factory(**sim_kwargs: Any) -> tuple[OperationDispatcher, EventRecorder, SerialLineBridge,
                                            SerialDeviceSimulator]:
        sim = make_sim(**sim_kwargs)
        dispatcher = make_dispatcher()
        recorder = EventRecorder(dispatcher)
        dispatcher.start()
        bridge = SerialLineBridge(dispatcher, "dev1", sim.url, executor=True,
                                  reconnect_initial=0.05)
        bridges.append(bridge)
        bridge.start()
        wait_signal(dispatcher, "dev1.online", True)
        return dispatcher, recorder, bridge, sim

    yield factory
    for bridge in bridges:
        bridge.stop()


def test_the_simulator_reports_progress_over_the_serial_line(serial_cell) -> None:
    dispatcher, recorder, bridge, sim = serial_cell(run_seconds=1.0, progress_seconds=0.1)
    op = dispatcher.add_operation(Operation(resource_id=RESOURCE, payload={"command": "weld"}))
    first = recorder.wait_for(PROGRESS, operation_id=op.id)[0]
    assert 0 <= first.meta_data["fraction"] < 1 and first.meta_data["message"] is None
    recorder.wait_for(COMPLETED, operation_id=op.id)
    events = recorder.matching(PROGRESS, op.id)
    fractions = [e.meta_data["fraction"] for e in events]
    assert fractions == sorted(fractions) and len(events) >= 2
    # about 10 PROG lines in 1 s, at most one event per 0.5 s plus the held one at the end
    assert len(events) <= 5, fractions
    assert recorder.types(op.id)[-1] is COMPLETED
    assert dispatcher.get_operation(op.id).progress.fraction == fractions[-1] > 0.5
    assert bridge.counters["malformed"] == 0 and bridge.counters["rejected"] == 0


def test_a_prog_line_with_a_message_by_hand(serial_cell) -> None:
    dispatcher, recorder, bridge, sim = serial_cell(run_seconds=None)
    op = dispatcher.add_operation(Operation(resource_id=RESOURCE, payload={"command": "weld"}))
    sim.wait_until(lambda s: any(m.kind == "RUN" for m in s.received))
    sim.send_progress(op.id, 37.5, "clamping part 3")
    event = recorder.wait_for(PROGRESS, operation_id=op.id)[0]
    assert event.meta_data == {"fraction": 0.375, "message": "clamping part 3"}
    sim.send_done(op.id)
    recorder.wait_for(COMPLETED, operation_id=op.id)


def test_bad_and_stray_prog_lines_are_counted_and_never_crash_the_bridge(serial_cell, caplog) -> None:
    dispatcher, recorder, bridge, sim = serial_cell(run_seconds=None)
    op = dispatcher.add_operation(Operation(resource_id=RESOURCE, payload={"command": "weld"}))
    sim.wait_until(lambda s: any(m.kind == "RUN" for m in s.received))
    queued = dispatcher.add_operation(Operation(resource_id=RESOURCE, payload={"command": "x"}))
    queued_id = queued.id
    garbage = [
        f"PROG {op.id} abc", f"PROG {op.id} 101", f"PROG {op.id} -1", f"PROG {op.id} nan",
        f"PROG {op.id} inf", f"PROG {op.id} 1e2", f"PROG {op.id}", "PROG",
        "PROG not-a-uuid 50",
    ]
    for line in garbage:
        sim.send_line(line)
    too_long = f"PROG {op.id} 50 " + "m" * 205  # over the dispatcher's 200 characters
    assert len(too_long) <= bridge.max_line  # (so the dispatcher, not the framer, refuses it)
    sim.send_line(too_long)
    sim.send_line(f"PROG {queued_id} 50 not running")  # a stray one: ignored, logged
    sim.send_bytes(b"PROG " + str(op.id).encode() + b" 5\xff\xfe\n")  # not UTF-8
    wait_until(lambda: bridge.counters["malformed"] >= len(garbage) + 2
               and bridge.counters["rejected"] >= 1, what="every bad line counted")
    assert bridge.counters["malformed"] == len(garbage) + 2
    assert bridge.counters["rejected"] == 1
    assert dispatcher.get_operation(op.id).progress is None
    assert dispatcher.get_operation(queued_id).progress is None
    assert any("ignored" in r.getMessage() and str(queued_id) in r.getMessage()
               for r in caplog.records)
    assert bridge.is_online and bridge.is_running
    sim.send_progress(op.id, 60)  # the line still works
    assert recorder.wait_for(PROGRESS, operation_id=op.id)[0].meta_data["fraction"] == 0.6
    sim.send_done(op.id)
    recorder.wait_for(COMPLETED, operation_id=op.id)


def test_a_flood_of_prog_lines_is_rate_limited(serial_cell) -> None:
    dispatcher, recorder, bridge, sim = serial_cell(run_seconds=None)
    op = dispatcher.add_operation(Operation(resource_id=RESOURCE, payload={"command": "weld"}))
    sim.wait_until(lambda s: any(m.kind == "RUN" for m in s.received))
    began = time.monotonic()
    lines = b"".join(proto.encode_line(proto.format_progress(op.id, i / 10)) for i in range(1001))
    sim.send_bytes(lines)
    wait_until(lambda: (dispatcher.get_operation(op.id).progress or 0) and
               dispatcher.get_operation(op.id).progress.fraction == 1.0, what="the last PROG")
    elapsed = time.monotonic() - began
    sim.send_done(op.id)
    recorder.wait_for(COMPLETED, operation_id=op.id)
    events = recorder.matching(PROGRESS, op.id)
    assert len(events) <= 3 + elapsed / 0.5, (len(events), elapsed)
    assert events[-1].meta_data["fraction"] == 1.0  # the last one before the end is not lost


# ------------------------------------------------------------------------------ Modbus


@pytest.fixture
def make_bridge() -> Iterator[Callable[..., ModbusBridge]]:
    yield from bridge_factory()


def progress_executor(**extra: Any) -> dict[str, Any]:
    return {**EXECUTOR, "progress_register": PLC.PROGRESS_REGISTER, **extra}


def test_the_plc_progress_register_becomes_the_operations_progress(make_dispatcher, make_bridge) -> None:
    with PlcSimulator(cycle_time=1.5, ready=True) as plc:
        dispatcher, recorder = started(make_dispatcher)
        make_bridge(dispatcher, plc, executor=progress_executor())
        op = dispatcher.add_operation(Operation(resource_id=RESOURCE, payload={"program": 4}))
        wait_until(lambda: (p := dispatcher.get_operation(op.id).progress) is not None
                   and 0 < p.fraction < 1, what="progress while the cycle runs")
        recorder.wait_for(COMPLETED, operation_id=op.id, timeout=10)
        events = recorder.matching(PROGRESS, op.id)
        fractions = [e.meta_data["fraction"] for e in events]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0  # done: full scale
        assert len(events) <= 6, fractions  # ~150 polls, rate-limited
        assert recorder.types(op.id)[-1] is COMPLETED
        assert dispatcher.get_operation(op.id).progress.fraction == 1.0


def test_a_progress_value_beyond_the_scale_is_malformed_not_reported(make_dispatcher, make_bridge) -> None:
    with PlcSimulator(cycle_time=30.0, ready=True, progress_scale=10_000) as plc:
        dispatcher, recorder = started(make_dispatcher)
        bridge = make_bridge(dispatcher, plc, executor=progress_executor(progress_scale=10_000))
        plc.set_progress(2500)
        op = dispatcher.add_operation(Operation(resource_id=RESOURCE, payload={"program": 4}))
        event = recorder.wait_for(PROGRESS, operation_id=op.id)[0]
        assert event.meta_data == {"fraction": 0.25, "message": None}
        before = bridge.counters["malformed"]
        plc.set_progress(15_000)  # a PLC program gone wrong
        wait_until(lambda: bridge.counters["malformed"] > before, what="the bad value counted")
        assert bridge.counters["malformed"] == before + 1  # once per new value, not per poll
        assert dispatcher.get_operation(op.id).progress.fraction == 0.25
        plc.set_progress(10_000)
        wait_until(lambda: dispatcher.get_operation(op.id).progress.fraction == 1.0,
                   what="a good value again")
        dispatcher.cancel_operation(op.id)


def modbus_table(executor: Any) -> dict[str, Any]:
    return {"type": "modbus", "name": "plc", "host": "127.0.0.1", "executor": executor}


@pytest.mark.parametrize(("executor", "field"), [
    (progress_executor(progress_scale=0), "executor.progress_scale"),
    (progress_executor(progress_scale=70_000), "executor.progress_scale"),
    (progress_executor(progress_scale=True), "executor.progress_scale"),
    (progress_executor(progress_scale="100"), "executor.progress_scale"),
    (progress_executor(progress_scale=100.0), "executor.progress_scale"),
    ({**EXECUTOR, "progress_scale": 100}, "executor.progress_scale"),  # without a register
    ({**EXECUTOR, "progress_register": -1}, "executor.progress_register"),
    ({**EXECUTOR, "progress_register": "2"}, "executor.progress_register"),
    ({**EXECUTOR, "progress_register": 65536}, "executor.progress_register"),
    ({**EXECUTOR, "progress_register": PLC.PROGRAM_REGISTER}, "executor.progress_register"),
    ({**EXECUTOR, "progress_register": PLC.ERROR_CODE_REGISTER}, "executor.progress_register"),
])
def test_bad_progress_keys_are_refused_by_name(executor: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ModbusBridge(None, "plc", "127.0.0.1", executor=executor)  # type: ignore[arg-type]
    assert caught.value.field == field
    errors = bridge_errors([modbus_table(executor)])
    assert len(errors) == 1 and errors[0].startswith(f"bridges[0].{field}:"), errors


def test_good_progress_keys_pass_the_config_check() -> None:
    assert bridge_errors([modbus_table(progress_executor())]) == []
    assert bridge_errors([modbus_table(progress_executor(progress_scale=10_000))]) == []
    bridge = ModbusBridge(None, "plc", "127.0.0.1", executor=progress_executor())  # type: ignore[arg-type]
    assert bridge.executor["progress_scale"] == 100


# ------------------------------------------------------------------------------ serve, end to end


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "cell.toml"
    path.write_text(
        "[dispatcher]\nresource_id = \"station-1\"\n\n"
        f"[journal]\npath = \"{tmp_path / 'cell.db'}\"\n\n"
        "[[bridges]]\ntype = \"serial\"\nname = \"mcu\"\n"
        f"url = \"{url}\"\nmax_age_seconds = 5.0\nexecutor = true\n",
        encoding="utf-8",
    )
    return path


def _poll(served: Served, path: str, predicate: Callable[[Any], bool], timeout: float = 15) -> Any:
    return served.poll(path, predicate, timeout)


class _Stream:
    """The SSE messages of ``/events/stream``, read on a thread of its own."""

    def __init__(self, url: str) -> None:
        self.response = requests.get(url + "/events/stream", stream=True, timeout=30)
        assert self.response.status_code == 200
        self._cond = threading.Condition()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._thread = threading.Thread(target=self._read, name="sse-reader")
        self._thread.start()

    def _read(self) -> None:
        kind = ""
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line.startswith("event:"):
                    kind = line.partition(":")[2].strip()
                elif line.startswith("data:"):
                    with self._cond:
                        self.events.append((kind, json.loads(line.partition(":")[2])))
                        self._cond.notify_all()
        except Exception:  # closed by the test (or the server went away)
            pass

    def wait_for(self, kind: str, timeout: float = 15) -> dict[str, Any]:
        with self._cond:
            assert self._cond.wait_for(lambda: any(k == kind for k, _ in self.events), timeout)
            return next(data for k, data in self.events if k == kind)

    def close(self) -> None:
        self.response.close()
        self._thread.join(10)


@pytest.mark.slow
def test_serve_shows_progress_from_the_device_and_rest_after_a_restart(
    serve: Callable[..., Served], make_sim, tmp_path: Path
) -> None:
    sim = make_sim(run_seconds=None)
    config = _config(tmp_path, sim.url)
    server = serve("--config", str(config))
    _poll(server, "/bridges/mcu", lambda body: body["online"] is True)
    stream = _Stream(server.url)
    try:
        added = server.post("/operations/add", json=[{"payload": {"command": "weld"},
                                                      "planned_duration": 60}])
        assert added.status_code == 201, added.text
        op_id = added.json()[0]["operation"]["id"]
        sim.wait_until(lambda s: any(m.kind == "RUN" for m in s.received), timeout=15)
        sim.send_progress(op_id, 40, "seam 2 of 5")  # from the device
        status = _poll(server, f"/operations/{op_id}",
                       lambda body: body["operation"]["progress"] is not None)
        assert status["operation"]["progress"]["fraction"] == 0.4
        assert status["operation"]["progress"]["message"] == "seam 2 of 5"
        assert 0 <= status["elapsed_seconds"] < 60
        event = stream.wait_for("operation_progress")
        assert event["operation_id"] == op_id and event["meta_data"]["fraction"] == 0.4
        # over REST too (an operator's note); its event may be held by the rate limit
        note = server.post(f"/operations/{op_id}/progress",
                           json={"fraction": 0.5, "message": "operator: half done"})
        assert note.status_code == 200, note.text
    finally:
        stream.close()
    status, _, err = server.stop()
    assert status == 0, err

    again = serve("--config", str(config))  # the same journal: the latest report is still there
    body = again.get(f"/operations/{op_id}").json()
    assert body["operation"]["progress"]["fraction"] == 0.5
    assert body["operation"]["progress"]["message"] == "operator: half done"
    events = again.get(f"/operations/{op_id}/events").json()
    assert [e["meta_data"]["fraction"] for e in events
            if e["event_type"] == "operation_progress"] == [0.4, 0.5]
    assert again.stop()[0] == 0

"""ModbusBridge over Modbus RTU against the PLC simulator serving real RTU framing (CRC and all).

Here: RTU over a pseudo-terminal pair (the bridge opens a tty path, as for a USB adapter), the
simulator's command line, and the RTU arguments. RTU frames over TCP (``socket://``) run the
whole behaviour suite of test_bridge_modbus.py. No mocks: pymodbus' own server and client.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import RESOURCE, wait_signal, wait_until
from plc_helpers import EXECUTOR, PLC, bridge_factory, records, started
from pymodbus.client import ModbusSerialClient

from firmware_bridges.config import bridge_errors
from firmware_bridges.modbus import ModbusBridge
from firmware_bridges.simulators.plc import PlcSimulator, free_port
from operation_dispatcher import EventType, Operation, OperationDispatcher
from operation_dispatcher.errors import ValidationError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def make_bridge(make_dispatcher: Callable[..., OperationDispatcher]) -> Iterator[Callable[..., ModbusBridge]]:
    """``make_bridge(dispatcher, plc, **kwargs)`` -> a started ModbusBridge named plc1."""
    yield from bridge_factory()


# ------------------------------------------------------------------------------ RTU on a pty


def test_the_executor_runs_over_a_pseudo_terminal_and_a_dead_line_is_one_outage(
    make_dispatcher, make_bridge, caplog
):
    """A serial line stays open when the PLC dies: requests time out, the port still opens.

    The bridge must not call that "connected" (it would flap on every retry): a connection is
    up only once the PLC has answered.
    """
    caplog.set_level(logging.INFO, logger="firmware_bridges")
    with PlcSimulator(cycle_time=0.05, framer="rtu", serial_port="pty", ready=True) as plc:
        path = plc.serial_url
        assert path is not None and path.startswith("/dev/") and os.path.exists(path)
        dispatcher, recorder = started(make_dispatcher)
        # timeout 0.5 s: a loaded machine may take 0.1 s to answer (a second warning)
        bridge = make_bridge(dispatcher, plc, executor=EXECUTOR, timeout=0.5,
                             reconnect_initial=0.02, reconnect_max=0.05)
        assert bridge.endpoint == f"rtu://{path}?baudrate=19200&parity=N&stopbits=1&bytesize=8"
        first = Operation(resource_id=RESOURCE, payload={"program": 5})
        dispatcher.add_operation(first)
        recorder.wait_for(EventType.OPERATION_COMPLETED, operation_id=first.id)

        plc.stop()  # the line stays, nobody answers on it
        wait_signal(dispatcher, "plc1.online", False)
        retries = bridge.counters["reconnects"]
        wait_until(lambda: bridge.counters["reconnects"] >= retries + 3, what="three more reconnects")
        assert dispatcher.signals.value("plc1.online") is False
        assert not any("connected again" in m for m in records(caplog, "firmware_bridges", logging.INFO))

        plc.start()  # same pty path
        wait_signal(dispatcher, "plc1.online", True)  # a start while offline would fail at once
        second = Operation(resource_id=RESOURCE, payload={"program": 6})
        dispatcher.add_operation(second)
        recorder.wait_for(EventType.OPERATION_COMPLETED, operation_id=second.id)
        bridge.stop()
    assert plc.programs_run == [5, 6]
    assert len(records(caplog, "firmware_bridges", logging.WARNING)) == 1
    assert not os.path.exists(path)  # close() released the ptys


# ------------------------------------------------------------------------------ the command line


def test_the_simulator_serves_rtu_from_the_command_line():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "firmware_bridges.simulators.plc", "--port", str(port),
         "--framer", "rtu", "--ready"],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 10.0)
        assert ready, "the simulator printed nothing within 10 s"
        banner = process.stdout.readline()
        url = f"socket://127.0.0.1:{port}"
        assert "Modbus RTU" in banner and url in banner, banner
        client = ModbusSerialClient(url, timeout=1.0, retries=0)
        assert client.connect()
        try:
            assert client.read_discrete_inputs(PLC.READY_INPUT, count=1, device_id=1).bits[0] is True
        finally:
            client.close()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


def test_the_simulator_refuses_a_framer_it_does_not_know():
    with pytest.raises(ValueError, match="framer"):
        PlcSimulator(framer="ascii")
    with pytest.raises(ValueError, match="framer='rtu'"):
        PlcSimulator(serial_port="pty")


# ------------------------------------------------------------------------------ construction

TCP = {"host": "127.0.0.1"}
RTU = {"transport": "rtu", "serial_port": "socket://127.0.0.1:5021"}


@pytest.mark.parametrize(
    ("base", "changes", "field"),
    [
        (TCP, {"transport": "udp"}, "transport"),
        (TCP, {"transport": "RTU"}, "transport"),
        (TCP, {"host": None}, "host"),
        (TCP, {"host": ""}, "host"),
        (TCP, {"host": 127}, "host"),
        (TCP, {"port": 0}, "port"),
        (TCP, {"port": 65536}, "port"),
        (TCP, {"port": "502"}, "port"),
        (TCP, {"port": True}, "port"),
        (TCP, {"serial_port": "/dev/ttyUSB0"}, "serial_port"),
        (TCP, {"baudrate": 9600}, "baudrate"),
        (TCP, {"parity": "E"}, "parity"),
        (RTU, {"serial_port": None}, "serial_port"),
        (RTU, {"serial_port": ""}, "serial_port"),
        (RTU, {"serial_port": 3}, "serial_port"),
        (RTU, {"host": "127.0.0.1"}, "host"),
        (RTU, {"port": 5021}, "port"),
        (RTU, {"parity": "X"}, "parity"),
        (RTU, {"parity": "n"}, "parity"),
        (RTU, {"stopbits": 3}, "stopbits"),
        (RTU, {"stopbits": 1.5}, "stopbits"),
        (RTU, {"stopbits": True}, "stopbits"),
        (RTU, {"bytesize": 6}, "bytesize"),
        (RTU, {"bytesize": True}, "bytesize"),
        (RTU, {"baudrate": 0}, "baudrate"),
        (RTU, {"baudrate": "19200"}, "baudrate"),
        (RTU, {"baudrate": True}, "baudrate"),
        (RTU, {"device_id": 248}, "device_id"),
        (RTU, {"device_id": -1}, "device_id"),
        (RTU, {"device_id": True}, "device_id"),
        (RTU, {"device_id": "1"}, "device_id"),
        (RTU, {"poll_interval": 0}, "poll_interval"),
        (RTU, {"poll_interval": "0.1"}, "poll_interval"),
        (RTU, {"timeout": 0}, "timeout"),
        (RTU, {"timeout": True}, "timeout"),
        (RTU, {"max_age_seconds": "1"}, "max_age_seconds"),
        (RTU, {"signals": ["ready"]}, "signals"),
        (RTU, {"executor": {**EXECUTOR, "program_key": 7}}, "executor.program_key"),
    ],
)
def test_every_bad_argument_is_a_validation_error_naming_it(make_dispatcher, base, changes, field):
    dispatcher = make_dispatcher()
    with pytest.raises(ValidationError) as raised:
        ModbusBridge(dispatcher, "plc1", **{**base, **changes})
    assert raised.value.field == field, raised.value
    assert len(dispatcher.signals) == 0  # nothing opened, nothing written


def test_good_arguments_build_bridges_with_readable_endpoints(make_dispatcher):
    dispatcher = make_dispatcher()
    usb = ModbusBridge(dispatcher, "plc1", transport="rtu", serial_port="/dev/ttyUSB0",
                       baudrate=9600, parity="E", stopbits=2, bytesize=7, device_id=247)
    assert usb.endpoint == "rtu:///dev/ttyUSB0?baudrate=9600&parity=E&stopbits=2&bytesize=7"
    assert ModbusBridge(dispatcher, "plc2", "127.0.0.1").endpoint == "tcp://127.0.0.1:502"
    assert ModbusBridge(dispatcher, "plc3", "::1", 5020).endpoint == "tcp://[::1]:5020"
    broadcast = ModbusBridge(dispatcher, "plc4", "10.0.0.7", 1, device_id=0)
    assert (broadcast.port, broadcast.device_id) == (1, 0)


def test_a_config_table_reports_a_missing_serial_port_by_its_key():
    """``[[bridges]]`` tables pass their keys as keyword arguments; the errors name those keys."""
    problems = bridge_errors([{"type": "modbus", "name": "plc", "transport": "rtu"}])
    assert [p.split(":", 1)[0] for p in problems] == ["bridges[0].serial_port"], problems
    assert bridge_errors([{"type": "modbus", "name": "plc", "transport": "rtu",
                           "serial_port": "/dev/ttyUSB0", "parity": "E"}]) == []

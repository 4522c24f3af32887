"""ModbusBridge against the PLC simulator: a real pymodbus server on 127.0.0.1, no mocks.

The tests that take the ``plc`` fixture run twice: over Modbus TCP, and over Modbus RTU (RTU
frames with their CRC over TCP, the bridge opening pyserial's ``socket://`` URL, as for a serial
server or an RTU gateway). RTU on a pseudo-terminal is in test_bridge_modbus_rtu.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import RESOURCE, EventRecorder, wait_signal, wait_until
from plc_helpers import EXECUTOR, PLC, READY, bridge_factory, started
from pymodbus.client import ModbusTcpClient

from firmware_bridges.base import BaseBridge, BridgeConnectionError, BridgeError
from firmware_bridges.modbus import (
    PYMODBUS_LOGGER,
    ModbusBridge,
    _batch,
    _install_pymodbus_filter,
    _PymodbusOnBridgeThreads,
)
from firmware_bridges.simulators.plc import PlcSimulator, free_port
from operation_dispatcher import (
    DispatchEvent,
    EventType,
    ExecutionState,
    Operation,
    OperationDispatcher,
    TerminationReason,
)
from operation_dispatcher.errors import DispatcherError, ValidationError


@pytest.fixture(params=["tcp", "rtu"])
def plc(request: pytest.FixtureRequest) -> Iterator[PlcSimulator]:
    """The PLC on 127.0.0.1, speaking Modbus TCP or RTU frames over TCP."""
    simulator = PlcSimulator(cycle_time=0.05, failing_programs={99: 42}, framer=request.param)
    simulator.start()
    yield simulator
    simulator.close()


@pytest.fixture
def make_bridge(make_dispatcher: Callable[..., OperationDispatcher]) -> Iterator[Callable[..., ModbusBridge]]:
    """``make_bridge(dispatcher, plc, **kwargs)`` -> a started ModbusBridge named plc1."""
    yield from bridge_factory()


def test_an_operation_held_by_the_ready_bit_starts_when_it_flips(make_dispatcher, make_bridge, plc):
    dispatcher, recorder = started(make_dispatcher)
    bridge = make_bridge(dispatcher, plc)
    wait_signal(dispatcher, "plc1.ready", False)  # the first poll
    op = Operation(resource_id=RESOURCE, release_conditions={"plc1.ready": True})
    dispatcher.add_operation(op)
    assert dispatcher.signals.value("plc1.ready") is False
    assert dispatcher.signals.value("plc1.online") is True
    assert "release_condition:plc1.ready" in dispatcher.explain(op.id)["blocked_by"]
    assert recorder.matching(EventType.OPERATION_START_REQUESTED, op.id) == []

    plc.set_ready(True)
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=op.id)
    assert bridge.is_online
    assert bridge.counters["reads"] > 0
    assert bridge.thread_name == "bridge-modbus[plc1]"
    assert bridge.thread_name in {t.name for t in threading.enumerate()}
    assert bridge.status()["endpoint"] == {
        "tcp": f"tcp://127.0.0.1:{plc.port}",
        "rtu": f"rtu://socket://127.0.0.1:{plc.port}?baudrate=19200&parity=N&stopbits=1&bytesize=8",
    }[plc.framer]


def test_executor_completes_through_done_and_fails_through_error(make_dispatcher, make_bridge, plc):
    dispatcher, recorder = started(make_dispatcher)
    make_bridge(dispatcher, plc, executor=EXECUTOR)
    plc.set_ready(True)
    good = Operation(resource_id=RESOURCE, payload={"program": 7},
                     release_conditions={"plc1.ready": True})
    bad = Operation(resource_id=RESOURCE, payload={"program": 99},
                    release_conditions={"plc1.ready": True})
    dispatcher.add_operations([good, bad])

    completed = recorder.wait_for(EventType.OPERATION_COMPLETED, operation_id=good.id)
    failed = recorder.wait_for(EventType.OPERATION_FAILED, operation_id=bad.id)
    assert plc.programs_run == [7, 99]
    assert completed[0].meta_data["bridge"] == "plc1"
    assert failed[0].meta_data["plc_error_code"] == 42
    stored = dispatcher.get_operation(bad.id)
    assert stored.termination_reason is TerminationReason.EXTERNAL_ERROR
    assert dispatcher.get_operation(good.id).state.value == "COMPLETED"


def test_a_payload_without_a_program_fails_without_touching_the_plc(make_dispatcher, make_bridge, plc):
    dispatcher, recorder = started(make_dispatcher)
    make_bridge(dispatcher, plc, executor=EXECUTOR)
    op = Operation(resource_id=RESOURCE, payload={"program": "seven"})
    dispatcher.add_operation(op)
    event = recorder.wait_for(EventType.OPERATION_FAILED, operation_id=op.id)[0]
    assert "program" in event.meta_data["error"]
    assert plc.programs_run == []


def test_the_dispatcher_timeout_fails_a_slow_cycle_and_the_bridge_lets_go(make_dispatcher, make_bridge):
    with PlcSimulator(cycle_time=30.0) as slow_plc:
        dispatcher, recorder = started(make_dispatcher)
        bridge = make_bridge(dispatcher, slow_plc, executor=EXECUTOR)
        op = Operation(resource_id=RESOURCE, payload={"program": 3}, timeout_seconds=0.2)
        dispatcher.add_operation(op)
        recorder.wait_for(EventType.OPERATION_FAILED, operation_id=op.id)
        assert dispatcher.get_operation(op.id).termination_reason is TerminationReason.TIMEOUT
        wait_until(lambda: bridge._active is None, what="the bridge to drop the timed-out operation")
        bridge.stop()


def test_done_or_error_left_over_from_the_last_cycle_cannot_end_the_next_operation(
    make_dispatcher, make_bridge
):
    """The guard: the bridge clears done and error itself before the start pulse.

    This PLC leaves the previous cycle's bits set after a start (as one that clears them a scan
    late), so without the guard each operation would end at the first poll after its start.
    """
    with PlcSimulator(cycle_time=0.2, failing_programs={99: 42}, clear_on_start=False) as late_plc:
        client = ModbusTcpClient("127.0.0.1", port=late_plc.port, timeout=1.0)
        assert client.connect()
        try:  # the hazard is real: done set, start pulsed, done still set
            client.write_coil(PLC.DONE_COIL, True)
            client.write_coil(PLC.START_COIL, True)
            client.write_coil(PLC.START_COIL, False)
            assert client.read_coils(PLC.DONE_COIL, count=1).bits[0] is True
            wait_until(lambda: not late_plc.busy, what="the probing cycle to end")
        finally:
            client.close()

        dispatcher, recorder = started(make_dispatcher)
        cycles_when_ended: dict[Any, int] = {}

        def note(event: DispatchEvent) -> None:  # event thread: just after the bridge ended it
            if event.event_type in (EventType.OPERATION_COMPLETED, EventType.OPERATION_FAILED):
                cycles_when_ended[event.operation_id] = late_plc.cycles

        dispatcher.subscribe(note)
        make_bridge(dispatcher, late_plc, executor=EXECUTOR)
        failing, after_error, after_done = (
            Operation(resource_id=RESOURCE, payload={"program": program}) for program in (99, 7, 8)
        )
        dispatcher.add_operations([failing, after_error, after_done])

        recorder.wait_for(EventType.OPERATION_COMPLETED, operation_id=after_done.id)
        assert late_plc.programs_run == [0, 99, 7, 8]  # 0: the probing cycle above
        assert dispatcher.get_operation(failing.id).termination_reason is TerminationReason.EXTERNAL_ERROR
        assert dispatcher.get_operation(after_error.id).state.value == "COMPLETED"  # not failed by 99's bit
        # each operation ended with its own cycle (1 is the probing cycle above), none earlier
        assert [cycles_when_ended[op.id] for op in (failing, after_error, after_done)] == [2, 3, 4]


def test_pymodbus_errors_on_a_bridge_thread_are_held_back_and_the_bridge_warns_once(
    make_dispatcher, caplog
):
    """pymodbus logs an ERROR per failed connect; the bridge's one WARNING carries the reason."""
    caplog.set_level(logging.INFO)
    dispatcher = make_dispatcher()
    bridge = ModbusBridge(dispatcher, "plc1", "127.0.0.1", free_port(), signals=READY,
                          reconnect_initial=0.01, reconnect_max=0.05, timeout=0.2)
    with bridge:  # about a second of refused connections
        wait_until(lambda: bridge.counters["reconnects"] >= 20, what="a second of reconnects")
    warnings = [r for r in caplog.records
                if r.name == "firmware_bridges.modbus" and r.levelno >= logging.WARNING]
    assert [r.levelno for r in warnings] == [logging.WARNING], [r.getMessage() for r in warnings]
    assert "refused" in warnings[0].getMessage()  # pymodbus' reason, held back from its own log
    assert [r for r in caplog.records if r.name.startswith("pymodbus")] == []

    # on any other thread pymodbus' records pass as before
    client = ModbusTcpClient("127.0.0.1", port=free_port(), timeout=0.2)
    assert not client.connect()
    client.close()
    errors = [r for r in caplog.records if r.name.startswith("pymodbus") and r.levelno == logging.ERROR]
    assert [r.threadName for r in errors] == [threading.current_thread().name]


def test_held_back_pymodbus_records_pass_as_debug_while_pymodbus_debug_logging_is_on(
    make_dispatcher, caplog
):
    """Troubleshooting a line still shows pymodbus' view, without raising the bridge's level."""
    caplog.set_level(logging.DEBUG, logger="pymodbus")
    dispatcher = make_dispatcher()
    bridge = ModbusBridge(dispatcher, "plc1", "127.0.0.1", free_port(), signals=READY,
                          reconnect_initial=0.01, reconnect_max=0.02, timeout=0.2)
    with bridge:
        wait_until(lambda: bridge.counters["reconnects"] >= 2, what="reconnects")
    from_bridge = [r for r in caplog.records
                   if r.name.startswith("pymodbus") and r.threadName == bridge.thread_name]
    assert any("refused" in r.getMessage() for r in from_bridge)
    assert {r.levelno for r in from_bridge} == {logging.DEBUG}
    # installed once: importing (or installing) again reuses the filter on pymodbus' logger
    installed = _install_pymodbus_filter()
    assert installed is _install_pymodbus_filter()
    ours = [f for f in logging.getLogger(PYMODBUS_LOGGER).filters
            if isinstance(f, _PymodbusOnBridgeThreads)]
    assert ours == [installed]


def test_registers_map_to_bits_scaled_values_and_enum_labels_in_few_requests(
    make_dispatcher, make_bridge, plc
):
    dispatcher, _ = started(make_dispatcher)
    plc.set_ready(True)
    plc.set_temperature(253)
    signals = {
        "ready": {"kind": "discrete_input", "address": PLC.READY_INPUT},
        "cycles": {"kind": "input_register", "address": PLC.CYCLES_REGISTER},
        "temperature": {"kind": "input_register", "address": PLC.TEMPERATURE_REGISTER, "scale": 0.1},
        "mode": {"kind": "input_register", "address": PLC.MODE_REGISTER,
                 "enum": {"0": "idle", "1": "running", "2": "done", "3": "error"}},
        "status_ready": {"kind": "input_register", "address": PLC.STATUS_REGISTER, "bit": 0},
        "status_busy": {"kind": "input_register", "address": PLC.STATUS_REGISTER, "bit": 1},
        "start": {"kind": "coil", "address": PLC.START_COIL},
        "program": {"kind": "holding_register", "address": PLC.PROGRAM_REGISTER},
    }
    bridge = make_bridge(dispatcher, plc, signals=signals)
    assert bridge.requests_per_poll == 4  # one per kind: the input registers 0..3 are one request
    board = dispatcher.signals
    wait_until(lambda: board.get("plc1.program") is not None, what="the first poll")
    assert board.value("plc1.temperature") == pytest.approx(25.3)
    assert board.value("plc1.mode") == "idle"
    assert board.value("plc1.status_ready") is True
    assert board.value("plc1.status_busy") is False
    assert board.value("plc1.ready") is True
    assert board.value("plc1.start") is False
    assert board.get("plc1.temperature").max_age_seconds == bridge.max_age_seconds


def test_contiguous_addresses_are_batched_per_kind():
    wanted = {"coil": {0, 1, 2, 5}, "holding_register": {10, 11, 300}, "input_register": set()}
    assert _batch(wanted) == [
        ("coil", 0, 3), ("coil", 5, 1), ("holding_register", 10, 2), ("holding_register", 300, 1),
    ]
    assert _batch({"holding_register": set(range(0, 130))}) == [
        ("holding_register", 0, 125), ("holding_register", 125, 5),
    ]


def test_an_outage_stales_the_signals_and_holds_dispatching_until_the_plc_returns(
    make_dispatcher, make_bridge, plc, caplog
):
    caplog.set_level(logging.INFO)
    dispatcher, recorder = started(make_dispatcher)
    bridge = make_bridge(
        dispatcher, plc, executor=EXECUTOR, max_age_seconds=0.2,
        reconnect_initial=0.02, reconnect_max=0.05,
    )
    plc.set_ready(True)
    first = Operation(resource_id=RESOURCE, payload={"program": 1},
                      release_conditions={"plc1.ready": True})
    dispatcher.add_operation(first)
    recorder.wait_for(EventType.OPERATION_COMPLETED, operation_id=first.id)

    plc.stop()
    board = dispatcher.signals
    wait_signal(dispatcher, "plc1.online", False)
    assert board.get("plc1.ready").is_stale()  # expired before online fell
    assert not board.holds("plc1.ready", True)
    assert not bridge.is_online

    second = Operation(resource_id=RESOURCE, payload={"program": 2},
                       release_conditions={"plc1.ready": True})
    dispatcher.add_operation(second)
    retries = bridge.counters["reconnects"]
    wait_until(lambda: bridge.counters["reconnects"] >= retries + 3, what="three more reconnects")
    assert recorder.matching(EventType.OPERATION_START_REQUESTED, second.id) == []
    assert "release_condition:plc1.ready" in dispatcher.explain(second.id)["blocked_by"]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "plc1" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # once per change of health

    plc.start()  # same port
    recorder.wait_for(EventType.OPERATION_COMPLETED, operation_id=second.id)
    assert board.value("plc1.online") is True
    assert plc.programs_run == [1, 2]  # the restarted PLC kept its state
    counters = bridge.counters
    assert counters["errors"] >= 1 and counters["reconnects"] >= 3
    assert any("connected again" in r.getMessage() for r in caplog.records)
    from_bridge = [r for r in caplog.records
                   if r.name.startswith("pymodbus") and r.threadName == bridge.thread_name]
    assert from_bridge == []  # held back: the bridge's one warning says it


def test_a_bridge_without_a_plc_keeps_retrying_and_stops_promptly(make_dispatcher):
    dispatcher = make_dispatcher()
    bridge = ModbusBridge(dispatcher, "plc1", "127.0.0.1", free_port(), signals=READY,
                          reconnect_initial=0.01, reconnect_max=0.02, timeout=0.2)
    with bridge:
        wait_until(lambda: bridge.counters["reconnects"] >= 2, what="reconnect attempts")
        assert dispatcher.signals.value("plc1.online") is False
        begun = time.monotonic()
    assert time.monotonic() - begun < 1.0
    assert not bridge.is_running
    bridge.stop()  # twice is fine


def test_configuration_errors_name_the_field(make_dispatcher):
    dispatcher = make_dispatcher()
    with pytest.raises(ValidationError, match="signals.x.kind"):
        ModbusBridge(dispatcher, "plc1", "127.0.0.1", 502, signals={"x": {"kind": "coils", "address": 0}})
    with pytest.raises(ValidationError, match="bit and scale apply to registers"):
        ModbusBridge(dispatcher, "plc1", "127.0.0.1", 502,
                     signals={"x": {"kind": "coil", "address": 0, "bit": 1}})
    for scale in (float("inf"), float("nan"), 0, "0.1"):  # inf is valid TOML
        with pytest.raises(ValidationError, match="signals.x.scale"):
            ModbusBridge(dispatcher, "plc1", "127.0.0.1", 502,
                         signals={"x": {"kind": "input_register", "address": 0, "scale": scale}})
    with pytest.raises(ValidationError, match="needs"):
        ModbusBridge(dispatcher, "plc1", "127.0.0.1", 502, executor={"start_coil": 0})
    with pytest.raises(ValidationError, match="name"):
        ModbusBridge(dispatcher, "plc 1", "127.0.0.1", 502)
    assert issubclass(BridgeConnectionError, BridgeError)
    assert issubclass(BridgeError, DispatcherError)
    assert issubclass(ModbusBridge, BaseBridge)


def test_pause_resume_and_cancel_pulse_their_coils_and_the_plc_obeys(make_dispatcher, make_bridge):
    """The simulator's cancel / pause / resume coils (3 / 4 / 5) against the executor map."""
    with PlcSimulator(cycle_time=0.3, ready=True) as slow_plc:
        dispatcher, recorder = started(make_dispatcher)
        executor = {**EXECUTOR, "cancel_coil": PLC.CANCEL_COIL, "pause_coil": PLC.PAUSE_COIL,
                    "resume_coil": PLC.RESUME_COIL}
        mode = {"mode": {"kind": "input_register", "address": PLC.MODE_REGISTER,
                         "enum": {0: "idle", 1: "running", 2: "done", 3: "error", 4: "paused"}}}
        make_bridge(dispatcher, slow_plc, executor=executor, signals=mode)

        paused = Operation(resource_id=RESOURCE, payload={"program": 1})
        dispatcher.add_operation(paused)
        recorder.wait_for(EventType.OPERATION_STARTED, operation_id=paused.id)
        wait_signal(dispatcher, "plc1.mode", "running")
        assert dispatcher.pause_operation(paused.id)
        wait_signal(dispatcher, "plc1.mode", "paused")  # the PLC froze its cycle
        assert dispatcher.resume_operation(paused.id)
        recorder.wait_for(EventType.OPERATION_COMPLETED, operation_id=paused.id)

        cancelled = Operation(resource_id=RESOURCE, payload={"program": 2})
        dispatcher.add_operation(cancelled)
        recorder.wait_for(EventType.OPERATION_STARTED, operation_id=cancelled.id)
        wait_signal(dispatcher, "plc1.mode", "running")
        assert dispatcher.cancel_operation(cancelled.id) is not None
        wait_until(lambda: slow_plc.cancelled == 1, what="the PLC to abort the cycle")
        wait_signal(dispatcher, "plc1.mode", "idle")
        assert slow_plc.programs_run == [1, 2] and slow_plc.cycles == 1  # the cancelled one never ended


def executor_of_a_vanished_plc(
    make_dispatcher, make_bridge, plc_: PlcSimulator
) -> tuple[OperationDispatcher, EventRecorder]:
    """A started dispatcher whose executor bridge plc1 has just seen its PLC go away."""
    dispatcher, recorder = started(make_dispatcher)
    make_bridge(dispatcher, plc_, executor=EXECUTOR, reconnect_initial=0.02, reconnect_max=0.05)
    plc_.stop()
    wait_signal(dispatcher, "plc1.online", False)
    return dispatcher, recorder


def test_an_operation_added_while_the_plc_is_offline_waits_for_it(make_dispatcher, make_bridge):
    """The executor's health gates the start (issue 10 A.3): nothing is sent to an offline PLC,
    and the operation runs once the PLC is back, instead of failing at once."""
    with PlcSimulator(cycle_time=0.05, ready=True) as plc_:
        dispatcher, recorder = executor_of_a_vanished_plc(make_dispatcher, make_bridge, plc_)
        op = Operation(resource_id=RESOURCE, payload={"program": 4})
        dispatcher.add_operation(op)
        assert dispatcher.explain(op.id)["blocked_by"] == ["release_condition:plc1.online"]
        assert dispatcher.get_operation(op.id).state is ExecutionState.QUEUED

        plc_.start()
        recorder.wait_for(EventType.OPERATION_COMPLETED, operation_id=op.id)
        assert plc_.programs_run == [4]


def test_a_start_that_reaches_an_offline_plc_fails_and_never_runs_later(
    make_dispatcher, make_bridge
):
    """Should a start reach the bridge while the PLC is offline (here: the executor detached,
    so nothing gates it), no start is queued for the PLC's return: it would start the machine
    unexpectedly."""
    with PlcSimulator(cycle_time=0.05, ready=True) as plc_:
        dispatcher, recorder = executor_of_a_vanished_plc(make_dispatcher, make_bridge, plc_)
        dispatcher.detach_executor("plc1")
        op = Operation(resource_id=RESOURCE, payload={"program": 4})
        dispatcher.add_operation(op)
        failed = recorder.wait_for(EventType.OPERATION_FAILED, operation_id=op.id)[0]
        assert failed.meta_data["error"] == "the PLC is offline"
        assert dispatcher.get_operation(op.id).termination_reason is TerminationReason.EXTERNAL_ERROR

        plc_.start()
        wait_signal(dispatcher, "plc1.online", True)
        after = Operation(resource_id=RESOURCE, payload={"program": 5})
        dispatcher.add_operation(after)
        recorder.wait_for(EventType.OPERATION_COMPLETED, operation_id=after.id)
        assert plc_.programs_run == [5]  # program 4 was never started on the PLC's return


def test_an_operation_running_across_an_outage_completes_when_the_link_is_back(
    make_dispatcher, make_bridge
):
    """The PLC keeps running its cycle while the network is down; done is read after reconnect."""
    with PlcSimulator(cycle_time=0.4, ready=True) as plc_:
        dispatcher, recorder = started(make_dispatcher)
        bridge = make_bridge(dispatcher, plc_, executor=EXECUTOR,
                             reconnect_initial=0.02, reconnect_max=0.05)
        op = Operation(resource_id=RESOURCE, payload={"program": 8})
        dispatcher.add_operation(op)
        recorder.wait_for(EventType.OPERATION_STARTED, operation_id=op.id)
        wait_until(lambda: bridge._active == op.id, what="the whole start sequence to be written")
        plc_.stop()  # the link goes; the PLC's cycle (its state) runs on
        wait_signal(dispatcher, "plc1.online", False)
        assert dispatcher.get_operation(op.id).state.value == "RUNNING"
        plc_.start()
        completed = recorder.wait_for(EventType.OPERATION_COMPLETED, operation_id=op.id)
        assert completed[0].meta_data["bridge"] == "plc1" and plc_.programs_run == [8]

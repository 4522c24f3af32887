"""One executor per resource: its health gates every start, and after a restart it re-attaches
to the job it was running instead of anything being sent again (issue "Fail safe", A.2, A.3, B.6).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import RESOURCE, wait_until
from conftest import op as _op

from operation_dispatcher import (
    EventType,
    ExecutionState,
    ExecutorConflict,
    Operation,
    OperationDispatcher,
    TerminationReason,
    ValidationError,
)
from operation_dispatcher.config import ConfigError, parse_config


def test_an_offline_executor_gates_every_start_and_explain_says_so(make_dispatcher, make_recorder):
    dispatcher = make_dispatcher()
    dispatcher.attach_executor("plc")
    recorder = make_recorder(dispatcher)
    dispatcher.start()
    op = dispatcher.add_operation(_op(payload={"program": 1}))
    assert "release_condition:plc.online" in dispatcher.explain(op.id)["blocked_by"]
    assert dispatcher.get_operation(op.id).state is ExecutionState.QUEUED

    dispatcher.signals.set("plc.online", False)
    assert dispatcher.get_operation(op.id).state is ExecutionState.QUEUED
    dispatcher.signals.set("plc.online", "true")  # only a real True
    assert dispatcher.get_operation(op.id).state is ExecutionState.QUEUED
    # a True that could never go stale is not health (design 2a): no max age, no start
    dispatcher.signals.set("plc.online", True)
    assert dispatcher.get_operation(op.id).state is ExecutionState.QUEUED
    (detail,) = dispatcher.explain(op.id, details=True)["details"]
    assert (detail["kind"], detail["holds"], detail["max_age_seconds"]) == (
        "executor_offline", False, None)
    assert "not trusted online" in detail["text"] and "max_age_seconds" in detail["text"]
    assert dispatcher.signals.holds("plc.online", True)  # a release condition would hold

    dispatcher.signals.set("plc.online", True, max_age_seconds=60)
    started = recorder.wait_for(EventType.OPERATION_STARTED, operation_id=op.id)[0]
    assert started.meta_data["executor"] == "plc"  # journaled: who runs it
    assert dispatcher.explain(op.id)["blocked_by"] == []


def test_an_executor_going_offline_holds_the_next_start(make_dispatcher, make_recorder):
    dispatcher = make_dispatcher()
    dispatcher.attach_executor("plc", online_signal="plc.ready")
    recorder = make_recorder(dispatcher)
    dispatcher.signals.set("plc.ready", True, max_age_seconds=60)
    dispatcher.start()
    first = dispatcher.add_operation(_op())
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=first.id)
    second = dispatcher.add_operation(_op())
    dispatcher.signals.set("plc.ready", False)
    dispatcher.complete_operation(first.id, executor="plc")  # as the PLC bridge does
    assert dispatcher.explain(second.id)["blocked_by"] == ["release_condition:plc.ready"]
    dispatcher.signals.set("plc.ready", True, max_age_seconds=60)
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=second.id)


def test_a_stale_online_signal_does_not_release(make_dispatcher):
    dispatcher = make_dispatcher()
    dispatcher.attach_executor("plc")
    dispatcher.signals.set("plc.online", True, max_age_seconds=0.01)
    wait_until(lambda: dispatcher.signals.get("plc.online").is_stale(), what="plc.online stale")
    dispatcher.start()
    op = dispatcher.add_operation(_op())
    dispatcher.drain_events(5.0)
    assert dispatcher.get_operation(op.id).state is ExecutionState.QUEUED
    assert "release_condition:plc.online" in dispatcher.explain(op.id)["blocked_by"]


def test_a_second_executor_is_refused_naming_both(make_dispatcher):
    dispatcher = make_dispatcher()
    dispatcher.attach_executor("plc")
    dispatcher.attach_executor("plc")  # the same bridge again: harmless
    with pytest.raises(ExecutorConflict) as caught:
        dispatcher.attach_executor("board")
    assert "'board'" in str(caught.value) and "'plc'" in str(caught.value)
    assert dispatcher.executor == "plc"
    dispatcher.detach_executor("board")  # not the executor: nothing changes
    assert dispatcher.executor == "plc"
    dispatcher.detach_executor("plc")
    dispatcher.attach_executor("board")
    assert dispatcher.executor == "board"


@pytest.mark.parametrize("name", ["", None, 5])
def test_an_executor_needs_a_name(make_dispatcher, name):
    with pytest.raises(ValidationError):
        make_dispatcher().attach_executor(name)


def test_detaching_the_executor_releases_what_waited_for_it(make_dispatcher, make_recorder):
    dispatcher = make_dispatcher()
    dispatcher.attach_executor("plc")
    recorder = make_recorder(dispatcher)
    dispatcher.start()
    op = dispatcher.add_operation(_op())
    assert dispatcher.get_operation(op.id).state is ExecutionState.QUEUED
    dispatcher.detach_executor("plc")
    started = recorder.wait_for(EventType.OPERATION_STARTED, operation_id=op.id)[0]
    assert "executor" not in started.meta_data


def test_default_release_conditions_apply_unless_the_operation_names_the_signal(make_dispatcher):
    dispatcher = make_dispatcher(default_release_conditions={"door.closed": True, "mode": "auto"})
    plain = dispatcher.add_operation(_op())
    own = dispatcher.add_operation(_op(release_conditions={"mode": "manual", "x": 1}))
    assert plain.release_conditions == {"door.closed": True, "mode": "auto"}
    assert own.release_conditions == {"mode": "manual", "x": 1, "door.closed": True}
    assert "release_condition:door.closed" in dispatcher.explain(plain.id)["blocked_by"]


@pytest.mark.parametrize("bad", [["door.closed"], "door.closed", {"": True}, {1: True}])
def test_default_release_conditions_are_checked(bad):
    with pytest.raises(ValidationError) as caught:
        OperationDispatcher(RESOURCE, default_release_conditions=bad)
    assert "default_release_conditions" in str(caught.value)


def test_default_release_conditions_from_config():
    config = parse_config({"dispatcher": {"default_release_conditions": {"door.closed": True}}})
    assert config.dispatcher_kwargs()["default_release_conditions"] == {"door.closed": True}
    with pytest.raises(ConfigError) as caught:
        parse_config({"dispatcher": {"default_release_conditions": ["door.closed"]}})
    assert caught.value.errors[0].startswith("dispatcher.default_release_conditions:")


# ------------------------------------------------------------------ after a restart
def _run_one_on_executor(path: Path, recovery: str, *, pause: bool = False) -> Operation:
    """A process that started an operation on executor "plc" and ended while it ran."""
    dispatcher = OperationDispatcher(RESOURCE, journal=path, recovery=recovery)
    dispatcher.attach_executor("plc")
    dispatcher.signals.set("plc.online", True, max_age_seconds=60)
    op = dispatcher.add_operation(_op(payload={"program": 7}))
    assert dispatcher.step_dispatch().id == op.id
    if pause:
        dispatcher.pause_operation(op.id)
    dispatcher.close()  # the loop never ran: the journal keeps it RUNNING, as after a kill
    return op


@pytest.mark.parametrize("recovery", ["fail", "pause"])
@pytest.mark.parametrize("pause", [False, True])
def test_the_executor_reattaches_to_the_operation_it_ran(tmp_path, make_recorder, recovery, pause):
    path = tmp_path / "journal.db"
    op = _run_one_on_executor(path, recovery, pause=pause)
    state = ExecutionState.PAUSED if pause else ExecutionState.RUNNING
    dispatcher = OperationDispatcher(RESOURCE, journal=path, recovery=recovery)
    try:
        recorder = make_recorder(dispatcher)
        assert dispatcher.get_operation(op.id).state is state  # waits for its executor
        recovered = dispatcher.attach_executor("plc")
        assert recovered is not None and recovered.id == op.id and recovered.state is state
        dispatcher.start()
        assert dispatcher.get_operation(op.id).state is state  # nothing re-sent, nothing failed
        if pause:
            dispatcher.resume_operation(op.id)
        dispatcher.complete_operation(op.id, executor="plc")  # the machine reports it done
        recorder.wait_for(EventType.OPERATION_COMPLETED, operation_id=op.id)
        assert recorder.matching(EventType.OPERATION_STARTED) == []
    finally:
        dispatcher.close()


@pytest.mark.parametrize("recovery", ["fail", "pause"])
def test_without_its_executor_the_recovery_policy_applies_at_start(tmp_path, recovery):
    path = tmp_path / "journal.db"
    op = _run_one_on_executor(path, recovery)
    dispatcher = OperationDispatcher(RESOURCE, journal=path, recovery=recovery)
    try:
        dispatcher.attach_executor("other")  # renamed bridge: not the one that ran it
        dispatcher.start()
        stored = dispatcher.get_operation(op.id)
        if recovery == "fail":
            assert stored.state is ExecutionState.COMPLETED
            assert stored.termination_reason is TerminationReason.INTERRUPTED
            failed = [e for e in dispatcher.list_events(op.id)
                      if e.event_type is EventType.OPERATION_FAILED][0]
            assert failed.meta_data["executor"] == "plc"
            assert failed.meta_data["executor_reattached"] is False
        else:
            assert stored.state is ExecutionState.PAUSED
        assert dispatcher.attach_executor("other") is None
    finally:
        dispatcher.close()


def test_an_operation_run_by_hand_is_recovered_at_once(tmp_path):
    path = tmp_path / "journal.db"
    dispatcher = OperationDispatcher(RESOURCE, journal=path)
    op = dispatcher.add_operation(_op())
    dispatcher.step_dispatch()
    dispatcher.close()
    dispatcher = OperationDispatcher(RESOURCE, journal=path)
    try:
        assert dispatcher.get_operation(op.id).termination_reason is TerminationReason.INTERRUPTED
    finally:
        dispatcher.close()


def test_a_serial_executor_reattaches_and_done_finishes_the_job(tmp_path, make_recorder):
    """The serial device keeps running a job while its controller restarts; the new bridge is
    told which job it was, sends no RUN again, and the device's DONE <id> completes it."""
    from firmware_bridges.serial_line import SerialLineBridge
    from firmware_bridges.simulators.serial_device import SerialDeviceSimulator

    path = tmp_path / "journal.db"
    with SerialDeviceSimulator(run_seconds=None, signals={"alive": 1}, repeat_seconds=0.05) as sim:
        url = sim.listen_tcp()
        sim.start()
        dispatcher = OperationDispatcher(RESOURCE, journal=path)
        bridge = SerialLineBridge(dispatcher, "mcu", url, executor=True)
        recorder = make_recorder(dispatcher)
        with bridge:
            dispatcher.start()
            op = dispatcher.add_operation(_op(payload={"command": "weld"}))
            recorder.wait_for(EventType.OPERATION_STARTED, operation_id=op.id)
            sim.wait_until(lambda s: any(m.kind == "RUN" for m in s.received))
        dispatcher.close()  # the controller goes away with the job running on the device

        dispatcher = OperationDispatcher(RESOURCE, journal=path)
        try:
            recorder = make_recorder(dispatcher)
            with SerialLineBridge(dispatcher, "mcu", url, executor=True):
                dispatcher.start()
                assert dispatcher.get_operation(op.id).state is ExecutionState.RUNNING
                sim.wait_connected(count=2)  # DONE goes to the new bridge, not into the void
                sim.send_done(op.id)
                recorder.wait_for(EventType.OPERATION_COMPLETED, operation_id=op.id)
            assert [m.kind for m in sim.received].count("RUN") == 1
            assert recorder.matching(EventType.OPERATION_STARTED) == []
        finally:
            dispatcher.close()


def test_a_second_executor_bridge_is_refused_when_built(make_dispatcher):
    from firmware_bridges.serial_line import SerialLineBridge

    dispatcher = make_dispatcher()
    SerialLineBridge(dispatcher, "mcu", "loop://", executor=True)
    SerialLineBridge(dispatcher, "display", "loop://")  # signals only: fine
    with pytest.raises(ExecutorConflict) as caught:
        SerialLineBridge(dispatcher, "board", "loop://", executor=True)
    assert "'mcu'" in str(caught.value) and "'board'" in str(caught.value)

"""Finishing a job by hand (issue 12, item 2): ``POST /operations/<id>/complete`` and ``/fail``,
``complete_operation`` / ``fail_operation`` with ``force``; a job an executor bridge runs is the
bridge's to finish unless an operator forces it, and the bridge then lets go of it for good.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from conftest import RESOURCE, EventRecorder, assert_error, wait_until
from conftest import op as _op
from plc_helpers import EXECUTOR, PLC, bridge_factory

from firmware_bridges.modbus import ModbusBridge
from firmware_bridges.simulators.plc import PlcSimulator
from operation_dispatcher import (
    EventType,
    ExecutionState,
    Operation,
    OperationDispatcher,
    OperationNotCurrent,
    RunByExecutor,
    TerminationReason,
    ValidationError,
)

COMPLETED, FAILED, STARTED = (
    EventType.OPERATION_COMPLETED, EventType.OPERATION_FAILED, EventType.OPERATION_STARTED,
)


@pytest.fixture
def make_bridge(make_dispatcher: Callable[..., OperationDispatcher]) -> Iterator[Callable[..., ModbusBridge]]:
    """``make_bridge(dispatcher, plc, **kwargs)`` -> a started ModbusBridge named plc1."""
    yield from bridge_factory()


def _events(api: Any, operation_id: str, kind: EventType) -> list[dict[str, Any]]:
    response = api.get(f"/operations/{operation_id}/events")
    assert response.status_code == 200, response.text
    return [e for e in response.json() if e["event_type"] == kind.value]


# ------------------------------------------------------------------ serve, as a cell runs it


def test_a_manual_job_is_completed_and_failed_over_rest_on_serve(serve) -> None:
    server = serve("--journal", ":memory:")
    try:
        first, second = (server.post("/operations/add", json=[{"payload": {"job": n}}]).json()[0]
                         for n in ("weld", "paint"))
        assert first["operation"]["state"] == "RUNNING" and first["is_current_operation"] is True
        assert second["operation"]["state"] == "QUEUED" and second["is_current_operation"] is False
        first_id, second_id = first["operation"]["id"], second["operation"]["id"]

        refused = server.post(f"/operations/{second_id}/complete", json={})  # still queued
        assert_error(refused, 409, "operation_not_running", state="QUEUED")

        done = server.post(f"/operations/{first_id}/complete",
                           json={"meta_data": {"operator": "ana", "parts": 12}})
        assert done.status_code == 200, done.text
        assert done.json()["operation"]["state"] == "COMPLETED"
        assert done.json()["operation"]["outcome"] == "SUCCESS"
        assert done.json()["is_current_operation"] is False
        event = _events(server, first_id, COMPLETED)[0]
        assert event["meta_data"] == {"operator": "ana", "parts": 12}  # nothing forced

        again = server.post(f"/operations/{first_id}/complete", json={})  # already finished
        assert_error(again, 409, "operation_not_running", state="COMPLETED")

        # the second job started when the first was reported done: it goes wrong by hand
        wait_until(lambda: server.get(f"/operations/{second_id}").json()["operation"]["state"]
                   == "RUNNING", what="the second job to start")
        failed = server.post(f"/operations/{second_id}/fail", json={
            "termination_reason": "EXTERNAL_ERROR", "meta_data": {"why": "nozzle clogged"}})
        assert failed.status_code == 200, failed.text
        assert failed.json()["operation"]["termination_reason"] == "EXTERNAL_ERROR"
        assert failed.json()["operation"]["outcome"] == "FAILURE"
        assert _events(server, second_id, FAILED)[0]["meta_data"] == {"why": "nozzle clogged"}

        unknown = server.post("/operations/00000000-0000-4000-8000-000000000000/complete", json={})
        assert_error(unknown, 404, "operation_not_found")
    finally:
        code, _, err = server.stop()
    assert code == 0, err


# ------------------------------------------------------------------ the Python API


def test_python_finish_by_hand_respects_the_executor_unless_forced(make_dispatcher, make_recorder) -> None:
    dispatcher = make_dispatcher()
    dispatcher.attach_executor("plc")
    dispatcher.signals.set("plc.online", True, max_age_seconds=60)
    recorder = make_recorder(dispatcher)
    dispatcher.start()
    job = dispatcher.add_operation(_op())
    assert dispatcher.get_operation(job.id).state is ExecutionState.RUNNING

    with pytest.raises(RunByExecutor) as refused:
        dispatcher.complete_operation(job.id, {"by": "hand"})
    assert refused.value.executor == "plc" and "plc" in str(refused.value)
    with pytest.raises(RunByExecutor):
        dispatcher.fail_operation(job.id, executor="other-bridge")  # not the one running it
    for truthy in ("true", 1, "yes", None):  # only the real True overrides a machine
        with pytest.raises(ValidationError, match="force"):
            dispatcher.complete_operation(job.id, force=truthy)
    assert dispatcher.get_operation(job.id).state is ExecutionState.RUNNING  # nothing changed

    done = dispatcher.fail_operation(
        job.id, TerminationReason.EXTERNAL_ERROR, {"by": "hand", "executor": "lie"}, force=True
    )
    assert done.state is ExecutionState.COMPLETED
    assert done.termination_reason is TerminationReason.EXTERNAL_ERROR
    event = recorder.wait_for(FAILED, operation_id=job.id)[0]
    # the record tells the truth: a caller's meta_data cannot hide the override
    assert event.meta_data == {"by": "hand", "forced_by_operator": True, "executor": "plc"}

    # the bridge itself names itself; a job started before any executor is anyone's to finish
    second = dispatcher.add_operation(_op())
    dispatcher.complete_operation(second.id, executor="plc")
    assert recorder.wait_for(COMPLETED, operation_id=second.id)[0].meta_data == {}
    dispatcher.detach_executor("plc")
    third = dispatcher.add_operation(_op())
    dispatcher.complete_operation(third.id, force=True)
    assert recorder.wait_for(COMPLETED, operation_id=third.id)[0].meta_data == {}
    with pytest.raises(OperationNotCurrent):
        dispatcher.complete_operation(third.id, force=True)


def test_the_executor_of_a_recovered_job_still_guards_it(tmp_path: Path, make_recorder) -> None:
    """After a restart the journal names the bridge that ran the job: it is still its to finish."""
    path = tmp_path / "journal.db"
    first = OperationDispatcher(RESOURCE, journal=path, recovery="pause")
    first.attach_executor("plc")
    first.signals.set("plc.online", True, max_age_seconds=60)
    first.start()
    job = first.add_operation(_op())
    assert first.get_operation(job.id).state is ExecutionState.RUNNING
    first.stop()
    first.close()  # as after a kill: the journal keeps it RUNNING

    again = OperationDispatcher(RESOURCE, journal=path, recovery="pause")
    try:
        recorder = make_recorder(again)
        assert again.attach_executor("plc").id == job.id
        again.start()
        with pytest.raises(RunByExecutor):
            again.complete_operation(job.id)
        again.complete_operation(job.id, force=True)
        event = recorder.wait_for(COMPLETED, operation_id=job.id)[0]
        assert event.meta_data == {"forced_by_operator": True, "executor": "plc"}
    finally:
        again.close()


# ------------------------------------------------------------------ a real PLC as the executor


def test_an_executor_run_job_is_refused_without_force_and_stopped_with_it(make_api, make_bridge) -> None:
    """Over HTTP against a pymodbus PLC: 409 naming the bridge; force finishes it, is recorded,
    and the bridge cancels the cycle on the PLC; the next job runs as usual."""
    executor = {**EXECUTOR, "cancel_coil": PLC.CANCEL_COIL}
    with PlcSimulator(cycle_time=30.0, ready=True) as slow_plc:
        api = make_api()
        recorder = EventRecorder(api.dispatcher)
        bridge = make_bridge(api.dispatcher, slow_plc, executor=executor)
        job = api.add({"payload": {"program": 5}})[0]
        recorder.wait_for(STARTED, operation_id=UUID(job["id"]))
        wait_until(lambda: slow_plc.busy, what="the PLC to run the cycle")

        refused = api.post(f"/operations/{job['id']}/complete", json={"meta_data": {"by": "ana"}})
        assert_error(refused, 409, "run_by_executor", executor="plc1")
        refused = api.post(f"/operations/{job['id']}/fail", json={"force": False})
        assert_error(refused, 409, "run_by_executor", executor="plc1")
        assert_error(api.post(f"/operations/{job['id']}/complete", json={"force": "true"}),
                     400, "invalid_force", field="force")
        assert api.dispatcher.get_operation(job["id"]).state is ExecutionState.RUNNING

        forced = api.post(f"/operations/{job['id']}/complete",
                          json={"meta_data": {"by": "ana"}, "force": True})
        assert forced.status_code == 200, forced.text
        assert forced.json()["operation"]["state"] == "COMPLETED"
        assert _events(api, job["id"], COMPLETED)[0]["meta_data"] == {
            "by": "ana", "forced_by_operator": True, "executor": "plc1"}
        wait_until(lambda: slow_plc.cancelled == 1, what="the bridge to cancel the PLC's cycle")
        wait_until(lambda: bridge._active is None, what="the bridge to let go of the job")

        slow_plc.cycle_time = 0.05
        nxt = api.add({"payload": {"program": 6}})[0]
        completed = recorder.wait_for(COMPLETED, operation_id=UUID(nxt["id"]))[0]
        assert completed.meta_data == {"bridge": "plc1"}  # the PLC's own done, not forced
        assert slow_plc.programs_run == [5, 6]
        assert bridge.is_online and bridge.counters["errors"] == 0


def test_a_late_done_of_a_forced_job_is_ignored(make_dispatcher, make_bridge, caplog) -> None:
    """Without a cancel coil the PLC finishes the cycle after the operator forced the job: its
    done bit neither crashes the bridge nor ends anything else."""
    with PlcSimulator(cycle_time=0.3, ready=True) as plc:
        dispatcher = make_dispatcher()
        recorder = EventRecorder(dispatcher)
        dispatcher.start()
        bridge = make_bridge(dispatcher, plc, executor=EXECUTOR)
        job = dispatcher.add_operation(Operation(resource_id=RESOURCE, payload={"program": 1}))
        recorder.wait_for(STARTED, operation_id=job.id)
        wait_until(lambda: plc.busy, what="the PLC to run the cycle")
        dispatcher.fail_operation(job.id, TerminationReason.EXTERNAL_ERROR, force=True)
        wait_until(lambda: bridge._active is None, what="the bridge to let go of the job")
        # the bridge's warning comes from the event thread, which nothing orders with the above
        wait_until(lambda: any("finished by an operator (force)" in r.getMessage()
                               for r in caplog.records), what="the bridge's warning")
        wait_until(lambda: plc.cycles == 1, what="the PLC to finish the forced cycle")
        reads = bridge.counters["reads"]
        wait_until(lambda: bridge.counters["reads"] > reads + 2, what="polls that see the done bit")

        assert bridge.is_running and bridge.is_online and bridge.counters["errors"] == 0
        assert recorder.types(job.id).count(FAILED) == 1 and COMPLETED not in recorder.types(job.id)
        stored = dispatcher.get_operation(job.id)
        assert stored.termination_reason is TerminationReason.EXTERNAL_ERROR
        nxt = dispatcher.add_operation(Operation(resource_id=RESOURCE, payload={"program": 2}))
        recorder.wait_for(COMPLETED, operation_id=nxt.id)
        assert plc.programs_run == [1, 2] and plc.cycles == 2  # it ended with its own cycle


# ------------------------------------------------------------------ hostile bodies


HOSTILE_BODIES: list[tuple[str, str, str | None]] = [
    ('{"force": "true"}', "invalid_force", "force"),
    ('{"force": "false"}', "invalid_force", "force"),
    ('{"force": 1}', "invalid_force", "force"),
    ('{"force": null}', "invalid_force", "force"),
    ('{"force": [true]}', "invalid_force", "force"),
    ('{"meta_data": []}', "invalid_meta_data", "meta_data"),
    ('{"meta_data": "x"}', "invalid_meta_data", "meta_data"),
    ('{"meta_data": {"n": ' + "9" * 5000 + '}}', "invalid_request_body", "meta_data"),
    ('{"meta_data": {"n": Infinity}}', "invalid_request_body", None),
    ('{"meta_data": {"n": NaN}}', "invalid_request_body", None),
    ('{"meta_data": {"n": 1e999}}', "invalid_request_body", "meta_data"),
    ('{"forced": true}', "invalid_request_body", "forced"),
    ('[{"force": true}]', "invalid_request_body", None),
    ('"force"', "invalid_request_body", None),
    ('{"force": tru', "invalid_request_body", None),
]


def test_hostile_finish_bodies_are_refused_and_change_nothing(make_api) -> None:
    api = make_api()
    job = api.add()[0]
    for route in ("complete", "fail"):
        for body, code, field in HOSTILE_BODIES:
            response = api.post(f"/operations/{job['id']}/{route}", data=body,
                                headers={"Content-Type": "application/json"})
            assert response.status_code == 400, (route, body, response.text)
            answer = response.json()
            assert answer["code"] == code, (route, body, answer)
            if field is not None:
                assert answer["details"]["field"].startswith(field), (route, body, answer)
    assert api.dispatcher.get_operation(job["id"]).state is ExecutionState.RUNNING
    assert api.get(f"/operations/{job['id']}/events").json()[-1]["event_type"] == "operation_started"


def test_fail_names_the_valid_reasons_and_bad_ids_are_refused(make_client) -> None:
    api = make_client()
    job = api.add()[0]
    bad = api.post(f"/operations/{job['id']}/fail", json={"termination_reason": "BORED"})
    body = assert_error(bad, 400, "invalid_termination_reason")
    assert "EXTERNAL_ERROR" in body["details"]["valid_termination_reasons"]
    assert_error(api.post("/operations/not-a-uuid/complete", json={}), 400, "invalid_operation_id")
    no_body = api.post(f"/operations/{job['id']}/complete")  # the body is optional
    assert no_body.status_code == 200, no_body.text
    assert api.dispatcher.get_operation(job["id"]).state is ExecutionState.COMPLETED

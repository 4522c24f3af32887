"""explain()'s details (issue 12 item 4): one per blocker, a sentence an operator can act on,
and the facts behind it: signal values, ages, owners, providers, dates, cooldowns, requests.

Real parts throughout: a real clock (ages are waited for, not faked), a real pymodbus PLC
simulator behind a real ModbusBridge, the REST API through Flask's test client.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import jsonschema_rs
import pytest
from conftest import RESOURCE, EventRecorder, op, wait_signal, wait_until
from plc_helpers import EXECUTOR, READY, bridge_factory

from firmware_bridges.simulators.plc import PlcSimulator
from operation_dispatcher import (
    PENDING,
    DependencyType,
    DispatchEvent,
    EventType,
    OperationDependency,
    OperationDispatcher,
    ValidationError,
    reasons,
)
from operation_dispatcher.approvals import ApprovalRequest, RequestKind, RetryPolicy
from operation_dispatcher.http.schemas import ExplainResponse
from operation_dispatcher.models import format_datetime, utcnow
from operation_dispatcher.reasons import KINDS, span
from operation_dispatcher.signals import SignalBoard


def explained(dispatcher: OperationDispatcher, operation_id: Any) -> dict[str, Any]:
    """explain() checked for what every answer promises: one detail per blocker in the same
    order, JSON without NaN or infinity, and the shape /openapi.json documents."""
    answer = dispatcher.explain(operation_id)
    assert [d["blocker"] for d in answer["details"]] == answer["blocked_by"]
    assert all(d["kind"] in KINDS and d["text"] for d in answer["details"])
    assert all(list(d)[:3] == ["blocker", "kind", "text"] for d in answer["details"])
    wire = json.loads(json.dumps(answer, allow_nan=False))
    ExplainResponse.model_validate(wire)
    return answer


def detail(dispatcher: OperationDispatcher, operation_id: Any, blocker: str) -> dict[str, Any]:
    answer = explained(dispatcher, operation_id)
    found = [d for d in answer["details"] if d["blocker"] == blocker]
    assert len(found) == 1, answer
    return found[0]


def dependency(provider: Any, kind: DependencyType = DependencyType.FINISH_TO_START) -> Any:
    return OperationDependency(depends_on_operation_id=provider.id, dependency_type=kind)


# ------------------------------------------------------------------------ release conditions
def test_a_false_signal_says_how_long_it_has_been_false_across_reconfirmations(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher()
    dispatcher.signals.set("plc.ready", False)
    dispatcher.start()
    held = dispatcher.add_operation(op(release_conditions={"plc.ready": True}))
    wait_until(
        lambda: detail(dispatcher, held.id, "release_condition:plc.ready")["unchanged_seconds"]
        >= 0.2, what="plc.ready false for 0.2 s",
    )
    dispatcher.signals.set("plc.ready", False)  # confirmed again: still false since the start
    found = detail(dispatcher, held.id, "release_condition:plc.ready")
    assert found["kind"] == "release_condition"
    assert found["signal"] == "plc.ready" and found["required"] is True
    assert found["value"] is False and found["ever_set"] is True
    assert found["unchanged_seconds"] >= 0.2 > found["age_seconds"]  # false for longer
    assert found["stale"] is False and found["type_mismatch"] is False
    assert found["owner"] is None and found["owner_online"] is None
    assert found["text"] == (
        f"waiting for plc.ready = true, now false for {span(found['unchanged_seconds'])}"
    )
    assert re.fullmatch(r"waiting for plc\.ready = true, now false for 0\.\d+ s", found["text"])

    dispatcher.signals.set("plc.ready", True)  # it starts in this thread: nothing to await
    assert explained(dispatcher, held.id) == {
        "operation_id": str(held.id), "state": "RUNNING", "blocked_by": [], "details": [],
    }


def test_a_typo_names_the_signal_nothing_ever_set_and_the_close_one_that_exists(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher(start_paused=True)
    dispatcher.signals.set("plc.ready", True)
    typo = dispatcher.add_operation(op(release_conditions={"plc.redy": True, "zz9": 1}))
    found = detail(dispatcher, typo.id, "release_condition:plc.redy")
    assert found["ever_set"] is False and found["value"] is None and found["age_seconds"] is None
    assert found["similar_signal"] == "plc.ready"
    assert found["text"] == (
        "waiting for plc.redy = true, but nothing has ever set plc.redy (a typo for plc.ready?)"
    )
    lonely = detail(dispatcher, typo.id, "release_condition:zz9")
    assert lonely["similar_signal"] is None
    assert lonely["text"] == "waiting for zz9 = 1, but nothing has ever set zz9 (a typo?)"


def test_a_type_mismatch_names_both_types(make_dispatcher: Callable[..., OperationDispatcher]) -> None:
    dispatcher = make_dispatcher(start_paused=True)
    dispatcher.signals.set("plc.mode", True)
    dispatcher.signals.set("plc.ready", "true")  # a string from a careless writer
    held = dispatcher.add_operation(op(release_conditions={"plc.mode": "auto", "plc.ready": True}))
    mode = detail(dispatcher, held.id, "release_condition:plc.mode")
    assert mode["text"] == 'waiting for plc.mode = "auto" (a string), but it is true (a boolean)'
    assert (mode["type_mismatch"], mode["required_type"], mode["value_type"]) == (
        True, "string", "boolean")
    ready = detail(dispatcher, held.id, "release_condition:plc.ready")
    assert ready["text"] == 'waiting for plc.ready = true (a boolean), but it is "true" (a string)'
    assert ready["type_mismatch"] is True and ready["value"] == "true"


def test_a_stale_signal_says_when_it_was_last_confirmed_and_its_max_age(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher(start_paused=True)
    dispatcher.signals.set("door.closed", True, max_age_seconds=0.05)
    wait_until(lambda: dispatcher.signals.get("door.closed").is_stale(), what="door.closed stale")
    held = dispatcher.add_operation(op(release_conditions={"door.closed": True}))
    found = detail(dispatcher, held.id, "release_condition:door.closed")
    assert found["stale"] is True and found["expired"] is False
    assert found["value"] is True and found["max_age_seconds"] == 0.05
    assert found["age_seconds"] > 0.05
    assert found["text"] == (
        f"waiting for door.closed = true, but its value true is stale: last confirmed "
        f"{span(found['age_seconds'])} ago, max age 0.05 s"
    )


def test_an_expired_signal_has_a_finite_age_and_says_its_source_went_away(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher(start_paused=True)
    dispatcher.signals.set("door.closed", True)
    dispatcher.signals.expire("door.closed")  # what a bridge does when its device goes away
    held = dispatcher.add_operation(op(release_conditions={"door.closed": True}))
    found = detail(dispatcher, held.id, "release_condition:door.closed")
    assert found["expired"] is True and found["stale"] is True
    assert 0 <= found["age_seconds"] < 5  # from the wall clock: the monotonic one says -inf
    assert found["text"].startswith(
        "waiting for door.closed = true, but its source went offline, so its last value true")


def test_a_claimed_signal_names_its_bridge_and_says_it_is_offline(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher(start_paused=True)
    board = dispatcher.signals
    board.claim("cell.", "bridge cell")  # as a bridge does when it is built
    held = dispatcher.add_operation(op(release_conditions={"cell.ready": True}))
    found = detail(dispatcher, held.id, "release_condition:cell.ready")
    assert (found["owner"], found["owner_online_signal"], found["owner_online"]) == (
        "bridge cell", "cell.online", False)
    assert found["text"] == (
        "waiting for cell.ready = true, but nothing has ever set cell.ready "
        "(bridge cell, which writes it, is offline)"
    )
    board.set("cell.online", True)
    found = detail(dispatcher, held.id, "release_condition:cell.ready")
    assert found["owner_online"] is True
    assert found["text"].endswith(
        "(a typo? bridge cell, which owns it, is online but has never reported it)")


@pytest.fixture
def make_bridge() -> Any:
    yield from bridge_factory()


def test_a_plc_gone_offline_names_its_bridge_for_the_signal_and_the_executor(
    make_dispatcher: Callable[..., OperationDispatcher], make_bridge: Any,
) -> None:
    with PlcSimulator(cycle_time=0.05, ready=True) as plc:
        dispatcher = make_dispatcher()
        dispatcher.start()
        make_bridge(dispatcher, plc, executor=EXECUTOR, signals=READY,
                    reconnect_initial=0.02, reconnect_max=0.05)
        wait_signal(dispatcher, "plc1.ready", True)
        plc.stop()
        wait_signal(dispatcher, "plc1.online", False)
        held = dispatcher.add_operation(op(payload={"program": 1},
                                           release_conditions={"plc1.ready": True}))
        answer = explained(dispatcher, held.id)
        assert answer["blocked_by"] == ["release_condition:plc1.ready",
                                        "release_condition:plc1.online"]
        ready, online = answer["details"]
        assert ready["kind"] == "release_condition"
        assert (ready["owner"], ready["owner_online"]) == ("bridge plc1", False)
        assert ready["expired"] is True and ready["value"] is True
        assert ready["text"].startswith(
            "waiting for plc1.ready = true, but bridge plc1, which writes it, is offline, so its "
            "last value true (from ")
        assert ready["text"].endswith("ago) does not count")
        assert online["kind"] == "executor_offline" and online["executor"] == "plc1"
        assert online["signal"] == "plc1.online" and online["value"] is False
        assert online["text"].startswith("executor plc1 is offline (plc1.online is false for ")
        assert online["text"].endswith("): nothing is sent to it, so no operation starts")


# ------------------------------------------------------------------------ the executor gate
def test_an_executor_that_never_came_online_and_one_that_reports_a_non_boolean(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher()
    dispatcher.attach_executor("plc")
    dispatcher.start()
    held = dispatcher.add_operation(op())
    found = detail(dispatcher, held.id, "release_condition:plc.online")  # the blocker as before
    assert found["kind"] == "executor_offline" and found["executor"] == "plc"
    assert found["ever_set"] is False and found["required"] is True
    assert found["text"] == (
        "executor plc has never reported online (plc.online was never set): nothing is sent to "
        "it, so no operation starts"
    )
    dispatcher.signals.set("plc.online", "yes")
    found = detail(dispatcher, held.id, "release_condition:plc.online")
    assert found["text"] == (
        'executor plc is not online: plc.online is "yes" (a string) and only true counts; '
        "nothing is sent to it, so no operation starts"
    )


# ------------------------------------------------------------------------ dependencies
def test_a_dependency_names_the_providers_state_and_what_holds_it(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher()
    dispatcher.start()
    provider = dispatcher.add_operation(op(release_conditions={"door.closed": True}))
    after = dispatcher.add_operation(op(dependencies=[dependency(provider)]))
    beside = dispatcher.add_operation(
        op(dependencies=[dependency(provider, DependencyType.START_TO_START)],
           release_conditions={"never": True}))
    found = detail(dispatcher, after.id, f"dependency:{provider.id}")
    assert found["kind"] == "dependency"
    assert (found["provider_id"], found["provider_state"], found["needs"]) == (
        str(provider.id), "QUEUED", "success")
    assert found["provider_blocked_by"] == ["release_condition:door.closed"]
    assert found["failed"] is False and found["dependency_type"] == "FINISH_TO_START"
    assert found["text"] == (
        f"waiting for operation {provider.id} to complete successfully; it is QUEUED, itself "
        "waiting for release_condition:door.closed"
    )
    starts = detail(dispatcher, beside.id, f"dependency:{provider.id}")
    assert starts["needs"] == "start" and starts["text"].startswith(
        f"waiting for operation {provider.id} to start; it is QUEUED")

    dispatcher.signals.set("door.closed", True)  # the provider starts (in this thread)
    found = detail(dispatcher, after.id, f"dependency:{provider.id}")
    assert (found["provider_state"], found["provider_blocked_by"]) == ("RUNNING", [])
    assert found["text"] == (
        f"waiting for operation {provider.id} to complete successfully; it is RUNNING")
    assert f"dependency:{provider.id}" not in explained(dispatcher, beside.id)["blocked_by"]


def test_a_failed_provider_says_the_dependent_will_fail(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher()
    provider = dispatcher.add_operation(op())
    dispatcher.cancel_operation(provider.id)
    dependent = dispatcher.add_operation(op(dependencies=[dependency(provider)]))
    found = detail(dispatcher, dependent.id, f"dependency:{provider.id}")
    assert (found["failed"], found["provider_state"], found["provider_outcome"]) == (
        True, "COMPLETED", "CANCELLED")
    assert found["text"] == (
        f"operation {provider.id}, which this one depends on, ended CANCELLED, so this one will "
        "fail with DEPENDENCY_FAILED"
    )


# ------------------------------------------------------------------------ time-based blockers
def test_a_release_date_says_the_date_and_the_time_left(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher()
    dispatcher.start()
    date = utcnow() + timedelta(hours=1)
    later = dispatcher.add_operation(op(release_date=date))
    found = detail(dispatcher, later.id, "release_date")
    assert found["kind"] == "release_date"
    assert found["release_date"] == format_datetime(date)
    assert 3590 < found["seconds_left"] <= 3600
    assert re.fullmatch(
        rf"waiting for its release date {re.escape(format_datetime(date))}, "
        r"(59 min \d+ s|1 h 0 min) from now", found["text"])


def test_a_cooldown_after_a_denial_says_when_it_is_asked_again(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher(
        on_request_callback=lambda event: False, start_request_retry_cooldown_seconds=30.0,
        start_request_max_retries=3,
    )
    recorder = EventRecorder(dispatcher)
    dispatcher.start()
    denied = dispatcher.add_operation(op())
    recorder.wait_for(EventType.OPERATION_START_DENIED, operation_id=denied.id)
    answer = explained(dispatcher, denied.id)
    assert answer["blocked_by"] == ["cooldown"]
    (found,) = answer["details"]
    assert found["kind"] == "cooldown"
    assert (found["denials"], found["max_retries"], found["cooldown_seconds"]) == (1, 3, 30.0)
    assert 25 < found["seconds_left"] <= 30
    ends = datetime.fromisoformat(found["cooldown_ends_at"])
    assert abs((ends - utcnow()).total_seconds() - found["seconds_left"]) < 2
    assert found["text"] == (
        f"its start was denied once (the dispatcher pauses itself after 3); it is asked again "
        f"in {span(found['seconds_left'])}, at {found['cooldown_ends_at']}"
    )


def test_a_dispatcher_that_paused_itself_after_denials_says_so_and_since_when(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher(
        on_request_callback=lambda event: False, start_request_max_retries=1,
    )
    recorder = EventRecorder(dispatcher)
    dispatcher.start()
    denied = dispatcher.add_operation(op())
    recorder.wait_for(EventType.OPERATION_DISPATCHER_PAUSED)
    found = detail(dispatcher, denied.id, "dispatcher_paused")
    assert found["paused_after_denials"] is True and found["denials"] == 1
    assert found["paused_since"] is not None and 0 <= found["paused_seconds"] < 5
    assert found["text"] == (
        f"the dispatcher is paused since {found['paused_since']} "
        f"({span(found['paused_seconds'])}), by itself after this operation's start was denied "
        "once: resume it (POST /dispatcher/resume or resume_dispatcher_runtime()) to start "
        "operations again"
    )


def test_a_dispatcher_paused_from_the_start_or_not_running_says_what_to_do(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher(start_paused=True)
    held = dispatcher.add_operation(op())
    paused, stopped = explained(dispatcher, held.id)["details"]
    assert paused["kind"] == "dispatcher_paused"
    assert (paused["paused_since"], paused["paused_seconds"]) == (None, None)  # not known
    assert paused["paused_after_denials"] is False
    assert paused["text"] == (
        "the dispatcher is paused: resume it (POST /dispatcher/resume or "
        "resume_dispatcher_runtime()) to start operations again"
    )
    assert stopped["kind"] == "dispatcher_not_running"
    assert stopped["text"] == (
        "the dispatcher loop is not running: start it (POST /dispatcher/start, or start() or "
        "run() in Python)"
    )
    dispatcher.resume_dispatcher_runtime()
    dispatcher.pause_dispatcher_runtime()
    since = detail(dispatcher, held.id, "dispatcher_paused")["paused_since"]
    assert since is not None and abs((datetime.fromisoformat(since) - utcnow()).total_seconds()) < 5


# ------------------------------------------------------------------------ approvals and busy
def test_awaiting_approval_names_the_request_how_long_it_waited_and_whom_it_waits_for(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher(
        on_request_callback=lambda event: PENDING, request_event_timeout_seconds=60.0,
    )
    dispatcher.start()
    asked = dispatcher.add_operation(op())
    (pending,) = wait_until(
        lambda: [r for r in dispatcher.pending_requests() if r.waiting_for == "decide()"],
        what="the request left to decide()",
    )
    found = detail(dispatcher, asked.id, "awaiting_approval")
    request = str(pending.request_id)
    assert found["kind"] == "awaiting_approval"
    assert (found["request_id"], found["request_kind"], found["waiting_for"], found["status"]) == (
        request, "start", "decide()", "pending")
    assert found["requested_at"] == format_datetime(pending.created_at)
    assert found["deadline"] == format_datetime(pending.deadline)
    assert 0 <= found["waiting_seconds"] < 5 and 55 < found["seconds_left"] <= 60
    assert found["text"] == (
        f"start request {request} has waited {span(found['waiting_seconds'])} for an answer: "
        f"approve or deny it (POST /requests/{request}/approve or /deny, or decide()); without "
        f"an answer it is denied in {span(found['seconds_left'])}"
    )

    second = dispatcher.add_operation(op())
    busy = detail(dispatcher, second.id, "resource_busy")
    assert (busy["current_operation_id"], busy["request_id"]) == (str(asked.id), request)
    assert busy["text"] == (
        f"operation {asked.id} is being asked for approval to start (request {request}); this "
        "one is considered after that answer"
    )
    dispatcher.decide(request, True)
    assert explained(dispatcher, asked.id)["state"] == "RUNNING"


def test_awaiting_a_callback_that_has_not_answered_yet(
    make_dispatcher: Callable[..., OperationDispatcher], gate: Any,
) -> None:
    asked_event = []

    def slow(event: Any) -> bool:
        asked_event.append(event)
        gate.wait()
        return False

    dispatcher = make_dispatcher(on_request_callback=slow, request_event_timeout_seconds=30.0)
    dispatcher.start()
    asked = dispatcher.add_operation(op())
    wait_until(lambda: asked_event, what="the callback asked")
    found = detail(dispatcher, asked.id, "awaiting_approval")
    assert found["waiting_for"] == "request callback"
    assert found["text"].startswith(
        f"start request {found['request_id']} has waited {span(found['waiting_seconds'])} for "
        "the request callback to answer; without an answer it is denied in ")


def test_a_request_without_a_deadline_waits_until_answered_and_stays_json_safe() -> None:
    """A request that waits for ever (an operator with no timeout) has an infinite monotonic
    deadline: the detail says it waits, with null deadline and seconds_left, never Infinity."""
    operation = op()
    event = DispatchEvent.trusted(
        RESOURCE, EventType.OPERATION_START_REQUESTED, operation.id, [], {})
    request = ApprovalRequest(
        kind=RequestKind.START, event=event, operation=operation, deadline=float("inf"),
        deadline_at=None, timeout=float("inf"),  # type: ignore[arg-type]
    )
    request.waiting_for = "decide()"
    board = SignalBoard()
    facts = reasons.collect(
        operation, ["awaiting_approval"], signals=board, find=lambda _id: None,
        why_waiting=lambda _op: [], retry=RetryPolicy(5, 1.0), request=request, current=None,
        executor=None, executor_signal=None, paused_since=None,
    )
    (found,) = reasons.describe(facts, board)
    assert (found["deadline"], found["seconds_left"]) == (None, None)
    assert found["text"].endswith("or decide()); it waits until answered")
    json.dumps(found, allow_nan=False)


def test_resource_busy_names_the_running_operation(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher()
    dispatcher.start()
    running = dispatcher.add_operation(op())
    waiting = dispatcher.add_operation(op())
    answer = explained(dispatcher, waiting.id)
    assert answer["blocked_by"] == ["resource_busy"]
    (found,) = answer["details"]
    assert (found["current_operation_id"], found["current_state"], found["request_id"]) == (
        str(running.id), "RUNNING", None)
    assert found["current_seconds"] >= 0
    assert found["text"] == (
        f"the resource is busy with operation {running.id} (RUNNING for "
        f"{span(found['current_seconds'])}); this one is considered once it finishes"
    )


# ------------------------------------------------------------------------ snapshots, attacks
def test_details_are_copies_not_views_of_live_state(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher(start_paused=True)
    dispatcher.signals.set("recipe", {"steps": [1, 2]})
    held = dispatcher.add_operation(op(release_conditions={"recipe": {"steps": [1, 2, 3]}}))
    found = detail(dispatcher, held.id, "release_condition:recipe")
    found["value"]["steps"].append(99)
    found["required"]["steps"].clear()
    assert dispatcher.signals.value("recipe") == {"steps": [1, 2]}
    assert dispatcher.get_operation(held.id).release_conditions == {"recipe": {"steps": [1, 2, 3]}}


def test_huge_values_and_names_give_bounded_sentences_and_floods_of_names_stay_cheap(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher(start_paused=True)
    board = dispatcher.signals
    long_name = "plc." + "x" * 100_000
    board.set("plc.mode", "m" * 100_000)
    for index in range(20_000):  # a flood of names from a misbehaving writer
        board.set(f"flood.{index}", index)
    board.set("plc.ready", True)
    held = dispatcher.add_operation(op(release_conditions={
        "plc.mode": "auto", long_name: True, "plc.redy": True}))
    begun = time.monotonic()
    answer = explained(dispatcher, held.id)
    assert time.monotonic() - begun < 2.0
    assert all(len(d["text"]) < 600 for d in answer["details"])
    mode, long, typo = answer["details"][:3]
    assert mode["value"] == "m" * 100_000  # the field keeps the whole value; the text cuts it
    assert long["signal"] == long_name and long["similar_signal"] is None
    assert typo["similar_signal"] == "plc.ready"  # found among 20,000 names


def test_without_details_explain_is_the_cheap_count_of_blockers_and_refuses_a_non_bool(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher(start_paused=True)
    held = dispatcher.add_operation(op(release_conditions={"plc.ready": True}))
    assert dispatcher.explain(held.id, details=False) == {
        "operation_id": str(held.id), "state": "QUEUED",
        "blocked_by": ["release_condition:plc.ready", "dispatcher_paused",
                       "dispatcher_not_running"],
    }
    with pytest.raises(ValidationError, match="details"):
        dispatcher.explain(held.id, details="no")  # type: ignore[arg-type]


# ------------------------------------------------------------------------ over REST
def test_explain_over_rest_carries_the_same_details(make_client: Callable[..., Any]) -> None:
    client = make_client()
    dispatcher = client.dispatcher
    dispatcher.signals.set("plc.ready", True)
    dispatcher.signals.set("plc.mode", True)
    provider = client.add({"payload": {}, "release_conditions": {"plc.redy": True}})[0]
    waiting = client.add({
        "payload": {}, "release_conditions": {"plc.mode": "auto"},
        "dependencies": [{"depends_on_operation_id": provider["id"],
                          "dependency_type": "FINISH_TO_START"}],
        "release_date": format_datetime(utcnow() + timedelta(minutes=5)),
    })[0]
    response = client.get(f"/operations/{waiting['id']}/explain")
    assert response.status_code == 200
    body = response.json()
    ExplainResponse.model_validate(body)
    assert body["blocked_by"] == [
        "release_date", "release_condition:plc.mode", f"dependency:{provider['id']}"]
    assert [d["kind"] for d in body["details"]] == [
        "release_date", "release_condition", "dependency"]
    date, mode, provided = body["details"]
    assert mode["text"] == 'waiting for plc.mode = "auto" (a string), but it is true (a boolean)'
    assert provided["provider_blocked_by"] == ["release_condition:plc.redy"]
    assert 240 < date["seconds_left"] <= 300
    python = dispatcher.explain(waiting["id"])
    assert [d["text"] for d in python["details"]][1:] == [mode["text"], provided["text"]]

    typo = client.get(f"/operations/{provider['id']}/explain").json()
    assert typo["details"][0]["text"] == (
        "waiting for plc.redy = true, but nothing has ever set plc.redy (a typo for plc.ready?)")


def test_explain_over_rest_names_a_pending_request_to_approve(
    make_client: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    client = make_client(make_dispatcher(
        on_request_callback=lambda event: PENDING, request_event_timeout_seconds=60.0))
    asked = client.add({"payload": {}})[0]
    (pending,) = wait_until(lambda: client.get("/requests").json(), what="a pending request")
    wait_until(
        lambda: client.get(f"/operations/{asked['id']}/explain").json()["details"][0][
            "waiting_for"] == "decide()", what="the request left to decide()")
    body = client.get(f"/operations/{asked['id']}/explain").json()
    ExplainResponse.model_validate(body)
    (found,) = body["details"]
    assert found["kind"] == "awaiting_approval" and found["request_id"] == pending["request_id"]
    approve = f"/requests/{pending['request_id']}/approve"
    assert f"POST {approve} or /deny" in found["text"]
    assert client.post(approve, json={}).status_code == 200
    body = client.get(f"/operations/{asked['id']}/explain").json()
    assert (body["state"], body["details"]) == ("RUNNING", [])


def test_the_openapi_document_lists_every_detail_kind_and_describes_real_answers(
    make_client: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher(
        on_request_callback=lambda event: not event.operation_id == denied.id,
        start_request_max_retries=1,
    )
    dispatcher.attach_executor("plc")
    client = make_client(dispatcher)
    document = client.get("/openapi.json").json()
    items = document["components"]["schemas"]["ExplainResponse"]["properties"]["details"]["items"]
    assert set(items["discriminator"]["mapping"]) == set(KINDS)
    validator = jsonschema_rs.Draft202012Validator({
        "$ref": "#/components/schemas/ExplainResponse", "components": document["components"]})

    recorder = EventRecorder(dispatcher)
    denied = dispatcher.add_operation(op())  # the executor is offline: nothing is asked yet
    dispatcher.signals.set("plc.online", True, max_age_seconds=60)
    recorder.wait_for(EventType.OPERATION_DISPATCHER_PAUSED)  # denied once: paused itself
    dispatcher.signals.set("plc.online", False)
    dispatcher.signals.set("plc.mode", 3)
    provider = dispatcher.add_operation(op(release_date=utcnow() + timedelta(minutes=1)))
    dependent = dispatcher.add_operation(op(
        dependencies=[dependency(provider)], release_conditions={"plc.mode": "auto"}))
    seen: set[str] = set()
    for operation in (denied, provider, dependent):
        body = client.get(f"/operations/{operation.id}/explain").json()
        validator.validate(body)
        seen.update(d["kind"] for d in body["details"])
    assert seen == {"cooldown", "dispatcher_paused", "executor_offline", "release_date",
                    "release_condition", "dependency"}

"""ApprovalPolicy in Python: "auto", "operator" and "deny" per request kind, the operator's
timeout (none: wait), the payload flag, and request_event_timeout_seconds=None.

The serve side (TOML, REST, restarts) is in test_cli_approvals.py.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import pytest
from conftest import EventRecorder, op, wait_until

from operation_dispatcher import (
    PENDING,
    ApprovalPolicy,
    DispatchEvent,
    EventType,
    OperationDispatcher,
    RequestClosed,
    ValidationError,
)
from operation_dispatcher.approval_policy import Policy, policy_problems
from operation_dispatcher.approvals import RequestKind

Factory = Callable[..., OperationDispatcher]
Recorder = Callable[[OperationDispatcher], EventRecorder]


def _only_request(dispatcher: OperationDispatcher) -> Any:
    return wait_until(lambda: dispatcher.pending_requests(), what="a pending request")[0]


# ------------------------------------------------------------------------------ the object


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"start": "operatr"}, "start must be one of 'auto', 'operator', 'mqtt', 'deny'"),
        ({"cancel": True}, "cancel must be one of"),
        ({"pause": None}, "pause must be one of"),
        ({"operator_timeout_seconds": "5"}, "operator_timeout_seconds must be a number > 0"),
        ({"operator_timeout_seconds": -1}, "operator_timeout_seconds must be a number > 0"),
        ({"operator_timeout_seconds": 0}, "operator_timeout_seconds must be a number > 0"),
        ({"operator_timeout_seconds": math.nan}, "operator_timeout_seconds must be a number"),
        ({"operator_timeout_seconds": math.inf}, "operator_timeout_seconds must be a number"),
        ({"operator_timeout_seconds": True}, "operator_timeout_seconds must be a number"),
        ({"operator_when_payload": "needs_operator"}, "must be a list of payload keys"),
        ({"operator_when_payload": ["ok", 3]}, "each payload key must be a non-empty string"),
        ({"operator_when_payload": [""]}, "each payload key must be a non-empty string"),
        ({"operator_when_payload": [f"k{i}" for i in range(33)]}, "at most 32 payload keys"),
    ],
)
def test_policy_refuses_bad_values(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ApprovalPolicy(**fields)


def test_policy_defaults_and_table() -> None:
    policy = ApprovalPolicy()
    assert policy.to_dict() == {
        "start": "auto", "cancel": "auto", "pause": "auto", "resume": "auto",
        "operator_timeout_seconds": None, "operator_when_payload": [],
    }
    built = ApprovalPolicy.from_mapping({"start": "operator", "operator_timeout_seconds": 2})
    assert built.start is Policy.OPERATOR and built.operator_timeout_seconds == 2
    problems = policy_problems({"stop": "deny", "start": 1, "operator_timeout_seconds": -1})
    assert [key for key, _ in problems] == [
        "approvals.stop", "approvals.start", "approvals.operator_timeout_seconds"
    ]
    assert policy_problems([1]) == [("approvals", "must be a table ([approvals])")]


def test_payload_flag_is_fail_safe() -> None:
    policy = ApprovalPolicy(start="operator", operator_when_payload=["needs_operator"])
    start = RequestKind.START
    for value in (True, "yes", 1, 0, 0.0, [], "false"):
        flagged = op(payload={"needs_operator": value})
        assert policy.for_request(start, flagged) is Policy.OPERATOR, value
    for payload in ({}, {"needs_operator": False}, {"needs_operator": None}, {"other": True}):
        assert policy.for_request(start, op(payload=payload)) is Policy.AUTO, payload
    assert policy.for_request(RequestKind.CANCEL, op(payload={"needs_operator": True})) is (
        Policy.AUTO  # cancel is "auto": the flag narrows "operator" only
    )


def test_constructor_refuses_a_policy_of_the_wrong_type(make_dispatcher: Factory) -> None:
    with pytest.raises(ValidationError, match="approval_policy must be an ApprovalPolicy"):
        make_dispatcher(approval_policy={"start": "operator"})


# ------------------------------------------------------------------------------ "operator"


def test_operator_start_waits_without_a_deadline_then_starts(
    make_dispatcher: Factory, make_recorder: Recorder
) -> None:
    asked: list[DispatchEvent] = []
    dispatcher = make_dispatcher(
        approval_policy=ApprovalPolicy(start="operator"),
        on_request_callback=lambda event: asked.append(event) or True,
        start_request_max_retries=1,
    )
    recorder = make_recorder(dispatcher)
    dispatcher.start()
    added = dispatcher.add_operation(op(payload={"task": "weld"}))
    request = _only_request(dispatcher)
    assert request.deadline is None and request.waiting_for == "operator"
    assert request.to_dict()["deadline"] is None
    assert dispatcher.explain(added.id)["blocked_by"] == ["awaiting_approval"]
    # no start, no denial, no pause while the operator thinks (1.5 s of real time)
    with pytest.raises(AssertionError, match="timed out"):
        recorder.wait_for(lambda e: e.event_type is not EventType.OPERATION_ADDED
                          and e.event_type is not EventType.OPERATION_DISPATCHER_STARTED,
                          timeout=1.5)
    assert dispatcher.get_operation(added.id).state == "QUEUED"
    assert dispatcher.pending_requests() == [request] and not dispatcher.is_paused
    dispatcher.decide(request.request_id, True, reasoning="looks good")
    recorder.wait_for(EventType.OPERATION_STARTED)
    assert asked == []  # "operator": the callback was not asked
    requested = recorder.matching(EventType.OPERATION_START_REQUESTED)[0]
    assert requested.id == request.request_id
    assert requested.meta_data["request_decision"]["reasoning"] == "looks good"


def test_operator_deny_counts_like_any_denial(
    make_dispatcher: Factory, make_recorder: Recorder
) -> None:
    dispatcher = make_dispatcher(
        approval_policy=ApprovalPolicy(start="operator"),
        start_request_retry_cooldown_seconds=0.05,
    )
    recorder = make_recorder(dispatcher)
    dispatcher.start()
    added = dispatcher.add_operation(op())
    first = _only_request(dispatcher)
    dispatcher.decide(first.request_id, False, reasoning="no material")
    denied = recorder.wait_for(EventType.OPERATION_START_DENIED)[0]
    assert denied.meta_data["reasoning"] == "no material" and denied.meta_data["retry_count"] == 1
    assert "counted" not in denied.meta_data
    second = wait_until(
        lambda: [r for r in dispatcher.pending_requests() if r.request_id != first.request_id],
        what="the request asked again",
    )[0]
    assert second.operation_id == added.id
    with pytest.raises(RequestClosed):
        dispatcher.decide(first.request_id, True)  # the old one stays closed
    assert dispatcher.get_operation(added.id).state == "QUEUED"


def test_operator_timeout_expires_and_never_pauses_the_dispatcher(
    make_dispatcher: Factory, make_recorder: Recorder
) -> None:
    dispatcher = make_dispatcher(
        approval_policy=ApprovalPolicy(start="operator", operator_timeout_seconds=0.1),
        start_request_max_retries=1,  # one counted denial would pause it
        start_request_retry_cooldown_seconds=0.01,
    )
    recorder = make_recorder(dispatcher)
    dispatcher.start()
    added = dispatcher.add_operation(op())
    first = _only_request(dispatcher)
    assert first.deadline is not None
    expiries = recorder.wait_for(EventType.OPERATION_START_DENIED, count=3)
    for event in expiries:
        assert event.meta_data["reasoning"] == "timeout"
        assert event.meta_data["counted"] is False and event.meta_data["retry_count"] == 0
    assert not dispatcher.is_paused
    assert not recorder.matching(EventType.OPERATION_DISPATCHER_PAUSED)
    with pytest.raises(RequestClosed) as closed:
        dispatcher.decide(first.request_id, True)
    assert closed.value.status == "expired"
    assert dispatcher.get_operation(added.id).state == "QUEUED"
    # a fresh request is still answered normally
    recorder.wait_for(EventType.OPERATION_START_REQUESTED, count=3)
    for _ in range(50):  # answer whichever request is open now (they keep expiring)
        try:
            dispatcher.decide(_only_request(dispatcher).request_id, True)
            break
        except RequestClosed:
            continue
    recorder.wait_for(EventType.OPERATION_STARTED)


def test_payload_flag_lets_others_start_alone(
    make_dispatcher: Factory, make_recorder: Recorder
) -> None:
    dispatcher = make_dispatcher(
        approval_policy=ApprovalPolicy(start="operator", operator_when_payload=["needs_operator"])
    )
    recorder = make_recorder(dispatcher)
    dispatcher.start()
    plain = dispatcher.add_operation(op(payload={"task": "drill"}))
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=plain.id)
    flagged = dispatcher.add_operation(op(payload={"needs_operator": True}))
    dispatcher.complete_operation(plain.id)
    request = _only_request(dispatcher)
    assert request.operation_id == flagged.id
    assert dispatcher.get_operation(flagged.id).state == "QUEUED"
    dispatcher.decide(request.request_id, True)
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=flagged.id)


def test_cancel_or_update_withdraws_the_waiting_request(
    make_dispatcher: Factory, make_recorder: Recorder
) -> None:
    dispatcher = make_dispatcher(
        approval_policy=ApprovalPolicy(start="operator"), start_request_max_retries=1
    )
    recorder = make_recorder(dispatcher)
    dispatcher.start()
    first = dispatcher.add_operation(op(priority=5))
    second = dispatcher.add_operation(op(priority=1))
    asked = _only_request(dispatcher)
    assert asked.operation_id == first.id
    assert dispatcher.explain(second.id)["blocked_by"] == ["resource_busy"]
    # an update voids it at once (the operator may never answer) and it is asked again
    dispatcher.update_operation(first.id, {"payload": {"task": "changed"}})
    again = wait_until(
        lambda: [r for r in dispatcher.pending_requests() if r.request_id != asked.request_id],
        what="a new request",
    )[0]
    assert again.operation_id == first.id
    # a cancel withdraws it: the machine goes to whatever is best now
    assert dispatcher.cancel_operation(first.id) is not None
    third = wait_until(
        lambda: [r for r in dispatcher.pending_requests() if r.operation_id == second.id],
        what="a request for the second operation",
    )[0]
    assert third.waiting_for == "operator"
    voids = [e.meta_data.get("void_reason") for e in
             recorder.wait_for(EventType.OPERATION_START_REQUESTED, count=2)]
    assert voids == [
        "operation changed while the request was open",
        "operation ended CANCELLED while the request was open",
    ]
    # nobody denied anything: no *_DENIED, no pause
    dispatcher.drain_events(5)
    assert not recorder.matching(EventType.OPERATION_START_DENIED)
    assert not dispatcher.is_paused
    with pytest.raises(RequestClosed):
        dispatcher.decide(again.request_id, True)


def test_operator_cancel_waits_in_the_callers_thread(
    make_dispatcher: Factory, make_recorder: Recorder
) -> None:
    dispatcher = make_dispatcher(approval_policy=ApprovalPolicy(cancel="operator"))
    recorder = make_recorder(dispatcher)
    dispatcher.start()
    running = dispatcher.add_operation(op())
    recorder.wait_for(EventType.OPERATION_STARTED)
    result: list[Any] = []
    caller = threading.Thread(
        target=lambda: result.append(dispatcher.cancel_operation(running.id)),
        name="test-cancel-caller",
    )
    caller.start()
    request = _only_request(dispatcher)
    assert request.event_type is EventType.OPERATION_CANCEL_REQUESTED and request.deadline is None
    assert caller.is_alive()
    dispatcher.decide(request.request_id, True)
    caller.join(5)
    assert result[0] is not None and result[0].outcome == "CANCELLED"


# ------------------------------------------------------------------------------ "deny", "auto"


def test_deny_policy_denies_without_asking(
    make_dispatcher: Factory, make_recorder: Recorder
) -> None:
    asked: list[DispatchEvent] = []
    dispatcher = make_dispatcher(
        approval_policy=ApprovalPolicy(start="deny"),
        on_request_callback=lambda event: asked.append(event) or True,
        start_request_max_retries=2, start_request_retry_cooldown_seconds=0,
    )
    recorder = make_recorder(dispatcher)
    dispatcher.start()
    added = dispatcher.add_operation(op())
    denials = recorder.wait_for(EventType.OPERATION_START_DENIED, count=2)
    assert denials[0].meta_data["reasoning"] == "approval_policy"
    assert denials[0].meta_data["decision_data"] == {"policy": 'approvals.start = "deny"'}
    recorder.wait_for(EventType.OPERATION_DISPATCHER_PAUSED)  # counted: max retries pause it
    assert asked == [] and dispatcher.get_operation(added.id).state == "QUEUED"


def test_auto_asks_the_callback_or_approves(
    make_dispatcher: Factory, make_recorder: Recorder
) -> None:
    asked: list[EventType] = []

    def callback(event: DispatchEvent) -> bool:
        asked.append(event.event_type)
        return event.event_type is EventType.OPERATION_START_REQUESTED

    policy = ApprovalPolicy(start="auto", cancel="auto", pause="operator",
                            operator_timeout_seconds=60)
    dispatcher = make_dispatcher(approval_policy=policy, on_request_callback=callback)
    recorder = make_recorder(dispatcher)
    dispatcher.start()
    added = dispatcher.add_operation(op())
    recorder.wait_for(EventType.OPERATION_STARTED)
    assert dispatcher.cancel_operation(added.id) is None  # the callback denies cancels
    assert asked == [EventType.OPERATION_START_REQUESTED, EventType.OPERATION_CANCEL_REQUESTED]
    # without a callback "auto" approves at once
    plain = make_dispatcher(approval_policy=ApprovalPolicy())
    plain_recorder = make_recorder(plain)
    plain.start()
    other = plain.add_operation(op())
    plain_recorder.wait_for(EventType.OPERATION_STARTED)
    assert plain.cancel_operation(other.id) is not None


# ------------------------------------------------------------------------------ Python timeout


def test_request_event_timeout_none_waits(
    make_dispatcher: Factory, make_recorder: Recorder
) -> None:
    """None used to raise a raw TypeError; it means: wait for decide(), however long."""
    dispatcher = make_dispatcher(
        on_request_callback=lambda event: PENDING, request_event_timeout_seconds=None,
        start_request_max_retries=1,
    )
    recorder = make_recorder(dispatcher)
    dispatcher.start()
    added = dispatcher.add_operation(op())
    request = wait_until(
        lambda: [r for r in dispatcher.pending_requests() if r.waiting_for == "decide()"],
        what="the callback's PENDING",
    )[0]
    assert request.deadline is None
    with pytest.raises(AssertionError, match="timed out"):
        recorder.wait_for(EventType.OPERATION_START_DENIED, timeout=1.0)
    assert dispatcher.explain(added.id)["blocked_by"] == ["awaiting_approval"]
    dispatcher.decide(request.request_id, True)
    recorder.wait_for(EventType.OPERATION_STARTED)


@pytest.mark.parametrize("value", ["5", -1, 0, math.nan, math.inf, True])
def test_request_event_timeout_still_refuses_bad_values(
    make_dispatcher: Factory, value: Any
) -> None:
    with pytest.raises(ValidationError, match="request_event_timeout_seconds"):
        make_dispatcher(request_event_timeout_seconds=value)


def test_deny_without_cooldown_does_not_hold_the_lock(
    make_dispatcher: Factory, make_recorder: Recorder
) -> None:
    """Denied at once, again and again: the dispatcher stays responsive until max retries
    pause it (at most a few denials per pass under the lock)."""
    dispatcher = make_dispatcher(
        approval_policy=ApprovalPolicy(start="deny"),
        start_request_max_retries=200, start_request_retry_cooldown_seconds=0,
    )
    recorder = make_recorder(dispatcher)
    dispatcher.start()
    added = dispatcher.add_operation(op())
    assert dispatcher.get_operation(added.id) is not None  # the lock is not held for good
    recorder.wait_for(EventType.OPERATION_DISPATCHER_PAUSED, timeout=20)
    assert len(recorder.matching(EventType.OPERATION_START_DENIED)) == 200

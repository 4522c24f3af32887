"""The approval handshake: callback results, PENDING and decide(), timeouts, retries, voids."""

from __future__ import annotations

import threading
from datetime import timedelta
from types import SimpleNamespace
from typing import Any
from unittest.mock import MagicMock, Mock

import pytest
from conftest import RESOURCE as R
from conftest import EventRecorder, PendingCallback, op

from operation_dispatcher import (
    DispatchEvent,
    EventType,
    ExecutionState,
    Operation,
    OperationDispatcher,
    RequestClosed,
    RequestDecision,
    UnknownRequest,
    ValidationError,
)

STARTED = EventType.OPERATION_STARTED
DENIED = EventType.OPERATION_START_DENIED
REQUESTED = EventType.OPERATION_START_REQUESTED


def first_denial(make_dispatcher, callback, **kwargs: Any) -> tuple[Any, Operation, Any]:
    """Start a dispatcher asking ``callback`` (30 s cooldown), add one operation, and wait for
    its first START_DENIED: (dispatcher, the operation, the denial)."""
    d = make_dispatcher(
        on_request_callback=callback, start_request_retry_cooldown_seconds=30, **kwargs
    )
    rec = EventRecorder(d)
    d.start()
    added = d.add_operation(op())
    return d, added, rec.wait_for(DENIED, operation_id=added.id)[0]


# ------------------------------------------------------------------------ callback results

ACCEPTING = [
    pytest.param(True, id="True"),
    pytest.param(RequestDecision(True, "fine"), id="RequestDecision"),
    pytest.param({"accepted": True, "reasoning": "ok", "data": {"x": 1}}, id="dict"),
    pytest.param(SimpleNamespace(accepted=True, reasoning=None, data=None), id="accepted-attr"),
    pytest.param(SimpleNamespace(is_allowed=True, reason="yes", metadata={}), id="is_allowed"),
]


@pytest.mark.parametrize("result", ACCEPTING)
def test_accepting_callback_results_start_the_operation(make_dispatcher, result) -> None:
    d = make_dispatcher(on_request_callback=lambda event: result)
    rec = EventRecorder(d)
    d.start()
    added = d.add_operation(op())
    rec.wait_for(STARTED, operation_id=added.id)
    assert d.get_operation(added.id).state is ExecutionState.RUNNING
    assert DENIED not in rec.types()


DENYING = [
    pytest.param(False, None, {}, id="False"),
    pytest.param(RequestDecision(False, "busy", {"k": 1}), "busy", {"k": 1}, id="RequestDecision"),
    pytest.param({"accepted": False, "reasoning": 42, "data": 7}, "42", {"value": 7}, id="dict"),
    pytest.param({"reasoning": "no key"}, "no key", {}, id="dict-without-accepted"),
    pytest.param(
        SimpleNamespace(accepted=False, reasoning="zero", data={"a": 1}), "zero", {"a": 1},
        id="accepted-attr",
    ),
    pytest.param(
        SimpleNamespace(is_allowed=False, reason="nope", metadata={"m": 2}), "nope", {"m": 2},
        id="is_allowed",
    ),
    pytest.param(
        None,
        "invalid_callback_result: expected True, False, a RequestDecision, a dict, an object "
        "with 'accepted' or PENDING, got NoneType None",
        {"result_type": "NoneType"},
        id="None",
    ),
    pytest.param(
        1,
        "invalid_callback_result: expected True, False, a RequestDecision, a dict, an object "
        "with 'accepted' or PENDING, got int 1",
        {"result_type": "int"},
        id="1",
    ),
    pytest.param(
        "yes",
        "invalid_callback_result: expected True, False, a RequestDecision, a dict, an object "
        "with 'accepted' or PENDING, got str 'yes'",
        {"result_type": "str"},
        id="yes",
    ),
]


@pytest.mark.parametrize(("result", "reasoning", "data"), DENYING)
def test_denying_callback_results(make_dispatcher, result, reasoning, data) -> None:
    d, added, denied = first_denial(make_dispatcher, lambda event: result)
    assert denied.meta_data.get("reasoning") == reasoning
    assert denied.meta_data.get("decision_data", {}) == data
    assert denied.meta_data["retry_count"] == 1
    assert denied.meta_data["max_retries"] == 5
    assert denied.meta_data["cooldown_seconds"] == 30
    assert d.get_operation(added.id).state is ExecutionState.QUEUED
    assert STARTED not in [e.event_type for e in d.list_events(added.id)]
    requested = [e for e in d.list_events(added.id) if e.event_type is REQUESTED]
    assert requested[0].meta_data["request_decision"] == {
        "accepted": False, "reasoning": reasoning, "data": data,
    }


# ------------------------------------------------------------------------ fail safe (issue 10 A.1)


class NumpyLikeBool:
    """Behaves like ``numpy.bool_(True)``: truthy and equal to True, yet not ``True``."""

    def __bool__(self) -> bool:
        return True

    def __eq__(self, other: object) -> bool:
        return other is True or other == 1

    def __hash__(self) -> int:
        return 1

    def __repr__(self) -> str:
        return "np.True_"


class RaisingAccepted:
    """An answer whose ``accepted`` property blows up when read."""

    @property
    def accepted(self) -> bool:
        raise KeyError("backend gone")


def forged_decision(accepted: Any) -> RequestDecision:
    """A RequestDecision whose validation was bypassed (it is frozen, not sealed)."""
    decision = RequestDecision(False)
    object.__setattr__(decision, "accepted", accepted)
    return decision


#: (callback answer, what the denial's reasoning must name); every one of them used to START.
FAIL_OPEN = [
    pytest.param({"accepted": "false"}, "got str 'false'", id="dict-str-false"),
    pytest.param({"accepted": "no"}, "got str 'no'", id="dict-str-no"),
    pytest.param({"accepted": [False]}, "got list [False]", id="dict-list"),
    pytest.param({"accepted": 1}, "got int 1", id="dict-int-1"),
    pytest.param({"accepted": NumpyLikeBool()}, "got NumpyLikeBool np.True_", id="dict-numpy"),
    pytest.param(SimpleNamespace(accepted="False"), "got str 'False'", id="attr-str"),
    pytest.param(SimpleNamespace(is_allowed="no"), "got str 'no'", id="is_allowed-str"),
    pytest.param(SimpleNamespace(is_allowed=1.0), "got float 1.0", id="is_allowed-float"),
    pytest.param(forged_decision("no"), "got str 'no'", id="forged-RequestDecision"),
    pytest.param(Mock(), "got Mock <Mock", id="Mock"),
    pytest.param(MagicMock(), "got MagicMock <MagicMock", id="MagicMock"),
    pytest.param(RaisingAccepted(), "raised KeyError", id="raising-property"),
]


@pytest.mark.parametrize(("result", "named"), FAIL_OPEN)
def test_only_a_real_true_starts_the_machine(make_dispatcher, result, named) -> None:
    d, added, denied = first_denial(make_dispatcher, lambda event: result)
    reasoning = denied.meta_data["reasoning"]
    assert reasoning.startswith("invalid_decision: "), reasoning
    assert named in reasoning
    assert denied.meta_data["decision_data"] == {"result_type": type(result).__name__}
    assert d.get_operation(added.id).state is ExecutionState.QUEUED
    assert STARTED not in [e.event_type for e in d.list_events(added.id)]
    requested = [e for e in d.list_events(added.id) if e.event_type is REQUESTED][0]
    assert requested.meta_data["request_decision"]["accepted"] is False


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param({"accepted": "yes"}, id="dict-str"),
        pytest.param(SimpleNamespace(is_allowed="no"), id="is_allowed-str"),
        pytest.param(Mock(), id="Mock"),
    ],
)
@pytest.mark.parametrize("kind", ["cancel", "pause", "resume"])
def test_only_a_real_true_cancels_pauses_or_resumes(make_dispatcher, kind, answer) -> None:
    asked = f"operation_{kind}_requested"

    def callback(event):
        return answer if event.event_type.value == asked else True

    d = make_dispatcher(on_request_callback=callback, start_request_retry_cooldown_seconds=30)
    rec = EventRecorder(d)
    d.start()
    added = d.add_operation(op())
    rec.wait_for(STARTED, operation_id=added.id)
    if kind == "resume":
        assert d.pause_operation(added.id) is True
    before = d.get_operation(added.id).state
    if kind == "cancel":
        assert d.cancel_operation(added.id) is None
    elif kind == "pause":
        assert d.pause_operation(added.id) is False
    else:
        assert d.resume_operation(added.id) is False
    denied = rec.wait_for(EventType(f"operation_{kind}_denied"), operation_id=added.id)[0]
    assert denied.meta_data["reasoning"].startswith("invalid_decision: accepted must be True")
    assert d.get_operation(added.id).state is before


def test_request_decision_refuses_a_non_bool() -> None:
    with pytest.raises(TypeError, match="accepted must be True or False, got str 'no'"):
        RequestDecision("no")
    with pytest.raises(TypeError, match="got int 1"):
        RequestDecision(1)
    with pytest.raises(TypeError, match="reasoning must be a string or None"):
        RequestDecision(True, 5)
    with pytest.raises(TypeError, match="data must be a dict"):
        RequestDecision(True, None, [1])
    assert RequestDecision(True).accepted is True


def test_a_callback_building_a_bad_request_decision_denies(make_dispatcher) -> None:
    d, added, denied = first_denial(make_dispatcher, lambda event: RequestDecision("no"))
    assert denied.meta_data["reasoning"] == "request_callback_exception"
    assert "got str 'no'" in denied.meta_data["decision_data"]["error"]
    assert d.get_operation(added.id).state is ExecutionState.QUEUED


@pytest.mark.parametrize("accepted", ["no", "yes", 1, 0, None, [True], NumpyLikeBool()])
def test_decide_with_a_non_bool_raises_and_leaves_the_request_open(
    make_dispatcher, accepted
) -> None:
    callback = PendingCallback()
    d = make_dispatcher(on_request_callback=callback, request_event_timeout_seconds=30)
    rec = EventRecorder(d)
    with pytest.raises(TypeError, match="accepted must be True or False"):
        d.decide("00000000-0000-0000-0000-000000000000", accepted)  # checked before the lookup
    d.start()
    added = d.add_operation(op())
    event = callback.wait_for()[0]
    with pytest.raises(TypeError, match="accepted must be True or False"):
        d.decide(event.id, accepted)
    assert [r.request_id for r in d.pending_requests()] == [event.id]
    assert d.explain(added.id)["blocked_by"] == ["awaiting_approval"]
    with pytest.raises(TypeError, match="reasoning must be a string"):
        d.decide(event.id, True, reasoning=7)
    with pytest.raises(TypeError, match="data must be a dict"):
        d.decide(event.id, True, data=[1])
    assert d.pending_requests() != []
    d.decide(event.id, True, "operator ok")
    rec.wait_for(STARTED, operation_id=added.id)
    assert DENIED not in rec.types()


def test_callback_that_raises_denies_with_request_callback_exception(make_dispatcher) -> None:
    def callback(event):
        raise ConnectionError("plc unreachable")

    d, added, denied = first_denial(make_dispatcher, callback)
    assert denied.meta_data["reasoning"] == "request_callback_exception"
    assert denied.meta_data["decision_data"] == {"error": "plc unreachable"}
    assert d.is_running


def test_async_callback_is_awaited(make_dispatcher) -> None:
    async def callback(event):
        return True

    d = make_dispatcher(on_request_callback=callback)
    rec = EventRecorder(d)
    d.start()
    added = d.add_operation(op())
    rec.wait_for(STARTED, operation_id=added.id)


def test_caller_meta_data_is_carried_into_request_and_denial(make_dispatcher) -> None:
    seen = []

    def callback(event):
        seen.append(event)
        if event.event_type is EventType.OPERATION_CANCEL_REQUESTED:
            return RequestDecision(False, "operator said no")
        return True

    d = make_dispatcher(on_request_callback=callback)
    rec = EventRecorder(d)
    added = d.add_operation(op())
    assert d.cancel_operation(added.id, meta_data={"initiator": "operator"}) is None
    assert seen[-1].meta_data == {"initiator": "operator"}
    denied = rec.wait_for(EventType.OPERATION_CANCEL_DENIED, operation_id=added.id)[0]
    assert denied.meta_data["request_meta_data"] == {"initiator": "operator"}
    assert denied.meta_data["reasoning"] == "operator said no"
    requested = [
        e for e in d.list_events(added.id)
        if e.event_type is EventType.OPERATION_CANCEL_REQUESTED
    ][0]
    assert requested.meta_data["initiator"] == "operator"
    assert requested.meta_data["request_decision"]["accepted"] is False


# ------------------------------------------------------------------------ PENDING and decide


def test_pending_answered_from_another_thread(make_dispatcher) -> None:
    callback = PendingCallback()
    d = make_dispatcher(on_request_callback=callback, request_event_timeout_seconds=30)
    rec = EventRecorder(d)
    d.start()
    added = d.add_operation(op())
    event = callback.wait_for()[0]
    pending = d.pending_requests()
    assert [p.request_id for p in pending] == [event.id]
    assert pending[0].operation_id == added.id
    assert pending[0].event_type is REQUESTED
    # "request callback" until the callback's PENDING has been filed, "decide()" after
    assert pending[0].waiting_for in ("request callback", "decide()")
    assert pending[0].to_dict()["request_id"] == str(event.id)
    assert d.explain(added.id)["blocked_by"] == ["awaiting_approval"]

    decider = threading.Thread(
        target=d.decide, args=(str(event.id), True, "operator ok", {"who": "ann"}),
        name="test-decider",
    )
    decider.start()
    decider.join(5)
    rec.wait_for(STARTED, operation_id=added.id)
    assert d.pending_requests() == []
    requested = [e for e in d.list_events(added.id) if e.event_type is REQUESTED]
    assert len(requested) == 1
    assert requested[0].id == event.id
    assert requested[0].meta_data["request_decision"] == {
        "accepted": True, "reasoning": "operator ok", "data": {"who": "ann"},
    }


def test_pending_request_names_what_it_waits_for(make_dispatcher, gate) -> None:
    asked = threading.Event()

    def callback(event):
        asked.set()
        gate.wait()
        return True

    d = make_dispatcher(
        on_request_callback=callback,
        request_event_timeout_seconds=30,
        start_request_retry_cooldown_seconds=30,
    )
    rec = EventRecorder(d)
    d.start()
    added = d.add_operation(op())
    assert asked.wait(5)
    (pending,) = d.pending_requests()
    assert pending.waiting_for == "request callback"
    assert pending.deadline - pending.created_at == timedelta(seconds=30)
    # decide() may answer before the callback does; the callback's late True is ignored
    d.decide(pending.request_id, False, "operator was faster")
    denied = rec.wait_for(DENIED, operation_id=added.id)[0]
    assert denied.meta_data["reasoning"] == "operator was faster"
    gate.set()
    d.stop()
    assert STARTED not in [e.event_type for e in d.list_events(added.id)]


def test_decide_denial_counts_as_a_denial(make_dispatcher) -> None:
    callback = PendingCallback()
    d = make_dispatcher(on_request_callback=callback, start_request_retry_cooldown_seconds=30)
    rec = EventRecorder(d)
    d.start()
    added = d.add_operation(op())
    event = callback.wait_for()[0]
    d.decide(event.id, False, "not now", {"slot": 3})
    denied = rec.wait_for(DENIED, operation_id=added.id)[0]
    assert denied.meta_data["reasoning"] == "not now"
    assert denied.meta_data["decision_data"] == {"slot": 3}
    assert "cooldown" in d.explain(added.id)["blocked_by"]


def test_decide_unknown_and_twice(make_dispatcher) -> None:
    callback = PendingCallback()
    d = make_dispatcher(on_request_callback=callback, request_event_timeout_seconds=30)
    rec = EventRecorder(d)
    with pytest.raises(UnknownRequest):
        d.decide("00000000-0000-0000-0000-000000000000", True)
    with pytest.raises(UnknownRequest):
        d.decide("not-a-uuid", True)
    d.start()
    added = d.add_operation(op())
    event = callback.wait_for()[0]
    d.decide(event.id, True)
    with pytest.raises(RequestClosed):
        d.decide(event.id, True)
    rec.wait_for(STARTED, operation_id=added.id)
    with pytest.raises(RequestClosed):  # still closed once the answer was acted on
        d.decide(event.id, False)


def test_pending_never_answered_times_out(make_dispatcher) -> None:
    callback = PendingCallback()
    d = make_dispatcher(
        on_request_callback=callback,
        request_event_timeout_seconds=0.2,
        start_request_retry_cooldown_seconds=30,
    )
    rec = EventRecorder(d)
    d.start()
    added = d.add_operation(op())
    event = callback.wait_for()[0]
    denied = rec.wait_for(DENIED, operation_id=added.id)[0]
    assert denied.meta_data["reasoning"] == "timeout"
    assert "decide()" in denied.meta_data["decision_data"]["error"]
    assert d.pending_requests() == []
    with pytest.raises(RequestClosed):
        d.decide(event.id, True)
    assert d.get_operation(added.id).state is ExecutionState.QUEUED


def test_slow_callback_times_out_and_late_answer_is_ignored(make_dispatcher, gate) -> None:
    def callback(event):
        gate.wait()
        return True

    d, added, denied = first_denial(make_dispatcher, callback, request_event_timeout_seconds=0.2)
    assert denied.meta_data["reasoning"] == "timeout"
    assert "request callback" in denied.meta_data["decision_data"]["error"]
    gate.set()
    d.stop()
    assert d.get_operation(added.id).state is ExecutionState.QUEUED


def test_cancel_request_left_pending_times_out(make_dispatcher) -> None:
    callback = PendingCallback()
    d = make_dispatcher(on_request_callback=callback, request_event_timeout_seconds=0.2)
    rec = EventRecorder(d)
    added = d.add_operation(op())
    assert d.cancel_operation(added.id) is None
    denied = rec.wait_for(EventType.OPERATION_CANCEL_DENIED, operation_id=added.id)[0]
    assert denied.meta_data["reasoning"] == "timeout"
    assert d.get_operation(added.id).state is ExecutionState.QUEUED


# ------------------------------------------------------------------------ retries


def test_denial_cooldown_retry_then_max_retries_pauses_and_resume_clears(
    make_dispatcher,
) -> None:
    answers: list[bool] = []
    lock = threading.Lock()

    def callback(event):
        with lock:
            return answers.pop(0) if answers else False

    d = make_dispatcher(
        on_request_callback=callback,
        start_request_max_retries=3,
        start_request_retry_cooldown_seconds=0.05,
    )
    rec = EventRecorder(d)
    d.start()
    added = d.add_operation(op())
    rec.wait_for(EventType.OPERATION_DISPATCHER_PAUSED)
    denials = rec.matching(DENIED, operation_id=added.id)
    assert [e.meta_data["retry_count"] for e in denials] == [1, 2, 3]
    assert all(e.meta_data["max_retries"] == 3 for e in denials)
    assert all(e.meta_data["cooldown_seconds"] == 0.05 for e in denials)
    assert d.is_paused
    types = rec.types()
    assert types.index(EventType.OPERATION_DISPATCHER_PAUSED) > max(
        i for i, t in enumerate(types) if t is DENIED
    )
    assert "dispatcher_paused" in d.explain(added.id)["blocked_by"]
    # the dispatcher stays paused and quiet: no fourth request
    assert len(rec.matching(REQUESTED, operation_id=added.id)) == 3

    with lock:
        answers[:] = [False, True]
    assert d.resume_dispatcher_runtime()
    rec.wait_for(STARTED, operation_id=added.id)
    denials = rec.matching(DENIED, operation_id=added.id)
    assert [e.meta_data["retry_count"] for e in denials] == [1, 2, 3, 1]  # count restarted


def test_cooldown_holds_only_the_denied_operation(make_dispatcher) -> None:
    def callback(event):
        return event.operation_id != denied_op.id

    denied_op = op(priority=9)
    d = make_dispatcher(on_request_callback=callback, start_request_retry_cooldown_seconds=30)
    rec = EventRecorder(d)
    d.add_operation(denied_op)
    other = d.add_operation(op(priority=1))
    d.start()
    rec.wait_for(DENIED, operation_id=denied_op.id)
    rec.wait_for(STARTED, operation_id=other.id)
    assert "cooldown" in d.explain(denied_op.id)["blocked_by"]


def test_resume_dispatcher_clears_cooldown(make_dispatcher) -> None:
    answers = [False]

    def callback(event):
        return answers.pop(0) if answers else True

    d = make_dispatcher(on_request_callback=callback, start_request_retry_cooldown_seconds=60)
    rec = EventRecorder(d)
    d.start()
    added = d.add_operation(op())
    rec.wait_for(DENIED, operation_id=added.id)
    assert "cooldown" in d.explain(added.id)["blocked_by"]
    d.pause_dispatcher_runtime()
    d.resume_dispatcher_runtime()
    rec.wait_for(STARTED, operation_id=added.id)


def test_cancel_denials_also_count_towards_max_retries(make_dispatcher) -> None:
    def callback(event):
        return event.event_type is not EventType.OPERATION_CANCEL_REQUESTED

    d = make_dispatcher(
        on_request_callback=callback,
        start_request_max_retries=2,
        start_request_retry_cooldown_seconds=0.0,
    )
    rec = EventRecorder(d)
    added = d.add_operation(op())
    assert d.cancel_operation(added.id) is None
    assert not d.is_paused
    assert d.cancel_operation(added.id) is None
    assert d.is_paused
    denials = rec.wait_for(EventType.OPERATION_CANCEL_DENIED, count=2)
    assert [e.meta_data["retry_count"] for e in denials] == [1, 2]
    rec.wait_for(EventType.OPERATION_DISPATCHER_PAUSED)


def test_repeated_cancel_during_cooldown_is_refused_silently(make_dispatcher) -> None:
    calls = []

    def callback(event):
        calls.append(event)
        return False

    d = make_dispatcher(on_request_callback=callback, start_request_retry_cooldown_seconds=30)
    added = d.add_operation(op())
    assert d.cancel_operation(added.id) is None
    assert d.cancel_operation(added.id) is None
    assert len(calls) == 1
    d.drain_events(5)
    cancel_denials = [
        e for e in d.list_events(added.id) if e.event_type is EventType.OPERATION_CANCEL_DENIED
    ]
    assert len(cancel_denials) == 1


# ------------------------------------------------------------------------ REQUESTED events


def test_requested_events_are_in_history_but_not_notified(make_dispatcher) -> None:
    callback_events = []
    notified = []

    def callback(event):
        callback_events.append(event)
        return True

    d = make_dispatcher(on_request_callback=callback, on_notification_callback=notified.append)
    rec = EventRecorder(d)
    d.start()
    added = d.add_operation(op())
    rec.wait_for(STARTED, operation_id=added.id)
    d.drain_events(5)
    assert all(not e.event_type.is_request for e in notified)
    assert [e.event_type for e in notified if e.operation_id == added.id] == [
        EventType.OPERATION_ADDED, STARTED,
    ]
    in_history = [e for e in d.get_history().events if e.event_type is REQUESTED]
    assert len(in_history) == 1
    assert in_history[0].id == callback_events[0].id
    assert in_history[0].meta_data["request_decision"] == {
        "accepted": True, "reasoning": None, "data": {},
    }
    assert [e.event_type for e in d.list_events(added.id)] == [
        EventType.OPERATION_ADDED, REQUESTED, STARTED,
    ]
    # subscribers that ask for requests get them, with the same id
    assert rec.matching(REQUESTED)[0].id == callback_events[0].id


def test_without_callback_everything_is_approved(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    d.start()
    added = d.add_operation(op())
    rec.wait_for(STARTED, operation_id=added.id)
    requested = rec.matching(REQUESTED, operation_id=added.id)
    assert requested[0].meta_data["request_decision"]["accepted"] is True


# ------------------------------------------------------------------------ approved == started


def test_cancel_during_pending_start_voids_the_approval(make_dispatcher) -> None:
    callback = PendingCallback()
    d = make_dispatcher(on_request_callback=callback, request_event_timeout_seconds=30)
    rec = EventRecorder(d)
    first = d.add_operation(op(priority=9))
    second = d.add_operation(op(priority=1))
    d.start()
    event = callback.wait_for()[0]
    assert event.operation_id == first.id
    # the cancel request is also answered PENDING: approve it from here
    canceller = threading.Thread(target=d.cancel_operation, args=(first.id,), name="test-cancel")
    canceller.start()
    cancel_event = callback.wait_for(2)[1]
    assert cancel_event.event_type is EventType.OPERATION_CANCEL_REQUESTED
    d.decide(cancel_event.id, True)
    canceller.join(5)
    rec.wait_for(EventType.OPERATION_CANCELLED, operation_id=first.id)
    d.decide(event.id, True)  # the approval of a cancelled operation
    start_of_second = callback.wait_for(3)[2]
    assert start_of_second.operation_id == second.id
    d.decide(start_of_second.id, True)
    rec.wait_for(STARTED, operation_id=second.id)
    assert not rec.matching(STARTED, operation_id=first.id)
    voided = [e for e in d.list_events(first.id) if e.event_type is REQUESTED]
    assert voided[0].id == event.id
    assert voided[0].meta_data["request_decision"]["accepted"] is True
    assert "no longer queued" in voided[0].meta_data["void_reason"]


def test_update_during_pending_start_voids_the_approval(make_dispatcher) -> None:
    callback = PendingCallback()
    d = make_dispatcher(on_request_callback=callback, request_event_timeout_seconds=30)
    rec = EventRecorder(d)
    first = d.add_operation(op(priority=9))
    second = d.add_operation(op(priority=5))
    d.start()
    event = callback.wait_for()[0]
    assert event.operation_id == first.id
    d.update_operation(first.id, {"priority": 1})
    d.decide(event.id, True)
    nxt = callback.wait_for(2)[1]
    assert nxt.operation_id == second.id  # re-ordered: the other one is asked for now
    d.decide(nxt.id, True)
    rec.wait_for(STARTED, operation_id=second.id)
    assert not rec.matching(STARTED, operation_id=first.id)
    voided = [e for e in d.list_events(first.id) if e.event_type is REQUESTED][0]
    assert "changed" in voided.meta_data["void_reason"]
    assert d.get_operation(first.id).state is ExecutionState.QUEUED


def test_dispatcher_pause_during_pending_start_voids_the_approval(make_dispatcher) -> None:
    callback = PendingCallback()
    d = make_dispatcher(on_request_callback=callback, request_event_timeout_seconds=30)
    rec = EventRecorder(d)
    added = d.add_operation(op())
    d.start()
    event = callback.wait_for()[0]
    d.pause_dispatcher_runtime()
    d.decide(event.id, True)
    voided = rec.wait_for(
        lambda e: e.event_type is REQUESTED and "void_reason" in e.meta_data
    )[0]
    assert "paused" in voided.meta_data["void_reason"]
    assert d.get_operation(added.id).state is ExecutionState.QUEUED
    d.resume_dispatcher_runtime()
    again = callback.wait_for(2)[1]
    d.decide(again.id, True)
    rec.wait_for(STARTED, operation_id=added.id)


def test_an_approval_voided_by_a_change_still_ends_the_run_of_denials(make_dispatcher) -> None:
    """deny, approve (void: the op changed meanwhile), deny: two denials, but not in a row.

    Found by the model test (test_api_model.py): max retries counts consecutive denials, and
    an approval ends the run even when the start it allowed was voided.
    """
    answers: list[Any] = [False, "meddle", False, False]

    def callback(event: DispatchEvent) -> bool:
        answer = answers.pop(0)
        if answer == "meddle":  # the operation changes while its start request is open
            current = d.get_operation(event.operation_id)
            d.update_operation(current.id, {"priority": current.priority + 1})
            return True
        return answer

    d = make_dispatcher(on_request_callback=callback, start_request_max_retries=2,
                        start_request_retry_cooldown_seconds=0)
    queued = d.add_operation(op())
    assert d.step_dispatch() is None  # denied (1)
    assert d.step_dispatch() is None  # approved, but void: the operation changed
    assert d.step_dispatch() is None  # denied (1 again: the approval ended the run)
    assert not d.get_state().is_paused
    assert d.step_dispatch() is None  # denied (2 in a row): max retries reached
    assert d.get_state().is_paused
    assert d.get_operation(queued.id).priority == 1


# ------------------------------------------------------------------------ snapshots (issue 10 E.18)


def test_decision_data_and_the_callbacks_event_are_copies(make_dispatcher) -> None:
    shared = {"slots": [1, 2], "cell": {"id": 7}}

    def callback(event):
        event.meta_data["forged"] = True  # the callback's event is its own copy
        return RequestDecision(False, "busy", shared)

    d = make_dispatcher(on_request_callback=callback, start_request_retry_cooldown_seconds=30)
    rec = EventRecorder(d)
    d.start()
    added = d.add_operation(op())
    rec.wait_for(DENIED, operation_id=added.id)
    shared["slots"].append(3)
    shared["cell"]["id"] = 8
    events = d.list_events(added.id)
    requested = [e for e in events if e.event_type is REQUESTED][0]
    assert "forged" not in requested.meta_data
    assert requested.meta_data["request_decision"]["data"] == {"slots": [1, 2], "cell": {"id": 7}}
    denied = [e for e in events if e.event_type is DENIED][0]
    assert denied.meta_data["decision_data"] == {"slots": [1, 2], "cell": {"id": 7}}


def test_decide_copies_its_data(make_dispatcher) -> None:
    callback = PendingCallback()
    d = make_dispatcher(on_request_callback=callback, start_request_retry_cooldown_seconds=30)
    rec = EventRecorder(d)
    d.start()
    added = d.add_operation(op())
    data = {"operator": {"name": "ann"}}
    d.decide(callback.wait_for()[0].id, False, "not now", data)
    rec.wait_for(DENIED, operation_id=added.id)
    data["operator"]["name"] = "mallory"
    denied = [e for e in d.list_events(added.id) if e.event_type is DENIED][0]
    assert denied.meta_data["decision_data"] == {"operator": {"name": "ann"}}


@pytest.mark.parametrize("field_name", ["start_paused", "strict_order"])
@pytest.mark.parametrize("value", ["false", "no", 0, 1, None])
def test_start_flags_are_never_read_from_truthy_values(field_name, value) -> None:
    """``start_paused="false"`` used to mean paused, ``start_paused=0`` running: only a bool."""
    with pytest.raises(ValidationError, match=f"{field_name} must be True or False"):
        OperationDispatcher(R, **{field_name: value})

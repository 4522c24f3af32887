"""The demo's simulated operator (``serve --demo``): it answers the requests the callback is
asked about, and steps in for a person only when nobody has answered an "operator" request in
``operator_patience`` seconds, so ``make demo`` keeps moving."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

from conftest import RESOURCE, EventRecorder

from operation_dispatcher import ApprovalPolicy, OperationDispatcher
from operation_dispatcher.demo import DemoMachine, demo_devices_for
from operation_dispatcher.models import EventType, Operation


def test_the_demo_operator_steps_in_only_after_its_patience(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    demo = DemoMachine(max_queued=0, operator_patience=1.0)  # feeds nothing: the test adds
    dispatcher = make_dispatcher(approval_policy=ApprovalPolicy(start="operator"),
                                 on_request_callback=demo.on_request)
    recorder = EventRecorder(dispatcher)
    demo.start(dispatcher)
    try:
        dispatcher.start()
        op = dispatcher.add_operation(Operation(resource_id=RESOURCE, payload={"task": "pick"}))
        [started] = recorder.wait_for(EventType.OPERATION_STARTED, operation_id=op.id, timeout=10.0)
        [asked] = recorder.matching(EventType.OPERATION_START_REQUESTED, operation_id=op.id)
        waited = (started.created_at - asked.created_at).total_seconds()
        assert waited >= 1.0  # a person had the first second to answer
        [answered] = [e for e in dispatcher.list_events(op.id)
                      if e.event_type is EventType.OPERATION_START_REQUESTED]
        decision = answered.meta_data["request_decision"]
        assert decision["accepted"] is True
        assert decision["reasoning"].startswith("demo operator stepped in")
    finally:
        demo.stop()


def test_a_bridge_without_a_string_kind_has_no_demo_device() -> None:
    """Demo devices are looked up by each bridge's ``kind``, a string; a bridge without one (no
    kind, None, an unhashable list) has no device, like an unknown kind, instead of a TypeError
    from the lookup ending ``serve --demo``."""
    bridges = [SimpleNamespace(name="a"), SimpleNamespace(kind=None),
               SimpleNamespace(kind=["modbus"]), SimpleNamespace(kind="no-such-kind")]
    assert demo_devices_for(bridges, cycle_time=0.5) == []

"""The MCP server in-process (``mcp.Client(server)``): every tool, resource and prompt, happy and
error paths, argument attacks, and an agent answering an approval the dispatcher waits on.

``mode="auto"`` takes the SDK's direct in-process path; ``mode="legacy"`` the initialize
handshake and JSON-RPC framing over memory streams, as a real transport would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import EventRecorder, PendingCallback, op
from mcp_support import Session, run

from operation_dispatcher import EventType, ExecutionState, OperationDispatcher
from operation_dispatcher.bridges import build_bridges
from operation_dispatcher.mcp import TOOL_SCOPES, create_mcp_server

MODES = ["auto", "legacy"]
TOOLS = set(TOOL_SCOPES)
ORIGINAL_TOOLS = {
    "dispatcher_get_state", "dispatcher_pause_runtime", "dispatcher_resume_runtime",
    "dispatcher_get_history",
}
RESOURCES = {"dispatcher://state", "dispatcher://queue", "dispatcher://requests"}
TEMPLATES = {
    "dispatcher://history/{limit}", "dispatcher://events/{limit}",
    "dispatcher://operations/session/{operation_id}",
    "dispatcher://operations/session/{operation_id}/events",
    "dispatcher://operations/{operation_id}/explain",
}
PROMPTS = {"dispatcher_introduction_prompt", "dispatcher_triage_prompt"}
UNKNOWN = "3f2b8a51-7c0e-4d9a-9b1e-5a6c7d8e9f01"  # fixed: xdist workers must collect the same ids


def same_explanation(got: dict[str, Any], expected: dict[str, Any]) -> bool:
    """The same blockers with the same kinds (their sentences may name a second more)."""
    def shape(explained: dict[str, Any]) -> Any:
        return (explained["operation_id"], explained["state"], explained["blocked_by"],
                [(d["blocker"], d["kind"]) for d in explained["details"]])
    return bool(shape(got) == shape(expected))


@pytest.fixture
def dispatcher(make_dispatcher: Callable[..., OperationDispatcher]) -> OperationDispatcher:
    """A dispatcher that is not running: what is added stays QUEUED."""
    return make_dispatcher()


# ------------------------------------------------------------------------ what is offered


@pytest.mark.parametrize("mode", MODES)
def test_every_tool_resource_and_prompt_is_listed(dispatcher: OperationDispatcher, mode: str) -> None:
    async def body(s: Session) -> None:
        tools = (await s.client.list_tools()).tools
        assert {t.name for t in tools} == TOOLS
        assert ORIGINAL_TOOLS <= TOOLS
        for tool in tools:
            assert tool.description and tool.output_schema, tool.name
            assert tool.annotations is not None
            assert tool.annotations.read_only_hint is (TOOL_SCOPES[tool.name] == "read"), tool.name
        resources = (await s.client.list_resources()).resources
        assert {str(r.uri) for r in resources} == RESOURCES
        templates = (await s.client.list_resource_templates()).resource_templates
        assert {t.uri_template for t in templates} == TEMPLATES
        prompts = (await s.client.list_prompts()).prompts
        assert {p.name for p in prompts} == PROMPTS

    run(create_mcp_server(dispatcher), body, mode)


def test_history_limit_schema_documents_default_and_max(dispatcher: OperationDispatcher) -> None:
    async def body(s: Session) -> None:
        tools = {t.name: t for t in (await s.client.list_tools()).tools}
        limit = tools["dispatcher_get_history"].input_schema["properties"]["limit"]
        assert (limit["default"], limit["minimum"], limit["maximum"]) == (1000, 1, 10000)

    run(create_mcp_server(dispatcher), body)


# ------------------------------------------------------------------------ reading the cell


@pytest.mark.parametrize("mode", MODES)
def test_read_tools_answer_with_their_schema(dispatcher: OperationDispatcher, mode: str) -> None:
    first = dispatcher.add_operation(op(payload={"n": 1}, job_id="job-17",
                                        release_conditions={"plc.ready": True}))
    second = dispatcher.add_operation(op(payload={"n": 2}))
    dispatcher.signals.set("door.closed", True, max_age_seconds=60)
    bridges = build_bridges(dispatcher, [{"type": "serial", "name": "mcu", "url": "loop://"}])

    async def body(s: Session) -> None:
        state = await s.ok("dispatcher_get_state")
        assert state["resource_id"] == dispatcher.resource_id
        assert (state["is_running"], state["queue_size"]) == (False, 2)
        listed = await s.ok("dispatcher_list_operations")
        assert [x["operation"]["id"] for x in listed["operations"]] == [str(first.id), str(second.id)]
        assert (listed["total"], listed["truncated"]) == (2, False)
        one = await s.ok("dispatcher_list_operations", limit=1)
        assert (len(one["operations"]), one["total"], one["truncated"]) == (1, 2, True)
        assert (await s.ok("dispatcher_list_operations", state="RUNNING"))["operations"] == []
        got = await s.ok("dispatcher_get_operation", operation_id=str(first.id))
        assert got["operation"]["job_id"] == "job-17" and got["is_current_operation"] is False
        why = await s.ok("dispatcher_explain_operation", operation_id=str(first.id))
        assert same_explanation(why, dispatcher.explain(first.id))
        assert "release_condition:plc.ready" in why["blocked_by"]
        assert [d["blocker"] for d in why["details"]] == why["blocked_by"]
        assert all(d["text"] for d in why["details"])
        assert (await s.ok("dispatcher_list_requests")) == {"requests": []}
        signals = await s.ok("dispatcher_list_signals")
        assert [x["name"] for x in signals["signals"]] == ["door.closed"]
        bridge = (await s.ok("dispatcher_list_bridges"))["bridges"]
        assert [b["name"] for b in bridge] == ["mcu"] and bridge == [bridges[0].status()]
        history = await s.ok("dispatcher_get_history")
        assert [e["event_type"] for e in history["events"]] == ["operation_added"] * 2
        assert {o["id"] for o in history["operations"]} == {str(first.id), str(second.id)}
        bare = await s.ok("dispatcher_get_history", resolve_operations=False, limit=1)
        assert len(bare["events"]) == 1 and not bare["operations"]

    run(create_mcp_server(dispatcher, bridges=bridges), body, mode)


def test_history_default_limit_is_1000_and_the_max_10000_is_enforced(
    dispatcher: OperationDispatcher,
) -> None:
    dispatcher.add_operations([op() for _ in range(1001)])

    async def body(s: Session) -> None:
        default = await s.ok("dispatcher_get_history", resolve_operations=False)
        assert len(default["events"]) == 1000  # the original promised this and returned all
        everything = await s.ok("dispatcher_get_history", resolve_operations=False, limit=10000)
        assert len(everything["events"]) == 1001
        message = await s.error("dispatcher_get_history", limit=10001)
        assert "limit" in message and "10000" in message

    run(create_mcp_server(dispatcher), body)


def test_history_window(dispatcher: OperationDispatcher) -> None:
    dispatcher.add_operation(op())

    async def body(s: Session) -> None:
        past = await s.ok("dispatcher_get_history", to_time="2000-01-01T00:00:00Z")
        assert past["events"] == []
        now = await s.ok("dispatcher_get_history", from_time="2000-01-01T00:00:00+02:00")
        assert len(now["events"]) == 1
        message = await s.error("dispatcher_get_history", from_time="2030-01-01T00:00:00Z",
                                to_time="2020-01-01T00:00:00Z")
        assert "to_time must not be before from_time" in message

    run(create_mcp_server(dispatcher), body)


# ------------------------------------------------------------------------ changing it


@pytest.mark.parametrize("mode", MODES)
def test_add_update_cancel_and_runtime(dispatcher: OperationDispatcher, mode: str) -> None:
    async def body(s: Session) -> None:
        added = await s.ok("dispatcher_add_operation", payload={"recipe": "A"}, priority=3,
                           job_id="j1", release_date="2026-01-01T08:00:00+01:00",
                           planned_duration=12.5, release_conditions={"plc.ready": True})
        op_id = added["operation"]["id"]
        assert added["operation"]["state"] == "QUEUED"
        assert added["operation"]["release_date"].startswith("2026-01-01T07:00:00")
        stored = dispatcher.get_operation(op_id)
        assert stored is not None and stored.priority == 3 and stored.job_id == "j1"
        updated = await s.ok("dispatcher_update_operation", operation_id=op_id,
                             updates={"priority": 9, "due_date": "2027-01-01T00:00:00Z"})
        assert updated["operation"]["priority"] == 9
        assert dispatcher.get_operation(op_id).priority == 9  # type: ignore[union-attr]
        paused = await s.ok("dispatcher_pause_runtime")
        assert paused["message"] == "operation dispatcher paused" and paused["state"]["is_paused"]
        again = await s.ok("dispatcher_pause_runtime")
        assert again["message"] == "operation dispatcher is already paused"
        resumed = await s.ok("dispatcher_resume_runtime")
        assert resumed["message"] == "operation dispatcher resumed"
        assert not dispatcher.is_paused
        assert (await s.ok("dispatcher_resume_runtime"))["message"] == (
            "operation dispatcher is not paused"
        )
        cancelled = await s.ok("dispatcher_cancel_operation", operation_id=op_id)
        assert cancelled["operation"]["state"] == "COMPLETED"
        assert cancelled["operation"]["outcome"] == "CANCELLED"
        assert cancelled["operation"]["termination_reason"] == "USER_REQUEST"
        message = await s.error("dispatcher_cancel_operation", operation_id=op_id)
        assert "already finished" in message
        message = await s.error("dispatcher_update_operation", operation_id=op_id,
                                updates={"priority": 1})
        assert "finished" in message

    run(create_mcp_server(dispatcher), body, mode)


def test_pause_and_resume_the_running_operation(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher()
    recorder = EventRecorder(dispatcher)
    dispatcher.start()
    running = dispatcher.add_operation(op())
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=running.id)
    queued = dispatcher.add_operation(op())

    async def body(s: Session) -> None:
        paused = await s.ok("dispatcher_pause_operation", operation_id=str(running.id))
        assert paused["operation"]["state"] == "PAUSED" and paused["is_current_operation"]
        message = await s.error("dispatcher_pause_operation", operation_id=str(running.id))
        assert "PAUSED" in message and "RUNNING" in message  # names the state it needs
        resumed = await s.ok("dispatcher_resume_operation", operation_id=str(running.id))
        assert resumed["operation"]["state"] == "RUNNING"
        message = await s.error("dispatcher_resume_operation", operation_id=str(queued.id))
        assert str(queued.id) in message or "current" in message
        listed = await s.ok("dispatcher_list_operations")
        assert [x["is_current_operation"] for x in listed["operations"]] == [True, False]
        assert (await s.ok("dispatcher_get_state"))["current_operation"]["id"] == str(running.id)

    run(create_mcp_server(dispatcher), body)
    assert dispatcher.get_operation(running.id).state is ExecutionState.RUNNING  # type: ignore[union-attr]


def test_progress_complete_and_fail_by_hand(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher()
    recorder = EventRecorder(dispatcher)
    dispatcher.start()
    first = dispatcher.add_operation(op())
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=first.id)
    second = dispatcher.add_operation(op())

    async def body(s: Session) -> None:
        half = await s.ok("dispatcher_report_progress", operation_id=str(first.id),
                          fraction=0.5, message="layer 3 of 6")
        assert half["operation"]["progress"]["fraction"] == 0.5
        assert half["operation"]["progress"]["message"] == "layer 3 of 6"
        for bad in ({"fraction": 1.5}, {"fraction": "0.5"}, {"fraction": True},
                    {"message": "x" * 201}, {}):
            message = await s.error("dispatcher_report_progress", operation_id=str(first.id), **bad)
            assert "fraction" in message or "message" in message, message
        message = await s.error("dispatcher_complete_operation", operation_id=str(second.id))
        assert "is not running (it is QUEUED)" in message
        done = await s.ok("dispatcher_complete_operation", operation_id=str(first.id),
                          meta_data={"note": "finished by hand"})
        assert done["operation"]["outcome"] == "SUCCESS"
        message = await s.error("dispatcher_fail_operation", operation_id=str(first.id))
        assert "is not running (it is COMPLETED)" in message
        message = await s.error("dispatcher_fail_operation", operation_id=str(second.id),
                                termination_reason="BORED")
        assert "termination_reason" in message

    run(create_mcp_server(dispatcher), body)
    (completed,) = recorder.wait_for(EventType.OPERATION_COMPLETED, operation_id=first.id)
    assert completed.meta_data == {"note": "finished by hand", "reported_by": "mcp",
                                   "channel": "mcp"}
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=second.id)

    async def fail(s: Session) -> None:
        failed = await s.ok("dispatcher_fail_operation", operation_id=str(second.id),
                            termination_reason="EXTERNAL_ERROR")
        assert failed["operation"]["outcome"] == "FAILURE"
        assert failed["operation"]["termination_reason"] == "EXTERNAL_ERROR"

    run(create_mcp_server(dispatcher), fail, "legacy")


def test_an_operation_an_executor_runs_is_finished_by_hand_only_with_force(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher()
    recorder = EventRecorder(dispatcher)
    dispatcher.attach_executor("plc")
    dispatcher.signals.set("plc.online", True, max_age_seconds=60)
    dispatcher.start()
    running = dispatcher.add_operation(op())
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=running.id)

    async def body(s: Session) -> None:
        message = await s.error("dispatcher_complete_operation", operation_id=str(running.id))
        assert "run by executor bridge 'plc'" in message and "force=true" in message
        assert dispatcher.get_operation(running.id).state is ExecutionState.RUNNING  # type: ignore[union-attr]
        forced = await s.ok("dispatcher_complete_operation", operation_id=str(running.id),
                            force=True)
        assert forced["operation"]["outcome"] == "SUCCESS"

    run(create_mcp_server(dispatcher), body)
    (completed,) = recorder.wait_for(EventType.OPERATION_COMPLETED, operation_id=running.id)
    assert completed.meta_data["forced_by_operator"] is True
    assert completed.meta_data["reported_by"] == "mcp"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("dispatcher_report_progress", {"fraction": 0.1}),
        ("dispatcher_complete_operation", {}),
        ("dispatcher_fail_operation", {}),
        ("dispatcher_get_operation", {}),
        ("dispatcher_explain_operation", {}),
        ("dispatcher_update_operation", {"updates": {"priority": 1}}),
        ("dispatcher_cancel_operation", {}),
        ("dispatcher_pause_operation", {}),
        ("dispatcher_resume_operation", {}),
    ],
)
def test_unknown_and_invalid_operation_ids(
    dispatcher: OperationDispatcher, mode: str, tool: str, arguments: dict[str, Any]
) -> None:
    async def body(s: Session) -> None:
        message = await s.error(tool, operation_id=UNKNOWN, **arguments)
        assert f"operation {UNKNOWN} not found" in message
        assert "dispatcher_list_operations" in message  # what to do next
        message = await s.error(tool, operation_id="job-17", **arguments)
        assert "operation_id" in message and "UUID" in message

    run(create_mcp_server(dispatcher), body, mode)


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ({"operation_id": "OP", "updates": {"state": "COMPLETED"}},
         "changes only through lifecycle transitions"),
        ({"operation_id": "OP", "updates": {"resource_id": "other"}}, "unsupported"),
        ({"operation_id": "OP", "updates": {"priority": "high"}}, "priority"),
        ({"operation_id": "OP", "updates": {"release_date": "tomorrow"}}, "release_date"),
        ({"operation_id": "OP", "updates": {"due_date": "2030-01-01T00:00:00"}}, "offset"),
        ({"operation_id": "OP", "updates": {"dependencies": [{"x": 1}]}}, "depend"),
    ],
)
def test_bad_updates_are_refused_and_change_nothing(
    dispatcher: OperationDispatcher, arguments: dict[str, Any], fragment: str
) -> None:
    queued = dispatcher.add_operation(op(priority=1))
    arguments = {**arguments, "operation_id": str(queued.id)}

    async def body(s: Session) -> None:
        message = await s.error("dispatcher_update_operation", **arguments)
        assert fragment in message

    run(create_mcp_server(dispatcher), body)
    assert dispatcher.get_operation(queued.id) == queued


# ------------------------------------------------------------------------ argument attacks

BIG = 10**30
# NaN and infinities cannot be sent by this client (its JSON turns them into null): they are
# sent as raw JSON-RPC over HTTP in test_mcp_transports.py.
ATTACKS = [
    ("dispatcher_get_history", {"resolve_operations": "true"}, "resolve_operations"),
    ("dispatcher_get_history", {"resolve_operations": 1}, "resolve_operations"),
    ("dispatcher_get_history", {"limit": "5"}, "limit"),
    ("dispatcher_get_history", {"limit": 5.0}, "limit"),
    ("dispatcher_get_history", {"limit": True}, "limit"),
    ("dispatcher_get_history", {"limit": 0}, "limit"),
    ("dispatcher_get_history", {"limit": -1}, "limit"),
    ("dispatcher_get_history", {"limit": BIG}, "limit"),
    ("dispatcher_get_history", {"from_time": "yesterday"}, "from_time"),
    ("dispatcher_get_history", {"from_time": "2026-01-01T00:00:00"}, "offset"),
    ("dispatcher_get_history", {"to_time": 1700000000}, "to_time"),
    ("dispatcher_list_operations", {"limit": 1001}, "limit"),
    ("dispatcher_list_operations", {"state": "DONE"}, "state"),
    ("dispatcher_add_operation", {}, "payload"),
    ("dispatcher_add_operation", {"payload": "x"}, "payload"),
    ("dispatcher_add_operation", {"payload": [1, 2]}, "payload"),
    ("dispatcher_add_operation", {"payload": {}, "priority": "1"}, "priority"),
    ("dispatcher_add_operation", {"payload": {}, "priority": 1e300}, "priority"),
    ("dispatcher_add_operation", {"payload": {}, "priority": 2**70}, "priority"),
    ("dispatcher_add_operation", {"payload": {}, "priority": True}, "priority"),
    ("dispatcher_add_operation", {"payload": {}, "planned_duration": -1}, "planned_duration"),
    ("dispatcher_add_operation", {"payload": {}, "timeout_seconds": 1e10}, "timeout_seconds"),
    ("dispatcher_add_operation", {"payload": {}, "timeout_seconds": "5"}, "timeout_seconds"),
    ("dispatcher_add_operation", {"payload": {}, "release_date": "2026-01-01 08:00"}, "offset"),
    ("dispatcher_add_operation", {"payload": {}, "release_date": "9999-12-31T00:00:00Z"},
     "release_date"),
    ("dispatcher_add_operation", {"payload": {}, "release_date": "2030-01-01T00:00:00Z",
                                  "due_date": "2029-01-01T00:00:00Z"}, "due_date"),
    ("dispatcher_add_operation", {"payload": {}, "release_conditions": ["plc.ready"]},
     "release_conditions"),
    ("dispatcher_add_operation", {"payload": {}, "release_conditions": {"": True}},
     "release_conditions"),
    ("dispatcher_add_operation", {"payload": {}, "dependencies": [1]}, "dependencies"),
    ("dispatcher_add_operation", {"payload": {}, "dependencies": [{"depends_on_operation_id": UNKNOWN}]},
     "dependency_type"),
    ("dispatcher_add_operation", {"payload": {}, "dependencies": [
        {"depends_on_operation_id": UNKNOWN, "dependency_type": "FINISH_TO_START"}]}, UNKNOWN),
    ("dispatcher_add_operation", {"payload": {}, "job_id": ""}, "job_id"),
    ("dispatcher_add_operation", {"payload": {}, "job_id": 17}, "job_id"),
    ("dispatcher_cancel_operation", {"operation_id": UNKNOWN, "termination_reason": "BORED"},
     "termination_reason"),
    ("dispatcher_approve_request", {"request_id": UNKNOWN}, "reasoning"),
    ("dispatcher_approve_request", {"request_id": UNKNOWN, "reasoning": ""}, "reasoning"),
    ("dispatcher_approve_request", {"request_id": UNKNOWN, "reasoning": "x" * 2001}, "reasoning"),
    ("dispatcher_deny_request", {"request_id": UNKNOWN, "reasoning": True}, "reasoning"),
    ("dispatcher_deny_request", {"request_id": "x" * 100, "reasoning": "no"}, "request_id"),
    ("dispatcher_get_operation", {"operation_id": ["a"]}, "operation_id"),
    ("dispatcher_get_operation", {"operation_id": "x" * 10_000}, "operation_id"),
]


@pytest.mark.parametrize(("tool", "arguments", "fragment"), ATTACKS,
                         ids=[f"{t}-{i}" for i, (t, _a, _f) in enumerate(ATTACKS)])
def test_argument_attacks_are_refused_and_change_nothing(
    dispatcher: OperationDispatcher, tool: str, arguments: dict[str, Any], fragment: str
) -> None:
    before = dispatcher.add_operation(op())

    async def body(s: Session) -> None:
        message = await s.error(tool, **arguments)
        assert fragment in message, message
        assert message.startswith(f"Error executing tool {tool}: ")  # a ToolError: told, not hidden

    run(create_mcp_server(dispatcher), body, "legacy")  # as JSON-RPC, as a real client sends it
    assert dispatcher.get_schedule() == [before]
    assert dispatcher.get_state().is_paused is False


def test_deeply_nested_payload_is_refused(dispatcher: OperationDispatcher) -> None:
    payload: dict[str, Any] = {}
    for _ in range(80):
        payload = {"a": payload}

    async def body(s: Session) -> None:
        message = await s.error("dispatcher_add_operation", payload=payload)
        assert "payload" in message

    run(create_mcp_server(dispatcher), body, "legacy")  # over JSON, as a real client sends it
    assert dispatcher.get_schedule() == []


def test_a_request_the_business_logic_denies_is_a_tool_error(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    """Start approved, cancel and pause denied: the agent is told, and nothing changes."""
    def callback(event: Any) -> bool:
        return event.event_type is EventType.OPERATION_START_REQUESTED

    dispatcher = make_dispatcher(on_request_callback=callback)
    recorder = EventRecorder(dispatcher)
    dispatcher.start()
    running = dispatcher.add_operation(op())
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=running.id)

    async def body(s: Session) -> None:
        message = await s.error("dispatcher_cancel_operation", operation_id=str(running.id))
        assert "was denied" in message and "dispatcher_get_history" in message
        message = await s.error("dispatcher_pause_operation", operation_id=str(running.id))
        assert "pause of operation" in message and "denied" in message

    run(create_mcp_server(dispatcher), body, "legacy")
    assert dispatcher.get_operation(running.id).state is ExecutionState.RUNNING  # type: ignore[union-attr]
    recorder.wait_for(EventType.OPERATION_CANCEL_DENIED, operation_id=running.id)


# ------------------------------------------------------------------------ an agent as approver


def test_an_agent_approves_a_start_the_dispatcher_waits_on(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    callback = PendingCallback()
    dispatcher = make_dispatcher(on_request_callback=callback,
                                 request_event_timeout_seconds=60.0)
    recorder = EventRecorder(dispatcher)
    dispatcher.start()
    added = dispatcher.add_operation(op(job_id="job-17"))
    (requested,) = callback.wait_for()

    async def body(s: Session) -> None:
        pending = (await s.ok("dispatcher_list_requests"))["requests"]
        assert [(r["request_id"], r["operation_id"], r["event_type"]) for r in pending] == [
            (str(requested.id), str(added.id), "operation_start_requested")
        ]
        assert (await s.read("dispatcher://requests"))["requests"] == pending
        why = await s.ok("dispatcher_explain_operation", operation_id=str(added.id))
        assert "awaiting_approval" in why["blocked_by"]
        decision = await s.ok("dispatcher_approve_request", request_id=str(requested.id),
                              reasoning="tooling checked, operator on site")
        assert decision == {
            "message": "request approved", "request_id": str(requested.id), "accepted": True,
            "reasoning": "tooling checked, operator on site", "decided_by": "mcp",
        }
        message = await s.error("dispatcher_approve_request", request_id=str(requested.id),
                                reasoning="again")
        assert "already" in message and "no longer be answered" in message

    run(create_mcp_server(dispatcher), body)
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=added.id)
    assert dispatcher.get_operation(added.id).state is ExecutionState.RUNNING  # type: ignore[union-attr]
    (recorded,) = [e for e in dispatcher.list_events(added.id)
                   if e.event_type is EventType.OPERATION_START_REQUESTED]
    assert recorded.meta_data["request_decision"] == {
        "accepted": True, "reasoning": "tooling checked, operator on site",
        "data": {"approved_by": "mcp", "channel": "mcp"},
    }


def test_an_agent_denies_a_start_with_its_reasoning(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    callback = PendingCallback()
    dispatcher = make_dispatcher(on_request_callback=callback,
                                 request_event_timeout_seconds=60.0,
                                 start_request_retry_cooldown_seconds=600.0)
    recorder = EventRecorder(dispatcher)
    dispatcher.start()
    added = dispatcher.add_operation(op())
    (requested,) = callback.wait_for()

    async def body(s: Session) -> None:
        decision = await s.ok("dispatcher_deny_request", request_id=str(requested.id),
                              reasoning="guard door reported open")
        assert decision["accepted"] is False and decision["message"] == "request denied"
        message = await s.error("dispatcher_deny_request", request_id=UNKNOWN, reasoning="x")
        assert f"request {UNKNOWN} not found" in message and "dispatcher_list_requests" in message

    run(create_mcp_server(dispatcher), body)
    denied = recorder.wait_for(EventType.OPERATION_START_DENIED, operation_id=added.id)[0]
    assert denied.meta_data["reasoning"] == "guard door reported open"
    assert denied.meta_data["decision_data"] == {"denied_by": "mcp", "channel": "mcp"}
    assert dispatcher.get_operation(added.id).state is ExecutionState.QUEUED  # type: ignore[union-attr]


# ------------------------------------------------------------------------ resources, prompts


@pytest.mark.parametrize("mode", MODES)
def test_resources(dispatcher: OperationDispatcher, mode: str) -> None:
    first = dispatcher.add_operation(op(release_conditions={"plc.ready": True}))
    dispatcher.add_operation(op())

    async def body(s: Session) -> None:
        assert (await s.read("dispatcher://state")) == dispatcher.get_state().to_dict() | {
            "uptime_seconds": None
        }
        queue = await s.read("dispatcher://queue")
        assert len(queue["operations"]) == 2 and queue["operations"][0]["id"] == str(first.id)
        assert (queue["total"], queue["truncated"]) == (2, False)
        history = await s.read("dispatcher://history/1")
        assert len(history["events"]) == 1 and history["operations"]
        events = await s.read("dispatcher://events/5")
        assert [e["event_type"] for e in events["events"]] == ["operation_added"] * 2
        one = await s.read(f"dispatcher://operations/session/{first.id}")
        assert one == first.to_dict()
        own = await s.read(f"dispatcher://operations/session/{first.id}/events")
        assert own["operation_id"] == str(first.id) and len(own["events"]) == 1
        why = await s.read(f"dispatcher://operations/{first.id}/explain")
        assert same_explanation(why, dispatcher.explain(first.id))

    run(create_mcp_server(dispatcher), body, mode)


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("dispatcher://history/0", "limit must be a whole number from 1 to 10000"),
        ("dispatcher://history/10001", "limit must be a whole number"),
        ("dispatcher://events/abc", "limit must be a whole number"),
        ("dispatcher://events/99999999999999999999999", "limit must be a whole number"),
        ("dispatcher://operations/session/nope", "invalid operation id"),
        (f"dispatcher://operations/session/{UNKNOWN}", f"operation {UNKNOWN} not found"),
        (f"dispatcher://operations/session/{UNKNOWN}/events", f"operation {UNKNOWN} not found"),
        (f"dispatcher://operations/{UNKNOWN}/explain", f"operation {UNKNOWN} not found"),
        ("dispatcher://nothing", "nothing"),
    ],
)
def test_resource_errors(dispatcher: OperationDispatcher, uri: str, fragment: str) -> None:
    from mcp import MCPError

    async def body(s: Session) -> None:
        with pytest.raises(MCPError) as raised:
            await s.client.read_resource(uri)
        assert fragment in raised.value.error.message

    run(create_mcp_server(dispatcher), body, "legacy")


@pytest.mark.parametrize("mode", MODES)
def test_prompts(make_dispatcher: Callable[..., OperationDispatcher], mode: str) -> None:
    callback = PendingCallback()
    dispatcher = make_dispatcher(on_request_callback=callback, request_event_timeout_seconds=60.0)
    dispatcher.start()
    dispatcher.add_operation(op())
    dispatcher.add_operation(op())
    callback.wait_for()

    async def body(s: Session) -> None:
        intro = await s.client.get_prompt("dispatcher_introduction_prompt")
        (message,) = intro.messages
        assert message.role == "user"
        text = message.content.text
        assert dispatcher.resource_id in text and "dispatcher_explain_operation" in text
        triage = (await s.client.get_prompt("dispatcher_triage_prompt")).messages[0].content.text
        assert "running, not paused, 2 operation(s) queued, 1 request(s) waiting" in triage
        for tool in ("dispatcher_get_state", "dispatcher_explain_operation",
                     "dispatcher_list_requests", "dispatcher_list_bridges"):
            assert tool in triage

    run(create_mcp_server(dispatcher), body, mode)


@pytest.mark.slow  # a fresh interpreter importing the SDK: seconds on a loaded machine
def test_creating_a_server_leaves_the_programs_logging_alone(tmp_path: Any) -> None:
    """The SDK's constructor would set up root logging (INFO, to stderr) in a library user's
    program; create_mcp_server keeps the root logger as it was."""
    import json
    import subprocess
    import sys

    code = (
        "import json, logging\n"
        "from operation_dispatcher import OperationDispatcher\n"
        "from operation_dispatcher.mcp import create_mcp_server\n"
        "create_mcp_server(OperationDispatcher('r'))\n"
        "root = logging.getLogger()\n"
        "print(json.dumps([len(root.handlers), root.level]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [0, 30]  # no handler, WARNING: as Python starts

"""The tools: the original's four under their names, and what an agent needs besides.

Every tool is a plain function called on an AnyIO worker thread, so it uses the dispatcher's
thread-safe public API directly. Each first checks the caller's scope (:mod:`.access`); every
expected failure is a ToolError whose text says what to do (:func:`.arguments.tool_errors`).
What a tool returns is bounded: lists take a ``limit`` with a maximum and say when they cut.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import Field, StrictBool

from .._checks import MAX_PROGRESS_MESSAGE
from ..models import ExecutionState, Operation, TerminationReason
from . import results
from .access import require
from .arguments import (
    ListableState,
    OperationId,
    Priority,
    Reasoning,
    RequestId,
    Seconds,
    Timestamp,
    aware,
    timestamp,
    tool_errors,
)

if TYPE_CHECKING:
    from ..dispatcher import OperationDispatcher

#: ``dispatcher_get_history``: events returned when no limit is given, and the most allowed.
DEFAULT_HISTORY_LIMIT = 1000
MAX_HISTORY_LIMIT = 10_000
#: The most items one list tool returns (operations, signals).
MAX_LISTED = 1000
_ACTIVE = (ExecutionState.RUNNING, ExecutionState.PAUSED)
_DATETIME_FIELDS = ("release_date", "due_date")

HistoryLimit = Annotated[int, Field(ge=1, le=MAX_HISTORY_LIMIT, strict=True, description=(
    f"the most recent N events (1..{MAX_HISTORY_LIMIT}, default {DEFAULT_HISTORY_LIMIT})"))]
ListLimit = Annotated[int, Field(ge=1, le=MAX_LISTED, strict=True,
                                 description=f"at most this many (1..{MAX_LISTED})")]
Payload = Annotated[dict[str, Any], Field(description="what to do; any JSON object")]
MetaData = Annotated[dict[str, Any], Field(description="recorded in the event's meta_data")]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False, strict=True,
                                  description="how much is done, 0..1")]

_READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_CHANGE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
_STOP = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)


class DispatcherTools:
    """The tools of one dispatcher (and its bridges); :meth:`register` adds them to a server."""

    def __init__(
        self, dispatcher: OperationDispatcher, bridges: Mapping[str, Any] | None = None
    ) -> None:
        self._dispatcher = dispatcher
        self._bridges = dict(bridges or {})

    def register(self, server: MCPServer) -> None:
        read: list[Callable[..., Any]] = [
            self.dispatcher_get_state, self.dispatcher_get_history,
            self.dispatcher_list_operations, self.dispatcher_get_operation,
            self.dispatcher_explain_operation, self.dispatcher_list_requests,
            self.dispatcher_list_signals, self.dispatcher_list_bridges,
        ]
        change: list[Callable[..., Any]] = [
            self.dispatcher_add_operation, self.dispatcher_update_operation,
            self.dispatcher_pause_operation, self.dispatcher_resume_operation,
            self.dispatcher_report_progress, self.dispatcher_complete_operation,
            self.dispatcher_approve_request, self.dispatcher_pause_runtime,
            self.dispatcher_resume_runtime,
        ]
        stop: list[Callable[..., Any]] = [
            self.dispatcher_cancel_operation, self.dispatcher_fail_operation,
            self.dispatcher_deny_request,
        ]
        for tools, hints in ((read, _READ), (change, _CHANGE), (stop, _STOP)):
            for tool in tools:
                server.add_tool(tool, name=tool.__name__, annotations=hints)

    # ------------------------------------------------------------------ helpers

    def _state(self) -> dict[str, Any]:
        return self._dispatcher.get_state().to_dict()

    def _current_id(self) -> UUID | None:
        current = self._dispatcher.current_operation
        return None if current is None else current.id

    def _status(self, op: Operation, current: UUID | None) -> results.OperationStatus:
        return results.OperationStatus(operation=op.to_dict(), is_current_operation=op.id == current)

    def _find(self, operation_id: str) -> Operation:
        op = self._dispatcher.get_operation(operation_id)
        if op is None:
            raise ToolError(
                f"operation {operation_id} not found: dispatcher_list_operations lists the "
                "queued and current ones (finished ones are forgotten after a while)"
            )
        return op

    # ------------------------------------------------------------------ the original's four

    def dispatcher_get_state(self, ctx: Context) -> results.DispatcherState:
        """The dispatcher's state: running, paused, queue size, the current operation."""
        require(ctx, "dispatcher_get_state")
        return results.DispatcherState(**self._state())

    def dispatcher_pause_runtime(self, ctx: Context) -> results.RuntimeChange:
        """Stop starting new operations (the current one runs on). Pausing twice is no error."""
        require(ctx, "dispatcher_pause_runtime")
        with tool_errors():
            changed = self._dispatcher.pause_dispatcher_runtime()
        message = "operation dispatcher paused" if changed else "operation dispatcher is already paused"
        return results.RuntimeChange(message=message, state=results.DispatcherState(**self._state()))

    def dispatcher_resume_runtime(self, ctx: Context) -> results.RuntimeChange:
        """Start operations again (also clears retry counts and cooldowns after denials)."""
        require(ctx, "dispatcher_resume_runtime")
        with tool_errors():
            changed = self._dispatcher.resume_dispatcher_runtime()
        message = "operation dispatcher resumed" if changed else "operation dispatcher is not paused"
        return results.RuntimeChange(message=message, state=results.DispatcherState(**self._state()))

    def dispatcher_get_history(
        self,
        ctx: Context,
        from_time: Timestamp | None = None,
        to_time: Timestamp | None = None,
        resolve_operations: StrictBool = True,
        limit: HistoryLimit = DEFAULT_HISTORY_LIMIT,
    ) -> results.History:
        """Events between from_time and to_time (inclusive), the most recent `limit` of them
        (default 1000, max 10000), with the operations they name unless resolve_operations is
        false."""
        require(ctx, "dispatcher_get_history")
        start, end = timestamp(from_time, "from_time"), timestamp(to_time, "to_time")
        if start is not None and end is not None and end < start:
            raise ToolError("to_time must not be before from_time")
        with tool_errors():
            history = self._dispatcher.get_history(start, end, resolve_operations, limit)
        return results.History(**history.to_dict())

    # ------------------------------------------------------------------ operations

    def dispatcher_list_operations(
        self, ctx: Context, state: ListableState | None = None, limit: ListLimit = 100,
    ) -> results.OperationList:
        """The current operation (RUNNING or PAUSED) first, then the queued ones in dispatch
        order; only those in `state` if given; at most `limit` (total says how many matched)."""
        require(ctx, "dispatcher_list_operations")
        schedule = self._dispatcher.get_schedule()
        current = self._dispatcher.current_operation  # second: one started meanwhile is listed once
        ops: list[Operation] = []
        current_id = None
        if current is not None and current.state in _ACTIVE:
            ops.append(current)
            current_id = current.id
        ops.extend(op for op in schedule if op.id != current_id and op.state is ExecutionState.QUEUED)
        if state is not None:
            ops = [op for op in ops if op.state.value == state]
        return results.OperationList(
            operations=[self._status(op, current_id) for op in ops[:limit]],
            total=len(ops), truncated=len(ops) > limit,
        )

    def dispatcher_get_operation(self, ctx: Context, operation_id: OperationId) -> results.OperationStatus:
        """One operation (queued, current or recently finished) and whether it is the current one."""
        require(ctx, "dispatcher_get_operation")
        with tool_errors():
            op = self._find(operation_id)
        return self._status(op, self._current_id())

    def dispatcher_explain_operation(self, ctx: Context, operation_id: OperationId) -> results.Explanation:
        """Why an operation is not running: each blocker (release condition, dependency, release
        date, cooldown, approval, executor offline, dispatcher paused or stopped, resource busy)
        with a sentence to act on. An empty blocked_by means nothing holds it back."""
        require(ctx, "dispatcher_explain_operation")
        with tool_errors():
            return results.Explanation(**self._dispatcher.explain(operation_id))

    def dispatcher_add_operation(
        self,
        ctx: Context,
        payload: Payload,
        job_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None,
        priority: Priority = 0,
        release_date: Timestamp | None = None,
        due_date: Timestamp | None = None,
        planned_duration: Seconds | None = None,
        timeout_seconds: Seconds | None = None,
        release_conditions: Annotated[dict[str, Any], Field(description=(
            "signal name -> the value it must have (and be fresh) before the start"))] | None = None,
        dependencies: Annotated[list[dict[str, Any]], Field(max_length=1000, description=(
            "[{depends_on_operation_id, dependency_type}]: operations that must finish first"
        ))] | None = None,
    ) -> results.OperationStatus:
        """Queue one operation for this dispatcher's resource; returns it as stored."""
        require(ctx, "dispatcher_add_operation")
        fields = aware({"release_date": release_date, "due_date": due_date}, _DATETIME_FIELDS)
        depends: Any = dependencies or []  # dicts: the core reads (and checks) them
        with tool_errors():
            op = Operation(
                resource_id=self._dispatcher.resource_id, payload=payload, job_id=job_id,
                priority=priority, planned_duration=planned_duration,
                timeout_seconds=timeout_seconds, release_conditions=release_conditions or {},
                dependencies=depends, **fields,
            )
            stored = self._dispatcher.add_operation(op)
        return self._status(stored, self._current_id())

    def dispatcher_update_operation(
        self,
        ctx: Context,
        operation_id: OperationId,
        updates: Annotated[dict[str, Any], Field(description=(
            "field -> new value, for payload, priority, release_date, planned_duration, "
            "due_date, dependencies, release_conditions, timeout_seconds"))],
    ) -> results.OperationStatus:
        """Change fields of a queued (or paused) operation; a running or finished one is refused."""
        require(ctx, "dispatcher_update_operation")
        with tool_errors():
            # None only for an unknown id: _find then raises the tool's "not found"
            op = (self._dispatcher.update_operation(operation_id, aware(updates, _DATETIME_FIELDS))
                  or self._find(operation_id))
        return self._status(op, self._current_id())

    def dispatcher_cancel_operation(
        self, ctx: Context, operation_id: OperationId,
        termination_reason: TerminationReason = TerminationReason.USER_REQUEST,
    ) -> results.OperationStatus:
        """Cancel a queued or the current operation, if the business logic agrees (it may ask an
        operator first). Stopping the real work is the machine's business."""
        require(ctx, "dispatcher_cancel_operation")
        with tool_errors():
            op = self._find(operation_id)
            if op.is_finished:
                raise ToolError(f"operation {operation_id} already finished ({op.outcome.value})")
            cancelled = self._dispatcher.cancel_operation(operation_id, termination_reason)
        if cancelled is None:
            raise ToolError(
                f"cancelling operation {operation_id} was denied (or it finished meanwhile, or a "
                "recent denial is cooling down): dispatcher_get_history shows the answer"
            )
        return self._status(cancelled, self._current_id())

    def dispatcher_pause_operation(self, ctx: Context, operation_id: OperationId) -> results.OperationStatus:
        """Pause the RUNNING current operation, if the business logic agrees."""
        require(ctx, "dispatcher_pause_operation")
        return self._pause_or_resume(operation_id, pause=True)

    def dispatcher_resume_operation(self, ctx: Context, operation_id: OperationId) -> results.OperationStatus:
        """Resume the PAUSED current operation, if the business logic agrees."""
        require(ctx, "dispatcher_resume_operation")
        return self._pause_or_resume(operation_id, pause=False)

    def _pause_or_resume(self, operation_id: str, *, pause: bool) -> results.OperationStatus:
        verb = "pause" if pause else "resume"
        action = self._dispatcher.pause_operation if pause else self._dispatcher.resume_operation
        with tool_errors():
            self._find(operation_id)
            done = action(operation_id)
            if not done:
                raise ToolError(
                    f"{verb} of operation {operation_id} was denied (or it changed meanwhile): "
                    "dispatcher_get_history shows the answer"
                )
            return self._status(self._find(operation_id), self._current_id())

    # ------------------------------------------------------------------ finishing by hand

    def dispatcher_report_progress(
        self,
        ctx: Context,
        operation_id: OperationId,
        fraction: Fraction | None = None,
        message: Annotated[str, Field(max_length=MAX_PROGRESS_MESSAGE)] | None = None,
    ) -> results.OperationStatus:
        """Say how far the current (RUNNING or PAUSED) operation has got: a fraction 0..1, a
        short message, or both; each report replaces the last."""
        require(ctx, "dispatcher_report_progress")
        with tool_errors():
            self._find(operation_id)
            op = self._dispatcher.report_progress(operation_id, fraction, message)
        return self._status(op, self._current_id())

    def dispatcher_complete_operation(
        self,
        ctx: Context,
        operation_id: OperationId,
        force: StrictBool = False,
        meta_data: MetaData | None = None,
    ) -> results.OperationStatus:
        """Report the current operation done (a job finished by hand). One that an executor
        bridge runs is the bridge's to finish: refused unless force is true (the machine may
        still be working; the event then records that it was forced)."""
        caller = require(ctx, "dispatcher_complete_operation")
        return self._finish(operation_id, None, force, meta_data, caller.name)

    def dispatcher_fail_operation(
        self,
        ctx: Context,
        operation_id: OperationId,
        termination_reason: TerminationReason = TerminationReason.INTERNAL_ERROR,
        force: StrictBool = False,
        meta_data: MetaData | None = None,
    ) -> results.OperationStatus:
        """Report the current operation failed (a job that went wrong by hand); force as for
        dispatcher_complete_operation."""
        caller = require(ctx, "dispatcher_fail_operation")
        return self._finish(operation_id, termination_reason, force, meta_data, caller.name)

    def _finish(
        self, operation_id: str, reason: TerminationReason | None, force: bool,
        meta_data: dict[str, Any] | None, who: str,
    ) -> results.OperationStatus:
        meta = {**(meta_data or {}), "reported_by": who, "channel": "mcp"}
        with tool_errors():
            op = self._find(operation_id)
            if op.state not in _ACTIVE:
                raise ToolError(
                    f"operation {operation_id} is not running (it is {op.state.value}): only "
                    "the current operation can be completed or failed"
                )
            if reason is None:
                done = self._dispatcher.complete_operation(operation_id, meta, force=force)
            else:
                done = self._dispatcher.fail_operation(operation_id, reason, meta, force=force)
        return self._status(done, self._current_id())

    # ------------------------------------------------------------------ approvals

    def dispatcher_list_requests(self, ctx: Context) -> results.RequestList:
        """The approval requests (start, cancel, pause, resume) waiting for an answer."""
        require(ctx, "dispatcher_list_requests")
        return results.RequestList(
            requests=[request.to_dict() for request in self._dispatcher.pending_requests()]
        )

    def dispatcher_approve_request(
        self, ctx: Context, request_id: RequestId, reasoning: Reasoning
    ) -> results.Decision:
        """Approve a pending request, saying why; the reasoning and this token's name are
        recorded in the request's event."""
        caller = require(ctx, "dispatcher_approve_request")
        return self._decide(request_id, True, reasoning, caller.name)

    def dispatcher_deny_request(
        self, ctx: Context, request_id: RequestId, reasoning: Reasoning
    ) -> results.Decision:
        """Deny a pending request, saying why; the reasoning and this token's name are recorded
        in the request's event (a denied start is retried after a cooldown)."""
        caller = require(ctx, "dispatcher_deny_request")
        return self._decide(request_id, False, reasoning, caller.name)

    def _decide(self, request_id: str, accepted: bool, reasoning: str, who: str) -> results.Decision:
        key = "approved_by" if accepted else "denied_by"
        with tool_errors():
            self._dispatcher.decide(
                request_id, accepted, reasoning=reasoning, data={key: who, "channel": "mcp"}
            )
        return results.Decision(
            message="request approved" if accepted else "request denied",
            request_id=request_id, accepted=accepted, reasoning=reasoning, decided_by=who,
        )

    # ------------------------------------------------------------------ the cell

    def dispatcher_list_signals(self, ctx: Context, limit: ListLimit = 200) -> results.SignalList:
        """The live signals that release operations, by name: value, freshness, who writes it."""
        require(ctx, "dispatcher_list_signals")
        signals = self._dispatcher.signals.snapshot()
        return results.SignalList(
            signals=[signal.to_dict() for signal in signals[:limit]],
            total=len(signals), truncated=len(signals) > limit,
        )

    def dispatcher_list_bridges(self, ctx: Context) -> results.BridgeList:
        """The hardware bridges (PLC, serial line): health and counters."""
        require(ctx, "dispatcher_list_bridges")
        return results.BridgeList(bridges=[bridge.status() for bridge in self._bridges.values()])


__all__ = ["DEFAULT_HISTORY_LIMIT", "MAX_HISTORY_LIMIT", "MAX_LISTED", "DispatcherTools"]

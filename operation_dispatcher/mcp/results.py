"""The structured results of the tools: each model is a tool's output schema.

The core's ``to_dict()`` forms are the content (the REST API's JSON); the models name the keys an
agent can rely on and allow more (``extra="allow"``), so a field the core gains shows up at once.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

JsonObject = dict[str, Any]


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class DispatcherState(Open):
    resource_id: str
    is_running: bool
    is_paused: bool
    queue_size: int
    current_operation: JsonObject | None = Field(description="the RUNNING or PAUSED operation")
    running_since: str | None
    uptime_seconds: float | None


class RuntimeChange(Open):
    message: str = Field(description="what happened (a no-op says so, it is not an error)")
    state: DispatcherState


class OperationStatus(Open):
    operation: JsonObject
    is_current_operation: bool


class OperationList(Open):
    operations: list[OperationStatus] = Field(
        description="the current operation first, then the queued ones in dispatch order"
    )
    total: int = Field(description="how many matched before the limit")
    truncated: bool


class Explanation(Open):
    operation_id: str
    state: str
    blocked_by: list[str] = Field(description="empty: nothing holds it back")
    details: list[JsonObject] = Field(description=(
        "one per blocked_by entry, same order: blocker, kind, a sentence to act on (text), "
        "and the facts behind it"))


class RequestList(Open):
    requests: list[JsonObject] = Field(description="the requests waiting for an answer, oldest first")


class Decision(Open):
    message: str
    request_id: str
    accepted: bool
    reasoning: str
    decided_by: str = Field(description="the token's name (mcp: no name), recorded in the event")


class SignalList(Open):
    signals: list[JsonObject]
    total: int
    truncated: bool


class BridgeList(Open):
    bridges: list[JsonObject]


class History(Open):
    resource_id: str
    window: JsonObject
    events: list[JsonObject]
    operations: list[JsonObject] | None = None
    created_at: str


__all__ = [
    "BridgeList",
    "Decision",
    "DispatcherState",
    "Explanation",
    "History",
    "OperationList",
    "OperationStatus",
    "RequestList",
    "RuntimeChange",
    "SignalList",
]

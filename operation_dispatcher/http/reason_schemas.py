"""The ``details`` of ``GET /operations/{id}/explain``: one model per blocker kind.

``reasons.describe()`` builds them; these models describe the same fields for
``/openapi.json``, as a list whose items are told apart by ``kind``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from ..models import DependencyType, ExecutionOutcome, ExecutionState

JsonType = Literal["boolean", "number", "string", "null", "array", "object"]
Seconds = Annotated[float | None, Field(ge=0, description="seconds, to the millisecond")]


class _Detail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    blocker: str = Field(description="the same string as in blocked_by, at the same index")
    kind: str  # each kind's model narrows it to its own name
    text: str = Field(description="one sentence a person can act on")


class _SignalDetail(_Detail):
    signal: str = Field(description="the signal's name")
    required: Any = Field(description="the value the operation needs")
    required_type: JsonType
    ever_set: bool = Field(description="false: nothing has ever written it (a typo?)")
    value: Any = Field(description="its value now (null when never set)")
    value_type: JsonType | None
    type_mismatch: bool = Field(description="value and required are of different JSON types")
    updated_at: datetime | None = Field(description="when it was last written")
    age_seconds: Seconds = Field(description="seconds since it was last written or confirmed")
    unchanged_seconds: Seconds = Field(description="seconds it has had this value")
    stale: bool = Field(description="too old (max_age_seconds) or expired: it cannot release")
    expired: bool = Field(description="its source (a bridge) went offline: its value is old")
    max_age_seconds: float | None
    holds: bool = Field(description="it holds now (it changed while explain was reading)")
    similar_signal: str | None = Field(description="an existing signal with a close name")
    owner: str | None = Field(description="who alone writes it, e.g. 'bridge plc1'")
    owner_online_signal: str | None = Field(description="the owner's health signal")
    owner_online: bool | None = Field(description="whether the owner is online now")


class ReleaseConditionDetail(_SignalDetail):
    kind: Literal["release_condition"]


class ExecutorOfflineDetail(_SignalDetail):
    """The executor bridge's health signal (blocker ``release_condition:<name>.online``)."""

    kind: Literal["executor_offline"]
    executor: str = Field(description="the bridge that runs this resource's operations")


class DependencyDetail(_Detail):
    kind: Literal["dependency"]
    provider_id: UUID
    dependency_type: DependencyType
    needs: Literal["start", "success"] = Field(description="what the provider has to do")
    provider_state: ExecutionState | None = Field(description="null: no longer known")
    provider_outcome: ExecutionOutcome | None
    provider_blocked_by: list[str] = Field(description="what holds a queued provider")
    failed: bool = Field(description="the provider can no longer satisfy it")


class ReleaseDateDetail(_Detail):
    kind: Literal["release_date"]
    release_date: datetime | None
    seconds_left: Seconds


class CooldownDetail(_Detail):
    kind: Literal["cooldown"]
    cooldown_ends_at: datetime
    seconds_left: Seconds
    denials: int = Field(description="start requests denied so far")
    max_retries: int = Field(description="denials after which the dispatcher pauses itself")
    cooldown_seconds: float | None


class AwaitingApprovalDetail(_Detail):
    kind: Literal["awaiting_approval"]
    request_id: UUID | None
    request_kind: str | None
    requested_at: datetime | None
    waiting_seconds: Seconds
    waiting_for: str | None = Field(description="'request callback', or 'decide()' (REST)")
    status: str | None = Field(description="pending, or the answer being acted on")
    deadline: datetime | None = Field(description="null: it waits until answered")
    seconds_left: Seconds


class ResourceBusyDetail(_Detail):
    kind: Literal["resource_busy"]
    current_operation_id: UUID | None = Field(
        description="the operation running, or being asked for approval")
    current_state: ExecutionState | None
    current_seconds: Seconds = Field(description="since it started")
    request_id: UUID | None = Field(description="the open start request of that operation")


class DispatcherPausedDetail(_Detail):
    kind: Literal["dispatcher_paused"]
    paused_since: datetime | None = Field(description="null: not known (paused before start)")
    paused_seconds: Seconds
    paused_after_denials: bool = Field(description="it paused itself: too many denials")
    denials: int


class DispatcherNotRunningDetail(_Detail):
    kind: Literal["dispatcher_not_running"]


BlockerDetail = Annotated[
    ReleaseConditionDetail | ExecutorOfflineDetail | DependencyDetail | ReleaseDateDetail
    | CooldownDetail | AwaitingApprovalDetail | ResourceBusyDetail | DispatcherPausedDetail
    | DispatcherNotRunningDetail,
    Field(discriminator="kind"),
]

__all__ = ["BlockerDetail"]

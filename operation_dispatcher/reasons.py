"""Reasons you can act on: the ``details`` of ``explain()``, one per blocker.

``blocked_by`` names what holds an operation (``release_condition:plc.ready``); a detail says
what to do about it: "waiting for plc.ready = true, now false for 12 s". It is built in two
steps so the dispatcher lock is held only for the reading:

* :func:`collect` (lock held) copies the facts of each blocker into plain JSON values: the
  signal's value, age and owner, the provider's state, the seconds left of a cooldown, the open
  request. Nothing it returns refers to live state.
* :func:`describe` (no lock) turns those facts into the details, each with a sentence.

Every number is finite (seconds rounded to milliseconds, never NaN or infinity) and every value
a copy, so a detail goes to JSON and to other threads as it is.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from .approvals import ApprovalRequest, RequestKind
from .errors import OperationNotFound
from .keys import Blocker
from .models import (
    DependencyType,
    ExecutionState,
    Operation,
    copy_json,
    format_datetime,
    utcnow,
)
from .retry import RetryPolicy
from .signals import SignalBoard, same_value

#: The kinds a detail can have (its ``kind``); README "Why is it waiting?" lists their fields.
KINDS = (
    "release_condition", "dependency", "release_date", "cooldown", "awaiting_approval",
    "executor_offline", "dispatcher_paused", "dispatcher_not_running", "resource_busy",
)
#: How much of a value a sentence quotes (the detail's fields carry the whole value).
_SHOWN_CHARS = 60
#: A typo is looked for among at most this many signal names of a similar length: explain()
#: must stay cheap on a board a flood of names has filled.
_SUGGEST_AMONG = 2000
#: The provider's own blockers a dependency sentence names.
_PROVIDER_BLOCKERS_SHOWN = 3
#: How much of a name (a signal, a bridge) a sentence quotes; longer names are not looked up
#: for typos either (difflib is quadratic in the length).
_NAME_CHARS = 120

Facts = dict[str, Any]
_CONDITION = Blocker.condition("")  # "release_condition:", built where every blocker is
_APPROVAL_FIELDS = (
    "request_id", "request_kind", "requested_at", "waiting_seconds", "waiting_for", "status",
    "deadline", "seconds_left",
)
WhyWaiting = Callable[[Operation], list[str]]


# ====================================================================== step 1: lock held
def collect(
    op: Operation,
    blocked: Iterable[str],
    *,
    signals: SignalBoard,
    find: Callable[[UUID], Operation | None],
    why_waiting: WhyWaiting,
    retry: RetryPolicy,
    request: ApprovalRequest | None,
    current: Operation | None,
    executor: str | None,
    executor_signal: str | None,
    paused_since: datetime | None,
) -> list[Facts]:
    """The facts of each blocker of ``op``, copied (call it with the dispatcher lock held)."""
    now, wall = time.monotonic(), utcnow()
    facts: list[Facts] = []
    for blocker in blocked:
        fact: Facts
        if blocker.startswith(_CONDITION):
            name = blocker[len(_CONDITION):]
            if executor is not None and name == executor_signal:
                fact = {"kind": "executor_offline", "executor": executor}
                fact.update(_signal_facts(signals, name, True, now, wall))
                fact["holds"] = signals.holds(name, True, expiring=True)
            else:
                required = op.release_conditions.get(name, True)
                fact = {"kind": "release_condition"}
                fact.update(_signal_facts(signals, name, required, now, wall))
        elif Blocker.is_dependency(blocker):
            fact = _dependency_facts(op, blocker.split(":", 1)[1], find, why_waiting)
        elif blocker == Blocker.RELEASE_DATE:
            fact = _release_date_facts(op, wall)
        elif blocker == Blocker.COOLDOWN:
            fact = _cooldown_facts(op, retry, wall)
        elif blocker == Blocker.AWAITING_APPROVAL:
            fact = _approval_facts(request, now, wall)
        elif blocker == Blocker.RESOURCE_BUSY:
            fact = _busy_facts(request, current, wall)
        elif blocker == Blocker.DISPATCHER_PAUSED:
            count = retry.count(RequestKind.START, op.id)
            fact = {
                "kind": "dispatcher_paused",
                "paused_since": None if paused_since is None else format_datetime(paused_since),
                "paused_seconds": None if paused_since is None else _seconds(
                    (wall - paused_since).total_seconds()),
                "paused_after_denials": count > 0 and retry.exhausted(count),
                "denials": count,
            }
        elif blocker == Blocker.DISPATCHER_NOT_RUNNING:
            fact = {"kind": "dispatcher_not_running"}
        else:  # a blocker this module does not know yet: name it rather than hide it
            fact = {"kind": blocker.split(":", 1)[0]}
        facts.append({"blocker": blocker, **fact})
    return facts


def _signal_facts(
    board: SignalBoard, name: str, required: Any, now: float, wall: datetime
) -> Facts:
    signal = board.get(name)  # a snapshot: its value is already a copy
    claim = board.claim_of(name)
    owner_signal = None
    if claim is not None and claim[0].endswith("."):
        owner_signal = f"{claim[0]}online"  # a bridge claims "<name>." and reports <name>.online
    facts: Facts = {
        "signal": name,
        "required": copy_json(required),
        "required_type": json_type(required),
        "ever_set": signal is not None,
        "value": None,
        "value_type": None,
        "type_mismatch": False,
        "updated_at": None,
        "age_seconds": None,
        "unchanged_seconds": None,
        "stale": False,
        "expired": False,
        "max_age_seconds": None,
        "holds": False,
        "similar_signal": None,
        "owner": None if claim is None else claim[1],
        "owner_online_signal": owner_signal,
        "owner_online": None if owner_signal is None else board.holds(owner_signal, True),
    }
    if signal is None:
        return facts
    expired = not math.isfinite(signal.confirmed_at)  # SignalBoard.expire(): source went away
    age = (wall - signal.updated_at).total_seconds() if expired else signal.age_seconds(now)
    stale = signal.is_stale(now)
    facts.update(
        value=signal.value,
        value_type=json_type(signal.value),
        type_mismatch=json_type(signal.value) != json_type(required),
        updated_at=format_datetime(signal.updated_at),
        age_seconds=_seconds(age),
        unchanged_seconds=None if signal.changed_at is None else _seconds(
            (wall - signal.changed_at).total_seconds()),
        stale=stale,
        expired=expired,
        max_age_seconds=_seconds(signal.max_age_seconds),
        holds=not stale and same_value(signal.value, required),
    )
    return facts


def _dependency_facts(
    op: Operation, provider_text: str, find: Callable[[UUID], Operation | None],
    why_waiting: WhyWaiting,
) -> Facts:
    dependency = next(
        (d for d in op.dependencies if str(d.depends_on_operation_id) == provider_text), None
    )
    kind = DependencyType.FINISH_TO_START if dependency is None else dependency.dependency_type
    provider = None if dependency is None else find(dependency.depends_on_operation_id)
    state = None if provider is None else provider.state
    outcome = None if provider is None or provider.outcome is None else provider.outcome.value
    needs = "start" if kind is DependencyType.START_TO_START else "success"
    failed = provider is not None and state is ExecutionState.COMPLETED and (
        provider.start_time is None if needs == "start" else outcome != "SUCCESS"
    )
    return {
        "kind": "dependency",
        "provider_id": provider_text,
        "dependency_type": kind.value,
        "needs": needs,
        "provider_state": None if state is None else state.value,
        "provider_outcome": outcome,
        "provider_blocked_by": (
            why_waiting(provider) if provider is not None and state is ExecutionState.QUEUED
            else []
        ),
        "failed": failed,
    }


def _release_date_facts(op: Operation, wall: datetime) -> Facts:
    date = op.release_date
    return {
        "kind": "release_date",
        "release_date": None if date is None else format_datetime(date),
        "seconds_left": None if date is None else _seconds((date - wall).total_seconds()),
    }


def _cooldown_facts(op: Operation, retry: RetryPolicy, wall: datetime) -> Facts:
    left = retry.cooldown_remaining(RequestKind.START, op.id)
    return {
        "kind": "cooldown",
        "cooldown_ends_at": format_datetime(wall + timedelta(seconds=_seconds(left) or 0.0)),
        "seconds_left": _seconds(left),
        "denials": retry.count(RequestKind.START, op.id),
        "max_retries": retry.max_retries,
        "cooldown_seconds": _seconds(retry.cooldown_seconds),
    }


def _approval_facts(request: ApprovalRequest | None, now: float, wall: datetime) -> Facts:
    if request is None:  # not expected: why_waiting names it only for the open request
        return {"kind": "awaiting_approval", **dict.fromkeys(_APPROVAL_FIELDS)}
    created = request.event.created_at
    deadline_at = getattr(request, "deadline_at", None)
    left = request.deadline - now if isinstance(request.deadline, int | float) else None
    return {
        "kind": "awaiting_approval",
        "request_id": str(request.request_id),
        "request_kind": request.kind.value,
        "requested_at": format_datetime(created),
        "waiting_seconds": _seconds((wall - created).total_seconds()),
        "waiting_for": request.waiting_for,
        "status": request.status.value,
        "deadline": (
            format_datetime(deadline_at)
            if isinstance(deadline_at, datetime) and left is not None and math.isfinite(left)
            else None
        ),
        "seconds_left": _seconds(left),
    }


def _busy_facts(
    request: ApprovalRequest | None, current: Operation | None, wall: datetime
) -> Facts:
    if current is not None:
        started = current.start_time
        return {
            "kind": "resource_busy",
            "current_operation_id": str(current.id),
            "current_state": current.state.value,
            "current_seconds": None if started is None else _seconds(
                (wall - started).total_seconds()),
            "request_id": None,
        }
    return {
        "kind": "resource_busy",
        "current_operation_id": None if request is None else str(request.operation.id),
        "current_state": None if request is None else request.operation.state.value,
        "current_seconds": None,
        "request_id": None if request is None else str(request.request_id),
    }


# ====================================================================== step 2: no lock
def describe(facts: list[Facts], signals: SignalBoard | None = None) -> list[dict[str, Any]]:
    """The details: each fact with its ``text``, in the order given.

    ``signals`` (read without the dispatcher lock) lets a never-set signal name a close one
    that exists, a likely typo: ``plc.redy`` -> ``plc.ready``.
    """
    details = []
    names: list[str] | None = None
    for fact in facts:
        detail = dict(fact)
        kind = detail["kind"]
        if "similar_signal" in detail and not detail["ever_set"] and signals is not None:
            names = signals.names() if names is None else names
            detail["similar_signal"] = similar_signal(detail["signal"], names)
        writer = _WRITERS.get(kind)
        detail["text"] = writer(detail) if writer is not None else f"blocked by {fact['blocker']}"
        details.append({"blocker": detail.pop("blocker"), "kind": detail.pop("kind"),
                        "text": detail.pop("text"), **detail})
    return details


def similar_signal(name: str, names: Iterable[str]) -> str | None:
    """The existing signal name closest to ``name`` (a likely typo), or None."""
    import difflib  # only explain() of a never-set signal needs it: kept off the import time

    if len(name) > _NAME_CHARS:
        return None
    device = name.rpartition(".")[0]
    candidates = [n for n in names if n != name and abs(len(n) - len(name)) <= 3]
    candidates.sort(key=lambda n: n.rpartition(".")[0] != device)  # the same device's first
    matches = difflib.get_close_matches(name, candidates[:_SUGGEST_AMONG], n=1, cutoff=0.75)
    return matches[0] if matches else None


def _condition_text(d: Facts) -> str:
    name, required = _name(d["signal"]), d["required"]
    wanted = f"waiting for {name} = {show(required)}"
    owner = d["owner"]
    offline = owner is not None and d["owner_online"] is False
    owner = _name(owner)
    if not d["ever_set"]:
        if d.get("similar_signal"):
            hint = f"a typo for {_name(d['similar_signal'])}?"
        elif offline:
            hint = f"{owner}, which writes it, is offline"
        elif d["owner"] is not None:
            hint = f"a typo? {owner}, which owns it, is online but has never reported it"
        else:
            hint = "a typo?"
        return f"{wanted}, but nothing has ever set {name} ({hint})"
    value = d["value"]
    if d["holds"]:
        return f"{wanted}: it holds now, so the dispatcher will look again at once"
    if d["expired"] or (d["stale"] and offline):
        source = f"{owner}, which writes it, is offline" if offline else "its source went offline"
        return (f"{wanted}, but {source}, so its last value {show(value)} "
                f"(from {span(d['age_seconds'])} ago) does not count")
    if d["stale"]:
        tail = f"; {owner}, which writes it, is offline" if offline else ""
        return (f"{wanted}, but its value {show(value)} is stale: last confirmed "
                f"{span(d['age_seconds'])} ago, max age {span(d['max_age_seconds'])}{tail}")
    if d["type_mismatch"]:
        return (f"waiting for {name} = {show(required)} ({_a(d['required_type'])}), "
                f"but it is {show(value)} ({_a(d['value_type'])})")
    since = d["unchanged_seconds"]
    duration = "" if since is None else f" for {span(since)}"
    return f"{wanted}, now {show(value)}{duration}"


def _executor_text(d: Facts) -> str:
    executor, name = _name(d["executor"]), _name(d["signal"])
    hold = "nothing is sent to it, so no operation starts"
    if not d["ever_set"]:
        return f"executor {executor} has never reported online ({name} was never set): {hold}"
    if d["holds"]:
        return f"executor {executor} is online now ({name} = true): the dispatcher looks again"
    value = d["value"]
    if value is True and d["max_age_seconds"] is None:
        return (f"executor {executor} is not trusted online: {name} = true was written without "
                f"a max age, so its silence could never make it offline; {hold} until it is "
                "written with max_age_seconds")
    if d["expired"] or d["stale"]:
        return (f"executor {executor} is offline: {name} was last confirmed "
                f"{span(d['age_seconds'])} ago and is stale; {hold} until it answers again")
    if value is False:
        since = d["unchanged_seconds"]
        duration = "" if since is None else f" for {span(since)}"
        return f"executor {executor} is offline ({name} is false{duration}): {hold}"
    return (f"executor {executor} is not online: {name} is {show(value)} "
            f"({_a(d['value_type'])}) and only true counts; {hold}")


def _dependency_text(d: Facts) -> str:
    provider, state = d["provider_id"], d["provider_state"]
    if d["failed"]:
        ended = d["provider_outcome"] or "without starting"
        return (f"operation {provider}, which this one depends on, ended {ended}, so this "
                "one will fail with DEPENDENCY_FAILED")
    goal = "to start" if d["needs"] == "start" else "to complete successfully"
    if state is None:
        return f"waiting for operation {provider} {goal}"
    text = f"waiting for operation {provider} {goal}; it is {state}"
    blockers = d["provider_blocked_by"]
    if blockers:
        shown = ", ".join(_name(b) for b in blockers[:_PROVIDER_BLOCKERS_SHOWN])
        more = len(blockers) - _PROVIDER_BLOCKERS_SHOWN
        text += f", itself waiting for {shown}" + (f" and {more} more" if more > 0 else "")
    return text


def _release_date_text(d: Facts) -> str:
    left = d["seconds_left"]
    if left is None or left <= 0:
        return f"its release date {d['release_date']} has just passed: the dispatcher looks again"
    return f"waiting for its release date {d['release_date']}, {span(left)} from now"


def _cooldown_text(d: Facts) -> str:
    denials, most = d["denials"], d["max_retries"]
    return (f"its start was denied {_times(denials)} (the dispatcher pauses itself after {most}); it is "
            f"asked again in {span(d['seconds_left'])}, at {d['cooldown_ends_at']}")


def _approval_text(d: Facts) -> str:
    request = d["request_id"]
    if request is None:
        return "waiting for approval to start"
    if d["status"] != "pending":
        return f"start request {request} was answered ({d['status']}): the dispatcher acts on it"
    who, waited = d["waiting_for"], span(d["waiting_seconds"])
    if who == "request callback":
        text = f"start request {request} has waited {waited} for the request callback to answer"
    elif who == "decide()":
        text = (f"start request {request} has waited {waited} for an answer: approve or deny "
                f"it (POST /requests/{request}/approve or /deny, or decide())")
    else:
        text = f"start request {request} has waited {waited} for {who} to answer it"
    left = d["seconds_left"]
    if left is None:
        return f"{text}; it waits until answered"
    return f"{text}; without an answer it is denied in {span(left)}"


def _busy_text(d: Facts) -> str:
    current = d["current_operation_id"]
    if current is None:
        return "the resource is busy"
    if d["request_id"] is not None:
        return (f"operation {current} is being asked for approval to start (request "
                f"{d['request_id']}); this one is considered after that answer")
    running = d["current_seconds"]
    duration = "" if running is None else f" for {span(running)}"
    return (f"the resource is busy with operation {current} ({d['current_state']}{duration}); "
            "this one is considered once it finishes")


def _paused_text(d: Facts) -> str:
    since = d["paused_since"]
    when = "" if since is None else f" since {since} ({span(d['paused_seconds'])})"
    why = ""
    if d["paused_after_denials"]:
        why = f", by itself after this operation's start was denied {_times(d['denials'])}"
    return (f"the dispatcher is paused{when}{why}: resume it (POST /dispatcher/resume or "
            "resume_dispatcher_runtime()) to start operations again")


def _not_running_text(d: Facts) -> str:
    return ("the dispatcher loop is not running: start it (POST /dispatcher/start, or start() "
            "or run() in Python)")


_WRITERS: dict[str, Callable[[Facts], str]] = {
    "release_condition": _condition_text,
    "executor_offline": _executor_text,
    "dependency": _dependency_text,
    "release_date": _release_date_text,
    "cooldown": _cooldown_text,
    "awaiting_approval": _approval_text,
    "resource_busy": _busy_text,
    "dispatcher_paused": _paused_text,
    "dispatcher_not_running": _not_running_text,
}


# ====================================================================== small helpers
def json_type(value: Any) -> str:
    """The JSON type of a value: boolean, number, string, null, array or object."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "array"
    return "object"


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


def _name(name: str | None) -> str:
    """A name for a sentence, cut to a readable length (the fields keep it whole)."""
    if name is None:
        return ""
    return name if len(name) <= _NAME_CHARS else name[: _NAME_CHARS - 3] + "..."


def _a(type_name: str) -> str:
    return type_name if type_name == "null" else (
        f"an {type_name}" if type_name[0] in "aeiou" else f"a {type_name}"
    )


def show(value: Any) -> str:
    """A value as JSON, cut to a readable length: ``true``, ``"auto"``, ``12``."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def span(seconds: float | None) -> str:
    """A duration for people: ``0.4 s``, ``12 s``, ``3 min 5 s``, ``2 h 4 min``, ``3 d 1 h``."""
    if seconds is None:
        return "an unknown time"
    s = max(0.0, seconds)
    if s < 1:
        return f"{s:.2f}".rstrip("0").rstrip(".") + " s"
    if s < 10:
        return f"{s:.1f} s"
    whole = int(round(s))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def _seconds(value: float | None) -> float | None:
    """Seconds as JSON allows them: finite, not negative, to the millisecond; else None."""
    if value is None or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return round(max(0.0, float(value)), 3)


def blocked_counts(dispatcher: Any, limit: int) -> tuple[dict[str, int], int]:
    """Queued operations by blocker kind (``release_condition``, ``dependency``, ...), for the
    first ``limit`` of ``dispatcher.get_schedule()``, and how many were examined; cheap:
    explain without details."""
    counts: dict[str, int] = {}
    schedule = dispatcher.get_schedule()[:limit]
    for op in schedule:
        try:
            blocked_by = dispatcher.explain(op.id, details=False)["blocked_by"]
        except OperationNotFound:
            continue  # it finished since get_schedule()
        for kind in {str(blocker).split(":", 1)[0] for blocker in blocked_by}:
            counts[kind] = counts.get(kind, 0) + 1
    return counts, len(schedule)


__all__ = [
    "KINDS", "blocked_counts", "collect", "describe", "json_type", "show", "similar_signal", "span",
]

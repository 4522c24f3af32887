"""The approval handshake: asking business logic before an operation starts, pauses, resumes or
is cancelled, and waiting for the answer on the dispatcher's condition variable.

The request callback gets a ``*_REQUESTED`` DispatchEvent and answers with ``True``/``False``, a
:class:`RequestDecision`, a dict ``{"accepted", "reasoning", "data"}``, an object with an
``accepted`` (or ``is_allowed``) attribute, or :data:`PENDING` to answer later through
``decide(request_id, ...)`` from any thread. Fail safe: only the real ``True`` approves, in every
form. Anything else denies with a reasoning that names it: ``None``, ``1`` and ``"yes"`` as a
bare answer, and ``"false"``, ``[False]``, ``numpy.bool_(True)`` or a ``Mock`` as the
``accepted`` value. No answer by the deadline denies with reasoning ``timeout``; a request
without a deadline (timeout None) waits for as long as it takes.

:class:`ApprovalDesk` holds the open requests; it never calls out and it uses the dispatcher's
own lock, so a decision arriving from an HTTP thread wakes exactly the thread that waits for it.
:class:`~.retry.RetryPolicy` (in retry.py, importable from here) counts denials per (request
kind, operation) and times the cooldowns.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from .errors import RequestClosed, UnknownRequest
from .models import DispatchEvent, EventType, Operation, copy_json, format_datetime
from .retry import RetryChanges, RetryPolicy  # kept importable from here (design.md layout)


class _Pending:
    """The type of :data:`PENDING`; there is exactly one."""

    _instance: _Pending | None = None

    def __new__(cls) -> _Pending:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "PENDING"

    def __bool__(self) -> bool:
        return False


#: Return this from the request callback to answer later with ``dispatcher.decide(...)``.
PENDING = _Pending()


class RequestKind(StrEnum):
    """The four things the dispatcher asks permission for."""

    START = "start"
    CANCEL = "cancel"
    PAUSE = "pause"
    RESUME = "resume"

    @property
    def requested_event(self) -> EventType:
        return _REQUESTED[self]

    @property
    def denied_event(self) -> EventType:
        return _DENIED[self]


_REQUESTED = {
    RequestKind.START: EventType.OPERATION_START_REQUESTED,
    RequestKind.CANCEL: EventType.OPERATION_CANCEL_REQUESTED,
    RequestKind.PAUSE: EventType.OPERATION_PAUSE_REQUESTED,
    RequestKind.RESUME: EventType.OPERATION_RESUME_REQUESTED,
}
_DENIED = {
    RequestKind.START: EventType.OPERATION_START_DENIED,
    RequestKind.CANCEL: EventType.OPERATION_CANCEL_DENIED,
    RequestKind.PAUSE: EventType.OPERATION_PAUSE_DENIED,
    RequestKind.RESUME: EventType.OPERATION_RESUME_DENIED,
}


@dataclass(frozen=True, slots=True)
class RequestDecision:
    """An answer to a request: accepted or not, why, and any data to keep with it.

    ``accepted`` must be a real ``bool`` (``RequestDecision("no")`` raises TypeError): a
    decision that may start a machine is never read from a truthy value.
    """

    accepted: bool
    reasoning: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if type(self.accepted) is not bool:
            raise TypeError(f"RequestDecision: {_accepted_problem(self.accepted)}")
        if self.reasoning is not None and not isinstance(self.reasoning, str):
            raise TypeError(
                "RequestDecision: reasoning must be a string or None, "
                f"got {type(self.reasoning).__name__}"
            )
        if not isinstance(self.data, dict):
            raise TypeError(
                f"RequestDecision: data must be a dict, got {type(self.data).__name__}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted, "reasoning": self.reasoning, "data": copy_json(self.data)
        }


#: How much of a rejected value's repr a reasoning quotes (a callback may return anything).
_REPR_LIMIT = 80


def _describe(value: Any) -> str:
    """``str 'false'``: the type and a bounded repr of a value, for a reasoning."""
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ must not turn a denial into a crash
        text = "<unprintable>"
    if len(text) > _REPR_LIMIT:
        text = text[: _REPR_LIMIT - 3] + "..."
    return f"{type(value).__name__} {text}"


def _accepted_problem(value: Any) -> str:
    return f"accepted must be True or False, got {_describe(value)}"


def _decision_data(value: Any) -> dict[str, Any]:
    """The data kept with a decision, copied so the caller's later edits change nothing."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return copy_json(dict(value))
    return {"value": copy_json(value)}


def _invalid(problem: str, result: Any) -> RequestDecision:
    """A denial for a malformed answer; the reasoning names what was wrong."""
    return RequestDecision(
        False, f"invalid_decision: {problem}", {"result_type": type(result).__name__}
    )


def _read_decision(result: Any, accepted: Any, reasoning: Any, data: Any) -> RequestDecision:
    """Build the decision from the parts a dict or object gave; only ``True`` approves."""
    if type(accepted) is not bool:
        return _invalid(_accepted_problem(accepted), result)
    return RequestDecision(
        accepted, None if reasoning is None else str(reasoning), _decision_data(data)
    )


def normalize_decision(result: Any) -> RequestDecision | _Pending:
    """Turn whatever a request callback returned into a decision; never raises.

    Exactly ``True`` accepts and exactly ``False`` denies; a dict or object is read through its
    ``accepted``/``reasoning``/``data`` (or ``is_allowed``/``reason``/``metadata``) entries,
    whose accepted value must itself be a real bool (anything else denies with reasoning
    ``invalid_decision: ...`` naming it); any other answer, ``None`` included, denies with
    reasoning ``invalid_callback_result: ...`` naming it.
    """
    try:
        return _normalize(result)
    except Exception as exc:  # a property that raises, a broken __eq__...: deny, never crash
        return _invalid(f"reading the answer raised {_describe(exc)}", result)


def _normalize(result: Any) -> RequestDecision | _Pending:
    if result is PENDING:
        return PENDING
    if result is True:
        return RequestDecision(True)
    if result is False:
        return RequestDecision(False)
    if isinstance(result, RequestDecision):
        # frozen and checked in __post_init__, but object.__setattr__ can still forge one
        return _read_decision(result, result.accepted, result.reasoning, result.data)
    if isinstance(result, dict):
        if "accepted" not in result:
            reasoning = result.get("reasoning")
            return RequestDecision(
                False, None if reasoning is None else str(reasoning),
                _decision_data(result.get("data")),
            )
        return _read_decision(
            result, result["accepted"], result.get("reasoning"), result.get("data")
        )
    if hasattr(result, "accepted"):
        return _read_decision(
            result, result.accepted, getattr(result, "reasoning", None),
            getattr(result, "data", None),
        )
    if hasattr(result, "is_allowed"):
        return _read_decision(
            result, result.is_allowed, getattr(result, "reason", None),
            getattr(result, "metadata", None),
        )
    return RequestDecision(
        False,
        "invalid_callback_result: expected True, False, a RequestDecision, a dict, an object "
        f"with 'accepted' or PENDING, got {_describe(result)}",
        {"result_type": type(result).__name__},
    )


class RequestStatus(StrEnum):
    """Where an approval request stands."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"


@dataclass(slots=True, eq=False)
class ApprovalRequest:
    """One open question to the business logic, and its answer once there is one."""

    kind: RequestKind
    event: DispatchEvent  # the *_REQUESTED event the callback receives; its id is the request id
    operation: Operation  # the dispatcher's own object (never handed out)
    deadline: float | None  # time.monotonic(); None: no deadline, it waits for an answer
    deadline_at: datetime | None
    timeout: float | None
    status: RequestStatus = RequestStatus.PENDING
    decision: RequestDecision | None = None
    #: who the request waits for: the callback while it runs, decide() once it said PENDING
    waiting_for: str = "request callback"
    #: set when the operation is updated while the request is open: the approval is then void
    changed: bool = False
    #: the approval policy left it to an operator: its expiry is not counted as a denial
    by_operator: bool = False
    #: closed by the dispatcher itself (its operation finished or changed): not a denial either
    withdrawn: bool = False
    #: when the callback's answer arrived (time.monotonic()), set by its worker before it waits
    #: for the lock: an answer in time counts even if the lock came late (a journal write on a
    #: slow SD card held it). Written once without the lock (a float), read with it.
    answered_at: float | None = None

    @property
    def request_id(self) -> UUID:
        return self.event.id

    @property
    def is_pending(self) -> bool:
        return self.status is RequestStatus.PENDING

    def snapshot(self) -> PendingRequest:
        return PendingRequest(
            request_id=self.request_id,
            event_type=self.event.event_type,
            operation_id=self.operation.id,
            created_at=self.event.created_at,
            deadline=self.deadline_at,
            waiting_for=self.waiting_for,
        )


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """What ``pending_requests()`` returns for one open request (answer it with ``decide``)."""

    request_id: UUID
    event_type: EventType
    operation_id: UUID
    created_at: datetime
    deadline: datetime | None  # None: it waits until someone answers
    waiting_for: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``GET /requests``."""
        return {
            "request_id": str(self.request_id),
            "event_type": self.event_type.value,
            "operation_id": str(self.operation_id),
            "created_at": format_datetime(self.created_at),
            "deadline": None if self.deadline is None else format_datetime(self.deadline),
            "waiting_for": self.waiting_for,
        }


#: How many closed requests decide() can still recognise as closed.
_CLOSED_REMEMBERED = 1024


class ApprovalDesk:
    """The open approval requests, guarded by the dispatcher's condition variable.

    Every method expects to be called with ``condition`` held, except :meth:`decide`, which takes
    it (it is the entry point for other threads).
    """

    def __init__(self, condition: threading.Condition) -> None:
        self._cond = condition
        self._open: dict[UUID, ApprovalRequest] = {}
        # The final status of recently closed requests, so a late decide() says "closed"
        # rather than "not found"; bounded so memory stays flat.
        self._closed: OrderedDict[UUID, str] = OrderedDict()

    def open(
        self,
        kind: RequestKind,
        event: DispatchEvent,
        operation: Operation,
        timeout: float | None,
        *,
        waiting_for: str = "request callback",
    ) -> ApprovalRequest:
        """Register a new request that expires ``timeout`` seconds from now (None: never)."""
        request = ApprovalRequest(
            kind=kind,
            event=event,
            operation=operation,
            deadline=None if timeout is None else time.monotonic() + timeout,
            deadline_at=None if timeout is None else event.created_at + timedelta(seconds=timeout),
            timeout=timeout,
            waiting_for=waiting_for,
        )
        self._open[request.request_id] = request
        return request

    def resolve(
        self, request: ApprovalRequest, decision: RequestDecision, at: float | None = None
    ) -> bool:
        """Record the answer if the request is still pending; wakes every waiter.

        ``at``: when the answer arrived (time.monotonic()), if before the lock was had.
        """
        if not request.is_pending:
            return False
        if request.deadline is not None and (
            time.monotonic() if at is None else at
        ) >= request.deadline:
            # answered after its deadline, before the dispatcher got round to expiring it:
            # too late to count as an approval (the machine must not start on a stale answer)
            self.expire(request)
            return False
        request.decision = decision
        approved = decision.accepted is True  # identity: a forged truthy value never approves
        request.status = RequestStatus.APPROVED if approved else RequestStatus.DENIED
        self._cond.notify_all()
        return True

    def expire(self, request: ApprovalRequest) -> bool:
        """Deny a request whose deadline passed, saying what did not answer.

        Not one whose answer arrived in time and waits for the lock to be filed (False).
        """
        if not request.is_pending or self.answer_on_its_way(request):
            return False
        what = f"{request.waiting_for} gave no answer within {request.timeout or 0:g} s"
        request.decision = RequestDecision(False, "timeout", {"error": what})
        request.status = RequestStatus.EXPIRED
        self._cond.notify_all()
        return True

    @staticmethod
    def answer_on_its_way(request: ApprovalRequest) -> bool:
        """The callback answered before the deadline; its worker files it once it has the lock."""
        arrived, deadline = request.answered_at, request.deadline
        return arrived is not None and deadline is not None and arrived < deadline

    def withdraw(self, request: ApprovalRequest, why: str) -> bool:
        """Close a pending request the dispatcher no longer needs (its operation finished or
        changed); a later answer gets RequestClosed, and nobody is counted as denying it."""
        if not request.is_pending:
            return False
        request.decision = RequestDecision(False, "withdrawn", {"error": why})
        request.status = RequestStatus.EXPIRED
        request.withdrawn = True
        self._cond.notify_all()
        return True

    def close(self, request: ApprovalRequest) -> None:
        """Forget a request whose answer has been acted on."""
        if self._open.pop(request.request_id, None) is not None:
            self._closed[request.request_id] = request.status.value
            if len(self._closed) > _CLOSED_REMEMBERED:
                self._closed.popitem(last=False)

    def decide(
        self,
        request_id: UUID | str,
        accepted: bool,
        reasoning: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> ApprovalRequest:
        """Answer a pending request from any thread; raises if unknown or no longer pending.

        ``accepted`` must be a real bool and ``reasoning`` a string or None (TypeError, checked
        before anything is looked up or changed): ``decide(id, "no")`` must never approve.
        """
        decision = decision_from_arguments(accepted, reasoning, data)
        key = request_id if isinstance(request_id, UUID) else _parse_request_id(request_id)
        arrived = time.monotonic()  # the lock may come late (a slow journal write holds it)
        with self._cond:
            request = self._open.get(key)
            if request is None:
                status = self._closed.get(key)
                if status is not None:
                    raise RequestClosed(request_id, status)
                raise UnknownRequest(request_id)
            if not request.is_pending:
                raise RequestClosed(request_id, request.status.value)
            if not self.resolve(request, decision, arrived):  # deadline passed: expired now
                raise RequestClosed(request_id, request.status.value)
            return request

    def get(self, request_id: UUID) -> ApprovalRequest | None:
        return self._open.get(request_id)

    def clear(self) -> None:
        """Forget every open request (their late answers will find nothing to act on)."""
        for request in self._open.values():
            if request.is_pending:
                request.decision = RequestDecision(False, "void", {"error": "state reloaded"})
                request.status = RequestStatus.EXPIRED
        self._open.clear()
        self._cond.notify_all()

    def pending(self) -> list[PendingRequest]:
        """Snapshots of the requests still waiting for an answer, oldest first."""
        return [r.snapshot() for r in self._open.values() if r.is_pending]


def decision_from_arguments(
    accepted: Any, reasoning: Any = None, data: Any = None
) -> RequestDecision:
    """The decision ``decide()`` was given, or TypeError naming what is wrong with it."""
    if type(accepted) is not bool:
        raise TypeError(f"decide(): {_accepted_problem(accepted)}")
    if reasoning is not None and not isinstance(reasoning, str):
        raise TypeError(
            f"decide(): reasoning must be a string or None, got {type(reasoning).__name__}"
        )
    if data is not None and not isinstance(data, dict):
        raise TypeError(f"decide(): data must be a dict or None, got {type(data).__name__}")
    return RequestDecision(accepted, reasoning, _decision_data(data))


def _parse_request_id(value: str) -> UUID:
    try:
        return UUID(str(value))
    except ValueError:
        raise UnknownRequest(value) from None


__all__ = [
    "PENDING",
    "PendingRequest",
    "ApprovalDesk",
    "ApprovalRequest",
    "RequestDecision",
    "RequestKind",
    "RequestStatus",
    "RetryChanges",
    "RetryPolicy",
    "decision_from_arguments",
    "normalize_decision",
]

"""Handshake: asking the business logic for permission, and acting on its answer's count.

It owns the approval desk (the open requests) and the retry policy (denials and cooldowns):
it opens a request, asks the request callback on a worker thread (never under the lock),
waits for an answer in the caller's thread when the caller needs one, records every
``*_REQUESTED`` event with its decision, and counts denials, pausing the dispatcher after too
many. An :class:`~.approval_policy.ApprovalPolicy` comes first: it may deny a request at once or
leave it to an operator (the callback is then not asked, and an operator's silence is never
counted as a denial). Which operation to ask about, and what to do once it is approved, is
the engine's business.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .approvals import (
    PENDING,
    ApprovalDesk,
    ApprovalRequest,
    PendingRequest,
    RequestDecision,
    RequestKind,
    RequestStatus,
    RetryPolicy,
    normalize_decision,
)
from .events import call_maybe_async
from .history import copy_event
from .models import EMPTY_DICT, EMPTY_LIST, DispatchEvent, Operation, copy_json
from .runstate import PauseSwitch
from .unit import UnitOfWork
from .workers import CallbackRunner

if TYPE_CHECKING:
    from .approval_policy import ApprovalPolicy

RequestCallback = Callable[[DispatchEvent], Any]


class Handshake:
    """Approval requests, their answers and the denial counts. Lock held by the caller,
    except in :meth:`_ask`, which runs on a callback worker and takes it."""

    def __init__(
        self,
        *,
        unit: UnitOfWork,
        answered: threading.Condition,
        callbacks: CallbackRunner,
        on_request: RequestCallback | None,
        timeout: float | None,
        retry: RetryPolicy,
        pause: PauseSwitch,
        log: logging.Logger,
        policy: ApprovalPolicy | None = None,
    ) -> None:
        self.desk = ApprovalDesk(answered)
        self.retry = retry
        self._unit = unit
        self._answered = answered
        self._callbacks = callbacks
        self._on_request = on_request
        self._timeout = timeout
        self._pause = pause
        self._log = log
        self.policy = policy
        #: called (lock held) when a callback answered a request, so the engine can act on it
        self.on_answer: Callable[[ApprovalRequest], None] = lambda request: None
        #: told (on a callback worker, no lock held) of every request that waits for decide()
        self.watchers: tuple[Callable[[PendingRequest], Any], ...] = ()

    def open(
        self, kind: RequestKind, op: Operation, meta_data: dict[str, Any] | None
    ) -> ApprovalRequest:
        """Open a request and decide it by the policy, hand it to the callback, or approve it
        (no callback); an operator's request stays pending for ``decide()``."""
        event = DispatchEvent.trusted(
            op.resource_id, kind.requested_event, op.id, EMPTY_LIST,
            copy_json(dict(meta_data)) if meta_data else EMPTY_DICT,
        )
        # no policy is "auto" for every kind (approval_policy is loaded only by who makes one)
        policy = None if self.policy is None else self.policy.for_request(kind, op)
        if policy is not None and policy.waits:  # "operator" or "mqtt": PENDING until someone calls decide()
            assert self.policy is not None
            request = self.desk.open(
                kind, event, op, self.policy.operator_timeout_seconds, waiting_for=policy.value
            )
            request.by_operator = True
            self._opened(request)
            return request
        request = self.desk.open(kind, event, op, self._timeout)
        if policy is not None and policy.denies:
            self.desk.resolve(request, RequestDecision(
                False, "approval_policy", {"policy": f'approvals.{kind.value} = "deny"'}
            ))
        elif self._on_request is None:
            self.desk.resolve(request, RequestDecision(True))
        else:
            self._callbacks.submit(self._ask, request)
        return request

    def watch(self, watcher: Callable[[PendingRequest], Any],
              lock: threading.RLock) -> Callable[[], None]:
        """Add a watcher of requests that wait for decide() (under ``lock``); returns the
        function that removes it."""
        with lock:
            self.watchers = (*self.watchers, watcher)

        def unwatch() -> None:
            with lock:
                self.watchers = tuple(w for w in self.watchers if w is not watcher)

        return unwatch

    def _opened(self, request: ApprovalRequest) -> None:
        """Tell the watchers (off the lock, on a callback worker) that ``request`` waits for
        ``decide()``. Lock held."""
        if self.watchers:
            self._callbacks.submit(self._tell, self.watchers, request.snapshot())

    def _tell(self, watchers: tuple[Callable[[PendingRequest], Any], ...],
              snapshot: PendingRequest) -> None:
        for watcher in watchers:
            try:
                watcher(snapshot)
            except Exception:
                self._log.exception("request watcher %r failed", watcher)

    def _ask(self, request: ApprovalRequest) -> None:
        """Runs on a callback worker, no lock held: ask the business logic, file the answer."""
        assert self._on_request is not None
        try:
            # a copy: what the callback does to its event must not reach the history
            result = call_maybe_async(self._on_request, copy_event(request.event))
        except Exception as exc:
            self._log.exception("request callback raised on %s", request.event.event_type.value)
            decision: Any = RequestDecision(
                False, "request_callback_exception", {"error": str(exc) or type(exc).__name__}
            )
        else:
            decision = normalize_decision(result)
        arrived = time.monotonic()
        if decision is not PENDING:
            request.answered_at = arrived  # before the lock: the deadline is met now, not then
        with self._unit:
            if decision is PENDING:
                request.waiting_for = "decide()"
                self._opened(request)
                return
            if not self.desk.resolve(request, decision, arrived):
                self._log.warning(
                    "late answer to %s for operation %s ignored (request already %s)",
                    request.kind.value, request.operation.id, request.status.value,
                )
            else:
                self.on_answer(request)

    def await_decision(self, request: ApprovalRequest) -> None:
        """Block until ``request`` is answered or expires (lock held, released while waiting)."""
        while request.is_pending:
            if request.deadline is None:  # no deadline: wait for the answer, however long
                self._unit.wait(self._answered, None)
                continue
            remaining = request.deadline - time.monotonic()
            if remaining <= 0:
                if self.desk.expire(request) or not request.is_pending:
                    return
                self._unit.wait(self._answered, None)  # an answer in time is being filed
                continue
            self._unit.wait(self._answered, remaining)

    def record(self, request: ApprovalRequest, void_reason: str | None = None) -> None:
        """Put the *_REQUESTED event in the history, with its decision, under the id the
        callback saw (so a callback's event and the history entry can be matched)."""
        decision = request.decision or RequestDecision(False)
        meta = copy_json(request.event.meta_data)
        meta["request_decision"] = decision.to_dict()
        if void_reason is not None:
            meta["void_reason"] = void_reason
        event = request.event
        self._unit.record(
            DispatchEvent.trusted(
                event.resource_id, event.event_type, event.operation_id, EMPTY_LIST, meta,
                id=event.id, created_at=event.created_at,
            )
        )

    def deny(self, request: ApprovalRequest, op: Operation | None) -> None:
        """Count a denial, emit *_DENIED, cool down, and pause after too many."""
        decision = request.decision
        assert decision is not None
        kind = request.kind
        if op is None or op.is_finished or request.withdrawn:
            return  # it finished (or changed) while the request was open: nothing to retry
        # an operator who did not answer in time has not denied anything: ask again after the
        # cooldown, but never count it towards pausing the dispatcher behind the operator's back
        silent = request.by_operator and request.status is RequestStatus.EXPIRED
        count = (
            self.retry.record_expiry(kind, op.id) if silent
            else self.retry.record_denial(kind, op.id)
        )
        meta: dict[str, Any] = {
            "retry_count": count,
            "max_retries": self.retry.max_retries,
            "cooldown_seconds": self.retry.cooldown_seconds,
        }
        if silent:
            meta["counted"] = False
        if decision.reasoning is not None:
            meta["reasoning"] = decision.reasoning
        if decision.data:
            meta["decision_data"] = copy_json(decision.data)
        if request.event.meta_data:
            meta["request_meta_data"] = copy_json(request.event.meta_data)
        self._unit.emit(kind.denied_event, op, meta_data=meta)
        if not silent and self.retry.exhausted(count):
            self._pause.set(True)

    def ask_and_wait(
        self,
        kind: RequestKind,
        op: Operation,
        meta_data: dict[str, Any] | None,
        current: Callable[[], Operation | None],
    ) -> RequestDecision | None:
        """Ask permission in the caller's thread; lock held on entry and exit, released while
        waiting, so the dispatcher keeps serving others. None: the pair is cooling down.
        ``current`` finds the operation again after the wait (it may have finished)."""
        if self.retry.cooldown_remaining(kind, op.id) > 0:
            return None
        request = self.open(kind, op, meta_data)
        self.await_decision(request)
        self.desk.close(request)
        self.record(request)
        decision = request.decision
        assert decision is not None
        if decision.accepted is True:
            self.retry.clear(kind, op.id)
        else:
            self.deny(request, current())
        return decision

    def clear(self) -> None:
        """Drop every open request (the state was reloaded from the journal)."""
        self.desk.clear()


__all__ = ["Handshake", "RequestCallback"]

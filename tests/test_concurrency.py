"""Concurrency test: 8 threads hammer one started dispatcher with 10,000 operations.

Worker threads add, cancel, pause, resume and update operations, answer PENDING requests with
``decide()``, and now and then pause and resume the dispatcher itself, all at random. The request
callback approves most requests at once, denies a few, and leaves many PENDING (a handful of them
on purpose unanswered, so they time out). A completer thread completes or fails every operation
that starts. A subscriber records every event, requests included, in emission order.

At the end every operation left is cancelled, and the recorded stream must show that
- at most one operation was RUNNING or PAUSED at any time (STARTED ... COMPLETED/FAILED/CANCELLED
  intervals never overlap, and PAUSED/RESUMED only hit the open interval), and none started
  while the dispatcher was paused;
- the START_REQUESTED recorded last before each STARTED is that very operation's, accepted and
  not void, and the operation started with the priority and payload it had when the callback
  was asked (the operation started is exactly the one approved);
- each operation reached exactly one terminal event, and its events replay through
  ``lifecycle.TRANSITIONS`` as a legal path ending in COMPLETED;
- nothing was lost: every added id has one ADDED and one terminal event, every successful
  ``decide()`` shows up as that request's recorded decision, every update shows up as a
  ChangeRecord chain, and ``get_operation``/``list_events`` agree with the stream.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest
from conftest import RESOURCE as R

from operation_dispatcher import (
    PENDING,
    DispatchEvent,
    EventType,
    ExecutionOutcome,
    ExecutionState,
    InvalidTransition,
    Operation,
    OperationDispatcher,
    OperationNotCurrent,
    OperationNotUpdatable,
    RequestClosed,
    RequestDecision,
    TerminationReason,
    UnknownRequest,
)
from operation_dispatcher.lifecycle import TRANSITIONS

N_OPS = 10_000
N_THREADS = 8
REQUEST_TIMEOUT = 0.2  # an unanswered PENDING request is denied ("timeout") after this
BACKLOG = 48  # workers wait while more operations than this are unfinished
IGNORED_BUDGET = 12  # PENDING requests nobody answers: each stalls its waiter REQUEST_TIMEOUT
SEED = int(os.environ.get("CONCURRENCY_SEED", "20240611"))
WAIT = 30.0  # bound of every wait for a condition; never reached when all is well

TRIGGER_OF = {
    EventType.OPERATION_STARTED: "start",
    EventType.OPERATION_PAUSED: "pause",
    EventType.OPERATION_RESUMED: "resume",
    EventType.OPERATION_COMPLETED: "complete",
    EventType.OPERATION_FAILED: "fail",
    EventType.OPERATION_CANCELLED: "cancel",
}
OUTCOME_OF = {
    EventType.OPERATION_COMPLETED: ExecutionOutcome.SUCCESS,
    EventType.OPERATION_FAILED: ExecutionOutcome.FAILURE,
    EventType.OPERATION_CANCELLED: ExecutionOutcome.CANCELLED,
}
TERMINAL = frozenset(OUTCOME_OF)
DENIED = frozenset(
    {
        EventType.OPERATION_START_DENIED,
        EventType.OPERATION_CANCEL_DENIED,
        EventType.OPERATION_PAUSE_DENIED,
        EventType.OPERATION_RESUME_DENIED,
    }
)


class Harness:
    """Everything the threads share, and the callbacks the dispatcher calls."""

    def __init__(self) -> None:
        self.cond = threading.Condition()  # guards the fields down to `workers_done`
        self.events: list[DispatchEvent] = []
        self.finished: collections.Counter[UUID] = collections.Counter()
        self.open: dict[UUID, None] = {}  # added and not finished yet, in add order
        self.recorded_requests: dict[UUID, DispatchEvent] = {}
        self.to_decide: collections.deque[UUID] = collections.deque()
        self.progress = 0  # worker actions so far (the completer paces itself on them)
        self.pacing = False  # the completer waits for worker actions
        self.workers_done = False

        self.callback_rng = random.Random(SEED)
        self.final = threading.Event()  # from now on the callback approves everything
        self.ignored = 0
        self.decided: dict[UUID, bool] = {}  # request id -> what a successful decide() said
        self.started: queue.SimpleQueue[UUID | None] = queue.SimpleQueue()
        self.ids: list[UUID] = []  # every added id (list.append is atomic)
        self.initial: dict[UUID, tuple[int, dict[str, Any]]] = {}  # priority, payload
        self.errors: list[BaseException] = []  # raised in a worker or the completer
        self.dispatcher: OperationDispatcher | None = None
        # start request id -> (priority, payload) of the operation when the callback ran
        self.seen: dict[UUID, tuple[int, dict[str, Any]]] = {}

    # ------------------------------------------------------------------ dispatcher callbacks
    def on_request(self, event: DispatchEvent) -> Any:
        """Mostly approve at once; deny rarely; often PENDING, answered by a worker's
        decide() (or, a dozen times, by nobody: it times out)."""
        if event.event_type is EventType.OPERATION_START_REQUESTED:
            assert self.dispatcher is not None
            op = self.dispatcher.get_operation(event.operation_id)  # calling back is allowed
            assert op is not None
            self.seen[event.id] = (op.priority, op.payload)
        if self.final.is_set():
            return True
        rng = self.callback_rng
        roll = rng.random()
        if roll < 0.02:
            return False
        if roll < 0.30:
            if self.ignored < IGNORED_BUDGET and rng.random() < 0.004:
                self.ignored += 1
            else:
                with self.cond:
                    self.to_decide.append(event.id)
                    self.cond.notify_all()
            return PENDING
        if roll < 0.35:
            return RequestDecision(True, "fine")
        if roll < 0.40:
            return {"accepted": True, "reasoning": "dict"}
        return True

    def on_event(self, event: DispatchEvent) -> None:
        """The subscriber: runs on the dispatcher's event thread, in emission order."""
        kind = event.event_type
        with self.cond:
            self.events.append(event)
            if kind.is_request:
                self.recorded_requests[event.id] = event
            elif kind in TERMINAL:
                self.finished[event.operation_id] += 1
                self.open.pop(event.operation_id, None)
            self.cond.notify_all()
        if kind is EventType.OPERATION_STARTED:
            self.started.put(event.operation_id)

    # ------------------------------------------------------------------ helpers
    def crowded(self) -> bool:
        return len(self.open) >= BACKLOG

    def may_act(self, d: OperationDispatcher) -> bool:
        """Whether a worker may act now (lock held). While many operations are open, workers
        wait, so that most operations get dispatched rather than pile up to be cancelled at
        the end; but they act when the dispatcher may be waiting for them: a PENDING request
        to answer, the completer pacing itself on their actions, the dispatcher paused."""
        return not self.crowded() or bool(self.to_decide) or self.pacing or d.is_paused

    def tick(self) -> None:
        with self.cond:
            self.progress += 1
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, timeout=WAIT), f"timed out waiting for {what}"

    def answer(
        self, d: OperationDispatcher, request_id: UUID, accepted: bool, again: bool = False
    ) -> None:
        try:
            d.decide(request_id, accepted, reasoning="from a worker")
        except (RequestClosed, UnknownRequest):
            return  # it timed out first
        self.decided[request_id] = accepted
        if again:  # a second answer is refused, whatever it says
            with pytest.raises((RequestClosed, UnknownRequest)):
                d.decide(request_id, not accepted, reasoning="second answer")

    def pick(self, rng: random.Random) -> UUID | None:
        """An operation that is still open, now and then any operation at all."""
        with self.cond:
            if self.open and rng.random() < 0.9:
                return rng.choice(list(self.open))
        return rng.choice(self.ids) if self.ids else None


def guarded(fn: Callable[..., None]) -> Callable[..., None]:
    def run(h: Harness, *args: Any) -> None:
        try:
            fn(h, *args)
        except BaseException as exc:  # pragma: no cover - reported by the test
            h.errors.append(exc)
            raise

    return run


ACTIONS = ("add", "cancel", "pause", "resume", "update", "decide", "halt", "go")
WEIGHTS = (30, 10, 8, 12, 10, 16, 0.3, 1.0)


@guarded
def worker(h: Harness, d: OperationDispatcher, index: int, quota: int) -> None:
    rng = random.Random(SEED * 31 + index)
    added = 0
    while added < quota:
        with h.cond:
            assert h.cond.wait_for(lambda: h.may_act(d), timeout=WAIT), "no progress"
            crowded = h.crowded()
        if h.to_decide and (crowded or rng.random() < 0.5):
            action = "decide"
        elif crowded and d.is_paused:
            action = "go"
        else:
            action = rng.choices(ACTIONS, WEIGHTS)[0]
            while crowded and action == "add":
                action = rng.choices(ACTIONS, WEIGHTS)[0]
        if action == "add":
            count = min(quota - added, 1 if rng.random() < 0.8 else rng.randint(2, 4))
            ops = [
                Operation(
                    resource_id=R,
                    priority=rng.randint(-3, 3),
                    payload={"worker": index, "n": added + i},
                )
                for i in range(count)
            ]
            with h.cond:  # so that `open` never holds an operation that finished already
                stored = [d.add_operation(ops[0])] if count == 1 else d.add_operations(ops)
                for op in stored:
                    h.initial[op.id] = (op.priority, op.payload)
                    h.ids.append(op.id)
                    h.open[op.id] = None
            added += count
        elif action == "cancel":
            target = h.pick(rng)
            if rng.random() < 0.2:
                current = d.current_operation
                target = current.id if current is not None else target
            if target is not None:
                d.cancel_operation(target, TerminationReason.USER_REQUEST)
        elif action in ("pause", "resume"):
            current = d.current_operation
            if current is not None:
                method = d.pause_operation if action == "pause" else d.resume_operation
                try:
                    method(current.id)
                except (OperationNotCurrent, InvalidTransition):
                    pass  # it finished, or changed state, meanwhile
        elif action == "update":
            target = h.pick(rng)
            if target is not None:
                if rng.random() < 0.5:
                    updates: dict[str, Any] = {"priority": rng.randint(-3, 3)}
                else:
                    updates = {"payload": {"worker": index, "updated": rng.random()}}
                try:
                    d.update_operation(target, updates)
                except OperationNotUpdatable:
                    pass  # running or finished by now
        elif action == "decide":
            try:
                request_id = h.to_decide.popleft()
            except IndexError:
                pass  # another worker took it
            else:
                h.answer(d, request_id, rng.random() < 0.9, again=rng.random() < 0.1)
        elif action == "halt":
            d.pause_dispatcher_runtime()
        else:
            d.resume_dispatcher_runtime()
        h.tick()


@guarded
def completer(h: Harness, d: OperationDispatcher) -> None:
    """Completes (or fails) every operation that starts; for a third of them only after a few
    more worker actions, so that pauses, resumes and cancels of the current operation, and
    updates of a paused one, get their chance."""
    rng = random.Random(SEED + 7)
    while True:
        op_id = h.started.get()
        if op_id is None:
            return
        if rng.random() < 0.35:
            with h.cond:
                h.pacing = True
                h.cond.notify_all()
                target = h.progress + rng.randint(1, 12)
                h.cond.wait_for(lambda t=target: h.workers_done or h.progress >= t, WAIT)
                h.pacing = False
        try:
            if rng.random() < 0.9:
                d.complete_operation(op_id)
            else:
                d.fail_operation(op_id, TerminationReason.EXTERNAL_ERROR)
        except OperationNotCurrent:
            pass  # cancelled meanwhile


def finish_everything(h: Harness, d: OperationDispatcher) -> None:
    """Approve everything from now on and cancel what is left until every operation ended."""
    h.final.set()
    with h.cond:
        h.workers_done = True
        h.cond.notify_all()
    all_ids = list(h.ids)
    deadline = time.monotonic() + WAIT
    while True:
        for request in d.pending_requests():
            h.answer(d, request.request_id, True)
        d.resume_dispatcher_runtime()  # no-op unless someone (or max retries) paused it
        with h.cond:
            left = [i for i in all_ids if h.finished[i] == 0]
        if not left:
            return
        assert time.monotonic() < deadline, f"{len(left)} operations never finished"
        for op_id in left:
            d.cancel_operation(op_id, TerminationReason.USER_REQUEST)
        # Wait until the subscriber saw what these cancels emitted; a cancel refused by a
        # cooldown left over from the random phase is simply retried by the next sweep.
        assert d.drain_events(WAIT)


def check_stream(h: Harness, d: OperationDispatcher) -> dict[str, int]:
    events = h.events
    ids = set(h.ids)
    stats: collections.Counter[str] = collections.Counter()
    assert events[0].event_type is EventType.OPERATION_DISPATCHER_STARTED
    assert events[-1].event_type is EventType.OPERATION_DISPATCHER_STOPPED

    # --- at most one operation RUNNING or PAUSED; each started on its own approval
    active: UUID | None = None
    ever_started: set[UUID] = set()
    last_start_request: DispatchEvent | None = None
    paused = False
    for event in events:
        kind, op_id = event.event_type, event.operation_id
        if kind.is_dispatcher_event:
            assert op_id is None
            if kind is EventType.OPERATION_DISPATCHER_PAUSED:
                paused = True
            elif kind is EventType.OPERATION_DISPATCHER_RESUMED:
                paused = False
            continue
        assert op_id in ids, f"event {kind} for an operation nobody added"
        if kind is EventType.OPERATION_STARTED:
            assert active is None, f"{op_id} started while {active} was still active"
            assert not paused, f"{op_id} started while the dispatcher was paused"
            assert op_id not in ever_started, f"{op_id} started twice"
            request = last_start_request
            assert request is not None, f"{op_id} started without a request"
            assert request.operation_id == op_id, "started another operation than approved"
            assert request.meta_data["request_decision"]["accepted"] is True
            assert "void_reason" not in request.meta_data
            active = op_id
            ever_started.add(op_id)
        elif kind in (EventType.OPERATION_PAUSED, EventType.OPERATION_RESUMED):
            assert active == op_id, f"{kind} of {op_id}, which is not the active operation"
        elif kind in TERMINAL:
            if active == op_id:
                active = None
            else:
                assert op_id not in ever_started, f"{op_id} finished twice or out of its turn"
        elif kind is EventType.OPERATION_START_REQUESTED:
            last_start_request = event
        stats[kind.value] += 1
        if kind.is_request:
            decision = event.meta_data["request_decision"]
            if decision["reasoning"] == "timeout":
                stats["timeouts"] += 1
            if "void_reason" in event.meta_data:
                stats["void"] += 1
    assert active is None, f"{active} still active at the end"

    # --- per operation: ADDED first, a legal path through TRANSITIONS, one terminal event
    per_op: dict[UUID, list[DispatchEvent]] = collections.defaultdict(list)
    for event in events:
        if event.operation_id is not None:
            per_op[event.operation_id].append(event)
    assert set(per_op) == ids
    for op_id in ids:
        seq = per_op[op_id]
        assert seq[0].event_type is EventType.OPERATION_ADDED, seq[0].event_type
        assert sum(e.event_type is EventType.OPERATION_ADDED for e in seq) == 1
        assert sum(e.event_type in TERMINAL for e in seq) == 1, f"{op_id}: terminal events"
        assert h.finished[op_id] == 1
        state = ExecutionState.QUEUED
        priority, payload = h.initial[op_id]
        last_request: DispatchEvent | None = None
        for event in seq[1:]:
            kind = event.event_type
            if kind is EventType.OPERATION_START_REQUESTED:
                last_request = event
            elif kind is EventType.OPERATION_STARTED:
                # started as it was when asked: a change meanwhile voids the approval
                assert last_request is not None
                assert h.seen[last_request.id] == (priority, payload), f"{op_id} changed"
            state_changes = [c for c in event.changes if c.field == "state"]
            trigger = TRIGGER_OF.get(kind)
            if trigger is None:
                assert not state_changes, f"{kind} changed the state of {op_id}"
                if state is ExecutionState.COMPLETED:
                    # only the late echo of a handshake asked before the end may follow it
                    assert kind.is_request or kind in DENIED, f"{kind} after the end of {op_id}"
                if kind is EventType.OPERATION_UPDATED:
                    assert state in (ExecutionState.QUEUED, ExecutionState.PAUSED), state
                    for change in event.changes:
                        if change.field == "priority":
                            assert change.old_value == priority
                            priority = change.new_value
                        elif change.field == "payload":
                            assert change.old_value == payload
                            payload = change.new_value
                continue
            assert len(state_changes) == 1, f"{kind} of {op_id}: {event.changes}"
            change = state_changes[0]
            sources, dest = TRANSITIONS[trigger]
            assert change.old_value == state, f"{op_id}: {kind} from {change.old_value}"
            assert state in sources, f"{op_id}: {trigger} is not allowed from {state}"
            assert change.new_value == dest
            state = dest
            if kind in TERMINAL:
                outcomes = [c.new_value for c in event.changes if c.field == "outcome"]
                assert outcomes == [OUTCOME_OF[kind]]
        assert state is ExecutionState.COMPLETED

        # --- the dispatcher's own view agrees with the stream
        op = d.get_operation(op_id)
        assert op is not None, f"{op_id} was lost"
        terminal = next(e for e in seq if e.event_type in TERMINAL)
        assert op.state is ExecutionState.COMPLETED
        assert op.outcome is OUTCOME_OF[terminal.event_type]
        assert (op.start_time is not None) is (op_id in ever_started)
        assert op.finish_time is not None
        assert (op.priority, op.payload) == (priority, payload)
        assert [e.id for e in d.list_events(op_id)] == [e.id for e in seq]
        stats["operations"] += 1
        stats["started_operations"] += op_id in ever_started

    # --- every successful decide() is the recorded decision of its request
    for request_id, accepted in h.decided.items():
        recorded = h.recorded_requests[request_id]
        decision = recorded.meta_data["request_decision"]
        assert decision["accepted"] is accepted
        assert decision["reasoning"] == "from a worker"
    stats["decided"] = len(h.decided)
    return dict(stats)


@pytest.mark.slow
def test_eight_threads_ten_thousand_operations(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="operation_dispatcher")
    h = Harness()
    d = OperationDispatcher(
        R,
        on_request_callback=h.on_request,
        start_request_max_retries=50,
        start_request_retry_cooldown_seconds=0.001,
        request_event_timeout_seconds=REQUEST_TIMEOUT,
        event_retention=1_000_000,
        operation_retention=N_OPS + 100,
    )
    h.dispatcher = d
    d.subscribe(h.on_event, include_requests=True)
    threads = [
        threading.Thread(target=worker, args=(h, d, i, N_OPS // N_THREADS), name=f"worker-{i}")
        for i in range(N_THREADS)
    ]
    done = threading.Thread(target=completer, args=(h, d), name="completer")
    started_at = time.monotonic()
    d.start()
    try:
        done.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT * 4)
            assert not t.is_alive(), f"{t.name} is stuck"
        assert not h.errors, h.errors
        assert len(h.ids) == N_OPS == len(set(h.ids))
        finish_everything(h, d)
        # every answered request is acted on and recorded; none is left open
        h.wait_for(lambda: set(h.decided) <= set(h.recorded_requests), "decided requests")
        h.wait_for(lambda: not d.pending_requests(), "open requests")
        state = d.get_state()
        assert state.queue_size == 0 and state.current_operation is None
        assert d.get_schedule() == []
    finally:
        h.started.put(None)
        done.join(WAIT)
        d.stop(timeout=WAIT)
    assert not done.is_alive()
    assert not h.errors, h.errors

    # A failed dispatcher step or a subscriber that raised is only logged: it must not happen.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors[:5]]

    stats = check_stream(h, d)
    elapsed = time.monotonic() - started_at
    print(f"\n{elapsed:.1f} s: {sorted(stats.items())}")
    # The run exercised what it claims to (each of these happens dozens to thousands of times).
    assert stats["operations"] == N_OPS
    for key in (
        "operation_started", "operation_completed", "operation_failed", "operation_cancelled",
        "operation_paused", "operation_resumed", "operation_updated", "operation_start_denied",
        "decided", "timeouts", "void",
    ):
        assert stats.get(key, 0) > 0, key

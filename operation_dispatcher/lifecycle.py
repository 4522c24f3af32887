"""The per-operation state machine, built on ``transitions``.

Why it looks the way it does (design.md section 3): a ``transitions.Machine`` per operation costs
about half a millisecond and 12-15 KiB, and one shared machine with thousands of models scans a
list on every ``add_model``. So there is ONE machine per :class:`OperationLifecycle`, and its
models are a handful of small :class:`_Binding` stand-ins. An operation is bound to a stand-in only
for the length of one trigger, then unbound; the stand-ins are reused. No ``LockedMachine``
either: the dispatcher's own lock already serialises triggers on its operations, and two threads
firing triggers on different operations each take their own stand-in.

States: QUEUED, RUNNING, PAUSED, COMPLETED. Outcome (SUCCESS, FAILURE, CANCELLED) and
termination_reason are not states; the trigger that completes an operation sets them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol, cast

from transitions import EventData, Machine, MachineError

from .errors import InvalidTransition
from .models import (
    ChangeRecord,
    ExecutionOutcome,
    ExecutionState,
    Operation,
    TerminationReason,
    change_record,
    to_utc,
    utcnow,
)

QUEUED, RUNNING, PAUSED, COMPLETED = (
    ExecutionState.QUEUED,
    ExecutionState.RUNNING,
    ExecutionState.PAUSED,
    ExecutionState.COMPLETED,
)

#: trigger -> (states it may fire from, state it leads to). The single source of the machine,
#: its diagram and the "allowed from" part of every InvalidTransition message.
TRANSITIONS: dict[str, tuple[tuple[ExecutionState, ...], ExecutionState]] = {
    "start": ((QUEUED,), RUNNING),
    "pause": ((RUNNING,), PAUSED),
    "resume": ((PAUSED,), RUNNING),
    "complete": ((RUNNING, PAUSED), COMPLETED),
    "fail": ((QUEUED, RUNNING, PAUSED), COMPLETED),
    "cancel": ((QUEUED, RUNNING, PAUSED), COMPLETED),
}
TRIGGERS = tuple(TRANSITIONS)

#: Fields a trigger may change, in Operation field order (the order of ChangeRecords; fire()
#: diffs them one by one in this order).
_TRACKED = ("state", "outcome", "termination_reason", "start_time", "finish_time")


class _Binding:
    """A transitions model standing in for one Operation during one trigger."""

    __slots__ = ("state", "operation", "now", "reason", "__dict__")

    def __init__(self) -> None:
        self.state: str = QUEUED.value
        self.operation: Operation | None = None
        self.now: datetime | None = None
        self.reason: TerminationReason | None = None


class _Bound(Protocol):
    """A :class:`_Binding` while a trigger runs: ``fire()`` has set its operation and time."""

    state: str
    operation: Operation
    now: datetime
    reason: TerminationReason | None


# Callbacks of the machine's transitions (send_event=True: each gets the EventData, whose model is
# the binding). One per transition, since each callback costs the machine a few microseconds.
# They only touch the bound operation: they never block and never call out. The machine's only
# models are bindings, and it calls back only from inside fire(): the casts say so to mypy (the
# stubs type a model as object).
_STATES = {s.value: s for s in ExecutionState}


def _on_start(event: EventData) -> None:
    binding = cast(_Bound, event.model)
    op = binding.operation
    op.state = _STATES[binding.state]
    if op.start_time is None:
        op.start_time = binding.now


def _sync_state(event: EventData) -> None:
    binding = cast(_Bound, event.model)
    binding.operation.state = _STATES[binding.state]


def _finisher(outcome: ExecutionOutcome, default_reason: TerminationReason | None) -> Any:
    def finish(event: EventData) -> None:
        binding = cast(_Bound, event.model)
        op = binding.operation
        op.state = _STATES[binding.state]
        op.outcome = outcome
        op.termination_reason = (
            TerminationReason.NONE if default_reason is None else binding.reason or default_reason
        )
        op.finish_time = binding.now
        if op.start_time is not None and op.finish_time < op.start_time:
            op.finish_time = op.start_time

    return finish


_AFTER = {
    "start": _on_start,
    "complete": _finisher(ExecutionOutcome.SUCCESS, None),
    "fail": _finisher(ExecutionOutcome.FAILURE, TerminationReason.INTERNAL_ERROR),
    "cancel": _finisher(ExecutionOutcome.CANCELLED, TerminationReason.INTERNAL_ERROR),
}


class OperationLifecycle:
    """Fires lifecycle triggers on operations through one shared ``transitions`` machine.

    >>> lifecycle = OperationLifecycle()
    >>> changes = lifecycle.fire(operation, "start")   # QUEUED -> RUNNING, start_time set
    >>> lifecycle.fire(operation, "start")             # raises InvalidTransition
    """

    def __init__(self) -> None:
        self._machine = Machine(
            model=None,
            states=[s.value for s in ExecutionState],
            transitions=[
                {
                    "trigger": trigger,
                    "source": [s.value for s in sources],
                    "dest": dest.value,
                    "after": [_AFTER.get(trigger, _sync_state)],
                }
                for trigger, (sources, dest) in TRANSITIONS.items()
            ],
            initial=QUEUED.value,
            auto_transitions=False,
            ignore_invalid_triggers=False,
            send_event=True,
        )
        # The machine's Event objects, called directly: the same processing as the model's
        # trigger method, without the extra partial() hop.
        self._events = {trigger: self._machine.events[trigger] for trigger in TRANSITIONS}
        self._free: list[_Binding] = []

    def _acquire(self) -> _Binding:
        try:
            return self._free.pop()  # list.pop/append are atomic: safe across threads
        except IndexError:
            binding = _Binding()
            self._machine.add_model(binding, initial=QUEUED.value)
            return binding

    @property
    def bound_models(self) -> int:
        """How many stand-in models the machine holds (stays at the peak concurrency)."""
        return len(self._machine.models)

    def fire(
        self,
        operation: Operation,
        trigger: str,
        *,
        now: datetime | None = None,
        termination_reason: TerminationReason | None = None,
    ) -> list[ChangeRecord]:
        """Move ``operation`` through ``trigger`` and return what changed.

        Raises :class:`InvalidTransition` (a ValueError) naming the operation, its state and the
        trigger when the state does not allow it; the operation is then left untouched.
        """
        event = self._events.get(trigger)
        if event is None:
            raise InvalidTransition(operation.id, operation.state, trigger)
        # what a trigger may change (_TRACKED), read into locals: diffing them one by one
        # afterwards costs about half of building and zipping two tuples
        state, outcome, reason = operation.state, operation.outcome, operation.termination_reason
        started, finished = operation.start_time, operation.finish_time
        binding = self._acquire()
        binding.operation = operation
        binding.now = utcnow() if now is None else to_utc(now, "now")
        binding.reason = termination_reason
        binding.state = operation.state._value_  # the plain attribute: .value is a property
        try:
            event.trigger(binding)
        except MachineError:
            sources, _ = TRANSITIONS[trigger]
            raise InvalidTransition(operation.id, operation.state, trigger, sources) from None
        finally:
            binding.operation = None
            binding.now = None
            self._free.append(binding)
        changes: list[ChangeRecord] = []
        if operation.state is not state:  # enum members: identity is equality
            changes.append(change_record("state", state, operation.state))
        if operation.outcome is not outcome:
            changes.append(change_record("outcome", outcome, operation.outcome))
        if operation.termination_reason is not reason:
            changes.append(
                change_record("termination_reason", reason, operation.termination_reason)
            )
        if operation.start_time != started:
            changes.append(change_record("start_time", started, operation.start_time))
        if operation.finish_time != finished:
            changes.append(change_record("finish_time", finished, operation.finish_time))
        return changes


def allowed_triggers(state: ExecutionState | str) -> list[str]:
    """The triggers an operation in ``state`` may fire, in machine order."""
    state = ExecutionState(state)
    return [t for t, (sources, _) in TRANSITIONS.items() if state in sources]


def mermaid_diagram() -> str:
    """The state machine as Mermaid ``stateDiagram-v2`` text (for the README and dashboard)."""
    lines = ["stateDiagram-v2", f"    [*] --> {QUEUED.value}"]
    for trigger, (sources, dest) in TRANSITIONS.items():
        for source in sources:
            lines.append(f"    {source.value} --> {dest.value}: {trigger}")
    lines.append(f"    {COMPLETED.value} --> [*]")
    return "\n".join(lines) + "\n"


__all__ = [
    "OperationLifecycle",
    "TRANSITIONS",
    "TRIGGERS",
    "allowed_triggers",
    "mermaid_diagram",
]

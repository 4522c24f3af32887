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

from transitions import Machine, MachineError

from .errors import InvalidTransition
from .models import (
    ChangeRecord,
    ExecutionOutcome,
    ExecutionState,
    Operation,
    TerminationReason,
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

#: Fields a trigger may change, in Operation field order (the order of ChangeRecords).
_TRACKED = ("state", "outcome", "termination_reason", "start_time", "finish_time")


class _Binding:
    """A transitions model standing in for one Operation during one trigger."""

    def __init__(self) -> None:
        self.state: str = QUEUED.value
        self.operation: Operation | None = None
        self.now: datetime | None = None
        self.reason: TerminationReason | None = None

    # Callbacks named in the machine's transitions; they run inside ``trigger`` and only touch
    # the bound operation, so they never block and never call out.
    def _on_start(self) -> None:
        op = self.operation
        assert op is not None
        if op.start_time is None:
            op.start_time = self.now

    def _on_complete(self) -> None:
        self._finish(ExecutionOutcome.SUCCESS, TerminationReason.NONE)

    def _on_fail(self) -> None:
        self._finish(ExecutionOutcome.FAILURE, self.reason or TerminationReason.INTERNAL_ERROR)

    def _on_cancel(self) -> None:
        self._finish(ExecutionOutcome.CANCELLED, self.reason or TerminationReason.INTERNAL_ERROR)

    def _finish(self, outcome: ExecutionOutcome, reason: TerminationReason) -> None:
        op = self.operation
        assert op is not None
        op.outcome = outcome
        op.termination_reason = reason
        op.finish_time = self.now
        if op.start_time is not None and op.finish_time < op.start_time:
            op.finish_time = op.start_time

    def _sync_state(self) -> None:
        assert self.operation is not None
        self.operation.state = ExecutionState(self.state)


_AFTER = {
    "start": "_on_start",
    "complete": "_on_complete",
    "fail": "_on_fail",
    "cancel": "_on_cancel",
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
                    "after": ["_sync_state", *([_AFTER[trigger]] if trigger in _AFTER else [])],
                }
                for trigger, (sources, dest) in TRANSITIONS.items()
            ],
            initial=QUEUED.value,
            auto_transitions=False,
            ignore_invalid_triggers=False,
        )
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
        if trigger not in TRANSITIONS:
            raise InvalidTransition(operation.id, operation.state, trigger)
        sources, _ = TRANSITIONS[trigger]
        if operation.state not in sources:
            raise InvalidTransition(operation.id, operation.state, trigger, sources)
        before = tuple(getattr(operation, name) for name in _TRACKED)
        binding = self._acquire()
        binding.operation = operation
        binding.now = utcnow() if now is None else to_utc(now, "now")
        binding.reason = termination_reason
        binding.state = operation.state.value
        try:
            getattr(binding, trigger)()
        except MachineError as exc:  # the pre-check above makes this unreachable in practice
            raise InvalidTransition(operation.id, operation.state, trigger, sources) from exc
        finally:
            binding.operation = None
            binding.now = None
            self._free.append(binding)
        return [
            ChangeRecord(field=name, old_value=old, new_value=getattr(operation, name))
            for name, old in zip(_TRACKED, before, strict=True)
            if getattr(operation, name) != old
        ]


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

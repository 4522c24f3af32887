"""Recovery: going on from the journal after a restart, or after a failed write.

It replaces the in-memory state by what the journal holds, applies the recovery policy to an
operation that was RUNNING or PAUSED when the last process ended (never silently run again), and
keeps the name of the executor that was running it until that bridge re-attaches or the loop
starts without it. Lock held by the caller throughout.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from .approvals import RequestKind
from .dependencies import DependencyIndex
from .engine import DispatchEngine
from .errors import JournalError
from .handshake import Handshake
from .lifecycle import OperationLifecycle
from .models import EventType, ExecutionState, Operation, TerminationReason
from .queue import DispatchQueue
from .runstate import PauseSwitch
from .unit import UnitOfWork

if TYPE_CHECKING:
    from .journal import Journal, SavedState


class Recovery:
    """Restores memory from a journal and settles interrupted operations (see module doc)."""

    def __init__(
        self,
        *,
        journal: Journal,
        policy: str,
        retention: int,
        queue: DispatchQueue,
        dependencies: DependencyIndex,
        engine: DispatchEngine,
        handshake: Handshake,
        lifecycle: OperationLifecycle,
        pause: PauseSwitch,
        unit: UnitOfWork,
        log: logging.Logger,
    ) -> None:
        self._journal = journal
        self._policy = policy
        self._retention = retention
        self._queue = queue
        self._deps = dependencies
        self._engine = engine
        self._handshake = handshake
        self._lifecycle = lifecycle
        self._pause = pause
        self._unit = unit
        self._log = log
        #: the executor that ran the recovered operation, until it re-attaches or the loop starts
        self.orphan_executor: str | None = None

    def restore(self, saved: SavedState) -> None:
        """Replace the in-memory state by what the journal holds.

        Open approval requests are dropped: their answers will find no request to act on.
        """
        queue = self._queue
        queue.clear()
        queue.clear_history()
        queue.release_pulled()
        self._deps.clear()
        self._engine.reset()
        self._handshake.clear()
        for op in saved.finished:
            queue.archive(op)
        queue.load(saved.queued)
        for op in saved.queued:
            self._deps.add(op)
        if saved.active:
            queue.restore_pulled(saved.active[-1])
            self._engine.schedule_timeout(saved.active[-1])
            # whoever started it still reports its end (a re-attached bridge, or by force)
            self._engine.running_executor = self._journal.executor_of(saved.active[-1].id)
        now_wall, now_mono = time.time(), time.monotonic()
        self._handshake.retry.load(
            (RequestKind(row.kind), row.operation_id, row.denials,
             now_mono + (row.cooldown_until - now_wall))
            for row in saved.retry
        )
        if saved.paused is not None:
            self._pause.load(saved.paused)

    def reload(self, exc: JournalError) -> str | None:
        """After a failed write: make memory what the journal holds again.

        Returns None when that worked; else why memory can no longer be trusted (the journal
        cannot even be read back): the dispatcher then starts nothing and refuses every change.
        """
        self._log.error("%s; reloading the last committed state", exc)
        try:
            self.restore(self._journal.load(self._retention))
        except Exception as reload_error:
            cause = getattr(reload_error, "cause", None) or repr(reload_error)
            failure = (
                f"unusable: a failed write could not be undone in memory ({cause}); "
                "open the dispatcher again"
            )
            self._log.critical("journal %s: %s", self._journal.path, failure)
            return failure
        return None

    def recover(self) -> None:
        """Start from the journal; an operation that was RUNNING or PAUSED when the last process
        died is never silently run again (at-most-once start). If an executor bridge was running
        it, the operation waits for that bridge to re-attach (nothing is sent again) until the
        loop starts; otherwise, and if the bridge is not back by then, policy "fail" fails it
        with INTERRUPTED and "pause" keeps it PAUSED for an operator to resume or cancel."""
        saved = self._journal.load(self._retention)
        with self._unit:
            start_paused = self._pause.is_set
            self.restore(saved)
            self._pause.load(self._pause.is_set or start_paused)
            op = self._queue.pulled_operation
            if op is None:
                return
            executor = self._journal.executor_of(op.id)
            if executor is not None:
                self.orphan_executor = executor
                self._log.warning(
                    "operation %s was %s on executor %r when the last process ended; it waits "
                    "for %r to re-attach (nothing is sent again)",
                    op.id, op.state.value, executor, executor,
                )
                return
            self._apply(op, {})

    def _apply(self, op: Operation, meta: dict[str, Any]) -> None:
        """The recovery policy for an interrupted operation nobody re-attached to."""
        meta = {"recovered": True, "previous_state": op.state.value, **meta}
        if self._policy == "fail":
            self._engine.finish(
                op, "fail", EventType.OPERATION_FAILED, TerminationReason.INTERRUPTED, meta
            )
        elif op.state is ExecutionState.RUNNING:
            changes = self._lifecycle.fire(op, "pause")
            self._unit.emit(EventType.OPERATION_PAUSED, op, changes, meta)

    def reattach(self, name: str) -> Operation | None:
        """Executor ``name`` is back: the recovered operation it ran, if any (it finishes it)."""
        op = self._queue.pulled_operation
        if self.orphan_executor != name or op is None:
            return None
        self.orphan_executor = None
        self._log.warning(
            "executor %r re-attached to operation %s (%s); it finishes it",
            name, op.id, op.state.value,
        )
        return op

    def settle_orphan(self) -> None:
        """At loop start: the executor of a recovered operation did not re-attach, so the
        recovery policy applies to it now."""
        executor, self.orphan_executor = self.orphan_executor, None
        op = self._queue.pulled_operation
        if executor is None or op is None:
            return
        self._log.warning(
            "executor %r did not re-attach to operation %s; recovery %r applies",
            executor, op.id, self._policy,
        )
        self._apply(op, {"executor": executor, "executor_reattached": False})


__all__ = ["Recovery"]

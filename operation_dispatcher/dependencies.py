"""DependencyIndex: which queued operations wait for which provider, and where each stands.

The queue knows operations; this part knows the edges between them (provider -> dependents),
so a finished provider releases or fails exactly its dependents, in O(their number).
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from .keys import DependencyStatus
from .models import (
    DependencyType,
    ExecutionOutcome,
    ExecutionState,
    Operation,
    OperationDependency,
)

Finder = Callable[[UUID], "Operation | None"]


class DependencyIndex:
    """Provider id -> ids of the queued operations that depend on it. Lock held by the caller."""

    def __init__(self, find: Finder) -> None:
        self._find = find  # the dispatcher's one lookup: queue, then event store
        self._dependents: dict[UUID, set[UUID]] = {}

    def add(self, op: Operation) -> None:
        for dep in op.dependencies:
            self._dependents.setdefault(dep.depends_on_operation_id, set()).add(op.id)

    def remove(self, op: Operation) -> None:
        for dep in op.dependencies:
            ids = self._dependents.get(dep.depends_on_operation_id)
            if ids is not None:
                ids.discard(op.id)
                if not ids:
                    del self._dependents[dep.depends_on_operation_id]

    def dependents_of(self, provider_id: UUID) -> set[UUID]:
        """A copy of the ids waiting for ``provider_id``."""
        return set(self._dependents.get(provider_id, ()))

    def forget(self, provider_id: UUID) -> None:
        """The provider is done with: nobody waits for it any more."""
        self._dependents.pop(provider_id, None)

    def clear(self) -> None:
        self._dependents.clear()

    def status(self, dep: OperationDependency) -> DependencyStatus:
        """Whether ``dep`` is met, still to wait for, or failed for good."""
        provider = self._find(dep.depends_on_operation_id)
        if provider is None:
            # Gone from memory and journal: it finished long ago. Had it failed, its dependents
            # would have been failed right then, so the dependency is met.
            return DependencyStatus.OK
        if dep.dependency_type is DependencyType.START_TO_START:
            if provider.start_time is not None:
                return DependencyStatus.OK
            if provider.state is ExecutionState.COMPLETED:
                return DependencyStatus.FAILED
            return DependencyStatus.WAIT
        if provider.state is ExecutionState.COMPLETED:
            if provider.outcome is ExecutionOutcome.SUCCESS:
                return DependencyStatus.OK
            return DependencyStatus.FAILED
        return DependencyStatus.WAIT


__all__ = ["DependencyIndex"]

"""operation-dispatcher: queue, dispatch and supervise the operations of one physical resource.

Synchronous and thread-based, for controllers without asyncio. The public names are re-exported
here; the HTTP and MCP layers live in subpackages and are imported only when asked for.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .approvals import PENDING, PendingRequest, RequestDecision, RequestKind
from .dispatcher import OperationDispatcher
from .errors import (
    DependencyCycle,
    DependencyError,
    DispatcherError,
    DuplicateOperation,
    ExecutorConflict,
    InvalidTransition,
    JournalError,
    OperationNotCurrent,
    OperationNotFound,
    OperationNotUpdatable,
    RequestClosed,
    ResourceMismatch,
    RunByExecutor,
    ThreadDidNotStop,
    UnknownRequest,
    ValidationError,
)
from .history import HistoryAnalyzer
from .lifecycle import OperationLifecycle, allowed_triggers, mermaid_diagram
from .models import (
    ChangeRecord,
    DependencyType,
    DispatchEvent,
    EventType,
    ExecutionOutcome,
    ExecutionState,
    History,
    Operation,
    OperationDependency,
    OperationDispatcherState,
    OperationProgress,
    TerminationReason,
    TimeWindow,
)
from .queue import DEFAULT_SORT_RULES, DispatchQueue, SortDirection, SortField, SortRule
from .signals import Signal, SignalBoard

__version__ = "0.1.0"


if TYPE_CHECKING:
    from .approval_policy import ApprovalPolicy
    from .journal import Journal
    from .simulation import SimulatedOperationRunner

#: public names imported on first use (design.md section 11: the import stays under 60 ms): the
#: journal pulls in sqlite3, and a dispatcher needs neither a policy nor the simulated runner
_LAZY = {
    "ApprovalPolicy": "approval_policy",
    "Journal": "journal",
    "SimulatedOperationRunner": "simulation",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'operation_dispatcher' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next lookup is a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "PENDING",
    "ApprovalPolicy",
    "HistoryAnalyzer",
    "OperationDispatcher",
    "OperationNotUpdatable",
    "PendingRequest",
    "RequestDecision",
    "RequestKind",
    "Signal",
    "SignalBoard",
    "SimulatedOperationRunner",
    "ChangeRecord",
    "DEFAULT_SORT_RULES",
    "DependencyCycle",
    "DependencyError",
    "DependencyType",
    "DispatchEvent",
    "DispatchQueue",
    "DispatcherError",
    "DuplicateOperation",
    "EventType",
    "ExecutorConflict",
    "ExecutionOutcome",
    "ExecutionState",
    "History",
    "InvalidTransition",
    "Journal",
    "JournalError",
    "Operation",
    "OperationDependency",
    "OperationDispatcherState",
    "OperationProgress",
    "OperationLifecycle",
    "OperationNotCurrent",
    "OperationNotFound",
    "RequestClosed",
    "ResourceMismatch",
    "RunByExecutor",
    "SortDirection",
    "SortField",
    "SortRule",
    "TerminationReason",
    "ThreadDidNotStop",
    "TimeWindow",
    "UnknownRequest",
    "ValidationError",
    "allowed_triggers",
    "mermaid_diagram",
]

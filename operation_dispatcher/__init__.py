"""operation-dispatcher: queue, dispatch and supervise the operations of one physical resource.

Synchronous and thread-based, for controllers without asyncio. The public names are re-exported
here; the HTTP and MCP layers live in subpackages and are imported only when asked for.
"""

from __future__ import annotations

import logging

from .approval_policy import ApprovalPolicy
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
from .simulation import SimulatedOperationRunner

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # The journal pulls in sqlite3; import it only when somebody asks for it.
    if name == "Journal":
        from .journal import Journal

        return Journal
    raise AttributeError(f"module 'operation_dispatcher' has no attribute {name!r}")

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

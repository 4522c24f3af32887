"""Dispatcher error class -> (HTTP status, error code): the one table every interface answers by.

The REST API (``http/errors.py``) and the MQTT link (``mqtt/commands.py``) both report an error
as a status and a code from here, so a central system sees the same ``operation_not_found``
whichever way it asked. Pure: no Flask, no paho.
"""

from __future__ import annotations

from .errors import (
    DependencyError,
    DispatcherError,
    DuplicateOperation,
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

#: Dispatcher error class -> (HTTP status, default code); the first matching row wins.
STATUS_BY_ERROR: tuple[tuple[type[BaseException], int, str], ...] = (
    (OperationNotFound, 404, "operation_not_found"),
    (UnknownRequest, 404, "request_not_found"),
    (RequestClosed, 409, "request_closed"),
    (InvalidTransition, 409, "invalid_transition"),
    (OperationNotCurrent, 409, "operation_not_current"),
    (RunByExecutor, 409, "run_by_executor"),
    (OperationNotUpdatable, 409, "operation_update_denied"),
    (DuplicateOperation, 409, "duplicate_operation"),
    (DependencyError, 400, "invalid_dependency"),
    (ResourceMismatch, 400, "resource_mismatch"),
    (ValidationError, 400, "invalid_request"),
    (JournalError, 503, "journal_unavailable"),
    (ThreadDidNotStop, 500, "thread_did_not_stop"),
    (DispatcherError, 409, "dispatcher_error"),
)


def status_of(exc: BaseException) -> tuple[int, str]:
    """The status and default code of an error (500 ``internal_error`` for anything else)."""
    for error_class, status, code in STATUS_BY_ERROR:
        if isinstance(exc, error_class):
            return status, code
    return 500, "internal_error"


__all__ = ["STATUS_BY_ERROR", "status_of"]

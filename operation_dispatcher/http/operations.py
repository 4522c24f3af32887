"""``/operations...``: queue, inspect, update, cancel, pause and resume operations.

The original's routes, parameters, status codes and JSON shapes (reference section 11), plus
``GET /operations/<id>/explain`` and ``POST /operations/<id>/complete|fail`` (a job finished
by hand). Single-operation answers are an *OperationStatus*:
``{"operation": <Operation>, "is_current_operation": bool}``, built from one snapshot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from ..errors import (
    DependencyError,
    DuplicateOperation,
    InvalidTransition,
    OperationNotCurrent,
    OperationNotFound,
    OperationNotUpdatable,
    ResourceMismatch,
    RunByExecutor,
    ValidationError,
)
from ..models import ExecutionState
from ..models import Operation as CoreOperation
from ..progress import elapsed_seconds
from .errors import ApiError
from .openapi_types import Responses
from .schemas import (
    AddOperationItems,
    CancelOperationCommand,
    CompleteOperationCommand,
    DispatchEventList,
    ErrorResponse,
    ExplainResponse,
    FailOperationCommand,
    History,
    HistoryQuery,
    LifecycleCommand,
    ListOperationsQuery,
    OperationPath,
    OperationStatus,
    OperationStatusList,
    UpdateOperationItem,
)
from .state import api_blueprint, api_state, body_error_code, json_response

if TYPE_CHECKING:
    from ..dispatcher import OperationDispatcher

TAG = Tag(name="Operations", description="queue, inspect and steer the operations")
_ACTIVE = (ExecutionState.RUNNING, ExecutionState.PAUSED)
_LISTED = (ExecutionState.QUEUED, *_ACTIVE)


#: The ``/operations`` routes, shared by every app; each view reads its app's dispatcher.
operations_blueprint: APIBlueprint = api_blueprint("operations", __name__, TAG)
_NOT_FOUND: Responses = {404: ErrorResponse}
_REFUSABLE: Responses = {200: OperationStatus, **_NOT_FOUND, 409: ErrorResponse}


def _dispatcher() -> OperationDispatcher:
    return api_state().dispatcher


def _status(op: CoreOperation) -> dict[str, Any]:
    """The status of one snapshot. The current operation is exactly the one that is RUNNING or
    PAUSED (a resource runs one at a time), so both values come from the same instant: asking
    the dispatcher for its current operation separately could see a later one (an add that
    started at once answered RUNNING with is_current_operation false)."""
    return {"operation": op.to_dict(), "is_current_operation": op.state in _ACTIVE,
            "elapsed_seconds": elapsed_seconds(op)}


def _not_found(operation_id: UUID) -> ApiError:
    """The one 404 for an unknown operation: every route names the id in its details."""
    return ApiError.from_exc(OperationNotFound(operation_id), message="operation not found",
                             details={"operation_id": str(operation_id)})


def _find(operation_id: UUID) -> CoreOperation:
    op = _dispatcher().get_operation(operation_id)
    if op is None:
        raise _not_found(operation_id)
    return op


@operations_blueprint.get(
    "/operations", operation_id="list_operations",
    summary="The current operation, then the queued ones in dispatch order",
    responses={200: OperationStatusList},
)
def list_operations(query: ListOperationsQuery) -> Response:
    # one snapshot of the current operation and the schedule (one lock acquisition)
    ops = [op for op in _dispatcher().get_schedule(include_current=True) if op.state in _LISTED]
    if query.state is not None:
        ops = [op for op in ops if op.state.value == query.state]
    return json_response([_status(op) for op in ops])


@operations_blueprint.get(
    "/operations/current", operation_id="get_current_operation",
    summary="The operation that is RUNNING now (404 when none is, or it is paused)",
    responses={200: OperationStatus, **_NOT_FOUND},
)
def get_current_operation() -> Response:
    dispatcher = _dispatcher()
    current = dispatcher.current_operation
    if current is None or current.state is not ExecutionState.RUNNING:
        raise ApiError(404, "no_running_operation", "no running operation")
    return json_response(_status(current))


@operations_blueprint.get(
    "/operations/history", operation_id="get_history",
    summary="Events of a time window, the most recent `limit` of them",
    responses={200: History},
)
def get_history(query: HistoryQuery) -> Response:
    dispatcher = _dispatcher()
    if (
        query.from_time is not None
        and query.to_time is not None
        and query.from_time > query.to_time
    ):
        raise ApiError(400, "invalid_time_range",
                       "from_time must be less than or equal to to_time")
    history = dispatcher.get_history(
        from_time=query.from_time, to_time=query.to_time,
        resolve_operations=query.resolve_operations, limit=query.limit,
    )
    return json_response(history.to_dict())


@operations_blueprint.get(
    "/operations/<operation_id>", operation_id="get_operation",
    summary="One operation: queued, current or finished",
    responses={200: OperationStatus, **_NOT_FOUND},
)
def get_operation(path: OperationPath) -> Response:
    return json_response(_status(_find(path.operation_id)))


@operations_blueprint.get(
    "/operations/<operation_id>/events", operation_id="get_operation_events",
    summary="The events of one operation, oldest first",
    responses={200: DispatchEventList, **_NOT_FOUND},
)
def get_operation_events(path: OperationPath) -> Response:
    dispatcher = _dispatcher()
    _find(path.operation_id)
    events = dispatcher.list_events(path.operation_id)
    return json_response([event.to_dict() for event in events])


@operations_blueprint.get(
    "/operations/<operation_id>/explain", operation_id="explain_operation",
    summary="Why an operation is not running (empty blocked_by: nothing blocks it)",
    responses={200: ExplainResponse, **_NOT_FOUND},
)
def explain_operation(path: OperationPath) -> Response:
    dispatcher = _dispatcher()
    try:
        return json_response(dispatcher.explain(path.operation_id))
    except OperationNotFound:
        raise _not_found(path.operation_id) from None


@operations_blueprint.post(
    "/operations/add", operation_id="add_operation",
    summary="Queue operations (all or none); the dispatcher's resource_id is used",
    responses={201: OperationStatusList},
)
@body_error_code("invalid_operations")
def add_operation(body: AddOperationItems) -> Response:
    dispatcher = _dispatcher()
    ops = []
    for index, item in enumerate(body.root):
        try:
            ops.append(CoreOperation(resource_id=dispatcher.resource_id, **item.model_dump()))
        except ValidationError as exc:
            raise ApiError.from_exc(exc, "invalid_operation",
                                    details={"index": index, "field": exc.field}) from None
    try:
        stored = dispatcher.add_operations(ops)
    except (ValidationError, DependencyError, DuplicateOperation, ResourceMismatch) as exc:
        details: dict[str, Any] = {}
        failed = getattr(exc, "operation_id", None)
        for index, op in enumerate(ops):
            if op.id == failed:
                details["index"] = index
        raise ApiError.from_exc(exc, "operation_rejected", details=details) from None
    return json_response([_status(op) for op in stored], 201)


@operations_blueprint.post(
    "/operations/<operation_id>/update", operation_id="update_operation",
    summary="Change fields of a queued (or paused) operation",
    responses=_REFUSABLE,
)
@body_error_code("invalid_updates")
def update_operation(path: OperationPath, body: UpdateOperationItem) -> Response:
    dispatcher = _dispatcher()
    updates = body.model_dump(exclude_unset=True)
    # Only the code is chosen here; the status is the table's (errors.STATUS_BY_ERROR), and
    # every other error (a JournalError: 503 journal_unavailable) goes to the handlers.
    try:
        op = dispatcher.update_operation(path.operation_id, updates)
    except OperationNotUpdatable as exc:
        raise ApiError.from_exc(exc, "operation_update_denied") from None
    except (ValidationError, DependencyError) as exc:
        raise ApiError.from_exc(
            exc, "invalid_updates", details={"field": getattr(exc, "field", "dependencies")}
        ) from None
    if op is None:
        raise _not_found(path.operation_id)
    return json_response(_status(op))


@operations_blueprint.post(
    "/operations/<operation_id>/cancel", operation_id="cancel_operation",
    summary="Cancel a queued or the current operation, if the business logic agrees",
    responses=_REFUSABLE,
)
@body_error_code("invalid_request_body")
def cancel_operation(path: OperationPath, body: CancelOperationCommand) -> Response:
    dispatcher = _dispatcher()
    _find(path.operation_id)
    op = dispatcher.cancel_operation(
        path.operation_id, body.termination_reason, body.meta_data or None
    )
    if op is None:
        raise ApiError(409, "operation_cancellation_denied", "operation cancellation denied")
    return json_response(_status(op))


def _pause_or_resume(operation_id: UUID, meta: dict[str, Any], pause: bool) -> Response:
    dispatcher = _dispatcher()
    needed, verb = (
        (ExecutionState.RUNNING, "pause") if pause else (ExecutionState.PAUSED, "resume")
    )
    wrong_state = (
        ("operation_not_running", "operation is not running")
        if pause else ("operation_not_paused", "operation is not paused")
    )
    op = _find(operation_id)
    if op.state is not needed:
        raise ApiError(409, *wrong_state, {"state": op.state.value})
    action = dispatcher.pause_operation if pause else dispatcher.resume_operation
    try:
        done = action(operation_id, meta_data=meta or None)
    except InvalidTransition as exc:
        raise ApiError.from_exc(exc, wrong_state[0], wrong_state[1],
                                {"state": exc.state}) from None
    except OperationNotCurrent as exc:
        raise ApiError.from_exc(exc, f"operation_{verb}_failed") from None
    if not done:
        raise ApiError(409, f"operation_{verb}_denied", f"operation {verb} denied")
    return json_response(_status(_find(operation_id)))


@operations_blueprint.post(
    "/operations/<operation_id>/pause", operation_id="pause_operation",
    summary="Pause the RUNNING current operation, if the business logic agrees",
    responses=_REFUSABLE,
)
@body_error_code("invalid_request_body")
def pause_operation(path: OperationPath, body: LifecycleCommand) -> Response:
    return _pause_or_resume(path.operation_id, body.meta_data, pause=True)


@operations_blueprint.post(
    "/operations/<operation_id>/resume", operation_id="resume_operation",
    summary="Resume the PAUSED current operation, if the business logic agrees",
    responses=_REFUSABLE,
)
@body_error_code("invalid_request_body")
def resume_operation(path: OperationPath, body: LifecycleCommand) -> Response:
    return _pause_or_resume(path.operation_id, body.meta_data, pause=False)


def _finish(operation_id: UUID, body: CompleteOperationCommand | FailOperationCommand) -> Response:
    """Complete or fail the current (RUNNING or PAUSED) operation by hand: an operator, or a
    program without a bridge. One that an executor bridge runs needs ``force`` (409
    run_by_executor naming the bridge)."""
    dispatcher = _dispatcher()
    op = _find(operation_id)
    if op.state not in _ACTIVE:  # the words pause uses for a queued or finished operation
        raise ApiError(409, "operation_not_running", "operation is not running",
                       {"state": op.state.value})
    meta = body.meta_data or None
    try:
        if isinstance(body, FailOperationCommand):
            done = dispatcher.fail_operation(
                operation_id, body.termination_reason, meta, force=body.force
            )
        else:
            done = dispatcher.complete_operation(operation_id, meta, force=body.force)
    except RunByExecutor as exc:
        raise ApiError.from_exc(exc, details={"executor": exc.executor}) from None
    except OperationNotCurrent as exc:  # finished (or another started) since the check above
        raise ApiError.from_exc(exc, "operation_not_running", "operation is not running") from None
    return json_response(_status(done))


@operations_blueprint.post(
    "/operations/<operation_id>/complete", operation_id="complete_operation",
    summary="Report the current operation done (a job finished by hand)",
    description="An operation an executor bridge runs is the bridge's to finish: 409 "
                "run_by_executor unless force is true (the event's meta_data then says "
                "forced_by_operator and names the executor).",
    responses=_REFUSABLE,
)
@body_error_code("invalid_request_body")
def complete_operation(path: OperationPath, body: CompleteOperationCommand) -> Response:
    return _finish(path.operation_id, body)


@operations_blueprint.post(
    "/operations/<operation_id>/fail", operation_id="fail_operation",
    summary="Report the current operation failed (a job that went wrong by hand)",
    description="As complete; termination_reason defaults to INTERNAL_ERROR.",
    responses=_REFUSABLE,
)
@body_error_code("invalid_request_body")
def fail_operation(path: OperationPath, body: FailOperationCommand) -> Response:
    return _finish(path.operation_id, body)


__all__ = ["operations_blueprint"]

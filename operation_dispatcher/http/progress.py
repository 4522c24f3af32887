"""``POST /operations/<id>/progress``: how far the current operation has got.

For an executor without a bridge (a person, a script, a cell computer): the body's fraction
(0..1) and message become the operation's ``progress`` and, rate-limited, an
``operation_progress`` event (see :meth:`~..dispatcher.OperationDispatcher.report_progress`).
The answer is the operation's status, with ``elapsed_seconds``.
"""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint

from ..errors import OperationNotCurrent, OperationNotFound, ValidationError
from .errors import ApiError
from .operations import TAG, _status
from .schemas import ErrorResponse, OperationPath, OperationStatus, ProgressReport
from .state import api_blueprint, api_state, body_error_code, json_response

#: The progress route (blueprint ``progress``; scope ``operate``).
progress_blueprint: APIBlueprint = api_blueprint("progress", __name__, TAG)


@progress_blueprint.post(
    "/operations/<operation_id>/progress", operation_id="report_progress",
    summary="Report how far the current (RUNNING or PAUSED) operation has got",
    responses={200: OperationStatus, 404: ErrorResponse, 409: ErrorResponse},
)
@body_error_code("invalid_progress")
def report_progress(path: OperationPath, body: ProgressReport) -> Response:
    dispatcher = api_state().dispatcher
    try:
        op = dispatcher.report_progress(path.operation_id, body.fraction, body.message)
    except OperationNotFound as exc:
        raise ApiError.from_exc(exc, message="operation not found",
                                details={"operation_id": str(path.operation_id)}) from None
    except OperationNotCurrent as exc:
        current = dispatcher.get_operation(path.operation_id)
        state = None if current is None else current.state.value
        raise ApiError.from_exc(exc, "operation_not_running", details={"state": state}) from None
    except ValidationError as exc:
        raise ApiError.from_exc(exc, "invalid_progress") from None
    return json_response(_status(op))


__all__ = ["progress_blueprint"]

"""``/requests...``: the approval requests waiting for an answer, and answering them.

A request callback that returns ``PENDING`` leaves its request open; anyone may then approve or
deny it here (``decide()`` underneath), which wakes exactly the thread waiting for it.
"""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from ..errors import RequestClosed, UnknownRequest
from .errors import ApiError
from .openapi_types import Responses
from .schemas import DecisionBody, DecisionResponse, ErrorResponse, PendingRequestList, RequestPath
from .state import api_blueprint, api_state, body_error_code, json_response

TAG = Tag(name="Approvals", description="answer the requests the business logic left PENDING")


#: The ``/requests`` routes, shared by every app; each view reads its app's dispatcher.
approvals_blueprint: APIBlueprint = api_blueprint("approvals", __name__, TAG)
_ANSWERED: Responses = {200: DecisionResponse, 404: ErrorResponse, 409: ErrorResponse}


def _decide(request_id: str, accepted: bool, body: DecisionBody) -> Response:
    try:
        api_state().dispatcher.decide(
            request_id, accepted, reasoning=body.reasoning, data=body.data
        )
    except UnknownRequest as exc:
        raise ApiError.from_exc(exc, details={"request_id": request_id}) from None
    except RequestClosed as exc:
        raise ApiError.from_exc(exc, details={"request_id": request_id,
                                              "status": exc.status}) from None
    return json_response({
        "message": "request approved" if accepted else "request denied",
        "request_id": request_id,
        "accepted": accepted,
        "reasoning": body.reasoning,
    })


@approvals_blueprint.get("/requests", operation_id="list_requests",
                         summary="The open approval requests, oldest first",
                         responses={200: PendingRequestList})
def list_requests() -> Response:
    requests = api_state().dispatcher.pending_requests()
    return json_response([request.to_dict() for request in requests])


@approvals_blueprint.post(
    "/requests/<request_id>/approve", operation_id="approve_request",
    summary="Approve an open request (404 unknown, 409 already decided or expired)",
    responses=_ANSWERED,
)
@body_error_code("invalid_request_body")
def approve_request(path: RequestPath, body: DecisionBody) -> Response:
    return _decide(str(path.request_id), True, body)


@approvals_blueprint.post(
    "/requests/<request_id>/deny", operation_id="deny_request",
    summary="Deny an open request (404 unknown, 409 already decided or expired)",
    responses=_ANSWERED,
)
@body_error_code("invalid_request_body")
def deny_request(path: RequestPath, body: DecisionBody) -> Response:
    return _decide(str(path.request_id), False, body)


__all__ = ["approvals_blueprint"]

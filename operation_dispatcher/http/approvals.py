"""``/requests...``: the approval requests waiting for an answer, and answering them.

A request callback that returns ``PENDING`` leaves its request open; anyone may then approve or
deny it here (``decide()`` underneath), which wakes exactly the thread waiting for it.
"""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from ..errors import RequestClosed, UnknownRequest
from .errors import ApiError
from .schemas import DecisionBody, DecisionResponse, ErrorResponse, PendingRequestList, RequestPath
from .state import ApiState, api_blueprint, body_error_code, json_response

TAG = Tag(name="Approvals", description="answer the requests the business logic left PENDING")


def approvals_blueprint(state: ApiState) -> APIBlueprint:
    """The ``/requests`` routes."""
    bp = api_blueprint("approvals", __name__, TAG, state)
    dispatcher = state.dispatcher
    answered = {200: DecisionResponse, 404: ErrorResponse, 409: ErrorResponse}

    def decide(request_id: str, accepted: bool, body: DecisionBody) -> Response:
        try:
            dispatcher.decide(request_id, accepted, reasoning=body.reasoning, data=body.data)
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

    @bp.get("/requests", operation_id="list_requests",
            summary="The open approval requests, oldest first",
            responses={200: PendingRequestList})
    def list_requests() -> Response:
        return json_response([request.to_dict() for request in dispatcher.pending_requests()])

    @bp.post("/requests/<request_id>/approve", operation_id="approve_request",
             summary="Approve an open request (404 unknown, 409 already decided or expired)",
             responses=answered)
    @body_error_code("invalid_request_body")
    def approve_request(path: RequestPath, body: DecisionBody) -> Response:
        return decide(str(path.request_id), True, body)

    @bp.post("/requests/<request_id>/deny", operation_id="deny_request",
             summary="Deny an open request (404 unknown, 409 already decided or expired)",
             responses=answered)
    @body_error_code("invalid_request_body")
    def deny_request(path: RequestPath, body: DecisionBody) -> Response:
        return decide(str(path.request_id), False, body)

    return bp


__all__ = ["approvals_blueprint"]

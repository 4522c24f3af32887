"""Errors as JSON, mapped to HTTP status in one place.

Every error response is the original's envelope ``{"error", "message", "code", "details"?}``
(``error`` and ``message`` hold the same text). :data:`STATUS_BY_ERROR` is the one table from a
dispatcher error class to its status and default code; a view may pick a more specific code (the
original's ``operation_update_denied``, ...), never another status. Bad input is a 4xx: a 500
means a bug, and is logged with its traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from pydantic import ValidationError as PydanticValidationError
from werkzeug.exceptions import HTTPException
from werkzeug.sansio.response import Response as SansIOResponse

from ..error_codes import STATUS_BY_ERROR, ErrorAnswer, status_of
from ..errors import DispatcherError, ValidationError
from .schemas import REQUEST_MODELS, Described

log = logging.getLogger(__name__)

# STATUS_BY_ERROR (dispatcher error class -> status and default code) and status_of live in
# ..error_codes, without Flask, so that the MQTT link answers with the same codes.

#: The code of a few HTTP errors raised by Flask and werkzeug themselves.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
}


class ApiError(ErrorAnswer):
    """An error answer: raise it from a view (or a hook) and the handler renders it."""


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> Response:
    """The envelope ``{"error", "message", "code", "details"?}`` with ``status``."""
    body: dict[str, Any] = {"error": message, "message": message, "code": code}
    if details:
        body["details"] = details
    response = jsonify(body)
    response.status_code = status
    return response


def validation_error_response(exc: PydanticValidationError) -> Response:
    """flask-openapi3's validation-error callback: the failing model explains its own error.

    From its table of error rules (:class:`~.schemas.Described`), by each error's ``type``,
    ``loc`` and ``ctx`` only: pydantic's English ``msg`` (and ``str(exc)``, made of it) never
    reaches a client.
    """
    errors = exc.errors(include_url=False)
    if not errors:  # pydantic always names at least one; say so rather than guess
        return error_response(400, "invalid_request", "request is invalid")
    # A model no view should use (not a request model) still gets the rule by type and loc.
    model = REQUEST_MODELS.get(exc.title, Described)
    code, message, details = model.describe(errors)
    return error_response(400, code, message, details or None)


def register_error_handlers(app: Flask) -> None:
    """Render ApiError, dispatcher errors and HTTP errors as the JSON envelope."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        response = error_response(exc.status, exc.code, exc.message, exc.details)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="operation-dispatcher"'
        return response

    @app.errorhandler(DispatcherError)
    def _dispatcher_error(exc: DispatcherError) -> Response:
        status, code = status_of(exc)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.path, exc)
        details = {"field": exc.field} if isinstance(exc, ValidationError) else None
        return error_response(status, code, str(exc), details)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> SansIOResponse:
        # flask-openapi3 aborts with a ready response for validation errors: keep it (werkzeug
        # types it as any response, which Flask takes from a handler as it is).
        if exc.response is not None:
            return exc.response
        status = exc.code or 500
        code = _HTTP_CODES.get(status, f"http_{status}")
        message = exc.description or exc.name
        if status == 404:
            message = f"no route {request.path}; see /openapi.json for the API"
        elif status == 405:
            allowed = sorted(m for m in (exc.valid_methods or []) if m not in ("HEAD", "OPTIONS"))  # type: ignore[attr-defined]
            message = f"{request.method} is not allowed on {request.path} (allowed: {', '.join(allowed)})"
        elif status == 413:
            limit = current_app.config.get("MAX_CONTENT_LENGTH")
            message = f"request body is larger than {limit} bytes"
        response = error_response(status, code, message)
        if status == 405:
            response.headers["Allow"] = ", ".join(exc.valid_methods or [])  # type: ignore[attr-defined]
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal_error", f"internal error: {type(exc).__name__}")


__all__ = [
    "STATUS_BY_ERROR",
    "ApiError",
    "error_response",
    "register_error_handlers",
    "status_of",
    "validation_error_response",
]

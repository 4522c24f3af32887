"""Bearer tokens and their scopes: who may call which route.

A cell has several clients with different rights: a MES that adds jobs, an operator who approves
starts, a maintainer who stops the dispatcher. So besides the one ``token`` (every scope, as
before) an app may hold named tokens, each with its scopes (:data:`~..config.SCOPES`; the rules
of a token are :func:`~..config.token_problems`, shared with the config file). Every route needs
exactly one scope, from the one table :data:`ROUTE_SCOPES` (by Flask endpoint); a route missing
from it needs ``admin`` (fail safe: a new route is never open by accident, and a test fails).

Checking a token is :class:`~..credentials.Credentials`' job (shared with the MCP server's HTTP
transport): constant time over SHA-256 digests; the names are never part of an answer.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import request

from ..config import SCOPES, token_problems
from ..credentials import Credentials, bearer_token
from .docs import PUBLIC_ENDPOINTS
from .errors import ApiError

#: The scope each route needs, by Flask endpoint (``blueprint.view``). ``/health`` is public
#: (:data:`~.docs.PUBLIC_ENDPOINTS`); every other route must be listed here.
ROUTE_SCOPES: Mapping[str, str] = {
    # read: every GET
    "index.index": "read",
    "apidocs.openapi_json": "read",
    "apidocs.swagger_ui": "read",
    "apidocs.static": "read",
    "static": "read",  # Flask's own /static route
    "operations.list_operations": "read",
    "operations.get_current_operation": "read",
    "operations.get_history": "read",
    "operations.get_operation": "read",
    "operations.get_operation_events": "read",
    "operations.explain_operation": "read",
    "runtime.get_dispatcher_state": "read",
    "approvals.list_requests": "read",
    "signals.list_signals": "read",
    "bridges.list_bridges": "read",
    "bridges.get_bridge": "read",
    "events.stream_events": "read",
    "metrics.get_metrics": "read",
    "forecast.get_forecast": "read",
    # submit: new work and changes to queued work (a MES)
    "operations.add_operation": "submit",
    "operations.update_operation": "submit",
    # operate: what an operator decides on the floor
    "approvals.approve_request": "operate",
    "approvals.deny_request": "operate",
    "operations.cancel_operation": "operate",
    "operations.pause_operation": "operate",
    "operations.resume_operation": "operate",
    "operations.complete_operation": "operate",
    "operations.fail_operation": "operate",
    "progress.report_progress": "operate",
    "signals.set_signal": "operate",
    # admin: the dispatcher itself
    "runtime.start_operation_dispatcher": "admin",
    "runtime.stop_operation_dispatcher": "admin",
    "runtime.pause_operation_dispatcher": "admin",
    "runtime.resume_operation_dispatcher": "admin",
}
#: The scope of a route missing from :data:`ROUTE_SCOPES` (the strongest: fail safe).
UNLISTED_SCOPE = "admin"


def required_scope(endpoint: str) -> str:
    """The scope a route needs (:data:`UNLISTED_SCOPE` for one missing from the table)."""
    return ROUTE_SCOPES.get(endpoint, UNLISTED_SCOPE)


def authorize(credentials: Credentials | None) -> None:
    """The before-request hook: 401 without a known bearer token, 403 without the scope."""
    if credentials is None or request.endpoint in PUBLIC_ENDPOINTS:
        return
    presented = bearer_token(request.headers.get("Authorization", ""))
    scopes = None if presented is None else credentials.scopes_of(presented)
    if scopes is None:
        raise ApiError(
            401, "unauthorized",
            "missing or wrong bearer token: send the header 'Authorization: Bearer <token>'",
        )
    if request.endpoint is None:
        return  # no route: the 404 or 405 follows
    scope = required_scope(request.endpoint)
    if scope not in scopes:
        raise ApiError(
            403, "insufficient_scope",
            f"this token lacks the scope {scope!r} that {request.method} {request.path} needs",
            {"scope": scope},
        )


__all__ = [
    "ROUTE_SCOPES",
    "SCOPES",
    "UNLISTED_SCOPE",
    "Credentials",
    "authorize",
    "required_scope",
    "token_problems",
]

"""Bearer tokens and their scopes: who may call which route.

A cell has several clients with different rights: a MES that adds jobs, an operator who approves
starts, a maintainer who stops the dispatcher. So besides the one ``token`` (every scope, as
before) an app may hold named tokens, each with its scopes (:data:`~..config.SCOPES`; the rules
of a token are :func:`~..config.token_problems`, shared with the config file). Every route needs
exactly one scope, from the one table :data:`ROUTE_SCOPES` (by Flask endpoint); a route missing
from it needs ``admin`` (fail safe: a new route is never open by accident, and a test fails).

Checking a token is :class:`~..credentials.Credentials`' job (shared with the MCP server's HTTP
transport): constant time over SHA-256 digests; the names are never part of an answer, except to
the token's own holder (``GET /auth/whoami``, which the dashboard reads to disable the buttons a
token may not use).

The dashboard's static files (:data:`~.docs.PUBLIC_ENDPOINTS`) and ``/`` asked for by a browser
(``Accept`` prefers ``text/html``) answer without a token: a browser cannot send the header when
it navigates, and the page itself holds no data; it asks for the token and sends it with every
call it makes.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import g, request

from ..config import SCOPES, token_problems
from ..credentials import Credentials, bearer_token
from .docs import PUBLIC_ENDPOINTS
from .errors import ApiError
from .webui import wants_html

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
    "session.whoami": "read",
    "reports.get_kpis": "read",
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


#: The Flask ``g`` attribute holding ``(name, scopes)`` of the request's token.
IDENTITY_KEY = "operation_dispatcher_identity"
#: What a request holds when the app has no token at all: every scope.
OPEN_IDENTITY: tuple[str | None, frozenset[str]] = (None, frozenset(SCOPES))


def is_public() -> bool:
    """True for the routes any client may call without a token (see the module docstring).

    ``/auth/whoami`` without an ``Authorization`` header is public too: it answers that a token
    is needed (and no scope), so the dashboard learns it without a 401; with a header the token
    is checked as everywhere else.
    """
    endpoint = request.endpoint
    return (
        endpoint in PUBLIC_ENDPOINTS
        or (endpoint == "index.index" and wants_html())
        or (endpoint == "session.whoami" and "Authorization" not in request.headers)
    )


def identity(credentials: Credentials | None) -> tuple[str | None, frozenset[str]]:
    """The name and scopes of the request's token: every scope when the app has no token, none
    for a request that presented none."""
    if credentials is None:
        return OPEN_IDENTITY
    found: tuple[str | None, frozenset[str]] = g.get(IDENTITY_KEY, (None, frozenset()))
    return found


def authorize(credentials: Credentials | None) -> None:
    """The before-request hook: 401 without a known bearer token, 403 without the scope."""
    if credentials is None or is_public():
        return
    presented = bearer_token(request.headers.get("Authorization", ""))
    found = None if presented is None else credentials.identify(presented)
    scopes = None if found is None else found.scopes
    if found is not None:
        setattr(g, IDENTITY_KEY, (found.name, found.scopes))
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
    "IDENTITY_KEY",
    "OPEN_IDENTITY",
    "ROUTE_SCOPES",
    "SCOPES",
    "UNLISTED_SCOPE",
    "Credentials",
    "authorize",
    "identity",
    "is_public",
    "required_scope",
    "token_problems",
]

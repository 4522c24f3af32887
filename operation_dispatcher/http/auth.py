"""Bearer tokens and their scopes: who may call which route.

A cell has several clients with different rights: a MES that adds jobs, an operator who approves
starts, a maintainer who stops the dispatcher. So besides the one ``token`` (every scope, as
before) an app may hold named tokens, each with its scopes (:data:`~..config.SCOPES`; the rules
of a token are :func:`~..config.token_problems`, shared with the config file). Every route needs
exactly one scope, from the one table :data:`ROUTE_SCOPES` (by Flask endpoint); a route missing
from it needs ``admin`` (fail safe: a new route is never open by accident, and a test fails).

Checking a token compares the presented one with *every* known token, in constant time and over
SHA-256 digests (so neither the length nor which name matched leaks through timing); the names
are never part of an answer, except to the token's own holder (``GET /auth/whoami``, which the
dashboard reads to disable the buttons a token may not use).

The dashboard's static files (:data:`~.docs.PUBLIC_ENDPOINTS`) and ``/`` asked for by a browser
(``Accept`` prefers ``text/html``) answer without a token: a browser cannot send the header when
it navigates, and the page itself holds no data; it asks for the token and sends it with every
call it makes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import g, request

from ..config import SCOPES, token_problems
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

def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True)
class Credentials:
    """The tokens of one app: SHA-256 digests with the scopes each grants (and its name)."""

    entries: tuple[tuple[bytes, frozenset[str]], ...]
    #: the name of each entry, same order (None for the single ``token``)
    names: tuple[str | None, ...] = ()

    @classmethod
    def build(
        cls, token: str | None, tokens: Mapping[str, Mapping[str, Any]] | None
    ) -> Credentials | None:
        """The credentials for ``create_app(token=..., tokens=...)``; None when both are None.

        Raises ValueError naming every bad key.
        """
        if token is not None and not token:
            raise ValueError("token must be a non-empty string or None")
        if tokens is None:
            return None if token is None else cls(((_digest(token), frozenset(SCOPES)),))
        problems = token_problems(tokens, "tokens", token)
        if problems:
            raise ValueError("; ".join(f"{key}: {rule}" for key, rule in problems))
        entries = [(_digest(e["token"]), frozenset(e["scopes"])) for e in tokens.values()]
        names: list[str | None] = list(tokens)
        if token is not None:
            entries.insert(0, (_digest(token), frozenset(SCOPES)))
            names.insert(0, None)
        return cls(tuple(entries), tuple(names))

    def scopes_of(self, presented: str) -> frozenset[str] | None:
        """The scopes ``presented`` grants, or None for an unknown token."""
        found = self.identify(presented)
        return None if found is None else found[1]

    def identify(self, presented: str) -> tuple[str | None, frozenset[str]] | None:
        """The name and scopes of ``presented``, or None for an unknown token.

        Every entry is compared (no early exit), each in constant time.
        """
        digest = _digest(presented)
        found: tuple[str | None, frozenset[str]] | None = None
        for index, (known, scopes) in enumerate(self.entries):
            if hmac.compare_digest(digest, known):
                found = (self.names[index] if index < len(self.names) else None, scopes)
        return found


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
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    found = credentials.identify(presented.strip()) if scheme.lower() == "bearer" else None
    scopes = None if found is None else found[1]
    if found is not None:
        setattr(g, IDENTITY_KEY, found)
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

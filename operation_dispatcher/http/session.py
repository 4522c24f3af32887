"""``GET /auth/whoami``: the scopes of the caller's token, so a page can disable what it may
not do (the dashboard greys out those buttons, with a tooltip naming the scope).

Asked without an ``Authorization`` header it answers without a token too: ``scopes`` is then
empty and ``token_required`` says whether the server wants one (it tells nothing a 401 would
not). A wrong token is a 401, as everywhere.
"""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from ..config import SCOPES
from .auth import identity
from .state import api_blueprint, api_state, json_response
from .webui_schemas import WhoAmI

TAG = Tag(name="Service", description="health, the API description and its UI")

#: ``/auth/whoami``, shared by every app.
session_blueprint: APIBlueprint = api_blueprint("session", __name__, TAG)


@session_blueprint.get(
    "/auth/whoami", operation_id="whoami",
    summary="The name and scopes of the caller's token (no header: none, and whether one is needed)",
    responses={200: WhoAmI},
)
def whoami() -> Response:
    credentials = api_state().credentials
    name, scopes = identity(credentials)
    return json_response({
        "name": name,
        "scopes": [scope for scope in SCOPES if scope in scopes],
        "token_required": credentials is not None,
    })


__all__ = ["session_blueprint"]

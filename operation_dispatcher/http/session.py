"""``GET /auth/whoami``: the scopes of the caller's token, so a page can disable what it may
not do (the dashboard greys out those buttons, with a tooltip naming the scope)."""

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


@session_blueprint.get("/auth/whoami", operation_id="whoami",
                       summary="The name and scopes of the caller's token",
                       responses={200: WhoAmI})
def whoami() -> Response:
    name, scopes = identity()
    return json_response({
        "name": name,
        "scopes": [scope for scope in SCOPES if scope in scopes],
        "token_required": api_state().credentials is not None,
    })


__all__ = ["session_blueprint"]

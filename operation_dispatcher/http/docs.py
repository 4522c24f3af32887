"""``/health``, ``/openapi.json``, the Swagger UI at ``/apidocs`` and a small index at ``/``
(the dashboard page for a browser).

The Swagger UI is the one shipped by the ``flask-openapi3-swagger`` package, served from its
installed files: the page loads nothing but its own assets and ``/openapi.json`` (no CDN, and the
online spec validator badge is switched off, since it would call swagger.io).
"""

from __future__ import annotations

import os
from html import escape

from flask import Blueprint, Response, current_app, url_for
from flask_openapi3 import APIBlueprint, Tag

from .schemas import ApiIndex, Health
from .state import api_blueprint, api_state, json_response
from .webui import DASHBOARD_ENDPOINTS, page_response, wants_html


def _swagger_assets() -> str:
    try:
        # no type hints (no py.typed, no stubs package); only its __file__ is read
        import flask_openapi3_swagger  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - part of the api extra
        raise ImportError(
            "the Swagger UI needs flask-openapi3-swagger: "
            "pip install 'operation-dispatcher[api]'"
        ) from None
    return os.path.join(os.path.dirname(flask_openapi3_swagger.__file__), "templates", "swagger")


TAG = Tag(name="Service", description="health, the API description and its UI")

_SWAGGER_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title} - API</title>
  <link rel="icon" type="image/svg+xml" href="{icon}">
  <link rel="stylesheet" href="{css}">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{bundle}"></script>
  <script src="{preset}"></script>
  <script>
    window.onload = function () {{
      window.ui = SwaggerUIBundle({{
        url: "{spec}",
        dom_id: "#swagger-ui",
        deepLinking: true,
        validatorUrl: null,
        presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
        layout: "StandaloneLayout"
      }});
    }};
  </script>
</body>
</html>
"""

#: Endpoints that answer without a token: ``/health`` and the dashboard's static files (they
#: hold no data; the page asks for the token). ``/`` asked for by a browser is public too
#: (:func:`~.auth.is_public`): it answers the dashboard page.
PUBLIC_ENDPOINTS = frozenset({"service.health", *DASHBOARD_ENDPOINTS})


#: ``/health`` (never behind the token, so it documents no errors) and ``/`` (an index of the
#: useful URLs); shared by every app, like the other blueprints.
service_blueprint = APIBlueprint("service", __name__, abp_tags=[TAG])
index_blueprint: APIBlueprint = api_blueprint("index", __name__, TAG)
#: ``/openapi.json`` and the Swagger UI (plain Flask routes: not part of the spec).
apidocs_blueprint = Blueprint(
    "apidocs", __name__, static_folder=_swagger_assets(), static_url_path="/apidocs/assets",
)


@service_blueprint.get("/health", operation_id="get_health", summary="Liveness (no token needed)",
                       responses={200: Health})
def health() -> Response:
    state = api_state()
    return json_response({
        "status": "ok",
        "dispatcher_running": state.dispatcher.is_running,
        "event_stream_clients": state.streams.client_count,
    })


@index_blueprint.get(
    "/", operation_id="get_index",
    summary="Where things are (a browser, preferring text/html, gets the dashboard page)",
    responses={200: ApiIndex},
)
def index() -> Response:
    if wants_html():
        return page_response()
    return json_response({
        "name": "operation-dispatcher",
        "resource_id": api_state().dispatcher.resource_id,
        "links": {
            "apidocs": url_for("apidocs.swagger_ui"),
            "dashboard": url_for("dashboard.page"),
            "openapi": url_for("apidocs.openapi_json"),
            "events": url_for("events.stream_events"),
            "health": url_for("service.health"),
            "operations": url_for("operations.list_operations"),
            "dispatcher": url_for("runtime.get_dispatcher_state"),
        },
    })


def api_title(resource_id: str) -> str:
    """The API's title, in the OpenAPI document and on the Swagger page."""
    return f"operation-dispatcher ({resource_id})"


@apidocs_blueprint.get("/openapi.json")
def openapi_json() -> Response:
    return json_response(current_app.api_doc)  # type: ignore[attr-defined]


@apidocs_blueprint.get("/apidocs/")
@apidocs_blueprint.get("/apidocs")
def swagger_ui() -> Response:
    def asset(name: str) -> str:
        return escape(url_for("apidocs.static", filename=name))

    page = _SWAGGER_PAGE.format(
        title=escape(api_title(api_state().dispatcher.resource_id)),
        icon=asset("images/swagger.svg"),
        css=asset("css/swagger-ui.css"),
        bundle=asset("js/swagger-ui-bundle.js"),
        preset=asset("js/swagger-ui-standalone-preset.js"),
        spec=escape(url_for("apidocs.openapi_json")),
    )
    return Response(page, mimetype="text/html")


__all__ = [
    "PUBLIC_ENDPOINTS",
    "api_title",
    "apidocs_blueprint",
    "index_blueprint",
    "service_blueprint",
]

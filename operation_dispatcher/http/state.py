"""What every view of one app reads: the dispatcher, the runtime control, the streams.

The blueprints are built once, at import, and shared by every app (building them per app re-ran
the OpenAPI schema generation: ~110 ms per ``create_app``). So a view never closes over an app's
objects: it reads them from :func:`api_state`, the :class:`ApiState` kept in the handling app's
``extensions``. Two apps with two dispatchers in one process never see each other's state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from flask import Response, current_app
from flask_openapi3 import APIBlueprint, Tag

if TYPE_CHECKING:
    from ..dispatcher import OperationDispatcher
    from .auth import Credentials
    from .events import EventStreams
    from .openapi_types import Responses
    from .runtime import RuntimeControl


#: seconds until a signal written by ``PUT /signals/<name>`` without a max age goes stale
DEFAULT_SIGNAL_MAX_AGE = 60.0


class Bridge(Protocol):
    """What the API needs of a hardware bridge (``firmware_bridges.base.BaseBridge`` has it)."""

    name: str

    def status(self) -> dict[str, Any]: ...


@dataclass(eq=False)
class ApiState:
    """Kept in ``app.extensions["operation_dispatcher"]``; one per app."""

    dispatcher: OperationDispatcher
    runtime: RuntimeControl
    streams: EventStreams
    #: the tokens and their scopes (None: no token, every route is open)
    credentials: Credentials | None = None
    max_body_bytes: int = 1024 * 1024
    bridges: Mapping[str, Bridge] = field(default_factory=dict)
    #: the max age of a signal written over HTTP without one (a client that dies must not
    #: leave a release condition true forever)
    signal_max_age_seconds: float | None = DEFAULT_SIGNAL_MAX_AGE

    def close(self) -> None:
        """End every open event stream (the server is going away)."""
        self.streams.close_all()


def api_blueprint(name: str, import_name: str, tag: Tag) -> APIBlueprint:
    """An APIBlueprint whose routes document the common errors.

    The token's 401 answer and security requirement depend on the app, so they are not here:
    the app adds them to its OpenAPI document (see ``app._token_spec``).
    """
    from .schemas import ErrorResponse

    responses: Responses = {400: ErrorResponse, 413: ErrorResponse, 415: ErrorResponse}
    return APIBlueprint(name, import_name, abp_tags=[tag], abp_responses=responses)


#: The key of the :class:`ApiState` in ``app.extensions``.
STATE_KEY = "operation_dispatcher"


def api_state() -> ApiState:
    """The :class:`ApiState` of the app handling the current request."""
    state: ApiState = current_app.extensions[STATE_KEY]
    return state


def json_response(body: Any, status: int = 200) -> Response:
    """``body`` as JSON with ``status`` (keys in model order, compact)."""
    # flask types the provider's answer as werkzeug's; it is the app's response_class (Flask's)
    response = cast(Response, current_app.json.response(body))
    response.status_code = status
    return response


def body_error_code(code: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a view with the envelope code used when its body is not JSON at all.

    Put it below the route decorator; flask-openapi3's wrapper copies the attribute.
    """

    def mark(view: Callable[..., Any]) -> Callable[..., Any]:
        view.body_error_code = code  # type: ignore[attr-defined]
        return view

    return mark


__all__ = [
    "STATE_KEY",
    "ApiState",
    "Bridge",
    "api_blueprint",
    "api_state",
    "body_error_code",
    "json_response",
]

"""``create_app(dispatcher)``: the Flask application of the REST API.

One app per dispatcher (an app factory, so tests and programs can make as many as they like).
The routes live in one blueprint per area: ``operations``, ``runtime`` (``/dispatcher``),
``approvals`` (``/requests``), ``signals``, ``bridges``, ``events`` (``/events/stream``), ``service``
(``/health``), ``index`` (``/``), ``apidocs`` (``/openapi.json``, ``/apidocs``), ``dashboard`` (the
live page, ``/dashboard``), ``session`` (``/auth/whoami``) and ``reports`` (``/reports/kpis``). Two request
hooks run before any view: the bearer-token and scope check (:mod:`.auth`) and the body check
(size, content type, JSON).

The blueprints are module-level, built once at import and shared by every app; their views read
the app's :class:`~.state.ApiState` through :func:`~.state.api_state`. The OpenAPI document is
generated once per process too (:func:`_base_spec`); an app only copies it, with its own title and,
with a token, the 401 answers and security requirement. So ``create_app`` costs a few
milliseconds after the first (it was ~110 ms when every app rebuilt its blueprints).
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from flask import current_app, request
from flask.json.provider import DefaultJSONProvider
from flask_openapi3 import Info, OpenAPI
from werkzeug.routing import Rule

from .. import __version__
from .._checks import MAX_NESTING, load_json
from ..errors import ValidationError
from ..models import check_json_data
from .approvals import approvals_blueprint
from .auth import Credentials, authorize
from .bridges import bridges_blueprint
from .docs import (
    api_title,
    apidocs_blueprint,
    index_blueprint,
    service_blueprint,
)
from .errors import ApiError, register_error_handlers, validation_error_response
from .events import DEFAULT_STREAM_BUFFER_BYTES, EventStreams, events_blueprint
from .forecast import forecast_blueprint
from .metrics import install_metrics, metrics_blueprint
from .operations import operations_blueprint
from .progress import progress_blueprint
from .reports import reports_blueprint
from .runtime import RuntimeControl, runtime_blueprint
from .schemas import ErrorResponse
from .session import session_blueprint
from .signals import signals_blueprint
from .state import DEFAULT_SIGNAL_MAX_AGE, STATE_KEY, ApiState, Bridge, api_state
from .webui import dashboard_blueprint

if TYPE_CHECKING:
    from ..dispatcher import OperationDispatcher

#: The environment variable a token may come from (the CLI reads it; see config.py).
TOKEN_ENV = "OPERATION_DISPATCHER_TOKEN"
#: Requests with a body larger than this are refused with 413.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: Request bodies nested deeper than this are refused: the core's one limit (deep nesting only
#: exhausts the stack).
MAX_JSON_DEPTH = MAX_NESTING

_DESCRIPTION = """\
Queue, dispatch and supervise the operations of one resource.

Errors are JSON: `{"error", "message", "code", "details"?}`. Timestamps are ISO 8601 with a
timezone (`2026-01-31T08:00:00Z`); durations are seconds. Live events: `GET /events/stream`
(Server-Sent Events).
"""


def create_app(
    dispatcher: OperationDispatcher,
    *,
    token: str | None = None,
    tokens: Mapping[str, Mapping[str, Any]] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    heartbeat_seconds: float = 15.0,
    max_event_streams: int = 4,
    event_queue_size: int = 1000,
    stream_buffer_bytes: int = DEFAULT_STREAM_BUFFER_BYTES,
    stop_timeout: float = 10.0,
    bridges: Sequence[Bridge] = (),
    signal_max_age_seconds: float | None = DEFAULT_SIGNAL_MAX_AGE,
) -> OpenAPI:
    """The REST API of ``dispatcher`` as a Flask (flask-openapi3) application.

    The app does not start or stop the dispatcher (``POST /dispatcher/start`` and ``/stop`` do,
    and so does the CLI); serve it with any WSGI server, e.g. :class:`~.server.ApiServer`.

    :param token: when given, every route but ``/health`` answers 401 unless the request
        carries ``Authorization: Bearer <token>``; this token holds every scope.
    :param tokens: named tokens with their scopes, ``{"mes": {"token": "...", "scopes":
        ["read", "submit"]}}`` (scopes: ``read``, ``submit``, ``operate``, ``admin``; see
        :data:`~.auth.ROUTE_SCOPES`). A known token without the route's scope gets 403
        ``insufficient_scope``; an unknown one 401. Raises ValueError naming every bad key
        (unknown scope, empty token, a value used twice, also with ``token``).
    :param max_body_bytes: larger request bodies are refused with 413.
    :param heartbeat_seconds: an idle event stream sends a comment this often (that is also
        how a client that went away is noticed and unsubscribed, at the latest at the second
        heartbeat after it left); nothing else wakes an idle stream.
    :param max_event_streams: event streams open at once (each holds a server thread); more
        are refused with 503. Keep it below the server's thread count.
    :param event_queue_size: events buffered per stream client; a client that falls further
        behind loses events and is told how many (``event: events_dropped``).
    :param stream_buffer_bytes: bytes buffered per stream client, in its queue (more events
        are dropped, as above) and again unsent at the server: a client with more waiting has
        stopped reading and is disconnected, so it cannot pin memory.
    :param stop_timeout: seconds ``POST /dispatcher/stop`` waits for the dispatcher threads.
    :param bridges: the hardware bridges feeding ``dispatcher``, listed with their health and
        counters under ``/bridges`` (the app neither starts nor stops them).
    :param signal_max_age_seconds: the max age of a signal written by ``PUT /signals/<name>``
        without one (None: such a signal never goes stale).
    """
    credentials = Credentials.build(token, tokens)
    by_name: dict[str, Bridge] = {}
    for bridge in bridges:
        if bridge.name in by_name:
            raise ValueError(f"two bridges are named {bridge.name!r}: names must be distinct")
        by_name[bridge.name] = bridge
    app = _new_app(api_title(dispatcher.resource_id), token_required=credentials is not None)
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    app.extensions[STATE_KEY] = ApiState(
        dispatcher=dispatcher,
        runtime=RuntimeControl(dispatcher, stop_timeout=stop_timeout),
        streams=EventStreams(
            dispatcher,
            heartbeat_seconds=heartbeat_seconds,
            queue_size=event_queue_size,
            max_clients=max_event_streams,
            buffer_bytes=stream_buffer_bytes,
            bridges=by_name,
        ),
        credentials=credentials,
        max_body_bytes=max_body_bytes,
        signal_max_age_seconds=signal_max_age_seconds,
        bridges=by_name,
    )
    install_metrics(app, app.extensions[STATE_KEY])  # GET /metrics (with prometheus_client)
    return app


#: Every app's blueprints, module-level and shared (the views read :func:`~.state.api_state`).
_API_BLUEPRINTS = (
    service_blueprint,
    index_blueprint,
    operations_blueprint,
    progress_blueprint,
    runtime_blueprint,
    approvals_blueprint,
    signals_blueprint,
    bridges_blueprint,
    events_blueprint,
    metrics_blueprint,
    forecast_blueprint,
    session_blueprint,
    reports_blueprint,
)


def _new_app(title: str, *, token_required: bool) -> _OpenAPI:
    """A Flask app with the hooks, error handlers and blueprints; no state yet."""
    app = _OpenAPI(
        __name__,
        info=Info(title=title, version=__version__, description=_DESCRIPTION),
        validation_error_status=400,
        validation_error_model=ErrorResponse,
        validation_error_callback=validation_error_response,
        doc_ui=False,
    )
    app.token_required = token_required
    app.json = _StrictJSONProvider(app)
    app.before_request(_require_token)
    app.before_request(_check_body)
    register_error_handlers(app)
    for blueprint in _API_BLUEPRINTS:
        app.register_api(blueprint)
    app.register_blueprint(apidocs_blueprint)
    app.register_blueprint(dashboard_blueprint)
    return app


class _StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON, but only standard JSON in and out.

    Request bodies must be UTF-8 (RFC 8259) and may not hold NaN or Infinity, numbers that are
    infinite once parsed (``1e400``), integers over :data:`~..models.MAX_INT_DIGITS` digits,
    lone surrogates (``"\\ud800"``) or nesting deeper than :data:`MAX_JSON_DEPTH`: echoing any
    of them back would make the answers (and every later list) invalid JSON for every client.
    Answers are written with ``allow_nan=False``: a non-finite number that got in anyway is a
    500 with a log line, never invalid JSON. Answers keep the models' field order.
    """

    sort_keys = False

    def dumps(self, obj: object, **kwargs: object) -> str:
        kwargs.setdefault("allow_nan", False)
        return super().dumps(obj, **kwargs)

    def loads(self, s: str | bytes, **kwargs: object) -> object:
        if isinstance(s, bytes | bytearray):
            try:
                s = s.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"it is not UTF-8 (byte 0x{s[exc.start]:02x} at position {exc.start})"
                ) from None
        if kwargs:
            raise TypeError(f"the strict JSON reader takes no options, got {sorted(kwargs)}")
        value = load_json(s, mark_long_ints=True)  # long ints: check_json_data names the field
        _check_depth(value)
        try:
            check_json_data(value, "body")
        except ValidationError as exc:
            raise UnusableValue(exc.field, exc.reason) from None
        return value


class UnusableValue(ValueError):
    """Valid JSON holding a value the API refuses (an infinite number, a lone surrogate...)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field.removeprefix("body").removeprefix(".") or "body"
        super().__init__(f"{self.field} {reason}")


def _check_depth(value: object) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: object = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children)  # type: ignore[attr-defined]


class _Rule(Rule):
    """werkzeug's URL rule, whose URL builders are compiled once per process, not per app.

    werkzeug compiles two small functions per rule and app (``ast`` plus ``compile``: ~85% of a
    ``create_app`` once the blueprints are shared). Such a function depends only on the rule's
    parsed parts, and reads the converters through its ``self`` argument when called, so one
    compiled function serves every app's copy of the rule. Rules with defaults (none here) are
    compiled as usual: their defaults are folded into the code.
    """

    def _compile_builder(self, append_unknown: bool = True) -> Callable[..., tuple[str, str]]:
        trace = getattr(self, "_trace", None)  # werkzeug's private parse; without it: as usual
        if self.defaults or not isinstance(trace, list):
            return super()._compile_builder(append_unknown)
        key = (self.rule, tuple(trace), append_unknown)
        builder = _BUILDERS.get(key)
        if builder is None:
            builder = _BUILDERS.setdefault(key, super()._compile_builder(append_unknown))
        return builder


#: The compiled URL builders, by rule (bounded by the distinct rules of the apps: ~60 here).
_BUILDERS: dict[tuple[str, tuple[tuple[bool, str], ...], bool], Callable[..., tuple[str, str]]] = {}


class _OpenAPI(OpenAPI):
    """flask-openapi3's app, whose OpenAPI document is a copy of the one built per process."""

    url_rule_class = _Rule
    token_required = False

    @property
    def api_doc(self) -> dict[str, Any]:
        if not self.spec_json:
            self.generate_spec_json()
        return self.spec_json

    def generate_spec_json(self) -> None:
        self.spec_json = _app_spec(self.info.title, self.token_required)


_UNAUTHORIZED = {
    "description": "Unauthorized",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
}


def _app_spec(title: str, token_required: bool) -> dict[str, Any]:
    """One app's OpenAPI document: the shared one with its title and, with a token, the 401
    answers and the bearer security of every route but the public ones."""
    spec = copy.deepcopy(_base_spec())
    spec["info"]["title"] = title
    if not token_required:
        return spec
    spec["components"]["securitySchemes"] = {"bearerAuth": {"type": "http", "scheme": "bearer"}}
    public = set(service_blueprint.paths)
    for path, item in spec["paths"].items():
        if path in public:
            continue
        for operation in item.values():
            responses: dict[str, Any] = {}
            for status, response in operation["responses"].items():
                responses[status] = response
                if status == "415":  # where the blueprints' common errors end
                    responses["401"] = copy.deepcopy(_UNAUTHORIZED)
            operation["responses"] = responses
            operation["security"] = [{"bearerAuth": []}]
    # /auth/whoami also answers without a token (no scope): the token is optional there
    spec["paths"]["/auth/whoami"]["get"]["security"] = [{"bearerAuth": []}, {}]
    return spec


@functools.cache
def _base_spec() -> dict[str, Any]:
    """The OpenAPI document every app shares (no token; its title is replaced per app).

    Generated by flask-openapi3 from a throwaway app with the same blueprints, once per process
    (~20 ms); never handed out itself, only copies, so no app can change another's.
    """
    app = _new_app("", token_required=False)
    OpenAPI.generate_spec_json(app)
    spec = app.spec_json
    if spec.get("components", {}).get("securitySchemes", ...) is None:
        spec["components"].pop("securitySchemes")  # null is not a valid OpenAPI value
    return spec


def token_from_env() -> str | None:
    """The token in ``OPERATION_DISPATCHER_TOKEN``, or None when unset or empty."""
    return os.environ.get(TOKEN_ENV) or None


def _require_token() -> None:
    """401 without a known token, 403 without the route's scope (see :mod:`.auth`)."""
    authorize(api_state().credentials)


def _check_body() -> None:
    """Refuse oversized, non-JSON or malformed bodies before any view sees them."""
    if request.method not in _BODY_METHODS or request.endpoint is None:
        return  # no body expected, or no route (the 404 or 405 follows)
    state = api_state()
    length = request.content_length
    if length is not None and length > state.max_body_bytes:
        raise ApiError(413, "request_too_large",
                       f"request body is larger than {state.max_body_bytes} bytes")
    if not length and "chunked" not in request.headers.get("Transfer-Encoding", "").lower():
        return  # no body: the view's model decides whether that is fine
    mimetype = request.mimetype
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise ApiError(
            415, "unsupported_media_type",
            f"request body must be JSON (Content-Type: application/json), "
            f"got {request.content_type or 'no Content-Type'!r}",
        )
    # Parsed once here (flask caches it; the view's validation reuses the result).
    if request.get_json(silent=True) is None:
        data = request.get_data(cache=True)
        try:
            current_app.json.loads(data)  # only to say what is wrong (a literal null is fine)
        except ValueError as exc:
            view = current_app.view_functions.get(request.endpoint or "")
            code = getattr(view, "body_error_code", "invalid_request_body")
            if isinstance(exc, UnusableValue):
                raise ApiError(400, code, f"request body: {exc}", {"field": exc.field}) from None
            raise ApiError(400, code, f"request body is not valid JSON: {exc}") from None


__all__ = ["DEFAULT_MAX_BODY_BYTES", "TOKEN_ENV", "create_app", "token_from_env"]

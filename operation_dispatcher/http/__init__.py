"""The REST API (extra ``api``): ``create_app(dispatcher)`` and ``ApiServer``.

Flask with flask-openapi3: every request is validated by the pydantic models in
:mod:`.schemas`, and ``/openapi.json`` is generated from the same models. The Swagger UI at
``/apidocs`` is served from the installed flask-openapi3-swagger files.

    from operation_dispatcher import OperationDispatcher
    from operation_dispatcher.http import ApiServer, create_app

    dispatcher = OperationDispatcher("robot-1")
    dispatcher.start()
    with ApiServer(create_app(dispatcher), port=8080):
        ...                                   # http://127.0.0.1:8080/apidocs
    dispatcher.stop()
"""

from __future__ import annotations

try:
    import flask  # noqa: F401
    import flask_openapi3  # noqa: F401
    import pydantic  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a bare venv
    raise ImportError(
        f"operation_dispatcher.http needs the 'api' extra ({exc.name} is missing): "
        "pip install 'operation-dispatcher[api]'"
    ) from exc

from .app import DEFAULT_MAX_BODY_BYTES, TOKEN_ENV, create_app, token_from_env
from .errors import STATUS_BY_ERROR, ApiError
from .server import ApiServer

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "STATUS_BY_ERROR",
    "TOKEN_ENV",
    "ApiError",
    "ApiServer",
    "create_app",
    "token_from_env",
]

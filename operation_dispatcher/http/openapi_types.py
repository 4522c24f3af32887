"""The type of a route's ``responses`` table (status -> response model), spelled once.

flask-openapi3 types ``responses=`` as a dict keyed by ``str | int | HTTPStatus``. A dict is
invariant, so a table shared by several routes and annotated ``dict[int, ...]`` does not fit it,
nor does one unpacked into another (``{200: Model, **_NOT_FOUND}``): annotate such tables with
:data:`Responses`. mypy checks it against flask-openapi3's own signature at every route.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, TypeAlias

from pydantic import BaseModel

#: A status and its response model (or a raw OpenAPI response object, or None: no body).
Responses: TypeAlias = dict[str | int | HTTPStatus, type[BaseModel] | dict[Any, Any] | None]

__all__ = ["Responses"]

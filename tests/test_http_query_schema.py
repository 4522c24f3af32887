"""The JSON Schema flask-openapi3 reads on every query-validated request is generated once.

flask-openapi3 4.x calls ``model_json_schema()`` of a route's query model on every request (to
find the list-typed fields); :class:`RequestModel` answers that call from a per-class cache.
These tests hold the cache to the routes that need it and to pydantic's own answer.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

from operation_dispatcher.http.schemas import RequestModel

#: Where flask-openapi3 takes request parts it parses from the query string or the headers.
_PARSED_PARTS = ("query", "header", "form")


def parsed_models(app: Any) -> dict[str, type[BaseModel]]:
    """``{route: model}`` of every route whose query (or header, form) flask-openapi3 parses."""
    found: dict[str, type[BaseModel]] = {}
    for rule in app.url_map.iter_rules():
        view = getattr(app.view_functions[rule.endpoint], "__wrapped__", None)
        if view is None:
            continue
        hints = typing.get_type_hints(view)
        found.update({f"{rule.rule} {part}": hints[part] for part in _PARSED_PARTS if part in hints})
    return found


def pydantic_schema(model: type[BaseModel], **kwargs: Any) -> dict[str, Any]:
    """What pydantic itself generates for ``model`` (RequestModel's cache bypassed)."""
    assert issubclass(model, RequestModel)
    return super(RequestModel, model).model_json_schema(**kwargs)


@pytest.fixture
def generations(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The titles of the JSON Schemas pydantic generates while the test runs (calls go through)."""
    seen: list[str] = []
    generate = GenerateJsonSchema.generate

    def counting(self: GenerateJsonSchema, *args: Any, **kwargs: Any) -> Any:
        schema = generate(self, *args, **kwargs)
        seen.append(str(schema.get("title")))
        return schema

    monkeypatch.setattr(GenerateJsonSchema, "generate", counting)
    yield seen


def test_every_parsed_model_is_a_request_model(make_client: Callable[..., Any]) -> None:
    """A route parsing a model outside RequestModel would regenerate its schema per request."""
    models = parsed_models(make_client().app)
    assert {route.split()[0] for route in models} >= {
        "/operations", "/operations/history", "/events/stream", "/reports/kpis",
    }
    outside = {route: m.__name__ for route, m in models.items() if not issubclass(m, RequestModel)}
    assert outside == {}


def test_the_no_argument_schema_is_pydantics_and_shared(make_client: Callable[..., Any]) -> None:
    for model in set(parsed_models(make_client().app).values()):
        first = model.model_json_schema()
        assert model.model_json_schema() is first  # one dict per class, not one per call
        assert first == pydantic_schema(model)


def test_calls_with_arguments_are_generated_as_before() -> None:
    """The OpenAPI document asks with its own ref_template: never the cached default."""
    from operation_dispatcher.http.schemas import HistoryQuery

    template = "#/components/schemas/{model}"
    ours = HistoryQuery.model_json_schema(ref_template=template)
    assert ours is not HistoryQuery.model_json_schema()
    assert ours is not HistoryQuery.model_json_schema(ref_template=template)
    assert ours == pydantic_schema(HistoryQuery, ref_template=template)


def test_query_requests_generate_no_schema(
    make_client: Callable[..., Any], generations: list[str]
) -> None:
    """Good and bad queries alike: after the first request, no schema is generated again, and
    the shared schema is what pydantic generates (no request changed it)."""
    api = make_client()
    api.add({"payload": {"n": 1}})
    paths = {
        "/operations?state=QUEUED": 200,
        "/operations?state=DONE": 400,
        "/operations?colour=red": 400,
        "/operations/history?limit=5&resolve_operations=false": 200,
        "/operations/history?limit=0": 400,
        "/operations/history?limit=x&limit=y": 400,
        "/reports/kpis?from_time=2026-01-31T08:00:00Z": 200,
        "/reports/kpis?to_time=yesterday": 400,
    }
    for path in paths:  # the first of each model may generate its schema (the cache fills)
        api.get(path)
    generations.clear()
    for _ in range(3):
        for path, status in paths.items():
            assert api.get(path).status_code == status, path
    assert generations == []
    for model in set(parsed_models(api.app).values()):
        assert model.model_json_schema() == pydantic_schema(model)

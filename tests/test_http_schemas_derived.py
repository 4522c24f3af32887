"""The HTTP request schemas of operations are derived from the core's dataclasses (issue 11,
item 4): fields, order, types and defaults come from ``Operation`` and ``UPDATABLE_FIELDS``, so
a field the core adds or changes reaches the wire and ``/openapi.json`` without being restated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import pytest
from conftest import assert_error
from pydantic import ValidationError as PydanticError

from operation_dispatcher import _checks
from operation_dispatcher.http import schemas
from operation_dispatcher.models import (
    UPDATABLE_FIELDS,
    DependencyType,
    Operation,
    OperationDependency,
)


def core_fields(cls: type, names: set[str] | frozenset[str]) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.name in names]  # type: ignore[arg-type]


def test_operation_items_have_the_cores_fields_in_its_order_with_its_defaults() -> None:
    """Add and update list the core's fields in the core's order; add has the core's defaults
    (but a payload is required, as in the original); update leaves every field out by default."""
    add, update = schemas.AddOperationItem, schemas.UpdateOperationItem
    addable = core_fields(Operation, UPDATABLE_FIELDS | {"job_id"})
    assert list(add.model_fields) == [f.name for f in addable]
    assert list(update.model_fields) == [f.name for f in core_fields(Operation, UPDATABLE_FIELDS)]
    for core in addable:
        wire = add.model_fields[core.name]
        if core.name == "payload":
            assert wire.is_required()
        elif core.default is not dataclasses.MISSING:
            assert wire.default == core.default, core.name
        else:
            assert wire.default_factory is core.default_factory, core.name
    assert all(f.default is None and not f.is_required() for f in update.model_fields.values())
    # a dependency item is what a client sets of OperationDependency: the id and time are ours
    assert list(schemas.DependencyItem.model_fields) == ["depends_on_operation_id",
                                                         "dependency_type"]
    assert {f.name for f in dataclasses.fields(OperationDependency)} - set(
        schemas.DependencyItem.model_fields) == {"id", "created_at"}


@dataclass(kw_only=True)
class Machined(Operation):
    """An operation as the core might grow it: new fields of types the core already uses."""

    setup_seconds: float | None = None
    tool: DependencyType = DependencyType.START_TO_START
    inspected_at: datetime | None = None


def test_a_field_the_core_adds_reaches_the_wire_with_its_rules() -> None:
    """A new core field needs no HTTP code: its type gives it the core's limits on the wire
    and in the JSON Schema (a duration <= MAX_SECONDS, an enum's values, an aware datetime)."""
    new = {"setup_seconds", "tool", "inspected_at"}
    model = schemas.derived("MachinedItem", Machined, UPDATABLE_FIELDS | new)
    assert list(model.model_fields)[-3:] == ["setup_seconds", "tool", "inspected_at"]

    item = model.model_validate({"payload": {}, "setup_seconds": 2, "tool": "FINISH_TO_START",
                                 "inspected_at": "2026-01-31T08:00:00+02:00"})
    assert item.tool is DependencyType.FINISH_TO_START
    assert model.model_validate({}).tool is DependencyType.START_TO_START  # the core's default
    for bad in ({"setup_seconds": _checks.MAX_SECONDS * 2}, {"setup_seconds": 0},
                {"setup_seconds": "5"}, {"tool": "SOMETIMES"},
                {"inspected_at": "2026-01-31T08:00:00"}, {"unknown": 1}):
        with pytest.raises(PydanticError):
            model.model_validate(bad)

    properties = model.model_json_schema()["properties"]
    seconds = properties["setup_seconds"]["anyOf"][0]
    assert seconds["maximum"] == _checks.MAX_SECONDS and seconds["exclusiveMinimum"] == 0
    assert properties["inspected_at"]["anyOf"][0]["format"] == "date-time"


def test_an_update_may_leave_fields_out_but_sets_no_container_to_null() -> None:
    """Derived as partial: nothing is required, an optional field may be null, a container
    (payload, dependencies, conditions) and the priority may not."""
    update = schemas.UpdateOperationItem
    assert update.model_validate({}).model_dump(exclude_unset=True) == {}
    assert update.model_validate({"release_date": None}).model_dump(exclude_unset=True) == {
        "release_date": None}
    for name in ("payload", "priority", "dependencies", "release_conditions"):
        with pytest.raises(PydanticError):
            update.model_validate({name: None})


@dataclass
class Odd:
    weight: complex = 0j


def test_a_core_type_without_a_wire_form_stops_the_import_naming_the_field() -> None:
    """A field the wire cannot carry is found when the schemas are built, not by a client."""
    with pytest.raises(TypeError, match=r"Odd\.weight: no wire type for <class 'complex'>"):
        schemas.derived("OddItem", Odd, {"weight"})


def test_field_rules_narrower_than_the_type_are_the_cores() -> None:
    """release_date and release_conditions keep the core's extra checks on the wire: a release
    date too far ahead and an empty signal name are refused before the core sees them."""
    add = schemas.AddOperationItem
    with pytest.raises(PydanticError) as raised:
        add.model_validate({"payload": {}, "release_date": "9000-01-01T00:00:00Z"})
    assert raised.value.errors()[0]["loc"] == ("release_date",)
    with pytest.raises(PydanticError) as raised:
        add.model_validate({"payload": {}, "release_conditions": {"": True}})
    assert raised.value.errors()[0]["loc"][0] == "release_conditions"
    with pytest.raises(PydanticError):
        add.model_validate({"payload": {}, "dependencies": [
            {"depends_on_operation_id": "00000000-0000-4000-8000-000000000000",
             "dependency_type": "FINISH_TO_START"}] * (schemas.MAX_DEPENDENCIES + 1)})



# --------------------------------------------------------- error codes: one table per model


def test_request_models_tell_their_errors_from_their_table_not_from_code() -> None:
    """Every request model's codes are rows of its ``error_rules`` (keyed by field and
    pydantic error type); only two models add logic: the add list picks the original's first
    check per item, the update names every unknown field at once."""
    custom = {
        name for name, model in schemas.REQUEST_MODELS.items()
        if any("describe" in vars(klass) for klass in model.__mro__
               if klass not in (schemas.Described, object))
    }
    assert custom == {"AddOperationItems", "UpdateOperationItem"}
    codes = {rule.code for model in schemas.REQUEST_MODELS.values()
             for rule in model.error_rules.values()}
    assert {"invalid_operation_id", "invalid_limit", "missing_payload", "too_many_operations",
            "invalid_termination_reason", "invalid_meta_data"} <= codes


def test_an_error_rule_row_picks_code_message_and_details() -> None:
    """The exact error type wins over ``"*"``, ``""`` is the body itself, messages name the
    field and the input, details come before the field; an unclaimed error gets the rule it
    broke under the model's ``error_code``."""

    class Probe(schemas.RequestModel):
        count: int = 0
        name: str = ""
        error_code: ClassVar[str] = "invalid_probe"
        error_rules: ClassVar[dict[tuple[str, str], schemas.ErrorRule]] = {
            ("", "*"): schemas.ErrorRule("invalid_body", "body must be an object"),
            ("count", "int_parsing"): schemas.ErrorRule(
                "count_not_a_number", "{field} is no number: {input!r}", {"hint": "digits"}),
            ("count", "*"): schemas.ErrorRule("invalid_count"),
        }

    def told(data: Any) -> tuple[str, str, dict[str, Any]]:
        with pytest.raises(PydanticError) as raised:
            Probe.model_validate(data)
        return Probe.describe(raised.value.errors())

    assert told([]) == ("invalid_body", "body must be an object", {})
    assert told({"count": "x"}) == ("count_not_a_number", "count is no number: 'x'",
                                    {"hint": "digits", "field": "count"})
    assert told({"count": 1.5}) == ("invalid_count", "count must be an integer (got 1.5)",
                                    {"field": "count"})
    assert told({"name": 5}) == ("invalid_probe", "name must be a string (got 5)",
                                 {"field": "name"})
    assert list(told({"count": "x"})[2]) == ["hint", "field"]


def test_the_first_error_told_is_the_originals_first_check(make_client: Any) -> None:
    """pydantic reports errors in the fields' order, which is the original's order of checks:
    the query's own order does not matter; per added item: an object, no resource_id, a
    payload, the rest."""
    api = make_client(start=False)
    reply = api.get("/operations/history?resolve_operations=maybe&to_time=x&limit=0")
    assert_error(reply, 400, "invalid_limit", field="limit")
    reply = api.post("/operations/add", json=[{"payload": {}},
                                              {"priority": "a", "resource_id": "x"}, 5])
    assert_error(reply, 400, "resource_id_not_allowed", index=1, field="resource_id")
    reply = api.post("/operations/add", json=[{"job_id": 5, "priority": "a"}])
    assert_error(reply, 400, "missing_payload", index=0, field="payload")
    reply = api.post("/operations/add", json=[{"payload": {}, "priority": "a"}, 5])
    assert_error(reply, 400, "invalid_operation", index=0, field="priority")

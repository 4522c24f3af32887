"""The HTTP request schemas of operations are derived from the core's dataclasses (issue 11,
item 4): fields, order, types and defaults come from ``Operation`` and ``UPDATABLE_FIELDS``, so
a field the core adds or changes reaches the wire and ``/openapi.json`` without being restated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
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


"""Values standard JSON cannot carry are refused by the Python API (issue 10, D.13, E.21).

Non-finite numbers (``inf``, ``nan``), integers over 4,300 digits (``str()`` and ``json.dumps``
refuse them) and lone surrogates (``"\\ud800"``: not Unicode, not UTF-8) in payloads, release
conditions, meta and decision data and signal values: each is a ValidationError naming where it
is, and nothing is stored.
"""

from __future__ import annotations

import json
import math
from typing import Any
from uuid import uuid4

import pytest
from conftest import RESOURCE as R

from operation_dispatcher import Operation, SignalBoard
from operation_dispatcher.errors import ValidationError

# ------------------------------------------------------------------------- operations

INF, NAN = math.inf, math.nan
HUGE_INT = 10**4300  # 4,301 digits: str() and json.dumps refuse it


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"payload": {"x": INF}}, "payload.x"),
        ({"payload": {"x": [1, {"y": -INF}]}}, "payload.x[1].y"),
        ({"payload": {"x": NAN}}, "payload.x"),
        ({"payload": {"x": HUGE_INT}}, "payload.x"),
        ({"payload": {"x": "\ud800"}}, "payload.x"),
        ({"payload": {"\udfff": 1}}, "payload key"),
        ({"payload": {1: "a"}}, "payload"),
        ({"job_id": "job-\ud800"}, "job_id"),
        ({"release_conditions": {"plc.speed": INF}}, "release_conditions.plc.speed"),
        ({"release_conditions": {"plc.\ud800": True}}, "release_conditions key"),
        ({"planned_duration": INF}, "planned_duration"),
        ({"planned_duration": NAN}, "planned_duration"),
        ({"timeout_seconds": INF}, "timeout_seconds"),
        ({"timeout_seconds": HUGE_INT}, "timeout_seconds"),
        ({"priority": HUGE_INT}, "priority"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_operation_refuses_what_json_cannot_carry(fields: dict[str, Any], field_name: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Operation(resource_id=R, **fields)
    assert raised.value.field.startswith(field_name), raised.value
    json.dumps(Operation(resource_id=R).to_dict(), allow_nan=False)


def test_json_values_at_the_limits_are_kept() -> None:
    big = 10**4299  # 4,300 digits
    op = Operation(resource_id=R, payload={"n": big, "f": 1e308, "t": "Grüße 🤖"}, priority=-big)
    assert json.loads(json.dumps(op.to_dict(), allow_nan=False))["payload"]["n"] == big


def test_update_refuses_non_finite_values(make_dispatcher: Any) -> None:
    dispatcher = make_dispatcher()
    op = dispatcher.add_operation(Operation(resource_id=R, payload={"a": 1}))
    for updates in ({"payload": {"a": INF}}, {"release_conditions": {"x": NAN}},
                    {"timeout_seconds": INF}, {"payload": {"a": "\ud800"}}):
        with pytest.raises(ValidationError):
            dispatcher.update_operation(op.id, updates)
    assert dispatcher.get_operation(op.id).payload == {"a": 1}


@pytest.mark.parametrize(
    "meta", [{"x": INF}, {"x": [NAN]}, {"x": "\ud800"}, {"x": HUGE_INT}, "not a dict"],
    ids=["inf", "nan", "surrogate", "huge-int", "not-a-dict"],
)
def test_meta_data_and_decision_data_refuse_what_json_cannot_carry(
    make_dispatcher: Any, meta: Any
) -> None:
    dispatcher = make_dispatcher()
    queued = dispatcher.add_operation(Operation(resource_id=R))
    calls = [
        lambda: dispatcher.add_operation(Operation(resource_id=R), meta_data=meta),
        lambda: dispatcher.update_operation(queued.id, {"priority": 3}, meta_data=meta),
        lambda: dispatcher.cancel_operation(queued.id, meta_data=meta),
        lambda: dispatcher.pause_operation(queued.id, meta_data=meta),
        lambda: dispatcher.resume_operation(queued.id, meta_data=meta),
        lambda: dispatcher.complete_operation(queued.id, meta_data=meta),
        lambda: dispatcher.fail_operation(queued.id, meta_data=meta),
    ]
    for call in calls:
        with pytest.raises(ValidationError):
            call()
    with pytest.raises(TypeError if isinstance(meta, str) else ValidationError):
        dispatcher.decide(uuid4(), True, data=meta)  # decide() says TypeError for a non-dict
    with pytest.raises(ValidationError):
        dispatcher.decide(uuid4(), False, reasoning="\ud800")
    assert [op.id for op in dispatcher.get_schedule()] == [queued.id]
    assert dispatcher.get_operation(queued.id).priority == 0


# ---------------------------------------------------------------------------- signals

@pytest.mark.parametrize(
    ("value", "field"),
    [
        (float("inf"), "value"), (float("nan"), "value"), ([1, float("-inf")], "value[1]"),
        ({"a": "\ud800"}, "value.a"), (10**4300, "value"),
    ],
    ids=["inf", "nan", "list-inf", "surrogate", "huge-int"],
)
def test_set_refuses_values_json_cannot_carry(value: Any, field: str) -> None:
    board = SignalBoard()
    with pytest.raises(ValidationError) as raised:
        board.set("plc.speed", value)
    assert raised.value.field == field
    assert board.get("plc.speed") is None


@pytest.mark.parametrize("max_age", [float("inf"), float("nan"), -1.0, 0, True, "5"])
def test_set_refuses_a_max_age_that_is_not_a_finite_positive_number(max_age: Any) -> None:
    board = SignalBoard()
    with pytest.raises(ValidationError):
        board.set("plc.speed", 1, max_age_seconds=max_age)
    with pytest.raises(ValidationError):
        board.set("plc.\ud800", 1)
    assert len(board) == 0

"""One strict JSON reader (``_checks.load_json``) behind HTTP bodies, MQTT commands (and the
fleet view) and serial ``SIG`` values: each path refuses the same text, in its own words.

The integer rule is counted by the reader itself: the interpreter's own limit is process-wide
and ``PYTHONINTMAXSTRDIGITS=0`` (or any library calling ``sys.set_int_max_str_digits(0)``) lifts
it, which used to let MQTT and serial take integers that HTTP refused.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import assert_error

from firmware_bridges import serial_protocol as proto
from operation_dispatcher import _checks
from operation_dispatcher.errors import ValidationError
from operation_dispatcher.mqtt.commands import CommandError, decode

JSON = {"Content-Type": "application/json"}
LONG = "9" * 5000  # over MAX_INT_DIGITS (4,300)


@pytest.fixture(params=["default limit", "limit lifted"])
def digit_limit(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test runs under Python's default digit limit and with the limit lifted."""
    before = sys.get_int_max_str_digits()
    if request.param == "limit lifted":
        sys.set_int_max_str_digits(0)
    try:
        yield
    finally:
        sys.set_int_max_str_digits(before)


@pytest.mark.parametrize("number", [LONG, "-" + LONG])
def test_every_path_refuses_an_integer_over_the_limit(
    digit_limit: None, make_client: Callable[..., Any], number: str,
) -> None:
    api = make_client(start=False)
    body = f'[{{"payload": {{"n": {number}}}}}]'
    assert_error(api.post("/operations/add", data=body, headers=JSON), 400,
                 "invalid_operations", field="[0].payload.n")
    assert api.dispatcher.get_schedule() == []

    with pytest.raises(CommandError) as info:
        decode(f'{{"command": "add", "args": {{"n": {number}}}}}'.encode())
    assert (info.value.status, info.value.code) == (400, "invalid_json")
    with pytest.raises(ValidationError, match="is not a JSON document"):  # the fleet's reader
        _checks.parse_json(f'{{"n": {number}}}', "state")

    with pytest.raises(proto.MalformedLine, match="an integer of more than 4300 digits"):
        proto.parse_device_line(f"SIG n={number}")


def test_every_path_takes_an_integer_at_the_limit(
    digit_limit: None, make_client: Callable[..., Any],
) -> None:
    number = "-" + "9" * _checks.MAX_INT_DIGITS
    api = make_client(start=False)
    reply = api.post("/operations/add", data=f'[{{"payload": {{"n": {number}}}}}]', headers=JSON)
    assert reply.status_code == 201, reply.text[:200]
    assert decode(f'{{"n": {number}}}'.encode()) == {"n": int(number)}
    assert proto.parse_device_line(f"SIG n={number}").value == int(number)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_every_path_refuses_the_non_json_constants(
    make_client: Callable[..., Any], constant: str,
) -> None:
    api = make_client(start=False)
    reply = assert_error(
        api.post("/operations/add", data=f'[{{"payload": {{"x": {constant}}}}}]', headers=JSON),
        400, "invalid_operations")
    assert reply["message"] == (
        f"request body is not valid JSON: {constant} is not JSON")

    with pytest.raises(CommandError) as info:
        decode(f'{{"x": {constant}}}'.encode())
    assert info.value.code == "invalid_json"

    assert proto.parse_device_line(f"SIG x={constant}").value == constant  # text, never a float

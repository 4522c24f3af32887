"""Schemathesis against the app's ``/openapi.json``, called through WSGI (the app is under test
here, not the server): generated valid and invalid requests for every operation, and each answer
checked against the same document.

Bounded: a handful of examples per operation and mode, so the run takes seconds. The checks:
no 5xx, every status code and content type documented, every body valid against its schema,
and invalid data never accepted (2xx).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from operation_dispatcher import DispatchEvent, EventType

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "25"))
DERANDOMIZE = os.environ.get("SCHEMATHESIS_RANDOM") is None  # a fixed run unless asked
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def on_request(event: DispatchEvent) -> Any:
    # deny now and then, so the denial paths are in the traffic too
    return event.event_type is not EventType.OPERATION_PAUSE_REQUESTED


def rejects_negative_data(ctx: Any, response: Any, case: Any) -> bool | None:
    """Schemathesis's negative-data check, with 413 (body too large) counted as a rejection."""
    if response.status_code == 413:
        return None
    return negative_data_rejection(ctx, response, case)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_get_documented_answers(
    make_client: Callable[..., Any], make_dispatcher: Callable[..., Any], mode: GenerationMode
) -> None:
    dispatcher = make_dispatcher(
        on_request_callback=on_request, request_event_timeout_seconds=1.0,
        start_request_retry_cooldown_seconds=0.01, start_request_max_retries=1000,
    )
    api = make_client(dispatcher)
    # Something to find: a few operations (one running) and a signal.
    api.add({"payload": {"task": "a"}}, {"payload": {"task": "b"}, "priority": 2})
    api.put("/signals/plc.ready", json={"value": True})
    schema = schemathesis.openapi.from_wsgi("/openapi.json", api.app).exclude(
        path="/events/stream"  # endless by design; tested in test_http_api
    )
    checks = CHECKS + ([rejects_negative_data] if mode is GenerationMode.NEGATIVE else [])
    failures: list[str] = []
    calls: list[str] = []
    unsatisfiable: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES, deadline=None, database=None, derandomize=DERANDOMIZE,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            calls.append(case.method)
            response = case.call()
            try:
                case.validate_response(response, checks=checks)
            except Exception as exc:  # collect them all, then report
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code} "
                    f"{response.text[:200]!r}: {str(exc)[:300]}"
                )
                raise AssertionError(failures[-1]) from None

        try:
            run()
        except Unsatisfiable:
            # no parameters and no body: nothing can be made invalid (GET /requests, ...)
            assert mode is GenerationMode.NEGATIVE
            unsatisfiable.append(f"{operation.method.upper()} {operation.path}")
    assert operations >= 22
    assert len(calls) >= operations * 3, (len(calls), unsatisfiable)
    print(f"{mode.value}: {len(calls)} requests over {operations} operations")
    assert not failures, "\n".join(failures[:20])

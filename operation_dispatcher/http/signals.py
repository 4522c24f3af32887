"""``/signals...``: the live values that release operations (``release_conditions``)."""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from ..errors import ValidationError
from .errors import ApiError
from .schemas import ErrorResponse, Signal, SignalList, SignalPath, SignalUpdate
from .state import api_blueprint, api_state, body_error_code, json_response

TAG = Tag(name="Signals", description="named live values with staleness")


#: The ``/signals`` routes, shared by every app; each view reads its app's signal board.
signals_blueprint: APIBlueprint = api_blueprint("signals", __name__, TAG)


@signals_blueprint.get("/signals", operation_id="list_signals", summary="Every signal, by name",
                       responses={200: SignalList})
def list_signals() -> Response:
    board = api_state().dispatcher.signals
    return json_response([signal.to_dict() for signal in board.snapshot()])


@signals_blueprint.put(
    "/signals/<name>", operation_id="set_signal",
    summary="Write (or re-confirm) a signal; a change wakes the dispatcher",
    description="A signal a bridge owns (`<bridge>.*`) is read-only here (409). Without "
                "`max_age_seconds` the server's default max age applies.",
    responses={200: Signal, 409: ErrorResponse},
)
@body_error_code("invalid_signal")
def set_signal(path: SignalPath, body: SignalUpdate) -> Response:
    state = api_state()
    board = state.dispatcher.signals
    owner = board.owner_of(path.name)
    if owner is not None:  # the device is the only source of truth for its signals
        raise ApiError(409, "signal_owned",
                       f"signal {path.name!r} is written by {owner}; it is read-only over HTTP",
                       {"owner": owner})
    max_age = body.max_age_seconds
    if max_age is None:
        max_age = state.signal_max_age_seconds
    try:
        signal = board.set(path.name, body.value, max_age_seconds=max_age)
    except ValidationError as exc:
        raise ApiError.from_exc(exc, "invalid_signal") from None
    return json_response(signal.to_dict())


__all__ = ["signals_blueprint"]

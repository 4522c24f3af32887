"""``/bridges...``: the hardware bridges feeding this dispatcher, with health and counters."""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from .errors import ApiError
from .schemas import BridgeList, BridgePath, BridgeStatus, ErrorResponse
from .state import api_blueprint, api_state, json_response

TAG = Tag(name="Bridges", description="PLC and serial-line bridges: health and counters")


#: The ``/bridges`` routes (read-only: bridges are configured, not created over HTTP), shared
#: by every app; each view reads its app's bridges.
bridges_blueprint: APIBlueprint = api_blueprint("bridges", __name__, TAG)


@bridges_blueprint.get("/bridges", operation_id="list_bridges",
                       summary="Every bridge: health and counters", responses={200: BridgeList})
def list_bridges() -> Response:
    return json_response([bridge.status() for bridge in api_state().bridges.values()])


@bridges_blueprint.get("/bridges/<name>", operation_id="get_bridge",
                       summary="One bridge: health and counters",
                       responses={200: BridgeStatus, 404: ErrorResponse})
def get_bridge(path: BridgePath) -> Response:
    bridges = api_state().bridges
    bridge = bridges.get(path.name)
    if bridge is None:
        raise ApiError(404, "bridge_not_found", f"no bridge named {path.name!r}",
                       {"known": sorted(bridges)})
    return json_response(bridge.status())


__all__ = ["bridges_blueprint"]

"""``/bridges...``: the hardware bridges feeding this dispatcher, with health and counters."""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from .errors import ApiError
from .schemas import BridgeList, BridgePath, BridgeStatus, ErrorResponse
from .state import ApiState, api_blueprint, json_response

TAG = Tag(name="Bridges", description="PLC and serial-line bridges: health and counters")


def bridges_blueprint(state: ApiState) -> APIBlueprint:
    """The ``/bridges`` routes (read-only: bridges are configured, not created over HTTP)."""
    bp = api_blueprint("bridges", __name__, TAG, state)
    bridges = state.bridges

    @bp.get("/bridges", operation_id="list_bridges", summary="Every bridge: health and counters",
            responses={200: BridgeList})
    def list_bridges() -> Response:
        return json_response([bridge.status() for bridge in bridges.values()])

    @bp.get("/bridges/<name>", operation_id="get_bridge", summary="One bridge: health and counters",
            responses={200: BridgeStatus, 404: ErrorResponse})
    def get_bridge(path: BridgePath) -> Response:
        bridge = bridges.get(path.name)
        if bridge is None:
            raise ApiError(404, "bridge_not_found", f"no bridge named {path.name!r}",
                           {"known": sorted(bridges)})
        return json_response(bridge.status())

    return bp


__all__ = ["bridges_blueprint"]

"""The live dashboard: a static page at ``/dashboard`` (and ``/`` for browsers), its assets,
the favicon and the state-machine diagram.

The page is plain HTML, CSS and JavaScript modules shipped inside the package
(``http/dashboard/``): no CDN, no build step, so it works on an air-gapped shop-floor network.
These files hold no data, so they answer without a token (a browser cannot send the
``Authorization`` header when it navigates); the page asks for the token and sends it with
every call it makes. Every answer here carries a Content-Security-Policy that allows scripts,
styles, images and connections from this server only, and no inline script or style.
"""

from __future__ import annotations

import os
from html import escape

from flask import Blueprint, Response, request, send_from_directory

from ..lifecycle import TRANSITIONS
from ..models import ExecutionState

#: The folder of the page's static files (package data, see setup.cfg).
DASHBOARD_DIR = os.path.join(os.path.dirname(__file__), "dashboard")
#: The policy of every dashboard answer: this server only, no inline script or style.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
#: Endpoints of this module: all answer without a token (see :data:`~.docs.PUBLIC_ENDPOINTS`).
DASHBOARD_ENDPOINTS = frozenset({
    "dashboard.page", "dashboard.static", "dashboard.favicon", "dashboard.state_machine",
})

dashboard_blueprint = Blueprint(
    "dashboard", __name__, static_folder=DASHBOARD_DIR, static_url_path="/dashboard/assets",
)


def secure(response: Response) -> Response:
    """Add the Content-Security-Policy and its companions to a dashboard answer."""
    for name, value in _SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


dashboard_blueprint.after_request(secure)


def wants_html() -> bool:
    """True when the request's ``Accept`` prefers ``text/html`` to JSON (a browser's)."""
    accept = request.accept_mimetypes
    return accept.quality("text/html") > accept.quality("application/json")


def page_response() -> Response:
    """The dashboard page itself (also ``/`` for a browser), never cached without a check."""
    response = send_from_directory(DASHBOARD_DIR, "index.html", max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    return secure(response)


@dashboard_blueprint.get("/dashboard/")
@dashboard_blueprint.get("/dashboard")
def page() -> Response:
    return page_response()


@dashboard_blueprint.get("/favicon.ico")
def favicon() -> Response:
    """The icon (an SVG), so a browser that asks for /favicon.ico logs no 404."""
    return send_from_directory(DASHBOARD_DIR, "favicon.svg", mimetype="image/svg+xml",
                               max_age=3600)


@dashboard_blueprint.get("/dashboard/state-machine.svg")
def state_machine() -> Response:
    """The operation state machine, drawn from :data:`~..lifecycle.TRANSITIONS`."""
    response = Response(state_machine_svg(), mimetype="image/svg+xml")
    response.headers["Cache-Control"] = "no-cache"
    return response


# ------------------------------------------------------------------ the state-machine diagram

#: Where each state is drawn (a state added later without a place goes on the bottom row).
_PLACES = {
    ExecutionState.QUEUED: (80, 130),
    ExecutionState.RUNNING: (340, 40),
    ExecutionState.PAUSED: (340, 220),
    ExecutionState.COMPLETED: (600, 130),
}
_LABEL_AT = 0.3  # where along its line an edge's label sits (apart from the other labels)
_BOX_W, _BOX_H = 120, 40


def _edges() -> dict[tuple[ExecutionState, ExecutionState], list[str]]:
    """(source, target) -> the triggers that lead from one to the other, in table order."""
    edges: dict[tuple[ExecutionState, ExecutionState], list[str]] = {}
    for trigger, (sources, target) in TRANSITIONS.items():
        for source in sources:
            edges.setdefault((source, target), []).append(trigger)
    return edges


def state_machine_svg() -> str:
    """An SVG of the states and transitions of :data:`~..lifecycle.TRANSITIONS`."""
    places = dict(_PLACES)
    states = list(dict.fromkeys(
        [*places, *(s for sources, t in TRANSITIONS.values() for s in (*sources, t))]
    ))
    for index, state in enumerate(s for s in states if s not in places):
        places[state] = (80 + 160 * index, 300)
    height = max(y for _, y in places.values()) + 60
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 690 {height}" '
        f'width="690" height="{height}" font-family="sans-serif" font-size="13">',
        "<title>Operation state machine</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#94a3b8"/></marker></defs>',
    ]
    edges = _edges()
    for (source, target), triggers in edges.items():
        (x1, y1), (x2, y2) = places[source], places[target]
        back = (target, source) in edges
        shift = 8 if back else 0  # two opposite edges side by side
        dx, dy = x2 - x1, y2 - y1
        length = max((dx * dx + dy * dy) ** 0.5, 1.0)
        nx, ny = -dy / length * shift, dx / length * shift
        sx, sy = _border(x1, y1, dx, dy)
        ex, ey = _border(x2, y2, -dx, -dy)
        parts.append(
            f'<line x1="{sx + nx:.0f}" y1="{sy + ny:.0f}" x2="{ex + nx:.0f}" y2="{ey + ny:.0f}" '
            'stroke="#94a3b8" stroke-width="1.5" marker-end="url(#arrow)"/>'
        )
        mx = sx + (ex - sx) * _LABEL_AT + nx * 1.5
        my = sy + (ey - sy) * _LABEL_AT + ny * 1.5 - 4
        anchor = "middle" if abs(dx) > abs(dy) else ("start" if nx >= 0 else "end")
        parts.append(
            f'<text x="{mx:.0f}" y="{my:.0f}" text-anchor="{anchor}" fill="#cbd5e1">'
            f'{escape(", ".join(triggers))}</text>'
        )
    for state in states:
        x, y = places[state]
        parts.append(
            f'<g class="state" data-state="{escape(state.value)}">'
            f'<rect x="{x - _BOX_W // 2}" y="{y - _BOX_H // 2}" width="{_BOX_W}" '
            f'height="{_BOX_H}" rx="8" fill="#1e293b" stroke="#38bdf8"/>'
            f'<text x="{x}" y="{y + 5}" text-anchor="middle" fill="#f8fafc">'
            f"{escape(state.value)}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _border(x: float, y: float, dx: float, dy: float) -> tuple[float, float]:
    """Where a line from a box's centre towards (dx, dy) leaves the box."""
    if dx == 0 and dy == 0:
        return x, y
    scale = min(
        (_BOX_W / 2) / abs(dx) if dx else float("inf"),
        (_BOX_H / 2) / abs(dy) if dy else float("inf"),
    )
    return x + dx * scale, y + dy * scale


__all__ = [
    "CONTENT_SECURITY_POLICY",
    "DASHBOARD_DIR",
    "DASHBOARD_ENDPOINTS",
    "dashboard_blueprint",
    "page_response",
    "secure",
    "state_machine_svg",
    "wants_html",
]

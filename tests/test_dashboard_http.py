"""The dashboard's server side, through Flask's test client: where the page is served, that its
files need no token while the API still does, its security headers, ``GET /auth/whoami``,
``GET /reports/kpis`` and the state-machine diagram. (The page itself runs in Chromium in
test_dashboard_browser.py.)"""

from __future__ import annotations

import configparser
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from conftest import assert_error

from operation_dispatcher import EventType, OperationDispatcher
from operation_dispatcher.http.webui import CONTENT_SECURITY_POLICY, DASHBOARD_DIR
from operation_dispatcher.lifecycle import TRANSITIONS
from operation_dispatcher.models import ExecutionState

ROOT = Path(__file__).resolve().parent.parent
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
TOKENS = {
    "viewer": {"token": "view-secret", "scopes": ["read"]},
    "operator": {"token": "op-secret", "scopes": ["read", "operate"]},
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_page_at_dashboard_and_at_root_for_browsers(make_client: Callable[..., Any]) -> None:
    api = make_client(start=False)
    for path, headers in (("/dashboard", {}), ("/dashboard/", {}), ("/", BROWSER)):
        response = api.get(path, headers=headers)
        assert response.status_code == 200, path
        assert response.headers["Content-Type"].startswith("text/html")
        assert '<script type="module" src="/dashboard/assets/js/main.js">' in response.text
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    # JSON clients keep the index: an explicit JSON Accept, */* (curl, requests) or none at all
    for headers in ({"Accept": "application/json"}, {"Accept": "*/*"}, {}):
        index = api.get("/", headers=headers)
        assert index.headers["Content-Type"].startswith("application/json"), headers
        assert index.json()["links"]["dashboard"] == "/dashboard"


def test_content_security_policy_allows_no_inline_script_or_foreign_host(
    make_client: Callable[..., Any],
) -> None:
    api = make_client(start=False)
    policy = api.get("/dashboard").headers["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["script-src"] == "'self'" and directives["connect-src"] == "'self'"
    assert directives["default-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy and "http" not in policy
    for path in ("/dashboard/assets/js/main.js", "/dashboard/assets/dashboard.css",
                 "/dashboard/state-machine.svg"):
        response = api.get(path)
        assert response.status_code == 200, path
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, path
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert api.get("/dashboard/assets/js/main.js").headers["Content-Type"].startswith(
        ("text/javascript", "application/javascript"))


def test_static_files_need_no_token_but_the_data_does(make_client: Callable[..., Any]) -> None:
    api = make_client(start=False, token="all-secret", tokens=TOKENS)
    for path, headers in (("/dashboard", {}), ("/", BROWSER), ("/favicon.ico", {}),
                          ("/dashboard/assets/js/api.js", {}),
                          ("/dashboard/assets/favicon.svg", {}),
                          ("/dashboard/state-machine.svg", {})):
        assert api.get(path, headers=headers).status_code == 200, path
    assert api.get("/favicon.ico").headers["Content-Type"].startswith("image/svg+xml")
    # the page holds no data: everything it shows needs the token
    for path in ("/", "/operations", "/reports/kpis", "/requests"):
        assert_error(api.get(path), 401, "unauthorized")
    for escape in ("/dashboard/assets/../app.py", "/dashboard/assets/%2e%2e/app.py"):
        assert api.get(escape).status_code in (401, 404), escape  # no way out of the folder


def test_whoami_names_the_token_and_its_scopes(make_client: Callable[..., Any]) -> None:
    api = make_client(start=False, token="all-secret", tokens=TOKENS)
    assert api.get("/auth/whoami", headers=bearer("view-secret")).json() == {
        "name": "viewer", "scopes": ["read"], "token_required": True}
    assert api.get("/auth/whoami", headers=bearer("op-secret")).json()["scopes"] == [
        "read", "operate"]
    assert api.get("/auth/whoami", headers=bearer("all-secret")).json() == {
        "name": None, "scopes": ["read", "submit", "operate", "admin"], "token_required": True}
    assert_error(api.get("/auth/whoami", headers=bearer("nope")), 401, "unauthorized")
    assert_error(api.get("/auth/whoami", headers={"Authorization": ""}), 401, "unauthorized")
    # no header at all: no scope, and whether a token is needed (what a 401 would say)
    assert api.get("/auth/whoami").json() == {
        "name": None, "scopes": [], "token_required": True}
    assert_error(api.get("/auth/whoami", headers={"Authorization": "Basic view-secret"}),
                 401, "unauthorized")
    open_api = make_client(start=False)
    assert open_api.get("/auth/whoami").json() == {
        "name": None, "scopes": ["read", "submit", "operate", "admin"], "token_required": False}


def test_a_browser_accept_header_opens_no_api_route(make_client: Callable[..., Any]) -> None:
    """Only ``/`` turns public for a browser, and it then answers the page, never data."""
    api = make_client(start=False, token="all-secret")
    for path in ("/operations", "/dispatcher", "/signals", "/reports/kpis"):
        assert_error(api.get(path, headers=BROWSER), 401, "unauthorized")
    page = api.get("/", headers=BROWSER)
    assert page.headers["Content-Type"].startswith("text/html")
    assert "resource_id" not in page.text


def test_kpis_of_a_window(
    make_client: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher],
    make_recorder: Callable[..., Any],
) -> None:
    dispatcher = make_dispatcher()
    recorder = make_recorder(dispatcher)
    api = make_client(dispatcher)
    first, second = api.add({"payload": {"n": 1}}, {"payload": {"n": 2}})
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=UUID(first["id"]))
    dispatcher.complete_operation(first["id"])
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=UUID(second["id"]))
    dispatcher.fail_operation(second["id"])
    recorder.wait_for(EventType.OPERATION_FAILED)
    report = api.get("/reports/kpis").json()
    assert report["operation_count"] == 2
    assert report["completed_operation_count"] == 2
    assert report["successful_operation_count"] == 1
    assert report["truncated"] is False and report["events"] >= 7
    # the window is the last hour; the dispatcher started inside it and is still up
    start = datetime.fromisoformat(report["from_time"])
    end = datetime.fromisoformat(report["to_time"])
    assert end - start == timedelta(hours=1)
    assert 0 < report["dispatcher_uptime_seconds"] <= 3600
    assert report["dispatcher_runtime_seconds"] == report["dispatcher_uptime_seconds"]
    assert 0 < report["dispatcher_uptime_percentage"] < 100


def test_kpis_of_a_window_inside_a_long_run_count_it_as_up(
    make_client: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher],
    make_recorder: Callable[..., Any],
) -> None:
    """A window that starts after the dispatcher did holds no start event: it is up all along
    (and paused from the window's start when it is paused now with no pause event inside)."""
    dispatcher = make_dispatcher()
    recorder = make_recorder(dispatcher)
    api = make_client(dispatcher)
    dispatcher.pause_dispatcher_runtime()
    paused = recorder.wait_for(EventType.OPERATION_DISPATCHER_PAUSED)[0]
    later = paused.created_at + timedelta(microseconds=1)  # a window after every event so far
    report = api.get("/reports/kpis", params={"from_time": later.isoformat()}).json()
    assert report["events"] == 0  # none inside: up, and paused, since before the window
    assert report["dispatcher_uptime_percentage"] == pytest.approx(100.0)
    assert report["dispatcher_runtime_seconds"] == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"from_time": "yesterday"}, "invalid_from_time"),
        ({"from_time": "2026-01-01T00:00:00"}, "invalid_from_time"),  # no offset
        ({"to_time": "2026-13-01T00:00:00Z"}, "invalid_to_time"),
        ({"from_time": "2026-01-02T00:00:00Z", "to_time": "2026-01-01T00:00:00Z"},
         "invalid_time_range"),
        ({"window": "1h"}, None),
    ],
)
def test_kpis_refuse_bad_windows(
    make_client: Callable[..., Any], params: dict[str, str], code: str | None,
) -> None:
    api = make_client(start=False)
    response = api.get("/reports/kpis", params=params)
    assert response.status_code == 400, response.text
    if code is not None:
        assert_error(response, 400, code)


def test_state_machine_diagram_is_drawn_from_the_transitions_table(
    make_client: Callable[..., Any],
) -> None:
    api = make_client(start=False)
    response = api.get("/dashboard/state-machine.svg")
    assert response.headers["Content-Type"].startswith("image/svg+xml")
    text = response.text
    for state in ExecutionState:
        assert f'data-state="{state.value}"' in text
    labels = re.findall(r"<text [^>]*>([^<]*)</text>", text)
    triggers = [t for label in labels for t in label.split(", ")]
    for trigger, (sources, _target) in TRANSITIONS.items():
        assert triggers.count(trigger) == len(sources), trigger  # one arrow per source state


def test_the_page_inserts_no_markup_and_loads_nothing_from_elsewhere() -> None:
    """Safe by construction: no API that parses a string as HTML, no inline script or style,
    no URL of another host in any file the page is made of."""
    files = [p for p in Path(DASHBOARD_DIR).rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".html", ".css", ".js", ".svg"}
    for path in files:
        text = path.read_text(encoding="utf-8")
        for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                       "eval(", "new Function"):
            assert banned not in text, (path.name, banned)
        hosts = re.findall(r"https?://[^\s\"')]+", text)
        assert set(hosts) <= {"http://www.w3.org/2000/svg"}, (path.name, hosts)
    html = (Path(DASHBOARD_DIR) / "index.html").read_text(encoding="utf-8")
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"<[^>]+\son[a-z]+=", html)  # no inline event handler
    assert re.findall(r"<script\b[^>]*>", html) == [
        '<script type="module" src="/dashboard/assets/js/main.js">']


def test_every_dashboard_file_is_package_data() -> None:
    """A non-editable install carries the page: setup.cfg's globs match every file."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    globs = config["options.package_data"]["operation_dispatcher"].split()
    package = ROOT / "operation_dispatcher"
    shipped = {p for pattern in globs for p in package.glob(pattern)}
    files = {p for p in Path(DASHBOARD_DIR).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert files and files <= shipped, sorted(str(p) for p in files - shipped)


def test_kpis_analyse_at_most_the_most_recent_events(
    make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from operation_dispatcher.http import reports

    monkeypatch.setattr(reports, "MAX_KPI_EVENTS", 3)
    api = make_client()
    api.add(*({"payload": {"n": n}} for n in range(5)))
    report = api.get("/reports/kpis").json()
    assert report["truncated"] is True
    assert report["events"] == 3
    huge = api.get("/reports/kpis", params={"from_time": "0001-01-01T00:00:00Z"}).json()
    assert huge["truncated"] is True and huge["events"] == 3


def test_openapi_documents_whoami_and_kpis(make_client: Callable[..., Any]) -> None:
    spec = make_client(start=False).get("/openapi.json").json()
    assert set(spec["paths"]["/auth/whoami"]) == {"get"}
    kpis = spec["paths"]["/reports/kpis"]["get"]
    assert {p["name"] for p in kpis["parameters"]} == {"from_time", "to_time"}
    assert "/dashboard" not in spec["paths"]  # a page, not an API route
    with_token = make_client(start=False, token="s3cret").get(
        "/openapi.json", headers={"Authorization": "Bearer s3cret"}).json()
    assert with_token["paths"]["/auth/whoami"]["get"]["security"] == [{"bearerAuth": []}, {}]
    assert with_token["paths"]["/reports/kpis"]["get"]["security"] == [{"bearerAuth": []}]

"""The dashboard in a real headless Chromium (Debian's, through Playwright), against a real
server: ``make_api`` (waitress on a loopback port, in-process) or ``serve`` (a subprocess).

Every wait is on something the page or the dispatcher shows (a selector, an event), bounded;
no test sleeps to synchronise. Screenshots go to a temporary folder (``tmp_path``, or the one
``make screenshots`` names in ``OPERATION_DISPATCHER_SCREENSHOTS``).
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

import pytest
from browser import DESKTOP, SMALL, PageWatch, chromium, expect
from conftest import EventRecorder, wait_until
from served import Served

from operation_dispatcher import (
    PENDING,
    ApprovalPolicy,
    DispatchEvent,
    EventType,
    OperationDispatcher,
)

XSS = "<img src=x onerror=alert(1)>"
TOKENS = {
    "viewer": {"token": "view-secret", "scopes": ["read"]},
    "mes": {"token": "mes-secret", "scopes": ["submit"]},
    "operator": {"token": "op-secret", "scopes": ["read", "submit", "operate", "admin"]},
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def watch(browser: Any) -> Iterator[Callable[..., PageWatch]]:
    """``watch(base_url, viewport=None)`` -> a :class:`PageWatch`; closed at teardown."""
    made: list[PageWatch] = []

    def factory(base_url: str, viewport: dict[str, int] | None = None) -> PageWatch:
        page = PageWatch(browser, base_url, viewport)
        made.append(page)
        return page

    yield factory
    for page in made:
        page.close()


def has_forecast(api: Any) -> bool:
    return any(rule.rule == "/forecast" for rule in api.app.url_map.iter_rules())


def seconds_blurred(text: str) -> str:
    """``text`` with every "12.5 s" as "N s" (two reads of one sentence differ in time)."""
    return re.sub(r"\d+(\.\d+)? s\b", "N s", text)


def expected_console_errors(watch: PageWatch, api: Any) -> list[tuple[str, str]]:
    """Console errors, less the one a server without ``/forecast`` causes (its 404, which the
    page handles by saying "forecast unavailable")."""
    return [
        (text, url) for text, url in watch.console_errors
        if has_forecast(api) or not url.endswith("/forecast")
    ]


def test_page_loads_clean_and_talks_only_to_its_server(
    make_api: Callable[..., Any], watch: Callable[..., PageWatch], make_recorder: Callable,
) -> None:
    api = make_api()
    api.add({"payload": {"task": "weld"}, "release_conditions": {"plc.ready": True}})
    page_watch = watch(api.url)
    page = page_watch.open("/")  # a browser at / gets the page
    page.wait_for_selector("#queue li .reason")
    page.wait_for_selector("#kpis tr")
    page.wait_for_selector("#events li")
    assert page.title() == "operation-dispatcher dashboard"
    assert page.inner_text("#resource") == "robot-1"
    assert page.inner_text("#dispatcher-state") == "dispatcher: running"
    assert page_watch.page_errors == []
    assert expected_console_errors(page_watch, api) == []
    assert page_watch.foreign_urls() == []
    assert page_watch.dialogs == []
    assert page.evaluate("document.querySelector('#state-machine').naturalWidth") > 0
    if not has_forecast(api):
        assert page.inner_text("#forecast-status") == "forecast unavailable"


def test_key_figures_follow_the_chosen_window(
    make_api: Callable[..., Any], watch: Callable[..., PageWatch],
) -> None:
    api = make_api()
    page = watch(api.url).open()
    expect(page.locator('#kpis tr[data-kpi="uptime"] td')).to_contain_text("%")
    with page.expect_request(lambda r: "/reports/kpis" in r.url) as asked:
        page.select_option("#kpi-window", "900")
    sent = parse_qs(urlsplit(asked.value.url).query)["from_time"][0]
    window = datetime.now(UTC) - datetime.fromisoformat(sent.replace("Z", "+00:00"))
    assert timedelta(minutes=14) < window < timedelta(minutes=16)
    expect(page.locator('#kpis tr[data-kpi="events analysed"] td')).to_have_text(
        re.compile(r"^\d+$"))


def test_an_operation_added_over_the_api_appears_within_2_s(
    make_api: Callable[..., Any], watch: Callable[..., PageWatch],
) -> None:
    api = make_api()
    page = watch(api.url).open()
    op = api.add({"payload": {"name": "glue"}, "release_conditions": {"plc.ready": True}})[0]
    row = page.wait_for_selector(f'#queue li[data-operation-id="{op["id"]}"]', timeout=2000)
    assert "glue" in row.inner_text()


def test_updates_keep_flowing_after_an_operation_finishes(
    make_api: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher],
    watch: Callable[..., PageWatch],
) -> None:
    """A finish also asks for the key figures, which are re-read at most every 10 s: that
    wait must not hold back the rest (it did: the next operation showed ~10 s late)."""
    dispatcher = make_dispatcher()
    recorder = EventRecorder(dispatcher)
    api = make_api(dispatcher)
    page = watch(api.url).open()
    first = api.add({"payload": {"name": "first"}})[0]
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=UUID(first["id"]))
    page.wait_for_selector('#current-title:text-is("first")', timeout=2000)
    dispatcher.complete_operation(first["id"])
    second = api.add({"payload": {"name": "second"}})[0]
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=UUID(second["id"]))
    page.wait_for_selector('#current-title:text-is("second")', timeout=2000)
    expect(page.locator("#gantt rect[data-kind=history]")).to_have_count(2, timeout=3000)


def test_explain_text_of_a_release_condition(
    make_api: Callable[..., Any], watch: Callable[..., PageWatch],
) -> None:
    api = make_api()
    assert api.put("/signals/plc.ready", json={"value": False}).status_code == 200
    op = api.add({"payload": {"task": "press"}, "release_conditions": {"plc.ready": True}})[0]
    page = watch(api.url).open()
    reason = page.wait_for_selector(f'#queue li[data-operation-id="{op["id"]}"] .reason')
    explained = api.get(f"/operations/{op['id']}/explain").json()
    assert explained["blocked_by"] == ["release_condition:plc.ready"]
    details = explained.get("details")
    if details:  # the server says it in words: the page shows that sentence (its own read)
        assert details[0]["kind"] == "release_condition"
        assert seconds_blurred(reason.inner_text()) == seconds_blurred(details[0]["text"])
        assert "plc.ready" in reason.inner_text()
    else:
        assert reason.inner_text() == "waiting for plc.ready = true, now false"
    assert page.inner_text('#signals tr[data-signal="plc.ready"]').split("\t")[:2] == [
        "plc.ready", "false"]


def test_approving_a_pending_request_in_the_page_starts_the_operation(
    make_api: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher],
    watch: Callable[..., PageWatch],
) -> None:
    dispatcher = make_dispatcher(approval_policy=ApprovalPolicy(start="operator"))
    recorder = EventRecorder(dispatcher)
    api = make_api(dispatcher)
    page_watch = watch(api.url)
    page = page_watch.open()
    loaded = _rendered(page_watch)
    op = api.add({"payload": {"task": "drill"}})[0]
    # the request arrives as a request_opened frame: the page never reads /requests again
    row = page.wait_for_selector('#requests li:has-text("drill")', timeout=2000)
    assert "start" in row.inner_text()
    assert dispatcher.get_operation(op["id"]).state.value == "QUEUED"  # waits for the operator
    row.query_selector("input").fill("tool checked")
    row.query_selector("button.ok").click()
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=UUID(op["id"]))
    requested = recorder.matching(EventType.OPERATION_START_REQUESTED, operation_id=UUID(op["id"]))
    assert requested[-1].meta_data["request_decision"]["accepted"] is True
    assert requested[-1].meta_data["request_decision"]["reasoning"] == "tool checked"
    assert page.wait_for_selector('#current-title:text-is("drill")')
    expect(page.locator("#requests li")).to_have_count(0)  # its *_requested event closed it
    assert "/requests" not in _paths_after(page_watch, loaded), _paths_after(page_watch, loaded)


def test_denying_a_pending_request_in_the_page(
    make_api: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher],
    watch: Callable[..., PageWatch],
) -> None:
    def on_request(event: DispatchEvent) -> Any:  # the Python way: a callback leaves it open
        return PENDING if event.event_type is EventType.OPERATION_START_REQUESTED else True

    dispatcher = make_dispatcher(on_request_callback=on_request, request_event_timeout_seconds=30,
                                 start_request_retry_cooldown_seconds=60)
    recorder = EventRecorder(dispatcher)
    api = make_api(dispatcher)
    page = watch(api.url).open()
    op = api.add({"payload": {"task": "grind"}})[0]
    row = page.wait_for_selector('#requests li:has-text("grind")')
    row.query_selector("input").fill("guard open")
    row.query_selector("button.danger").click()
    denied = recorder.wait_for(EventType.OPERATION_START_DENIED, operation_id=UUID(op["id"]))
    assert denied[0].meta_data["reasoning"] == "guard open"
    page.wait_for_selector('#events li[data-type="operation_start_denied"]:has-text("guard open")')
    expect(page.locator("#requests li")).to_have_count(0)
    assert dispatcher.get_operation(op["id"]).state.value == "QUEUED"


def test_current_operation_shows_elapsed_planned_and_reported_progress(
    make_api: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher],
    watch: Callable[..., PageWatch],
) -> None:
    dispatcher = make_dispatcher()
    recorder = EventRecorder(dispatcher)
    api = make_api(dispatcher)
    page = watch(api.url).open()
    op = api.add({"payload": {"name": "mill", "program": 12}, "planned_duration": 90})[0]
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=UUID(op["id"]))
    page.wait_for_selector('#current-title:text-is("mill")')
    assert page.inner_text("#current-payload") == '{"name":"mill","program":12}'
    assert "of planned 1 min 30 s" in page.inner_text("#current")
    assert page.get_attribute("#current-time", "max") == "90"
    dispatcher.report_progress(op["id"], 0.4, "layer 2 of 5")
    page.wait_for_selector('#current-progress-message:text-is("layer 2 of 5")')
    assert page.evaluate("document.querySelector('#current-progress').value") == pytest.approx(0.4)
    assert "progress 40 %" in page.inner_text("#current")


def test_pause_and_resume_buttons(
    make_api: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher],
    watch: Callable[..., PageWatch],
) -> None:
    dispatcher = make_dispatcher()
    recorder = EventRecorder(dispatcher)
    api = make_api(dispatcher)
    page = watch(api.url).open()
    assert page.is_disabled("#dispatcher-resume")
    page.click("#dispatcher-pause")
    recorder.wait_for(EventType.OPERATION_DISPATCHER_PAUSED)
    page.wait_for_selector("#dispatcher-state[data-state=paused]")
    assert dispatcher.is_paused
    assert page.inner_text("#dispatcher-since").startswith("since ")
    page.click("#dispatcher-resume")
    recorder.wait_for(EventType.OPERATION_DISPATCHER_RESUMED)
    page.wait_for_selector("#dispatcher-state[data-state=running]")
    assert not dispatcher.is_paused
    assert page.is_disabled("#dispatcher-resume") and page.is_enabled("#dispatcher-pause")


def test_markup_in_data_shows_as_text_and_runs_nothing(
    make_api: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher],
    watch: Callable[..., PageWatch],
) -> None:
    dispatcher = make_dispatcher()
    recorder = EventRecorder(dispatcher)
    api = make_api(dispatcher)
    page_watch = watch(api.url)
    page = page_watch.open()
    running = api.add({"payload": {"name": XSS, "note": XSS}, "job_id": XSS})[0]
    queued = api.add({"payload": {"name": XSS}, "release_conditions": {XSS: True}})[0]
    recorder.wait_for(EventType.OPERATION_STARTED, operation_id=UUID(running["id"]))
    assert api.post(f"/operations/{queued['id']}/cancel",
                    json={"meta_data": {"why": XSS}}).status_code == 200
    page.wait_for_selector(f'#events li[data-type="operation_cancelled"]:has-text("{XSS}")')
    page.wait_for_selector(f'#current-title:text-is("{XSS}")')
    assert XSS in page.inner_text("#current-payload")
    assert page.evaluate("document.querySelectorAll('img[src=x], img[onerror]').length") == 0
    assert page.evaluate("document.body.innerHTML.includes('<img src=\"x\"')") is False
    assert page_watch.dialogs == [] and page_watch.page_errors == []


@pytest.mark.slow
def test_the_stream_reconnects_after_serve_restarts(
    serve: Callable[..., Served], watch: Callable[..., PageWatch], tmp_path: Path,
) -> None:
    journal = str(tmp_path / "cell.db")
    first = serve("--journal", journal)
    port = first.url.rsplit(":", 1)[1]
    response = first.post("/operations/add", json=[
        {"payload": {"name": "before"}, "release_conditions": {"plc.ready": True}}])
    assert response.status_code == 201
    page_watch = watch(first.url)
    page = page_watch.open()
    page.wait_for_selector('#queue li:has-text("before")')
    status, _out, _err = first.stop(signal.SIGTERM)
    assert status == 0
    page.wait_for_selector("#connection[data-state=reconnecting]", timeout=10_000)
    second = serve("--journal", journal, "--port", port)  # the same address again
    assert second.url == first.url
    page.wait_for_selector("#connection[data-state=live]", timeout=15_000)
    added = second.post("/operations/add", json=[
        {"payload": {"name": "after"}, "release_conditions": {"plc.ready": True}}])
    assert added.status_code == 201
    page.wait_for_selector('#queue li:has-text("after")', timeout=5000)
    assert "before" in page.inner_text("#queue")  # resynchronised from the journal
    assert second.stop()[0] == 0
    assert page_watch.page_errors == []


def test_gantt_has_a_bar_per_finished_operation_and_forecast_bars(
    make_api: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher],
    watch: Callable[..., PageWatch],
) -> None:
    dispatcher = make_dispatcher()
    recorder = EventRecorder(dispatcher)
    api = make_api(dispatcher)
    outcomes = {}
    due = (datetime.now(UTC) + timedelta(minutes=2)).isoformat()
    for index, finish in enumerate(("complete", "fail", "complete")):
        op = api.add({"payload": {"name": f"done-{index}"}, "planned_duration": 5,
                      "due_date": due if index == 0 else None})[0]
        recorder.wait_for(EventType.OPERATION_STARTED, operation_id=UUID(op["id"]))
        if index == 0:  # a paused span inside its bar
            assert api.post(f"/operations/{op['id']}/pause").status_code == 200
            assert api.post(f"/operations/{op['id']}/resume").status_code == 200
        if finish == "complete":
            dispatcher.complete_operation(op["id"])
            outcomes[op["id"]] = "SUCCESS"
        else:
            dispatcher.fail_operation(op["id"])
            outcomes[op["id"]] = "FAILURE"
    recorder.wait_for(lambda e: e.event_type in (EventType.OPERATION_COMPLETED,
                                                  EventType.OPERATION_FAILED), count=3)
    dispatcher.pause_dispatcher_runtime()  # the next ones stay queued: the forecast's
    queued = api.add({"payload": {"name": "next-1"}, "planned_duration": 30},
                     {"payload": {"name": "next-2"}, "planned_duration": 30,
                      "release_conditions": {"plc.ready": True}})
    page = watch(api.url).open()
    page.wait_for_selector("#gantt rect[data-kind=history]")
    expect(page.locator("#gantt [data-kind=history]")).to_have_count(3)
    bars = page.eval_on_selector_all(
        "#gantt rect[data-kind=history]",
        "nodes => nodes.map(n => [n.dataset.operationId, n.dataset.outcome, n.getAttribute('class')])")
    assert {bar[0]: bar[1] for bar in bars} == outcomes
    assert sorted(bar[2] for bar in bars) == ["bar failure", "bar success", "bar success"]
    assert page.query_selector_all("#gantt rect[data-kind=dispatcher].dispatcher-paused")
    expect(page.locator("#gantt rect[data-kind=paused]")).to_have_count(1)
    expect(page.locator("#gantt line[data-kind=due]")).to_have_count(1)
    if has_forecast(api):
        expect(page.locator("#gantt [data-kind=forecast], #gantt [data-kind=waiting]")
               ).to_have_count(2)
        shown = page.eval_on_selector_all(
            "#gantt [data-kind=forecast], #gantt [data-kind=waiting]",
            "nodes => nodes.map(n => n.dataset.operationId)")
        assert sorted(shown) == sorted(op["id"] for op in queued)
        waiting = page.locator(f'#gantt [data-kind=waiting][data-operation-id="{queued[1]["id"]}"]')
        # the forecast's blocker, put into words (the page's own sentence for each kind)
        expect(waiting).to_have_text(
            re.compile(r"^(the dispatcher is paused|waiting for plc\.ready = true, now .*)$"))
    else:
        page.wait_for_selector("#forecast-status:text-is('forecast unavailable')")
        assert page.query_selector_all("#gantt [data-kind=forecast]") == []


def test_set_priority_and_cancel_from_the_queue(
    make_api: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher],
    watch: Callable[..., PageWatch],
) -> None:
    dispatcher = make_dispatcher()
    recorder = EventRecorder(dispatcher)
    api = make_api(dispatcher)
    dispatcher.pause_dispatcher_runtime()
    first, second = api.add({"payload": {"name": "first"}, "priority": 1},
                            {"payload": {"name": "second"}, "priority": 0})
    page = watch(api.url).open()
    row = page.wait_for_selector(f'#queue li[data-operation-id="{second["id"]}"]')
    assert row.query_selector(".pos").inner_text() == "#2"
    row.query_selector("input[type=number]").fill("7")
    row.query_selector("button:not(.danger)").click()
    recorder.wait_for(EventType.OPERATION_UPDATED, operation_id=UUID(second["id"]))
    assert dispatcher.get_operation(second["id"]).priority == 7
    # it moves to the top of the queue, the row (and what was typed in it) reused
    expect(page.locator("#queue li").first).to_have_attribute("data-operation-id", second["id"])
    page.locator(f'#queue li[data-operation-id="{first["id"]}"] button.danger').click()
    recorder.wait_for(EventType.OPERATION_CANCELLED, operation_id=UUID(first["id"]))
    expect(page.locator(f'#queue li[data-operation-id="{first["id"]}"]')).to_have_count(0)


def test_the_page_keeps_bounded_lists_and_filters_the_log(
    make_api: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher],
    watch: Callable[..., PageWatch],
) -> None:
    dispatcher = make_dispatcher()
    recorder = EventRecorder(dispatcher)
    api = make_api(dispatcher)
    dispatcher.pause_dispatcher_runtime()
    page = watch(api.url).open()
    api.add(*({"payload": {"name": f"op {index}"}} for index in range(600)))
    recorder.wait_for(EventType.OPERATION_ADDED, count=600)
    expect(page.locator("#queue-count")).to_have_text("(600)")
    expect(page.locator("#queue li")).to_have_count(100)
    assert page.inner_text("#queue-more") == "… and 500 more (the API lists them all)"
    expect(page.locator("#events li")).to_have_count(200)
    # the 600 events may still be arriving: the log fills up to its bound, never beyond
    wait_until(lambda: page.evaluate("window.dashboardState.log.length") == 500, 10,
               "the log to hold 500 events")
    assert page.evaluate("window.dashboardState.log.length") == 500
    assert page.evaluate("window.dashboardState.logIds.size") == 500
    page.select_option("#event-type-filter", "operation_dispatcher_paused")
    expect(page.locator("#events li")).to_have_count(0)  # pushed out of the 500 kept
    page.select_option("#event-type-filter", "operation_added")
    expect(page.locator("#events li")).to_have_count(200)
    last = api.get("/operations").json()[-1]["operation"]["id"]
    page.fill("#event-op-filter", last[:13])
    expect(page.locator("#events li")).to_have_count(1)


def test_a_read_only_token_sees_disabled_buttons(
    make_api: Callable[..., Any], watch: Callable[..., PageWatch],
) -> None:
    api = make_api(tokens=TOKENS)
    session = {"Authorization": "Bearer op-secret"}
    op = api.post("/operations/add", headers=session, json=[
        {"payload": {"name": "held"}, "release_conditions": {"plc.ready": True}}]).json()[0]
    page_watch = watch(api.url)
    page = page_watch.page
    page.goto(api.url + "/dashboard")
    page.wait_for_selector("#login:not([hidden])")
    assert page.is_hidden("#board")
    page_watch.open(token="view-secret")
    row = page.wait_for_selector(f'#queue li[data-operation-id="{op["operation"]["id"]}"]')
    for button, scope in ((page.query_selector("#dispatcher-pause"), "admin"),
                          (row.query_selector("button.danger"), "operate"),
                          (row.query_selector("button:not(.danger)"), "submit")):
        assert button.is_disabled()
        assert button.get_attribute("title") == f"needs the '{scope}' scope; this token has: read"
    assert "viewer: read" in page.inner_text("#identity")
    assert expected_console_errors(page_watch, api) == []  # asking for the token logs no 401
    # the token lives in this tab's session storage and in headers, never in a URL
    assert page.evaluate("sessionStorage.getItem('operation-dispatcher.token')") == "view-secret"
    assert not [url for url in page_watch.urls if "secret" in url]
    # a token with the scopes gets the buttons
    page.click("#sign-out")
    page.wait_for_selector("#login:not([hidden])")
    page_watch.open(token="op-secret")
    page.wait_for_selector(f'#queue li[data-operation-id="{op["operation"]["id"]}"]')
    assert page.is_enabled("#dispatcher-pause")
    assert page.is_enabled(f'#queue li[data-operation-id="{op["operation"]["id"]}"] button.danger')


def test_a_wrong_token_is_asked_again(
    make_api: Callable[..., Any], watch: Callable[..., PageWatch],
) -> None:
    api = make_api(tokens=TOKENS)
    page_watch = watch(api.url)
    page = page_watch.page
    page.goto(api.url + "/dashboard")
    page.fill("#token-input", "wrong")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-reason:text-is('The token was refused: enter another one.')")
    assert page.is_hidden("#board")
    assert page.evaluate("sessionStorage.length") == 0  # a refused token is not kept
    page.fill("#token-input", "mes-secret")  # a token that may only submit
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-reason:has-text('This token may not read the cell')")
    assert page.is_hidden("#board")


# --------------------------------------------------- live without polling (stream frames)


def _paths_after(page_watch: PageWatch, start: int) -> list[str]:
    """The paths the page asked for since its ``start``-th request."""
    return [urlsplit(url).path for url in page_watch.urls[start:]]


def _rendered(page_watch: PageWatch) -> int:
    """Wait for the page's first full picture; the number of requests it made until then."""
    page_watch.page.wait_for_selector("body[data-rendered]", state="attached")
    return len(page_watch.urls)


def test_a_signal_change_and_its_staleness_show_without_reading_the_signals(
    make_api: Callable[..., Any], watch: Callable[..., PageWatch],
) -> None:
    api = make_api()
    page_watch = watch(api.url)
    page = page_watch.open()
    loaded = _rendered(page_watch)
    row = page.locator('#signals tr[data-signal="plc.ready"]')
    assert api.put("/signals/plc.ready", json={"value": True}).status_code == 200
    expect(row.locator("td").nth(1)).to_have_text("true", timeout=2000)
    assert api.put("/signals/plc.ready",
                   json={"value": False, "max_age_seconds": 0.5}).status_code == 200
    expect(row.locator("td").nth(1)).to_have_text("false", timeout=2000)
    expect(row).to_have_class("stale", timeout=3000)  # nobody confirmed it: the server says so
    paths = _paths_after(page_watch, loaded)
    assert "/signals" not in paths and "/bridges" not in paths, paths


@pytest.mark.slow
def test_an_idle_page_makes_no_request(
    make_api: Callable[..., Any], watch: Callable[..., PageWatch],
) -> None:
    """Something queued (the page used to re-read the requests every 2 s then) and a signal."""
    api = make_api()
    assert api.put("/signals/plc.ready", json={"value": False}).status_code == 200
    api.add({"payload": {"task": "press"}, "release_conditions": {"plc.ready": True}})
    page_watch = watch(api.url)
    page = page_watch.open()
    page.wait_for_selector("#queue li .reason")
    loaded = _rendered(page_watch)
    # the page's own clock (no network) says 4 s have passed since the signals were drawn
    expect(page.locator("#signals-read")).to_have_text(re.compile(r"^([4-9]|\d\d) s$"),
                                                       timeout=10_000)
    assert _paths_after(page_watch, loaded) == []
    assert page.locator("#connection").get_attribute("data-state") == "live"


def _busy_cell(api: Any, dispatcher: OperationDispatcher, recorder: EventRecorder) -> None:
    """A cell with history, a running operation, a queue with reasons and a pending signal."""
    api.put("/signals/plc.ready", json={"value": False})
    api.put("/signals/plc.temperature", json={"value": 41.5})
    for index in range(4):
        op = api.add({"payload": {"name": f"weld seam {index + 1}"}, "planned_duration": 20})[0]
        recorder.wait_for(EventType.OPERATION_STARTED, operation_id=UUID(op["id"]))
        if index == 2:
            dispatcher.fail_operation(op["id"])
        else:
            dispatcher.complete_operation(op["id"])
    api.add({"payload": {"name": "press frame"}, "planned_duration": 90, "job_id": "J-1042"})
    api.add({"payload": {"name": "drill holes"}, "planned_duration": 45,
             "release_conditions": {"plc.ready": True}},
            {"payload": {"name": "paint"}, "planned_duration": 60,
             "due_date": "2030-01-01T00:00:00Z"})


@pytest.mark.slow
def test_screenshots_desktop_and_800x480(
    make_api: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher],
    watch: Callable[..., PageWatch], tmp_path: Path,
) -> None:
    """The README's screenshots; at 800x480 nothing is wider than the screen."""
    folder = Path(os.environ.get("OPERATION_DISPATCHER_SCREENSHOTS") or tmp_path)
    dispatcher = make_dispatcher()
    recorder = EventRecorder(dispatcher)
    api = make_api(dispatcher)
    _busy_cell(api, dispatcher, recorder)
    for name, viewport in (("dashboard-desktop.png", DESKTOP), ("dashboard-800x480.png", SMALL)):
        page_watch = watch(api.url, viewport)
        page = page_watch.open()
        page.wait_for_selector("#queue li .reason")
        page.wait_for_selector("#gantt rect[data-kind=history]")
        page.wait_for_selector("#kpis tr")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= viewport["width"], (name, width)
        # bytes, written here: Playwright's own file writing leaves executor threads behind
        (folder / name).write_bytes(page.screenshot(full_page=name.endswith("desktop.png")))
        assert (folder / name).stat().st_size > 10_000

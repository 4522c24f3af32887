"""``create_app``: module-level blueprints shared by every app, state kept per app.

The blueprints (and the OpenAPI document) are built once per process; each app holds only its
own :class:`~operation_dispatcher.http.state.ApiState`. These tests check that a second app is
cheap, and that two apps with two dispatchers in one process never see each other's state, also
when both are called at once from several threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from conftest import assert_error

from operation_dispatcher import OperationDispatcher
from operation_dispatcher.http import create_app

GOOD = {"Authorization": "Bearer s3cret"}


def test_create_app_after_the_first_shares_the_blueprints(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatchers = [make_dispatcher() for _ in range(6)]
    first = create_app(dispatchers[0])
    apps = [create_app(dispatcher) for dispatcher in dispatchers[1:]]
    for app in apps:
        assert set(app.blueprints) == set(first.blueprints)
        for name, blueprint in first.blueprints.items():
            assert app.blueprints[name] is blueprint, name  # built once, not per app
    # how fast create_app is, is measured by benchmarks/bench_http.py (http.create_app)


def test_two_apps_with_two_dispatchers_do_not_see_each_other(
    make_client: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    other = OperationDispatcher("press-2")
    try:
        one = make_client(token="s3cret", signal_max_age_seconds=5.0, start=False)
        two = make_client(other, signal_max_age_seconds=None, start=False)

        added = one.post("/operations/add", json=[{"payload": {"n": 1}}], headers=GOOD)
        assert added.status_code == 201, added.text
        op_id = added.json()[0]["operation"]["id"]
        assert two.get("/operations").json() == []
        assert_error(two.get(f"/operations/{op_id}"), 404, "operation_not_found")
        assert other.get_schedule() == []

        # the token is one app's: the other stays open, and documents no security
        assert_error(one.get("/operations"), 401, "unauthorized")
        assert two.get("/operations").status_code == 200
        spec_one = one.get("/openapi.json", headers=GOOD).json()
        spec_two = two.get("/openapi.json").json()
        assert spec_one["info"]["title"] == "operation-dispatcher (robot-1)"
        assert spec_two["info"]["title"] == "operation-dispatcher (press-2)"
        assert "securitySchemes" in spec_one["components"]
        assert "securitySchemes" not in spec_two["components"]
        responses_one = spec_one["paths"]["/operations"]["get"]["responses"]
        responses_two = spec_two["paths"]["/operations"]["get"]["responses"]
        assert list(responses_one) == ["400", "413", "415", "401", "200"]
        assert list(responses_two) == ["400", "413", "415", "200"]
        assert "press-2" in two.get("/apidocs").text
        assert "robot-1" not in two.get("/apidocs").text

        # each app's signal default max age, each dispatcher's board
        assert one.put("/signals/door", json={"value": 1}, headers=GOOD).json()[
            "max_age_seconds"] == 5.0
        assert two.put("/signals/door", json={"value": 2}).json()["max_age_seconds"] is None
        assert one.dispatcher.signals.get("door").value == 1
        assert other.signals.get("door").value == 2

        # each app starts its own dispatcher
        assert one.post("/dispatcher/start", headers=GOOD).status_code == 202
        assert one.get("/health").json()["dispatcher_running"] is True
        assert two.get("/health").json()["dispatcher_running"] is False
        assert two.get("/dispatcher").json()["runtime_thread_alive"] is False
    finally:
        other.stop(timeout=5.0)


def test_two_apps_called_at_once_from_many_threads_keep_apart(
    make_client: Callable[..., Any],
) -> None:
    other = OperationDispatcher("press-2")
    try:
        apps = [make_client(start=False), make_client(other, start=False)]
        expected = ["robot-1", "press-2"]
        errors: list[str] = []
        go = threading.Event()

        def call(worker: int) -> None:
            go.wait(5)
            for round_ in range(40):
                which = (worker + round_) % 2
                client = apps[which].app.test_client()
                got = client.get("/").get_json()["resource_id"]
                if got != expected[which]:
                    errors.append(f"app {expected[which]} answered as {got}")
                added = client.post("/operations/add", json=[{"payload": {"w": worker}}])
                if added.status_code != 201:
                    errors.append(added.get_data(as_text=True))

        threads = [threading.Thread(target=call, args=(n,), name=f"client-{n}") for n in range(4)]
        for thread in threads:
            thread.start()
        go.set()
        for thread in threads:
            thread.join(30)
        assert errors == []
        # every operation went to the app's own dispatcher: 4 workers x 20 adds each
        assert len(apps[0].dispatcher.get_schedule()) == 80
        assert len(other.get_schedule()) == 80
    finally:
        other.stop(timeout=5.0)


def test_each_app_gets_its_own_copy_of_the_openapi_document(
    make_client: Callable[..., Any],
) -> None:
    one, two = make_client(start=False), make_client(start=False)
    doc_one, doc_two = one.app.api_doc, two.app.api_doc
    assert doc_one == doc_two and doc_one is not doc_two
    doc_one["info"]["title"] = "changed"
    doc_one["paths"]["/operations"]["get"]["responses"].clear()
    assert two.get("/openapi.json").json()["info"]["title"] == "operation-dispatcher (robot-1)"
    assert make_client(start=False).app.api_doc == doc_two  # the shared one is untouched


def test_urls_are_built_right_in_every_app(make_client: Callable[..., Any]) -> None:
    """The URL builders compiled once per process build each app's URLs (path values, query
    arguments), and a second app's builds do not leak into the first's."""
    from flask import url_for

    one, two = make_client(start=False), make_client(start=False)
    for client in (one, two, one):
        with client.app.test_request_context():
            assert url_for("operations.get_operation", operation_id="a b") == "/operations/a%20b"
            assert url_for("signals.set_signal", name="x", n=2) == "/signals/x?n=2"
            assert url_for("apidocs.static", filename="css/swagger-ui.css") == (
                "/apidocs/assets/css/swagger-ui.css")
    answered = two.get("/").json()["links"]
    assert answered["operations"] == "/operations" and answered["apidocs"] == "/apidocs"

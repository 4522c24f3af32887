"""Role-scoped tokens (issue 12, item 8): each scope allowed and refused, over the REST API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_error, wait_until

from operation_dispatcher import PENDING, DispatchEvent, EventType
from operation_dispatcher.config import SCOPES, check_config
from operation_dispatcher.http.auth import ROUTE_SCOPES, Credentials
from operation_dispatcher.http.docs import PUBLIC_ENDPOINTS

TOKENS = {
    "mes": {"token": "mes-secret", "scopes": ["read", "submit"]},
    "operator": {"token": "op-secret", "scopes": ["read", "operate"]},
    "maintainer": {"token": "admin-secret", "scopes": ["admin"]},
    "viewer": {"token": "view-secret", "scopes": ["read"]},
}
#: One call per scope (method, path, body); none of them depends on a prior call.
CALLS = {
    "read": ("GET", "/operations", None),
    "submit": ("POST", "/operations/add", [{"payload": {}}]),
    "operate": ("PUT", "/signals/plc.ready", {"value": True}),
    "admin": ("POST", "/dispatcher/pause", None),
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def call(api: Any, scope: str, token: str) -> Any:
    method, path, body = CALLS[scope]
    kwargs: dict[str, Any] = {"headers": bearer(token)}
    if body is not None:
        kwargs["json"] = body
    return api.request(method, path, **kwargs)


@pytest.mark.parametrize("name", sorted(TOKENS))
def test_each_scope_allowed_and_refused(make_client: Callable[..., Any], name: str) -> None:
    api = make_client(tokens=TOKENS)
    entry = TOKENS[name]
    for scope in SCOPES:
        response = call(api, scope, entry["token"])
        if scope in entry["scopes"]:
            assert response.status_code < 300, (name, scope, response.text)
        else:
            body = assert_error(response, 403, "insufficient_scope", scope=scope)
            assert repr(scope) in body["message"]
            assert name not in body["message"]  # the answer never names a token


def test_operator_approves_what_the_mes_submitted(
    make_dispatcher: Callable[..., Any], make_client: Callable[..., Any],
    make_recorder: Callable[..., Any],
) -> None:
    def on_request(event: DispatchEvent) -> Any:
        return PENDING if event.event_type is EventType.OPERATION_START_REQUESTED else True

    dispatcher = make_dispatcher(
        on_request_callback=on_request, start_request_retry_cooldown_seconds=60,
    )
    recorder = make_recorder(dispatcher)
    api = make_client(dispatcher, tokens=TOKENS)
    mes, operator = bearer("mes-secret"), bearer("op-secret")
    added = api.post("/operations/add", json=[{"payload": {"job": 1}}], headers=mes)
    assert added.status_code == 201, added.text
    pending = wait_until(lambda: api.get("/requests", headers=mes).json(),  # the MES reads
                         what="the pending start request")
    assert len(pending) == 1, pending
    approve = f"/requests/{pending[0]['request_id']}/approve"
    assert_error(api.post(approve, headers=mes), 403, "insufficient_scope", scope="operate")
    assert_error(api.post("/dispatcher/stop", headers=operator), 403, "insufficient_scope",
                 scope="admin")
    approved = api.post(approve, headers=operator)
    assert approved.status_code == 200 and approved.json()["accepted"] is True, approved.text
    recorder.wait_for(EventType.OPERATION_STARTED)


def test_the_single_token_still_grants_every_scope(make_client: Callable[..., Any]) -> None:
    api = make_client(token="all-secret", tokens=TOKENS)
    for scope in SCOPES:
        assert call(api, scope, "all-secret").status_code < 300, scope


def test_unknown_or_missing_token_is_401_and_health_is_open(
    make_client: Callable[..., Any],
) -> None:
    api = make_client(tokens=TOKENS)
    for headers in ({}, bearer("wrong"), bearer("mes"), {"Authorization": "Basic mes-secret"}):
        response = api.get("/operations", headers=headers)
        body = assert_error(response, 401, "unauthorized")
        assert "mes" not in body["message"] and "operator" not in body["message"]
    assert api.get("/health").status_code == 200
    # a known token on no route: the usual 404, not a 403
    assert_error(api.get("/nowhere", headers=bearer("view-secret")), 404, "not_found")


def test_openapi_document_shows_the_bearer_scheme(make_client: Callable[..., Any]) -> None:
    api = make_client(tokens=TOKENS)
    spec = api.get("/openapi.json", headers=bearer("view-secret")).json()
    assert spec["components"]["securitySchemes"] == {
        "bearerAuth": {"type": "http", "scheme": "bearer"}}
    assert spec["paths"]["/operations"]["get"]["security"] == [{"bearerAuth": []}]
    assert "security" not in spec["paths"]["/health"]["get"]


def test_every_route_has_exactly_one_scope(make_client: Callable[..., Any]) -> None:
    """A new route without an entry in ROUTE_SCOPES fails here (at run time it would need
    ``admin``: never open by accident)."""
    api = make_client(start=False, tokens=TOKENS)
    endpoints = {rule.endpoint for rule in api.app.url_map.iter_rules()}
    missing = sorted(endpoints - PUBLIC_ENDPOINTS - set(ROUTE_SCOPES))
    assert missing == [], f"add these endpoints to http/auth.py ROUTE_SCOPES: {missing}"
    assert set(ROUTE_SCOPES.values()) <= set(SCOPES)
    for rule in api.app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        writes = rule.methods - {"GET", "HEAD", "OPTIONS"}
        scope = ROUTE_SCOPES[rule.endpoint]
        assert (scope == "read") == (not writes), (rule.rule, rule.methods, scope)


@pytest.mark.parametrize(
    ("tokens", "error"),
    [
        ({"a": {"token": "x", "scopes": ["read", "rule"]}}, "tokens.a.scopes: unknown scope"),
        ({"a": {"token": "", "scopes": ["read"]}}, "tokens.a.token: required"),
        ({"a": {"token": "x y", "scopes": ["read"]}}, "tokens.a.token: must be printable"),
        ({"a": {"token": "x", "scopes": []}}, "tokens.a.scopes: must be a non-empty list"),
        ({"a": {"token": "x", "scopes": ["read"], "role": 1}}, "tokens.a.role: unknown key"),
        ({"a": {"token": "x", "scopes": ["read"]}, "b": {"token": "x", "scopes": ["admin"]}},
         "tokens.b.token: must differ from tokens.a.token"),
        ({"a": {"token": "all", "scopes": ["read"]}}, "tokens.a.token: must differ from token"),
    ],
)
def test_bad_tokens_are_refused_naming_the_key(tokens: Any, error: str) -> None:
    with pytest.raises(ValueError) as raised:
        Credentials.build("all", tokens)
    assert error in str(raised.value)


def test_check_config_reports_every_token_problem(tmp_path: Path) -> None:
    path = tmp_path / "cell.toml"
    path.write_text(
        '[http]\ntoken = "shared"\n'
        '[http.tokens.mes]\ntoken = "shared"\nscopes = ["read", "submitt"]\n'
        '[http.tokens.operator]\ntoken = ""\nscopes = ["operate"]\n'
        '[http.tokens.ok]\ntoken = "fine"\nscopes = ["read"]\n',
        encoding="utf-8",
    )
    errors = check_config(path)
    assert len(errors) == 3, errors
    assert errors[0].startswith("http.tokens.mes.scopes: unknown scope(s) 'submitt'")
    assert errors[1].startswith("http.tokens.mes.token: must differ from token")
    assert errors[2].startswith("http.tokens.operator.token: required")
    good = tmp_path / "good.toml"
    good.write_text('[http.tokens.mes]\ntoken = "m"\nscopes = ["read", "submit"]\n',
                    encoding="utf-8")
    assert check_config(good) == []


def test_check_config_command_names_the_bad_scope(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from operation_dispatcher.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text('[http.tokens.mes]\ntoken = "m"\nscopes = ["write"]\n', encoding="utf-8")
    assert main(["check-config", str(bad)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{bad}: http.tokens.mes.scopes: unknown scope(s) 'write': must be a non-empty list of "
        "scopes, each one of read, submit, operate, admin",
    ]


def test_serve_with_scoped_tokens_from_the_config(
    serve: Callable[..., Any], tmp_path: Path,
) -> None:
    """``serve`` over real HTTP: the MES token submits and reads, the operator's operates, the
    single ``--token`` still does everything."""
    config = tmp_path / "cell.toml"
    config.write_text(
        '[journal]\npath = ":memory:"\n'
        '[http.tokens.mes]\ntoken = "mes-secret"\nscopes = ["read", "submit"]\n'
        '[http.tokens.operator]\ntoken = "op-secret"\nscopes = ["read", "operate"]\n',
        encoding="utf-8",
    )
    server = serve("--config", str(config), "--token", "all-secret")
    mes, operator = bearer("mes-secret"), bearer("op-secret")
    added = server.post("/operations/add", json=[{"payload": {}}], headers=mes)
    assert added.status_code == 201, added.text
    assert server.get("/operations", headers=operator).status_code == 200
    assert_error(server.post("/operations/add", json=[{"payload": {}}], headers=operator),
                 403, "insufficient_scope", scope="submit")
    assert_error(server.session.put(f"{server.url}/signals/plc.ready", json={"value": True},
                                    headers=mes, timeout=30),
                 403, "insufficient_scope", scope="operate")
    assert server.session.put(f"{server.url}/signals/plc.ready", json={"value": True},
                              headers=operator, timeout=30).status_code == 200
    assert_error(server.post("/dispatcher/pause", headers=operator), 403, "insufficient_scope",
                 scope="admin")
    assert server.post("/dispatcher/pause", headers=bearer("all-secret")).status_code == 200
    assert_error(server.get("/operations", headers=bearer("nope")), 401, "unauthorized")
    assert server.get("/health").status_code == 200
    assert server.stop()[0] == 0


def test_serve_refuses_a_token_flag_that_repeats_a_named_token(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OPERATION_DISPATCHER_TOKEN"}
    config = tmp_path / "cell.toml"
    config.write_text('[journal]\npath = ":memory:"\n'
                      '[http.tokens.mes]\ntoken = "same"\nscopes = ["read"]\n', encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "operation_dispatcher", "serve", "--config", str(config),
         "--token", "same", "--port", "0"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path, env=env,
    )
    assert proc.returncode == 2, proc.stderr
    assert "tokens.mes.token: must differ from token" in proc.stderr


def test_an_empty_tokens_table_is_refused_not_a_locked_api() -> None:
    """``[http.tokens]`` with nothing in it would lock every route while serve said "no token"."""
    from operation_dispatcher.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as caught:
        parse_config({"http": {"tokens": {}}})
    assert any(e.startswith("http.tokens: must name at least one token") for e in caught.value.errors)

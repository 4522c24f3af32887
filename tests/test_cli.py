"""The ``operation-dispatcher`` command: ``serve`` in a subprocess, ``check-config`` in-process.

Every server runs in ``tmp_path`` (its default journal lands there), on a free port (``--port
0``: the first line it prints names the URL), and is stopped by a signal; a fixture kills any
that a failing test left behind.
"""

from __future__ import annotations

import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from served import Served

from operation_dispatcher import Operation, OperationDispatcher
from operation_dispatcher.cli import main


def test_serve_add_sigterm(serve: Callable[..., Served], tmp_path: Path) -> None:
    server = serve("--resource-id", "press-1")
    assert server.url.startswith("http://127.0.0.1:")  # loopback by default
    assert server.get("/health").json()["dispatcher_running"] is True
    response = server.post("/operations/add", json=[{"payload": {"task": "stamp"}}])
    assert response.status_code == 201, response.text
    operation = response.json()[0]["operation"]
    assert operation["resource_id"] == "press-1" and operation["state"] == "RUNNING"
    assert server.get("/apidocs").status_code == 200
    status, out, err = server.stop(signal.SIGTERM)
    assert status == 0, err
    assert "stopped" in out
    assert (tmp_path / "operation-dispatcher.db").exists()  # the default journal, in cwd


def test_sigint_stops_too(serve: Callable[..., Served]) -> None:
    server = serve("--journal", ":memory:")
    assert "journal none" in server.first_line
    status, out, err = server.stop(signal.SIGINT)
    assert status == 0, err
    assert "stopped" in out


def test_token_from_the_environment(serve: Callable[..., Served]) -> None:
    server = serve("--journal", ":memory:", env={"OPERATION_DISPATCHER_TOKEN": "env-secret"})
    assert server.get("/operations").status_code == 401
    assert server.get("/health").status_code == 200
    good = {"Authorization": "Bearer env-secret"}
    assert server.get("/operations", headers=good).status_code == 200
    assert server.stop()[0] == 0


def test_token_flag_wins_and_config_file(serve: Callable[..., Served], tmp_path: Path) -> None:
    config = tmp_path / "serve.toml"
    config.write_text(
        '[dispatcher]\nresource_id = "from-config"\nstart_paused = true\n'
        '[journal]\npath = ":memory:"\n[http]\ntoken = "config-secret"\n',
        encoding="utf-8",
    )
    server = serve("--config", str(config), "--token", "flag-secret",
                   env={"OPERATION_DISPATCHER_TOKEN": "env-secret"})
    assert server.get("/dispatcher", headers={"Authorization": "Bearer env-secret"}
                      ).status_code == 401
    state = server.get("/dispatcher", headers={"Authorization": "Bearer flag-secret"}).json()
    assert state["resource_id"] == "from-config" and state["is_paused"] is True
    assert server.stop()[0] == 0


def test_demo_shows_live_traffic(serve: Callable[..., Served]) -> None:
    server = serve("--demo", "--journal", ":memory:", "--resource-id", "demo-robot")
    wanted = {"operation_added", "operation_started"}
    # Events from before the stream opened are in the history, later ones come down the stream.
    stream = server.get("/events/stream", stream=True)
    history = server.get("/operations/history", params={"limit": 1000}).json()
    seen = {event["event_type"] for event in history["events"]}
    deadline = time.monotonic() + 30
    lines = stream.iter_lines(decode_unicode=True)
    while not wanted <= seen:
        assert time.monotonic() < deadline, seen
        line = next(lines)  # the demo adds an operation every ~2 s; heartbeats come too
        if line.startswith("event: "):
            seen.add(line[len("event: "):])
    stream.close()
    assert server.stop()[0] == 0


def test_serve_refuses_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[http]\nport = -1\nbogus = 1\n", encoding="utf-8")
    assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "http.port: must be an integer from 0 to 65535" in err
    assert "http.bogus: unknown key" in err


def test_serve_reports_a_busy_port(serve: Callable[..., Served], tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "operation_dispatcher", "serve", "--port", str(port),
             "--journal", ":memory:"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr


def test_check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[dispatcher]\nresource_id = "r"\n', encoding="utf-8")
    assert main(["check-config", str(good)]) == 0
    assert capsys.readouterr().out == f"{good}: OK\n"
    bad = tmp_path / "bad.toml"
    bad.write_text(
        "[dispatcher]\nstart_request_max_retries = 0\n[http]\nthreads = 'many'\n",
        encoding="utf-8",
    )
    assert main(["check-config", str(bad)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"{bad}: dispatcher.start_request_max_retries: must be an integer > 0",
        f"{bad}: http.threads: must be an integer from 1 to 1000",
    ]


def test_console_script_and_module_agree(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[dispatcher]\nstrict_order = 1\n", encoding="utf-8")
    script = Path(sys.executable).with_name("operation-dispatcher")
    assert script.exists()
    runs = [
        subprocess.run([*command, "check-config", str(bad)], capture_output=True, text=True,
                       timeout=60, check=False, cwd=tmp_path)
        for command in ([str(script)], [sys.executable, "-m", "operation_dispatcher"])
    ]
    assert [r.returncode for r in runs] == [1, 1]
    assert runs[0].stdout == runs[1].stdout
    assert "dispatcher.strict_order: must be true or false" in runs[0].stdout
    help_text = subprocess.run([str(script), "serve", "--help"], capture_output=True, text=True,
                               timeout=60, check=False).stdout
    for option in ("--config", "--resource-id", "--host", "--port", "--journal", "--token",
                   "--demo"):
        assert option in help_text


def test_restart_on_the_same_journal_keeps_the_operations(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    journal = str(tmp_path / "press.db")
    server = serve("--journal", journal)
    running = server.post("/operations/add", json=[{"payload": {"n": 1}}]).json()[0]["operation"]
    waiting = server.post("/operations/add", json=[
        {"payload": {"n": 2}, "release_conditions": {"door.closed": True}},
    ]).json()[0]["operation"]
    assert (running["state"], waiting["state"]) == ("RUNNING", "QUEUED")
    assert server.stop()[0] == 0

    again = serve("--journal", journal)
    queued = again.get("/operations", params={"state": "QUEUED"}).json()
    assert [s["operation"]["id"] for s in queued] == [waiting["id"]]
    interrupted = again.get(f"/operations/{running['id']}").json()["operation"]
    # never silently re-run: what was RUNNING when the process stopped is failed INTERRUPTED
    assert (interrupted["state"], interrupted["outcome"], interrupted["termination_reason"]) == (
        "COMPLETED", "FAILURE", "INTERRUPTED")
    events = again.get(f"/operations/{waiting['id']}/events").json()
    assert events[0]["event_type"] == "operation_added"
    assert again.stop()[0] == 0


def test_serve_refuses_a_journal_of_another_resource(tmp_path: Path) -> None:
    # issue 10, C.10: press-9 opened lathe-1's journal and took over its queued jobs
    journal = tmp_path / "lathe.db"
    lathe = OperationDispatcher("lathe-1", journal=journal)
    lathe.add_operation(Operation(resource_id="lathe-1"))
    lathe.close()
    proc = subprocess.run(  # a subprocess: were it not refused, it would serve until killed
        [sys.executable, "-m", "operation_dispatcher", "serve", "--port", "0",
         "--resource-id", "press-9", "--journal", str(journal)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "'lathe-1'" in proc.stderr and "'press-9'" in proc.stderr
    assert str(journal) in proc.stderr
    lathe = OperationDispatcher("lathe-1", journal=journal)  # its jobs are still its own
    assert len(lathe.get_schedule()) == 1
    lathe.close()


def test_serve_survives_a_full_journal_and_sigterm_ends_it_cleanly(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    # issue 10, C.7: with the journal unwritable, POST /dispatcher/start answered 202 while the
    # loop thread was dead, and SIGTERM then ended serve with a ThreadDidNotStop traceback.
    # ``ulimit -f`` of the running server (prlimit) stands in for a full disk: a fresh journal
    # lives in its WAL file, so a limit at the WAL's size makes the next commit fail.
    journal = tmp_path / "state.db"
    server = serve("--journal", str(journal))
    pid = server.proc.pid
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)

    def fill_disk() -> None:
        sizes = [p.stat().st_size for p in tmp_path.iterdir() if p.name.startswith("state.db")]
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (max(sizes), hard))

    assert server.post("/dispatcher/stop").status_code == 202
    fill_disk()
    started = server.post("/dispatcher/start")
    assert started.status_code == 503, started.text
    assert started.json()["code"] == "journal_unavailable"
    assert started.json()["state"]["is_running"] is False
    assert server.get("/health").json()["dispatcher_running"] is False
    added = server.post("/operations/add", json=[{"payload": {"n": 1}}])
    assert added.status_code == 503 and added.json()["code"] == "journal_unavailable"

    resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))  # room again
    assert server.post("/dispatcher/start").status_code == 202
    assert server.get("/health").json()["dispatcher_running"] is True
    added = server.post("/operations/add", json=[{"payload": {"n": 2}}])
    assert added.json()[0]["operation"]["state"] == "RUNNING"

    fill_disk()  # and full again when SIGTERM comes
    status, out, err = server.stop(signal.SIGTERM)
    assert "Traceback" not in err, err
    assert status == 0, err
    assert "stopped" in out

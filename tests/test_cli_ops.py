"""Operations at a glance and config errors all at once (issue 12, items 5 and 6).

``serve`` runs as a subprocess (the ``serve`` fixture) and its real log output on stderr is
read after it stopped; ``check-config`` and ``--version`` run in-process.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from served import Served

from operation_dispatcher import __version__
from operation_dispatcher.cli import main

_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) ")


def _levels(err: str) -> dict[str, list[str]]:
    """The log lines of ``err`` by level name."""
    by_level: dict[str, list[str]] = {}
    for line in err.splitlines():
        match = _LOG_LINE.match(line)
        if match:
            by_level.setdefault(match["level"], []).append(line)
    return by_level


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"operation-dispatcher {__version__}"


def _add_and_cancel(
    server: Served, job_id: str, before_cancel: Callable[[], None] | None = None,
) -> str:
    """Add an operation (it starts at once: nothing holds it) and cancel it; its id."""
    added = server.post("/operations/add", json=[{"job_id": job_id, "payload": {}}])
    assert added.status_code == 201, added.text
    operation = added.json()[0]["operation"]
    assert operation["state"] == "RUNNING"
    if before_cancel is not None:
        before_cancel()
    cancel = {"termination_reason": "USER_REQUEST"}
    cancelled = server.post(f"/operations/{operation['id']}/cancel", json=cancel)
    assert cancelled.status_code == 200, cancelled.text
    return str(operation["id"])


def test_serve_logs_each_start_and_finish_and_a_clean_stop_at_info(
    serve: Callable[..., Served],
) -> None:
    server = serve("--journal", ":memory:", "--log-level", "INFO")
    first = _add_and_cancel(server, "J-17", before_cancel=lambda: _add_queued(server))
    second = _add_and_cancel(server, "J-18")
    status, _, err = server.stop(signal.SIGTERM)
    assert status == 0, err
    levels = _levels(err)
    assert "WARNING" not in levels and "ERROR" not in levels, err  # a clean stop is no warning
    info = levels["INFO"]
    for operation_id, job_id in ((first, "J-17"), (second, "J-18")):
        started = [line for line in info if f"operation {operation_id} started" in line]
        assert len(started) == 1, err
        assert started[0].endswith(f"started: job_id={job_id}")
        finished = [line for line in info if f"operation {operation_id} finished" in line]
        assert len(finished) == 1, err
        assert re.search(
            rf"finished: job_id={job_id} outcome=CANCELLED termination_reason=USER_REQUEST "
            r"duration=\d+\.\d{3}s$", finished[0],
        ), finished[0]
    never = [line for line in info if "job_id=None" in line]  # cancelled while queued
    assert len(never) == 1 and never[0].endswith(
        "finished: job_id=None outcome=CANCELLED termination_reason=USER_REQUEST "
        "duration=none (never started)"
    ), err
    assert [line for line in info if line.endswith("operation_dispatcher_stopped ")], err


def _add_queued(server: Served) -> None:
    """Add an operation without a job id behind the running one, and cancel it."""
    added = server.post("/operations/add", json=[{"payload": {}}])
    operation = added.json()[0]["operation"]
    assert operation["state"] == "QUEUED", added.text
    cancel = {"termination_reason": "USER_REQUEST"}
    assert server.post(f"/operations/{operation['id']}/cancel", json=cancel).status_code == 200


def test_log_config_file_routes_the_log_to_a_rotating_file(
    serve: Callable[..., Served], tmp_path: Path,
) -> None:
    log_file = tmp_path / "logs" / "cell.log"
    log_file.parent.mkdir()
    config = tmp_path / "logging.toml"
    config.write_text(f"""
version = 1

[formatters.plain]
format = "%(levelname)s %(name)s: %(message)s"

[handlers.file]
class = "logging.handlers.RotatingFileHandler"
filename = "{log_file}"
maxBytes = 1048576
backupCount = 3
formatter = "plain"

[loggers."operation_dispatcher.cli.operations"]
level = "INFO"
handlers = ["file"]
propagate = false

[root]
level = "WARNING"
handlers = ["file"]
""")
    server = serve("--journal", ":memory:", "--log-config", str(config))
    operation_id = _add_and_cancel(server, "J-1")
    status, _, err = server.stop(signal.SIGTERM)
    assert status == 0, err
    assert not _levels(err), err  # nothing on stderr: the file's handlers replace the default
    lines = log_file.read_text().splitlines()
    # the operations at INFO; nothing else, the core's clean stop (INFO) included, is a WARNING
    assert len(lines) == 2, lines
    prefix = f"INFO operation_dispatcher.cli.operations: operation {operation_id}"
    assert lines[0] == f"{prefix} started: job_id=J-1"
    assert lines[1].startswith(f"{prefix} finished: job_id=J-1 outcome=CANCELLED "), lines


@pytest.mark.parametrize(("content", "says"), [
    (None, "no such file"),
    ("version = 1\n[handlers.h\n", "not valid TOML"),
    ("[root]\nlevel = 'INFO'\n", "dictionary doesn't specify a version"),
    ("version = 1\n[root]\nlevel = 'LOUD'\n", "Unknown level: 'LOUD'"),
    ("version = 1\n[handlers.h]\nclass = 'logging.NoSuchHandler'\n"
     "[root]\nhandlers = ['h']\n", "Unable to configure handler 'h'"),
    ("version = 1\n[handlers.h]\nclass = 'logging.FileHandler'\nfilename = '/nonexistent/x.log'\n"
     "[root]\nhandlers = ['h']\n", "No such file or directory"),
])
def test_a_broken_log_config_is_one_line_and_exit_2(
    tmp_path: Path, content: str | None, says: str,
) -> None:
    config = tmp_path / "logging.toml"
    if content is not None:
        config.write_text(content)
    # a subprocess: dictConfig may have changed half of this process's logging before failing
    done = subprocess.run(
        [sys.executable, "-m", "operation_dispatcher", "serve", "--port", "0",
         "--log-config", str(config)],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 2, done
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"operation-dispatcher: --log-config {config}: "), done.stderr
    assert says in done.stderr, done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "operation-dispatcher.db").exists()  # refused before anything opened


def test_check_config_prints_five_bad_keys_of_two_bridge_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "cell.toml"
    config.write_text("""
[[bridges]]
type = "modbus"
name = "plc"
host = "127.0.0.1"
port = 70000
poll_interval = -1
adress = 5

[[bridges]]
type = "serial"
name = "mcu"
url = "/dev/ttyUSB0"
baudrate = "fast"
write_timeout = 0
""")
    assert main(["check-config", str(config)]) == 1
    lines = capsys.readouterr().out.splitlines()
    keys = [line.removeprefix(f"{config}: ").split(":", 1)[0] for line in lines]
    assert keys == [
        "bridges[0].adress", "bridges[0].port", "bridges[0].poll_interval",
        "bridges[1].write_timeout", "bridges[1].baudrate",  # in the constructor's order
    ], lines
    assert "must be an integer from 1 to 65535, got 70000" in lines[1]

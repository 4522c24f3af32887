"""The examples run as a user would run them, so the README's code cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            "quickstart.py",
            [
                "operation_started",
                "finished: COMPLETED / SUCCESS",
                # the README's callback approves cancels too (it used to deny them: None)
                "cancelled: COMPLETED / CANCELLED",
            ],
        ),
        ("dispatch_queue.py", ["dispatch order: ['pickup', 'dropoff']", "running: dropoff"]),
        (
            "dispatcher.py",
            [
                "operation_start_denied",
                "spindle not warmed up yet",
                "operator approves",
                "3 operations",
            ],
        ),
    ],
)
def test_example_runs(script: str, expected: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for text in expected:
        assert text in result.stdout
    assert result.stdout.count("operation_completed") == result.stdout.count("operation_started")


@pytest.mark.slow  # ~3 s: the simulated jobs run in real time, and plotly writes 4.8 MB
def test_visualization_example_prints_the_forecast_and_writes_an_offline_chart(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "dispatcher_visualization.py")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "forecast while pick runs:" in out
    assert "inspect  waiting on release_condition:camera.ready" in out
    assert "misses its due date" in out  # weld
    assert out.count("waiting on dispatcher_paused") == 3
    assert "wrote dispatcher_history.html: 4 operations" in out
    html = (tmp_path / "dispatcher_history.html").read_text(encoding="utf-8")
    traces = set(re.findall(r'"name":"([A-Z_]+)"', html))
    assert {"SUCCESS", "CANCELLED", "DISPATCHER_RUNNING", "DISPATCHER_PAUSED"} <= traces
    assert not re.search(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", html, re.I)

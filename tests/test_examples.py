"""The examples run as a user would run them, so the README's code cannot rot."""

from __future__ import annotations

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

"""examples/dispatcher_openapi.py runs as a user would run it (so the README's pointer holds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "dispatcher_openapi.py"


def test_embedded_api_example_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60,
        cwd=tmp_path, check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "API on http://127.0.0.1:" in out
    for task in ("cut", "weld", "polish"):
        assert f"{task}: COMPLETED / SUCCESS" in out
    assert "1 denial(s)" in out  # the cold welder
    assert out.rstrip().endswith("stopped")
    assert list(tmp_path.iterdir()) == []  # it wrote nothing

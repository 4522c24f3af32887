"""The development loop (issue 11, item 9): the long tests are marked ``slow``, ``make test``
runs everything (CI calls it) and ``make test-fast`` skips them."""

from __future__ import annotations

import ast
import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
#: one long test of each kind the issue names: load, crash, schemathesis, concurrency, fresh venv
LONG = {
    ("test_http_load.py", "test_sixteen_clients_mixed_requests"),
    ("test_journal_crash.py", "test_sigkill_at_random_moments_loses_nothing_and_starts_nothing_twice"),
    ("test_http_schemathesis.py", "test_generated_requests_get_documented_answers"),
    ("test_concurrency.py", "test_eight_threads_ten_thousand_operations"),
    ("test_import.py", "test_imports_in_a_fresh_venv_with_only_transitions"),
}


def slow_tests() -> set[tuple[str, str]]:
    """(file, test) of every test function decorated ``@pytest.mark.slow``."""
    found = set()
    for path in (REPO_ROOT / "tests").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and any(
                ast.unparse(d) == "pytest.mark.slow" for d in node.decorator_list
            ):
                found.add((path.name, node.name))
    return found


def test_the_long_tests_are_marked_slow_and_the_marker_is_registered() -> None:
    assert LONG <= slow_tests()
    setup = configparser.ConfigParser()
    setup.read(REPO_ROOT / "setup.cfg")
    pytest_ini = setup["tool:pytest"]
    assert "--strict-markers" in pytest_ini["addopts"]  # a misspelt marker is an error
    assert any(line.startswith("slow:") for line in pytest_ini["markers"].splitlines())


@pytest.mark.parametrize(("target", "commands"), [
    ("test", ['-m pytest -q -n 4 -m "not slow"', "-m pytest -q -m slow"]),
    ("test-fast", ['-m pytest -q -n 4 -m "not slow"']),
])
def test_make_test_runs_everything_and_test_fast_skips_the_slow_tests(
    tmp_path: Path, target: str, commands: list[str]
) -> None:
    make = shutil.which("make")
    assert make is not None, "make is needed to run the suite the way CI does"
    # -n: print the commands only; VENV in tmp_path, so not even a dry run looks at .venv
    # run as CI runs it, under `make test`: a sub-make would say "make[1]: Leaving directory"
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    done = subprocess.run([make, "-n", "--no-print-directory", target,
                           f"VENV={tmp_path / 'venv'}"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=30, check=True)
    ran = done.stdout.strip().splitlines()[-len(commands):]
    assert ran == [f"{tmp_path / 'venv'}/bin/python {command}" for command in commands]

"""Both packages ship ``py.typed``, so a user's mypy reads their type hints after an install.

The packages are built from a copy of the checkout with setuptools' ``build_py`` (what a wheel
and ``pip install`` copy, package data included) into a temporary folder, and, for mypy, put into
the site-packages of a fresh venv made without pip: installed packages, not the sources (mypy
would check a source tree whether or not it carries the marker).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("operation_dispatcher", "firmware_bridges")

USER_CODE = """\
from firmware_bridges.modbus import ModbusBridge
from operation_dispatcher import OperationDispatcher

dispatcher = OperationDispatcher("robot-1")
bridge = ModbusBridge(dispatcher, "plc", "127.0.0.1", port="5020")
reveal_type(bridge.last_error)
reveal_type(dispatcher.is_running)
"""


def env_for(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "MYPY"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def build(tmp_path: Path) -> Path:
    """The files an install of the checkout puts in site-packages (``build_py`` of a copy)."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    lib = tmp_path / "lib"
    result = subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py",
         "--build-lib", str(lib)],
        cwd=source, env=env_for(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return lib


def test_an_install_carries_py_typed_for_both_packages(tmp_path: Path) -> None:
    lib = build(tmp_path)
    for package in PACKAGES:
        assert (lib / package / "py.typed").is_file(), f"{package} installs without py.typed"
    assert (lib / "firmware_bridges" / "simulators" / "plc_console.py").is_file()


@pytest.mark.slow
def test_mypy_sees_the_hints_of_the_installed_packages(tmp_path: Path) -> None:
    lib = build(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)],
                   check=True, capture_output=True, env=env_for(tmp_path), timeout=60)
    python = venv / "bin" / "python"
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, env=env_for(tmp_path), timeout=60,
    ).stdout.strip())
    for package in PACKAGES:
        shutil.copytree(lib / package, site / package)
    user = tmp_path / "cell.py"
    user.write_text(USER_CODE)

    def mypy() -> str:
        result = subprocess.run(
            [sys.executable, "-m", "mypy", "--python-executable", str(python), "--no-incremental",
             "--config-file", os.devnull, str(user)],
            cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=120,
        )
        assert result.returncode in (0, 1), result.stderr
        return result.stdout

    report = mypy()
    assert 'Argument "port" to "ModbusBridge" has incompatible type "str"; expected "int"' in report
    assert 'Revealed type is "str | None"' in report
    assert 'Revealed type is "bool"' in report
    assert "import-untyped" not in report and "missing library stubs" not in report

    (site / "firmware_bridges" / "py.typed").unlink()  # the control: without the marker, no hints
    report = mypy()
    assert 'Skipping analyzing "firmware_bridges.modbus"' in report and "py.typed" in report
    assert 'Argument "port"' not in report

"""Both packages ship ``py.typed``, so a user's mypy reads their type hints after an install.

The packages are built from a copy of the checkout with setuptools' ``build_py`` (what a wheel
and ``pip install`` copy, package data included) into a temporary folder, and, for mypy, put into
the site-packages of a fresh venv made without pip: installed packages, not the sources (mypy
would check a source tree whether or not it carries the marker).
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import zipfile
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


def copy_checkout(tmp_path: Path) -> Path:
    """What packaging reads from the checkout, copied to ``tmp_path/src`` (builds write there)."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return source


def build(tmp_path: Path) -> Path:
    """The files an install of the checkout puts in site-packages (``build_py`` of a copy)."""
    source = copy_checkout(tmp_path)
    lib = tmp_path / "lib"
    result = subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py",
         "--build-lib", str(lib)],
        cwd=source, env=env_for(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return lib


def bare_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A fresh venv without pip (fast): its python and its site-packages."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)],
                   check=True, capture_output=True, env=env_for(tmp_path), timeout=60)
    python = venv / "bin" / "python"
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, env=env_for(tmp_path), timeout=60,
    ).stdout.strip())
    return python, site


def test_an_install_carries_py_typed_for_both_packages(tmp_path: Path) -> None:
    lib = build(tmp_path)
    for package in PACKAGES:
        assert (lib / package / "py.typed").is_file(), f"{package} installs without py.typed"
    assert (lib / "firmware_bridges" / "simulators" / "plc_console.py").is_file()


@pytest.mark.slow
def test_mypy_sees_the_hints_of_the_installed_packages(tmp_path: Path) -> None:
    lib = build(tmp_path)
    python, site = bare_venv(tmp_path)
    for package in PACKAGES:
        shutil.copytree(lib / package, site / package)
    report = mypy_report(tmp_path, python)
    assert 'Argument "port" to "ModbusBridge" has incompatible type "str"; expected "int"' in report
    assert 'Revealed type is "str | None"' in report
    assert 'Revealed type is "bool"' in report
    assert "import-untyped" not in report and "missing library stubs" not in report

    (site / "firmware_bridges" / "py.typed").unlink()  # the control: without the marker, no hints
    report = mypy_report(tmp_path, python)
    assert 'Skipping analyzing "firmware_bridges.modbus"' in report and "py.typed" in report
    assert 'Argument "port"' not in report


def mypy_report(tmp_path: Path, python: Path) -> str:
    """mypy on :data:`USER_CODE` against the packages ``python`` imports."""
    user = tmp_path / "cell.py"
    user.write_text(USER_CODE)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--python-executable", str(python), "--no-incremental",
         "--config-file", os.devnull, str(user)],
        cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode in (0, 1), result.stderr
    return result.stdout


@pytest.mark.slow
def test_mypy_sees_the_hints_after_the_readmes_editable_install(tmp_path: Path) -> None:
    """The README's command for working on a checkout: ``pip install -e . --config-settings
    editable_mode=compat`` (a plain ``-e .`` installs an import hook, which mypy cannot follow).

    pip runs setuptools' PEP 660 hook ``build_editable`` with that setting and unpacks the wheel
    it makes into site-packages; the test does the same without pip (and its download of a
    build environment), into a venv made without pip.
    """
    source = copy_checkout(tmp_path)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    built = subprocess.run(
        [sys.executable, "-c",
         "import sys, setuptools.build_meta as backend\n"
         "print(backend.build_editable(sys.argv[1], {'editable_mode': 'compat'}))",
         str(wheels)],
        cwd=source, env=env_for(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert built.returncode == 0, built.stderr
    wheel = wheels / built.stdout.strip().splitlines()[-1]
    python, site = bare_venv(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    assert any(path.suffix == ".pth" for path in site.iterdir())  # the checkout on sys.path
    report = mypy_report(tmp_path, python)
    assert 'Argument "port" to "ModbusBridge" has incompatible type "str"; expected "int"' in report
    assert 'Revealed type is "str | None"' in report
    assert "import-not-found" not in report and "import-untyped" not in report


def test_make_lint_runs_ruff_then_mypy_on_both_packages(tmp_path: Path) -> None:
    make = shutil.which("make")
    assert make is not None, "make is needed to lint the way a developer does"
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    # -n: print the commands only; VENV in tmp_path, so not even a dry run looks at .venv
    done = subprocess.run([make, "-n", "--no-print-directory", "lint", f"VENV={tmp_path / 'venv'}"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30, check=True)
    python = f"{tmp_path / 'venv'}/bin/python"
    assert done.stdout.strip().splitlines()[-2:] == [
        f"{python} -m ruff check operation_dispatcher firmware_bridges tests benchmarks examples tools",
        f"{python} -m mypy firmware_bridges operation_dispatcher tools",
    ]
    setup = configparser.ConfigParser()
    setup.read(REPO_ROOT / "setup.cfg")
    assert setup["mypy"]["python_version"] == "3.11"
    assert "mypy" in setup["options.extras_require"]["dev"]
    for section in setup.sections():  # nothing switched off wholesale
        if section.startswith("mypy"):
            assert not {"ignore_errors", "ignore_missing_imports"} & set(setup[section]), section

"""``make install-pi`` (tools/install_pi.py): the exact steps on Raspberry Pi OS bookworm, checked
with ``--dry-run`` and by staging under a DESTDIR in tmp_path; nothing on this machine is
touched (the commands that belong to the Pi are printed under a DESTDIR, never run)."""

from __future__ import annotations

import importlib.util
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
UNIT_TEXT = "[Service]\nExecStart=/opt/operation-dispatcher/venv/bin/operation-dispatcher serve\n"


def _load(name: str) -> ModuleType:
    """A module of tools/ by path (tools/ is run from the checkout, not installed)."""
    path = REPO_ROOT / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"pi_tools_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


install_pi = _load("install_pi")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m tools.install_pi ARGS`` from the checkout, as make runs it."""
    environment = {k: v for k, v in os.environ.items() if k != "DESTDIR"}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "tools.install_pi", *args], cwd=REPO_ROOT,
                          env=environment, capture_output=True, text=True, timeout=30,
                          check=False)


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """A unit file to install (the real one is examples/systemd/operation-dispatcher.service)."""
    path = tmp_path / "operation-dispatcher.service"
    path.write_text(UNIT_TEXT)
    return path


def test_dry_run_prints_every_step_in_order_and_does_nothing(unit: Path, tmp_path: Path) -> None:
    done = run("--dry-run", "--unit", str(unit))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "getent passwd operation-dispatcher >/dev/null || useradd --system --user-group "
        "--home-dir /var/lib/operation-dispatcher --no-create-home --shell /usr/sbin/nologin "
        "operation-dispatcher",
        "usermod --append --groups dialout operation-dispatcher",
        "python3 -c 'import ensurepip' 2>/dev/null || apt-get install -y python3-venv",
        "test -x /opt/operation-dispatcher/venv/bin/python || "
        "python3 -m venv /opt/operation-dispatcher/venv",
        "/opt/operation-dispatcher/venv/bin/pip install --upgrade "
        f"'{REPO_ROOT}[api,serial,modbus,metrics]'",
        "install -d -m 750 /etc/operation-dispatcher",
        "chgrp operation-dispatcher /etc/operation-dispatcher",
        f"install -m 640 {REPO_ROOT}/examples/plc.toml /etc/operation-dispatcher/config.toml "
        "(kept if it exists)",
        "chgrp operation-dispatcher /etc/operation-dispatcher/config.toml",
        "install -d -m 750 /var/lib/operation-dispatcher",
        "chown operation-dispatcher:operation-dispatcher /var/lib/operation-dispatcher",
        f"install -m 644 {unit} /etc/systemd/system/operation-dispatcher.service",
        "/opt/operation-dispatcher/venv/bin/operation-dispatcher check-config "
        "/etc/operation-dispatcher/config.toml",
        "systemctl daemon-reload",
        "systemctl enable operation-dispatcher",
        "systemctl try-restart operation-dispatcher",
    ]
    with pytest.raises(KeyError):
        pwd.getpwnam("operation-dispatcher")  # no user was made


def test_destdir_stages_the_files_and_leaves_the_commands_to_the_pi(
    unit: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "image"
    done = run("--unit", str(unit), env={"DESTDIR": str(dest)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sum(line.startswith("on the Pi: ") for line in lines) == 12
    assert "on the Pi: systemctl try-restart operation-dispatcher" in lines
    staged = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert staged == ["etc/operation-dispatcher/config.toml",
                      "etc/systemd/system/operation-dispatcher.service"]
    assert (dest / "etc/systemd/system/operation-dispatcher.service").read_text() == UNIT_TEXT
    config = dest / "etc/operation-dispatcher/config.toml"
    assert 'path = "/var/lib/operation-dispatcher/journal.db"' in config.read_text()
    assert stat.S_IMODE(config.stat().st_mode) == 0o640  # it may hold tokens
    etc = dest / "etc/operation-dispatcher"
    assert stat.S_IMODE(etc.stat().st_mode) == 0o750
    state = dest / "var/lib/operation-dispatcher"
    assert state.is_dir() and stat.S_IMODE(state.stat().st_mode) == 0o750
    with pytest.raises(KeyError):
        pwd.getpwnam("operation-dispatcher")  # printed, not run


def test_an_upgrade_keeps_the_config_and_the_journal_and_replaces_the_unit(
    unit: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "image"
    assert run("--destdir", str(dest), "--unit", str(unit)).returncode == 0
    config = dest / "etc/operation-dispatcher/config.toml"
    config.write_text("# mine\n")
    journal = dest / "var/lib/operation-dispatcher/journal.db"
    journal.write_bytes(b"SQLite format 3\x00 weeks of history")
    unit.write_text(UNIT_TEXT + "# new release\n")
    done = run("--destdir", str(dest), "--unit", str(unit))
    assert done.returncode == 0, done.stderr
    assert config.read_text() == "# mine\n"
    assert "kept /etc/operation-dispatcher/config.toml" in done.stdout
    assert journal.read_bytes() == b"SQLite format 3\x00 weeks of history"
    assert (dest / "etc/systemd/system/operation-dispatcher.service").read_text().endswith(
        "# new release\n")
    assert not list(dest.rglob("*.new"))  # written beside, then renamed over


@pytest.mark.parametrize("extras", ["api;rm -rf /", "api serial", "", "API", "api,,serial"])
def test_extras_that_are_not_plain_names_are_refused(unit: Path, extras: str) -> None:
    done = run("--dry-run", "--unit", str(unit), "--extras", extras)
    assert done.returncode == 2 and "--extras" in done.stderr and done.stdout == ""


def test_a_missing_unit_file_is_refused_before_any_step(tmp_path: Path) -> None:
    done = run("--destdir", str(tmp_path / "image"), "--unit", str(tmp_path / "none.service"))
    assert done.returncode == 2 and "no unit file" in done.stderr
    assert not (tmp_path / "image").exists()


def test_the_default_unit_is_the_one_in_examples_systemd() -> None:
    assert install_pi.UNIT_SOURCE == REPO_ROOT / "examples/systemd/operation-dispatcher.service"


def test_the_service_config_moves_only_the_journal_path() -> None:
    example = (REPO_ROOT / "examples/plc.toml").read_text()
    text = install_pi.service_config(example)
    changed = [(a, b) for a, b in zip(example.splitlines(), text.splitlines(), strict=True)
               if a != b]
    assert changed == [('path = "./operation-dispatcher.db"',
                        'path = "/var/lib/operation-dispatcher/journal.db"')]
    other = '[dispatcher]\nresource_id = "x"\n[bridges.signals]\npath = "keep"\n'
    with pytest.raises(ValueError, match=r"no \[journal\] path"):
        install_pi.service_config(other)


def test_the_unit_runs_what_install_pi_installs_where_it_puts_it() -> None:
    """examples/systemd/operation-dispatcher.service and this script agree on the venv, the
    config, the journal, the user and the state directory."""
    unit = install_pi.UNIT_SOURCE.read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start.startswith(f"ExecStart={install_pi.VENV}/bin/operation-dispatcher serve ")
    assert f"--config {install_pi.CONFIG}" in exec_start
    assert f"--journal {install_pi.JOURNAL}" in exec_start
    assert f"\nUser={install_pi.USER}\n" in unit
    assert f"\nStateDirectory={install_pi.STATE.name}\n" in unit
    assert "\nSupplementaryGroups=dialout\n" in unit

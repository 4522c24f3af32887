"""``make install-pi``: operation-dispatcher as a service on Raspberry Pi OS bookworm.

Run from a checkout on the Pi, as root (``sudo make install-pi``). The steps, in order:

1. a system user ``operation-dispatcher`` (no login, no home of its own) in the ``dialout``
   group, which owns the serial ports (``/dev/ttyUSB0``, ``/dev/ttyAMA0``...);
2. a venv in ``/opt/operation-dispatcher/venv`` (where the unit runs it from) with the package
   and the extras a cell uses (``api,serial,modbus,metrics``), from this checkout (``pip
   install --upgrade``: running it again upgrades in place);
3. ``/etc/operation-dispatcher/config.toml`` from ``examples/plc.toml`` with the journal under
   ``/var/lib/operation-dispatcher``, only when there is none yet (yours is never overwritten);
   the folder and the file readable by root and the service's group only (it may hold
   tokens; the unit's ``ConfigurationDirectoryMode=0750`` agrees);
4. ``/var/lib/operation-dispatcher`` (the journal's folder, the unit's ``StateDirectory=``),
   owned by the user; an upgrade never touches the files in it;
5. the unit ``examples/systemd/operation-dispatcher.service`` to ``/etc/systemd/system``; the
   configuration is checked (``operation-dispatcher check-config``) before systemd reloads,
   enables the service and restarts it if it was running (an upgrade); a first install leaves
   it to you to edit the config and start it.

``--dry-run`` prints the steps and does nothing. ``--destdir DIR`` (or ``DESTDIR=DIR``) stages the
files under DIR, as for an SD-card image built on another machine, and prints the commands that
must run on the Pi itself (users, venv, pip, systemctl) instead of running them.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NAME = "operation-dispatcher"
USER = NAME
VENV = Path("/opt") / NAME / "venv"  # where the unit's ExecStart looks
ETC = Path("/etc") / NAME
CONFIG = ETC / "config.toml"
STATE = Path("/var/lib") / NAME
JOURNAL = STATE / "journal.db"
UNIT = Path("/etc/systemd/system") / f"{NAME}.service"
UNIT_SOURCE = REPO / "examples" / "systemd" / f"{NAME}.service"
CONFIG_SOURCE = REPO / "examples" / "plc.toml"
EXTRAS = "api,serial,modbus,metrics"


@dataclass(frozen=True)
class Shell:
    """A command that must run on the Pi itself (printed, not run, under a DESTDIR)."""

    line: str


@dataclass(frozen=True)
class MakeDir:
    path: Path
    mode: int


@dataclass(frozen=True)
class Install:
    """``text`` written to ``path`` with ``mode``; with ``keep``, not over an existing file."""

    path: Path
    text: str
    mode: int
    keep: bool = False
    source: str = ""


Step = Shell | MakeDir | Install


def service_config(example: str, journal: Path = JOURNAL) -> str:
    """The example config with its journal moved to the state directory.

    The example keeps it in the working directory (``./operation-dispatcher.db``); a service
    must not depend on where it was started from.
    """
    text, count = re.subn(r'(?m)^(\[journal\][^\[]*?^path\s*=\s*)"[^"]*"',
                          lambda m: f'{m.group(1)}"{journal}"', example)
    if count != 1:
        raise ValueError("the example config has no [journal] path to set")
    return text


def plan(checkout: Path, unit_source: Path, extras: str = EXTRAS) -> list[Step]:
    """Every step of an install or upgrade, in order (idempotent: safe to run again)."""
    q = shlex.quote
    venv_bin = VENV / "bin"
    return [
        Shell(f"getent passwd {USER} >/dev/null || useradd --system --user-group "
              f"--home-dir {STATE} --no-create-home --shell /usr/sbin/nologin {USER}"),
        Shell(f"usermod --append --groups dialout {USER}"),
        Shell("python3 -c 'import ensurepip' 2>/dev/null || apt-get install -y python3-venv"),
        Shell(f"test -x {venv_bin}/python || python3 -m venv {VENV}"),
        Shell(f"{venv_bin}/pip install --upgrade {q(f'{checkout}[{extras}]')}"),
        MakeDir(ETC, 0o750),
        Shell(f"chgrp {USER} {ETC}"),
        Install(CONFIG, service_config(CONFIG_SOURCE.read_text(encoding="utf-8")), 0o640,
                keep=True, source=str(CONFIG_SOURCE)),
        Shell(f"chgrp {USER} {CONFIG}"),
        MakeDir(STATE, 0o750),
        Shell(f"chown {USER}:{USER} {STATE}"),
        Install(UNIT, unit_source.read_text(encoding="utf-8"), 0o644, source=str(unit_source)),
        Shell(f"{venv_bin}/{NAME} check-config {CONFIG}"),
        Shell("systemctl daemon-reload"),
        Shell(f"systemctl enable {NAME}"),
        Shell(f"systemctl try-restart {NAME}"),
    ]


def describe(step: Step) -> str:
    """The step as one line a person can read (and, for a Shell step, paste)."""
    if isinstance(step, Shell):
        return step.line
    if isinstance(step, MakeDir):
        return f"install -d -m {step.mode:o} {step.path}"
    keep = " (kept if it exists)" if step.keep else ""
    return f"install -m {step.mode:o} {step.source} {step.path}{keep}"


def apply(step: Step, destdir: Path | None) -> str:
    """Do one step (under ``destdir`` for files; Shell steps only without one); what happened."""
    if isinstance(step, Shell):
        if destdir is not None:
            return f"on the Pi: {step.line}"
        subprocess.run(["sh", "-c", step.line], check=True)
        return f"+ {step.line}"
    target = Path(f"{destdir or ''}{step.path}")
    if isinstance(step, MakeDir):
        target.mkdir(parents=True, exist_ok=True)
        target.chmod(step.mode)
        return f"+ {describe(step)}"
    if step.keep and target.exists():
        return f"kept {step.path} (yours: compare with {step.source})"
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".new")
    temporary.write_text(step.text, encoding="utf-8")
    temporary.chmod(step.mode)
    os.replace(temporary, target)  # never a half-written unit or config
    return f"+ {describe(step)}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tools.install_pi", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="print the steps, do nothing")
    parser.add_argument("--destdir", type=Path, default=os.environ.get("DESTDIR") or None,
                        help="stage the files under this folder (env DESTDIR)")
    parser.add_argument("--extras", default=EXTRAS, help=f"pip extras (default {EXTRAS})")
    parser.add_argument("--unit", type=Path, default=UNIT_SOURCE, help="the unit to install")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[a-z0-9_-]+(,[a-z0-9_-]+)*", args.extras):
        parser.error(f"--extras: comma-separated extra names, got {args.extras!r}")
    if not args.unit.is_file():
        parser.error(f"no unit file {args.unit}")
    destdir = args.destdir.resolve() if args.destdir else None
    if destdir is None and not args.dry_run:
        if os.geteuid() != 0:
            parser.error("run it as root (sudo make install-pi), or with --dry-run / DESTDIR")
        if shutil.which("systemctl") is None:
            parser.error("no systemctl: this installs a systemd service")
    for step in plan(REPO, args.unit, args.extras):
        try:
            print(describe(step) if args.dry_run else apply(step, destdir), flush=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"install-pi: stopped at `{describe(step)}`: {exc}; the steps after it were "
                  "not done (running it again continues safely)", file=sys.stderr)
            return 1
    if not args.dry_run and destdir is None:
        print(f"done. Edit {CONFIG} (bridges, [http] token), then: "
              f"systemctl start {NAME}; journalctl -u {NAME} -f")
    return 0


if __name__ == "__main__":
    sys.exit(main())

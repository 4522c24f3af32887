"""``make pi-check``: the package installed and tested on a Raspberry Pi's processors, emulated.

For each architecture (arm64: Raspberry Pi OS 64-bit, Pi 3/4/5; armhf: 32-bit, Pi 2 and Zero 2):

1. a Debian bookworm root (``debootstrap --variant=minbase --include=python3``; bookworm's python3
   is 3.11, as on Raspberry Pi OS bookworm), built once under ``$PI_ROOTS`` (default
   ``/var/cache/operation-dispatcher-pi``) and reused while its stamp file matches the command
   that built it. The stamp is written last, so a root whose build was interrupted is rebuilt;
   a failed debootstrap is tried once more from an empty folder;
2. ``binfmt_misc`` mounted if missing and ``qemu-aarch64`` / ``qemu-arm`` enabled, so the root's
   ARM binaries run on this host through ``qemu-user-static``;
3. the package (a wheel built here) with the extras that matter on a Pi, and the test tools,
   installed into the root from this host with ``pip install --target --platform ...
   --only-binary=:all:``: no pip and no network inside the root. The dependencies are kept
   while their list is unchanged; the package itself is installed afresh on every run;
4. the root's python3 checked to run as that processor; ``/proc``, ``/dev/pts`` and ``/dev/shm``
   mounted in the root (unmounted afterwards, also on failure), then inside it with ``chroot``
   the tests of the selection (``--selection``, env ``PI_CHECK``: :data:`SELECTIONS`; ``ci``
   picks the core tests and the bridge tests against the simulators by :mod:`tools.pi_core`'s
   rules), both architectures at the same time; then, one after the other,
   :mod:`tools.pi_probe` (``serve`` with a simulated PLC, real HTTP requests, import time, RSS,
   idle CPU, operations/s) on this host and in each root, the figures side by side.

Every line on stdout is a JSON object; progress goes to stderr. Exit status 0 when everything
passed; a check that cannot run here (no binfmt_misc, no emulation, a root that cannot be
built) fails with the reason, never skips. Needs root (debootstrap, chroot, mount) and
``debootstrap qemu-user-static binfmt-support``.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools import pi_core

REPO = Path(__file__).resolve().parent.parent
SUITE = "bookworm"
PYTHON_VERSION = "3.11"  # bookworm's python3
GLIBC = (2, 36)  # bookworm's glibc: wheels tagged manylinux_2_17 .. manylinux_2_36 run there
DEFAULT_ROOTS = "/var/cache/operation-dispatcher-pi"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
STAMP = ".pi-check-stamp"
#: where the root gets what pi-check installs: app/ (the package), deps/, src/ (the tests)
INSTALL_DIR = "opt/pi-check"
#: a .pth file of the root's python3 naming the installed folders, package first: on sys.path
#: like a venv's site-packages, so a test that sets PYTHONPATH for a child keeps the package
PTH = "usr/local/lib/python3.11/dist-packages/pi-check.pth"
#: what the tests and the probe need besides the package (versions come from the dev extra)
TEST_TOOLS = ("pytest", "pytest-xdist", "hypothesis", "requests")
#: files of the checkout copied into the root to run the tests from there. The package's
#: sources are copied only for the tests that read them (file sizes, route code): pytest runs
#: with ``python3 -P`` (the current folder not on sys.path), so the tests import the installed
#: wheel, with its entry points
COPIED = ("tests", "examples", "benchmarks", "tools", "operation_dispatcher", "firmware_bridges",
          "setup.cfg", "pyproject.toml", "README.md")
#: test files left out besides those importing what the root lacks (see :func:`test_files`),
#: with why: they check the developer's tools and packaging, not the package on a Pi
EXCLUDED_TESTS = {
    "test_development.py": "runs make and ruff",
    "test_typing.py": "builds the wheel, makes venvs, runs make and mypy",
    "test_pi_check.py": "this check's own tests: they run on the host",
    "test_systemd.py": "runs systemd-analyze on the unit: a host tool, not in the root",
    "test_mqtt_link.py": "starts a mosquitto broker: a host program, not in the root",
    "test_mqtt_fleet.py": "starts a mosquitto broker: a host program, not in the root",
    "test_mqtt_fleet_demo.py": "starts a mosquitto broker: a host program, not in the root",
}
#: the bridge tests: bridges against the PLC and serial-device simulators
BRIDGE_TESTS = ("test_bridge_*.py", "test_cli_bridges.py", "test_http_bridges.py",
                "test_progress_bridges.py", "test_serial_protocol.py")
#: what ``make pi-check`` runs in the roots (``--selection``, env ``PI_CHECK``): why each
SELECTIONS = {
    "ci": "the core tests (tools/pi_core.py's rule) and the bridge tests against the "
          "simulators, then the probe: a few minutes once the roots are cached; .ci/run runs it",
    "full": "every test the roots can run (the quick ones that start no serve): 9-13 min",
}
DEFAULT_SELECTION = "ci"
TEST_TIMEOUT_SECONDS = 1200
#: timed imports of the probe after its warm-up, by selection: the median of 3 for the full
#: check, one for CI's (each is a fresh emulated interpreter: seconds)
PROBE_SAMPLES = {"ci": 1, "full": 3}


@dataclass(frozen=True)
class Arch:
    """One Debian architecture: how to emulate it and which wheels it takes."""

    name: str  # Debian's name (debootstrap --arch)
    qemu: str  # the binfmt_misc entry of qemu-user-static
    machine: str  # the wheel platform tag's machine part
    extras: tuple[str, ...]


#: the extras that matter on a Pi: REST API, serial lines, Modbus, metrics, MQTT, the Gantt
#: page (plotly, pure Python); the MCP server on arm64 only (on armhf its dependency cffi has
#: no wheel, and pip cannot build in the root)
PI_EXTRAS = ("api", "serial", "modbus", "metrics", "mqtt", "vis")
ARCHES = {
    "arm64": Arch("arm64", "qemu-aarch64", "aarch64", (*PI_EXTRAS, "mcp")),
    "armhf": Arch("armhf", "qemu-arm", "armv7l", PI_EXTRAS),
}


def say(message: str) -> None:
    """Progress for the person watching (stderr: stdout is JSON lines); one write, so the
    lines of the architectures' threads do not mix."""
    sys.stderr.write(f"pi-check: {message}\n")
    sys.stderr.flush()


def report(**fields: Any) -> dict[str, Any]:
    """One JSON line on stdout (one write: the threads' lines do not mix)."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()
    return fields


def workers_per_arch(arches: int, cores: int | None) -> int | None:
    """pytest-xdist workers for each architecture's tests, all architectures at once: the
    cores shared out (the emulated tests are CPU-bound); None (one process, no xdist, whose
    workers would each import every test module again, emulated) when that is one or less."""
    each = (cores or 1) // max(arches, 1)
    return each if each >= 2 else None


def run(argv: Sequence[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``argv`` with its output shown; CalledProcessError when it fails."""
    say("$ " + " ".join(str(a) for a in argv))
    kwargs.setdefault("stdout", sys.stderr)
    kwargs.setdefault("check", True)
    return subprocess.run([str(a) for a in argv], text=True, **kwargs)


# ==================================================================== pure logic (unit-tested)

def debootstrap_argv(arch: Arch, directory: Path, mirror: str) -> list[str]:
    """The command that builds the root of ``arch`` in ``directory``."""
    return ["debootstrap", "--variant=minbase", "--include=python3", f"--arch={arch.name}",
            SUITE, str(directory), mirror]


def stamp_text(arch: Arch, mirror: str) -> str:
    """What the stamp of a finished root says: the command that built it, minus the place."""
    return json.dumps({"debootstrap": debootstrap_argv(arch, Path("ROOT"), mirror)}) + "\n"


def root_is_built(directory: Path, arch: Arch, mirror: str) -> bool:
    """Whether ``directory`` holds a root that was built to the end by the same command."""
    stamp = directory / STAMP
    try:
        return stamp.read_text(encoding="utf-8") == stamp_text(arch, mirror)
    except OSError:
        return False


def platform_tags(machine: str, glibc: tuple[int, int] = GLIBC) -> list[str]:
    """Every manylinux tag a wheel for ``machine`` may carry and still run on ``glibc``.

    Newest first: ``manylinux_2_36_<m>`` down to ``manylinux_2_17_<m>`` and its legacy alias
    ``manylinux2014_<m>``. Some projects publish ARM wheels only for a newer glibc (2_28,
    2_31...), so ``manylinux2014`` alone would miss them.
    """
    major, newest = glibc
    tags = [f"manylinux_{major}_{minor}_{machine}" for minor in range(newest, 16, -1)]
    return [*tags, f"manylinux2014_{machine}"]


def requirements(setup_cfg: Path, extras: Sequence[str], tools: Sequence[str]) -> list[str]:
    """The package's dependencies with ``extras``, and ``tools`` as pinned in the dev extra."""
    config = configparser.ConfigParser()
    config.read(setup_cfg, encoding="utf-8")
    options = config["options"]
    extras_table = config["options.extras_require"]  # interpolates %(api)s and the like

    def lines(text: str) -> list[str]:
        return [line.strip() for line in text.splitlines() if line.strip()]

    wanted = lines(options["install_requires"])
    for extra in extras:
        if extra not in extras_table:
            raise KeyError(f"setup.cfg has no extra {extra!r}")
        wanted += lines(extras_table[extra])
    dev = {re.split(r"[<>=!~\[ ;]", line, maxsplit=1)[0].lower(): line
           for line in lines(extras_table["dev"])}
    for tool in tools:
        wanted.append(dev.get(tool, tool))
    return sorted(set(wanted))


def pip_target_argv(python: str, target: Path, machine: str, packages: Sequence[str],
                    *, no_deps: bool = False) -> list[str]:
    """``pip install`` of ``packages`` into ``target`` for another machine: wheels only."""
    argv = [python, "-m", "pip", "install", "--quiet", "--target", str(target),
            "--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp",
            "--abi", "cp311", "--no-warn-script-location"]
    for tag in platform_tags(machine):
        argv += ["--platform", tag]
    if no_deps:
        argv.append("--no-deps")
    return [*argv, *packages]


def deps_key(packages: Sequence[str], machine: str) -> str:
    """A digest of what the dependency folder holds: reinstall when it changes."""
    text = json.dumps([sorted(packages), platform_tags(machine), PYTHON_VERSION])
    return hashlib.sha256(text.encode()).hexdigest()


def test_files(tests: Path, lacking: Mapping[str, list[str]]) -> tuple[list[str], list[str]]:
    """(core test files, bridge test files) of ``tests``: every ``test_*.py`` but
    :data:`EXCLUDED_TESTS` and those in ``lacking`` (files the root cannot collect, found by
    :mod:`tools.pi_imports` there)."""
    every = [p.name for p in sorted(tests.glob("test_*.py"))
             if p.name not in EXCLUDED_TESTS and p.name not in lacking]
    bridges = {p.name for pattern in BRIDGE_TESTS for p in tests.glob(pattern)}
    return [n for n in every if n not in bridges], [n for n in every if n in bridges]


def select_tests(selection: str, tests: Path,
                 lacking: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """{"core": [...], "bridges": [...]}: what the ``selection`` (:data:`SELECTIONS`) runs, as
    test file names or ``test_x.py::test_y`` ids. ``full``: the files of :func:`test_files`;
    ``ci``: of those, the core tests and the bridge tests by :mod:`tools.pi_core`'s rules."""
    if selection not in SELECTIONS:
        raise ValueError(f"no selection {selection!r}: one of {sorted(SELECTIONS)}")
    core, bridges = test_files(tests, lacking)
    if selection == "ci":
        return {"core": pi_core.select(tests, core),
                "bridges": pi_core.select(tests, bridges, bridges=True)}
    return {"core": core, "bridges": bridges}


def lacking_in(root: Path, tests: Path) -> dict[str, list[str]]:
    """{test file: the modules it imports that fail in ``root``} (:mod:`tools.pi_imports`)."""
    files = [f"tests/{p.name}" for p in sorted(tests.glob("test_*.py"))
             if p.name not in EXCLUDED_TESTS]
    done = run(chroot_argv(root, ["/usr/bin/python3", "-P", "tools/pi_imports.py", *files]),
               stdout=subprocess.PIPE, timeout=600)
    return json.loads(done.stdout.strip().splitlines()[-1])


def junit_outcomes(xml_path: Path) -> dict[str, str]:
    """Each test's pytest node id -> passed / failed / errors / skipped, from a
    ``--junitxml`` report. A test that failed and then erred in its teardown (two entries in
    the report) is failed; a file that could not be collected is one ``errors`` entry under
    its module name."""
    tags_of: dict[str, set[str]] = {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        classname, name = case.get("classname") or "", case.get("name") or ""
        parts = classname.split(".")  # tests.test_x[.TestClass]
        if not classname:
            node = name  # a collection error: the module's name only
        elif parts[0] == "tests" and len(parts) > 1:
            node = "::".join([f"tests/{parts[1]}.py", *parts[2:], name])
        else:
            node = "::".join([f"{parts[0]}.py", *parts[1:], name])
        tags_of.setdefault(node, set()).update(child.tag for child in case)
    return {node: next((outcome for tag, outcome in (("failure", "failed"), ("error", "errors"),
                                                      ("skipped", "skipped")) if tag in tags),
                       "passed")
            for node, tags in tags_of.items()}


def tally(outcomes: Mapping[str, str], groups: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """passed / failed / errors / skipped per group, the group of each test found by its file
    name in ``groups`` (else ``"other"``: a file that could not be collected, say)."""
    counts: dict[str, dict[str, int]] = {}
    for node, outcome in outcomes.items():
        file = node.split("::")[0].removeprefix("tests/")
        group = groups.get(file, "other") if "::" in node else "other"
        counts.setdefault(group, dict.fromkeys(("passed", "failed", "errors", "skipped"), 0))
        counts[group][outcome] += 1
    return counts


def mounts_under(directory: Path, mounts_text: str) -> list[str]:
    """Mount points at or below ``directory`` in a ``/proc/self/mounts`` text, deepest first."""
    prefix = str(directory).rstrip("/")
    points = [line.split()[1].replace("\\040", " ") for line in mounts_text.splitlines()
              if len(line.split()) > 1]
    inside = [p for p in points if p == prefix or p.startswith(prefix + "/")]
    return sorted(set(inside), key=len, reverse=True)


# ==================================================================== the host's side

class CheckError(RuntimeError):
    """pi-check cannot run here, and why (the message says what to do): it fails, never
    skips."""


def ensure_binfmt(arch: Arch, binfmt: Path = Path("/proc/sys/fs/binfmt_misc")) -> None:
    """Mount binfmt_misc when missing and enable ``arch``'s qemu entry; fail when it won't."""
    if not (binfmt / "status").exists():
        done = run(["mount", "-t", "binfmt_misc", "binfmt_misc", binfmt], check=False,
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if done.returncode != 0 or not (binfmt / "status").exists():
            raise CheckError(
                f"cannot mount binfmt_misc on {binfmt} ({done.stdout.strip() or 'no message'}):"
                " the kernel runs the roots' ARM programs through it. In a container, run it "
                "privileged or mount binfmt_misc on the host (`mount -t binfmt_misc binfmt_misc "
                f"{binfmt}`, then `update-binfmts --enable {arch.qemu}`)")
    entry = binfmt / arch.qemu
    if not entry.exists() or "enabled" not in entry.read_text():
        run(["update-binfmts", "--enable", arch.qemu], check=False)
    if not entry.exists() or "enabled" not in entry.read_text():
        raise CheckError(f"{entry} is not enabled: is qemu-user-static installed? "
                         f"(apt-get install qemu-user-static binfmt-support; "
                         f"update-binfmts --enable {arch.qemu})")
    if "F" not in entry.read_text().split("flags:")[1].split()[0]:
        raise CheckError(f"{entry} lacks the F flag: qemu must be found outside the chroot "
                         "(qemu-user-static registers it with F; another package's entry?)")


def unmount_all(directory: Path) -> None:
    """Unmount everything mounted in ``directory`` (a previous run killed half-way)."""
    directory = directory.resolve()  # /proc/self/mounts names the real paths
    for point in mounts_under(directory, Path("/proc/self/mounts").read_text()):
        subprocess.run(["umount", point], check=False)
    left = mounts_under(directory, Path("/proc/self/mounts").read_text())
    if left:
        raise RuntimeError(f"still mounted, not touching {directory}: {left}")


def ensure_root(arch: Arch, roots: Path, mirror: str, rebuild: bool,
                build: Callable[[list[str]], object] = run) -> Path:
    """The root of ``arch``, built (by ``build``, given the debootstrap command) when missing,
    half-built, built by another command, or ``rebuild``."""
    directory = roots / f"{SUITE}-{arch.name}"
    if not rebuild and root_is_built(directory, arch, mirror):
        report(pi_check="root", arch=arch.name, path=str(directory), built=False, seconds=0)
        return directory
    started = time.monotonic()
    for attempt in (1, 2):
        if directory.exists():
            unmount_all(directory)  # never delete through a mount point
            shutil.rmtree(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            build(debootstrap_argv(arch, directory, mirror))
            break
        except subprocess.CalledProcessError as exc:
            # a fresh machine's first download can fail (a mirror's hiccup): once more, then
            # fail with debootstrap's own log, which says which package or step it was
            log = directory / "debootstrap/debootstrap.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
            say(f"debootstrap of {arch.name} failed (attempt {attempt} of 2, exit status "
                f"{exc.returncode}); the end of its log:\n{tail}")
            if attempt == 2:
                raise CheckError(f"debootstrap could not build the {arch.name} root in "
                                 f"{directory} from {mirror}, twice: see its log above") from exc
    (directory / STAMP).write_text(stamp_text(arch, mirror), encoding="utf-8")
    report(pi_check="root", arch=arch.name, path=str(directory), built=True,
           seconds=round(time.monotonic() - started, 1))
    return directory


def build_wheel(out: Path) -> Path:
    """The package as a wheel, built from this checkout."""
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", out,
         REPO])
    (wheel,) = out.glob("operation_dispatcher-*.whl")
    return wheel


def install(root: Path, arch: Arch, wheel: Path) -> None:
    """The dependencies (kept while unchanged) and the package (always fresh) into the root."""
    base = root / INSTALL_DIR
    deps, app = base / "deps", base / "app"
    packages = requirements(REPO / "setup.cfg", arch.extras, TEST_TOOLS)
    key = deps_key(packages, arch.machine)
    stamp = deps / STAMP
    started = time.monotonic()
    fresh = not (stamp.exists() and stamp.read_text() == key)
    if fresh:
        shutil.rmtree(deps, ignore_errors=True)
        run(pip_target_argv(sys.executable, deps, arch.machine, packages))
        stamp.write_text(key)
    shutil.rmtree(app, ignore_errors=True)
    run(pip_target_argv(sys.executable, app, arch.machine, [str(wheel)], no_deps=True))
    (root / PTH).parent.mkdir(parents=True, exist_ok=True)
    (root / PTH).write_text(f"/{INSTALL_DIR}/app\n/{INSTALL_DIR}/deps\n", encoding="utf-8")
    src = base / "src"
    shutil.rmtree(src, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    for name in COPIED:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    report(pi_check="install", arch=arch.name, dependencies_installed=fresh,
           packages=len(packages), seconds=round(time.monotonic() - started, 1))


def processes_in(root: Path, proc: Path = Path("/proc")) -> list[int]:
    """The ids of the processes whose root directory is ``root`` (chrooted there)."""
    real = str(root.resolve())
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "root") == real:
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to see
            continue
    return found


def kill_left_behind(root: Path) -> list[int]:
    """SIGKILL whatever still runs in ``root`` (a failed test's ``serve`` child, say), so the
    mounts can go and no process outlives pi-check; the ids killed."""
    if root.resolve() == Path("/"):
        raise ValueError("refusing to kill every process of the host: root is /")
    killed = processes_in(root)
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while processes_in(root) and time.monotonic() < deadline:
        time.sleep(0.1)  # waiting for the kernel to reap them: no event to wait on
    return killed


@contextmanager
def mounted(root: Path) -> Iterator[None]:
    """/proc and a private /dev/pts (serial tests use pseudo-terminals) in the root, for the
    duration of the block; unmounted also when the block fails."""
    unmount_all(root)
    try:
        for kind, point, options in (
            ("proc", root / "proc", "nosuid,nodev,noexec"),
            ("devpts", root / "dev/pts", "newinstance,ptmxmode=0666,mode=0620"),
            ("tmpfs", root / "dev/shm", "nosuid,nodev,mode=1777"),
        ):
            point.mkdir(parents=True, exist_ok=True)
            run(["mount", "-t", kind, "-o", options, kind, point])
        ptmx = root / "dev/ptmx"
        if not ptmx.is_symlink():  # the root's ptmx must be the private instance's
            ptmx.unlink(missing_ok=True)
            ptmx.symlink_to("pts/ptmx")
        yield
    finally:
        left = kill_left_behind(root)
        if left:
            say(f"killed {len(left)} process(es) left running in {root}: {left}")
        unmount_all(root)  # what was mounted here, deepest first, read from /proc/self/mounts


def chroot_argv(root: Path, argv: Sequence[str], cwd: str = f"/{INSTALL_DIR}/src",
                env: Sequence[str] = ()) -> list[str]:
    """``argv`` run inside ``root`` in ``cwd``, with a clean environment plus ``env``
    (``NAME=value``); the installed folders are on ``sys.path`` through :data:`PTH`, as a
    venv's site-packages would be."""
    base = ["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8", "PYTHONUNBUFFERED=1"]
    return ["chroot", str(root), "/usr/bin/env", "-i", f"--chdir={cwd}", *base, *env, *argv]


def pytest_argv(targets: Sequence[str], junit: str, workers: int | None) -> list[str]:
    """The pytest command inside the root: the quick tests (``-m "not slow"``) of ``targets``
    (files or node ids) on ``workers`` pytest-xdist workers (None: in one process), without
    those :mod:`tools.pi_select` leaves out, a JUnit report at ``junit``; a file that cannot
    be collected fails the run but does not hide the others' results."""
    spread = ["-n", str(workers)] if workers else ["-p", "no:xdist"]
    return ["/usr/bin/python3", "-P", "-m", "pytest", "-q", "-m", "not slow", "-p", "pi_select",
            *spread, "--continue-on-collection-errors", f"--junitxml={junit}", *targets]


JUNIT = "/tmp/pi-check.xml"
JUNIT_RETRY = "/tmp/pi-check-retry.xml"
#: failed tests run again, alone and in one process, when there are no more than this many:
#: emulation under a loaded host misses time allowances now and then; a test that fails twice
#: fails the check, and the ones that passed only the second time are listed as such
RETRY_AT_MOST = 12
DESELECTED = "/tmp/pi-check-deselected.json"
PYTEST_LOG = "/tmp/pi-check-pytest.log"
#: the environment of :func:`pytest_argv`: the plug-in's folder, where it lists what it left out
PYTEST_ENV = (f"PYTHONPATH=/{INSTALL_DIR}/src/tools", f"PI_CHECK_DESELECTED={DESELECTED}")


def run_logged(argv: Sequence[str], log: Path, title: str) -> int:
    """``argv`` with its output in ``log``, shown whole afterwards (the architectures' tests
    run at the same time: their outputs would mix); its exit status."""
    with log.open("w", encoding="utf-8") as out:
        try:
            status = run(argv, stdout=out, stderr=subprocess.STDOUT, check=False,
                         timeout=TEST_TIMEOUT_SECONDS).returncode
        finally:
            sys.stderr.write(f"----- {title} -----\n"
                             + log.read_text(encoding="utf-8", errors="replace"))
            sys.stderr.flush()
    return status


def run_tests(root: Path, arch: Arch, groups: Mapping[str, list[str]],
              workers: int | None) -> bool:
    """The tests of every group (file names, or ``file::test`` ids: :func:`select_tests`) in
    one pytest run inside the root on ``workers`` (:func:`workers_per_arch`), the failed ones
    once more (:data:`RETRY_AT_MOST`); one JSON line per group; whether all passed."""
    xml, retry_xml = root / JUNIT.lstrip("/"), root / JUNIT_RETRY.lstrip("/")
    deselected, log = root / DESELECTED.lstrip("/"), root / PYTEST_LOG.lstrip("/")
    for path in (xml, retry_xml, deselected):
        path.unlink(missing_ok=True)
    started = time.monotonic()
    files = [f"tests/{name}" for names in groups.values() for name in names]
    status = run_logged(chroot_argv(root, pytest_argv(files, JUNIT, workers), env=PYTEST_ENV),
                        log, f"pytest, {arch.name}")
    outcomes = junit_outcomes(xml) if xml.exists() else {}
    left_out = json.loads(deselected.read_text()) if deselected.exists() else []
    failed = [node for node, outcome in outcomes.items()
              if outcome in ("failed", "errors") and "::" in node]
    retried: dict[str, str] = {}
    if failed and len(failed) <= RETRY_AT_MOST and status == 1:
        run_logged(chroot_argv(root, pytest_argv(failed, JUNIT_RETRY, None), env=PYTEST_ENV),
                   log.with_suffix(".retry.log"), f"pytest, {arch.name}, the failed tests again")
        retried = junit_outcomes(retry_xml) if retry_xml.exists() else {}
    final = {**outcomes, **{node: retried.get(node, outcomes[node]) for node in failed}}
    group_of = {name.split("::")[0]: group for group, names in groups.items() for name in names}
    counts = tally(final, group_of)
    for group in (*groups, *(g for g in counts if g not in groups)):
        report(pi_check="tests", arch=arch.name, group=group,
               files=len({name.split("::")[0] for name in groups.get(group, ())}),
               left_out=sum(group_of.get(node.split("::")[0].removeprefix("tests/")) == group
                            for node in left_out), **counts.get(group, {"passed": 0}))
    passed_on_retry = sorted(node for node in failed if final[node] == "passed")
    still_failing = sorted(node for node, outcome in final.items()
                           if outcome in ("failed", "errors"))
    report(pi_check="pytest", arch=arch.name, exit_status=status,
           seconds=round(time.monotonic() - started, 1), passed_on_retry=passed_on_retry,
           failing=still_failing)
    return (status in (0, 1) and not still_failing and bool(final)
            and all(counts.get(group, {}).get("passed") for group in groups))


def probe(argv: Sequence[str], **kwargs: Any) -> dict[str, Any]:
    """:mod:`tools.pi_probe`'s figures (its one JSON line on stdout)."""
    done = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE, text=True,
                          timeout=600, check=False, **kwargs)
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        return {"ok": False, "error": f"no figures (exit status {done.returncode})"}


def compare(arch: str, emulated: dict[str, Any], host: dict[str, Any]) -> None:
    """The emulated figures beside the host's, as ``make bench`` lines: ``baseline`` is the
    host's figure and ``ratio`` = emulated / host."""
    for key, unit in (("import_ms", "ms"), ("import_serve_ms", "ms"), ("startup_ms", "ms"),
                      ("idle_rss_mb", "MB"), ("idle_cpu_percent", "%"),
                      ("ops_per_second", "ops/s"), ("http_ops_per_second", "ops/s")):
        if key not in emulated or key not in host:
            continue  # a failed probe: its own line says why
        value, baseline = emulated[key], host[key]
        ratio = float(f"{value / baseline:.3g}") if baseline else None
        report(bench=f"pi.{arch}.{key}", value=value, unit=unit, baseline=baseline,
               ratio=ratio, where="qemu-user emulation", host=baseline)


def check_emulation(arch: Arch, root: Path) -> None:
    """The root's python3 runs here, emulated as ``arch``'s processor: else a clear error."""
    done = run(chroot_argv(root, ["/usr/bin/python3", "-c",
                                  "import platform; print(platform.machine())"], cwd="/"),
               check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    if done.returncode != 0 or done.stdout.strip() != arch.machine:
        raise CheckError(f"the {arch.name} root's python3 does not run as {arch.machine} "
                         f"through {arch.qemu} (exit status {done.returncode}: "
                         f"{done.stdout.strip()[-500:]!r}); binfmt_misc and qemu-user-static?")


def prepare(arch: Arch, roots: Path, mirror: str, wheel: Path | None, rebuild: bool) -> Path:
    """The root of ``arch``, built if need be and checked to run, with ``wheel`` and its
    dependencies installed."""
    root = ensure_root(arch, roots, mirror, rebuild)
    check_emulation(arch, root)
    if wheel is not None:
        install(root, arch, wheel)
    return root


def prepare_all(arches: Sequence[Arch], roots: Path, mirror: str, wheel: Path | None,
                rebuild: bool) -> list[Path]:
    """:func:`prepare` for every arch at once: a build downloads, then runs dpkg under
    emulation on one core, so two builds side by side take little longer than one."""
    for arch in arches:
        ensure_binfmt(arch)
    with ThreadPoolExecutor(max_workers=len(arches), thread_name_prefix="pi-check-root") as pool:
        futures = [pool.submit(prepare, arch, roots, mirror, wheel, rebuild) for arch in arches]
        return [future.result() for future in futures]


def test_arch(arch: Arch, root: Path, selection: str, workers: int | None) -> bool:
    """The tests of ``selection`` in the prepared, mounted root of ``arch``; whether they all
    passed."""
    lacking = lacking_in(root, REPO / "tests")
    groups = select_tests(selection, REPO / "tests", lacking)
    report(pi_check="selection", arch=arch.name, selection=selection,
           **{group: len(targets) for group, targets in groups.items()},
           left_out={**EXCLUDED_TESTS, **lacking})
    return run_tests(root, arch, groups, workers)


def check(arches: Sequence[Arch], roots: Sequence[Path], selection: str) -> bool:
    """Every architecture's tests at the same time (their emulated interpreters share the
    cores), then the probe on this host and in each root, one after the other so that each
    has the machine to itself; whether it all passed."""
    samples = ["--samples", str(PROBE_SAMPLES[selection])]
    with contextlib.ExitStack() as stack:
        for root in roots:
            stack.enter_context(mounted(root))
        pool = ThreadPoolExecutor(max_workers=len(arches), thread_name_prefix="pi-check-tests")
        # on an exception (SIGTERM too) the mounts' exits kill what runs in the roots, which
        # ends the pool's threads: do not wait for them before
        stack.callback(pool.shutdown, wait=False, cancel_futures=True)
        workers = workers_per_arch(len(arches), os.cpu_count())
        futures = [pool.submit(test_arch, arch, root, selection, workers)
                   for arch, root in zip(arches, roots, strict=True)]
        tested = [future.result() for future in futures]
        host = report(pi_check="probe", arch="host",
                      **probe([sys.executable, "-m", "tools.pi_probe", *samples], cwd=REPO))
        probed = [host.get("ok") is True]
        for arch, root in zip(arches, roots, strict=True):
            emulated = report(pi_check="probe", arch=arch.name, **probe(
                chroot_argv(root, ["/usr/bin/python3", "-P", "tools/pi_probe.py", *samples])))
            compare(arch.name, emulated, host)
            probed.append(emulated.get("ok") is True)
    return all(tested) and all(probed)


def stop_by_signal(signum: int, frame: object) -> None:
    """Turn SIGTERM or SIGINT into an exception, so the mounts and processes are cleaned up."""
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.pi_check", description=__doc__)
    parser.add_argument("--arch", action="append", choices=sorted(ARCHES),
                        help="repeatable; default: both")
    parser.add_argument("--roots", type=Path,
                        default=Path(os.environ.get("PI_ROOTS") or DEFAULT_ROOTS),
                        help=f"where the roots are kept (env PI_ROOTS; default {DEFAULT_ROOTS})")
    parser.add_argument("--mirror", default=os.environ.get("PI_MIRROR") or DEFAULT_MIRROR,
                        help=f"Debian mirror (env PI_MIRROR; default {DEFAULT_MIRROR})")
    parser.add_argument("--selection", choices=sorted(SELECTIONS),
                        default=os.environ.get("PI_CHECK") or DEFAULT_SELECTION,
                        help="the tests run in the roots (env PI_CHECK; default "
                             f"{DEFAULT_SELECTION}): " + "; ".join(
                                 f"{name}: {why}" for name, why in SELECTIONS.items()))
    parser.add_argument("--rebuild", action="store_true", help="rebuild the roots")
    parser.add_argument("--build-only", action="store_true", help="only build the roots")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root: debootstrap, chroot and mount")
    missing = [tool for tool in ("debootstrap", "chroot", "update-binfmts", "mount")
               if shutil.which(tool) is None]
    if missing:
        parser.error(f"missing {missing}: apt-get install debootstrap qemu-user-static "
                     "binfmt-support")
    arches = [ARCHES[name] for name in (args.arch or sorted(ARCHES))]
    # SIGTERM (a CI timeout) and SIGINT (also when a shell started us in the background, which
    # ignores it) end the run through the `finally`s: nothing left running or mounted
    signal.signal(signal.SIGTERM, stop_by_signal)
    signal.signal(signal.SIGINT, stop_by_signal)
    started = time.monotonic()
    try:
        if args.build_only:
            prepare_all(arches, args.roots, args.mirror, None, args.rebuild)
            return 0
        with tempfile.TemporaryDirectory(prefix="pi-check-wheel-") as out:
            wheel = build_wheel(Path(out))
            prepared = prepare_all(arches, args.roots, args.mirror, wheel, args.rebuild)
        ok = check(arches, prepared, args.selection)
    except (CheckError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        say(f"FAILED: {exc}")
        report(pi_check="done", ok=False, selection=args.selection, error=str(exc),
               seconds=round(time.monotonic() - started, 1))
        return 1
    report(pi_check="done", ok=ok, selection=args.selection,
           seconds=round(time.monotonic() - started, 1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

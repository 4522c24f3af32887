"""The pure logic of ``make pi-check`` (tools/pi_check.py): the commands it builds, the root's
stamp (a half-built root is rebuilt, a finished one reused), the wheel platform tags, the test
selection and the counts it reads back. ``make pi-check`` itself is the end-to-end test: CI
runs it (it needs root, debootstrap and qemu-user-static)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _load(name: str) -> ModuleType:
    """A module of tools/ by path (tools/ is run from the checkout, not installed)."""
    path = REPO_ROOT / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"pi_tools_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


if str(REPO_ROOT) not in sys.path:  # pi_check imports its sibling as tools.pi_core
    sys.path.insert(0, str(REPO_ROOT))
pi = _load("pi_check")
core = _load("pi_core")
ARM64, ARMHF = pi.ARCHES["arm64"], pi.ARCHES["armhf"]
MIRROR = "http://deb.debian.org/debian"


def test_debootstrap_builds_a_minimal_bookworm_root_with_python3() -> None:
    argv = pi.debootstrap_argv(ARMHF, Path("/cache/bookworm-armhf"), MIRROR)
    assert argv == ["debootstrap", "--variant=minbase", "--include=python3", "--arch=armhf",
                    "bookworm", "/cache/bookworm-armhf", MIRROR]
    assert ARM64.qemu == "qemu-aarch64" and ARMHF.qemu == "qemu-arm"


class Builds:
    """Stands for debootstrap: records each command and fills the directory; the first
    ``failures`` builds fail half-way, leaving a log as debootstrap does."""

    def __init__(self, failures: int = 0) -> None:
        self.commands: list[list[str]] = []
        self.failures = failures

    def __call__(self, argv: list[str]) -> None:
        self.commands.append(argv)
        target = Path(argv[-2])
        (target / "usr/bin").mkdir(parents=True)  # fails if the last attempt was not cleared
        (target / "usr/bin/python3").write_text("")
        if len(self.commands) <= self.failures:
            (target / "debootstrap").mkdir()
            (target / "debootstrap/debootstrap.log").write_text(
                f"attempt {len(self.commands)}: Couldn't download package libc6\n")
            raise subprocess.CalledProcessError(1, argv)


def test_a_finished_root_is_reused_and_a_half_built_one_rebuilt(tmp_path: Path) -> None:
    builds = Builds()
    root = pi.ensure_root(ARM64, tmp_path, MIRROR, rebuild=False, build=builds)
    assert root == tmp_path / "bookworm-arm64" and len(builds.commands) == 1
    assert pi.root_is_built(root, ARM64, MIRROR)
    pi.ensure_root(ARM64, tmp_path, MIRROR, rebuild=False, build=builds)
    assert len(builds.commands) == 1  # cached

    (root / pi.STAMP).unlink()  # as if the build had been interrupted before its end
    (root / "leftover").write_text("half-built")
    pi.ensure_root(ARM64, tmp_path, MIRROR, rebuild=False, build=builds)
    assert len(builds.commands) == 2 and not (root / "leftover").exists()

    pi.ensure_root(ARM64, tmp_path, MIRROR, rebuild=True, build=builds)
    assert len(builds.commands) == 3


def test_a_failed_build_is_tried_once_more_from_scratch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """A fresh CI machine's first download can fail: one more attempt, in a cleared folder."""
    builds = Builds(failures=1)
    root = pi.ensure_root(ARM64, tmp_path, MIRROR, rebuild=False, build=builds)
    assert len(builds.commands) == 2 and pi.root_is_built(root, ARM64, MIRROR)
    assert not (root / "debootstrap").exists()  # the second attempt started from nothing
    assert "attempt 1 of 2" in capsys.readouterr().err


def test_a_failed_build_leaves_no_stamp_so_the_next_run_builds_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    builds = Builds(failures=2)
    with pytest.raises(pi.CheckError, match="debootstrap could not build the armhf root"):
        pi.ensure_root(ARMHF, tmp_path, MIRROR, rebuild=False, build=builds)
    assert len(builds.commands) == 2  # tried twice, then fails: never a skipped check
    err = capsys.readouterr().err
    assert "attempt 2: Couldn't download package libc6" in err  # debootstrap's log, shown
    root = tmp_path / "bookworm-armhf"
    assert (root / "usr/bin/python3").exists() and not pi.root_is_built(root, ARMHF, MIRROR)
    builds = Builds()
    pi.ensure_root(ARMHF, tmp_path, MIRROR, rebuild=False, build=builds)
    assert len(builds.commands) == 1 and pi.root_is_built(root, ARMHF, MIRROR)


def test_a_root_built_from_another_mirror_or_for_another_arch_is_not_reused(
    tmp_path: Path,
) -> None:
    pi.ensure_root(ARM64, tmp_path, MIRROR, rebuild=False, build=Builds())
    root = tmp_path / "bookworm-arm64"
    assert not pi.root_is_built(root, ARM64, "http://mirror.example/debian")
    assert not pi.root_is_built(root, ARMHF, MIRROR)
    assert not pi.root_is_built(tmp_path / "missing", ARM64, MIRROR)


def test_platform_tags_cover_every_manylinux_that_runs_on_bookworm_and_nothing_newer() -> None:
    tags = pi.platform_tags("armv7l")
    assert tags[0] == "manylinux_2_36_armv7l" and tags[-1] == "manylinux2014_armv7l"
    assert "manylinux_2_17_armv7l" in tags and "manylinux_2_28_armv7l" in tags
    assert "manylinux_2_37_armv7l" not in tags and "manylinux_2_16_armv7l" not in tags
    assert all(tag.endswith("_armv7l") for tag in tags) and len(tags) == len(set(tags)) == 21
    assert pi.platform_tags("aarch64", (2, 28))[0] == "manylinux_2_28_aarch64"


def test_pip_installs_wheels_only_for_the_pi_into_the_target() -> None:
    argv = pi.pip_target_argv("python3", Path("/r/opt/pi-check/deps"), "aarch64", ["flask>=3"])
    assert argv[:3] == ["python3", "-m", "pip"] and argv[-1] == "flask>=3"
    assert argv[argv.index("--target") + 1] == "/r/opt/pi-check/deps"
    assert "--only-binary=:all:" in argv and "--no-deps" not in argv
    assert argv[argv.index("--python-version") + 1] == "3.11"
    assert argv[argv.index("--implementation") + 1] == "cp"
    platforms = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--platform"]
    assert platforms == pi.platform_tags("aarch64")
    assert "--no-deps" in pi.pip_target_argv("python3", Path("/t"), "armv7l", ["x.whl"],
                                             no_deps=True)


def test_requirements_are_the_pi_extras_and_the_test_tools_from_setup_cfg() -> None:
    arm64 = pi.requirements(REPO_ROOT / "setup.cfg", ARM64.extras, pi.TEST_TOOLS)
    armhf = pi.requirements(REPO_ROOT / "setup.cfg", ARMHF.extras, pi.TEST_TOOLS)
    names = {line.split(">")[0].split("<")[0].split("=")[0] for line in armhf}
    assert {"transitions", "flask", "waitress", "pyserial", "pymodbus", "prometheus-client",
            "pytest", "hypothesis", "requests"} <= names
    assert "mcp" not in names  # no cffi wheel on armhf
    setup = REPO_ROOT / "setup.cfg"
    mcp_only = set(pi.requirements(setup, ["mcp"], [])) - set(pi.requirements(setup, [], []))
    assert set(arm64) - set(armhf) == mcp_only != set()  # the mcp extra, on arm64 only
    assert any(line.startswith("pytest>=") for line in arm64)  # the dev extra's pin
    with pytest.raises(KeyError, match="no extra 'gpu'"):
        pi.requirements(REPO_ROOT / "setup.cfg", ["gpu"], [])


def test_the_dependencies_are_reinstalled_only_when_their_list_changes() -> None:
    key = pi.deps_key(["b", "a"], "aarch64")
    assert key == pi.deps_key(["a", "b"], "aarch64")
    assert key != pi.deps_key(["a", "b", "c"], "aarch64")
    assert key != pi.deps_key(["a", "b"], "armv7l")


def test_the_test_selection_splits_core_and_bridges_and_leaves_out_what_the_root_lacks() -> None:
    lacking = {"test_http_schemathesis.py": ["schemathesis"], "test_mcp.py": ["mcp_support"]}
    core, bridges = pi.test_files(REPO_ROOT / "tests", lacking)
    every = {path.name for path in (REPO_ROOT / "tests").glob("test_*.py")}
    assert set(core) | set(bridges) | set(lacking) | set(pi.EXCLUDED_TESTS) == every
    assert not set(core) & set(bridges) and not (set(core) | set(bridges)) & set(lacking)
    assert {"test_bridge_modbus.py", "test_bridge_serial.py", "test_serial_protocol.py"} <= set(
        bridges)
    assert {"test_journal.py", "test_dispatcher_operations.py", "test_http_api.py"} <= set(core)


CORE_RULE_MODULE = '''
import subprocess
import sys
import pytest
from hypothesis import given, strategies as st
from operation_dispatcher import OperationDispatcher
from operation_dispatcher.journal import Journal

CORE_CHILD = "import sys\\nfrom operation_dispatcher import OperationDispatcher\\n"
HTTP_CHILD = "from operation_dispatcher.http import create_app\\n"

def in_a_child(code):
    return subprocess.run([sys.executable, "-c", code], check=True)

def with_make():
    subprocess.run(["make", "lint"], check=True)

@pytest.fixture
def served(make_client):
    return make_client()

@pytest.fixture
def journal(tmp_path):
    return Journal(tmp_path / "j.db")

def test_core(journal, tmp_path):
    OperationDispatcher("r", journal=tmp_path / "x.db")

def test_core_child():
    in_a_child(CORE_CHILD)

def test_http_child():
    in_a_child(HTTP_CHILD)

def test_runs_make():
    with_make()

def test_own_fixture_serves(served):
    pass

def test_conftest_simulator(make_sim):
    pass

def test_imports_in_its_body():
    from operation_dispatcher.mqtt import MqttLink

def test_network():
    import socket

def test_loads_a_file():
    import importlib.util
    importlib.util.spec_from_file_location("x", "tools/x.py")

def test_os_system():
    import os
    os.system("ls")

@given(st.integers())
def test_property(n):
    pass

class TestGroup:
    def test_a(self):
        pass

    def test_b(self, make_api):
        pass

def helper_never_used():
    subprocess.run(["mosquitto"])
'''


def test_a_core_test_reaches_only_the_core_library_in_its_own_process() -> None:
    """tools/pi_core.py's rule on a made-up module: each test judged by what it reaches."""
    verdicts = core.verdicts(CORE_RULE_MODULE)
    assert [name for name, reach in verdicts.items() if reach.core] == [
        "test_core", "test_core_child"]  # helper_never_used's mosquitto reaches no test
    assert verdicts["test_http_child"].imports == [
        "imports operation_dispatcher.http (a front end)"]  # the child's code is judged too
    (make,) = verdicts["test_runs_make"].programs
    assert make.startswith("starts a program (subprocess.run, line ")
    assert verdicts["test_own_fixture_serves"].fixtures == ["uses the fixture make_client"]
    assert verdicts["test_conftest_simulator"].fixtures == ["uses the fixture make_sim"]
    assert verdicts["test_imports_in_its_body"].imports == [
        "imports operation_dispatcher.mqtt (a front end)"]
    assert verdicts["test_network"].imports == ["imports socket (network)"]
    (loads,) = verdicts["test_loads_a_file"].imports
    assert loads.startswith("loads a module at run time (spec_from_file_location, line ")
    (system,) = verdicts["test_os_system"].programs
    assert system.startswith("starts a program (os.system, line ")
    assert verdicts["test_property"].properties == ["a property test (hypothesis: given)"]
    assert verdicts["TestGroup"].fixtures == ["uses the fixture make_api"]  # the class as one
    assert not verdicts["test_runs_make"].ci_bridge and not verdicts["test_property"].ci_bridge
    assert verdicts["test_own_fixture_serves"].ci_bridge  # a bridge test may serve


def test_what_every_test_of_a_module_runs_counts_for_each() -> None:
    """Imports at the top, code run on import, autouse fixtures: they reach every test."""
    top = "import pytest\nfrom firmware_bridges.modbus import ModbusBridge\ndef test_a():\n    pass\n"
    assert core.verdicts(top)["test_a"].imports == ["imports firmware_bridges.modbus"]
    on_import = ("import subprocess\nVERSION = subprocess.check_output(['git', 'describe'])\n"
                 "def test_a():\n    pass\n")
    assert core.verdicts(on_import)["test_a"].programs
    autouse = ("import pytest\n@pytest.fixture(autouse=True)\ndef _api(make_api):\n"
               "    yield\ndef test_a():\n    pass\n")
    assert core.verdicts(autouse)["test_a"].fixtures == ["uses the fixture make_api"]
    usefixtures = ("import pytest\n@pytest.mark.usefixtures('serve')\ndef test_a():\n"
                   "    pass\ndef test_b(request):\n    request.getfixturevalue('make_broker')\n")
    verdicts = core.verdicts(usefixtures)
    assert verdicts["test_a"].fixtures == ["uses the fixture serve"]
    assert verdicts["test_b"].fixtures == ["uses the fixture make_broker"]


def test_the_ci_selection_is_the_core_and_the_bridges_against_the_simulators() -> None:
    """On this suite: what the CI-sized pi-check runs, against the full selection."""
    tests = REPO_ROOT / "tests"
    lacking = {"test_http_schemathesis.py": ["schemathesis"]}
    full = pi.select_tests("full", tests, lacking)
    ci = pi.select_tests("ci", tests, lacking)
    assert full == dict(zip(("core", "bridges"), pi.test_files(tests, lacking), strict=True))
    for group in ("core", "bridges"):  # the CI selection is part of the full one
        assert {target.split("::")[0] for target in ci[group]} <= set(full[group])
        assert all("::" in target for target in ci[group])
    files = {target.split("::")[0] for target in ci["core"]}
    assert {"test_queue.py", "test_journal.py", "test_dispatcher_operations.py",
            "test_models.py", "test_signals.py"} <= files
    assert not files & {"test_http_api.py", "test_mcp.py", "test_mqtt_config.py", "test_cli.py",
                        "test_dashboard_http.py", "test_queue_properties.py"}
    assert "test_models.py::test_the_http_limits_are_the_cores" not in ci["core"]  # http
    assert "test_forecast.py::test_forecast_invariants" not in ci["core"]  # a property test
    bridges = {target.split("::")[0] for target in ci["bridges"]}
    assert {"test_bridge_modbus.py", "test_bridge_serial.py", "test_bridge_contract.py",
            "test_serial_protocol.py"} <= bridges
    assert "test_bridge_serial.py::test_simulator_command_line" not in ci["bridges"]
    assert "test_bridge_serial.py::test_a_device_inventing_signal_names_is_bounded_by_max_signals" \
        in ci["bridges"]
    with pytest.raises(ValueError, match="no selection 'most'"):
        pi.select_tests("most", tests, lacking)


@pytest.mark.parametrize(("arches", "cores", "workers"), [
    (2, 2, None), (2, 1, None), (2, None, None), (1, 2, 2), (2, 4, 2), (2, 8, 4), (1, 1, None)])
def test_the_cores_are_shared_out_between_the_architectures(
    arches: int, cores: int | None, workers: int | None,
) -> None:
    """One pytest process per architecture unless each gets two cores or more (xdist's
    workers each import every test module again, emulated)."""
    assert pi.workers_per_arch(arches, cores) == workers


def test_a_test_file_is_left_out_when_what_it_imports_fails_here(tmp_path: Path) -> None:
    """tools/pi_imports.py, as pi-check runs it in a root: real imports, helpers followed."""
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "helper_ok.py").write_text("import json\n")
    (tests / "helper_needs_tool.py").write_text("import no_such_dev_tool\n")
    (tests / "test_fine.py").write_text(
        "import os\nimport helper_ok\nfrom operation_dispatcher import models\n"
        "def test_x():\n    import no_such_module  # at run time: not needed to collect\n")
    (tests / "test_tool.py").write_text("import os, no_such_dev_tool.sub\n")
    (tests / "test_helper.py").write_text("from helper_needs_tool import thing\n")
    (tests / "test_extra.py").write_text("from operation_dispatcher.no_such_extra import x\n")
    files = [f"tests/{name}" for name in ("test_fine.py", "test_tool.py", "test_helper.py",
                                         "test_extra.py")]
    done = subprocess.run([sys.executable, "-P", str(REPO_ROOT / "tools/pi_imports.py"), *files],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout) == {
        "test_tool.py": ["no_such_dev_tool.sub"],
        "test_helper.py": ["helper_needs_tool"],
        "test_extra.py": ["operation_dispatcher.no_such_extra"],
    }
    imports = _load("pi_imports")
    assert imports.top_level_imports("import a.b, c\nfrom d.e import f\nfrom . import g\n"
                                     "import a.b\nif x:\n    import h\n") == ["a.b", "c", "d.e"]


def test_outcomes_and_counts_are_read_from_a_real_pytest_report(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_core.py").write_text(
        "import pytest\n"
        "def test_a(): pass\n"
        "@pytest.mark.parametrize('n', [1, 2])\n"
        "def test_b(n): pass\n"
        "def test_c(): assert False\n"
        "@pytest.fixture\n"
        "def broken(): raise RuntimeError\n"
        "def test_d(broken): pass\n"
        "@pytest.fixture\n"
        "def bad_teardown():\n    yield\n    raise RuntimeError\n"
        "def test_e(bad_teardown): assert False\n"
        "class TestGroup:\n    def test_f(self): pass\n"
    )
    (tests / "test_bridge.py").write_text("def test_g(): pass\n")
    (tests / "test_unlisted.py").write_text("import no_such_module\n")
    xml = tmp_path / "report.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    "--continue-on-collection-errors", f"--junitxml={xml}", "tests"],
                   cwd=tmp_path, capture_output=True, timeout=60, check=False)
    outcomes = pi.junit_outcomes(xml)
    assert outcomes == {
        "tests/test_core.py::test_a": "passed",
        "tests/test_core.py::test_b[1]": "passed",
        "tests/test_core.py::test_b[2]": "passed",
        "tests/test_core.py::test_c": "failed",
        "tests/test_core.py::test_d": "errors",
        "tests/test_core.py::test_e": "failed",  # failed, then its teardown erred
        "tests/test_core.py::TestGroup::test_f": "passed",
        "tests/test_bridge.py::test_g": "passed",
        "tests.test_unlisted": "errors",  # could not be collected
    }
    groups = {"test_core.py": "core", "test_bridge.py": "bridges"}
    assert pi.tally(outcomes, groups) == {
        "core": {"passed": 4, "failed": 2, "errors": 1, "skipped": 0},
        "bridges": {"passed": 1, "failed": 0, "errors": 0, "skipped": 0},
        "other": {"passed": 0, "failed": 0, "errors": 1, "skipped": 0},
    }
    # the node ids are the ones pytest takes back: a retry runs exactly the failed ones
    retry = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "tests/test_core.py::test_c", "tests/test_core.py::TestGroup::test_f",
                            "tests/test_core.py::test_b[2]"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert "1 failed, 2 passed" in retry.stdout


def test_mounts_inside_the_root_are_found_deepest_first() -> None:
    mounts = (
        "proc /proc proc rw 0 0\n"
        "proc /cache/bookworm-arm64/proc proc rw 0 0\n"
        "devpts /cache/bookworm-arm64/dev/pts devpts rw 0 0\n"
        "proc /cache/bookworm-arm64-old/proc proc rw 0 0\n"
        "tmpfs /cache/bookworm\\040arm64/tmp tmpfs rw 0 0\n"
    )
    assert pi.mounts_under(Path("/cache/bookworm-arm64"), mounts) == [
        "/cache/bookworm-arm64/dev/pts", "/cache/bookworm-arm64/proc"]
    assert pi.mounts_under(Path("/cache/bookworm arm64"), mounts) == [
        "/cache/bookworm arm64/tmp"]
    assert pi.mounts_under(Path("/elsewhere"), mounts) == []


def test_commands_in_the_root_get_a_clean_environment_without_pythonpath() -> None:
    argv = pi.chroot_argv(Path("/cache/r"), ["/usr/bin/python3", "-m", "pytest"])
    assert argv[:5] == ["chroot", "/cache/r", "/usr/bin/env", "-i", "--chdir=/opt/pi-check/src"]
    assert not [arg for arg in argv if arg.startswith("PYTHONPATH=")]  # tests set their own
    assert argv[-3:] == ["/usr/bin/python3", "-m", "pytest"]
    assert pi.PTH.startswith("usr/local/lib/python3.11/dist-packages/")  # bookworm's python3


def test_binfmt_entries_must_be_enabled_with_the_fix_binary_flag(tmp_path: Path) -> None:
    (tmp_path / "status").write_text("enabled\n")
    entry = tmp_path / "qemu-aarch64"
    entry.write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n"
                     "flags: PF\noffset 0\n")
    pi.ensure_binfmt(ARM64, tmp_path)  # nothing to do
    entry.write_text("enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: P\noffset 0\n")
    with pytest.raises(RuntimeError, match="F flag"):
        pi.ensure_binfmt(ARM64, tmp_path)  # qemu would have to be inside the root


def test_emulated_figures_are_printed_beside_the_hosts_with_their_ratio(
    capsys: pytest.CaptureFixture[str],
) -> None:
    host = {"import_ms": 50.0, "idle_rss_mb": 40.0, "ops_per_second": 10.0}
    emulated = {"import_ms": 500.0, "idle_rss_mb": 60.0, "ops_per_second": 8.0}
    pi.compare("armhf", emulated, host)
    lines = {line["bench"]: line for line in map(json.loads, capsys.readouterr().out.splitlines())}
    assert set(lines) == {"pi.armhf.import_ms", "pi.armhf.idle_rss_mb", "pi.armhf.ops_per_second"}
    assert lines["pi.armhf.import_ms"]["ratio"] == 10.0
    assert lines["pi.armhf.import_ms"]["host"] == 50.0
    assert lines["pi.armhf.ops_per_second"]["ratio"] == 0.8


def test_processes_are_found_by_their_root_and_the_hosts_are_never_killed(tmp_path: Path) -> None:
    assert os.getpid() in pi.processes_in(Path("/"))  # ours runs in the host's root
    assert pi.processes_in(tmp_path) == []
    assert pi.kill_left_behind(tmp_path) == []
    with pytest.raises(ValueError, match="root is /"):
        pi.kill_left_behind(Path("/"))


def test_pytest_in_the_root_runs_the_quick_tests_of_the_installed_wheel() -> None:
    argv = pi.pytest_argv(["tests/test_queue.py", "tests/test_models.py"], pi.JUNIT, 2)
    assert argv[:3] == ["/usr/bin/python3", "-P", "-m"]  # -P: not the sources in the cwd
    assert argv[argv.index("-m", 3) + 1] == "not slow"
    assert argv[argv.index("-p") + 1] == "pi_select"
    assert argv[argv.index("-n") + 1] == "2"
    assert "--continue-on-collection-errors" in argv
    assert f"--junitxml={pi.JUNIT}" in argv
    assert argv[-2:] == ["tests/test_queue.py", "tests/test_models.py"]
    assert f"PI_CHECK_DESELECTED={pi.DESELECTED}" in pi.PYTEST_ENV
    retry = pi.pytest_argv(["tests/test_queue.py::test_x[1]"], pi.JUNIT_RETRY, None)
    assert "-n" not in retry and retry[retry.index("no:xdist") - 1] == "-p"  # one process
    assert f"--junitxml={pi.JUNIT_RETRY}" in retry and retry[-1] == "tests/test_queue.py::test_x[1]"


def test_the_tests_that_start_serve_are_left_out_and_listed(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "import pytest\n"
        "@pytest.fixture\n"
        "def serve():\n    return 'a serve subprocess'\n")
    (tmp_path / "test_one.py").write_text(
        "def test_plain(): pass\n"
        "def test_with_serve(serve): pass\n")
    (tmp_path / "test_two.py").write_text(
        "class Served: ...\n"
        "def test_in_a_module_using_served(): pass\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests/test_bridge_serial.py").write_text(
        "import pytest\n"
        "@pytest.mark.parametrize('n', [1, 2])\n"
        "def test_a_stalled_line_does_not_stall_the_other_subscribers(n): pass\n"
        "def test_another(): pass\n")
    listed = tmp_path / "deselected.json"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "tools"),
           "PI_CHECK_DESELECTED": str(listed)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "pi_select", "test_one.py", "test_two.py",
                           "tests/test_bridge_serial.py"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout
    assert "2 passed, 4 deselected" in done.stdout
    assert json.loads(listed.read_text()) == [
        "test_one.py::test_with_serve", "test_two.py::test_in_a_module_using_served",
        "tests/test_bridge_serial.py::test_a_stalled_line_does_not_stall_the_other_subscribers[1]",
        "tests/test_bridge_serial.py::test_a_stalled_line_does_not_stall_the_other_subscribers[2]",
    ]


def test_every_test_named_timing_bound_or_needing_a_module_exists() -> None:
    select = _load("pi_select")
    assert select.TIMING_BOUND and select.NEEDS_MODULE  # each with its reason or module
    named = {**select.TIMING_BOUND, **select.CHECKOUT_ONLY, **select.NEEDS_MODULE}
    for node_id, why in named.items():
        path, name = node_id.split("::")
        assert f"def {name}(" in (REPO_ROOT / path).read_text(), node_id
        assert why


@pytest.mark.slow
def test_the_probe_measures_serve_here_as_it_does_in_the_roots() -> None:
    """tools/pi_probe.py on this host: every figure pi-check compares, from a real ``serve``
    with the PLC simulator and a second one without a bridge (a 1 s idle window here)."""
    done = subprocess.run([sys.executable, "-m", "tools.pi_probe", "--idle-seconds", "1",
                           "--samples", "1"],
                          cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0 and figures["ok"] is True, figures
    assert figures["outcomes"] == ["SUCCESS"] and figures["serve_exit_status"] == 0
    for key in ("import_ms", "import_serve_ms", "startup_ms", "idle_rss_mb",
                "ops_per_second", "http_ops_per_second"):
        assert 0 < figures[key] < 1e6, key
    assert 0 <= figures["idle_cpu_percent"] < 100
    assert figures["import_samples"] == 1


@pytest.mark.parametrize("samples", ["0", "-1", "10", "1.5", "nan", "three"])
def test_the_probe_refuses_a_number_of_samples_out_of_range(samples: str) -> None:
    done = subprocess.run([sys.executable, "-m", "tools.pi_probe", "--samples", samples],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2 and "--samples" in done.stderr and done.stdout == ""


@pytest.mark.parametrize("seconds", ["0", "-1", "nan", "inf", "61", "five"])
def test_the_probe_refuses_an_idle_window_out_of_range(seconds: str) -> None:
    done = subprocess.run([sys.executable, "-m", "tools.pi_probe", "--idle-seconds", seconds],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2 and "--idle-seconds" in done.stderr and done.stdout == ""


def test_ci_runs_pi_check_after_the_soak_and_installs_what_it_needs() -> None:
    """.ci/run: the three Debian packages pi-check needs with the others (one apt-get update),
    then `make pi-check` after the suite and the soak, in a script that stops at a failure."""
    script = (REPO_ROOT / ".ci/run").read_text(encoding="utf-8")
    lines = [line.strip() for line in script.splitlines() if not line.lstrip().startswith("#")]
    assert "set -euo pipefail" in lines
    needed = {line.split()[1] for line in lines if line.startswith("need ")}
    assert {"debootstrap", "qemu-user-static", "binfmt-support"} <= needed
    assert sum("apt-get update" in line for line in lines) == 1
    order = [line for line in lines if line.startswith("make ")]
    assert order == ["make test", "make soak DURATION=60", "make pi-check"]
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    assert "PI_CHECK ?= ci\n" in makefile and "PI_CHECK=full" in makefile
    assert pi.DEFAULT_SELECTION == "ci" and set(pi.SELECTIONS) == {"ci", "full"}

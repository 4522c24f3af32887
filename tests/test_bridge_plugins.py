"""Bridge kinds are plug-ins (issue 11, item 7): found through the entry-point group
``operation_dispatcher.bridges``, which ``firmware_bridges`` declares for its own kinds; the core
imports no bridge module by name; a third-party kind, installed from a tiny package made in a
temporary directory, runs from a config and its signals reach the dispatcher.

The third-party package is a module plus a ``*.dist-info`` with ``entry_points.txt`` (what pip
would install) in ``tmp_path``, put on ``PYTHONPATH`` of a subprocess, so nothing leaks into
this interpreter's ``sys.path``, ``sys.modules`` or entry points.
"""

from __future__ import annotations

import ast
import configparser
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from served import Served

from firmware_bridges.modbus import ModbusBridge
from firmware_bridges.serial_line import SerialLineBridge
from firmware_bridges.simulators.demo_plc import DemoPlc
from operation_dispatcher import OperationDispatcher
from operation_dispatcher.bridges import BRIDGE_GROUP, bridge_errors, bridge_kinds
from operation_dispatcher.demo import DEMO_DEVICE_GROUP, demo_device_for

REPO_ROOT = Path(__file__).resolve().parent.parent
CORE = REPO_ROOT / "operation_dispatcher"

#: a third-party bridge kind: a tank whose level it reports as ``<name>.level``
ACME_BRIDGE = '''
from firmware_bridges.base import BaseBridge
from operation_dispatcher.errors import ValidationError


class AcmeBridge(BaseBridge):
    """A tank: reports ``level``; takes ``executor`` only to show the one-executor rule."""

    kind = "acme"
    poll_interval = 0.02

    def __init__(self, dispatcher, name, *, level=7, executor=False, max_age_seconds=None):
        if type(level) is not int or not 0 <= level <= 100:
            raise ValidationError("level", f"must be an integer 0..100, got {level!r}")
        if level == 13:
            raise ValueError("unlucky level")  # not a ValidationError: still no traceback
        super().__init__(dispatcher, name, max_age_seconds=max_age_seconds)
        self.level = level
        self.executor = executor

    @property
    def endpoint(self):
        return "acme://tank"

    def _connect(self):
        pass

    def _poll_once(self):
        self.set_signal("level", self.level)
'''


def make_package(root: Path, dist: str, entries: dict[str, dict[str, str]], modules: dict[str, str]) -> None:
    """What ``pip install`` leaves in site-packages: the modules and a dist-info naming the
    entry points (``{group: {name: "module:attr"}}``)."""
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in names.items())
        for group, names in entries.items()
    ))


@pytest.fixture
def acme(tmp_path: Path) -> dict[str, str]:
    """The acme bridge package installed into ``tmp_path/site``: the env that finds it."""
    site = tmp_path / "site"
    site.mkdir()
    make_package(site, "acme-bridge", {BRIDGE_GROUP: {"acme": "acme_bridge:AcmeBridge"}},
                 {"acme_bridge": ACME_BRIDGE})
    return {"PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}


def check_config(path: Path, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "operation_dispatcher", "check-config", str(path)],
        cwd=cwd, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=60,
    )


# ------------------------------------------------------------------ the core names no bridge


def imported_modules(path: Path) -> list[str]:
    """Every module an ``import`` statement of ``path`` names (also inside functions)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_the_core_imports_no_bridge_module_by_name() -> None:
    offenders = {
        str(path.relative_to(REPO_ROOT)): name
        for path in CORE.rglob("*.py")
        for name in imported_modules(path)
        if name.split(".")[0] == "firmware_bridges"
    }
    assert offenders == {}


def test_firmware_bridges_declares_its_kinds_as_entry_points() -> None:
    setup = configparser.ConfigParser()
    setup.read(REPO_ROOT / "setup.cfg")
    declared = setup["options.entry_points"][BRIDGE_GROUP].split()
    assert declared == ["modbus", "=", "firmware_bridges.modbus:ModbusBridge",
                        "serial", "=", "firmware_bridges.serial_line:SerialLineBridge"]
    installed = {ep.name: ep.load() for ep in entry_points(group=BRIDGE_GROUP)}
    assert installed == {"modbus": ModbusBridge, "serial": SerialLineBridge}  # .venv is current
    assert [kind.provider for [kind] in bridge_kinds().values()] == ["operation-dispatcher"] * 2
    demos = {ep.name: ep.value for ep in entry_points(group=DEMO_DEVICE_GROUP)}
    assert demos == {"modbus": "firmware_bridges.simulators.demo_plc:simulated_plc",
                     "serial": "firmware_bridges.simulators.demo_serial:simulated_serial_device"}
    import firmware_bridges.config

    assert not hasattr(firmware_bridges.config, "BRIDGE_TYPES")  # no fixed table of kinds


def test_an_unknown_type_names_the_installed_kinds() -> None:
    assert bridge_errors([{"type": "acme", "name": "tank"}]) == [
        "bridges[0].type: must be one of 'modbus', 'serial', got 'acme'"
    ]


# ------------------------------------------------------------------ a third-party kind


def wait_json(server: Served, path: str, predicate: Callable[[Any], bool]) -> Any:
    """GET ``path`` until ``predicate(json)`` holds (an HTTP resource: nothing to block on)."""
    deadline = time.monotonic() + 15
    while not predicate(body := server.get(path).json()):
        assert time.monotonic() < deadline, body
        time.sleep(0.02)
    return body


def test_a_third_party_kind_runs_from_a_config_and_its_signals_reach_the_dispatcher(
    serve: Callable[..., Served], acme: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "tank.toml"
    config.write_text('[[bridges]]\ntype = "acme"\nname = "tank"\nlevel = 42\n')
    assert check_config(config, acme, tmp_path).stdout == f"{config}: OK\n"
    server = serve("--config", str(config), "--journal", ":memory:", env=acme)
    [bridge] = server.get("/bridges").json()
    assert (bridge["name"], bridge["kind"], bridge["endpoint"]) == ("tank", "acme", "acme://tank")
    added = server.post("/operations/add", json=[{"payload": {}, "release_conditions": {"tank.level": 42}}])
    assert added.status_code == 201, added.text
    op_id = added.json()[0]["operation"]["id"]
    # the dispatcher starts it only once the bridge's signal holds (no approval callback: at once)
    body = wait_json(server, f"/operations/{op_id}", lambda b: b["operation"]["state"] == "RUNNING")
    assert body["operation"]["state"] == "RUNNING"
    signals = {s["name"]: s["value"] for s in server.get("/signals").json()}
    assert signals["tank.level"] == 42 and signals["tank.online"] is True
    status, out, err = server.stop()
    assert status == 0, err


def test_a_third_party_kind_is_checked_like_the_own_kinds(acme: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        '[[bridges]]\ntype = "acme"\nname = "tank"\nlevel = 101\n'
        '[[bridges]]\ntype = "acme"\nname = "tank2"\ncolour = "red"\n'
        '[[bridges]]\ntype = "acme"\nname = "pump"\nexecutor = true\n'
        '[[bridges]]\ntype = "serial"\nname = "mcu"\nurl = "loop://"\nexecutor = true\n'
        '[[bridges]]\ntype = "valve"\nname = "v"\n'
        '[[bridges]]\ntype = "acme"\nname = "tank3"\nlevel = 13\n'
    )
    done = check_config(config, acme, tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == [f"{config}: {line}" for line in (
        "bridges[0].level: must be an integer 0..100, got 101",
        "bridges[1].colour: unknown key for a acme bridge (known: name, level, executor, max_age_seconds)",
        "bridges[4].type: must be one of 'acme', 'modbus', 'serial', got 'valve'",
        "bridges[5]: cannot be built: ValueError: unlucky level",
        "bridges[3].executor: only one bridge may run the machine's jobs, "
        "but bridges[2] ('pump') and bridges[3] ('mcu') both have an executor",
    )]


def test_a_doubtful_plug_in_is_refused_saying_why(acme: dict[str, str], tmp_path: Path) -> None:
    """Fail safe: a kind declared twice (which class would run the machine?), a plug-in that
    cannot be imported and an object that is not a bridge are config errors, not tracebacks."""
    site = Path(acme["PYTHONPATH"])
    make_package(site, "rogue-bridges", {BRIDGE_GROUP: {
        "modbus": "rogue:Modbus", "broken": "rogue_broken:Bridge", "thing": "rogue:thing",
    }}, {"rogue": "class Modbus:\n    pass\n\ndef thing(*args):\n    return None\n",
         "rogue_broken": "raise RuntimeError('firmware 2.0 required')\n"})
    config = tmp_path / "doubt.toml"
    config.write_text('[[bridges]]\ntype = "modbus"\nname = "plc"\n'
                      '[[bridges]]\ntype = "broken"\nname = "b"\n'
                      '[[bridges]]\ntype = "thing"\nname = "t"\n')
    done = check_config(config, acme, tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.splitlines() == [f"{config}: {line}" for line in (
        "bridges[0].type: 'modbus' is declared by more than one installed package "
        "(firmware_bridges.modbus:ModbusBridge from operation-dispatcher, rogue:Modbus from "
        "rogue-bridges): uninstall all but one",
        "bridges[1].type: the 'broken' bridge (rogue_broken:Bridge from rogue-bridges) cannot be "
        "loaded: RuntimeError: firmware 2.0 required",
        "bridges[2].type: the 'thing' bridge (rogue:thing from rogue-bridges) is not a bridge "
        "class (it needs start, stop, status methods)",
    )]


# ------------------------------------------------------------------ the demo's device


def test_the_demo_finds_its_plc_through_the_plug_in(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    executor = {"program_register": 0, "start_coil": 0, "done_coil": 1, "error_coil": 2}
    reader = ModbusBridge(None, "meter", "127.0.0.1", 5020)  # type: ignore[arg-type]
    remote = ModbusBridge(None, "far", "10.0.0.9", 5020, executor=executor)  # type: ignore[arg-type]
    assert demo_device_for([reader, remote], cycle_time=0.5) is None  # no executor; not loopback
    plc = ModbusBridge(make_dispatcher(), "plc", "127.0.0.1", 5020, executor=executor)
    device = demo_device_for([reader, plc], cycle_time=0.5)
    assert isinstance(device, DemoPlc)
    assert (device.release_signal, device.online_signal) == ("plc.ready", "plc.online")
    assert device.payload(3, False) == {"program": 3} and device.payload(3, True) == {"program": 13}


def test_the_demo_runs_the_executor_device_and_a_serial_panel_beside_it(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    """examples/cell.toml: the PLC runs the jobs, the signal-only serial panel is simulated too;
    a serial port that is not a loopback socket is never simulated."""
    from firmware_bridges.simulators.demo_serial import DemoSerialDevice
    from operation_dispatcher.demo import demo_devices_for

    dispatcher = make_dispatcher()
    executor = {"program_register": 0, "start_coil": 0, "done_coil": 1, "error_coil": 2}
    panel = SerialLineBridge(dispatcher, "panel", "socket://127.0.0.1:7001")
    real_port = SerialLineBridge(dispatcher, "mcu", "/dev/ttyUSB0")
    plc = ModbusBridge(dispatcher, "plc", "127.0.0.1", 5020, executor=executor)
    devices = demo_devices_for([panel, real_port, plc], cycle_time=0.5)
    assert [type(d) for d in devices] == [DemoPlc, DemoSerialDevice]  # executor first
    assert [d.runs_jobs for d in devices] == [True, False]
    assert devices[1].release_signal == "panel.door_closed"


def test_a_broken_demo_device_plug_in_stops_the_demo_saying_why(
    acme: dict[str, str], tmp_path: Path
) -> None:
    """The demo asks ``operation_dispatcher.demo_devices`` for a device of each bridge's kind;
    a plug-in that fails there ends ``serve --demo`` with exit 1 and one line, no traceback."""
    make_package(Path(acme["PYTHONPATH"]), "acme-demo", {DEMO_DEVICE_GROUP: {
        "acme": "acme_demo:tank",
    }}, {"acme_demo": "def tank(bridge, *, cycle_time):\n    raise RuntimeError('no tank here')\n"})
    config = tmp_path / "tank.toml"
    config.write_text('[[bridges]]\ntype = "acme"\nname = "tank"\n')
    done = subprocess.run(
        [sys.executable, "-m", "operation_dispatcher", "serve", "--demo", "--config", str(config),
         "--journal", ":memory:", "--port", "0", "--log-level", "WARNING"],
        cwd=tmp_path, env={"PATH": "/usr/bin:/bin", **acme}, capture_output=True, text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert ("the demo device for acme bridges (acme_demo:tank) cannot be used: "
            "RuntimeError: no tank here") in done.stderr
    assert "Traceback" not in done.stderr

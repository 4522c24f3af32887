"""The core imports quickly and with nothing but ``transitions`` installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import operation_dispatcher

REPO_ROOT = Path(__file__).resolve().parent.parent
OPTIONAL = (
    "flask", "pydantic", "serial", "pymodbus", "paho", "mcp", "prometheus_client", "plotly",
)


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PIP_CACHE_DIR"] = str(tmp_path / "pip-cache")  # nothing written outside tmp_path
    return env


def run_python(python: Path | str, code: str, tmp_path: Path) -> str:
    result = subprocess.run(
        [str(python), "-c", code],
        cwd=tmp_path,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_import_pulls_in_no_optional_dependency(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "import operation_dispatcher\n"
        f"optional = {OPTIONAL!r}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in optional)\n"
        "print(json.dumps({'loaded': loaded, 'file': operation_dispatcher.__file__}))\n"
    )
    report = json.loads(run_python(sys.executable, code, tmp_path))
    assert report["loaded"] == []
    assert Path(report["file"]).resolve().is_relative_to(REPO_ROOT)


def test_public_names_resolve() -> None:
    assert operation_dispatcher.__version__ == "0.1.0"
    assert len(set(operation_dispatcher.__all__)) == len(operation_dispatcher.__all__)
    for name in operation_dispatcher.__all__:
        assert getattr(operation_dispatcher, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from operation_dispatcher import *", namespace)
    assert set(operation_dispatcher.__all__) <= set(namespace)


#: core modules a dispatcher does not need until one of its calls does (design.md section 11:
#: the import stays <= 60 ms): the forecast, the words of explain(), the approval policy, the
#: simulated runner, recovery and the journal (sqlite3)
LOADED_ON_FIRST_USE = (
    "operation_dispatcher.forecast", "operation_dispatcher.reasons",
    "operation_dispatcher.approval_policy", "operation_dispatcher.simulation",
    "operation_dispatcher.recovery", "operation_dispatcher.journal", "sqlite3",
)


def test_import_leaves_what_a_dispatcher_does_not_need_yet_unloaded(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        f"lazy = {LOADED_ON_FIRST_USE!r}\n"
        "def loaded():\n"
        "    return sorted(m for m in lazy if m in sys.modules)\n"
        "import operation_dispatcher as od\n"
        "after_import = loaded()\n"
        "d = od.OperationDispatcher('r')\n"
        "waiting = d.add_operation(od.Operation(resource_id='r', release_conditions={'a': 1}))\n"
        "d.explain(waiting.id, details=False)\n"
        "after_use = loaded()\n"
        "d.explain(waiting.id)\n"
        "d.forecast()\n"
        "from operation_dispatcher import ApprovalPolicy, SimulatedOperationRunner\n"
        "d2 = od.OperationDispatcher('r', approval_policy=ApprovalPolicy(start='deny'))\n"
        "after_calls = loaded()\n"
        "import json\n"
        "print(json.dumps({'import': after_import, 'use': after_use, 'calls': after_calls,\n"
        "                  'names': [ApprovalPolicy.__module__, SimulatedOperationRunner.__name__],\n"
        "                  'dir': 'ApprovalPolicy' in dir(od)}))\n"
    )
    report = json.loads(run_python(sys.executable, code, tmp_path))
    assert report["import"] == [] and report["use"] == []
    assert report["calls"] == sorted(LOADED_ON_FIRST_USE[:4])  # no journal: no recovery
    assert report["names"] == ["operation_dispatcher.approval_policy", "SimulatedOperationRunner"]
    assert report["dir"] is True


def test_a_dispatcher_with_an_approval_policy_refuses_anything_else() -> None:
    # the check loads approval_policy itself (the hub no longer imports it at the top)
    from operation_dispatcher import OperationDispatcher, ValidationError

    with pytest.raises(ValidationError, match="approval_policy.*got dict"):
        OperationDispatcher("r", approval_policy={"start": "deny"})  # type: ignore[arg-type]


@pytest.mark.slow
def test_imports_in_a_fresh_venv_with_only_transitions(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", str(venv)],
        check=True, capture_output=True, env=clean_env(tmp_path), timeout=120,
    )
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-cache-dir", "transitions"],
        capture_output=True, text=True, env=clean_env(tmp_path), cwd=tmp_path, timeout=300,
    )
    assert install.returncode == 0, install.stderr

    code = (
        "import importlib.util, json, sys\n"
        "import operation_dispatcher as od\n"
        "op = od.Operation(resource_id='r', priority=2)\n"
        "q = od.DispatchQueue('r', [op])\n"
        "pulled = q.next()\n"
        "od.OperationLifecycle().fire(pulled, 'start')\n"
        "print(json.dumps({\n"
        "    'file': od.__file__,\n"
        "    'prefix': sys.prefix,\n"
        "    'state': pulled.state.value,\n"
        f"    'missing': [m for m in {OPTIONAL!r} if importlib.util.find_spec(m) is None],\n"
        "    'transitions': importlib.util.find_spec('transitions').origin,\n"
        "}))\n"
    )
    report = json.loads(run_python(python, code, tmp_path))
    assert Path(report["file"]).resolve().is_relative_to(REPO_ROOT)
    assert Path(report["prefix"]).resolve() == venv.resolve()
    assert Path(report["transitions"]).resolve().is_relative_to(venv.resolve())
    assert report["missing"] == list(OPTIONAL)  # the venv really holds none of them
    assert report["state"] == "RUNNING"


def test_a_config_imports_only_the_bridge_kinds_it_uses(tmp_path: Path) -> None:
    """Kinds are entry points, loaded by name: a serial config imports no pymodbus, and the
    core itself no bridge package until a config names a kind."""
    code = (
        "import json, sys\n"
        "from operation_dispatcher.config import parse_config\n"
        "import operation_dispatcher.cli\n"
        "before = sorted(m for m in sys.modules if m.startswith('firmware_bridges'))\n"
        "parse_config({'bridges': [{'type': 'serial', 'name': 'mcu', 'url': 'loop://'}]})\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "print(json.dumps({'before': before, 'serial': 'serial' in loaded,\n"
        "                  'pymodbus': 'pymodbus' in loaded}))\n"
    )
    report = json.loads(run_python(sys.executable, code, tmp_path))
    assert report == {"before": [], "serial": True, "pymodbus": False}


def test_the_rest_api_imports_prometheus_client_only_for_an_app(tmp_path: Path) -> None:
    """``GET /metrics`` (extra ``metrics``) is the only user: importing the API does not load
    the library; making an app does, when it is installed."""
    code = (
        "import json, sys\n"
        "import operation_dispatcher.http as http\n"
        "before = 'prometheus_client' in sys.modules\n"
        "from operation_dispatcher import OperationDispatcher\n"
        "http.create_app(OperationDispatcher('r'))\n"
        "print(json.dumps({'before': before, 'after': 'prometheus_client' in sys.modules}))\n"
    )
    assert json.loads(run_python(sys.executable, code, tmp_path)) == {
        "before": False, "after": True,
    }


def test_an_mqtt_config_and_its_checks_import_no_paho(tmp_path: Path) -> None:
    """The core never imports paho: ``check-config`` of an ``[mqtt]`` section, the command
    handling and the error codes work without it; only the link and the fleet view load it."""
    code = (
        "import json, sys\n"
        "from operation_dispatcher.config import parse_config\n"
        "import operation_dispatcher.cli, operation_dispatcher.mqtt\n"
        "import operation_dispatcher.mqtt.commands, operation_dispatcher.mqtt.topics\n"
        "import operation_dispatcher.error_codes\n"
        "parse_config({'mqtt': {'host': 'broker', 'prefix': 'plant/line-1'},\n"
        "              'approvals': {'start': 'mqtt'}})\n"
        "before = sorted(m for m in sys.modules if m.split('.')[0] in ('paho', 'flask'))\n"
        "from operation_dispatcher import OperationDispatcher\n"
        "from operation_dispatcher.mqtt import MqttLink, MqttSettings\n"
        "imported = 'paho' in sys.modules\n"
        "MqttLink(OperationDispatcher('r'), MqttSettings(host='broker'))\n"
        "print(json.dumps({'before': before + [imported], 'after': 'paho' in sys.modules}))\n"
    )
    assert json.loads(run_python(sys.executable, code, tmp_path)) == {
        "before": [False], "after": True,
    }


def test_plotly_is_imported_only_to_draw(tmp_path: Path) -> None:
    """The ``vis`` extra: neither the core, the command line nor the visualization module
    itself loads plotly; drawing a chart does."""
    code = (
        "import json, sys\n"
        "import operation_dispatcher, operation_dispatcher.cli\n"
        "from operation_dispatcher import History\n"
        "from operation_dispatcher.visualization import build_history_gantt_figure\n"
        "before = 'plotly' in sys.modules\n"
        "build_history_gantt_figure(History(resource_id='r'))\n"
        "print(json.dumps({'before': before, 'after': 'plotly' in sys.modules}))\n"
    )
    assert json.loads(run_python(sys.executable, code, tmp_path)) == {
        "before": False, "after": True,
    }


def test_mcp_and_rest_layers_import_only_their_own_extras(tmp_path: Path) -> None:
    """The MCP server needs no Flask (extra ``api``), the REST API no MCP SDK (extra ``mcp``),
    and the CLI, the config and the shared token check neither until a command needs one."""
    code = (
        "import json, sys\n"
        "def roots():\n"
        "    return {m.split('.')[0] for m in sys.modules}\n"
        "import operation_dispatcher.cli, operation_dispatcher.config\n"
        "import operation_dispatcher.credentials\n"
        "cli = sorted(roots() & {'flask', 'mcp', 'uvicorn', 'starlette'})\n"
        "import operation_dispatcher.mcp\n"
        "mcp = sorted(roots() & {'flask', 'flask_openapi3', 'waitress'})\n"
        "print(json.dumps({'cli': cli, 'mcp': mcp}))\n"
    )
    assert json.loads(run_python(sys.executable, code, tmp_path)) == {"cli": [], "mcp": []}
    code = (
        "import json, sys\n"
        "import operation_dispatcher.http\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'mcp', 'uvicorn'})))\n"
    )
    assert json.loads(run_python(sys.executable, code, tmp_path)) == []

"""``[[bridges]]`` tables of the TOML config: checked without a dispatcher or a device, every
problem named by its key (``bridges[i].key: reason``), and built into bridges that are not
started. Through ``load_config`` / ``parse_config`` / ``check_config`` and ``check-config``."""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from firmware_bridges.modbus import ModbusBridge, SignalSpec
from firmware_bridges.serial_line import SerialLineBridge
from firmware_bridges.simulators.plc import free_port
from operation_dispatcher import OperationDispatcher
from operation_dispatcher.bridges import bridge_errors, build_bridges
from operation_dispatcher.cli import main
from operation_dispatcher.config import ConfigError, check_config, load_config, parse_config
from operation_dispatcher.errors import ValidationError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MODBUS_KINDS = "coil, discrete_input, holding_register, input_register"


def write(tmp_path: Path, text: str, name: str = "bridges.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def bridge_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("bridge-")]


def assert_not_started(bridge: Any, dispatcher: OperationDispatcher) -> None:
    assert bridge.dispatcher is dispatcher
    assert bridge.is_running is False and bridge.is_online is False
    status = bridge.status()
    assert status["running"] is False and status["online"] is False
    assert set(status["counters"].values()) == {0}
    assert bridge.thread_name not in bridge_threads()
    assert dispatcher.signals.get(f"{bridge.name}.online") is None  # nothing written yet


# ------------------------------------------------------------------------------ the examples


def test_plc_example_checks_and_builds_a_modbus_bridge_not_started(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    path = EXAMPLES / "plc.toml"
    assert check_config(path) == []
    config = load_config(path)
    assert config.dispatcher.resource_id == "cell-1"
    dispatcher = make_dispatcher()
    [bridge] = build_bridges(dispatcher, config.bridges)

    assert type(bridge) is ModbusBridge
    assert bridge.name == "plc" and bridge.kind == "modbus"
    assert (bridge.host, bridge.port, bridge.device_id) == ("127.0.0.1", 5020, 1)
    assert bridge.endpoint == "tcp://127.0.0.1:5020"
    assert bridge.poll_interval == 0.1 and bridge.max_age_seconds == 0.5
    assert bridge.timeout == 1.0 and bridge.reconnect_max == 5.0
    assert bridge.signal_specs == [
        SignalSpec("ready", "discrete_input", 0),
        SignalSpec("cycles", "input_register", 0),
        SignalSpec("temperature", "input_register", 1, scale=0.1),
        SignalSpec("mode", "input_register", 2,
                   enum={0: "idle", 1: "running", 2: "done", 3: "error", 4: "paused"}),
        SignalSpec("busy", "input_register", 3, bit=1),
    ]
    assert bridge.executor == {
        "program_register": 0, "start_coil": 0, "done_coil": 1, "error_coil": 2,
        "error_code_register": 1, "cancel_coil": 3, "pause_coil": 4, "resume_coil": 5,
        "program_key": "program",
    }
    assert_not_started(bridge, dispatcher)


def test_serial_example_checks_and_builds_a_serial_bridge_not_started(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    path = EXAMPLES / "serial.toml"
    assert check_config(path) == []
    config = load_config(path)
    dispatcher = make_dispatcher()
    [bridge] = build_bridges(dispatcher, config.bridges)

    assert type(bridge) is SerialLineBridge
    assert bridge.name == "mcu" and bridge.kind == "serial"
    assert bridge.url == bridge.endpoint == "socket://127.0.0.1:7001"
    assert bridge.baudrate == 115200 and bridge.max_line == 256
    assert bridge.use_checksum is False and bridge.executor is True
    assert bridge.max_age_seconds == 2.0 and bridge.command_key == "command"
    assert bridge.terminator == "\n"
    assert_not_started(bridge, dispatcher)


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.toml")))
def test_check_config_command_accepts_the_examples(
    example: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(EXAMPLES / example)
    assert main(["check-config", path]) == 0
    assert capsys.readouterr().out == f"{path}: OK\n"


def test_both_kinds_in_one_file_build_in_order(
    tmp_path: Path, make_dispatcher: Callable[..., OperationDispatcher]
) -> None:
    config = load_config(write(tmp_path, """
[[bridges]]
type = "serial"
name = "mcu"
url = "loop://"
checksum = true

[[bridges]]
type = "modbus"
name = "plc"
host = "127.0.0.1"
port = 1502
signals = {ready = {kind = "coil", address = 4}}
"""))
    assert config.bridges == [
        {"type": "serial", "name": "mcu", "url": "loop://", "checksum": True},
        {"type": "modbus", "name": "plc", "host": "127.0.0.1", "port": 1502,
         "signals": {"ready": {"kind": "coil", "address": 4}}},
    ]
    dispatcher = make_dispatcher()
    serial, modbus = build_bridges(dispatcher, config.bridges)
    assert type(serial) is SerialLineBridge and serial.use_checksum is True
    assert type(modbus) is ModbusBridge and modbus.endpoint == "tcp://127.0.0.1:1502"
    assert modbus.signal_specs == [SignalSpec("ready", "coil", 4)]
    assert modbus.executor is None  # no [bridges.executor]: read-only
    for bridge in (serial, modbus):
        assert_not_started(bridge, dispatcher)


# ------------------------------------------------------------------------------ every error


MANY_PROBLEMS = """
[[bridges]]                       # 0
type = "plc"
name = "a"

[[bridges]]                       # 1
name = "b"
url = "loop://"

[[bridges]]                       # 2
type = "serial"
url = "loop://"

[[bridges]]                       # 3
type = "serial"
name = "my mcu"
url = "loop://"

[[bridges]]                       # 4
type = "serial"
name = "mcu"
url = "loop://"

[[bridges]]                       # 5
type = "serial"
name = "mcu"
url = "loop://"

[[bridges]]                       # 6
type = "serial"
name = "s6"
url = "loop://"
colour = "red"

[[bridges]]                       # 7
type = "modbus"
name = "m7"
host = "127.0.0.1"
signals = {ready = {kind = "relay", address = 0}}

[[bridges]]                       # 8
type = "modbus"
name = "m8"
host = "127.0.0.1"
executor = {program_register = 0, start_coil = 0, done_coil = 1}

[[bridges]]                       # 9
type = "serial"
name = "s9"
url = "loop://"
baudrate = "9600"

[[bridges]]                       # 10
type = "modbus"
name = "m10"
host = "127.0.0.1"
poll_interval = 0

[[bridges]]                       # 11
type = "modbus"
name = "m11"
host = "127.0.0.1"
max_age_seconds = -1

[[bridges]]                       # 12
type = "serial"
name = "s12"
url = "loop://"
reconnect_initial = 2.0
reconnect_max = 1.0

[[bridges]]                       # 13
type = "modbus"
name = "m13"
port = 5020
"""

#: (the key each line starts with, a fragment of its reason), in the order of the tables
EXPECTED = [
    ("bridges[0].type", "must be one of 'modbus', 'serial', got 'plc'"),
    ("bridges[1].type", "got None"),
    ("bridges[2].name", "required"),
    ("bridges[3].name", "'my mcu'"),
    ("bridges[5].name", "'mcu' is already the name of bridges[4]"),
    ("bridges[6].colour", "unknown key for a serial bridge (known: name, url, baudrate,"),
    ("bridges[7].signals.ready.kind", f"must be one of {MODBUS_KINDS}, got 'relay'"),
    ("bridges[8].executor", "'error_coil'"),
    ("bridges[9].baudrate", "'9600'"),
    ("bridges[10].poll_interval", "0"),
    ("bridges[11].max_age_seconds", "-1"),
    ("bridges[12].reconnect_max", "reconnect_initial"),
    ("bridges[13].host", ""),
]


def assert_problems(errors: list[str], expected: list[tuple[str, str]]) -> None:
    assert len(errors) == len(expected), errors
    for error, (key, fragment) in zip(errors, expected, strict=True):
        assert error.startswith(f"{key}: "), (key, error)
        assert fragment in error, (fragment, error)


def test_every_bridge_problem_is_reported_with_its_key_all_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, MANY_PROBLEMS)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    errors = raised.value.errors
    assert_problems(errors, EXPECTED)
    assert raised.value.source == str(path)
    assert f"{len(EXPECTED)} configuration error(s)" in str(raised.value)
    assert check_config(path) == errors


@pytest.mark.parametrize("value", ['["modbus"]', '{kind = "modbus"}', "5", '""'])
def test_a_type_that_is_not_a_type_name_is_reported_not_raised(
    tmp_path: Path, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, f'[[bridges]]\ntype = {value}\nname = "plc"\nhost = "127.0.0.1"\n')
    errors = check_config(path)  # an array or a table is unhashable: `in` a dict of kinds raises
    assert len(errors) == 1, errors
    assert errors[0].startswith("bridges[0].type: must be one of 'modbus', 'serial', got "), errors
    assert main(["check-config", str(path)]) == 1
    assert capsys.readouterr().out == f"{path}: {errors[0]}\n"


def test_an_unknown_key_lists_the_known_ones_without_the_internal_arguments() -> None:
    [error] = bridge_errors([{"type": "serial", "name": "s", "url": "loop://", "speed": 9600}])
    assert error.startswith("bridges[0].speed: unknown key for a serial bridge (known: ")
    known = error.split("(known: ", 1)[1].rstrip(")").split(", ")
    assert {"name", "url", "baudrate", "checksum", "max_line", "max_age_seconds",
            "reconnect_initial", "reconnect_max", "executor"} <= set(known)
    assert not {"self", "dispatcher", "logger", "type"} & set(known)


def test_tables_that_are_not_tables_keep_their_index() -> None:
    good = {"type": "serial", "name": "mcu", "url": "loop://"}
    with pytest.raises(ConfigError) as raised:
        parse_config({"bridges": [good, "plc", 3, {**good, "name": "mcu"}]})
    assert raised.value.errors == [
        "bridges[1]: must be a table ([[bridges]])",
        "bridges[2]: must be a table ([[bridges]])",
        "bridges[3].name: 'mcu' is already the name of bridges[0]",
    ]


def test_check_config_command_prints_every_problem_with_the_file_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, MANY_PROBLEMS)
    assert main(["check-config", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{path}: {error}" for error in check_config(path)]
    assert_problems([line.removeprefix(f"{path}: ") for line in lines], EXPECTED)


def test_build_bridges_refuses_bad_tables_with_every_problem(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    tables = [
        {"type": "serial", "name": "mcu", "url": "loop://", "baudrate": 0},
        {"type": "modbus", "name": "plc", "host": "127.0.0.1", "poll_interval": -1},
    ]
    with pytest.raises(ValidationError) as raised:
        build_bridges(make_dispatcher(), tables)
    assert raised.value.field == "bridges"
    assert "bridges[0].baudrate: " in raised.value.reason
    assert "bridges[1].poll_interval: " in raised.value.reason
    assert bridge_threads() == []


# ------------------------------------------------------------------------------ no dispatcher, no device


def test_checking_needs_no_dispatcher_so_no_message_mentions_one(tmp_path: Path) -> None:
    errors = check_config(write(tmp_path, MANY_PROBLEMS))
    assert errors
    for error in errors:
        assert "dispatcher" not in error.lower(), error
        assert "NoneType" not in error, error


def test_an_absent_device_is_a_runtime_problem_not_a_config_problem(
    tmp_path: Path, make_dispatcher: Callable[..., OperationDispatcher]
) -> None:
    port = free_port()  # nobody listens there
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        listening_port = listener.getsockname()[1]
        path = write(tmp_path, f"""
[[bridges]]
type = "modbus"
name = "plc"
host = "127.0.0.1"
port = {port}
signals = {{ready = {{kind = "discrete_input", address = 0}}}}
executor = {{program_register = 0, start_coil = 0, done_coil = 1, error_coil = 2}}

[[bridges]]
type = "modbus"
name = "plc2"
host = "127.0.0.1"
port = {listening_port}

[[bridges]]
type = "serial"
name = "mcu"
url = "/dev/does-not-exist"
""")
        assert check_config(path) == []
        config = load_config(path)
        dispatcher = make_dispatcher()
        bridges = build_bridges(dispatcher, config.bridges)
        with pytest.raises(BlockingIOError):  # checking and building connected to nothing
            listener.accept()
    assert [b.endpoint for b in bridges] == [
        f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{listening_port}", "/dev/does-not-exist",
    ]
    for bridge in bridges:
        assert_not_started(bridge, dispatcher)
    assert not Path("/dev/does-not-exist").exists()


def test_an_rtu_modbus_bridge_is_checked_without_opening_its_serial_port(
    tmp_path: Path, make_dispatcher: Callable[..., OperationDispatcher]
) -> None:
    rtu = '[[bridges]]\ntype = "modbus"\nname = "plc"\ntransport = "rtu"\n'
    path = write(tmp_path, rtu + 'serial_port = "/dev/does-not-exist"\nbaudrate = 9600\nparity = "E"\n')
    assert check_config(path) == []
    dispatcher = make_dispatcher()
    [bridge] = build_bridges(dispatcher, load_config(path).bridges)
    assert type(bridge) is ModbusBridge
    assert "/dev/does-not-exist" in bridge.endpoint
    assert_not_started(bridge, dispatcher)
    # where the PLC is must fit the transport: each mismatch is named by its key
    for extra, key in [("", "serial_port"), ('serial_port = "/dev/ttyUSB0"\nhost = "10.0.0.7"\n', "host")]:
        [error] = check_config(write(tmp_path, rtu + extra))
        assert error.startswith(f"bridges[0].{key}: "), error
    tcp = '[[bridges]]\ntype = "modbus"\nname = "plc"\nhost = "127.0.0.1"\nbaudrate = 9600\n'
    [error] = check_config(write(tmp_path, tcp))
    assert error.startswith("bridges[0].baudrate: "), error


# ------------------------------------------------------------------------------ values of the wrong type
#
# check_seconds' docstring: "Bridges are built from TOML tables, so a string or a bool must be
# named, not crash later". A wrong type or range must come out of check_config as one line naming
# its key: not as an exception escaping load_config, not as "bridges[0]: cannot be built: ...",
# not blamed on another key, and not accepted.


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('port = "abc"', "port"),                    # not int("abc") raising ValueError
        ('device_id = "x"', "device_id"),            # not int("x") raising ValueError
        ('signals = ["ready"]', "signals"),          # not AttributeError: list.items
        ('poll_interval = "fast"', "poll_interval"),  # not "bridges[0]: cannot be built"
        ('timeout = "1s"', "timeout"),               # not "bridges[0]: cannot be built"
        ("poll_interval = true", "poll_interval"),   # not 1 second
        ("poll_interval = 1e300", "poll_interval"),  # not blamed on max_age_seconds
        ("port = 70000", "port"),                    # ports are 1..65535
        ("port = true", "port"),                     # not port 1
        ("device_id = 300", "device_id"),            # device ids are 0..247
        ("max_signals = 0", "max_signals"),          # issue 10, D.15: a bound of 1 at least
    ],
)
def test_a_modbus_value_of_the_wrong_type_is_reported_with_its_key(
    tmp_path: Path, line: str, key: str
) -> None:
    path = write(tmp_path, f'[[bridges]]\ntype = "modbus"\nname = "plc"\nhost = "127.0.0.1"\n{line}\n')
    errors = check_config(path)
    assert len(errors) == 1 and errors[0].startswith(f"bridges[0].{key}: "), errors


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("baudrate = true", "baudrate"),
        ('max_line = "256"', "max_line"),
        ('checksum = "yes"', "checksum"),
        ("executor = 1", "executor"),
        ('terminator = ""', "terminator"),
        ('command_key = ""', "command_key"),
        ('reconnect_initial = "1"', "reconnect_initial"),
        ("max_age_seconds = true", "max_age_seconds"),
        ('max_signals = "256"', "max_signals"),
        ("max_signals = true", "max_signals"),
        ("write_timeout = 0", "write_timeout"),
    ],
)
def test_a_serial_value_of_the_wrong_type_is_reported_with_its_key(
    tmp_path: Path, line: str, key: str
) -> None:
    path = write(tmp_path, f'[[bridges]]\ntype = "serial"\nname = "mcu"\nurl = "loop://"\n{line}\n')
    errors = check_config(path)
    assert len(errors) == 1 and errors[0].startswith(f"bridges[0].{key}: "), errors


# ------------------------------------------------------------------------------ one executor (issue 10, A.2)

TWO_EXECUTORS = """
[[bridges]]
type = "modbus"
name = "plc"
host = "127.0.0.1"
port = 1502
[bridges.executor]
program_register = 0
start_coil = 0
done_coil = 1
error_coil = 2

[[bridges]]
type = "serial"
name = "probe"
url = "loop://"

[[bridges]]
type = "serial"
name = "mcu"
url = "loop://"
executor = true
"""


def test_no_bridge_runs_jobs_unless_its_table_says_so(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    """Every kind defaults to signals only: a serial table without ``executor`` sends no RUN."""
    tables = [{"type": "serial", "name": "mcu", "url": "loop://"},
              {"type": "modbus", "name": "plc", "host": "127.0.0.1"}]
    assert bridge_errors(tables) == []
    serial, modbus = build_bridges(make_dispatcher(), tables)
    assert serial.executor is False and modbus.executor is None
    assert not serial._handles_events() and not modbus._handles_events()  # not even subscribed
    assert SerialLineBridge(None, "x", "loop://").executor is False


def test_two_executors_are_an_error_naming_both(
    tmp_path: Path, make_dispatcher: Callable[..., OperationDispatcher],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write(tmp_path, TWO_EXECUTORS)
    expected = ("bridges[2].executor: only one bridge may run the machine's jobs, but "
                "bridges[0] ('plc') and bridges[2] ('mcu') both have an executor")
    assert check_config(path) == [expected]
    assert main(["check-config", str(path)]) == 1
    assert capsys.readouterr().out == f"{path}: {expected}\n"
    with pytest.raises(ValidationError) as raised:
        build_bridges(make_dispatcher(), load_config_tables(TWO_EXECUTORS, tmp_path))
    assert expected in raised.value.reason
    assert bridge_threads() == []
    one = TWO_EXECUTORS.replace("executor = true", "executor = false")
    assert check_config(write(tmp_path, one, "one.toml")) == []


def test_a_modbus_bridge_configures_no_more_signals_than_max_signals() -> None:
    """Issue 10, D.15: the bound holds for a PLC too (its signals are fixed by the config)."""
    signals = {"a": {"kind": "coil", "address": 0}, "b": {"kind": "coil", "address": 1}}
    tables = [{"type": "modbus", "name": "plc", "host": "127.0.0.1", "signals": signals,
               "max_signals": 1}]
    assert bridge_errors(tables) == ["bridges[0].signals: 2 signals is more than max_signals=1"]
    assert ModbusBridge(None, "plc", "127.0.0.1", signals=signals).max_signals == 256


def load_config_tables(text: str, tmp_path: Path) -> list[dict[str, Any]]:
    """The ``[[bridges]]`` tables of ``text`` as parsed TOML, unchecked."""
    import tomllib

    return tomllib.loads(text)["bridges"]


# ------------------------------------------------------ issue 11: the core's rules for bridges


@pytest.mark.parametrize(
    ("toml", "value"),
    [("1e9", 1e9), ("1.000001e9", 1.000001e9), ("0", 0), ("-1", -1), ("nan", math.nan),
     ("inf", math.inf), ('"1"', "1"), ("true", True), ("0.25", 0.25)],
)
def test_bridge_durations_follow_the_cores_rule(tmp_path: Path, toml: str, value: Any) -> None:
    """One rule for seconds: a bridge accepts exactly the durations an operation accepts."""
    from operation_dispatcher import Operation, ValidationError

    try:
        Operation(resource_id="r", timeout_seconds=value)
    except ValidationError:
        core_accepts = False
    else:
        core_accepts = True
    for kind, line in (("modbus", 'host = "127.0.0.1"\npoll_interval'),
                       ("serial", 'url = "loop://"\nwrite_timeout')):
        text = f'[[bridges]]\ntype = "{kind}"\nname = "b"\n{line} = {toml}\n'
        errors = check_config(write(tmp_path, text))
        assert (errors == []) is core_accepts, (kind, toml, errors)
        if errors:
            key = line.rsplit("\n", 1)[-1]
            assert errors[0].startswith(f"bridges[0].{key}: must be a number > 0"), errors

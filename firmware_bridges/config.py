"""``[[bridges]]`` tables of the TOML config -> bridges.

Each table names its ``type`` and ``name``; every other key is a keyword argument of that
bridge's class, so the config and the Python API cannot drift apart::

    [[bridges]]
    type = "modbus"                 # ModbusBridge
    name = "plc"                    # signals plc.<signal>, health plc.online
    host = "127.0.0.1"
    port = 5020
    poll_interval = 0.1
    [bridges.signals]
    ready = {kind = "discrete_input", address = 0}
    [bridges.executor]
    program_register = 0
    start_coil = 0
    done_coil = 1
    error_coil = 2

Checking a table builds the bridge without starting it (no device is opened), so
``check-config`` reports exactly what ``serve`` would refuse, each problem with its key
(``bridges[0].signals.ready.kind: must be one of ...``). The bridge modules, and so pymodbus
and pyserial, are imported only for the types a config uses.

No bridge runs jobs unless its table says so (a ``[bridges.executor]`` table for Modbus,
``executor = true`` for serial), and at most one bridge may: two executors would both act on
every started operation, so a config with two is refused, naming both.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from operation_dispatcher.errors import ValidationError

if TYPE_CHECKING:
    from operation_dispatcher import OperationDispatcher

    from .base import BaseBridge

__all__ = ["BRIDGE_TYPES", "BridgeType", "bridge_errors", "build_bridges"]


@dataclass(frozen=True)
class BridgeType:
    """Where a bridge type's class lives and which extra installs what it imports."""

    module: str
    class_name: str
    extra: str

    def load(self) -> type[BaseBridge]:
        """Import the class (raises ImportError naming the extra to install)."""
        module = importlib.import_module(self.module)
        return getattr(module, self.class_name)

    def keys(self) -> list[str]:
        """The table keys this type accepts besides ``type``: its constructor's arguments."""
        parameters = inspect.signature(self.load()).parameters
        return [name for name in parameters if name not in _NOT_CONFIGURABLE]


#: ``type = "..."`` -> the bridge class.
BRIDGE_TYPES: Mapping[str, BridgeType] = {
    "modbus": BridgeType("firmware_bridges.modbus", "ModbusBridge", "modbus"),
    "serial": BridgeType("firmware_bridges.serial_line", "SerialLineBridge", "serial"),
}
_NOT_CONFIGURABLE = frozenset({"self", "dispatcher", "logger"})


def bridge_errors(tables: Sequence[Any]) -> list[str]:
    """Every problem of the ``[[bridges]]`` tables, each as ``bridges[i].key: reason``."""
    errors: list[str] = []
    names: dict[str, int] = {}
    executors: list[int] = []
    for index, table in enumerate(tables):
        where = f"bridges[{index}]"
        if not isinstance(table, Mapping):
            errors.append(f"{where}: must be a table ([[bridges]])")
            continue
        _type, problems = _resolve(table, where)
        errors.extend(problems)
        name = table.get("name")
        if isinstance(name, str) and name in names:
            errors.append(f"{where}.name: {name!r} is already the name of bridges[{names[name]}]")
        elif isinstance(name, str):
            names[name] = index
        if table.get("executor") not in (None, False):
            executors.append(index)
        if _type is None or problems:
            continue
        try:
            _construct(None, _type, table)
        except ValidationError as exc:
            errors.append(f"{where}{'.' if exc.field else ''}{exc.field}: {exc.reason}")
    if len(executors) > 1:
        named = " and ".join(f"bridges[{i}] ({tables[i].get('name')!r})" for i in executors)
        errors.append(
            f"bridges[{executors[-1]}].executor: only one bridge may run the machine's jobs, "
            f"but {named} {'both' if len(executors) == 2 else 'all'} have an executor"
        )
    return errors


def build_bridges(dispatcher: OperationDispatcher, tables: Sequence[Mapping[str, Any]]) -> list[BaseBridge]:
    """The bridges of checked ``[[bridges]]`` tables, built but not started."""
    problems = bridge_errors(tables)
    if problems:
        raise ValidationError("bridges", "; ".join(problems))
    bridges = []
    for table in tables:
        bridge_type, _ = _resolve(table, "")
        assert bridge_type is not None
        bridges.append(_construct(dispatcher, bridge_type, table))
    return bridges


def _resolve(table: Mapping[str, Any], where: str) -> tuple[BridgeType | None, list[str]]:
    """The table's bridge type, and what is wrong with its keys."""
    kind = table.get("type")
    if not isinstance(kind, str) or kind not in BRIDGE_TYPES:
        known = ", ".join(repr(name) for name in BRIDGE_TYPES)
        return None, [f"{where}.type: must be one of {known}, got {kind!r}"]
    bridge_type = BRIDGE_TYPES[kind]
    try:
        keys = bridge_type.keys()
    except ImportError as exc:
        return None, [
            f"{where}.type: {kind!r} bridges need {exc.name or 'a missing package'}: "
            f"pip install 'operation-dispatcher[{bridge_type.extra}]'"
        ]
    problems = []
    if "name" not in table:
        problems.append(f"{where}.name: required (the prefix of the bridge's signals)")
    for key in table:
        if key != "type" and key not in keys:
            problems.append(f"{where}.{key}: unknown key for a {kind} bridge (known: {', '.join(keys)})")
    for key in _required(bridge_type):
        if key not in table and key != "name":
            problems.append(f"{where}.{key}: required for a {kind} bridge")
    return bridge_type, problems


def _required(bridge_type: BridgeType) -> list[str]:
    parameters = inspect.signature(bridge_type.load()).parameters.values()
    return [
        p.name for p in parameters
        if p.name not in _NOT_CONFIGURABLE and p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def _construct(
    dispatcher: OperationDispatcher | None, bridge_type: BridgeType, table: Mapping[str, Any]
) -> BaseBridge:
    """Build the bridge; with ``dispatcher=None`` only to run the constructor's checks.

    Constructors only store the dispatcher (they open nothing before ``start()``), which is
    what lets ``check-config`` validate a bridge without a dispatcher or a device.
    """
    kwargs = {key: value for key, value in table.items() if key != "type"}
    cls = bridge_type.load()
    try:
        return cls(dispatcher, **kwargs)  # type: ignore[arg-type]
    except TypeError as exc:  # a value of the wrong shape that the class did not name
        raise ValidationError("", f"cannot be built: {exc}") from None

"""Bridge kinds as plug-ins, and the ``[[bridges]]`` tables of a config -> bridges.

A bridge kind is a class that some installed package declares in the entry-point group
``operation_dispatcher.bridges``; the entry point's name is the table's ``type``. This project's
own kinds come the same way (``firmware_bridges`` declares ``modbus`` and ``serial`` in
setup.cfg), so the core imports no bridge module by name and a third-party kind needs no edit
here::

    [options.entry_points]                       # the plug-in's setup.cfg
    operation_dispatcher.bridges =
        acme = acme_bridge:AcmeBridge

Each table names its ``type`` and ``name``; every other key is a keyword argument of that
kind's class, called as ``cls(dispatcher, **table)``, so the config and the Python API cannot
drift apart. Checking a table builds the bridge with ``dispatcher=None`` without starting it (a
constructor only stores the dispatcher and opens nothing), so ``check-config`` reports exactly
what ``serve`` would refuse, each problem with its key (``bridges[0].signals.ready.kind: ...``).
A kind's module, and so pymodbus or pyserial, is imported only when a config uses that kind.

No bridge runs jobs unless its table has a true ``executor`` key (a table for Modbus, ``true``
for serial), and at most one bridge may: two executors would both act on every started
operation, so a config with two is refused, naming both. A kind declared by two installed
packages, a plug-in that cannot be imported and an object that is not a bridge class are
refused too: in every doubtful case no bridge is built, and the error says why.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import DispatcherError, ValidationError

if TYPE_CHECKING:
    from .dispatcher import OperationDispatcher

__all__ = ["BRIDGE_GROUP", "Bridge", "BridgeKind", "bridge_errors", "bridge_kinds", "build_bridges"]

#: the entry-point group that bridge kinds are declared in
BRIDGE_GROUP = "operation_dispatcher.bridges"
#: constructor arguments a table cannot set
_NOT_CONFIGURABLE = frozenset({"self", "dispatcher", "logger"})
#: what serve and the HTTP API use of a bridge (firmware_bridges.base.BaseBridge has all of it)
_BRIDGE_METHODS = ("start", "stop", "status")


@runtime_checkable
class Bridge(Protocol):
    """What the core uses of a bridge: ``firmware_bridges.base.BaseBridge`` is the shared
    implementation, but any class with these members works."""

    name: str
    kind: str

    @property
    def endpoint(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


class PluginError(Exception):
    """A bridge kind cannot be used; the message says why (without the table's position)."""


@dataclass(frozen=True)
class BridgeKind:
    """One ``type = "..."``: the entry point that declares it."""

    name: str
    entry_point: EntryPoint

    @property
    def provider(self) -> str:
        """The package that declares the kind (its distribution name), for error messages."""
        dist = getattr(self.entry_point, "dist", None)
        return dist.name if dist is not None else self.entry_point.value

    def load(self) -> type:
        """The bridge class; raises PluginError saying why it cannot be used."""
        where = f"the {self.name!r} bridge ({self.entry_point.value} from {self.provider})"
        try:
            cls = self.entry_point.load()
        except ImportError as exc:  # a missing extra: the kind's module names what to install
            raise PluginError(f"{where} cannot be loaded: {exc}") from exc
        except Exception as exc:  # a broken plug-in must not crash check-config or serve
            raise PluginError(f"{where} cannot be loaded: {type(exc).__name__}: {exc}") from exc
        missing = [m for m in _BRIDGE_METHODS if not callable(getattr(cls, m, None))]
        if not isinstance(cls, type) or missing:
            raise PluginError(
                f"{where} is not a bridge class (it needs {', '.join(_BRIDGE_METHODS)} methods)"
            )
        return cls

    def keys(self) -> list[str]:
        """The table keys this kind accepts besides ``type``: its constructor's arguments."""
        return [name for name in _parameters(self.load()) if name not in _NOT_CONFIGURABLE]

    def required(self) -> list[str]:
        """The keys a table of this kind must have."""
        return [
            p.name for p in _parameters(self.load()).values()
            if p.name not in _NOT_CONFIGURABLE and p.default is inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]


def bridge_kinds() -> dict[str, list[BridgeKind]]:
    """Every installed bridge kind by name (usually one declaration each; more is a conflict).

    Entry points exist only for installed packages: a checkout needs ``pip install -e .``
    (``make`` does it) before its own kinds are found.
    """
    kinds: dict[str, list[BridgeKind]] = {}
    for entry_point in entry_points(group=BRIDGE_GROUP):
        kinds.setdefault(entry_point.name, []).append(BridgeKind(entry_point.name, entry_point))
    return {name: sorted(found, key=lambda k: k.provider) for name, found in sorted(kinds.items())}


def bridge_errors(tables: Sequence[Any]) -> list[str]:
    """Every problem of the ``[[bridges]]`` tables, each as ``bridges[i].key: reason``."""
    kinds = bridge_kinds()
    errors: list[str] = []
    names: dict[str, int] = {}
    executors: list[int] = []
    for index, table in enumerate(tables):
        where = f"bridges[{index}]"
        if not isinstance(table, Mapping):
            errors.append(f"{where}: must be a table ([[bridges]])")
            continue
        kind, problems = _resolve(kinds, table, where)
        errors.extend(problems)
        name = table.get("name")
        if isinstance(name, str) and name in names:
            errors.append(f"{where}.name: {name!r} is already the name of bridges[{names[name]}]")
        elif isinstance(name, str):
            names[name] = index
        if table.get("executor") not in (None, False):
            executors.append(index)
        if kind is not None:
            errors.extend(_value_errors(kind, table, where))
    if len(executors) > 1:
        named = " and ".join(f"bridges[{i}] ({tables[i].get('name')!r})" for i in executors)
        errors.append(
            f"bridges[{executors[-1]}].executor: only one bridge may run the machine's jobs, "
            f"but {named} {'both' if len(executors) == 2 else 'all'} have an executor"
        )
    return errors


def build_bridges(dispatcher: OperationDispatcher, tables: Sequence[Mapping[str, Any]]) -> list[Any]:
    """The bridges of checked ``[[bridges]]`` tables, built but not started.

    Raises ValidationError (field ``bridges``) with every problem when a table is wrong.
    """
    problems = bridge_errors(tables)
    if problems:
        raise ValidationError("bridges", "; ".join(problems))
    kinds = bridge_kinds()
    bridges = []
    for table in tables:
        kind, _ = _resolve(kinds, table, "")
        assert kind is not None
        bridges.append(_construct(dispatcher, kind, table))
    return bridges


def _resolve(
    kinds: Mapping[str, list[BridgeKind]], table: Mapping[str, Any], where: str
) -> tuple[BridgeKind | None, list[str]]:
    """The table's bridge kind, and what is wrong with its keys."""
    name = table.get("type")
    if not isinstance(name, str) or name not in kinds:
        known = ", ".join(repr(kind) for kind in kinds) or "none (no bridge package is installed)"
        return None, [f"{where}.type: must be one of {known}, got {name!r}"]
    declared = kinds[name]
    if len(declared) > 1:
        providers = ", ".join(f"{k.entry_point.value} from {k.provider}" for k in declared)
        return None, [f"{where}.type: {name!r} is declared by more than one installed package "
                      f"({providers}): uninstall all but one"]
    kind = declared[0]
    try:
        keys, required = kind.keys(), kind.required()
    except PluginError as exc:
        return None, [f"{where}.type: {exc}"]
    problems = []
    if "name" not in table:
        problems.append(f"{where}.name: required (the prefix of the bridge's signals)")
    for key in table:
        if key != "type" and key not in keys:
            problems.append(f"{where}.{key}: unknown key for a {name} bridge (known: {', '.join(keys)})")
    for key in required:
        if key not in table and key != "name":
            problems.append(f"{where}.{key}: required for a {name} bridge")
    return kind, problems


def _value_errors(kind: BridgeKind, table: Mapping[str, Any], where: str) -> list[str]:
    """Every value of the table that the bridge's constructor refuses, in one run.

    A constructor stops at its first bad argument, so the refused key is dropped (its default
    applies) and the constructor runs again, until it builds or refuses something that cannot
    be dropped (a required key, or a key the table does not hold: then what it says may come
    from a dropped key, so only a first error is reported). Unknown and missing keys are
    reported by :func:`_resolve`; unknown keys are left out here so that their values still
    get checked. At most one run per key of the table.
    """
    known, required = set(kind.keys()), set(kind.required()) | {"name"}
    if any(key not in table for key in required):
        return []  # reported as missing; the constructor cannot run without it
    kwargs = {key: value for key, value in table.items() if key == "type" or key in known}
    errors: list[str] = []
    for _ in range(len(kwargs)):
        try:
            _construct(None, kind, kwargs)
            return errors
        except ValidationError as exc:
            key = exc.field.split(".", 1)[0].split("[", 1)[0]
            if errors and key not in kwargs:
                return errors  # an error the dropped keys may have caused: not the user's
            errors.append(f"{where}{'.' if exc.field else ''}{exc.field}: {exc.reason}")
            if key not in kwargs or key in required or key == "type":
                return errors
            del kwargs[key]
    return errors


def _parameters(cls: type) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(cls).parameters
    except (TypeError, ValueError) as exc:  # a class whose signature cannot be read
        raise PluginError(f"the arguments of {cls!r} cannot be read: {exc}") from exc


def _construct(dispatcher: OperationDispatcher | None, kind: BridgeKind, table: Mapping[str, Any]) -> Any:
    """Build the bridge; with ``dispatcher=None`` only to run the constructor's checks.

    Constructors only store the dispatcher (they open nothing before ``start()``), which is
    what lets ``check-config`` validate a bridge without a dispatcher or a device.
    """
    kwargs = {key: value for key, value in table.items() if key != "type"}
    cls = kind.load()
    try:
        bridge = cls(dispatcher, **kwargs)
    except DispatcherError:  # ValidationError with its field; ExecutorConflict naming both
        raise
    except TypeError as exc:  # a value of the wrong shape that the class did not name
        raise ValidationError("", f"cannot be built: {exc}") from None
    except Exception as exc:  # a plug-in's own error: a config error, not a traceback
        raise ValidationError("", f"cannot be built: {type(exc).__name__}: {exc}") from None
    if not isinstance(bridge, Bridge):
        raise ValidationError("type", f"{kind.entry_point.value} did not build a bridge "
                                      f"(it needs name, kind, endpoint, start, stop and status)")
    return bridge

"""Which tests the CI-sized ``make pi-check`` runs (its ``ci`` selection, :mod:`tools.pi_check`),
found by rules read from each test file's source, never by a list of names.

What a test *reaches*: the statements of its module that run for every test (the imports and
other code at the top, autouse fixtures), the test itself (a top-level ``test_*`` function, or a
top-level ``Test*`` class as a whole), and, followed by name, the module's functions, fixtures
(by parameter name) and constants it uses, and theirs. Over what it reaches:

* **imports** (``import x``, ``from x import y``, also inside functions, and inside Python code in
  a string constant: the code a test hands to a child interpreter) count against the core unless
  of the standard library but its network modules (:data:`NETWORK_MODULES`), the test tools
  (:data:`TEST_TOOLS`) or ``operation_dispatcher`` but its front ends (:data:`FRONT_ENDS`); a
  module loaded at run time (:data:`DYNAMIC_IMPORTS`: a file by its path, say) counts against it;
* **fixtures** that start a server, broker or simulator (:data:`EDGE_FIXTURES`) count against it;
* **programs**: every ``subprocess`` call but ``[sys.executable, "-c", CODE]`` (the library in a
  fresh interpreter; CODE judged as imports), and ``os.system`` and its kin, start a program;
* **properties**: a test run with hypothesis's ``@given`` or ``run_state_machine_as_test`` is a
  property test: many random examples of logic that does not depend on the processor, and the
  costliest tests under emulation (the largest takes 12 s on the host, 2 min emulated).

A **core test** has none of the four: it exercises the core library in its own process, and no
HTTP server, MCP, MQTT, dashboard, CLI, bridge, simulator or other program. A **bridge test**
of the ``ci`` selection is a test of a bridge file (``pi_check.BRIDGE_TESTS``) that starts no
program and is no property test: the bridges against the PLC and serial simulators, which run
in the test's process, without the tests of the simulators' and ``check-config``'s command
lines (each starts an emulated interpreter: seconds).

Pure functions on source text, tested on the host (tests/test_pi_check.py).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: the parts of ``operation_dispatcher`` a core test must not import: the front ends and what
#: loads plug-ins (they need an extra, start servers or load the bridges)
FRONT_ENDS = ("operation_dispatcher.http", "operation_dispatcher.mcp",
              "operation_dispatcher.mqtt", "operation_dispatcher.cli",
              "operation_dispatcher.__main__", "operation_dispatcher.bridges",
              "operation_dispatcher.visualization")
#: standard-library modules that reach the network or other processes on their own
NETWORK_MODULES = frozenset({"socket", "socketserver", "ssl", "http", "urllib", "selectors",
                             "asyncio", "multiprocessing", "xmlrpc", "wsgiref", "ftplib",
                             "smtplib"})
#: what a test may import besides the standard library and the core: the test tools and the
#: suite's conftest (its fixtures are judged by name, :data:`EDGE_FIXTURES`)
TEST_TOOLS = frozenset({"pytest", "_pytest", "hypothesis", "conftest"})
#: fixtures of tests/conftest.py that start a REST server, its client, ``serve``, a broker or a
#: simulator
EDGE_FIXTURES = frozenset({"make_api", "make_client", "serve", "make_broker", "make_sim"})
#: ``subprocess`` functions that start a program
SUBPROCESS_CALLS = frozenset({"run", "Popen", "call", "check_call", "check_output",
                              "getoutput", "getstatusoutput"})
#: ``os`` functions (by prefix) that start a program
OS_PROGRAM_CALLS = ("system", "popen", "exec", "spawn", "posix_spawn", "fork")
#: calls that load a module the imports do not show (a file by its path, a name in a string)
DYNAMIC_IMPORTS = frozenset({"spec_from_file_location", "import_module", "__import__",
                             "run_path", "run_module"})
#: names that make a test a property test
PROPERTY_NAMES = frozenset({"given", "run_state_machine_as_test"})


@dataclass
class Reach:
    """Why a test is not a core test, by kind (all empty: it is one)."""

    imports: list[str] = field(default_factory=list)
    fixtures: list[str] = field(default_factory=list)
    programs: list[str] = field(default_factory=list)
    properties: list[str] = field(default_factory=list)

    @property
    def core(self) -> bool:
        return not (self.imports or self.fixtures or self.programs or self.properties)

    @property
    def ci_bridge(self) -> bool:
        """Whether the test, in a bridge file, belongs to the ``ci`` selection."""
        return not (self.programs or self.properties)

    def reasons(self) -> list[str]:
        return [*self.imports, *self.fixtures, *self.programs, *self.properties]


def imported(tree: ast.AST) -> Iterator[str]:
    """Every absolute module name imported anywhere in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def code_strings(tree: ast.AST) -> Iterator[ast.Module]:
    """The string constants in ``tree`` that are Python code importing something."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and "import " in node.value:
            try:
                code = ast.parse(node.value)
            except SyntaxError:
                continue
            if any(isinstance(n, ast.Import | ast.ImportFrom) for n in ast.walk(code)):
                yield code


def module_verdict(name: str) -> str | None:
    """Why importing ``name`` keeps a test out of the core; None when it does not."""
    top = name.split(".")[0]
    if top == "operation_dispatcher":
        edge = any(name == e or name.startswith(e + ".") for e in FRONT_ENDS)
        return f"imports {name} (a front end)" if edge else None
    if top in TEST_TOOLS:
        return None
    if top in sys.stdlib_module_names:
        return f"imports {name} (network)" if top in NETWORK_MODULES else None
    return f"imports {name}"


def is_sys_executable(node: ast.AST) -> bool:
    """Whether ``node`` is the expression ``sys.executable``."""
    return (isinstance(node, ast.Attribute) and node.attr == "executable"
            and isinstance(node.value, ast.Name) and node.value.id == "sys")


def called(node: ast.Call) -> tuple[str | None, str]:
    """(the module or object name before the dot, or None; the function's name) of a call."""
    func = node.func
    if isinstance(func, ast.Attribute):
        owner = func.value.id if isinstance(func.value, ast.Name) else ""
        return owner, func.attr
    return None, func.id if isinstance(func, ast.Name) else ""


def program_verdicts(tree: ast.AST, from_subprocess: frozenset[str]) -> Iterator[str]:
    """Why the calls in ``tree`` that start programs keep a test out: all but
    ``subprocess.X([sys.executable, "-c", ...])``. ``from_subprocess``: the names imported
    with ``from subprocess import ...``."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        owner, name = called(node)
        if owner == "os" and name.startswith(OS_PROGRAM_CALLS):
            yield f"starts a program (os.{name}, line {node.lineno})"
            continue
        if not ((owner == "subprocess" and name in SUBPROCESS_CALLS)
                or (owner is None and name in from_subprocess)):
            continue
        argv = node.args[0] if node.args else None
        if (isinstance(argv, ast.List | ast.Tuple) and len(argv.elts) >= 2
                and is_sys_executable(argv.elts[0]) and isinstance(argv.elts[1], ast.Constant)
                and argv.elts[1].value == "-c"):
            continue
        yield f"starts a program (subprocess.{name}, line {node.lineno})"


def functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Every function defined in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """The parameter names of a function: the fixtures pytest gives a test or a fixture."""
    args = node.args
    return [arg.arg for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs)]


def fixtures_named(tree: ast.AST) -> Iterator[str]:
    """The fixtures ``tree`` asks for: its functions' parameters, ``getfixturevalue("x")`` and
    ``usefixtures("x")``."""
    for function in functions(tree):
        yield from parameters(function)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and called(node)[1] in ("getfixturevalue", "usefixtures"):
            yield from (arg.value for arg in node.args
                        if isinstance(arg, ast.Constant) and isinstance(arg.value, str))


def property_verdicts(tree: ast.AST) -> Iterator[str]:
    """Why ``tree`` is a property test: it uses ``given`` or ``run_state_machine_as_test``."""
    for node in ast.walk(tree):
        name = node.id if isinstance(node, ast.Name) else (
            node.attr if isinstance(node, ast.Attribute) else None)
        if name in PROPERTY_NAMES:
            yield f"a property test (hypothesis: {name})"


def is_test(node: ast.stmt) -> bool:
    """Whether a top-level statement is a test pytest collects: ``test*`` or ``Test*``."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return node.name.startswith("test")
    return isinstance(node, ast.ClassDef) and node.name.startswith("Test")


def is_autouse(node: ast.stmt) -> bool:
    """Whether a top-level function is a fixture pytest uses for every test of its module."""
    return isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(
        isinstance(kw.value, ast.Constant) and kw.arg == "autouse" and kw.value.value is True
        for decorator in node.decorator_list if isinstance(decorator, ast.Call)
        for kw in decorator.keywords)


def defined_names(node: ast.stmt) -> list[str]:
    """The names a top-level definition or plain assignment binds."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [node.name]
    targets = node.targets if isinstance(node, ast.Assign) else (
        [node.target] if isinstance(node, ast.AnnAssign) else [])
    return [t.id for t in targets if isinstance(t, ast.Name)]


def is_lazy(node: ast.stmt) -> bool:
    """Whether a top-level statement runs only when used: a definition, or a name bound to a
    value computed without a call (a code string, say). Every other one runs on import."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return not is_autouse(node)
    if isinstance(node, ast.Assign | ast.AnnAssign) and defined_names(node):
        return node.value is not None and not any(
            isinstance(n, ast.Call) for n in ast.walk(node.value))
    return False


def uses(node: ast.stmt) -> frozenset[str]:
    """The names a top-level statement uses: to follow to the module's other statements."""
    return frozenset({n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                     | set(fixtures_named(node)))


def reached(test: ast.stmt, body: list[ast.stmt],
            used: dict[int, frozenset[str]]) -> list[ast.stmt]:
    """The top-level statements of a module ``test`` reaches (itself included); ``used``: the
    names each statement uses (:func:`uses`), by ``id``."""
    by_name: dict[str, list[ast.stmt]] = {}
    for node in body:
        if is_lazy(node) and node is not test:
            for name in defined_names(node):
                by_name.setdefault(name, []).append(node)
    found = [test, *(node for node in body if not is_lazy(node) and node is not test)]
    seen = {id(node) for node in found}
    queue = list(found)
    while queue:
        for name in used[id(queue.pop())]:
            for target in by_name.get(name, ()):
                if id(target) not in seen:
                    seen.add(id(target))
                    found.append(target)
                    queue.append(target)
    return found


def judge(node: ast.stmt, from_subprocess: frozenset[str]) -> Reach:
    """What in one top-level statement keeps a test that reaches it out of the core."""
    module = ast.Module(body=[node], type_ignores=[])
    names = [*imported(module), *(n for code in code_strings(module) for n in imported(code))]
    dynamic = [f"loads a module at run time ({name}, line {call.lineno})"
               for call in ast.walk(module) if isinstance(call, ast.Call)
               for name in [called(call)[1]] if name in DYNAMIC_IMPORTS]
    return Reach(
        imports=[*(why for why in map(module_verdict, names) if why), *dynamic],
        fixtures=[f"uses the fixture {name}" for name in fixtures_named(module)
                  if name in EDGE_FIXTURES],
        programs=list(program_verdicts(module, from_subprocess)),
        properties=list(property_verdicts(module)),
    )


def merged(parts: Iterable[Reach]) -> Reach:
    """One :class:`Reach` of several, each reason once, in order."""
    parts = list(parts)
    return Reach(*(list(dict.fromkeys(why for part in parts for why in getattr(part, kind)))
                   for kind in ("imports", "fixtures", "programs", "properties")))


def verdicts(source: str) -> dict[str, Reach]:
    """{test name: what keeps it out of the core} for a test module's source. Each top-level
    statement is judged once; a test gets what the statements it reaches hold."""
    tree = ast.parse(source)
    from_subprocess = frozenset(
        alias.asname or alias.name for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "subprocess"
        for alias in node.names)
    used = {id(node): uses(node) for node in tree.body}
    judged = {id(node): judge(node, from_subprocess) for node in tree.body}
    return {node.name: merged(judged[id(n)] for n in reached(node, tree.body, used))
            for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef
                                                | ast.ClassDef) and is_test(node)}


def select(tests: Path, files: Iterable[str], bridges: bool = False) -> list[str]:
    """The core tests of ``files`` (names in ``tests``), or with ``bridges`` the ``ci``
    selection's bridge tests, as ``test_x.py::test_y`` (a pytest node id below ``tests/``),
    in file order."""
    return [f"{name}::{test}" for name in files
            for test, reach in verdicts((tests / name).read_text(encoding="utf-8")).items()
            if (reach.ci_bridge if bridges else reach.core)]

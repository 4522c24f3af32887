"""Which test files this interpreter cannot collect, and why: run by :mod:`tools.pi_check` inside
each root as ``python3 -P tools/pi_imports.py tests/test_x.py ...`` (from the checkout's copy).

For every file, each module it imports at its top level (``import a.b``, ``from a.b import c``)
is imported here, with ``tests/`` on ``sys.path`` as pytest puts it; a module that fails to
import (a developer's tool the root does not have, an extra whose dependency has no wheel for
this processor, a test helper that needs one of those) leaves its file out. Prints one JSON
object: ``{file name: [the modules that failed, ...]}``, only for the files left out.
"""

from __future__ import annotations

import ast
import importlib
import json
import sys
from pathlib import Path


def top_level_imports(source: str) -> list[str]:
    """The dotted module names a module imports at its top level, in order, each once."""
    names: list[str] = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return list(dict.fromkeys(names))


def importable(name: str, seen: dict[str, bool]) -> bool:
    """Whether ``import name`` works here (remembered in ``seen``)."""
    if name not in seen:
        try:
            importlib.import_module(name)
            seen[name] = True
        except Exception:  # ImportError, or a module that fails while it loads: either way out
            seen[name] = False
    return seen[name]


def lacking(files: list[Path]) -> dict[str, list[str]]:
    """{file name: the modules it imports that fail here} for the files that cannot be collected."""
    seen: dict[str, bool] = {}
    found = {}
    for path in files:
        failed = [name for name in top_level_imports(path.read_text(encoding="utf-8"))
                  if not importable(name, seen)]
        if failed:
            found[path.name] = failed
    return found


def main(argv: list[str]) -> int:
    files = [Path(arg) for arg in argv]
    for folder in {str(path.parent.resolve()) for path in files}:
        sys.path.insert(0, folder)  # test helpers (conftest, served...) as pytest finds them
    print(json.dumps(lacking(files)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""A pytest plug-in of ``make pi-check`` (``-p pi_select``): leaves out, under emulation, the
tests that start ``serve`` in a subprocess, the few in :data:`TIMING_BOUND`, and those in
:data:`NEEDS_MODULE` whose module is not installed here (an extra left out on this processor).

Under qemu-user one ``serve`` takes 5-30 s to start (importing Flask, pydantic and pymodbus
through the emulator), against the 30 s those tests allow, and there are dozens of them: they
would make the check slow and flaky without testing anything the host does not. The emulated
``serve`` is checked once by :mod:`tools.pi_probe` instead. A test is left out when it uses the
``serve`` fixture or its module imports ``Served`` (tests/served.py). The node ids left out are
written, as a JSON list, to the file named by ``$PI_CHECK_DESELECTED`` when it is set.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

#: tests whose timing assumptions emulation breaks (every parameter of each), by node id: why.
#: They pass on the host; they are not about the processor.
TIMING_BOUND = {
    "tests/test_bridge_serial.py::test_a_stalled_line_does_not_stall_the_other_subscribers":
        "encodes a 32 MB RUN line and allows 5 s until its first byte arrives",
    "tests/test_bridge_contract.py::"
    "test_an_outage_invalidates_the_signals_holds_work_and_the_return_releases_it":
        "expects a reconnect attempt to begin after the peer is back; emulated, the attempt "
        "begun before can be the one that connects",
}


#: tests that compare the checkout's files with the package's own folder, so they need the
#: package imported from the checkout (an editable install), not installed as the roots have it
CHECKOUT_ONLY = {
    "tests/test_dashboard_http.py::test_every_dashboard_file_is_package_data":
        "globs setup.cfg's package data over the checkout and compares the package's folder",
}

#: tests that import a module inside the test (so collecting them does not need it), by node
#: id: that module. Left out where it is not installed (mcp: no wheel of cffi on armhf).
NEEDS_MODULE = {
    "tests/test_import.py::test_mcp_and_rest_layers_import_only_their_own_extras": "mcp",
}


def left_out(item: pytest.Item) -> bool:
    """Whether ``item`` starts ``serve`` in a subprocess, is in :data:`TIMING_BOUND`, or needs
    a module (:data:`NEEDS_MODULE`) this interpreter does not have."""
    node = item.nodeid.split("[")[0]
    if node in TIMING_BOUND or node in CHECKOUT_ONLY:
        return True
    if node in NEEDS_MODULE and importlib.util.find_spec(NEEDS_MODULE[node]) is None:
        return True
    uses_fixture = "serve" in getattr(item, "fixturenames", ())
    module = getattr(item, "module", None)
    return uses_fixture or (module is not None and hasattr(module, "Served"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect those tests (reported like ``-m`` deselections)."""
    dropped = [item for item in items if left_out(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not left_out(item)]
    target = os.environ.get("PI_CHECK_DESELECTED")
    if target:
        Path(target).write_text(json.dumps([item.nodeid for item in dropped]),
                                encoding="utf-8")

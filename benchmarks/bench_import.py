"""``import operation_dispatcher`` timed in-process in a fresh interpreter, median of 5.

Each sample is a new ``python -c`` that reads ``time.perf_counter_ns`` around the import and prints
the elapsed time, so interpreter start-up is excluded and nothing is cached in ``sys.modules``.
Baseline: the same for the stdlib modules the core is built from, in a fresh interpreter too.
Target (design.md section 11): <= 60 ms. One unmeasured run first makes sure the bytecode
caches exist, as they do after installation: the samples run with the caches in a temporary
``PYTHONPYCACHEPREFIX`` and without ``PYTHONDONTWRITEBYTECODE``, which, when set in the caller's
environment, made every sample compile all the core's modules from source (~100 ms instead of
~50). ``cpu_ms`` is the same import in process CPU time, which the other load on a shared
machine changes far less than the wall time.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import emit

ROOT = Path(__file__).resolve().parent.parent
REPEAT = 5
TARGET = "operation_dispatcher"
BASELINE = "json, heapq, threading, dataclasses, uuid, datetime"
_PROBE = (
    "import time\n"
    "c0, t0 = time.process_time_ns(), time.perf_counter_ns()\n"
    "import {modules}\n"
    "t1, c1 = time.perf_counter_ns(), time.process_time_ns()\n"
    "import sys\n"
    "print(t1 - t0, c1 - c0, len(sys.modules))\n"
)


def import_ms(modules: str, pycache: str) -> tuple[float, float, int]:
    """(wall ms, CPU ms to import ``modules`` in a fresh interpreter, modules loaded in total),
    with the bytecode caches in ``pycache``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = pycache  # written there, not into the checkout
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(modules=modules)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    return int(out[0]) / 1e6, int(out[1]) / 1e6, int(out[2])


def median_ms(modules: str, pycache: str) -> tuple[float, list[float], float, int]:
    """(median wall ms, the wall samples, median CPU ms, modules loaded)."""
    import_ms(modules, pycache)  # warm-up: bytecode caches written, files in the page cache
    samples = [import_ms(modules, pycache) for _ in range(REPEAT)]
    times = [wall for wall, _, _ in samples]
    cpu = statistics.median(c for _, c, _ in samples)
    return statistics.median(times), times, cpu, samples[-1][2]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-import-pycache-") as pycache:
        ours, ours_samples, ours_cpu, ours_modules = median_ms(TARGET, pycache)
        base, base_samples, base_cpu, base_modules = median_ms(BASELINE, pycache)
    emit(
        "import.operation_dispatcher",
        ours,
        "ms",
        base,
        target="<= 60 ms",
        repeat=REPEAT,
        samples_ms=[round(ms, 2) for ms in ours_samples],
        baseline_samples_ms=[round(ms, 2) for ms in base_samples],
        cpu_ms=round(ours_cpu, 2),
        baseline_cpu_ms=round(base_cpu, 2),
        sys_modules=ours_modules,
        baseline_sys_modules=base_modules,
        baseline_desc=f"import {BASELINE}",
    )


if __name__ == "__main__":
    main()

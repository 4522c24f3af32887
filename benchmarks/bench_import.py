"""``import operation_dispatcher`` timed in-process in a fresh interpreter, median of 5.

Each sample is a new ``python -c`` that reads ``time.perf_counter_ns`` around the import and prints
the elapsed time, so interpreter start-up is excluded and nothing is cached in ``sys.modules``.
Baseline: the same for the stdlib modules the core is built from, in a fresh interpreter too.
Target (design.md section 11): <= 60 ms. One unmeasured run first makes sure the bytecode
caches exist, as they do after installation.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.common import emit

ROOT = Path(__file__).resolve().parent.parent
REPEAT = 5
TARGET = "operation_dispatcher"
BASELINE = "json, heapq, threading, dataclasses, uuid, datetime"
_PROBE = (
    "import time\n"
    "t0 = time.perf_counter_ns()\n"
    "import {modules}\n"
    "t1 = time.perf_counter_ns()\n"
    "import sys\n"
    "print(t1 - t0, len(sys.modules))\n"
)


def import_ms(modules: str) -> tuple[float, int]:
    """(ms to import ``modules`` in a fresh interpreter, modules loaded in total)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(modules=modules)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    return int(out[0]) / 1e6, int(out[1])


def median_ms(modules: str) -> tuple[float, list[float], int]:
    import_ms(modules)  # warm-up: bytecode caches written, files in the page cache
    samples = [import_ms(modules) for _ in range(REPEAT)]
    times = [ms for ms, _ in samples]
    return statistics.median(times), times, samples[-1][1]


def main() -> None:
    ours, ours_samples, ours_modules = median_ms(TARGET)
    base, base_samples, base_modules = median_ms(BASELINE)
    emit(
        "import.operation_dispatcher",
        ours,
        "ms",
        base,
        target="<= 60 ms",
        repeat=REPEAT,
        samples_ms=[round(ms, 2) for ms in ours_samples],
        baseline_samples_ms=[round(ms, 2) for ms in base_samples],
        sys_modules=ours_modules,
        baseline_sys_modules=base_modules,
        baseline_desc=f"import {BASELINE}",
    )


if __name__ == "__main__":
    main()

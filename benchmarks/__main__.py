"""Run the benchmarks: ``python -m benchmarks [NAME-FILTER ...]``.

Every ``benchmarks/bench_*.py`` module runs, in name order, in its own fresh interpreter
(``sys.executable -m benchmarks.bench_xxx``), so one benchmark's memory, threads or warmed caches
cannot skew the next. Their JSON lines are streamed to stdout as they come; anything a module
prints on stdout that is not a JSON object goes to stderr and counts as a failure, so stdout
stays machine-readable. With filters, only the modules whose name contains one of them run
(``python -m benchmarks queue``). The exit status is non-zero if any module failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: A module that has not finished after this many seconds is killed and counted as failed.
TIMEOUT_SECONDS = float(os.environ.get("BENCH_TIMEOUT", "300"))


def discover(filters: list[str]) -> list[str]:
    """Module names (``bench_queue``, ...) in name order, keeping those matching a filter."""
    names = sorted(path.stem for path in HERE.glob("bench_*.py"))
    if filters:
        names = [name for name in names if any(f in name for f in filters)]
    return names


def run_module(name: str) -> tuple[bool, str]:
    """Run one benchmark module in a fresh interpreter, streaming its lines; (ok, why not)."""
    env = dict(os.environ)
    root = str(HERE.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", f"{HERE.name}.{name}"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=None,  # inherited: tracebacks and progress notes go straight to our stderr
        text=True,
        bufsize=1,
    )
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        proc.kill()

    watchdog = threading.Timer(TIMEOUT_SECONDS, kill)
    watchdog.daemon = True
    watchdog.start()
    bad_lines = 0
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            text = line.rstrip("\n")
            if not text.strip():
                continue
            try:
                ok = isinstance(json.loads(text), dict)
            except ValueError:
                ok = False
            if ok:
                print(text, flush=True)
            else:
                bad_lines += 1
                print(f"[{name}] not a JSON line: {text}", file=sys.stderr, flush=True)
        returncode = proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:  # we are leaving early (e.g. Ctrl-C): do not leave it behind
            proc.kill()
            proc.wait()
    if timed_out.is_set():
        return False, f"timed out after {TIMEOUT_SECONDS:.0f} s (BENCH_TIMEOUT)"
    if returncode != 0:
        return False, f"exited with status {returncode}"
    if bad_lines:
        return False, f"printed {bad_lines} line(s) that are not JSON objects"
    return True, ""


def main(argv: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__.strip())
        return 0
    names = discover(argv)
    if not names:
        wanted = " or ".join(repr(a) for a in argv)
        print(f"no benchmark module matches {wanted}", file=sys.stderr)
        return 2
    failed: list[str] = []
    started = time.monotonic()
    for name in names:
        module_started = time.monotonic()
        ok, why = run_module(name)
        elapsed = time.monotonic() - module_started
        status = "ok" if ok else f"FAILED: {why}"
        print(f"[{name}] {status} ({elapsed:.1f} s)", file=sys.stderr, flush=True)
        if not ok:
            failed.append(name)
    total = time.monotonic() - started
    summary = f"{len(names)} module(s) in {total:.1f} s"
    if failed:
        print(f"{summary}; failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"{summary}; all ok", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""What a Pi user feels, measured here: ``python -m tools.pi_probe`` prints one JSON line.

Run by :mod:`tools.pi_check` on the host and inside each emulated root, so the figures stand
side by side from the same run:

* ``import_ms``: ``import operation_dispatcher`` (the core) in a fresh interpreter, median of 3
  (``--samples``) after one warm-up; ``import_serve_ms``: the same for what ``serve`` loads
  (CLI, REST API, Modbus bridge);
* ``serve`` as a user runs it, in its own process, against a simulated PLC on Modbus TCP (the
  bridge of ``examples/plc.toml``, polling every 0.1 s): ``startup_ms`` from the spawn to the
  first answer of ``GET /health``; once the bridge is online and has settled, ``idle_rss_mb``
  (VmRSS) and ``idle_cpu_percent`` (the process's user + system CPU over a 5 s idle window,
  ``--idle-seconds``, as a share of one core); ``ops_per_second``: 20 operations added with
  one ``POST /operations/add`` and run by the PLC (cycle time 0), from the request to the
  last one COMPLETED: bound by the bridge's 0.1 s poll on a fast machine;
* ``http_ops_per_second``: a second ``serve``, without a bridge, its journal on; 50 operations
  added with one request, then each finished over HTTP in turn (``POST .../complete``): the
  dispatcher, the journal (``synchronous=FULL``) and the REST API, with no PLC to wait for.

Stdlib only (plus the package), so it measures the package and nothing of a client library.
Under qemu-user, RSS and CPU are those of the emulator process running the interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

OPERATIONS = 20
HTTP_OPERATIONS = 50
IDLE_SECONDS = 5.0
SAMPLES = 3
SETTLE_SECONDS = 1.0
STARTUP_TIMEOUT = 120.0
SERVE_MODULES = "operation_dispatcher.cli, operation_dispatcher.http, firmware_bridges.modbus"
CONFIG = """\
[dispatcher]
resource_id = "cell-1"

[journal]
path = "{journal}"

[[bridges]]
type = "modbus"
name = "plc"
host = "127.0.0.1"
port = {port}
poll_interval = 0.1
timeout = 1.0

[bridges.signals]
ready = {{kind = "discrete_input", address = 0}}

[bridges.executor]
program_register = 0
start_coil = 0
done_coil = 1
error_coil = 2
error_code_register = 1
"""


def import_ms(modules: str, cwd: Path, samples: int = SAMPLES) -> float:
    """Milliseconds to import ``modules`` in a fresh interpreter in ``cwd`` (start-up
    excluded), median of ``samples`` after a warm-up that writes the bytecode caches."""
    probe = (f"import time\nt0 = time.perf_counter_ns()\nimport {modules}\n"
             "print((time.perf_counter_ns() - t0) / 1e6)\n")
    times = [float(subprocess.run([sys.executable, "-c", probe], capture_output=True, cwd=cwd,
                                  text=True, check=True, timeout=300).stdout)
             for _ in range(1 + samples)]
    return statistics.median(times[1:])


def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    """(status, decoded JSON) of one request."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return answer.status, json.loads(answer.read() or b"null")


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    """Poll ``condition`` (every 20 ms) until it returns something true; its value."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout} s")
        time.sleep(0.02)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def serving_url(proc: subprocess.Popen[str]) -> str:
    """The URL ``serve`` prints on its first line (``...: serving 'x' on http://...``)."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(STARTUP_TIMEOUT):
            raise TimeoutError("serve printed nothing")
    line = proc.stdout.readline()
    if " on " not in line:
        raise RuntimeError(f"serve did not start: {line!r}")
    return line.split(" on ", 1)[1].split()[0]


def start_serve(args: list[str], workdir: Path) -> tuple[subprocess.Popen[str], str]:
    """``serve ARGS --port 0`` in ``workdir``: the process and the URL it serves."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "operation_dispatcher", "serve", *args, "--port", "0",
         "--log-level", "WARNING"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        return proc, serving_url(proc)
    except Exception:
        proc.kill()
        proc.communicate()
        raise


def measure_serve(workdir: Path, idle_seconds: float = IDLE_SECONDS) -> dict[str, Any]:
    """``serve`` with a simulated PLC: start-up, idle RSS and CPU, operations/s."""
    from firmware_bridges.simulators.plc import PlcSimulator

    with PlcSimulator(cycle_time=0.0, ready=True) as plc:
        config = workdir / "pi-probe.toml"
        config.write_text(CONFIG.format(journal=workdir / "journal.db", port=plc.port))
        started = time.monotonic()
        proc, url = start_serve(["--config", str(config)], workdir)
        try:
            status, _ = wait_for(lambda: http("GET", url + "/health"), STARTUP_TIMEOUT, "health")
            startup_ms = (time.monotonic() - started) * 1000
            wait_for(lambda: http("GET", url + "/bridges/plc")[1]["online"], STARTUP_TIMEOUT,
                     "online PLC bridge")
            time.sleep(SETTLE_SECONDS)  # measuring idleness: there is nothing to wait for
            cpu_before, window_start = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(idle_seconds)
            idle_cpu = (cpu_seconds(proc.pid) - cpu_before) / (time.monotonic() - window_start)
            idle_rss = rss_mb(proc.pid)
            started = time.monotonic()
            code, added = http("POST", url + "/operations/add",
                               [{"payload": {"program": 1}} for _ in range(OPERATIONS)])
            ids = [entry["operation"]["id"] for entry in added]

            def finished() -> bool:
                op = http("GET", f"{url}/operations/{ids[-1]}")[1]["operation"]
                return op["state"] == "COMPLETED"

            wait_for(finished, 300, "last operation COMPLETED")
            elapsed = time.monotonic() - started
            outcomes = sorted({http("GET", f"{url}/operations/{i}")[1]["operation"]["outcome"]
                               for i in ids})
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=60)
    return {
        "ok": status == 200 and code == 201 and outcomes == ["SUCCESS"]
        and proc.returncode == 0,
        "http_status": status, "add_status": code, "outcomes": outcomes,
        "serve_exit_status": proc.returncode, "serve_stderr_tail": stderr[-500:],
        "startup_ms": round(startup_ms, 1), "idle_rss_mb": round(idle_rss, 1),
        "idle_cpu_percent": round(idle_cpu * 100, 2),
        "ops_per_second": round(OPERATIONS / elapsed, 2), "operations": OPERATIONS,
    }


def measure_http_ops(workdir: Path) -> dict[str, Any]:
    """``serve`` without a bridge, its journal on: HTTP_OPERATIONS operations added with one
    request, then each finished over HTTP (``POST /operations/<id>/complete``, retried while it
    has not started yet) in turn: the dispatcher, the journal and the REST API, no PLC."""
    proc, url = start_serve(["--resource-id", "bench", "--journal",
                             str(workdir / "http-journal.db")], workdir)
    try:
        wait_for(lambda: http("GET", url + "/health"), STARTUP_TIMEOUT, "health")
        started = time.monotonic()
        _, added = http("POST", url + "/operations/add",
                        [{"payload": {"n": i}} for i in range(HTTP_OPERATIONS)])
        for entry in added:
            path = f"{url}/operations/{entry['operation']['id']}/complete"
            wait_for(lambda path=path: complete(path), 60, "a start to complete")
        elapsed = time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    return {"http_ops_per_second": round(HTTP_OPERATIONS / elapsed, 1),
            "http_operations": HTTP_OPERATIONS, "http_serve_exit_status": proc.returncode}


def complete(url: str) -> bool:
    """POST ``url`` (a ``/complete``): True once it answers 200, False while 409 (not running)."""
    try:
        return http("POST", url, {})[0] == 200
    except urllib.error.HTTPError as exc:
        if exc.code != 409:
            raise
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.pi_probe", description=__doc__)
    parser.add_argument("--idle-seconds", type=float, default=IDLE_SECONDS,
                        help=f"the idle CPU window (default {IDLE_SECONDS})")
    parser.add_argument("--samples", type=int, default=SAMPLES,
                        help=f"timed imports after the warm-up, their median (default {SAMPLES})")
    args = parser.parse_args(argv)
    if not 0 < args.idle_seconds <= 60:
        parser.error("--idle-seconds must be more than 0 and at most 60")
    if not 1 <= args.samples <= 9:
        parser.error("--samples must be from 1 to 9")
    figures: dict[str, Any] = {"machine": platform.machine(),
                               "python": platform.python_version()}
    try:
        # every child runs in a folder of its own, so what it imports is the installed package
        with tempfile.TemporaryDirectory(prefix="pi-probe-") as workdir:
            figures["import_ms"] = round(
                import_ms("operation_dispatcher", Path(workdir), args.samples), 1)
            figures["import_serve_ms"] = round(
                import_ms(SERVE_MODULES, Path(workdir), args.samples), 1)
            figures["import_samples"] = args.samples
            figures.update(measure_serve(Path(workdir), args.idle_seconds))
            figures.update(measure_http_ops(Path(workdir)))
            figures["ok"] = figures["ok"] and figures["http_serve_exit_status"] == 0
    except Exception as exc:  # reported, not raised: pi_check prints the line either way
        figures.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    print(json.dumps(figures), flush=True)
    return 0 if figures.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())

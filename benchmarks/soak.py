"""The soak: ``serve`` under a steady mixed load for a given time, proving nothing grows.

    python -m benchmarks.soak --duration 60            # make soak DURATION=60 (CI)
    python -m benchmarks.soak --duration 1800 --interval 10

It starts a simulated Modbus PLC (the executor) and a simulated serial device (signals only),
then ``operation-dispatcher serve`` in a subprocess with both as bridges, approvals of starts
by an operator (``[approvals] start = "operator"``), a small ``[journal] max_bytes`` and
``operation_retention`` (memory), so that both retentions really run within minutes. Operations
wait for the serial device's ``mcu.tray`` signal. A client adds operations (keeping about 20
queued), approves most start requests and denies some, cancels queued operations, reports
progress of the running one, reads the operations, their events, explanations, the history,
signals, bridges and health, and keeps an event stream open (reconnecting every 30 s).

Every ``--interval`` seconds it samples the server process from ``/proc/<pid>``: RSS, open file
descriptors, threads and CPU share since the previous sample, plus the journal's and its WAL's
sizes, and prints one JSON line; the last line is the verdict. The rule for "grows without
bound", for RSS, descriptors, threads and CPU: over the second half of the samples (the first
half is warm-up: caches and the in-memory retention fill) the least-squares slope is above the
metric's limit per hour AND the rise it fits over that half is above the metric's allowance (a
slope alone is noise on a short run: a 60 s run catches only gross leaks, a 30-minute run an RSS
growth of 16 MiB/h). The journal must stay within ``max_bytes`` plus one
unit of work, and the WAL within its 4 MiB limit plus one checkpoint's worth (1000 pages). A
server error (5xx) or a failed request fails the soak too. Exit status 0: passed, 1: failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from firmware_bridges.simulators.plc import PlcSimulator
from firmware_bridges.simulators.serial_device import SerialDeviceSimulator

#: the journal's size limit during the soak: small, so that retention runs within minutes
JOURNAL_MAX_BYTES = 1024 * 1024
#: the WAL's bound: its 4 MiB limit plus one autocheckpoint's worth (1000 pages of 4 KiB)
WAL_BOUND = 4 * 1024 * 1024 + 1000 * 4096
#: what one unit of work may add beyond max_bytes before the next commit prunes
JOURNAL_SLACK = 512 * 1024
QUEUE_TARGET = 20
#: finished operations kept in memory: reached within minutes, so the plateau is measured
OPERATION_RETENTION = 1000
#: finishing event types, and the counter each one adds to
FINISHED = {
    "operation_completed": "completed", "operation_failed": "failed",
    "operation_cancelled": "cancelled_events",
}


@dataclass(frozen=True)
class Limit:
    """Growth limit of one metric: slope per hour over the second half, and the rise over that
    half (slope times its length) allowed as noise."""

    per_hour: float
    allowance: float


LIMITS = {
    "rss_bytes": Limit(per_hour=16 * 1024 * 1024, allowance=4 * 1024 * 1024),
    "fds": Limit(per_hour=4, allowance=3),
    "threads": Limit(per_hour=2, allowance=2),
    "cpu_percent": Limit(per_hour=20, allowance=10),
}


# ------------------------------------------------------------------------------ sampling


def _proc_stat(pid: int) -> tuple[int, int]:
    """(threads, utime + stime in clock ticks) of the process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[17]), int(fields[11]) + int(fields[12])


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class Sampler:
    """Samples of one process and its journal; CPU as a share of one core since the last one."""

    def __init__(self, pid: int, journal: Path) -> None:
        self.pid = pid
        self.journal = journal
        self._tick = os.sysconf("SC_CLK_TCK")
        self._last: tuple[float, int] | None = None

    def sample(self, elapsed: float) -> dict[str, Any]:
        threads, cpu_ticks = _proc_stat(self.pid)
        now = time.monotonic()
        cpu = 0.0
        if self._last is not None:
            wall = now - self._last[0]
            cpu = 100.0 * (cpu_ticks - self._last[1]) / self._tick / wall if wall > 0 else 0.0
        self._last = (now, cpu_ticks)
        return {
            "t": round(elapsed, 1),
            "rss_bytes": _rss_bytes(self.pid),
            "fds": len(os.listdir(f"/proc/{self.pid}/fd")),
            "threads": threads,
            "cpu_percent": round(cpu, 1),
            "journal_bytes": _size(self.journal),
            "wal_bytes": _size(self.journal.with_name(self.journal.name + "-wal")),
        }


# ------------------------------------------------------------------------------ the verdict


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per hour; 0 for fewer than 2 points."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return 3600.0 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var


def verdict(samples: list[dict[str, Any]], errors: int) -> dict[str, Any]:
    """Pass or fail, with each metric's slope and why (see the module doc for the rule)."""
    failures: list[str] = []
    slopes: dict[str, float] = {}
    # the first sample's CPU share covers nothing (no previous sample): leave it out
    usable = samples[1:] if len(samples) > 2 else samples
    second = usable[len(usable) // 2:]
    span_hours = (second[-1]["t"] - second[0]["t"]) / 3600 if second else 0.0
    for metric, limit in LIMITS.items():
        slope = slope_per_hour([(s["t"], s[metric]) for s in second])
        slopes[metric] = round(slope, 1)
        rise = slope * span_hours
        if slope > limit.per_hour and rise > limit.allowance:
            failures.append(
                f"{metric} grows: {slope:.1f}/h over the second half (limit {limit.per_hour:g}), "
                f"{rise:.1f} in {span_hours * 60:.1f} min (allowance {limit.allowance:g})"
            )
    journal_peak = max((s["journal_bytes"] for s in samples), default=0)
    if journal_peak > JOURNAL_MAX_BYTES + JOURNAL_SLACK:
        failures.append(f"journal reached {journal_peak} bytes, beyond max_bytes + slack")
    wal_peak = max((s["wal_bytes"] for s in samples), default=0)
    if wal_peak > WAL_BOUND:
        failures.append(f"WAL reached {wal_peak} bytes, beyond {WAL_BOUND}")
    if errors:
        failures.append(f"{errors} requests failed (5xx or no answer)")
    return {
        "verdict": "fail" if failures else "pass", "failures": failures, "slopes_per_hour": slopes,
        "journal_peak_bytes": journal_peak, "wal_peak_bytes": wal_peak, "samples": len(samples),
    }


# ------------------------------------------------------------------------------ the load


class Load:
    """The client: a few named threads, each one kind of traffic, until ``stop`` is set."""

    def __init__(self, url: str, stop: threading.Event, seed: int = 16) -> None:
        self.url = url
        self.stop = stop
        self.counts: Counter[str] = Counter()
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.counts[what] += n

    def _call(self, session: requests.Session, method: str, path: str, **kwargs: Any) -> Any:
        """One request; a 5xx or no answer counts as an error (None), a 4xx is a normal no."""
        try:
            response = session.request(method, self.url + path, timeout=30, **kwargs)
        except requests.RequestException as exc:
            self._fail(f"{method} {path}: {type(exc).__name__}: {exc}")
            return None
        if response.status_code >= 500:
            self._fail(f"{method} {path}: {response.status_code} {response.text[:200]}")
            return None
        self._count("requests")
        if response.status_code >= 400:
            self._count("refused")
            return None
        return response.json() if response.content else {}

    def _fail(self, text: str) -> None:
        with self._lock:
            self.counts["errors"] += 1
            if len(self.failures) < 20:
                self.failures.append(text)

    def _every(self, seconds: float, step: Callable[[requests.Session], None]) -> None:
        with requests.Session() as session:
            while not self.stop.wait(seconds):
                step(session)

    def threads(self) -> list[threading.Thread]:
        steps: list[tuple[str, float, Callable[[requests.Session], None]]] = [
            ("add", 0.2, self._add),
            ("approve", 0.1, self._approve),
            ("cancel", 2.0, self._cancel),
            ("progress", 0.5, self._progress),
            ("read", 0.25, self._read),
        ]
        threads = [
            threading.Thread(target=self._every, args=(every, step), name=f"soak-{name}")
            for name, every, step in steps
        ]
        threads.append(threading.Thread(target=self._stream, name="soak-stream"))
        return threads

    def _queued(self, session: requests.Session) -> list[dict[str, Any]] | None:
        return self._call(session, "GET", "/operations", params={"state": "QUEUED"})

    def _add(self, session: requests.Session) -> None:
        queued = self._queued(session)
        if queued is None or len(queued) >= QUEUE_TARGET:
            return
        batch = [
            {"payload": {"program": self._random.randint(1, 3)}, "priority": self._random.randint(0, 3),
             "release_conditions": {"mcu.tray": 1}, "job_id": f"soak-{self.counts['added'] + i}"}
            for i in range(self._random.randint(1, 3))
        ]
        if self._call(session, "POST", "/operations/add", json=batch) is not None:
            self._count("added", len(batch))

    def _approve(self, session: requests.Session) -> None:
        for request in self._call(session, "GET", "/requests") or []:
            deny = self._random.random() < 0.1
            verb = "deny" if deny else "approve"
            if self._call(session, "POST", f"/requests/{request['request_id']}/{verb}",
                          json={"reasoning": "soak"}) is not None:
                self._count("denied" if deny else "approved")
        state = self._call(session, "GET", "/dispatcher")
        if state is not None and state.get("is_paused"):  # denials in a row pause it
            self._call(session, "POST", "/dispatcher/resume")
            self._count("resumed")

    def _cancel(self, session: requests.Session) -> None:
        queued = self._queued(session)
        if queued:
            victim = self._random.choice(queued)["operation"]["id"]
            if self._call(session, "POST", f"/operations/{victim}/cancel") is not None:
                self._count("cancelled")

    def _progress(self, session: requests.Session) -> None:
        try:
            response = session.get(self.url + "/operations/current", timeout=30)
        except requests.RequestException as exc:
            self._fail(f"GET /operations/current: {exc}")
            return
        if response.status_code != 200:
            return
        current = response.json()["operation"]["id"]
        body = {"fraction": round(self._random.random(), 3), "message": "soak"}
        if self._call(session, "POST", f"/operations/{current}/progress", json=body) is not None:
            self._count("progress")

    def _read(self, session: requests.Session) -> None:
        operations = self._call(session, "GET", "/operations") or []
        self._call(session, "GET", "/health")
        self._call(session, "GET", "/operations/history", params={"limit": 50})
        self._call(session, "GET", "/signals")
        self._call(session, "GET", "/bridges")
        if operations:
            some = self._random.choice(operations)["operation"]["id"]
            self._call(session, "GET", f"/operations/{some}/events")
            self._call(session, "GET", f"/operations/{some}/explain")
        self._count("reads")

    def _stream(self) -> None:
        """Keep an event stream open, reconnecting every 30 s (opening and closing sockets)."""
        while not self.stop.is_set():
            until = time.monotonic() + 30.0
            try:
                with requests.get(self.url + "/events/stream", stream=True, timeout=30) as response:
                    for line in response.iter_lines():
                        if line.startswith(b"data:"):
                            self._count("stream_events")
                            kind = json.loads(line[5:]).get("event_type")
                            if kind in FINISHED:
                                self._count(FINISHED[kind])
                        if self.stop.is_set() or time.monotonic() > until:
                            break
            except requests.RequestException as exc:
                if not self.stop.is_set():
                    self._fail(f"GET /events/stream: {exc}")
                    self.stop.wait(1.0)


# ------------------------------------------------------------------------------ running it


def _config(folder: Path, plc_port: int, serial_url: str) -> Path:
    path = folder / "soak.toml"
    path.write_text(f"""
[dispatcher]
resource_id = "soak-cell"
request_event_timeout_seconds = 5.0
operation_retention = {OPERATION_RETENTION}

[approvals]
start = "operator"

[journal]
path = "{folder / 'journal.db'}"
max_bytes = {JOURNAL_MAX_BYTES}

[http]
host = "127.0.0.1"
port = 0
threads = 16

[[bridges]]
type = "modbus"
name = "plc"
host = "127.0.0.1"
port = {plc_port}
poll_interval = 0.05
max_age_seconds = 1.0

[bridges.signals]
ready = {{kind = "discrete_input", address = 0}}
cycles = {{kind = "input_register", address = 0}}

[bridges.executor]
program_register = 0
start_coil = 0
done_coil = 1
error_coil = 2
error_code_register = 1
cancel_coil = 3
pause_coil = 4
resume_coil = 5

[[bridges]]
type = "serial"
name = "mcu"
url = "{serial_url}"
max_age_seconds = 3.0
""")
    return path


def _serve(config: Path, folder: Path) -> tuple[subprocess.Popen[str], str]:
    with open(folder / "serve.log", "w") as log:  # the child keeps its own copy of the fd
        proc = subprocess.Popen(
            [sys.executable, "-m", "operation_dispatcher", "serve", "--config", str(config),
             "--log-level", "WARNING"],
            cwd=folder, stdout=subprocess.PIPE, stderr=log, text=True,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.wait(10)
        raise SystemExit(f"serve did not start: {line!r}\n{(folder / 'serve.log').read_text()}")
    return proc, line.split(" on ", 1)[1].split()[0]


def run(duration: float, interval: float, emit: Callable[[dict[str, Any]], None]) -> int:
    with tempfile.TemporaryDirectory(prefix="od-soak-") as tmp:
        folder = Path(tmp)
        plc = PlcSimulator(cycle_time=0.1)
        serial = SerialDeviceSimulator(signals={"tray": 1}, repeat_seconds=1.0)
        serial_url = serial.listen_tcp()
        with plc, serial.start():
            plc.set_ready(True)
            proc, url = _serve(_config(folder, plc.port, serial_url), folder)
            stop = threading.Event()
            load = Load(url, stop)
            threads = load.threads()
            sampler = Sampler(proc.pid, folder / "journal.db")
            samples: list[dict[str, Any]] = []
            began = time.monotonic()
            try:
                for thread in threads:
                    thread.start()
                while True:
                    elapsed = time.monotonic() - began
                    sample = sampler.sample(elapsed) | dict(sorted(load.counts.items()))
                    samples.append(sample)
                    emit(sample)
                    if elapsed >= duration or proc.poll() is not None:
                        break
                    time.sleep(min(interval, max(0.0, duration - elapsed)))
            finally:
                stop.set()
                for thread in threads:
                    thread.join(35)
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=30)
            result = verdict(samples, load.counts["errors"])
            if proc.returncode != 0:
                result["failures"].append(f"serve exited with {proc.returncode}")
                result["verdict"] = "fail"
            result["counts"] = dict(load.counts)
            result["request_failures"] = load.failures
            if result["verdict"] == "fail":
                result["serve_log_tail"] = (folder / "serve.log").read_text()[-2000:]
            emit(result)
            return 0 if result["verdict"] == "pass" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    args = parser.parse_args(argv)
    if not (args.duration > 0 and args.interval > 0):
        parser.error("--duration and --interval must be > 0")

    def emit(line: dict[str, Any]) -> None:
        print(json.dumps(line), flush=True)

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM too: stop serve and the simulators on the way out

    signal.signal(signal.SIGTERM, interrupted)
    return run(args.duration, args.interval, emit)


if __name__ == "__main__":
    sys.exit(main())

"""The dashboard in a real headless Chromium: page load to first full render, and the server's
CPU per connected, idle page.

* ``dashboard.first_render``: milliseconds from navigation start to the page's
  ``dashboard-rendered`` performance mark (set once every part has been read and drawn: queue
  with its explain reasons, requests, signals, bridges, the Gantt from 1,000 history events,
  the event log, the key figures), read from Chromium's performance timeline, against a cell
  with 1,000 queued operations and 10,000 events in its history (2,500 finished operations).
  Median of ``LOAD_ROUNDS`` fresh page loads. Baseline: a stdlib ``http.server`` answering one
  server-rendered HTML page of the same 1,000 queued operations and 1,000 latest events (the
  page's whole data, without scripts), its ``loadEventEnd`` in the same browser.
* ``dashboard.idle_cpu_per_page``: the CPU the ``serve`` process (a child, measured from
  /proc) uses per second with 10 idle dashboards connected, minus what it uses with none,
  divided by 10 (ms of CPU per second per page). Baseline: the idle server's own ms/s. The
  pages keep their event streams open (with the live frames of requests, signals and bridges,
  so they poll nothing); an idle stream costs one heartbeat every 15 s.

Needs Chromium (``$CHROMIUM``, default /usr/bin/chromium) and Playwright for Python (the dev
extra); without them the module says so on stderr and emits nothing.
"""

from __future__ import annotations

import html
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from benchmarks.common import emit

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
RESOURCE = "robot-1"
FINISHED = 2_500            # x 4 events each = 10,000 history events
QUEUED = 1_000
LOAD_ROUNDS = 5
IDLE_PAGES = 10
IDLE_SECONDS = 20.0


def build_cell() -> Any:
    """A paused dispatcher with 10,000 events of history and 1,000 queued operations."""
    from operation_dispatcher import Operation, OperationDispatcher

    dispatcher = OperationDispatcher(RESOURCE)
    for index in range(FINISHED):
        dispatcher.add_operation(Operation(
            resource_id=RESOURCE, payload={"name": f"weld {index}"}, planned_duration=30.0))
        started = dispatcher.step_dispatch()
        assert started is not None
        dispatcher.complete_operation(started.id)
    dispatcher.start()
    dispatcher.pause_dispatcher_runtime()
    dispatcher.add_operations(
        Operation(resource_id=RESOURCE, payload={"name": f"press {index}"}, priority=index % 7,
                  planned_duration=20.0)
        for index in range(QUEUED)
    )
    return dispatcher


def static_page(dispatcher: Any) -> bytes:
    """The same data as one server-rendered HTML page (the baseline)."""
    rows = [
        f"<tr><td>{html.escape(str(op.payload.get('name')))}</td><td>{op.priority}</td>"
        f"<td>{op.state.value}</td></tr>"
        for op in dispatcher.get_schedule()
    ]
    events = [
        f"<li>{event.created_at.isoformat()} {event.event_type.value} {event.operation_id}</li>"
        for event in reversed(dispatcher.get_history(limit=1000).events)
    ]
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>baseline</title></head>"
            f"<body><table>{''.join(rows)}</table><ol>{''.join(events)}</ol></body></html>")
    return page.encode()


def serve_static(body: bytes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(200 if self.path == "/" else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body) if self.path == "/" else 0))
            self.end_headers()
            if self.path == "/":
                self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, name="baseline-http", daemon=True).start()
    return server


def load_ms(browser: Any, url: str, ready: str, entry: str) -> float:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(url)
        page.wait_for_selector(ready, state="attached", timeout=60_000)
        return float(page.evaluate(entry))
    finally:
        context.close()


def first_render(browser: Any) -> None:
    from operation_dispatcher.http import ApiServer, create_app

    dispatcher = build_cell()
    events = len(dispatcher.get_history().events)
    api = ApiServer(create_app(dispatcher), port=0, threads=8)
    baseline = serve_static(static_page(dispatcher))
    api.start()
    try:
        rendered = "performance.getEntriesByName('dashboard-rendered')[0].startTime"
        loaded = "performance.getEntriesByType('navigation')[0].loadEventEnd"
        load_ms(browser, api.url + "/dashboard", "body[data-rendered]", rendered)  # warm-up
        load_ms(browser, f"http://127.0.0.1:{baseline.server_port}/", "ol", loaded)
        ours, base = [], []
        for _ in range(LOAD_ROUNDS):
            ours.append(load_ms(browser, api.url + "/dashboard", "body[data-rendered]", rendered))
            base.append(load_ms(browser, f"http://127.0.0.1:{baseline.server_port}/", "ol",
                                "new Promise(r => setTimeout(() => r("
                                "performance.getEntriesByType('navigation')[0].loadEventEnd)))"))
        emit(
            "dashboard.first_render", statistics.median(ours), "ms", statistics.median(base),
            target="<= 3000 ms", queued=QUEUED, history_events=events, rounds=LOAD_ROUNDS,
            browser=browser.version,
            baseline_desc="stdlib http.server page of the same 1,000 queued + 1,000 events, "
                          "server-rendered, no script (loadEventEnd)",
        )
    finally:
        api.stop()
        baseline.shutdown()
        baseline.server_close()
        dispatcher.stop()


def cpu_ms(pid: int) -> float:
    """CPU time of process ``pid``, in ms: the sum over its live threads of the scheduler's
    nanosecond count (/proc/PID/task/TID/schedstat; /proc/PID/stat counts 10 ms ticks, too
    coarse for an idle server)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
    return total / 1e6


def cpu_rate(pid: int, seconds: float) -> float:
    """ms of CPU per second the process uses over ``seconds``."""
    before, started = cpu_ms(pid), time.monotonic()
    time.sleep(seconds)  # a measurement window, not a synchronisation
    return (cpu_ms(pid) - before) / (time.monotonic() - started)


def idle_cpu(browser: Any) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    config = folder / "serve.toml"
    config.write_text(
        f'[journal]\npath = ":memory:"\n[http]\nthreads = {IDLE_PAGES + 14}\n'
        f"max_event_streams = {IDLE_PAGES + 4}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "operation_dispatcher", "serve", "--port", "0", "--config",
         str(config), "--log-level", "WARNING"],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    contexts = []
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split(" on ", 1)[1].split()[0]
        cpu_rate(proc.pid, 2.0)  # settle after start-up
        alone = cpu_rate(proc.pid, IDLE_SECONDS)
        for _ in range(IDLE_PAGES):
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.goto(url + "/dashboard")
            page.wait_for_selector("body[data-rendered]", state="attached", timeout=60_000)
            contexts.append(context)
        cpu_rate(proc.pid, 2.0)  # the pages' first reads are over
        with_pages = cpu_rate(proc.pid, IDLE_SECONDS)
        per_page = max(0.0, with_pages - alone) / IDLE_PAGES
        emit(
            "dashboard.idle_cpu_per_page", per_page, "ms/s", alone,
            target="<= 0.5 ms/s", pages=IDLE_PAGES, seconds=IDLE_SECONDS,
            server_ms_per_s_alone=alone, server_ms_per_s_with_pages=with_pages,
            baseline_desc="the idle serve process's own CPU, no page connected (ms/s)",
        )
    finally:
        for context in contexts:
            context.close()
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("dashboard benchmark skipped: playwright is not installed (dev extra)",
              file=sys.stderr)
        return
    if not Path(CHROMIUM).exists():
        print(f"dashboard benchmark skipped: no Chromium at {CHROMIUM}", file=sys.stderr)
        return
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            first_render(browser)
            idle_cpu(browser)
        finally:
            browser.close()


if __name__ == "__main__":
    main()

"""``operation-dispatcher serve`` in a subprocess, for the CLI tests (see the ``serve`` fixture)."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

STARTUP_SECONDS = 30


def read_until(proc: subprocess.Popen[str], done: Callable[[str], bool], timeout: float) -> str:
    """Read ``proc``'s stdout (raw reads: no buffer hides a line) until ``done(text)`` holds, it
    ends or ``timeout`` passes; all the text read."""
    assert proc.stdout is not None
    text = ""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while not done(text) and (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                break
            chunk = os.read(proc.stdout.fileno(), 65536).decode()
            if not chunk:
                break
            text += chunk
    return text


class Served:
    """``python -m operation_dispatcher serve --port 0 ...`` running in ``cwd``."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        environment = {k: v for k, v in os.environ.items() if k != "OPERATION_DISPATCHER_TOKEN"}
        environment.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "operation_dispatcher", "serve", "--port", "0",
             "--log-level", "WARNING", *args],
            cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.first_line = self._read_line(STARTUP_SECONDS)
        assert "serving" in self.first_line, (self.first_line, self._rest())
        self.url = self.first_line.split(" on ", 1)[1].split()[0]
        self.session = requests.Session()

    def _read_line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                return ""
        return self.proc.stdout.readline()

    def _rest(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stderr.read() if self.proc.stderr else ""

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.url + path, timeout=30, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.post(self.url + path, timeout=30, **kwargs)

    def poll(
        self, path: str, predicate: Callable[[Any], bool], timeout: float = 15.0, **kwargs: Any
    ) -> Any:
        """GET ``path`` until ``predicate(json)`` holds; the last JSON body."""
        deadline = time.monotonic() + timeout
        while True:
            body = self.get(path, **kwargs).json()
            if predicate(body):
                return body
            assert time.monotonic() < deadline, f"timed out waiting on {path}: {body}"
            time.sleep(0.02)  # polling an HTTP resource of another process: nothing to block on

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        """Send ``sig``; the exit status and the rest of stdout and stderr."""
        self.session.close()
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, err

"""``make fleet-demo`` as a user runs it: three cells on a local broker in the fleet table, and
Ctrl-C (SIGINT to the foreground process group) stops every process it started."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parent.parent / "examples" / "fleet" / "run.py"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_the_fleet_demo_shows_three_cells_and_ctrl_c_stops_everything() -> None:
    proc = subprocess.Popen([sys.executable, str(RUN)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert proc.stdout is not None
    text = ""
    online: set[str] = set()
    deadline = time.monotonic() + 25
    try:
        with selectors.DefaultSelector() as selector:  # raw reads: no buffer hides a line
            selector.register(proc.stdout, selectors.EVENT_READ)
            while len(online) < 3 and time.monotonic() < deadline:
                if not selector.select(deadline - time.monotonic()):
                    break
                chunk = os.read(proc.stdout.fileno(), 65536).decode()
                if not chunk:
                    break
                text += chunk
                online = set(re.findall(r"^(cell-\d)\s+ONLINE\s+running", text, re.M))
        assert online == {"cell-1", "cell-2", "cell-3"}, text[-3000:]
        broker_pid = int(re.search(r"\(pid (\d+)\)", text).group(1))
        assert alive(broker_pid)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C at the terminal sends
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-2000:]
    assert out.rstrip().endswith("fleet-demo: stopped"), out[-2000:]
    assert not alive(broker_pid)
    try:
        os.killpg(proc.pid, 0)
        survivors = True
    except ProcessLookupError:
        survivors = False
    assert not survivors, "a process of the demo is still running"

"""``make fleet-demo`` as a user runs it: three cells on a local broker in the fleet table, and
Ctrl-C (SIGINT to the foreground process group) stops every process it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from served import read_until

RUN = Path(__file__).resolve().parent.parent / "examples" / "fleet" / "run.py"


def online(text: str) -> set[str]:
    """The cells the demo's fleet table shows online and running."""
    return set(re.findall(r"^(cell-\d)\s+ONLINE\s+running", text, re.M))


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
    try:
        text = read_until(proc, lambda text: len(online(text)) >= 3, 25)
        assert online(text) == {"cell-1", "cell-2", "cell-3"}, text[-3000:]
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

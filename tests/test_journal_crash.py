"""A real crash test of the journal: SIGKILL a busy journaled dispatcher, restart, check.

A child process (``journal_child.py``) runs a dispatcher on a journal file with a steady workload
(adds, approvals now or later via ``decide()``, denials, completions, failures, pauses) and
reports on a pipe every add it got acknowledged and every OPERATION_STARTED it saw. The parent
kills it with SIGKILL at a random moment, opens the journal itself to check it, and starts the
next child on the same file, cycle after cycle. The checks:

* every acknowledged add is in the journal, and no operation ever vanishes from it;
* no operation was started twice (one OPERATION_STARTED each, and none after it was failed as
  INTERRUPTED), and every start a child saw is in the journal;
* every state is legal and agrees with the operation's journaled events (a QUEUED operation has
  no start, a COMPLETED one has an outcome, at most one is RUNNING or PAUSED);
* after a restart, the operation that was running is FAILED/INTERRUPTED (recovery="fail") or
  is the PAUSED current operation (recovery="pause").
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from operation_dispatcher import Journal, OperationDispatcher

CHILD = Path(__file__).with_name("journal_child.py")
CYCLES = 32
READY_TIMEOUT = 20.0

# the state an operation is in after each of its lifecycle events
_STATE_AFTER = {
    "operation_added": "QUEUED",
    "operation_started": "RUNNING",
    "operation_paused": "PAUSED",
    "operation_resumed": "RUNNING",
    "operation_completed": "COMPLETED",
    "operation_failed": "COMPLETED",
    "operation_cancelled": "COMPLETED",
}
_OUTCOME_OF = {
    "operation_completed": "SUCCESS",
    "operation_failed": "FAILURE",
    "operation_cancelled": "CANCELLED",
}


class Child:
    """One run of journal_child.py; its stdout lines are collected by a reader thread."""

    def __init__(self, journal: Path, recovery: str, seed: int, stderr_path: Path) -> None:
        self.recovery = recovery
        self.seed = seed
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._stderr = stderr_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(journal), recovery, str(seed)],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self._reader = threading.Thread(target=self._read, name="journal-child-reader")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if not raw.endswith(b"\n"):
                break  # cannot happen (one os.write per line), but never trust half a line
            line = raw.decode().rstrip("\n")
            self.lines.append(line)
            if line.startswith("READY "):
                self.ready.set()
        self.ready.set()  # EOF: whoever waits for READY must wake up and look

    def kill(self) -> bool:
        """SIGKILL the child (if still alive) and reap it; True if it was alive until now."""
        alive = self.proc.poll() is None
        if alive:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._reader.join()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._stderr.close()
        return alive

    def words(self, tag: str) -> list[str]:
        return [line.split(" ", 1)[1] for line in self.lines if line.startswith(tag + " ")]

    @property
    def ready_info(self) -> dict[str, Any] | None:
        found = self.words("READY")
        return json.loads(found[0]) if found else None


@dataclass
class Seen:
    """What the parent knows across cycles."""

    acknowledged: set[str] = field(default_factory=set)
    reported_started: set[str] = field(default_factory=set)
    journal_ids: set[str] = field(default_factory=set)
    active: tuple[str, str] | None = None  # (id, state) RUNNING/PAUSED at the last kill
    interrupted: int = 0
    recovered_paused: int = 0


def check_journal(path: Path, seen: Seen, where: str) -> None:
    """Open the journal (as a dispatcher would), check every invariant, close it."""
    with Journal(path) as journal:
        conn = journal._conn
        assert conn is not None
        ops = {
            op_id: (state, finished_ts, json.loads(data))
            for op_id, state, finished_ts, data in conn.execute(
                "SELECT id, state, finished_ts, data FROM operations"
            )
        }
        events: dict[str, list[tuple[int, str, dict[str, Any]]]] = defaultdict(list)
        for seq, op_id, event_type, data in conn.execute(
            "SELECT seq, operation_id, event_type, data FROM events "
            "WHERE operation_id IS NOT NULL ORDER BY seq"
        ):
            events[op_id].append((seq, event_type, json.loads(data)))

    ids = set(ops)
    missing = seen.acknowledged - ids
    assert not missing, f"{where}: acknowledged adds missing from the journal: {sorted(missing)[:5]}"
    vanished = seen.journal_ids - ids
    assert not vanished, f"{where}: operations vanished from the journal: {sorted(vanished)[:5]}"
    seen.journal_ids = ids
    assert set(events) <= ids, f"{where}: events of operations the journal does not hold"

    active = []
    for op_id, (state, finished_ts, data) in ops.items():
        history = events[op_id]
        types = [t for _, t, _ in history]
        counts = Counter(types)
        label = f"{where}: operation {op_id} ({state}, events {types})"
        assert data["id"] == op_id and data["state"] == state, label
        assert counts["operation_added"] == 1 and types[0] == "operation_added", label
        assert counts["operation_started"] <= 1, f"{label} was started more than once"
        lifecycle = [t for t in types if t in _STATE_AFTER]
        assert _STATE_AFTER[lifecycle[-1]] == state, f"{label}: state disagrees with its events"
        if state == "QUEUED":
            assert data["start_time"] is None and data["finish_time"] is None, label
            assert data["outcome"] == "NONE" and finished_ts is None, label
            assert counts["operation_started"] == 0, label
        elif state in ("RUNNING", "PAUSED"):
            assert data["start_time"] is not None and data["finish_time"] is None, label
            assert data["outcome"] == "NONE" and finished_ts is None, label
            assert counts["operation_started"] == 1, label
            active.append((op_id, state))
        else:
            assert state == "COMPLETED", label
            assert data["finish_time"] is not None and finished_ts is not None, label
            assert data["outcome"] == _OUTCOME_OF[lifecycle[-1]], label
            ended = [i for i, t in enumerate(types) if t in _OUTCOME_OF]
            assert len(ended) == 1 and ended[0] == len(types) - 1, f"{label}: events after its end"
            if data["outcome"] == "SUCCESS":
                assert counts["operation_started"] == 1, label
                assert data["start_time"] is not None, label
            if data["termination_reason"] == "INTERRUPTED":
                _, _, failed = history[-1]
                assert types[-1] == "operation_failed", label
                assert failed["meta_data"]["recovered"] is True, label
                assert failed["meta_data"]["previous_state"] in ("RUNNING", "PAUSED"), label
                assert counts["operation_started"] == 1, f"{label}: interrupted but never started"
        for _, event_type, event in history:
            if event["meta_data"].get("recovered") and event_type != "operation_failed":
                # recovery="pause" of a RUNNING operation; a PAUSED one is left as it is
                assert event_type == "operation_paused", label
                assert event["meta_data"]["previous_state"] == "RUNNING", label
    assert len(active) <= 1, f"{where}: more than one RUNNING/PAUSED operation: {active}"

    not_started = {
        op_id for op_id in seen.reported_started if "operation_started" not in
        [t for _, t, _ in events[op_id]]
    }
    assert not not_started, f"{where}: starts a child saw are not in the journal: {not_started}"

    # The operation that was running at the previous kill: what did the restart make of it?
    if seen.active is not None:
        op_id, previous = seen.active
        state, _, data = ops[op_id]
        if data["termination_reason"] == "INTERRUPTED":
            _, _, failed = events[op_id][-1]
            assert failed["meta_data"]["previous_state"] == previous, (where, op_id, failed)
    seen.active = active[0] if active else None


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_and_starts_nothing_twice(tmp_path) -> None:
    # JOURNAL_CRASH_SEED=<seed from a failure> replays the kill moments and workload choices
    seed = int(os.environ.get("JOURNAL_CRASH_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    path = tmp_path / "state.db"
    stderr_path = tmp_path / "child-stderr.txt"
    seen = Seen()
    started_at = time.monotonic()
    kills_during_work = 0

    def fail_context(child: Child) -> str:
        return (
            f"seed {seed}, cycle {cycle}, recovery {child.recovery}; child stderr:\n"
            + stderr_path.read_text(errors="replace")[-3000:]
        )

    for cycle in range(CYCLES):
        recovery = "pause" if cycle % 4 == 3 else "fail"
        previous_active = seen.active
        child = Child(path, recovery, rng.randrange(1 << 30), stderr_path)
        try:
            early = cycle % 8 == 5  # now and then, kill it while it is still starting
            if early:
                time.sleep(rng.uniform(0.0, 0.15))  # a random kill moment, not a wait
            else:
                assert child.ready.wait(READY_TIMEOUT), fail_context(child)
                assert child.ready_info is not None, "child died before READY: " + fail_context(
                    child
                )
                time.sleep(rng.uniform(0.05, 0.5))  # a random kill moment, not a wait
        finally:
            alive = child.kill()
        assert alive or early, "the child ended by itself: " + fail_context(child)
        errors = child.words("ERROR")
        assert not errors, f"child reported {json.loads(errors[0])}\n{fail_context(child)}"
        logged = stderr_path.read_text(errors="replace")
        assert "Traceback" not in logged and "failed" not in logged, fail_context(child)

        seen.acknowledged.update(child.words("ADD"))
        seen.reported_started.update(child.words("STARTED"))
        if child.words("ADD") or child.words("STARTED"):
            kills_during_work += 1

        info = child.ready_info
        if info is not None and previous_active is not None:
            op_id, previous = previous_active
            if recovery == "fail":
                assert info["current"] is None, (info, fail_context(child))
                seen.interrupted += 1
            else:
                assert info["current"] == [op_id, "PAUSED"], (info, previous, fail_context(child))
                seen.recovered_paused += 1
        check_journal(path, seen, f"after kill {cycle} (seed {seed})")

    # A last, orderly restart in this process: the interrupted operation is failed, nothing is
    # left RUNNING or PAUSED, and every operation is still there.
    previous_active = seen.active
    dispatcher = OperationDispatcher("robot-1", journal=path, recovery="fail")
    try:
        assert dispatcher.current_operation is None
        if previous_active is not None:
            op = dispatcher.get_operation(previous_active[0])
            assert op is not None and op.termination_reason.value == "INTERRUPTED"
            seen.interrupted += 1
        for op_id in list(seen.acknowledged)[:50]:
            assert dispatcher.get_operation(op_id) is not None
    finally:
        dispatcher.close()
    seen.active = None
    check_journal(path, seen, "after the final restart")

    elapsed = time.monotonic() - started_at
    print(
        f"crash test: seed {seed}, {CYCLES} kills ({kills_during_work} during work), "
        f"{len(seen.acknowledged)} acknowledged adds, {len(seen.reported_started)} starts seen, "
        f"{seen.interrupted} interrupted, {seen.recovered_paused} recovered paused, {elapsed:.1f} s"
    )
    assert kills_during_work >= CYCLES // 2, "the children did too little work to test anything"
    assert len(seen.acknowledged) > 0 and len(seen.reported_started) > 0

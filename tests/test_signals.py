"""SignalBoard, and release conditions that hold operations until signals say go."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from conftest import EventRecorder, op

from operation_dispatcher import EventType, ExecutionState, Signal, SignalBoard
from operation_dispatcher.errors import ValidationError
from operation_dispatcher.signals import same_value

STARTED = EventType.OPERATION_STARTED


def wait_until_stale(signal: Signal, timeout: float = 2.0) -> None:
    """Let a signal age past its max age (time has to pass; nothing else can be waited on)."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not signal.is_stale():
        assert time.monotonic() < deadline, "signal never went stale"
        tick.wait(0.01)


# ------------------------------------------------------------------------------ the board


def test_set_get_value_holds() -> None:
    board = SignalBoard()
    assert board.get("plc.ready") is None
    assert board.value("plc.ready", "n/a") == "n/a"
    assert not board.holds("plc.ready", True)
    signal = board.set("plc.ready", True)
    assert board.get("plc.ready") == signal
    assert signal.name == "plc.ready" and signal.value is True
    assert signal.max_age_seconds is None and not signal.is_stale()
    assert board.value("plc.ready") is True
    assert board.holds("plc.ready", True)
    assert not board.holds("plc.ready", False)
    assert "plc.ready" in board and len(board) == 1


def test_true_is_not_one() -> None:
    board = SignalBoard()
    board.set("flag", 1)
    assert not board.holds("flag", True)
    assert board.holds("flag", 1)
    board.set("flag", True)
    assert not board.holds("flag", 1)
    assert board.holds("flag", True)
    assert same_value(0, 0.0) and not same_value(False, 0) and same_value("a", "a")


def test_stale_signal_does_not_hold() -> None:
    board = SignalBoard()
    signal = board.set("door.closed", True, max_age_seconds=0.05)
    assert board.holds("door.closed", True)
    wait_until_stale(signal)
    assert not board.holds("door.closed", True)
    assert board.get("door.closed").to_dict()["stale"] is True
    board.set("door.closed", True, max_age_seconds=0.05)  # re-confirmed
    assert board.holds("door.closed", True)


def test_snapshot_to_dict_delete() -> None:
    board = SignalBoard()
    board.set("mode", "auto")
    board.set("door.closed", False, max_age_seconds=2.5)
    assert [s.name for s in board.snapshot()] == ["door.closed", "mode"]
    data = board.get("door.closed").to_dict()
    assert data["name"] == "door.closed" and data["value"] is False
    assert data["max_age_seconds"] == 2.5 and data["stale"] is False
    assert data["updated_at"].endswith("Z")
    assert board.delete("mode") is True
    assert board.delete("mode") is False
    assert [s.name for s in board.snapshot()] == ["door.closed"]
    assert not board.holds("mode", "auto")


def test_expire_makes_a_signal_stale_now_and_keeps_its_value() -> None:
    board = SignalBoard()
    board.set("plc.ready", True)  # no max age: never stale on its own
    board.set("plc.mode", "auto", max_age_seconds=3600)
    assert board.expire("plc.ready") and board.expire("plc.mode")
    assert not board.expire("plc.missing")
    for name, value in (("plc.ready", True), ("plc.mode", "auto")):
        signal = board.get(name)
        assert signal is not None and signal.is_stale() and signal.to_dict()["stale"] is True
        assert signal.value == value and not board.holds(name, value)
    board.set("plc.ready", True)  # written again: fresh
    assert board.holds("plc.ready", True)


def test_validation() -> None:
    board = SignalBoard()
    with pytest.raises(ValueError, match="name"):
        board.set("", 1)
    with pytest.raises(ValueError, match="max_age_seconds"):
        board.set("x", 1, max_age_seconds=0)
    with pytest.raises(ValueError, match="max_age_seconds"):
        board.set("x", 1, max_age_seconds="1")


def test_subscribe_hears_changes_only() -> None:
    board = SignalBoard()
    heard: list[tuple[str, Any]] = []
    unsubscribe = board.subscribe(lambda s: heard.append((s.name, s.value)))
    board.set("a", 1)
    board.set("a", 1)  # same value, still fresh: no news
    board.set("a", 2)
    board.set("a", 2, max_age_seconds=5)  # freshness rule changed
    board.set("b", True)
    assert heard == [("a", 1), ("a", 2), ("a", 2), ("b", True)]
    unsubscribe()
    unsubscribe()
    board.set("a", 3)
    assert len(heard) == 4


def test_re_confirming_a_stale_signal_is_news() -> None:
    board = SignalBoard()
    heard: list[Signal] = []
    board.subscribe(heard.append)
    wait_until_stale(board.set("plc.ready", True, max_age_seconds=0.05))
    board.set("plc.ready", True, max_age_seconds=0.05)
    assert len(heard) == 2


def test_a_failing_listener_does_not_stop_the_others(caplog) -> None:
    board = SignalBoard()
    heard: list[str] = []

    def broken(signal: Signal) -> None:
        raise RuntimeError("listener broke")

    board.subscribe(broken)
    board.subscribe(lambda s: heard.append(s.name))
    board.set("x", 1)
    assert heard == ["x"]
    assert any("listener broke" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


# ------------------------------------------------------------------------------ release conditions


def test_release_condition_holds_until_the_signal_flips(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    d.start()
    gated = d.add_operation(op(priority=9, release_conditions={"plc.ready": True}))
    sentinel = d.add_operation(op())
    rec.wait_for(STARTED, operation_id=sentinel.id)  # the loop passed over the gated one
    d.complete_operation(sentinel.id)
    rec.wait_for(EventType.OPERATION_COMPLETED, operation_id=sentinel.id)
    assert d.explain(gated.id)["blocked_by"] == ["release_condition:plc.ready"]
    d.signals.set("plc.ready", False)
    assert d.explain(gated.id)["blocked_by"] == ["release_condition:plc.ready"]
    d.signals.set("plc.ready", True)
    rec.wait_for(STARTED, operation_id=gated.id)
    assert [e.operation_id for e in rec.matching(STARTED)] == [sentinel.id, gated.id]


def test_one_is_not_true_for_release_conditions(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    d.signals.set("plc.ready", 1)
    d.start()
    gated = d.add_operation(op(priority=9, release_conditions={"plc.ready": True}))
    sentinel = d.add_operation(op())
    rec.wait_for(STARTED, operation_id=sentinel.id)
    assert d.get_operation(gated.id).state is ExecutionState.QUEUED
    d.complete_operation(sentinel.id)
    d.signals.set("plc.ready", True)
    rec.wait_for(STARTED, operation_id=gated.id)


def test_every_condition_must_hold(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    d.start()
    gated = d.add_operation(
        op(priority=9, release_conditions={"door.closed": True, "mode": "auto"})
    )
    assert d.explain(gated.id)["blocked_by"] == [
        "release_condition:door.closed", "release_condition:mode",
    ]
    d.signals.set("mode", "auto")
    sentinel = d.add_operation(op())
    rec.wait_for(STARTED, operation_id=sentinel.id)
    assert d.explain(gated.id)["blocked_by"] == [
        "release_condition:door.closed", "resource_busy",
    ]
    d.complete_operation(sentinel.id)
    d.signals.set("door.closed", True)
    rec.wait_for(STARTED, operation_id=gated.id)


def test_stale_signal_holds_the_operation(make_dispatcher) -> None:
    board = SignalBoard()
    d = make_dispatcher(signals=board)
    assert d.signals is board
    rec = EventRecorder(d)
    wait_until_stale(board.set("plc.ready", True, max_age_seconds=0.05))
    d.start()
    gated = d.add_operation(op(priority=9, release_conditions={"plc.ready": True}))
    sentinel = d.add_operation(op())
    rec.wait_for(STARTED, operation_id=sentinel.id)
    d.complete_operation(sentinel.id)
    rec.wait_for(EventType.OPERATION_COMPLETED, operation_id=sentinel.id)
    assert d.get_operation(gated.id).state is ExecutionState.QUEUED
    assert d.explain(gated.id)["blocked_by"] == ["release_condition:plc.ready"]
    board.set("plc.ready", True, max_age_seconds=30)  # the PLC answers again
    rec.wait_for(STARTED, operation_id=gated.id)


def test_release_conditions_updated_to_what_holds(make_dispatcher) -> None:
    d = make_dispatcher()
    rec = EventRecorder(d)
    d.signals.set("mode", "manual")
    d.start()
    gated = d.add_operation(op(release_conditions={"mode": "auto"}))
    assert d.explain(gated.id)["blocked_by"] == ["release_condition:mode"]
    d.update_operation(gated.id, {"release_conditions": {"mode": "manual"}})
    rec.wait_for(STARTED, operation_id=gated.id)


def test_shared_board_serves_two_dispatchers(make_dispatcher) -> None:
    board = SignalBoard()
    first = make_dispatcher(signals=board)
    second = make_dispatcher(signals=board)
    rec1, rec2 = EventRecorder(first), EventRecorder(second)
    first.start()
    second.start()
    a = first.add_operation(op(release_conditions={"line.go": True}))
    b = second.add_operation(op(release_conditions={"line.go": True}))
    board.set("line.go", True)
    rec1.wait_for(STARTED, operation_id=a.id)
    rec2.wait_for(STARTED, operation_id=b.id)


def test_a_claimed_prefix_names_its_owner_and_cannot_be_claimed_by_another() -> None:
    """Issue 10, A.5: a bridge claims ``<name>.``; front ends ask owner_of before writing."""
    board = SignalBoard()
    board.claim("plc.", "bridge plc")
    board.claim("plc.", "bridge plc")  # again by the same owner: fine
    assert board.owner_of("plc.online") == "bridge plc"
    assert board.owner_of("plc.never_written") == "bridge plc"
    assert board.owner_of("plc2.ready") is None and board.owner_of("door") is None
    with pytest.raises(ValidationError, match="bridge plc"):
        board.claim("plc.", "bridge other")
    with pytest.raises(ValidationError):
        board.claim("", "bridge x")
    board.set("plc.ready", True)  # the board does not enforce it: the owner writes through set()
    assert board.holds("plc.ready", True)


def test_the_board_keeps_copies_of_container_values() -> None:
    """A dict written and later edited by its writer, or edited by a reader, changes nothing
    on the board (issue 10 E.18: every read a snapshot, every write a copy)."""
    board = SignalBoard()
    recipe = {"tool": "T1", "steps": [1, 2]}
    board.set("cell.recipe", recipe)
    recipe["steps"].append(3)
    recipe["tool"] = "T9"
    assert board.holds("cell.recipe", {"tool": "T1", "steps": [1, 2]})
    board.get("cell.recipe").value["steps"].clear()
    board.snapshot()[0].value["tool"] = "T7"
    assert board.value("cell.recipe") == {"tool": "T1", "steps": [1, 2]}

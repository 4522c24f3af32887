"""Shared helpers of the benchmarks: the JSON line format, timers, CPU and RSS readings.

Stdlib only, so the benchmarks measure the library and nothing else.

Example::

    emit("queue.add@1k", 2.41, "us/op", 0.38, target="<= 20 us/op", queued=1000)
    # prints (on one line)
    # {"bench": "queue.add@1k", "value": 2.41, "unit": "us/op", "baseline": 0.38,
    #  "ratio": 6.34, "target": "<= 20 us/op", "meets_target": true, "queued": 1000}
"""

from __future__ import annotations

import gc
import json
import math
import operator
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for the annotation only: at run time this module stays stdlib only
    from operation_dispatcher import OperationDispatcher

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
}
_TARGET = re.compile(r"^\s*(<=|>=|<|>)\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(.*?)\s*$")


def sig(value: float | None, digits: int = 3) -> float | int | None:
    """``value`` rounded to ``digits`` significant digits (ints and None pass through)."""
    if value is None or isinstance(value, int) or value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def check_target(value: float, unit: str, target: str) -> bool:
    """Whether ``value`` meets ``target``, a string like ``"<= 20 us/op"`` or ``">= 500"``.

    A unit written in the target must be the value's own unit, so a target in the wrong unit
    fails loudly instead of comparing milliseconds with microseconds.
    """
    match = _TARGET.match(target)
    if match is None:
        raise ValueError(f"target {target!r} is not '<op> <number> [unit]' (op: <=, <, >=, >)")
    op, number, target_unit = match.groups()
    if target_unit and target_unit != unit:
        raise ValueError(f"target {target!r} is in {target_unit!r} but the value is in {unit!r}")
    return _COMPARE[op](value, float(number))


def emit(
    bench: str,
    value: float,
    unit: str,
    baseline: float | None,
    baseline_unit: str | None = None,
    *,
    target: str | None = None,
    meets_target: bool | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Print one benchmark figure as a JSON line on stdout (and return it as a dict).

    ``ratio`` is ``value / baseline`` to 3 significant digits. With a ``target`` (for example
    ``"<= 20 us/op"``) the line also carries ``target`` and ``meets_target``; the latter is
    computed from the target unless given. ``extra`` keyword arguments are appended as fields.
    """
    ratio = value / baseline if baseline else None
    line: dict[str, Any] = {
        "bench": bench,
        "value": sig(value, 4),
        "unit": unit,
        "baseline": sig(baseline, 4),
        "ratio": sig(ratio, 3),
    }
    if baseline_unit is not None and baseline_unit != unit:
        line["baseline_unit"] = baseline_unit
    if target is not None:
        line["target"] = target
        line["meets_target"] = (
            check_target(value, unit, target) if meets_target is None else bool(meets_target)
        )
    for key, item in extra.items():
        line[key] = sig(item, 4) if isinstance(item, float) else item
    print(json.dumps(line), flush=True)
    return line


# ----------------------------------------------------------------------------------- timing


class Timer:
    """The elapsed time of a ``with timer():`` block, from ``time.perf_counter_ns``."""

    __slots__ = ("start_ns", "end_ns")

    def __init__(self) -> None:
        self.start_ns = 0
        self.end_ns = 0

    @property
    def ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def us(self) -> float:
        return self.ns / 1e3

    @property
    def ms(self) -> float:
        return self.ns / 1e6

    @property
    def seconds(self) -> float:
        return self.ns / 1e9


def percentile(samples: list[float], q: int) -> float:
    """The q-th percentile (inclusive method: p95 of 100 samples is not extrapolated)."""
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


@contextmanager
def timer(disable_gc: bool = True) -> Iterator[Timer]:
    """Time a block: ``with timer() as t: ...`` then read ``t.us``.

    Like ``timeit``, the cyclic garbage collector is off inside the block by default (after a
    full collection), so a collection that earlier allocations provoked is not charged to
    whatever happens to be timed when it fires.
    """
    result = Timer()
    was_enabled = gc.isenabled()
    if disable_gc:
        gc.collect()
        gc.disable()
    try:
        result.start_ns = time.perf_counter_ns()
        yield result
    finally:
        result.end_ns = time.perf_counter_ns()
        if disable_gc and was_enabled:
            gc.enable()


def median_of(fn: Callable[[], float], repeat: int) -> float:
    """Call ``fn`` (which returns one measurement) ``repeat`` times; the median measurement."""
    if repeat < 1:
        raise ValueError("repeat must be >= 1")
    return statistics.median(fn() for _ in range(repeat))


# ------------------------------------------------------------------------------ resources


def rss_bytes() -> int | None:
    """This process's resident set size from /proc/self/status (VmRSS); None where absent."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    value, unit = line.split()[1:3]
                    return int(value) * {"kB": 1024, "mB": 1024**2}.get(unit, 1)
    except OSError:
        return None
    return None


def settled_rss(dispatcher: OperationDispatcher | None = None) -> int:
    """RSS in bytes once ``dispatcher`` (if any) has delivered every event and after gc.collect().

    Raises RuntimeError if the events are not delivered within 10 s or RSS is unavailable.
    """
    if dispatcher is not None and not dispatcher.drain_events(10):
        raise RuntimeError("events were not delivered")
    gc.collect()
    rss = rss_bytes()
    if rss is None:
        raise RuntimeError("RSS is not available here (/proc/self/status)")
    return rss


def cpu_seconds() -> float:
    """CPU time (user + system) this process has used, all its threads included."""
    return time.process_time()


def python_info() -> dict[str, str]:
    """The interpreter the figures were measured with (handy as an ``emit`` extra)."""
    return {"python": sys.version.split()[0], "implementation": sys.implementation.name}

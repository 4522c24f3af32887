"""DurationHistogram: durations counted into fixed buckets, for metrics read from another thread.

The core keeps one for its journal writes (``Journal.write_times``) so that a metrics endpoint
(``GET /metrics``, extra ``metrics``) can report them without the core importing any metrics
library. Memory is fixed (one count per bucket, a sum and a total), whatever the number of
observations; recording one costs a bisect and an uncontended lock.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass

#: Upper bounds (seconds) for the journal's write times: a SQLite commit takes ~0.1-10 ms on an
#: SSD, and up to a second on a slow SD card.
JOURNAL_WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Counts per bucket (not cumulative; the last one is over the largest bound), sum, total."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total_seconds: float
    count: int


class DurationHistogram:
    """Durations in seconds, counted per bucket; thread-safe."""

    __slots__ = ("_bounds", "_counts", "_sum", "_lock")

    def __init__(self, bounds: Sequence[float]) -> None:
        ordered = tuple(float(b) for b in bounds)
        if not ordered or list(ordered) != sorted(set(ordered)) or ordered[0] <= 0:
            raise ValueError("bounds must be distinct positive numbers in increasing order")
        self._bounds = ordered
        self._counts = [0] * (len(ordered) + 1)  # the last: above every bound
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        """Count one duration (a negative one, from a clock step, counts as 0)."""
        seconds = max(0.0, seconds)
        index = bisect.bisect_left(self._bounds, seconds)
        with self._lock:
            self._counts[index] += 1
            self._sum += seconds

    def snapshot(self) -> HistogramSnapshot:
        with self._lock:
            counts, total = tuple(self._counts), self._sum
        return HistogramSnapshot(self._bounds, counts, total, sum(counts))


__all__ = ["JOURNAL_WRITE_BUCKETS", "DurationHistogram", "HistogramSnapshot"]

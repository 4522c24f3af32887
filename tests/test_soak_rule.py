"""The soak's rule for "grows without bound" (benchmarks/soak.py), on made-up samples.

The soak itself runs for minutes (``make soak``, CI runs 60 s); here only its verdict is
checked: flat and warming-up curves pass, a leak fails, and so do a journal beyond its size,
a WAL beyond its bound and failed requests.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.soak import JOURNAL_MAX_BYTES, LIMITS, WAL_BOUND, slope_per_hour, verdict

MIB = 1024 * 1024


def samples(rss: Any, *, minutes: int = 30, every: float = 10.0, **fixed: Any) -> list[dict]:
    """Samples every ``every`` s; ``rss(t)`` gives the RSS at t seconds."""
    base = {"fds": 17, "threads": 22, "cpu_percent": 10.0, "journal_bytes": MIB,
            "wal_bytes": 4 * MIB}
    base.update(fixed)
    return [
        {"t": i * every, "rss_bytes": int(rss(i * every)), **base}
        for i in range(int(minutes * 60 / every) + 1)
    ]


def test_the_slope_is_a_least_squares_fit_per_hour() -> None:
    assert slope_per_hour([(0, 0), (1800, 5), (3600, 10)]) == pytest.approx(10.0)
    assert slope_per_hour([(0, 1), (10, 3), (20, 1), (30, 3)]) == pytest.approx(3600 * 0.04)
    assert slope_per_hour([(5, 1)]) == 0.0
    assert slope_per_hour([(5, 1), (5, 2)]) == 0.0


def test_a_flat_curve_passes() -> None:
    result = verdict(samples(lambda t: 70 * MIB + (t % 30) * 1000), errors=0)
    assert result["verdict"] == "pass", result["failures"]


def test_warming_up_then_flat_passes() -> None:
    """Memory that climbs for the first minutes (caches, retention filling) and then stays."""
    result = verdict(samples(lambda t: 60 * MIB + min(t, 300) * 40_000), errors=0)
    assert result["verdict"] == "pass", result["failures"]


def test_a_steady_leak_fails() -> None:
    leak = LIMITS["rss_bytes"].per_hour * 2 / 3600  # bytes per second: twice the limit
    result = verdict(samples(lambda t: 60 * MIB + t * leak), errors=0)
    assert result["verdict"] == "fail"
    assert result["failures"][0].startswith("rss_bytes grows")


def test_a_leak_too_small_to_clear_the_allowance_on_a_short_run_passes() -> None:
    """60 s of a slope the limit forbids, but 0.3 MiB in all: noise on a short run."""
    leak = LIMITS["rss_bytes"].per_hour * 2 / 3600
    result = verdict(samples(lambda t: 60 * MIB + t * leak, minutes=1, every=5.0), errors=0)
    assert result["verdict"] == "pass"


def test_descriptors_that_keep_leaking_fail() -> None:
    rows = samples(lambda t: 60 * MIB)
    for row in rows:
        row["fds"] = 17 + int(row["t"] // 60)  # one more socket every minute
    result = verdict(rows, errors=0)
    assert [f.split()[0] for f in result["failures"]] == ["fds"]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [("journal_bytes", JOURNAL_MAX_BYTES * 2, "journal reached"),
     ("wal_bytes", WAL_BOUND + 1, "WAL reached")],
)
def test_a_journal_or_wal_beyond_its_bound_fails(field: str, value: int, reason: str) -> None:
    rows = samples(lambda t: 60 * MIB)
    rows[-3][field] = value
    result = verdict(rows, errors=0)
    assert result["verdict"] == "fail" and result["failures"][0].startswith(reason)


def test_failed_requests_fail_the_soak() -> None:
    result = verdict(samples(lambda t: 60 * MIB), errors=2)
    assert result["failures"] == ["2 requests failed (5xx or no answer)"]

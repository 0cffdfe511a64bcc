"""Times as people read them (aggregator/core/times.py). Pure."""

from __future__ import annotations

from aggregator.core.times import human, iso, relative


def test_relative_times_round_to_their_unit() -> None:
    assert relative(112.0, 100.0) == "in 12 s"
    assert relative(88.0, 100.0) == "12 s ago"
    assert relative(100.0 + 150, 100.0) == "in 2 min"
    assert relative(100.0 - 3 * 3600, 100.0) == "3 h ago"
    assert relative(100.0 + 3 * 86400, 100.0) == "in 3 d"


def test_human_times() -> None:
    assert human(0.0, 100.0) == "never"
    assert human(1_800_000_012.0, 1_800_000_000.0) == "2027-01-15T08:00:12Z (in 12 s)"
    assert iso(1_800_000_000.0) == "2027-01-15T08:00:00Z"
    assert iso(9e15) == "9000000000000000.0 (no date)"  # no writer of this project writes it

"""aggregator/core/bounded.py: label sets any Redis writer may fill, bounded before /metrics."""

from __future__ import annotations

from aggregator.core.bounded import OTHER, bounded_counts, bounded_writers


def test_counts_keep_the_first_names_in_sorted_order_and_sum_the_rest_under_other() -> None:
    counts = {"invalid_tokens": 3, "buffer_full": 2, "zeta": 5, "alpha": 1}
    assert bounded_counts(counts, limit=2) == {"alpha": 1, "buffer_full": 2, OTHER: 3 + 5}
    assert bounded_counts(counts) == counts  # under the bound: untouched, no "other"


def test_names_no_client_writes_are_counted_under_other() -> None:
    counts = {
        "invalid_latency": 4,
        "x" * 65: 1,  # too long
        "\x1b]52;c;aGk=\x07": 2,  # a terminal escape
        "has space": 3,
        "_leading": 5,
        "": 6,
        OTHER: 10,  # a client never writes "other": a raw one is summed, not served twice
    }
    assert bounded_counts(counts) == {"invalid_latency": 4, OTHER: 1 + 2 + 3 + 5 + 6 + 10}


def test_twenty_thousand_raw_reasons_become_sixty_five_series() -> None:
    counts = {f"reason_{index:05d}": 1 for index in range(20_000)}
    bounded = bounded_counts(counts)
    assert len(bounded) == 64 + 1
    assert bounded[OTHER] == 20_000 - 64
    assert sum(bounded.values()) == 20_000


def test_writers_keep_the_most_recently_measured_shaped_ids() -> None:
    measured = {
        "host-a:1": (0.5, 100.0),
        "host-b:2": (-1.0, 300.0),
        "host-c:3": (2.0, 200.0),
        "bad writer": (9.0, 400.0),  # a space: not host:pid
        "h" * 256: (9.0, 500.0),  # longer than a host name and a pid
    }
    assert bounded_writers(measured, limit=2) == {
        "host-b:2": (-1.0, 300.0),
        "host-c:3": (2.0, 200.0),
    }
    assert list(bounded_writers(measured)) == ["host-b:2", "host-c:3", "host-a:1"]

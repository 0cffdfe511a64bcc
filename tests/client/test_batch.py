"""Building a batch (client._batch): pure, no Redis."""

from __future__ import annotations

from client._batch import build_batch
from client._ledger import Notes

NO_NOTES = Notes({}, {}, {}, 0)


def test_scores_are_event_times_to_the_millisecond() -> None:
    events = [
        ("openrouter", 1_800_000_000.0, 0.2, 0, 0, 0, None),
        ("openrouter", 1_800_000_000.1234, 0.2, 0, 0, 0, None),
        ("openrouter", 1_800_000_000.9996, 0.2, 0, 0, 0, None),
    ]
    batch = build_batch(events, 64, NO_NOTES)
    (flat,) = batch.providers["openrouter"].partitions.values()  # one partition: (0.1, 0.25]
    assert flat == ["1800000000.000", "AAAABA", "1800000000.123", "AAAABB",
                    "1800000001.000", "AAAABC"]  # fmt: skip


def test_histogram_buckets_and_outcome_counts_of_a_batch() -> None:
    bounds = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)  # the seed contract's buckets, "le" semantics
    latencies = [0.0, 0.05, 0.1, 0.1000001, 0.5, 0.75, 1.0, 2.0, 4.99, 5.0, 10.0, 10.01, 61.0]
    events = [
        ("openrouter", 1_800_000_000.0, latency, outcome, 0, 0, None)
        for outcome in (0, 1, 2, 3)
        for latency in latencies
    ]
    totals = build_batch(events, 0, NO_NOTES).providers["openrouter"].totals
    expected: dict[str, int] = {}
    for latency in latencies:
        le = next((f"b:{b:g}" for b in bounds if latency <= b), "b:+Inf")
        expected[le] = expected.get(le, 0) + 4  # once per outcome
        # above 10 s, its band of the extra buckets as well (10.01: b:15; 61: none)
        band = next((f"b:{b:g}" for b in (15, 30, 60) if 10 < latency <= b), None)
        if band:
            expected[band] = expected.get(band, 0) + 4
    assert {k: v for k, v in totals.items() if k.startswith("b:")} == expected
    counts = {k: v for k, v in totals.items() if k.startswith("n:")}
    assert counts == dict.fromkeys(
        ("n:success", "n:failure", "n:rate_limited", "n:caller_error"), len(latencies)
    )
    assert totals["lat_us"] == round(4 * sum(latencies) * 1_000_000)


def test_cancelled_calls_and_added_usage_take_ids_but_no_window_member() -> None:
    events = [
        ("openrouter", 1_800_000_000.0, 0.2, 0, 10, 100, None),  # a success
        ("openrouter", 1_800_000_000.5, 0.0, 4, 3, 0, None),  # cancelled: tokens consumed
        ("openrouter", 1_800_000_001.0, 0.0, 5, 40, 2_000, None),  # usage of a booked call
        ("anthropic", 1_800_000_002.0, 0.0, 5, 0, 7, None),  # usage only
    ]
    batch = build_batch(events, 64, NO_NOTES)
    openrouter, anthropic = batch.providers["openrouter"], batch.providers["anthropic"]
    assert [len(flat) // 2 for flat in openrouter.partitions.values()] == [1]  # the success
    assert anthropic.partitions == {}
    assert (openrouter.events, anthropic.events, batch.events) == (3, 1, 4)  # ids 64..67
    assert batch.lineage == (64, 68)
    assert openrouter.totals == {
        "n:success": 1, "b:0.5": 1, "cancelled": 1, "lat_us": 200_000,
        "tokens": 53, "cost_nusd": 2_100,
    }  # fmt: skip
    assert anthropic.totals == {"lat_us": 0, "cost_nusd": 7}
    assert (openrouter.last_seen, anthropic.last_seen) == (1_800_000_001.0, 1_800_000_002.0)

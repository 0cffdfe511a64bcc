"""Snapshots built from what the last one built (aggregator/core/snapshot_reuse.py): a provider's
health is the same object only while all its inputs are equal, and the JSON written with reuse
is the JSON written without. Pure."""

from __future__ import annotations

import json
from dataclasses import replace

from aggregator.core.backend import BackendFamily, build_families
from aggregator.core.health import WindowCounts
from aggregator.core.readings import ProviderReading, Reading
from aggregator.core.snapshot import HealthTargets, build_snapshot
from aggregator.core.snapshot_reuse import SnapshotReuse
from gatewayz_protocol.breaker_state import BreakerState
from gatewayz_protocol.fields import int_field
from gatewayz_protocol.partitions import LATENCY_PARTITIONS
from gatewayz_protocol.specs import MetricSpec, series_id

TARGETS = HealthTargets(300.0, 2.0, 10.0)
NOW = 10_000.0


def _reading(window_successes: int, totals: dict[str, int]) -> ProviderReading:
    successes = [0] * LATENCY_PARTITIONS
    successes[2] = window_successes
    window = WindowCounts(tuple(successes), 1, 0, 0)
    return ProviderReading("a", window, window, totals, BreakerState(), {})


def test_health_is_reused_only_for_the_same_reading_state_suppression_and_targets() -> None:
    item = _reading(9, {"n:success": 9, "n:failure": 1})
    other = ProviderReading("b", WindowCounts.empty(), WindowCounts.empty(), {}, BreakerState(), {})
    reading = Reading((item, other), {}, {})
    states = {"a": BreakerState(), "b": BreakerState()}
    reuse = SnapshotReuse(TARGETS)
    first = build_snapshot(reading, states, NOW, 1, TARGETS, reuse=reuse)
    again = build_snapshot(reading, states, NOW + 5, 2, TARGETS, reuse=reuse)
    assert [p is q for p, q in zip(first.providers, again.providers, strict=True)] == [True, True]
    assert reuse.reused == 2

    opened = {**states, "a": BreakerState("open", NOW, 1, NOW + 30, 1)}
    more_calls = Reading((_reading(9, {"n:success": 10, "n:failure": 1}), other), {}, {})
    cases = [  # (reading, states, suppressed, targets), each differing from the first in one
        (reading, opened, frozenset[str](), TARGETS),
        (reading, states, frozenset({"a"}), TARGETS),
        (reading, states, frozenset[str](), replace(TARGETS, latency_target_seconds=0.01)),
        (more_calls, states, frozenset[str](), TARGETS),
    ]
    for case in cases:
        before = build_snapshot(reading, states, NOW, 2, TARGETS, reuse=reuse)
        reused = build_snapshot(case[0], case[1], NOW, 3, case[3], case[2], reuse=reuse)
        fresh = build_snapshot(case[0], case[1], NOW, 3, case[3], case[2])
        assert reused.providers == fresh.providers
        assert reused.providers[0] is not before.providers[0]
        # the other provider is the same object unless the targets of both changed
        assert (reused.providers[1] is before.providers[1]) == (case[3] == TARGETS)
    figures = [build_snapshot(c[0], c[1], NOW, 3, c[3], c[2]).providers[0] for c in cases]
    assert figures[0].availability == 0.0 and first.providers[0].availability == 1.0
    assert figures[1].open_suppressed and not first.providers[0].open_suppressed
    p95 = figures[2].latency_p95_seconds
    assert p95 is not None and figures[2].latency_score == (10.0 - p95) / (10.0 - 0.01) < 1.0
    assert first.providers[0].latency_score == 1.0
    assert figures[3].requests_total["success"] == 10


def test_the_json_written_with_reuse_is_the_json_written_without() -> None:
    item = _reading(9, {"n:success": 9, "n:failure": 1})
    reading = Reading((item,), {"rejected:x": 1}, {"zadd": 3}, {"w:1": (0.5, NOW)})
    reuse = SnapshotReuse(TARGETS)
    spec = MetricSpec("jobs_total", "counter", "Jobs", ("queue",))
    sid = series_id(["q1"])
    families = build_families(
        {"jobs_total": spec.to_json()},
        {"jobs_total": [sid]},
        {"jobs_total": {int_field(sid): 4}},
        [],
    )
    assert families and isinstance(families[0], BackendFamily)
    for cycle in (1, 2, 3):
        snapshot = build_snapshot(reading, {"a": BreakerState()}, NOW, cycle, TARGETS, reuse=reuse)
        snapshot = replace(snapshot, backend=families)
        text = snapshot.to_json(reuse)
        assert text == snapshot.to_json()
        assert json.loads(text)["backend"][0]["name"] == "jobs_total"

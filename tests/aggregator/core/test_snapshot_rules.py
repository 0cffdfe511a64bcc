"""What a published snapshot may be (aggregator/core/snapshot_rules.py): the bound on its JSON
at given settings holds a snapshot at its largest; every snapshot a leader builds meets the
rules, and each value no leader publishes breaks one, named. Pure."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.core.backend import BackendFamily
from aggregator.core.model_breakers import ModelBreaker
from aggregator.core.readings import ProviderReading, Reading
from aggregator.core.snapshot import (
    HealthTargets,
    ProviderHealth,
    Snapshot,
    build_snapshot,
    fields_of,
)
from aggregator.core.snapshot_rules import PROVIDER_BYTES, published_bytes, snapshot_problem
from gatewayz_protocol.breaker_state import STATES, BreakerState
from gatewayz_protocol.fields import COUNT_FIELDS, HISTOGRAM_FIELDS, LATENCY_SUM_FIELD
from gatewayz_protocol.partitions import EXTRA_HISTOGRAM_BOUNDS, HISTOGRAM_BOUNDS, OUTCOMES
from tests.support.strategies import BREAKER_STATES, WINDOW_COUNTS, property_settings

LONGEST = 2**63 - 1
FLOAT = -1.2345678901234567e-300  # 24 characters: a float at its longest
BOUNDS = HISTOGRAM_BOUNDS + EXTRA_HISTOGRAM_BOUNDS


@dataclass(frozen=True)
class Settings:
    max_providers: int = 3
    providers: tuple[str, ...] = ("configured",)
    breaker_models: tuple[str, ...] = ("p0",)
    max_models_per_provider: int = 2
    max_metric_families: int = 3
    max_series_per_metric: int = 5
    max_label_value_bytes: int = 64


def _breaker() -> BreakerState:
    return BreakerState("half_open", FLOAT, LONGEST, FLOAT, LONGEST, True)


def _provider(name: str) -> ProviderHealth:
    """A provider with every figure at its longest and an exemplar in every bucket, its 128
    characters of labels each escaped to 12 bytes (outside the Basic Multilingual Plane)."""
    exemplar = ({"trace_id": "\U0001f600" * 120}, FLOAT, FLOAT)
    counts = dict.fromkeys(OUTCOMES, LONGEST)
    states = ("closed", "open", "half_open")
    return ProviderHealth(
        name, FLOAT, FLOAT, FLOAT, FLOAT, FLOAT, LONGEST, counts, _breaker(), counts,
        (LONGEST,) * (len(BOUNDS) + 1), FLOAT, FLOAT, LONGEST, LONGEST,
        {f"{a}>{b}": LONGEST for a in states for b in states if a != b}, True,
        {str(bucket): exemplar for bucket in range(len(BOUNDS) + 1)}, FLOAT, LONGEST,
    )  # fmt: skip


def test_the_bound_is_its_parts_at_these_settings() -> None:
    fixed = 64 * 1024 + 1000 * 300 + 3 * 65 * 100
    providers = (3 + 1) * 36 * 1024
    models = 1 * 2 * (512 + 6 * 64)
    backend = 3 * 5 * (768 + 64)
    assert published_bytes(Settings()) == fixed + providers + models + backend


def test_a_snapshot_at_its_largest_holds_within_the_bound() -> None:
    settings = Settings()
    names = [f"p{i}" + "x" * 60 for i in range(settings.max_providers)]
    models = tuple(
        ModelBreaker("p0", "\x01" * settings.max_label_value_bytes + str(i), _breaker())
        for i in range(settings.max_models_per_provider)
    )
    value = "\x01" * settings.max_label_value_bytes  # 6 bytes of JSON each
    families = tuple(
        BackendFamily(
            f"requests_{name}_total", "counter", "Requests", ("route",), (),
            tuple(((value + str(i),), float(LONGEST)) for i in range(5)), (), LONGEST, LONGEST,
        )
        for name in ("a" * 100, "b" * 100, "c" * 100)
    )  # fmt: skip
    snapshot = Snapshot(
        taken_at=FLOAT,
        cycle=LONGEST,
        providers=tuple(_provider(name) for name in [*names, "configured"]),
        backend=families,
        histogram_bounds=BOUNDS,
        model_breakers=models,
        redis_ops={f"op{i:061d}": LONGEST for i in range(65)},
        client_rejected={f"r{i:062d}": LONGEST for i in range(65)},
        client_dropped_by_cause={f"d{i:062d}": LONGEST for i in range(65)},
        client_clock_offsets={f"{i:0255d}": FLOAT for i in range(1000)},
    )
    assert len(snapshot.to_json()) <= published_bytes(settings)


def test_a_provider_at_its_largest_is_half_what_is_allowed_for_one() -> None:
    text = json.dumps(_provider("p" * 64), default=fields_of, separators=(",", ":"))
    assert 16_000 < len(text) <= PROVIDER_BYTES // 2


NOW = 1_800_000_000.0
TRANSITIONS = [f"{a}>{b}" for a in STATES for b in STATES]
TOTALS = st.dictionaries(
    st.sampled_from([*COUNT_FIELDS, *HISTOGRAM_FIELDS, LATENCY_SUM_FIELD, "tokens", "cost_nusd"]),
    st.integers(0, 2**63 - 1),  # what the reader takes from a counts hash (int_fields)
)
EXEMPLARS = st.dictionaries(
    st.integers(0, len(HISTOGRAM_BOUNDS)),
    st.tuples(
        st.dictionaries(st.just("trace_id"), st.text(max_size=100)),
        st.floats(-1e300, 1e300),
        st.floats(0, 1e12),
    ),
)
READINGS = st.builds(
    ProviderReading,
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True),
    WINDOW_COUNTS,
    WINDOW_COUNTS,
    TOTALS,
    BREAKER_STATES,
    st.dictionaries(st.sampled_from(TRANSITIONS), st.integers(0, 2**63 - 1)),
    EXEMPLARS,
)


@property_settings(200)
@given(
    items=st.lists(READINGS, max_size=4, unique_by=lambda item: item.provider),
    stats=st.dictionaries(
        st.sampled_from(["", "rejected:", "dropped:"]).flatmap(
            lambda prefix: st.text(max_size=70).map(lambda name: prefix + name)
        ),
        st.integers(0, 2**63 - 1),
        max_size=80,
    ),
    offsets=st.dictionaries(st.text(max_size=300), st.tuples(st.floats(-1e6, 1e6), st.just(NOW))),
)
def test_every_snapshot_a_leader_builds_meets_the_rules(
    items: list[ProviderReading], stats: dict[str, int], offsets: dict[str, Any]
) -> None:
    reading = Reading(tuple(items), stats, dict(stats), offsets)
    states = {item.provider: item.breaker for item in items}
    targets = HealthTargets(300.0, 2.0, 10.0, HISTOGRAM_BOUNDS + EXTRA_HISTOGRAM_BOUNDS)
    built = build_snapshot(reading, states, NOW, 7, targets)
    published = Snapshot.from_json(built.to_json())  # as a follower reads it
    assert snapshot_problem(published, NOW) is None


def _document() -> dict[str, Any]:
    """A leader's snapshot as published: two providers, one with an exemplar and transitions,
    a counter, a histogram and a gauge of the workers, a model breaker."""
    health = ProviderHealth(
        "openrouter",
        requests_total=dict.fromkeys(OUTCOMES, 3),
        histogram_cumulative=(1, 2, 2, 3, 3, 3, 3),
        transitions={"closed>open": 1},
        exemplars={"1": ({"trace_id": "ab"}, 0.3, NOW - 5)},
    )
    counter = BackendFamily("jobs_total", "counter", "Jobs", ("k",), (), ((("x",), 2.0),), (), 0, 0)
    histogram = BackendFamily(
        "lat_seconds", "histogram", "Latency", ("k",), (0.1, 1.0), (),
        ((("x",), (0, 1, 1), 0.5),), 0, 0, ((("x",), 1, ({"trace_id": "ab"}, 0.5, NOW)),),
    )  # fmt: skip
    gauge = BackendFamily("depth", "gauge", "Depth", ("q",), (), ((("a",), -3.0),), (), 0, 0)
    snapshot = Snapshot(
        taken_at=NOW,
        cycle=7,
        providers=(health, ProviderHealth("anthropic")),
        backend=(counter, gauge, histogram),
        redis_ops={"zadd": 5},
        client_clock_offsets={"host:1": -0.25},
        model_breakers=(ModelBreaker("openrouter", "gpt-4o"),),
    )
    document: dict[str, Any] = json.loads(snapshot.to_json())
    return document


def _first(document: dict[str, Any]) -> dict[str, Any]:
    first: dict[str, Any] = document["providers"][0]
    return first


def _metric(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda document: next(f for f in document["backend"] if f["name"] == name)


NAN = float("nan")
SPOILINGS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("negative requests", lambda d: _first(d)["requests_total"].update(success=-5),
     "provider 'openrouter': a negative count"),
    ("negative tokens", lambda d: _first(d).update(tokens_total=-7), "a negative count"),
    ("negative rejections", lambda d: _first(d).update(breaker_rejected_total=-1),
     "a negative count"),
    ("decreasing buckets",
     lambda d: _first(d).update(histogram_cumulative=[5, 1, 1, 1, 1, 1, 1]),
     "histogram buckets that decrease"),
    ("health NaN", lambda d: _first(d).update(health_score=NAN), "outside [0, 1]"),
    ("health above 1", lambda d: _first(d).update(health_score=1.5), "outside [0, 1]"),
    ("latency sum inf", lambda d: _first(d).update(latency_sum_seconds=math.inf),
     "a latency, latency sum or cost"),
    ("negative cost", lambda d: _first(d).update(cost_usd=-1e308), "a latency, latency sum"),
    ("a provider twice", lambda d: d["providers"].append(copy.deepcopy(_first(d))),
     "provider 'openrouter' twice"),
    ("a name no key holds", lambda d: _first(d).update(provider='a"b\nc'), "not a provider name"),
    ("a name as markup", lambda d: _first(d).update(provider="<b>"), "not a provider name"),
    ("a state no breaker has", lambda d: _first(d)["breaker"].update(state="bogus"),
     "breaker state 'bogus'"),
    ("a transition of no states", lambda d: _first(d).update(transitions={"x\ny": 1}),
     "a transition between states"),
    ("a negative transition count", lambda d: _first(d).update(transitions={"open>closed": -3}),
     "a negative count"),
    ("a long exemplar",
     lambda d: _first(d).update(exemplars={"0": [{"trace_id": "a" * 300}, 0.1, 1.0]}),
     "exemplar '0'"),
    ("an exemplar past the buckets", lambda d: _first(d).update(exemplars={"7": [{}, 0.1, 1.0]}),
     "exemplar '7'"),
    ("a negative rejection", lambda d: d.update(client_rejected={"x": -4}), "client_rejected"),
    ("10,000 operations", lambda d: d.update(redis_ops={f"op{i}": 1 for i in range(10_000)}),
     "redis_ops: more than 64 names"),
    ("a reason as markup", lambda d: d.update(client_rejected={"<b>": 1}), "client_rejected"),
    ("a clock offset NaN", lambda d: d.update(client_clock_offsets={"w:1": NAN}), "clock offset"),
    ("taken in year 33658", lambda d: d.update(taken_at=1e12), "taken_at 1000000000000.0"),
    ("taken before 1970", lambda d: d.update(taken_at=-1.0), "taken_at -1.0"),
    ("a negative counter", lambda d: _metric("jobs_total")(d).update(samples=[[["x"], -1.0]]),
     "backend metric 'jobs_total': a counter that is not a finite number >= 0"),
    ("a gauge NaN", lambda d: _metric("depth")(d).update(samples=[[["a"], NAN]]), "or a gauge"),
    ("a series twice", lambda d: _metric("jobs_total")(d).update(samples=[[["x"], 1.0]] * 2),
     "label set ('x',) twice"),
    ("a series of another width", lambda d: _metric("jobs_total")(d).update(samples=[[[], 1.0]]),
     "a label set of another width"),
    ("decreasing series buckets",
     lambda d: _metric("lat_seconds")(d).update(histograms=[[["x"], [1, 0, 1], 0.5]]),
     "buckets that decrease"),
    ("a series of other buckets",
     lambda d: _metric("lat_seconds")(d).update(histograms=[[["x"], [1, 1], 0.5]]), "2 buckets"),
    ("a metric no client declares", lambda d: _metric("depth")(d).update(name="bad name"),
     "not a declaration a client writes"),
    ("a metric twice", lambda d: d["backend"].append(copy.deepcopy(_metric("depth")(d))),
     "backend metric 'depth' twice"),
    ("a model breaker twice", lambda d: d["model_breakers"].append(dict(d["model_breakers"][0])),
     "model breaker ('openrouter', 'gpt-4o') twice"),
    ("a model of no provider", lambda d: d["model_breakers"][0].update(provider="<b>"),
     "not a provider's model"),
]  # fmt: skip


def test_the_snapshot_before_spoiling_meets_the_rules() -> None:
    assert snapshot_problem(Snapshot.from_json(json.dumps(_document())), NOW) is None
    at_once = _document()
    at_once.update(taken_at=NOW + 60.0)  # a leader's clock a little ahead: still served
    assert snapshot_problem(Snapshot.from_json(json.dumps(at_once)), NOW) is None


@pytest.mark.parametrize(
    ("spoiling", "name"), [(s[1], s[2]) for s in SPOILINGS], ids=[s[0] for s in SPOILINGS]
)
def test_a_value_no_leader_publishes_is_named(
    spoiling: Callable[[dict[str, Any]], None], name: str
) -> None:
    document = _document()
    spoiling(document)
    problem = snapshot_problem(Snapshot.from_json(json.dumps(document)), NOW)
    assert problem is not None and name in problem, problem

"""Property tests (hypothesis) for bad input: record() with anything, the health math and the
breaker state machine with arbitrary counts and clocks, and the /metrics exposition with
arbitrary counts and label values.

Tests that touch Redis run few examples (deadline=None); the pure ones run many. No example
database is written (database=None): the suite leaves no files behind.
"""

from __future__ import annotations

import itertools
import json
import math
import string
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.samples import Sample

from aggregator.app import create_app
from aggregator.backend import build_families
from aggregator.breaker import (
    BreakerCalls,
    BreakerConfig,
    evaluate,
    limit_open_share,
    open_duration,
)
from aggregator.cycle import Aggregator
from aggregator.health import (
    WindowCounts,
    bucket_quantile,
    error_rate,
    health_score,
    latency_score,
)
from aggregator.rendering import RenderedMetrics
from aggregator.served import ServedState
from aggregator.snapshot import ProviderHealth, Snapshot, provider_health
from client import MetricsClient
from client._outcome import classify_status
from protocol.breaker_state import CLOSED, HALF_OPEN, OPEN, STATES, BreakerState
from protocol.fields import (
    COST_FIELD,
    COUNT_FIELDS,
    HISTOGRAM_FIELDS,
    LATENCY_SUM_FIELD,
    TOKENS_FIELD,
)
from protocol.fields import join_amount as exact
from protocol.keys import Keys
from protocol.names import PROVIDER_NAME_RE
from protocol.partitions import OUTCOMES, WINDOW_BOUNDS
from protocol.specs import MetricSpec, series_id
from tests.conftest import FakeClock

MakeClient = Callable[..., MetricsClient]
MakeAggregator = Callable[..., Aggregator]
Families = dict[str, list[Sample]]


def _settings(examples: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=examples,
        deadline=None,  # Redis round trips and big inputs vary in time: no per-example deadline
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# -- strategies --------------------------------------------------------------------------------

# The README's rule, restated independently of client.keys: 1-64 ASCII letters, digits, '.',
# '_' or '-', starting with a letter or a digit.
_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "._-")


def readme_valid_provider(name: object) -> bool:
    return (
        isinstance(name, str)
        and 1 <= len(name) <= 64
        and name[0] in string.ascii_letters + string.digits
        and all(c in _NAME_CHARS for c in name)
    )


WEIRD_NAMES = (
    "",
    " ",
    "}",
    "{",
    ":",
    "*",
    "?",
    "[",
    "]",
    "a}",
    "{a",
    "a:b",
    "a*",
    "a?b",
    "a[b]",
    "a\nb",
    "a\n",
    "a b",
    "a\tb",
    "a\r",
    "é",
    "ünïcödé",
    "提供者",
    "..",
    "a/../b",
    "-a",
    ".a",
    "_a",
    "openrouter}:w:fail",
    "openrouter}:totals",
    "openrouter}",
    "{openrouter}",
    "a" * 65,
    "a" * 100_000,
    "\x00",
    "a\x00b",
    "\ud800",
    "a\udfff",
    "\uff41\uff42\uff43",  # fullwidth "abc": isalnum() but not ASCII
    "١٢٣",  # Arabic-Indic digits
)

ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.decimals(),
    st.fractions(),
    st.complex_numbers(),
    st.just(object()),
)
PROVIDERS = st.one_of(
    st.sampled_from(WEIRD_NAMES),
    st.from_regex(PROVIDER_NAME_RE, fullmatch=True),
    st.text(max_size=80),
    st.text(st.characters(codec=None, categories=["Cs", "Lu", "Nd", "Po"]), max_size=10),
    st.builds(lambda c, n: c * n, st.characters(), st.integers(60, 70)),
    ANYTHING,
)
LATENCIES = st.one_of(
    st.floats(),
    st.integers(),
    st.sampled_from([math.nan, -math.inf, math.inf, -0.0, -1e-300, 1e308, 10**400]),
    st.text(max_size=5),
    ANYTHING,
)
STATUS_CODES = st.one_of(st.none(), st.integers(), st.integers(90, 610), ANYTHING)
OUTCOME_VALUES = st.one_of(
    st.none(), st.sampled_from([*OUTCOMES, "SUCCESS", "", "fail", "success "]), ANYTHING
)
TOKENS = st.one_of(st.integers(), st.just(0), ANYTHING)
COSTS = st.one_of(st.floats(), st.integers(), st.decimals(), ANYTHING)

RECORD_CALLS = st.lists(
    st.tuples(
        PROVIDERS,
        LATENCIES,
        st.fixed_dictionaries(
            {},
            optional={
                "status_code": STATUS_CODES,
                "outcome": OUTCOME_VALUES,
                "tokens": TOKENS,
                "cost_usd": COSTS,
            },
        ),
    ),
    min_size=1,
    max_size=12,
)

DOCUMENTED_CAUSES = frozenset(
    {
        "invalid_provider",
        "invalid_latency",
        "invalid_status_code",
        "invalid_outcome",
        "status_and_outcome",
        "invalid_tokens",
        "invalid_cost",
        "invalid_argument",
    }
)
"""The causes README lists for record() itself (too_many_providers is counted later, by the
flusher, for events record() had accepted)."""


def _record_time_rejections(stats: dict[str, Any]) -> int:
    rejected: dict[str, int] = stats["rejected"]
    return sum(n for cause, n in rejected.items() if cause != "too_many_providers")


# -- record(): never raises, never blocks, every call is counted once --------------------------


def test_record_never_raises_never_blocks_and_counts_every_call(
    make_client: MakeClient, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)

    @_settings(150)
    @given(calls=RECORD_CALLS)
    def check(calls: list[tuple[Any, Any, dict[str, Any]]]) -> None:
        before = metrics.stats()
        for provider, latency_s, extra in calls:
            seen = metrics.stats()
            started = time.perf_counter()
            result = metrics.record(provider, latency_s, **extra)
            elapsed = time.perf_counter() - started
            after = metrics.stats()
            assert result in (True, False)
            assert elapsed < 1.0, f"record() took {elapsed:.3f}s"
            accepted = after["accepted"] - seen["accepted"]
            rejected = _record_time_rejections(after) - _record_time_rejections(seen)
            assert (accepted, rejected) in ((1, 0), (0, 1)), (provider, latency_s, extra)
            assert result is (accepted == 1)
            assert set(after["rejected"]) <= DOCUMENTED_CAUSES | {"too_many_providers"}
            if not readme_valid_provider(provider):
                assert accepted == 0, f"accepted the provider name {provider!r}"
            if isinstance(latency_s, float) and not (0.0 <= latency_s <= 86_400.0):
                assert accepted == 0, f"accepted the latency {latency_s!r}"
            code = extra.get("status_code")
            if type(code) is int and not 100 <= code <= 599:
                assert accepted == 0, f"accepted the status code {code!r}"
            if extra.get("status_code") is not None and extra.get("outcome") is not None:
                assert accepted == 0, "accepted both a status code and an outcome"
            # a latency of at most a day (MAX_LATENCY_SECONDS) is valid
            plain = not extra and type(latency_s) is float and 0.0 <= latency_s <= 86_400.0
            if plain and readme_valid_provider(provider):
                assert accepted == 1, f"rejected a valid call: {provider!r}, {latency_s!r}"
        after = metrics.stats()
        counted = (after["accepted"] - before["accepted"]) + (
            _record_time_rejections(after) - _record_time_rejections(before)
        )
        assert counted == len(calls)

    check()


# -- record(): what it accepts reaches Redis exactly (realistic magnitudes) ---------------------

VALID_CALLS = st.lists(
    st.tuples(
        st.one_of(
            st.sampled_from(["openrouter", "anthropic", "google-vertex", "fireworks.ai"]),
            st.from_regex(PROVIDER_NAME_RE, fullmatch=True),
        ),
        st.one_of(st.floats(0.0, 86_400.0), st.integers(0, 86_400), st.sampled_from(WINDOW_BOUNDS)),
        st.one_of(
            st.tuples(st.integers(100, 599), st.none()),
            st.tuples(st.none(), st.sampled_from(OUTCOMES)),
            st.tuples(st.none(), st.none()),
        ),
        st.integers(0, 2**31),
        st.one_of(st.just(0.0), st.floats(0.0, 1e6), st.integers(0, 1000)),
    ),
    min_size=1,
    max_size=20,
)


def test_every_accepted_call_reaches_redis_exactly(
    make_client: MakeClient, clock: FakeClock, r: redis.Redis, keys: Keys
) -> None:
    """Within realistic magnitudes (test_input_hardening pins what happens beyond them)."""
    metrics = make_client(clock=clock)
    model: dict[str, Counter[str]] = {}
    latencies: dict[str, list[float]] = {}

    @_settings(30)
    @given(calls=VALID_CALLS)
    def check(calls: list[tuple[str, float, tuple[int | None, str | None], int, float]]) -> None:
        for provider, latency_s, (status_code, outcome), tokens, cost_usd in calls:
            metrics.record(provider, latency_s, status_code, outcome, tokens, cost_usd)
            expected = model.setdefault(provider, Counter())
            if status_code is not None:
                expected[COUNT_FIELDS[classify_status(status_code)]] += 1
            else:
                expected[COUNT_FIELDS[OUTCOMES.index(outcome or "success")]] += 1
            expected[TOKENS_FIELD] += tokens
            expected[COST_FIELD] += round(cost_usd * 1_000_000_000)
            latencies.setdefault(provider, []).append(float(latency_s))
            expected["events"] += 1
        assert metrics.flush(timeout=5.0)
        stats = metrics.stats()
        assert stats["write_errors"] == 0 and stats["rejected"] == {}
        for provider in {call[0] for call in calls}:
            expected = model[provider]
            totals = {k.decode(): int(v) for k, v in r.hgetall(keys.totals(provider)).items()}
            for field in (*COUNT_FIELDS, TOKENS_FIELD, COST_FIELD):
                assert totals.get(field, 0) == expected[field], (provider, field)
            # whole microseconds, rounded once per batch: at most 0.5 us off per batch
            latency_us = math.fsum(latencies[provider]) * 1_000_000
            assert abs(totals.get(LATENCY_SUM_FIELD, 0) - latency_us) <= expected["events"]
            histogram = sum(totals.get(field, 0) for field in HISTOGRAM_FIELDS)
            assert histogram == expected["events"]
            members = sum(r.zcard(key) for key in keys.window_keys(provider))
            assert members == expected["events"]

    check()


# -- health math -------------------------------------------------------------------------------

COUNTS = st.integers(0, 10**12)
WINDOW_COUNTS = st.builds(
    WindowCounts,
    st.lists(COUNTS, min_size=len(WINDOW_BOUNDS) + 1, max_size=len(WINDOW_BOUNDS) + 1).map(tuple),
    COUNTS,
    COUNTS,
    COUNTS,
)
SPARSE_PARTITIONS = st.lists(
    st.one_of(st.just(0), st.just(0), st.integers(0, 5), COUNTS),
    min_size=len(WINDOW_BOUNDS) + 1,
    max_size=len(WINDOW_BOUNDS) + 1,
)


@_settings(400)
@given(window=WINDOW_COUNTS)
def test_error_rate_is_a_share(window: WindowCounts) -> None:
    rate = error_rate(window.successes, window.failures)
    assert 0.0 <= rate <= 1.0
    if window.failures == 0:
        assert rate == 0.0
    if window.successes == 0 and window.failures:
        assert rate == 1.0


@_settings(400)
@given(
    p95=st.one_of(st.none(), st.floats(0.0, allow_infinity=True, allow_nan=False)),
    target=st.floats(1e-6, 1e6),
    span=st.floats(1e-6, 1e6),
)
def test_latency_score_is_in_unit_interval_and_monotone(
    p95: float | None, target: float, span: float
) -> None:
    ceiling = target + span
    assume(ceiling > target)
    score = latency_score(p95, target, ceiling)
    assert 0.0 <= score <= 1.0
    if p95 is not None:
        worse = latency_score(p95 * 2 + 1e-9, target, ceiling)
        assert worse <= score


@_settings(400)
@given(
    availability=st.floats(allow_nan=True, allow_infinity=True),
    err=st.floats(allow_nan=True, allow_infinity=True),
    lat=st.floats(allow_nan=True, allow_infinity=True),
)
def test_health_score_is_always_in_unit_interval(
    availability: float, err: float, lat: float
) -> None:
    assert 0.0 <= health_score(availability, err, lat) <= 1.0


@_settings(300)
@given(window=WINDOW_COUNTS, state=st.sampled_from(STATES))
def test_provider_health_figures_are_in_range(window: WindowCounts, state: str) -> None:
    health = provider_health(
        "p", window, BreakerState(state=state), {}, {}, latency_target_s=2.0, latency_ceiling_s=10.0
    )
    assert health.availability == (1.0 if state == CLOSED else 0.0)
    for value in (health.error_rate, health.latency_score, health.health_score):
        assert 0.0 <= value <= 1.0
    assert health.window_requests == window.total


def _increasing_bounds() -> st.SearchStrategy[tuple[float, ...]]:
    return st.lists(
        st.floats(1e-9, 1e9, allow_subnormal=False), min_size=1, max_size=25, unique=True
    ).map(lambda values: tuple(sorted(values)))


@_settings(800)
@given(
    counts_and_bounds=st.one_of(
        SPARSE_PARTITIONS.map(lambda counts: (counts, WINDOW_BOUNDS)),
        _increasing_bounds().flatmap(
            lambda bounds: st.tuples(
                st.lists(COUNTS, min_size=len(bounds) + 1, max_size=len(bounds) + 1),
                st.just(bounds),
            )
        ),
    ),
    qs=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=6),
)
def test_bucket_quantile_is_monotone_and_bounded(
    counts_and_bounds: tuple[list[int], tuple[float, ...]], qs: list[float]
) -> None:
    counts, bounds = counts_and_bounds
    values = [bucket_quantile(q, counts, bounds) for q in sorted(qs)]
    if sum(counts) == 0:
        assert values == [None] * len(qs)
        return
    numbers = [v for v in values if v is not None]
    assert len(numbers) == len(values)
    for value in numbers:
        assert 0.0 <= value <= bounds[-1]
    for lower, higher in itertools.pairwise(numbers):
        assert lower <= higher, (counts, bounds, sorted(qs), numbers)


@_settings(200)
@given(q=st.one_of(st.floats(max_value=-1e-12), st.floats(min_value=1.000001), st.just(math.nan)))
def test_bucket_quantile_refuses_quantiles_outside_unit_interval(q: float) -> None:
    with pytest.raises(ValueError):
        bucket_quantile(q, [1] * (len(WINDOW_BOUNDS) + 1), WINDOW_BOUNDS)


# -- circuit breaker ---------------------------------------------------------------------------

CLOCKS = st.floats(-1e12, 1e12)
BREAKER_STATES = st.builds(
    BreakerState,
    state=st.sampled_from(STATES),
    since=CLOCKS,
    epoch=st.integers(0, 2**62),
    open_until=CLOCKS,
    consecutive_opens=st.integers(0, 10**6),
    forced=st.booleans(),
)
BREAKER_CALLS = st.builds(BreakerCalls, st.integers(0, 10**9), st.integers(0, 10**9))


@st.composite
def breaker_configs(draw: st.DrawFn) -> BreakerConfig:
    """Any configuration AggregatorSettings would accept."""
    open_seconds = draw(st.floats(1e-3, 1e6))
    return BreakerConfig(
        min_calls=draw(st.integers(1, 1000)),
        failure_rate=draw(st.floats(1e-6, 1.0)),
        open_seconds=open_seconds,
        max_open_seconds=open_seconds + draw(st.floats(0.0, 1e7)),
        half_open_calls=draw(st.integers(1, 100)),
        half_open_timeout_seconds=draw(st.floats(1e-3, 1e6)),
        rate_limited_is_failure=draw(st.booleans()),
        max_open_share=draw(st.floats(0.0, 1.0)),
        window_seconds=draw(st.floats(1e-3, 1e6)),
    )


@_settings(1000)
@given(state=BREAKER_STATES, calls=BREAKER_CALLS, now=CLOCKS, config=breaker_configs())
def test_breaker_transitions_are_single_epoch_steps(
    state: BreakerState, calls: BreakerCalls, now: float, config: BreakerConfig
) -> None:
    transition = evaluate(state, calls, now, config)
    if state.forced:
        assert transition is None
        return
    if transition is None:
        return
    assert transition.old == state
    assert transition.new.epoch == state.epoch + 1
    assert transition.new.open_until >= state.open_until
    assert transition.new.state in STATES and transition.new.state != state.state
    assert not transition.new.forced
    assert (state.state, transition.new.state) in {
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
        (HALF_OPEN, OPEN),
    }
    if transition.new.state == OPEN:
        assert transition.new.consecutive_opens == state.consecutive_opens + 1
        assert transition.new.open_until >= now + open_duration(
            transition.new.consecutive_opens, config
        ) or math.isinf(transition.new.open_until)
    if transition.new.state == CLOSED:
        assert transition.new.consecutive_opens == 0


@_settings(300)
@given(
    start=BREAKER_STATES.map(lambda s: replace(s, forced=False)),
    steps=st.lists(st.tuples(BREAKER_CALLS, st.floats(-1e3, 1e6)), min_size=1, max_size=30),
    now=CLOCKS,
    config=breaker_configs(),
)
def test_breaker_runs_keep_epochs_and_deadlines_monotone(
    start: BreakerState,
    steps: list[tuple[BreakerCalls, float]],
    now: float,
    config: BreakerConfig,
) -> None:
    """Applying evaluate() step after step, with a clock that may also jump backwards."""
    state = start
    for calls, dt in steps:
        now += dt
        transition = evaluate(state, calls, now, config)
        if transition is None:
            continue
        assert transition.new.epoch == state.epoch + 1
        assert transition.new.open_until >= state.open_until
        state = transition.new
    assert state.epoch >= start.epoch
    assert state.open_until >= start.open_until


@_settings(300)
@given(state=BREAKER_STATES.map(lambda s: replace(s, forced=True)), data=st.data())
def test_forced_breakers_never_transition(state: BreakerState, data: st.DataObject) -> None:
    config = data.draw(breaker_configs())
    for _ in range(5):
        calls, now = data.draw(BREAKER_CALLS), data.draw(CLOCKS)
        assert evaluate(state, calls, now, config) is None


@_settings(300)
@given(
    current=st.dictionaries(
        st.from_regex(PROVIDER_NAME_RE, fullmatch=True), BREAKER_STATES, max_size=12
    ),
    data=st.data(),
)
def test_open_share_guard_only_ever_suppresses_openings(
    current: dict[str, BreakerState], data: st.DataObject
) -> None:
    config = data.draw(breaker_configs())
    planned = []
    for name, state in sorted(current.items()):
        transition = evaluate(state, data.draw(BREAKER_CALLS), data.draw(CLOCKS), config)
        if transition is not None:
            planned.append((name, transition))
    kept, suppressed = limit_open_share(planned, current, config.max_open_share)
    assert sorted(kept + suppressed, key=lambda item: item[0]) == planned
    assert all(t.old.state == CLOSED and t.new.state == OPEN for _, t in suppressed)
    limit = math.floor(config.max_open_share * len(current) + 1e-9)
    not_admitting = sum(1 for s in current.values() if s.state != CLOSED)
    after = not_admitting + sum((t.new.state != CLOSED) - (t.old.state != CLOSED) for _, t in kept)
    assert after <= max(limit, not_admitting)
    if config.max_open_share == 1.0:
        assert suppressed == []


# -- exposition from an arbitrary Snapshot (pure: no cycle) -------------------------------------

# Label values with everything the exposition formats must escape, and arbitrary unicode that
# UTF-8 can encode (lone surrogates cannot: what they do is pinned in test_input_hardening).
UTF8_CHARS = st.characters(codec="utf-8")
LABEL_VALUES = st.text(
    st.one_of(st.sampled_from('"\\\n\r\t{}=,# \x00\u2028\u0085'), UTF8_CHARS), max_size=16
)
METRIC_HELP = st.text(UTF8_CHARS, max_size=40)


@st.composite
def provider_healths(draw: st.DrawFn, name: str) -> ProviderHealth:
    totals = {field: draw(st.integers(0, 2**40)) for field in HISTOGRAM_FIELDS}
    for field in COUNT_FIELDS:
        totals[field] = draw(st.integers(0, 2**40))
    totals[LATENCY_SUM_FIELD] = draw(st.integers(0, 2**62))
    totals[COST_FIELD] = draw(st.integers(0, 2**62))
    totals[TOKENS_FIELD] = draw(st.integers(0, 2**62))
    transitions = draw(
        st.dictionaries(
            st.sampled_from(
                ["closed>open", "open>half_open", "half_open>closed", "half_open>open"]
            ),
            st.integers(0, 10**6),
        )
    )
    return provider_health(
        name,
        draw(WINDOW_COUNTS),
        draw(BREAKER_STATES),
        totals,
        transitions,
        latency_target_s=draw(st.floats(0.01, 5.0)),
        latency_ceiling_s=draw(st.floats(5.01, 100.0)),
        open_suppressed=draw(st.booleans()),
    )


@st.composite
def backend_data(
    draw: st.DrawFn,
) -> tuple[dict[str, str], dict[str, list[str]], dict[str, dict[str, int]], list[dict[str, str]]]:
    """What the reader fetches from Redis for three backend metrics (one of each kind), with
    arbitrary label values and counts."""
    kinds = {"bk_counter": "counter", "bk_gauge": "gauge", "bk_histogram": "histogram"}
    schema: dict[str, str] = {}
    series: dict[str, list[str]] = {}
    data: dict[str, dict[str, int]] = {}
    writer: dict[str, str] = {}
    for name, kind in kinds.items():
        labelnames = ("a", "b")
        buckets = draw(_increasing_bounds()) if kind == "histogram" else ()
        spec = MetricSpec(
            name, kind, draw(METRIC_HELP), labelnames, buckets, "max" if kind == "gauge" else ""
        )
        schema[name] = spec.to_json()
        values = draw(
            st.lists(st.tuples(LABEL_VALUES, LABEL_VALUES), max_size=6, unique=True).map(
                lambda pairs: [list(p) for p in pairs]
            )
        )
        sids = [series_id(v) for v in values]
        series[name] = sids
        fields: dict[str, int] = {
            "!dropped": draw(st.integers(0, 2**40)),
            "!rejected": draw(st.integers(0, 2**40)),
        }
        for sid in sids:
            fields[f"i:{sid}"] = draw(st.integers(0, 2**50))
            fields[f"n:{sid}"] = draw(st.integers(0, 10**9 - 1))
            for index in range(len(buckets) + 1):
                fields[f"b{index}:{sid}"] = draw(st.integers(0, 2**40))
            if kind == "gauge":
                value = draw(st.floats(-1e15, 1e15))
                writer[f"{name}|{sid}"] = f"{value!r}|{draw(st.floats(0, 2e9))!r}"
        data[name] = fields
    return schema, series, data, [writer]


def _families(text: str, openmetrics: bool) -> Families:
    parse = parse_openmetrics if openmetrics else parse_text
    families: Families = {}
    for family in parse(text):
        assert family.name not in families, f"family {family.name} exposed twice"
        families[family.name] = list(family.samples)
    return families


def _scrape_text(http: TestClient, openmetrics: bool) -> str:
    """GET /metrics as Prometheus would (OpenMetrics when asked for)."""
    headers = {"accept": "application/openmetrics-text"} if openmetrics else {}
    response = http.get("/metrics", headers=headers)
    assert response.status_code == 200
    content_type = response.headers["content-type"]
    if openmetrics:
        assert content_type.startswith("application/openmetrics-text")
        assert response.text.endswith("# EOF\n")
    else:
        assert content_type.startswith("text/plain")
    return response.text


def _scrape(http: TestClient, openmetrics: bool) -> Families:
    return _families(_scrape_text(http, openmetrics), openmetrics)


def _by_labels(samples: Iterable[Sample], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in samples if s.name == name}


def check_provider_series(families: Families, providers: Iterable[str]) -> None:
    """Gauges in range, one-hot breaker state, cumulative histogram buckets with +Inf == count."""
    providers = set(providers)
    for family, low, high in (
        ("provider_availability", 0.0, 1.0),
        ("provider_error_rate", 0.0, 1.0),
        ("gatewayz_provider_health_score", 0.0, 1.0),
    ):
        samples = families.get(family, [])
        assert {s.labels["provider"] for s in samples} == providers
        for sample in samples:
            assert low <= sample.value <= high, (family, sample)
    for sample in families.get("provider_availability", []):
        assert sample.value in (0.0, 1.0)
    states: dict[str, float] = Counter()
    for sample in families.get("gatewayz_circuit_breaker_state", []):
        assert sample.value in (0.0, 1.0)
        states[sample.labels["provider"]] += sample.value
    assert all(states[p] == 1.0 for p in providers)
    check_histograms(families, "provider_response_time_seconds")


def check_histograms(families: Families, name: str) -> None:
    samples = families.get(name, [])
    buckets: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    counts: dict[tuple[tuple[str, str], ...], float] = {}
    for sample in samples:
        labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
        if sample.name == f"{name}_bucket":
            buckets.setdefault(labels, []).append((float(sample.labels["le"]), sample.value))
        elif sample.name == f"{name}_count":
            counts[labels] = sample.value
    assert set(buckets) == set(counts)
    for labels, pairs in buckets.items():
        pairs.sort()
        assert pairs[-1][0] == math.inf
        values = [value for _, value in pairs]
        assert values == sorted(values), (labels, pairs)
        assert values[-1] == counts[labels]


def _backend_labels(families: Families, family: str, sample: str) -> Counter[tuple[str, str]]:
    return Counter(
        (s.labels["a"], s.labels["b"]) for s in families.get(family, []) if s.name == sample
    )


Backend = tuple[
    dict[str, str], dict[str, list[str]], dict[str, dict[str, int]], list[dict[str, str]]
]


def test_any_snapshot_renders_parseable_consistent_metrics() -> None:
    served = [ServedState("replica-1")]
    rendered = RenderedMetrics(lambda: served[0])

    @_settings(60)
    @given(
        names=st.lists(st.from_regex(PROVIDER_NAME_RE, fullmatch=True), max_size=5, unique=True),
        backend=backend_data(),
        openmetrics=st.booleans(),
        data=st.data(),
    )
    def check(names: list[str], backend: Backend, openmetrics: bool, data: st.DataObject) -> None:
        providers = tuple(data.draw(provider_healths(name)) for name in names)
        schema, series, values, writers = backend
        snapshot = Snapshot(
            taken_at=data.draw(st.floats(0, 4e9)),
            cycle=data.draw(st.integers(1, 2**40)),
            window_seconds=data.draw(st.floats(1.0, 86400.0)),
            providers=providers,
            redis_ops=data.draw(st.dictionaries(st.sampled_from(["zadd", "hincrby"]), COUNTS)),
            client_rejected=data.draw(
                st.dictionaries(st.sampled_from(sorted(DOCUMENTED_CAUSES)), COUNTS)
            ),
            client_dropped=data.draw(COUNTS),
            backend=build_families(schema, series, values, writers),
        )
        served[0] = ServedState("replica-1", snapshot)
        accept = "application/openmetrics-text" if openmetrics else None
        body, content_type = rendered.render(accept)
        text = body.decode()
        if openmetrics:
            assert content_type.startswith("application/openmetrics-text")
            assert text.endswith("# EOF\n")
        else:
            assert content_type.startswith("text/plain")
        families = _families(text, openmetrics)

        check_provider_series(families, names)
        counts = _by_labels(
            families["provider_response_time_seconds"], "provider_response_time_seconds_count"
        )
        for p in providers:
            assert counts[(("provider", p.provider),)] == p.histogram_cumulative[-1]
        # backend label values survive escaping and parsing exactly, and so do the values
        expected = {name: Counter(map(_decode_sid, sids)) for name, sids in series.items()}
        counters = _backend_labels(families, "bk_counter", "bk_counter_total")
        assert counters == expected["bk_counter"]
        assert _backend_labels(families, "bk_gauge", "bk_gauge") == expected["bk_gauge"]
        histograms = _backend_labels(families, "bk_histogram", "bk_histogram_count")
        assert histograms == expected["bk_histogram"]
        check_histograms(families, "bk_histogram")
        for sample in families.get("bk_counter", []):
            sid = series_id([sample.labels["a"], sample.labels["b"]])
            fields = values["bk_counter"]
            assert sample.value == exact(fields[f"i:{sid}"], fields[f"n:{sid}"])
        for sample in families.get("bk_gauge", []):
            sid = series_id([sample.labels["a"], sample.labels["b"]])
            assert sample.value == float(writers[0][f"bk_gauge|{sid}"].partition("|")[0])

    check()


def _decode_sid(sid: str) -> tuple[str, str]:
    first, second = json.loads(sid)
    return str(first), str(second)


# -- exposition through a real cycle: label values declared by workers -------------------------


def test_worker_label_values_round_trip_through_a_real_cycle(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    aggregator = make_aggregator()
    http = TestClient(create_app(aggregator))
    help_text = 'a help text with \\ backslash, "quotes" and \n newline'
    counter = metrics.counter("prop_events_total", help_text, ["case", "value"])
    gauge = metrics.gauge("prop_level", help_text, ["case", "value"], combine="max")
    histogram = metrics.histogram("prop_size", help_text, ["case", "value"], buckets=[1, 10])

    @_settings(12)
    @given(
        label_values=st.lists(LABEL_VALUES, min_size=1, max_size=6),
        providers=st.lists(
            st.tuples(
                st.from_regex(PROVIDER_NAME_RE, fullmatch=True),
                st.floats(0.0, 100.0),
                st.one_of(st.integers(100, 599), st.none()),
            ),
            max_size=8,
        ),
    )
    def check(label_values: list[str], providers: list[tuple[str, float, int | None]]) -> None:
        case = uuid.uuid4().hex  # every example's series are its own
        for index, value in enumerate(label_values):
            counter.labels(case, value).inc()
            gauge.labels(case=case, value=value).set(index)
            histogram.labels(case, value).observe(index * 3)
        for provider, latency_s, status_code in providers:
            metrics.record(provider, latency_s, status_code)
        assert metrics.flush(timeout=5.0)
        assert aggregator.run_cycle() is not None

        mine = Counter(label_values)
        last_index = {value: float(index) for index, value in enumerate(label_values)}
        for openmetrics in (False, True):
            text = _scrape_text(http, openmetrics)
            families = _families(text, openmetrics)
            assert _case_values(families, "prop_events", "prop_events_total", case) == dict(mine)
            assert _case_values(families, "prop_level", "prop_level", case) == last_index
            assert _case_values(families, "prop_size", "prop_size_count", case) == dict(mine)
            check_histograms(families, "prop_size")
            known = {s.labels["provider"] for s in families["provider_availability"]}
            check_provider_series(families, known)
            assert {p for p, _, _ in providers} <= known
            parse = parse_openmetrics if openmetrics else parse_text
            help_texts = {f.documentation for f in parse(text) if f.name.startswith("prop_")}
            assert help_texts == {help_text}

    check()


def _case_values(families: Families, family: str, sample: str, case: str) -> dict[str, float]:
    return {
        s.labels["value"]: s.value
        for s in families.get(family, [])
        if s.name == sample and s.labels["case"] == case
    }

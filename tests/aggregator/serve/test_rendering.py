"""Property tests (hypothesis) of the /metrics exposition (aggregator/serve/collector.py and
aggregator/serve/rendering.py): any snapshot, with arbitrary counts and label values, renders
parseable, consistent metrics in both formats; label values declared by workers round-trip
exactly through a real cycle and the app.
"""

from __future__ import annotations

import json
import math
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace

import redis
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.samples import Sample

from aggregator.core.backend import build_families
from aggregator.core.served import ServedState
from aggregator.core.snapshot import ProviderHealth, Snapshot, provider_health
from aggregator.engine.cycle import Aggregator
from aggregator.serve.rendering import RenderedMetrics
from client import MetricsClient
from gatewayz_protocol.fields import (
    COST_FIELD,
    COUNT_FIELDS,
    HISTOGRAM_FIELDS,
    LATENCY_SUM_FIELD,
    TOKENS_FIELD,
)
from gatewayz_protocol.fields import join_amount as exact
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.names import PROVIDER_NAME_RE
from gatewayz_protocol.specs import MetricSpec, series_id
from tests.support.clock import FakeClock
from tests.support.scrape import (
    OPENMETRICS_TYPE,
    Families,
    check_format,
    families,
    helps,
    scrape,
)
from tests.support.strategies import (
    BREAKER_STATES,
    COUNTS,
    DOCUMENTED_CAUSES,
    WINDOW_COUNTS,
    increasing_bounds,
    property_settings,
)

MakeClient = Callable[..., MetricsClient]
MakeAggregator = Callable[..., Aggregator]
OPENMETRICS = "application/openmetrics-text"


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
    """A provider's figures as a cycle would compute them, from arbitrary totals, transition
    counts, window counts and breaker state."""
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
        buckets = draw(increasing_bounds()) if kind == "histogram" else ()
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


def _by_labels(samples: Iterable[Sample], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The values of the samples called ``name``, by their sorted labels."""
    return {tuple(sorted(s.labels.items())): s.value for s in samples if s.name == name}


def check_provider_series(exposed: Families, providers: Iterable[str]) -> None:
    """Gauges in range, one-hot breaker state, cumulative histogram buckets with +Inf == count."""
    providers = set(providers)
    for family, low, high in (
        ("provider_availability", 0.0, 1.0),
        ("provider_error_rate", 0.0, 1.0),
        ("gatewayz_provider_health_score", 0.0, 1.0),
    ):
        samples = exposed.get(family, [])
        assert {s.labels["provider"] for s in samples} == providers
        for sample in samples:
            assert low <= sample.value <= high, (family, sample)
    for sample in exposed.get("provider_availability", []):
        assert sample.value in (0.0, 1.0)
    states: dict[str, float] = Counter()
    for sample in exposed.get("gatewayz_circuit_breaker_state", []):
        assert sample.value in (0.0, 1.0)
        states[sample.labels["provider"]] += sample.value
    assert all(states[p] == 1.0 for p in providers)
    check_histograms(exposed, "provider_response_time_seconds")


def check_histograms(exposed: Families, name: str) -> None:
    """Every series of histogram ``name`` has cumulative buckets ending at +Inf == its count."""
    samples = exposed.get(name, [])
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


def _backend_labels(exposed: Families, family: str, sample: str) -> Counter[tuple[str, str]]:
    """How often each (a, b) label pair appears among the samples called ``sample``."""
    return Counter(
        (s.labels["a"], s.labels["b"]) for s in exposed.get(family, []) if s.name == sample
    )


Backend = tuple[
    dict[str, str], dict[str, list[str]], dict[str, dict[str, int]], list[dict[str, str]]
]


def test_any_snapshot_renders_parseable_consistent_metrics() -> None:
    served = [ServedState("replica-1")]
    rendered = RenderedMetrics(lambda: served[0])

    @property_settings(60)
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
        body, content_type = rendered.render(OPENMETRICS if openmetrics else None)
        text = body.decode()
        check_format(text, content_type, openmetrics)
        exposed = families(text, openmetrics)

        check_provider_series(exposed, names)
        counts = _by_labels(
            exposed["provider_response_time_seconds"], "provider_response_time_seconds_count"
        )
        for p in providers:
            assert counts[(("provider", p.provider),)] == p.histogram_cumulative[-1]
        # backend label values survive escaping and parsing exactly, and so do the values
        expected = {name: Counter(map(_decode_sid, sids)) for name, sids in series.items()}
        counters = _backend_labels(exposed, "bk_counter", "bk_counter_total")
        assert counters == expected["bk_counter"]
        assert _backend_labels(exposed, "bk_gauge", "bk_gauge") == expected["bk_gauge"]
        histograms = _backend_labels(exposed, "bk_histogram", "bk_histogram_count")
        assert histograms == expected["bk_histogram"]
        check_histograms(exposed, "bk_histogram")
        for sample in exposed.get("bk_counter", []):
            sid = series_id([sample.labels["a"], sample.labels["b"]])
            fields = values["bk_counter"]
            assert sample.value == exact(fields[f"i:{sid}"], fields[f"n:{sid}"])
        for sample in exposed.get("bk_gauge", []):
            sid = series_id([sample.labels["a"], sample.labels["b"]])
            assert sample.value == float(writers[0][f"bk_gauge|{sid}"].partition("|")[0])

    check()


def _decode_sid(sid: str) -> tuple[str, str]:
    """The two label values a series id stands for."""
    first, second = json.loads(sid)
    return str(first), str(second)


# -- exposition through a real cycle: label values declared by workers -------------------------


def test_worker_label_values_round_trip_through_a_real_cycle(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    aggregator = make_aggregator()
    help_text = 'a help text with \\ backslash, "quotes" and \n newline'
    counter = metrics.counter("prop_events_total", help_text, ["case", "value"])
    gauge = metrics.gauge("prop_level", help_text, ["case", "value"], combine="max")
    histogram = metrics.histogram("prop_size", help_text, ["case", "value"], buckets=[1, 10])

    @property_settings(12)
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
            text = scrape(aggregator, OPENMETRICS if openmetrics else None)
            exposed = families(text, openmetrics)
            assert _case_values(exposed, "prop_events", "prop_events_total", case) == dict(mine)
            assert _case_values(exposed, "prop_level", "prop_level", case) == last_index
            assert _case_values(exposed, "prop_size", "prop_size_count", case) == dict(mine)
            check_histograms(exposed, "prop_size")
            known = {s.labels["provider"] for s in exposed["provider_availability"]}
            check_provider_series(exposed, known)
            assert {p for p, _, _ in providers} <= known
            help_texts = {
                documentation
                for name, documentation in helps(text, openmetrics).items()
                if name.startswith("prop_")
            }
            assert help_texts == {help_text}

    check()


def _case_values(exposed: Families, family: str, sample: str, case: str) -> dict[str, float]:
    """The values of one example's (``case``) samples called ``sample``, by their value label."""
    return {
        s.labels["value"]: s.value
        for s in exposed.get(family, [])
        if s.name == sample and s.labels["case"] == case
    }


def test_an_exemplar_openmetrics_would_refuse_never_breaks_a_scrape(
    make_client: Callable[..., MetricsClient],
    make_aggregator: Callable[..., Aggregator],
    clock: FakeClock,
    r: redis.Redis,
    keys: Keys,
) -> None:
    metrics = make_client(clock=clock)
    metrics.record("openrouter", 0.3, status_code=200)
    assert metrics.flush(timeout=5)
    at = clock.now
    r.hset(
        keys.exemplars("openrouter"),
        mapping={
            "1": json.dumps({"l": {"trace id": "abc"}, "v": 0.3, "t": at}),  # a space in a name
            "2": json.dumps({"l": {"t": "x" * 200}, "v": 0.4, "t": at}),  # over 128 characters
            "3": json.dumps({"l": {"trace_id": "ok"}, "v": 1.5, "t": at}),  # bucket 3: (1, 2]
        },
    )
    aggregator = make_aggregator()
    snapshot = aggregator.run_cycle()
    assert snapshot is not None
    assert snapshot.providers[0].exemplars == {"3": ({"trace_id": "ok"}, 1.5, at)}
    assert aggregator.status.values_skipped == {"exemplars": 2}
    text = scrape(aggregator, OPENMETRICS_TYPE)  # parsed in full by the strict parser
    assert 'trace_id="ok"' in text and "trace id" not in text
    # a snapshot from another version holding one anyway: left out at render, not the scrape
    health = replace(snapshot.providers[0], exemplars={"3": ({"bad name": "x"}, 0.9, at)})
    served = ServedState("r", replace(snapshot, providers=(health,)))
    rendered = RenderedMetrics(lambda: served)
    body, _ = rendered.render(OPENMETRICS_TYPE, False)
    families(body.decode(), openmetrics=True)
    assert b"bad name" not in body


def _histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's histogram_quantile over (le, cumulative count) pairs, +Inf last, written
    from its documentation: linear inside the bucket holding rank q * count, the first bucket
    starting at 0, the highest finite bound when the rank falls in +Inf."""
    count = buckets[-1][1]
    rank = q * count
    lower, below = 0.0, 0.0
    for le, cumulative in buckets:
        if cumulative >= rank:
            if le == math.inf:
                return lower
            return lower + (le - lower) * (rank - below) / (cumulative - below)
        lower, below = le, cumulative
    raise AssertionError("the +Inf bucket holds the count")


def test_extra_latency_buckets_show_long_calls_as_the_p95_sees_them(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    for latency_s, calls in ((0.3, 2), (12.0, 3), (25.0, 10), (45.0, 5)):
        for _ in range(calls):
            metrics.record("openrouter", latency_s, status_code=200)
    assert metrics.flush(timeout=5)

    def exported(aggregator: Aggregator) -> tuple[list[tuple[float, float]], float]:
        assert aggregator.run_cycle() is not None
        found = families(scrape(aggregator))
        buckets = [
            (float(s.labels["le"]), s.value)
            for s in found["provider_response_time_seconds"]
            if s.name.endswith("_bucket")
        ]
        (p95,) = (s.value for s in found["gatewayz_provider_latency_p95_seconds"])
        return buckets, p95

    buckets, p95 = exported(make_aggregator(extra_latency_buckets=(15.0, 30.0, 60.0)))
    bounds = [0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, math.inf]
    assert buckets == list(zip(bounds, [0, 2, 2, 2, 2, 2, 5, 15, 20, 20], strict=True))
    # rank 19 of 20 in (30, 60], which holds calls 16-20: 30 + 30 * (19 - 15) / 5
    assert p95 == 54.0
    assert _histogram_quantile(0.95, buckets) == 54.0  # Prometheus agrees with the gauge
    # with the seed's buckets only, 18 of the 20 calls are above 10 s: Prometheus says 10
    buckets, p95 = exported(make_aggregator())
    assert buckets == list(zip([*bounds[:6], math.inf], [0, 2, 2, 2, 2, 2, 20], strict=True))
    assert (p95, _histogram_quantile(0.95, buckets)) == (54.0, 10.0)

"""Bad input, deterministically: names that try to steer Redis keys, floods of provider names and
label values (cardinality), values record() accepts but Redis cannot hold, label values UTF-8
cannot encode, worker metrics named like the aggregator's own, and the HTTP API under fuzzing.

Tests marked xfail(strict=True) pin a bug found here; each reason says where and how.
"""

from __future__ import annotations

import random
import re
import string
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import redis
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from prometheus_client.exposition import choose_encoder

from aggregator.engine.cycle import Aggregator
from aggregator.serve.app import create_app
from aggregator.serve.backend_metrics import RESERVED_NAMES
from client import ClientSettings, GatewayMetrics, MetricsClient
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.labels import bounded_label_value
from tests.support.clock import FakeClock
from tests.support.scrape import families, scrape

MakeClient = Callable[..., MetricsClient]
MakeAggregator = Callable[..., Aggregator]
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def _keys(r: redis.Redis, pattern: str) -> list[str]:
    return sorted(k.decode("utf-8", "backslashreplace") for k in r.scan_iter(pattern, count=1000))


# -- keys cannot be steered --------------------------------------------------------------------

TOKEN = f"steer{uuid.uuid4().hex[:10]}"
"""Part of every weird name below, so a key made from one can be found anywhere in Redis."""

STEERING_NAMES = (
    f"{TOKEN}}}",
    f"{{{TOKEN}",
    f"{TOKEN}}}:w:fail",
    f"{TOKEN}:x",
    f"{TOKEN}*",
    f"{TOKEN}?",
    f"{TOKEN}[a]",
    f"{TOKEN}\n",
    f"{TOKEN}\r\n",
    f"{TOKEN} x",
    f"{TOKEN}\t",
    f"{TOKEN}\x00",
    f"{TOKEN}é",
    f"{TOKEN}\u2028",
    f"{TOKEN}/../x",
    f"..{TOKEN}",
    f".{TOKEN}",
    f"-{TOKEN}",
    f"_{TOKEN}",
    f"{TOKEN}" + "a" * 60,  # 65+ characters
    f"openrouter}}:w:fail:{TOKEN}",
    f"openrouter}}:totals{TOKEN}",
    f"{TOKEN}\ud800",
)
PLAIN_WEIRD_NAMES = (
    "}",
    "{",
    ":",
    "*",
    "?",
    "[",
    "\n",
    " ",
    "",
    "..",
    "é",
    "提供者",
    "openrouter}",
    "openrouter}:w:fail",
    "openrouter}:totals",
    "{openrouter}",
    "openrouter\n",
    " openrouter",
    "openrouter ",
    "\uff4fpenrouter",  # fullwidth o
)


def test_names_that_could_steer_keys_are_rejected_and_write_nothing(
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    clock: FakeClock,
    r: redis.Redis,
    keys: Keys,
) -> None:
    metrics = make_client(clock=clock)
    weird = STEERING_NAMES + PLAIN_WEIRD_NAMES
    for name in weird:
        metrics.record(name, 0.1, status_code=500)
        with metrics.track(name):  # the same validation through track()
            pass
        assert metrics.allow(name) is True  # no breaker can exist for it; nothing is written
    metrics.record("openrouter", 0.2, status_code=200)
    assert metrics.flush(timeout=5.0)
    assert metrics.stats()["rejected"] == {"invalid_provider": 2 * len(weird)}

    aggregator = make_aggregator()
    snapshot = aggregator.run_cycle()
    assert snapshot is not None
    assert [p.provider for p in snapshot.providers] == ["openrouter"]
    assert snapshot.client_rejected == {"invalid_provider": 2 * len(weird)}
    exposed = families(scrape(aggregator))
    assert {s.labels["provider"] for s in exposed["provider_availability"]} == {"openrouter"}

    ns = re.escape(keys.namespace)
    allowed = re.compile(
        rf"{ns}:(\{{shared\}}:(providers|event_ids|applied|stats:clients|stats:redis_ops)"
        rf"|\{{leader\}}:(lease|token|cycle|snapshot)"
        rf"|\{{metrics\}}:applied"  # the writer's marker (a lost reply applies nothing twice)
        # (its breaker hash holds the fencing token the leader raised as it took over)
        rf"|\{{openrouter\}}:(w:ok:\d+|w:fail|w:rl|w:ce|totals|breaker))"
    )
    namespace_keys = _keys(r, keys.pattern())
    assert namespace_keys, "nothing was written at all"
    assert [k for k in namespace_keys if not allowed.fullmatch(k)] == []
    assert r.zrange(keys.providers, 0, -1) == [b"openrouter"]
    # nothing anywhere in Redis (inside or outside the namespace) was made from a weird name
    assert [k for k in _keys(r, "*") if TOKEN in k] == []


@pytest.mark.parametrize("namespace_value", ["", "a:b", "a}", "{a}", "a*", "a\n", "é", "a" * 65])
def test_a_namespace_that_could_steer_keys_is_refused_at_construction(
    namespace_value: str,
) -> None:
    with pytest.raises(ValueError):
        ClientSettings(namespace=namespace_value)
    with pytest.raises(ValueError):
        MetricsClient(namespace=namespace_value)


def test_weird_label_values_stay_inside_their_metric_keys(
    make_client: MakeClient, clock: FakeClock, r: redis.Redis, keys: Keys
) -> None:
    """Label values are hash fields and set members, never part of a key name."""
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics, app_name=f"app}}:{TOKEN}")
    for name in (*STEERING_NAMES[:-1], *PLAIN_WEIRD_NAMES):  # [:-1]: no lone surrogate here
        gateway.record_inference(name, f"model:{TOKEN}*", 0.1, status_code=200)
        gateway.cache_hits.labels(f"{{{TOKEN}}}:data").inc()
    assert metrics.flush(timeout=5.0)
    assert [k for k in _keys(r, "*") if TOKEN in k] == []
    ns = re.escape(keys.namespace)
    metric_keys = re.compile(
        rf"{ns}:\{{metrics\}}:(schema|gauge_writers|applied|(series|data):[a-z_]+)"
    )
    assert [
        k for k in _keys(r, f"{keys.namespace}:{{metrics}}:*") if not metric_keys.fullmatch(k)
    ] == []


# -- cardinality: a flood of provider names ----------------------------------------------------

FLOOD = 10_000


def _flood_names() -> list[str]:
    return [f"flood-{i:05d}" for i in range(FLOOD)]


def test_a_flood_of_provider_names_is_capped_in_redis_and_metrics(
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    clock: FakeClock,
    r: redis.Redis,
    keys: Keys,
) -> None:
    """Observed: the registry admits max_providers (1000 by default) names; the other 9,000
    names' events are dropped and counted as too_many_providers. Redis then holds 2 keys per
    admitted provider (one window partition + totals; at most 24 window partitions + totals,
    breaker, permits, transitions per provider in general) and /metrics one series set per
    admitted provider."""
    metrics = make_client(clock=clock)
    cap = metrics.settings.max_providers  # GATEWAYZ_MAX_PROVIDERS, 1000 by default
    started = time.perf_counter()
    for name in _flood_names():
        metrics.record(name, 0.1, status_code=200)
    record_seconds = time.perf_counter() - started
    assert record_seconds < 5.0  # 10,000 record() calls stay cheap (no I/O)
    assert metrics.flush(timeout=30.0)
    assert metrics.stats()["rejected"] == {"too_many_providers": FLOOD - cap}

    provider_keys = [k for k in _keys(r, keys.pattern()) if ":{flood-" in k]
    providers_with_keys = {k.split("{", 1)[1].split("}", 1)[0] for k in provider_keys}
    assert len(providers_with_keys) == cap
    assert len(provider_keys) == 2 * cap  # observed: w:ok:<i> + totals per admitted provider
    per_provider_bound = len(keys.window_keys("p")) + 4  # + totals, breaker, permits, transitions
    assert len(provider_keys) <= cap * per_provider_bound
    assert r.zcard(keys.providers) == cap

    aggregator = make_aggregator()
    snapshot = aggregator.run_cycle()
    assert snapshot is not None
    assert len(snapshot.providers) == cap
    exposed = families(scrape(aggregator))
    assert len(exposed["provider_availability"]) == cap
    assert len(exposed["gatewayz_circuit_breaker_state"]) == 3 * cap
    assert snapshot.client_rejected == {"too_many_providers": FLOOD - cap}


def test_allow_with_a_flood_of_names_writes_nothing(
    make_client: MakeClient, clock: FakeClock, r: redis.Redis, keys: Keys
) -> None:
    metrics = make_client(clock=clock)
    for name in _flood_names():
        assert metrics.allow(name) is True
    assert [k for k in _keys(r, keys.pattern()) if ":{flood-" in k] == []  # no key is written
    # (the cache bound itself: tests/client/test_breaker_gate.py)


# -- cardinality: backend metric label values --------------------------------------------------


def test_backend_label_values_are_capped_per_metric(
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    clock: FakeClock,
    r: redis.Redis,
    keys: Keys,
) -> None:
    """10,000 distinct label values from one client, 2,000 more from a second one: the series
    set in Redis, the data hash and /metrics hold at most max_series_per_metric (1000) series
    per counter/histogram; the rest is dropped and counted."""
    first = make_client(clock=clock)
    cap = first.settings.max_series_per_metric  # GATEWAYZ_MAX_SERIES, 1000 by default
    counter = first.counter("flood_requests_total", "Requests", ["user"])
    histogram = first.histogram("flood_size", "Size", ["user"], buckets=[1, 10])
    for i in range(FLOOD):
        counter.labels(f"user-{i}").inc()
        histogram.labels(f"user-{i}").observe(i % 20)
    assert first.flush(timeout=30.0)
    second = make_client(clock=clock)
    counter2 = second.counter("flood_requests_total", "Requests", ["user"])
    for i in range(FLOOD, FLOOD + 2000):
        counter2.labels(f"user-{i}").inc()
    assert second.flush(timeout=30.0)

    for name in ("flood_requests", "flood_size"):
        assert r.scard(keys.metric_series(name)) == cap
    data = {k.decode() for k in r.hkeys(keys.metric_data("flood_requests"))}
    assert len({f.split(":", 1)[1] for f in data if not f.startswith("!")}) == cap
    aggregator = make_aggregator()
    aggregator.run_cycle()
    exposed = families(scrape(aggregator))
    assert len(exposed["flood_requests"]) == cap
    assert len([s for s in exposed["flood_size"] if s.name == "flood_size_count"]) == cap
    dropped = {s.labels["metric"]: s.value for s in exposed["gatewayz_metrics_series_dropped"]}
    assert dropped["flood_requests"] == FLOOD + 2000 - cap
    assert dropped["flood_size"] == FLOOD - cap


LONG_MODEL_CALLS = 200


def test_calls_with_16_kb_model_names_are_truncated_counted_and_cost_little(
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    clock: FakeClock,
    r: redis.Redis,
    keys: Keys,
) -> None:
    """Issue 24 item 1: 200 calls, each with its own 16 KB model name, added 78 MB to Redis and
    made /metrics 125 MB (``python -m bench --only labels`` measures both variants side by
    side). Every label value is now at most 256 bytes: a truncated one ends in a hash of the
    whole (distinct names stay distinct series), counted per metric once per call."""
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics)
    rng = random.Random(24)
    models = [
        "".join(rng.choices(string.ascii_lowercase, k=16_384)) for _ in range(LONG_MODEL_CALLS)
    ]
    for model in models:
        gateway.record_inference(
            "openrouter", model, 0.8, status_code=200, input_tokens=120, output_tokens=40,
            credits=0.02, cost_usd=0.001, endpoint="/v1/chat/completions", ttfb_s=0.2, ttfc_s=0.3,
        )  # fmt: skip
    assert metrics.flush(timeout=30.0)

    stored = sum(
        int(r.memory_usage(name, samples=0) or 0) for name in r.scan_iter(f"{keys.namespace}:*")
    )
    assert stored < 2_000_000  # about 1.4 MB; unbounded: 78 MB
    aggregator = make_aggregator()
    aggregator.run_cycle()
    text = scrape(aggregator)
    assert len(text) < 4_000_000  # about 2.6 MB; unbounded: 125 MB
    exposed = families(text)
    served = {s.labels["model"] for s in exposed["model_inference_requests"]}
    assert served == {bounded_label_value(model, 256) for model in models}  # 200 series
    truncated = {
        s.labels["metric"]: s.value for s in exposed["gatewayz_metrics_label_values_truncated"]
    }
    assert {name: count for name, count in truncated.items() if count} == {
        "model_inference_requests": LONG_MODEL_CALLS,
        "model_inference_duration_seconds": LONG_MODEL_CALLS,
        "tokens_used": 2 * LONG_MODEL_CALLS,  # input and output
        "credits_used": LONG_MODEL_CALLS,
        "gatewayz_api_cost_usd": LONG_MODEL_CALLS,
        "backend_ttfb_seconds": LONG_MODEL_CALLS,
        "time_to_first_chunk_seconds": LONG_MODEL_CALLS,
    }


def test_label_values_longer_than_the_aggregators_bound_are_cut_where_they_are_read(
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    clock: FakeClock,
    r: redis.Redis,
    keys: Keys,
) -> None:
    """Issue 24 item 3: what a client did not bound (a raw write; a client configured with a
    larger bound than the aggregator's) is bounded again where it is read, so /metrics stays
    small whoever wrote Redis; each series cut is counted on the metric, each repeat dropped."""
    metrics = make_client(clock=clock, max_label_value_bytes=8192)
    jobs = metrics.counter("jobs_total", "Jobs", ["kind"])
    long_kinds = [f"{index}" + "k" * 6000 for index in range(20)]
    for kind in long_kinds:
        jobs.labels(kind).inc()
    assert metrics.flush(timeout=10.0)
    aggregator = make_aggregator(max_label_value_bytes=128)
    aggregator.run_cycle()
    text = scrape(aggregator)
    assert len(text) < 40_000  # 20 series of 6 KB values: 120 KB unbounded
    exposed = families(text)
    served = {s.labels["kind"] for s in exposed["jobs"] if s.name == "jobs_total"}
    assert served == {bounded_label_value(kind, 128) for kind in long_kinds}
    assert all(len(kind.encode()) == 128 for kind in served)
    truncated = {
        s.labels["metric"]: s.value for s in exposed["gatewayz_metrics_label_values_truncated"]
    }
    assert truncated["jobs"] == 20


def test_raw_written_reasons_operations_and_writers_are_bounded_on_metrics(
    make_aggregator: MakeAggregator, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    """Issue 24 item 3: the per-reason and per-writer label sets are the aggregator's to bound.
    20,000 rejection reasons, 20,000 operations and 5,000 writers written straight into Redis
    (one of each 16 KB long) are served as at most 64 names plus ``other`` holding the rest of
    the count, and the 1,000 most recently measured writers."""
    long_name = "r" * 16_384
    reasons = {f"rejected:raw_{index:05d}": 1 for index in range(20_000)} | {
        f"rejected:{long_name}": 7
    }
    r.hset(keys.client_stats, mapping=reasons)
    r.hset(keys.redis_ops, mapping={f"op_{index:05d}": 2 for index in range(20_000)})
    now = clock()
    writers = {f"host-{index}:{index}": f"0.5|{now - index / 100}" for index in range(5_000)}
    r.hset(keys.clock_offsets, mapping=writers | {long_name: f"0.5|{now}"})
    aggregator = make_aggregator()
    aggregator.run_cycle()
    text = scrape(aggregator)
    assert len(text) < 200_000  # unbounded: about 2 MB of reasons and operations alone
    exposed = families(text)
    rejected = {s.labels["reason"]: s.value for s in exposed["gatewayz_client_events_rejected"]}
    assert len(rejected) == 65
    assert rejected["other"] == 20_000 - 64 + 7
    operations = {s.labels["operation"]: s.value for s in exposed["gatewayz_redis_operations"]}
    assert len(operations) == 65
    assert sum(operations.values()) == 2 * 20_000
    served = {s.labels["writer"] for s in exposed["gatewayz_client_clock_offset_seconds"]}
    assert served == {f"host-{index}:{index}" for index in range(1_000)}


def test_gauge_series_are_capped_cluster_wide(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    cap = 50
    for worker in range(3):
        metrics = make_client(clock=clock, max_series_per_metric=cap)
        gauge = metrics.gauge("flood_inflight", "In flight", ["user"])
        for i in range(cap):
            gauge.labels(f"w{worker}-user-{i}").set(1)
        assert metrics.flush(timeout=5.0)
    aggregator = make_aggregator()
    aggregator.run_cycle()
    exposed = families(scrape(aggregator))
    # before: 150, capped per process and by the aggregator's 1,000 only
    assert len(exposed["flood_inflight"]) == cap
    dropped = {s.labels["metric"]: s.value for s in exposed["gatewayz_metrics_series_dropped"]}
    assert dropped["flood_inflight"] == 2 * cap


def test_a_metrics_admitted_series_live_as_long_as_its_counted_values(
    make_client: MakeClient, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    # Before: a process past the cap kept counting drops into the metric's data hash (its TTL
    # refreshed) while the admitted set, idle, expired: the next process admitted another cap's
    # worth, the data hash grew by one cap per retention period (4 generations: 4,001 fields)
    cap = 3
    first = make_client(clock=clock, max_series_per_metric=cap)
    calls = first.counter("capped_calls", "Calls", ["model"])
    for model in ("a", "b", "c"):
        calls.labels(model).inc()
    assert first.flush(timeout=5.0)
    series = keys.metric_series("capped_calls")
    assert r.scard(series) == cap
    r.expire(series, 30)  # idle since: about to expire, while drops go on being counted
    calls.labels("d").inc()  # past the cap: dropped, counted in the data hash
    assert first.flush(timeout=5.0)
    retention = first.settings.retention_seconds
    assert retention - 5 <= r.ttl(series) <= retention  # kept with the counts
    assert r.ttl(keys.metric_data("capped_calls")) == r.ttl(series)
    second = make_client(clock=clock, max_series_per_metric=cap)
    second.counter("capped_calls", "Calls", ["model"]).labels("e").inc()
    assert second.flush(timeout=5.0)
    assert r.scard(series) == cap  # "e" not admitted: the cap holds across generations


# -- values record() accepts but Redis cannot hold ---------------------------------------------

EXTREME_CALLS = [
    pytest.param(
        {"latency_s": 1e303},
        id="latency-1e303-kills-the-flusher",
    ),
    pytest.param(
        {"latency_s": 1e13},
        id="latency-1e13-loses-the-batch",
    ),
    pytest.param(
        {"latency_s": 0.1, "tokens": 2**63},
        id="tokens-2**63-loses-the-batch",
    ),
    pytest.param(
        {"latency_s": 0.1, "cost_usd": 1e10},
        id="cost-1e10-loses-the-batch",
    ),
    pytest.param({"latency_s": 1e6, "tokens": 2**40, "cost_usd": 1e6}, id="large-but-storable"),
]


@pytest.mark.parametrize("call", EXTREME_CALLS)
def test_an_extreme_value_never_costs_other_events(
    make_client: MakeClient,
    clock: FakeClock,
    r: redis.Redis,
    keys: Keys,
    call: dict[str, float],
) -> None:
    """Whatever record() does with an extreme value (store it, reject the call, or leave the
    value out of the call and count it), the other events of the same batch and the flusher
    must survive it."""
    # a long flush interval: the first two events go out in one batch, at flush()
    metrics = make_client(clock=clock, flush_interval_seconds=30.0)
    metrics.record("bystander", 0.2, status_code=200)
    metrics.record("extreme", **call)
    assert metrics.flush(timeout=3.0), "the flusher no longer writes"
    metrics.record("bystander", 0.3, status_code=200)
    assert metrics.flush(timeout=3.0)
    stats = metrics.stats()
    assert stats["write_errors"] == 0
    assert sum(r.zcard(k) for k in keys.window_keys("bystander")) == 2
    stored = sum(r.zcard(k) for k in keys.window_keys("extreme"))
    left_out = {cause: n for cause, n in stats["rejected"].items() if cause in LEFT_OUT}
    assert stored + sum(stats["rejected"].values()) - sum(left_out.values()) == 1
    assert stored == 1 or not left_out  # a value left out: its call's health event is kept


LEFT_OUT = ("invalid_tokens", "invalid_cost")
"""Causes of a value left out of a call that is still booked (README: the client)."""


# -- label values UTF-8 cannot encode ----------------------------------------------------------

LONE_SURROGATE_REASON = (
    "client/metrics_client.py MetricsClient._run_flusher (lines 399-413 as of 4c1ec1a) only "
    "catches redis/OS errors: a label value holding a lone surrogate (what json.loads makes of "
    "the JSON escape \\ud800, e.g. a model name from a request body read with Starlette's "
    "request.json()) makes redis-py raise UnicodeEncodeError while packing the batch; the "
    "flusher thread dies and the worker records nothing more (reproduced through the example "
    "gateway too: one POST with model \\ud800 in the JSON body)"
)


def test_a_label_value_with_a_lone_surrogate_does_not_stop_the_flusher(
    make_client: MakeClient, clock: FakeClock, r: redis.Redis, keys: Keys
) -> None:
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics)
    gateway.record_inference("openrouter", "\ud800", 0.1, status_code=200)
    assert metrics.flush(timeout=3.0), "the flusher no longer writes"
    metrics.record("openrouter", 0.2, status_code=200)
    assert metrics.flush(timeout=3.0)
    assert sum(r.zcard(k) for k in keys.window_keys("openrouter")) == 2


# -- worker metrics named like the aggregator's own --------------------------------------------


def _aggregator_families(
    make_aggregator: MakeAggregator, make_client: MakeClient, clock: FakeClock
) -> set[str]:
    """Every family the aggregator itself exports with one provider and a rejection, as the
    OpenMetrics parser names them."""
    metrics = make_client(clock=clock)
    metrics.record("openrouter", 0.1)
    metrics.record("bad name", 0.1)
    assert metrics.flush(timeout=5.0)
    aggregator = make_aggregator()
    aggregator.run_cycle()
    return set(families(scrape(aggregator, OPENMETRICS), openmetrics=True))


@pytest.mark.parametrize("name", sorted(RESERVED_NAMES))
def test_a_worker_gauge_named_like_a_reserved_family_is_not_served(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock, name: str
) -> None:
    metrics = make_client(clock=clock)
    metrics.gauge(name, "impostor").set(-1)
    assert metrics.flush(timeout=5.0)
    aggregator = make_aggregator()
    aggregator.run_cycle()
    text = scrape(aggregator, OPENMETRICS)
    assert "impostor" not in text
    families(text, openmetrics=True)


def test_no_worker_metric_can_impersonate_an_aggregator_family(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    """A worker gauge named like any aggregator family, or like one of its samples (_total,
    _count, _sum, _bucket, _created), must not make the scrape ambiguous."""
    own = _aggregator_families(make_aggregator, make_client, clock)
    metrics = make_client(clock=clock)
    for family in sorted(own):
        for suffix in ("", "_total", "_count", "_sum", "_bucket", "_created"):
            metrics.gauge(family + suffix, "impostor").set(-1)
    assert metrics.flush(timeout=5.0)
    aggregator = make_aggregator()
    aggregator.run_cycle()
    text = scrape(aggregator)
    types = Counter(line.split()[2] for line in text.splitlines() if line.startswith("# TYPE "))
    duplicated = sorted(name for name, count in types.items() if count > 1)
    assert duplicated == [], f"{len(duplicated)} names typed twice: {duplicated}"
    families(scrape(aggregator, OPENMETRICS), openmetrics=True)


def test_worker_metrics_whose_samples_collide_are_refused_or_served_parseable(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    metrics.counter("clash", "A counter").inc()
    try:
        metrics.gauge("clash_total", "A gauge").set(2)
    except ValueError:
        return  # refusing the declaration is a fine answer
    assert metrics.flush(timeout=5.0)
    aggregator = make_aggregator()
    aggregator.run_cycle()
    families(scrape(aggregator, OPENMETRICS), openmetrics=True)


# -- the HTTP API ------------------------------------------------------------------------------


@pytest.fixture
def served(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> Iterator[TestClient]:
    """The aggregator's app over a real, fresh snapshot (so /readyz answers 200), with provider
    and backend series, errors answered as responses rather than raised."""
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics)
    for status in (200, 200, 429, 500, 404):
        metrics.record("openrouter", 0.4, status_code=status)
        gateway.record_inference("anthropic", 'model "x"\n\\', 1.2, status_code=status)
    assert metrics.flush(timeout=5.0)
    # schemathesis's ASGI client always says Host: testserver (the one name allowed here)
    aggregator = make_aggregator(providers=("idle",), allowed_hosts=("testserver",))
    assert aggregator.run_cycle() is not None
    with TestClient(create_app(aggregator), raise_server_exceptions=False) as http:
        yield http


def test_schemathesis_finds_no_server_error_in_any_operation(served: TestClient) -> None:
    """Every operation of /openapi.json, fuzzed by schemathesis (positive and negative cases)
    against the ASGI app; the schemathesis pytest plugin is not used (it does not run under
    pytest 9), its schema API is."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", served.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} >= {
        ("GET", "/metrics"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/health/dashboard"),
    }
    calls: Counter[str] = Counter()
    for operation in operations:

        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            response = case.call()
            calls[case.path] += 1
            assert response.status_code < 500, (case.method, case.path, response.text[:200])

        check()
    assert len(calls) == len(operations)


ACCEPT_VALUES = (
    "",
    "*/*",
    "text/plain",
    "text/plain; version=0.0.4",
    "text/plain;version=1.0.0",
    "text/plain; version=1.0.0; escaping=allow-utf-8",
    "text/plain; version=1.0.0; escaping=nonsense",
    "application/openmetrics-text",
    "application/openmetrics-text; version=1.0.0",
    "application/openmetrics-text; version=0.0.1",
    "application/openmetrics-text; version=1.0",
    "application/openmetrics-text; version=2.0.0",
    "application/openmetrics-text; version=99.99.99; escaping=values",
    "application/openmetrics-text; version=1.0.0; escaping=dots, text/plain;q=0.5",
    "application/openmetrics-text;q=0",
    "APPLICATION/OPENMETRICS-TEXT",
    "application/json",
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily",
    ";",
    ",,,,",
    "=;=;=",
    "version=1.0.0",
    "application/openmetrics-text; version",
    "application/openmetrics-text; version=",
    "application/openmetrics-text; ==version==1",
    "text/plain; version=0.0.4; version=1.0.0",
    "a" * 8000,
    "application/openmetrics-text, " * 500,
    "\t text/plain \t",
)
KNOWN_BAD_ACCEPT = (
    "text/plain; version=foo",
    "application/openmetrics-text; version=abc",
    "application/openmetrics-text; version=1.0.0-rc1",
    "text/plain; version=1.x",
)


def _latin1(value: str) -> bytes:
    """Header bytes as a client may send them (httpx only encodes str values as ASCII)."""
    return value.encode("latin-1", "replace")


def _choose_encoder_raises(accept: str) -> bool:
    try:
        choose_encoder(accept)
    except Exception:
        return True
    return False


def test_a_deterministic_fuzz_of_paths_methods_and_headers_finds_no_server_error(
    served: TestClient,
) -> None:
    rng = random.Random(20261129)
    paths = [
        "/metrics",
        "/healthz",
        "/readyz",
        "/health/dashboard",
        "/openapi.json",
        "/docs",
        "/",
        "/metrics/",
        "//metrics",
        "/metrics/../healthz",
        "/%2e%2e/metrics",
        "/metrics%00",
        "/metrics%zz",
        "/health/%64ashboard",
        "/health/dashboard?provider=%00&x=" + "y" * 2000,
        "/metrics?name[]=provider_availability&name[]=x",
        "/metrics;jsessionid=1",
        "/" + "a/" * 500,
        "/%F0%9F%98%80",
        "/%ED%A0%80",  # an encoded lone surrogate
        "/%C0%AF",  # overlong UTF-8
        "/readyz?" + "&".join(f"k{i}=v" for i in range(300)),
    ]
    methods = ["GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"]
    odd_headers = [
        {},
        {"accept-encoding": "gzip, deflate, br, zstd, *;q=0"},
        {"content-type": "application/json", "content-length": "0"},
        {"content-type": "multipart/form-data; boundary="},
        {"x-forwarded-for": "::1, 127.0.0.1, garbage"},
        {"host": "evil.example"},
        {"accept-charset": "utf-7"},
        {"if-none-match": '"*"'},
        {"range": "bytes=5-1"},
    ]
    alphabet = string.printable + "é\u2028"
    failures: list[tuple[str, str, str, int]] = []
    requests = 0
    for accept in (*ACCEPT_VALUES, *KNOWN_BAD_ACCEPT, *(None for _ in range(20))):
        for _ in range(6):
            method = rng.choice(methods)
            path = rng.choice(paths)
            if rng.random() < 0.2:
                path += "/" + "".join(rng.choice(string.ascii_letters + "%-._~") for _ in range(8))
            headers = dict(rng.choice(odd_headers))
            value = accept
            if value is None:  # random printable junk, encoded as latin-1 header bytes
                value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 60)))
                value = value.replace("\n", " ").replace("\r", " ").replace("\x0b", " ")
                value = value.replace("\x0c", " ").replace("\u2028", " ")
            headers["accept"] = value
            body = rng.choice([None, b"", b"{}", b"\xff\xfe", b"x" * 10_000])
            response = served.request(
                method,
                path,
                headers={k: _latin1(v) for k, v in headers.items()},
                content=body,
            )
            requests += 1
            if response.status_code >= 500:
                failures.append((method, path, value, response.status_code))
    assert requests >= 300
    assert failures == []


@pytest.mark.parametrize("accept", KNOWN_BAD_ACCEPT)
def test_metrics_answers_an_unparseable_accept_version_without_a_server_error(
    served: TestClient, accept: str
) -> None:
    response = served.get("/metrics", headers={"accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(("text/plain", "application/openmetrics"))

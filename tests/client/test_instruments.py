"""Backend metrics (Counter, Gauge, Histogram, Summary, Info) end to end on a real Redis:
MetricsClient in one or several processes, an aggregator cycle, then the /metrics exposition
(both formats parsed by the strict parsers); and the instrument store alone: values held until
Redis agrees with their declaration, at most ``max_batch_bytes`` of increments per batch."""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import time
from collections.abc import Callable

import pytest
import redis

from aggregator.engine.cycle import Aggregator
from client import MetricsClient
from client._declarations import REDECLARE_SECONDS
from client._instruments import InstrumentStore
from client._metric_registry import MetricRegistry
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.labels import bounded_label_value
from gatewayz_protocol.specs import MetricSpec
from tests.support.backends import BOTH_BACKENDS
from tests.support.clock import FakeClock
from tests.support.scrape import Samples, samples, scrape

pytestmark = BOTH_BACKENDS

MakeClient = Callable[..., MetricsClient]
MakeAggregator = Callable[..., Aggregator]

PROCESSES = 4
FLOAT_INCS = 25_000  # per process: 4 * 25,000 = 100,000 increments of 0.1 in total


def _cycle_samples(aggregator: Aggregator) -> Samples:
    """One aggregation cycle, then /metrics parsed into {(sample name, labels): value}."""
    aggregator.run_cycle()
    return samples(scrape(aggregator))


def _dropped(metric: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("gatewayz_metrics_series_dropped_total", (("metric", metric),))


def _rejected(metric: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("gatewayz_metrics_values_rejected_total", (("metric", metric),))


def _worker(redis_url: str, namespace: str, index: int) -> None:
    metrics = MetricsClient(redis_url=redis_url, namespace=namespace)
    jobs = metrics.counter("jobs_total", "Jobs", ["kind"])
    spent = metrics.counter("spent", "Money spent")
    inflight = metrics.gauge("inflight", "In flight", combine="max")
    for _ in range(10):
        jobs.labels("a").inc()
    jobs.labels(kind="b").inc(index + 1)
    for _ in range(FLOAT_INCS):
        spent.inc(0.1)
    inflight.set(index * 10 + 1)
    if not metrics.close(timeout=10):
        raise SystemExit(1)


def test_counters_from_several_processes_sum_exactly(
    redis_url: str, namespace: str, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker, args=(redis_url, namespace, i)) for i in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0

    clock.now = time.time()  # the workers stamped their gauges with the real clock
    s = _cycle_samples(make_aggregator())
    assert s[("jobs_total", (("kind", "a"),))] == 40  # 4 processes * 10
    assert s[("jobs_total", (("kind", "b"),))] == 10  # 1 + 2 + 3 + 4
    # 100,000 * 0.1, kept as integer nano-units: exactly 10000
    assert s[("spent_total", ())] == 10000.0
    naive = 0.0
    for _ in range(PROCESSES * FLOAT_INCS):
        naive += 0.1
    assert naive != 10000.0  # what a float accumulator would have exported
    assert s[("inflight", ())] == 31  # max of 1, 11, 21, 31
    assert s[_dropped("jobs")] == 0
    assert s[_rejected("spent")] == 0


def test_histogram_buckets_are_cumulative_with_an_exact_sum(
    make_client: MakeClient, make_aggregator: MakeAggregator
) -> None:
    metrics = make_client()
    latency = metrics.histogram("op_seconds", "Op latency", ["route"], buckets=[0.25, 1, 2.5])
    for value in (0.1, 0.2, 0.3, 1.0, 2.5, 4.0):
        latency.labels("/a").observe(value)
    latency.labels(route="/b").observe(0.25)
    assert metrics.flush(timeout=5)

    s = _cycle_samples(make_aggregator())
    a = (("route", "/a"),)
    # /a: le 0.25 {0.1, 0.2} = 2; le 1 adds {0.3, 1.0} = 4; le 2.5 adds {2.5} = 5; +Inf adds 4.0
    for le, count in (("0.25", 2), ("1.0", 4), ("2.5", 5), ("+Inf", 6)):
        assert s[("op_seconds_bucket", (("le", le), *a))] == count
    assert s[("op_seconds_count", a)] == 6
    # 0.1 + 0.2 + 0.3 + 1 + 2.5 + 4 = 8.1 (naively 0.1 + 0.2 + 0.3 is already 0.6000000000000001)
    assert s[("op_seconds_sum", a)] == 8.1
    b = (("route", "/b"),)
    assert s[("op_seconds_bucket", (("le", "0.25"), *b))] == 1  # a bound is inclusive
    assert s[("op_seconds_bucket", (("le", "+Inf"), *b))] == 1
    assert s[("op_seconds_sum", b)] == 0.25


def test_counter_total_suffix_is_optional_and_always_exported(
    make_client: MakeClient, make_aggregator: MakeAggregator
) -> None:
    metrics = make_client()
    with_suffix = metrics.counter("requests_total", "Requests")
    assert metrics.counter("requests", "Requests") is with_suffix
    with_suffix.inc(2)
    metrics.counter("errors", "Errors").inc()
    assert metrics.flush(timeout=5)

    s = _cycle_samples(make_aggregator())
    assert s[("requests_total", ())] == 2
    assert s[("errors_total", ())] == 1
    assert ("requests_total_total", ()) not in s


def test_gauges_combine_across_writers(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    # Each client is one writer; their clocks stamp the gauges: the second writes the latest.
    stamps = (clock.now + 10, clock.now + 30, clock.now + 20)
    values = (5.0, 1.5, -2.0)
    for stamp, value in zip(stamps, values, strict=True):
        metrics = make_client(clock=FakeClock(stamp))
        for mode in ("sum", "max", "min", "latest"):
            metrics.gauge(f"g_{mode}", f"combine {mode}", ["pool"], combine=mode).labels("p").set(
                value
            )
        gauge = metrics.gauge("g_incdec", "inc and dec", combine="sum")
        gauge.inc(value)  # from 0
        gauge.dec(0.5)
        assert metrics.flush(timeout=5)

    s = _cycle_samples(make_aggregator())
    p = (("pool", "p"),)
    assert s[("g_sum", p)] == 4.5  # 5 + 1.5 - 2
    assert s[("g_max", p)] == 5.0
    assert s[("g_min", p)] == -2.0
    assert s[("g_latest", p)] == 1.5  # stamped +30: not the last written, not the max
    assert s[("g_incdec", ())] == 3.0  # (5 - 0.5) + (1.5 - 0.5) + (-2 - 0.5)


def test_a_dead_writers_gauge_disappears_after_its_ttl(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    alive = make_client(clock=clock, gauge_ttl_seconds=1)
    dying = make_client(clock=clock, gauge_ttl_seconds=1)
    alive.gauge("workers_busy", "Busy", combine="sum").set(2)
    dying.gauge("workers_busy", "Busy", combine="sum").set(3)
    assert alive.flush(timeout=5)
    assert dying.flush(timeout=5)
    aggregator = make_aggregator()
    assert _cycle_samples(aggregator)[("workers_busy", ())] == 5  # 2 + 3

    assert dying.close(timeout=5)
    deadline = time.monotonic() + 10
    while (value := _cycle_samples(aggregator)[("workers_busy", ())]) != 2:
        assert value == 5, "only the dead writer's value may disappear"
        assert time.monotonic() < deadline, "the dead writer's gauge never expired"
        time.sleep(0.1)
    # The live writer's value was written before the dead one's, so it is still there only
    # because its process keeps refreshing it (else the loop above sees 3 or no sample).


def test_series_cap_in_one_process_drops_and_counts(
    make_client: MakeClient, make_aggregator: MakeAggregator
) -> None:
    metrics = make_client(max_series_per_metric=3)
    hits = metrics.counter("hits", "Hits", ["user"])
    for user in ("a", "b", "c"):
        hits.labels(user).inc()
    hits.labels("d").inc()  # 4th label set: dropped
    hits.labels("d").inc(5)  # dropped again: 2 updates dropped
    hits.labels("a").inc(4)  # an admitted series keeps working: 1 + 4
    assert metrics.flush(timeout=5)

    s = _cycle_samples(make_aggregator())
    assert s[("hits_total", (("user", "a"),))] == 5
    assert s[("hits_total", (("user", "b"),))] == 1
    assert s[("hits_total", (("user", "c"),))] == 1
    assert ("hits_total", (("user", "d"),)) not in s
    assert s[_dropped("hits")] == 2


def test_series_cap_holds_across_clients_in_redis(
    make_client: MakeClient, make_aggregator: MakeAggregator, r: redis.Redis, keys: Keys
) -> None:
    first = make_client(max_series_per_metric=3)
    second = make_client(max_series_per_metric=3)
    first_hits = first.counter("hits", "Hits", ["user"])
    second_hits = second.counter("hits", "Hits", ["user"])
    for user in ("a", "b", "c"):
        first_hits.labels(user).inc()
    assert first.flush(timeout=5)
    for user in ("d", "e", "f"):  # within this process's cap, beyond the cluster's
        second_hits.labels(user).inc()
    assert second.flush(timeout=5)
    first_hits.labels("a").inc(2)  # old series keep working: 1 + 2
    second_hits.labels("d").inc()  # still refused by Redis: 4th dropped update
    assert first.flush(timeout=5)
    assert second.flush(timeout=5)

    assert r.scard(keys.metric_series("hits")) == 3
    s = _cycle_samples(make_aggregator())
    exported = {labels for name, labels in s if name == "hits_total"}
    assert exported == {(("user", u),) for u in ("a", "b", "c")}
    assert s[("hits_total", (("user", "a"),))] == 3
    assert s[_dropped("hits")] == 4  # d, e, f once each, then d again


def test_invalid_values_never_raise_and_are_counted(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)  # gauges stamped near the aggregator's clock
    jobs = metrics.counter("jobs", "Jobs")
    latency = metrics.histogram("lat", "Latency", buckets=[1.0])
    level = metrics.gauge("level", "Level")
    jobs.inc(-1)
    jobs.inc(math.nan)
    jobs.inc(3)
    latency.observe(math.nan)
    latency.observe(-0.5)
    latency.observe(math.inf)
    latency.observe(0.5)
    level.set(math.inf)
    level.set(7)
    level.inc(math.nan)
    assert metrics.flush(timeout=5)

    s = _cycle_samples(make_aggregator())
    assert s[_rejected("jobs")] == 2  # -1, nan
    assert s[_rejected("lat")] == 3  # nan, -0.5, inf
    assert s[_rejected("level")] == 2  # set inf, inc nan
    assert s[("jobs_total", ())] == 3
    assert s[("lat_count", ())] == 1
    assert s[("lat_sum", ())] == 0.5
    assert s[("level", ())] == 7


def test_a_value_redis_cannot_store_does_not_block_other_metrics(
    make_client: MakeClient, make_aggregator: MakeAggregator
) -> None:
    metrics = make_client()
    metrics.counter("huge", "Huge").inc(10**19)  # > 2**63 - 1: no Redis integer holds it
    metrics.counter("small", "Small").inc()
    assert metrics.flush(timeout=1)
    scraped = _cycle_samples(make_aggregator())
    assert scraped[("small_total", ())] == 1
    assert scraped[("gatewayz_metrics_values_rejected_total", (("metric", "huge"),))] == 1


def test_a_batch_redis_refuses_is_not_retried_or_applied_twice(
    make_client: MakeClient, r: redis.Redis, keys: Keys
) -> None:
    r.set(keys.totals("wrongtype"), "not a hash")  # every HINCRBY on it will be refused
    metrics = make_client()
    metrics.record("wrongtype", 0.1)
    metrics.record("fine", 0.1)
    assert metrics.flush(timeout=2) is False  # settled, but wrongtype's totals never got there
    assert metrics.stats()["write_errors"] == 1
    metrics.record("fine", 0.1)
    assert metrics.flush(timeout=2)
    # the refused batch's other commands ran once (Redis does not roll back), never again
    assert r.hget(keys.totals("fine"), "n:success") == b"2"


def test_nano_units_carry_into_whole_units_in_redis(
    make_client: MakeClient, r: redis.Redis, keys: Keys
) -> None:
    metrics = make_client()
    credits = metrics.counter("credits", "Credits")
    for _ in range(25):
        credits.inc(0.1)  # 2.5 in total: 2 whole units carried, 0.5 left in nano-units
    assert metrics.flush(timeout=5)
    data = r.hgetall(keys.metric_data("credits"))
    assert data == {b"i:[]": b"2", b"n:[]": b"500000000"}


def test_forked_child_does_not_resend_parent_increments(
    make_client: MakeClient, make_aggregator: MakeAggregator, r: redis.Redis, keys: Keys
) -> None:
    metrics = make_client(flush_interval_seconds=30.0)  # keeps the parent's increments pending
    forked = metrics.counter("forked", "Forked")
    for _ in range(5):
        forked.inc()
    assert not r.exists(keys.metric_data("forked"))  # still pending in the parent
    pid = os.fork()
    if pid == 0:  # child: its own increments only, then leave without running atexit hooks
        code = 1
        try:
            forked.inc()
            forked.inc()
            code = 0 if metrics.flush(timeout=5) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert metrics.flush(timeout=5)
    s = _cycle_samples(make_aggregator())
    assert s[("forked_total", ())] == 7  # parent 5 + child 2, not 12


# -- prometheus_client's types and signatures, end to end ---------------------------------------

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_summaries_infos_units_and_counter_exemplars_are_served(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)  # gauges and infos stamped near the aggregator's clock
    db = metrics.summary("database_query_duration_seconds", "DB query duration", ["table"])
    for seconds in (0.1, 0.2, 0.3):
        db.labels(table="users").observe(seconds)
    metrics.info("fastapi_app_info", "FastAPI application information").info(
        {"app_name": "gatewayz"}
    )
    requests = metrics.counter("model_inference_requests_total", "Calls", ["provider", "status"])
    requests.labels("openrouter", "success").inc(1, exemplar={"trace_id": TRACE})
    requests.labels("openrouter", "success").inc()
    metrics.counter("sent", "Sent", unit="bytes").inc(512)
    delta = metrics.histogram("token_delta", "Estimated - actual", buckets=[-10, 0, 10])
    for value in (-20, -3, 4):
        delta.observe(value)
    assert metrics.flush(timeout=5)

    aggregator = make_aggregator()
    s = _cycle_samples(aggregator)  # both formats parsed by the strict parsers
    users = (("table", "users"),)
    assert s[("database_query_duration_seconds_count", users)] == 3
    assert s[("database_query_duration_seconds_sum", users)] == 0.6  # exact: 0.1 + 0.2 + 0.3
    assert s[("fastapi_app_info_info", (("app_name", "gatewayz"),))] == 1
    assert s[("sent_bytes_total", ())] == 512
    assert [
        s[("token_delta_bucket", (("le", le),))] for le in ("-10.0", "0.0", "10.0", "+Inf")
    ] == [
        1,
        2,
        3,
        3,
    ]
    assert ("token_delta_sum", ()) not in s  # a negative bucket: no sum, as prometheus_client
    lines = scrape(aggregator, OPENMETRICS).splitlines()
    assert (
        'model_inference_requests_total{provider="openrouter",status="success"} 2.0 '
        f'# {{trace_id="{TRACE}"}} 1.0 {clock.now}'
    ) in lines
    assert "# UNIT sent_bytes bytes" in lines
    assert "# TYPE fastapi_app_info info" in lines


def test_a_declaration_another_process_made_otherwise_is_refused_and_counted(
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = make_client(clock=clock), make_client(clock=clock)
    first.histogram("op_seconds", "Op", ["route"], buckets=[1, 2]).labels("/a").observe(0.5)
    first.counter("jobs", "Jobs", ["kind"]).labels("x").inc()
    first.gauge("depth", "Depth", combine="max").set(4)
    assert first.flush(timeout=5)
    with caplog.at_level(logging.ERROR, logger="gatewayz.metrics.client"):
        other = second.histogram("op_seconds", "Op", ["route"], buckets=[1, 5])  # no raise
        for value in (3, 4):
            other.labels("/a").observe(value)  # would land in a bucket the first has not
        second.gauge("jobs", "Jobs", ["kind"]).labels("x").set(9)  # another type
        second.gauge("depth", "Depth", combine="sum").set(6)  # another combine mode
        second.counter("jobs_done", "Jobs done").inc()  # agreeing: written
        second.histogram("op_seconds", "Op", ["route"], buckets=[1, 5]).labels("/b").observe(1)
        assert second.flush(timeout=5)

    s = _cycle_samples(make_aggregator())
    a = (("route", "/a"),)
    assert [s[("op_seconds_bucket", (("le", le), *a))] for le in ("1.0", "2.0", "+Inf")] == [
        1,
        1,
        1,
    ]  # the first declaration's only
    assert ("op_seconds_bucket", (("le", "1.0"), ("route", "/b"))) not in s
    assert s[("jobs_total", (("kind", "x"),))] == 1
    assert s[("depth", ())] == 4
    assert s[("jobs_done_total", ())] == 1
    conflicts = "gatewayz_metrics_conflicting_updates_total"
    assert s[(conflicts, (("metric", "op_seconds"),))] == 3
    assert s[(conflicts, (("metric", "jobs"),))] == 1
    assert s[(conflicts, (("metric", "depth"),))] == 1
    assert s[(conflicts, (("metric", "jobs_done"),))] == 0
    refused = sorted(r.getMessage().split("'")[1] for r in caplog.records if "otherwise" in r.msg)
    assert refused == ["depth", "jobs", "op_seconds"]  # once each


def test_label_values_beyond_the_bound_are_truncated_counted_and_stay_distinct(
    make_client: MakeClient, make_aggregator: MakeAggregator, r: redis.Redis, keys: Keys
) -> None:
    metrics = make_client(max_label_value_bytes=64)
    calls = metrics.counter("calls", "Calls", ["model"])
    first, second = "m" * 16_384, "m" * 16_383 + "n"
    calls.labels(first).inc()
    calls.labels(second).inc(2)
    calls.labels(second).inc()
    calls.labels("short").inc()
    assert metrics.flush(timeout=5)

    s = _cycle_samples(make_aggregator())
    assert s[("calls_total", (("model", bounded_label_value(first, 64)),))] == 1
    assert s[("calls_total", (("model", bounded_label_value(second, 64)),))] == 3
    assert s[("calls_total", (("model", "short"),))] == 1
    assert s[("gatewayz_metrics_label_values_truncated_total", (("metric", "calls"),))] == 3
    longest = max(len(field) for field in r.hgetall(keys.metric_data("calls")))
    assert longest == len('i:[""]') + 64


def test_a_schema_lost_from_redis_is_declared_again(
    make_client: MakeClient, make_aggregator: MakeAggregator, r: redis.Redis, keys: Keys
) -> None:
    clock = FakeClock()
    metrics = make_client(clock=clock)
    jobs = metrics.counter("jobs", "Jobs")
    jobs.inc()
    assert metrics.flush(timeout=5)
    r.delete(keys.metric_schema)  # emptied, or expired after the retention
    jobs.inc()
    assert metrics.flush(timeout=5)
    assert not r.exists(keys.metric_schema)  # declarations are sent again once a minute
    clock.now += REDECLARE_SECONDS
    jobs.inc()
    assert metrics.flush(timeout=5)
    assert (
        r.hget(keys.metric_schema, "jobs")
        == MetricSpec("jobs", "counter", "Jobs").to_json().encode()
    )
    assert _cycle_samples(make_aggregator())[("jobs_total", ())] == 3


def test_increments_beyond_max_batch_bytes_go_with_the_next_batches(
    make_client: MakeClient, make_aggregator: MakeAggregator
) -> None:
    metrics = make_client(max_batch_bytes=300)
    hits = metrics.counter("hits", "Hits", ["user"])
    for user in range(100):
        hits.labels(f"u{user:03d}").inc(user)
    assert metrics.flush(timeout=10)
    s = _cycle_samples(make_aggregator())
    assert [s[("hits_total", (("user", f"u{user:03d}"),))] for user in range(100)] == list(
        range(100)
    )


# -- the store alone (no Redis) ----------------------------------------------------------------


def _checked_store(max_batch_bytes: int = 1 << 20) -> tuple[InstrumentStore, MetricRegistry]:
    store = InstrumentStore(
        100, clock=lambda: 1.0, check_declarations=True, max_batch_bytes=max_batch_bytes
    )
    return store, MetricRegistry(store)


def test_values_wait_in_the_store_until_redis_agrees_with_their_declaration() -> None:
    store, metrics = _checked_store()
    jobs = metrics.counter("jobs", "Jobs")
    depth = metrics.gauge("depth", "Depth")
    jobs.inc(2)
    depth.set(3)
    first = store.drain(include_all_gauges=True)
    assert [spec.name for spec in first.specs] == ["jobs", "depth"]
    assert (first.deltas, first.gauges) == ([], [])
    assert first.version == 0 < store.version  # flush() still waits for them
    assert not store.take_unblocked()
    store.answered([("jobs", jobs.spec.to_json()), ("depth", '{"kind":"counter"}')])
    assert store.take_unblocked() and not store.take_unblocked()
    jobs.inc()
    depth.set(5)  # refused: counted, never written
    second = store.drain(include_all_gauges=True)
    assert [(spec.name, fields) for spec, _, _, fields in second.deltas] == [
        ("jobs", [("i:[]", 3)])
    ]
    assert (second.gauges, second.specs, second.conflicts) == ([], [], {"depth": 2})
    assert second.version == store.version


def test_a_drain_carries_at_most_max_batch_bytes_of_increments() -> None:
    store, metrics = _checked_store(max_batch_bytes=2000)
    hits = metrics.counter("hits", "Hits", ["user"])
    store.answered([("hits", hits.spec.to_json())])
    for user in range(100):
        hits.labels(f"{user:03d}").inc()
    # each series: one field 'i:["000"]' (9 bytes) + 16 of overhead; a drain takes series while
    # its budget is above zero: 2000 / 25 = 80 series
    sizes = []
    while (drained := store.drain(include_all_gauges=False)).deltas:
        sizes.append(len(drained.deltas))
    assert sizes == [80, 20]
    assert drained.version == store.version

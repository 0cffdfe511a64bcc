"""Every key of a live namespace spoiled by another writer, one at a time, by a machine: each
hash's fields set to values no writer of this project writes, members no client adds (at the
scores a reader looks at), scores no client gives, strings that are not numbers, keys of another
type. The namespace holds every kind of key a deployment does: breakers open, half-open with a
permit taken and per model, a provider over two shards, exemplars, rejection counts. Whatever
is spoiled, the leader and a follower keep cycling and serving a parseable ``/metrics``, a
leader can take over, and a worker keeps recording, flushing and answering ``allow()`` without
raising (DESIGN "Trust boundaries").

Found here (each failed before its fix): a negative count made every scrape fail (an exposition
refuses a negative counter); a cycle counter that was not a number, or a lease value that was not
``instance|token``, failed every cycle of every replica for as long as it stayed. (A spoiled
event-id counter, which this test cannot reach while a worker holds ids ahead, has its own test
in ``tests/client/test_event_ids.py``.)"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from aggregator.core.breaker import BreakerConfig
from aggregator.engine.cycle import Aggregator
from aggregator.settings import AggregatorSettings
from client import ClientSettings, MetricsClient
from gatewayz_protocol.fields import encode_exemplar
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import connect
from tests.support.backends import BOTH_BACKENDS, open_redis
from tests.support.clock import FakeClock
from tests.support.processes import HEAVY
from tests.support.scrape import scrape, scraper

pytestmark = [BOTH_BACKENDS, HEAVY]

GARBAGE = (b"x", b"nan", b"\xff\xfe", b"1e999", b"-1", b"9" * 40, b"1|2|3", b'{"a":')
"""Values no writer of this project writes (where it writes a number, a JSON document, text,
``a|b`` pairs): one of each kind."""
CLUSTER_GARBAGE = (b"x", b"\xff\xfe", b"-1", b"9" * 40)
"""Fewer on a cluster (each case costs several times as much there): the kinds of value, not
every spelling of them."""

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"

Command = tuple[Any, ...]


def _spoilings(
    r: redis.Redis, key: bytes, garbage: tuple[bytes, ...]
) -> Iterator[tuple[str, list[Command]]]:
    kind = r.type(key)
    if kind == b"hash":
        fields = r.hkeys(key)
        for value in garbage:
            yield (
                f"every field {value!r}",
                [("HSET", key, *[x for f in fields for x in (f, value)])],
            )
        yield (
            "fields no writer writes",
            [("HSET", key, b"\xff", b"1", "zz", "x", "~max_series", "0")],
        )
    elif kind == b"zset":
        # At the newest score the key holds, where a reader looking back from now sees them
        top = r.zrange(key, -1, -1, withscores=True)
        score = repr(top[0][1]) if top else "0"
        members = (b"\xff\xfe", "x|y", "bad name!", "", "1|nan|x", b"\x00", "9" * 300)
        yield "members no writer adds", [("ZADD", key, *[x for m in members for x in (score, m)])]
        held = r.zrange(key, 0, 4)
        for bad in ("+inf", "-inf", "0"):
            yield f"scores {bad}", [("ZADD", key, *[x for m in held for x in (bad, m)])]
    elif kind == b"string":
        for value in garbage:
            yield f"value {value!r}", [("SET", key, value)]
    elif kind == b"set":
        yield "members no writer adds", [("SADD", key, b"\xff", "[", '["a","b","c"]', "x")]
    elif kind == b"stream":
        yield "entries no writer adds", [("XADD", key, "*", b"\xff", b"x", "provider", "bad name!")]
    yield "a key of another type", [("DEL", key), ("RPUSH", key, "x")]


_OWN_STATE = (b":breaker", b":permits")
"""Suffixes of keys spoiled in every provider's slot: each of these providers' breakers is in
a state of its own (open, half-open, closed, a model's), read differently."""


def _one_per_shape(keys: Iterator[bytes]) -> list[bytes]:
    """The keys to spoil: of the keys differing only in their provider's slot (``{steady}:totals``,
    ``{failing}:totals``), a window's partition, a model or a metric's series set, the first; a
    shard's (``{sharded:1}``) and a breaker's keep their own."""
    chosen: dict[bytes, bytes] = {}
    for key in sorted(keys):
        prefix, _, rest = key.partition(b"{")
        tag, _, suffix = rest.partition(b"}")
        if tag in (b"leader", b"shared", b"metrics") or suffix.endswith(_OWN_STATE):
            shape = key
        else:
            shape = prefix + (b"{p:n}" if b":" in tag else b"{p}") + suffix
        # a window's latency partitions, a model's windows, a metric's series sets: one each
        shape = re.sub(rb":w:ok:\d+$|:w:m:.+$|:series:.+$", lambda m: m[0][:5], shape)
        chosen.setdefault(shape, key)
    return sorted(chosen.values())


def _live_namespace(url: str, namespace: str) -> tuple[MetricsClient, Aggregator, Aggregator]:
    """A worker with every kind of instrument (exemplars too) and providers in every state a
    key holds: one failing (its breaker open), one half-open with a trial permit taken, one
    with model breakers, one split over two shards; a leader and a follower, each having run.
    Time is a fake clock's, so the half-open breaker is reached without waiting."""
    clock = FakeClock()
    metrics = MetricsClient(
        settings=ClientSettings(
            redis_url=url,
            namespace=namespace,
            breaker_models=("modeled",),
            provider_shards="sharded:2",
        ),
        clock=clock,
    )
    metrics.gauge("depth", "Depth", ["q"]).labels("a").set(3)
    metrics.counter("jobs_total", "Jobs", ["k"]).labels("x").inc(2)
    latency = metrics.histogram("lat_seconds", "Latency", ["k"], buckets=[0.1, 1.0])
    latency.labels("x").observe(0.5, exemplar={"trace_id": TRACE_ID})

    def replica(name: str) -> Aggregator:
        settings = AggregatorSettings(
            redis_url=url,
            namespace=namespace,
            breaker=BreakerConfig(min_calls=5),
            breaker_models=("modeled",),
            instance=name,
        )
        return Aggregator(settings, connect(url, socket_timeout=2.0), clock=clock)

    leader, follower = replica("leader"), replica("follower")
    for _ in range(20):
        metrics.record("trial", 0.3, status_code=503)
    assert metrics.flush(timeout=5)
    clock.advance(1)
    leader.run_breaker_cycle()  # trial: open
    clock.advance(BreakerConfig().open_seconds)
    for _ in range(20):
        metrics.record("failing", 0.3, status_code=503)
        metrics.record("steady", 0.1, status_code=200, tokens=5, cost_usd=0.01,
                       exemplar={"trace_id": TRACE_ID})  # fmt: skip
        metrics.record("modeled", 0.2, status_code=503, model="bad-model")
        metrics.record("modeled", 0.2, status_code=200, model="good/model")
    metrics.record("steady", -1.0)  # rejected: counted by cause in the clients' stats
    for _ in range(4):  # batches, so both shards are written
        metrics.record("sharded", 0.1, status_code=200)
        assert metrics.flush(timeout=5)
    clock.advance(1)
    for _ in range(2):
        leader.run_breaker_cycle()  # failing, bad-model: open; trial: half-open
        assert leader.run_cycle() is not None
    assert metrics.allow("trial")  # takes a trial permit
    metrics.allow("failing")
    assert metrics.flush(timeout=5)
    assert follower.run_cycle() is not None
    return metrics, leader, follower


def _what_breaks(
    metrics: MetricsClient,
    leader: Aggregator,
    follower: Aggregator,
    lease: redis.Redis,
    key: str,
    takeover: bool,
    scrapes: tuple[Callable[[], str], ...],
) -> list[str]:
    """What goes wrong with the namespace as it is: cycles (and a takeover), scrapes, a worker."""
    found: list[str] = []
    failed = (leader.status.cycles_failed, follower.status.cycles_failed)
    try:
        leader.run_breaker_cycle()
        if leader.run_cycle() is None or leader.status.cycles_failed != failed[0]:
            found.append(f"the leader's cycle failed: {leader.status.last_error}")
        if follower.run_cycle() is None and follower.status.cycles_failed != failed[1]:
            found.append(f"the follower's cycle failed: {follower.status.last_error}")
        for scrape in scrapes:  # the leader's and the follower's /metrics parse
            scrape()
        if takeover:  # past whatever was spoiled (the lease, its token, the cycle counter)
            lease.delete(key)
            leader.tick_lease()
            if leader.run_cycle() is None or leader.status.cycles_failed != failed[0]:
                found.append(f"a takeover's cycle failed: {leader.status.last_error}")
    except Exception as exc:  # what the test reports, whatever it is
        found.append("raised " + "".join(traceback.format_exception_only(exc)).strip()[:300])
    try:  # a worker never raises, whatever Redis holds
        metrics.record("steady", 0.1, status_code=200)
        metrics.allow("failing")
        metrics.allow("steady")
        metrics.flush(timeout=0.3)  # True or not: it must not raise
    except Exception as exc:
        found.append(f"the worker raised {exc!r}")
    return found


def test_no_key_another_writer_spoils_stops_a_cycle_a_scrape_or_a_worker(
    redis_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    r = open_redis(redis_url)
    cluster = redis_url.startswith("redis+cluster://")
    garbage = CLUSTER_GARBAGE if cluster else GARBAGE
    metrics, leader, follower = _live_namespace(redis_url, namespace)
    scrapes = (scraper(leader), scraper(follower))  # each app made once: it costs more
    problems, tried = [], 0
    try:
        for key in _one_per_shape(r.scan_iter(match=Keys(namespace).pattern(), count=1000)):
            for spoiling, commands in _spoilings(r, key, garbage):
                dump, ttl = r.dump(key), r.pttl(key)
                try:
                    for command in commands:
                        r.execute_command(*command)
                    with caplog.at_level(logging.CRITICAL):
                        lease = Keys(namespace).leader_lease
                        takeover = b"{leader}" in key  # the keys a takeover reads
                        found = _what_breaks(metrics, leader, follower, r, lease, takeover, scrapes)
                    problems += [f"{key.decode()}, {spoiling}: {what}" for what in found]
                    tried += 1
                finally:
                    r.delete(key)
                    if isinstance(dump, bytes):
                        r.restore(key, max(ttl, 0), dump, replace=True)
    finally:
        metrics.close(timeout=2)
        r.close()
    assert tried > (80 if cluster else 150)  # every kind of key a live namespace holds
    assert problems == []


LONE_SURROGATE = "\\ud800"
"""A lone surrogate as JSON escapes it: valid JSON, valid UTF-8 as Redis holds it, and a text
no encoder writes once decoded."""


def test_text_no_encoder_writes_is_skipped_counted_and_the_rest_served(
    make_client: Callable[..., MetricsClient],
    make_aggregator: Callable[..., Aggregator],
    r: redis.Redis,
    keys: Keys,
    clock: FakeClock,
) -> None:
    # Before: each of these made the leader's /metrics (both formats) and /health/dashboard
    # answer 500 while /readyz said ready, and its followers fail every cycle on the snapshot
    # it published (UnusableSnapshot: "unexpected end of hex escape").
    metrics = make_client(clock=clock)
    latency = metrics.histogram("lat_seconds", "Latency", ["k"], buckets=[0.1, 1.0])
    latency.labels("x").observe(0.5, exemplar={"trace_id": TRACE_ID})
    metrics.record("steady", 0.3, status_code=200, exemplar={"trace_id": TRACE_ID})
    assert metrics.flush(timeout=5)
    spoiled_id = f'["{LONE_SURROGATE}"]'
    spoiled_exemplar = encode_exemplar(({"trace_id": "t"}, 0.5, clock.now)).replace(
        '"t"', f'"{LONE_SURROGATE}"'
    )
    declared = r.hget(keys.metric_schema, "lat_seconds")
    assert declared is not None
    other = (
        declared.decode().replace("lat_seconds", "other_seconds").replace("Latency", LONE_SURROGATE)
    )
    r.sadd(keys.metric_series("lat_seconds"), spoiled_id)
    r.hset(keys.metric_data("lat_seconds"), mapping={f"i:{spoiled_id}": 1, f"b1:{spoiled_id}": 1})
    r.hset(keys.metric_exemplars("lat_seconds"), '0:["x"]', spoiled_exemplar)
    r.hset(keys.exemplars("steady"), "5", spoiled_exemplar)  # bucket (5, 10]: none real there
    r.hset(keys.metric_schema, "other_seconds", other)  # a help text no encoder writes
    leader, follower = make_aggregator(instance="leader"), make_aggregator(instance="follower")
    published = leader.run_cycle()
    assert published is not None and follower.run_cycle() == published
    assert (leader.status.cycles_failed, follower.status.cycles_failed) == (0, 0)
    assert leader.status.values_skipped == {
        "metric series": 1,
        "metric exemplars": 1,
        "exemplars": 1,
        "schema": 1,
    }
    (family,) = [f for f in published.backend if f.name.startswith(("lat_", "other_"))]
    assert family.histograms == ((("x",), (0, 1, 1), 0.5),)
    assert [e[:2] for e in family.exemplars] == [(("x",), 1)]  # the real one, bucket (0.1, 1]
    (steady,) = published.providers
    assert [(bucket, e[0]) for bucket, e in steady.exemplars.items()] == [
        ("1", {"trace_id": TRACE_ID})  # 0.3 s: the bucket (0.1, 0.5]
    ]
    from fastapi.testclient import TestClient  # here: see tests/support/scrape.py

    from aggregator.serve.app import create_app

    for replica in (leader, follower):
        scrape(replica)  # both formats answer 200 and parse
        http = TestClient(create_app(replica), base_url="http://127.0.0.1")
        assert http.get("/health/dashboard").status_code == 200


def test_gauge_series_ids_no_client_writes_are_skipped_and_counted(
    make_client: Callable[..., MetricsClient],
    make_aggregator: Callable[..., Aggregator],
    r: redis.Redis,
    keys: Keys,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Before: a gauge's or info's series id that did not decode under its declaration (not
    # JSON, another count of label values, text no encoder writes, an info label named as a
    # label) was left out silently, every cycle, while the backend read counted the rest.
    metrics = make_client(clock=clock)
    metrics.gauge("depth", "Depth", ["q"]).labels("a").set(3)
    metrics.info("build", "Build", ["q"]).labels("a").info({"version": "1"})
    assert metrics.flush(timeout=5)
    (writer,) = r.zrange(keys.gauge_writers, 0, -1)
    gauges = keys.gauge_values(writer.decode())
    value = f"5.0|{clock.now!r}"
    spoiled = {
        "depth|not json": value,
        'depth|["a","b"]': value,
        f'depth|["{LONE_SURROGATE}"]': value,
        'build|["b","q","x"]': value,  # an info label named as the metric's label
    }
    r.hset(gauges, mapping=spoiled)
    r.hset(gauges, "undeclared|[1]", value)  # a metric not declared: never served, not judged
    leader = make_aggregator(instance="leader")
    with caplog.at_level(logging.WARNING, logger="gatewayz.aggregator"):
        for _ in range(2):
            published = leader.run_cycle()
    assert published is not None and leader.status.cycles_failed == 0
    assert leader.status.values_skipped == {"gauge values": 8}  # 4 fields, counted each cycle
    named = [m for m in caplog.messages if gauges in m]
    assert len(named) == 1 and all(repr(f)[1:-1] in named[0] for f in spoiled)
    families = {f.name: f for f in published.backend}
    assert families["depth"].samples == ((("a",), 3.0),)
    assert families["build"].infos == ((("a",), (("version", "1"),)),)


def test_metric_families_and_gauge_writers_beyond_the_caps_are_left_out_counted_and_said(
    make_client: Callable[..., MetricsClient],
    make_aggregator: Callable[..., Aggregator],
    r: redis.Redis,
    keys: Keys,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Before: every declaration in {metrics}:schema was read each cycle (three commands each)
    # and served, and every process in {metrics}:gauge_writers: a metric named per model, or a
    # flood of writer names, grew every cycle and /metrics without bound (20,000: 1.3 s cycles).
    metrics = make_client(clock=clock)
    for model in ("e", "a", "d", "b", "c"):  # a metric per model: the bug the cap is for
        metrics.counter(f"calls_{model}", "Calls").inc(2)
    metrics.gauge("depth", "Depth").set(4)
    assert metrics.flush(timeout=5)
    (writer,) = r.zrange(keys.gauge_writers, 0, -1, withscores=True)
    fakes = {f"w{i}": writer[1] - 1 - i for i in range(10_002)}  # older: read after the real
    r.zadd(keys.gauge_writers, fakes)
    leader = make_aggregator(instance="leader", max_metric_families=3)
    with caplog.at_level(logging.WARNING, logger="gatewayz.aggregator"):
        first = leader.run_cycle()
        assert first is not None
        assert (leader.status.metric_families_over_cap, leader.status.gauge_writers_over_cap) == (
            3,  # calls_d, calls_e, depth: the first three by name are read
            3,  # 10,003 processes with gauges: the 10,000 that wrote last are read
        )
        # the fakes read had no gauge hash: forgotten, so the next read takes the rest
        assert r.zcard(keys.gauge_writers) == 4
        second = leader.run_cycle()
    assert second is not None
    assert (leader.status.metric_families_over_cap, leader.status.gauge_writers_over_cap) == (3, 0)
    for published in (first, second):
        assert [(f.name, f.samples) for f in published.backend] == [
            ("calls_a", (((), 2.0),)),
            ("calls_b", (((), 2.0),)),
            ("calls_c", (((), 2.0),)),
        ]
    said = [m for m in caplog.messages if "beyond" in m]
    assert said == [
        "3 backend metrics beyond --max-metric-families (3) are neither read nor exported (the "
        "first by name are; gatewayz_aggregator_metric_families_over_cap): a metric named per "
        "value (a model, a route) instead of labelled?",
        "3 processes with gauges beyond the 10000 that wrote them last: their gauges are not "
        "read until the retention forgets them (gatewayz_aggregator_gauge_writers_over_cap)",
    ]  # once each, not every cycle
    body = scrape(leader)
    assert "calls_c_total 2.0" in body and "calls_d" not in body and "depth" not in body
    assert "gatewayz_aggregator_metric_families_over_cap 3.0" in body


@pytest.mark.parametrize("epoch", [b"9" * 20, str(2**63).encode(), b"0" * 19 + b"7", b"9" * 16])
def test_a_breaker_with_an_epoch_too_long_to_read_is_rewritten_by_its_next_transition(
    make_client: Callable[..., MetricsClient],
    make_aggregator: Callable[..., Aggregator],
    r: redis.Redis,
    keys: Keys,
    clock: FakeClock,
    epoch: bytes,
) -> None:
    # A mutation audit: the reader took an epoch of 16 to 19 digits below 2^63 and refused
    # longer ones as 0, while the TRANSITION script read any digits as a number: the two never
    # agreed on such an epoch, every transition was refused as an epoch mismatch, and the
    # breaker stayed as it was for good (metrics.md: "rewritten by its next transition")
    r.hset(keys.breaker("spoiled"), mapping={"state": "closed", "epoch": epoch})
    metrics = make_client(clock=clock)
    for _ in range(20):
        metrics.record("spoiled", 0.2, status_code=503)
    assert metrics.flush(timeout=5)
    aggregator = make_aggregator()
    published = aggregator.run_cycle()
    assert published is not None
    (spoiled,) = published.providers
    assert spoiled.breaker.state == "open"
    assert r.hget(keys.breaker("spoiled"), "epoch") == b"1"  # read as absent (0), then moved on

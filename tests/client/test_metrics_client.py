"""MetricsClient against a real Redis: what lands in which key, rejections, fork; then
property tests (hypothesis) of record() with anything: it never raises or blocks and counts
every call once, and what it accepts reaches Redis exactly."""

from __future__ import annotations

import logging
import math
import os
import string
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from client import GatewayMetrics, MetricsClient
from client._event_ids import EventIds
from client._outcome import classify_status
from gatewayz_protocol.fields import (
    COST_FIELD,
    COUNT_FIELDS,
    HISTOGRAM_FIELDS,
    LATENCY_SUM_FIELD,
    TOKENS_FIELD,
    decode_gauges,
)
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.names import PROVIDER_NAME_RE
from gatewayz_protocol.partitions import OUTCOMES, WINDOW_BOUNDS
from tests.support.backends import BOTH_BACKENDS
from tests.support.clock import FakeClock
from tests.support.processes import wait_for
from tests.support.strategies import DOCUMENTED_CAUSES, property_settings

pytestmark = BOTH_BACKENDS

MakeClient = Callable[..., MetricsClient]


def _hash(r: redis.Redis, key: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall(key).items()}


def test_each_event_is_one_member_in_its_partition_with_exact_counters(
    make_client: MakeClient, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    metrics.record("openrouter", 0.05, status_code=200, tokens=100, cost_usd=0.25)
    metrics.record("openrouter", 0.3, status_code=201, tokens=50, cost_usd=0.5)
    clock.advance(1.0)
    metrics.record("openrouter", 2.2, outcome="success")
    metrics.record("openrouter", 10.0, outcome="failure")
    metrics.record("openrouter", 0.2, status_code=429)
    metrics.record("openrouter", 0.01, status_code=404)
    assert metrics.flush(timeout=5)

    w = keys.window_keys("openrouter")
    t0 = 1_800_000_000.0
    # window partitions: ok:0 is <= 0.05, ok:3 is (0.25, 0.5], ok:8 is (2.0, 2.5]
    assert r.zrange(w[0], 0, -1, withscores=True)[0][1] == t0
    assert r.zcard(w[0]) == 1
    assert r.zcard(w[3]) == 1
    assert r.zrange(w[8], 0, -1, withscores=True)[0][1] == t0 + 1
    assert [r.zcard(k) for k in w[-3:]] == [1, 1, 1]  # fail, rate limited, caller error
    assert sum(r.zcard(k) for k in w) == 6
    members = [m for k in w for m in r.zrange(k, 0, -1)]
    assert len(set(members)) == 6
    assert all(len(m) == 6 for m in members)

    totals = _hash(r, keys.totals("openrouter"))
    assert totals == {
        "n:success": 3,
        "n:failure": 1,
        "n:rate_limited": 1,
        "n:caller_error": 1,
        # 0.05, 0.01 -> b:0.1; 0.3, 0.2 -> b:0.5; 2.2 -> b:5; 10.0 -> b:10
        "b:0.1": 2,
        "b:0.5": 2,
        "b:5": 1,
        "b:10": 1,
        "lat_us": 50_000 + 300_000 + 2_200_000 + 10_000_000 + 200_000 + 10_000,
        "tokens": 150,
        "cost_nusd": 750_000_000,
    }
    for key in [*(k for k in w if r.exists(k)), keys.totals("openrouter"), keys.providers]:
        assert r.ttl(key) > 0, key
    assert max(r.ttl(k) for k in w if r.exists(k)) <= 300 + 60
    assert r.zscore(keys.providers, "openrouter") == t0 + 1


def test_members_are_unique_across_writers_of_the_namespace(
    make_client: MakeClient, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    first, second = make_client(clock=clock), make_client(clock=clock)
    for _ in range(3):  # interleaved batches, so the two writers' id blocks alternate
        for i in range(2_000):
            first.record("openrouter", 0.2, status_code=200)
            second.record("openrouter", 0.2 + i % 2, status_code=200)
        assert first.flush(timeout=5) and second.flush(timeout=5)
    stored = sum(int(r.zcard(k)) for k in keys.window_keys("openrouter"))
    assert stored == 12_000  # a shared member would have merged two events into one
    members = [m for k in keys.window_keys("openrouter") for m in r.zrange(k, 0, -1)]
    assert {len(m) for m in members} == {6}


def test_events_wait_in_the_buffer_while_no_ids_can_be_reserved(
    make_client: MakeClient,
    r: redis.Redis,
    keys: Keys,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (a counter another writer spoiled no longer does this: RESERVE_IDS starts it again)
    reserve = EventIds._reserve

    def refused(this: EventIds, connection: redis.Redis, count: int) -> int:
        if r.exists(keys.event_ids) and r.type(keys.event_ids) == b"hash":
            raise redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind")
        return reserve(this, connection, count)

    monkeypatch.setattr(EventIds, "_reserve", refused)
    r.hset(keys.event_ids, "not", "a counter")  # every reservation refused while it is there
    metrics = make_client(clock=clock, backoff_initial_seconds=0.01, backoff_max_seconds=0.05)
    for _ in range(5):
        metrics.record("openrouter", 0.2, status_code=200)
    assert metrics.flush(timeout=0.5) is False
    assert metrics.stats()["buffered"] == 5
    assert metrics.stats()["dropped"] == 0
    assert r.exists(keys.totals("openrouter")) == 0

    r.delete(keys.event_ids)
    assert metrics.flush(timeout=5)
    assert sum(int(r.zcard(k)) for k in keys.window_keys("openrouter")) == 5
    assert _hash(r, keys.totals("openrouter"))["n:success"] == 5
    assert metrics.stats()["write_errors"] == 0


def test_cost_is_exact_over_many_events(
    make_client: MakeClient, r: redis.Redis, keys: Keys
) -> None:
    metrics = make_client()
    for _ in range(200_000):
        metrics.record("openrouter", 0.1, cost_usd=0.1)
    assert metrics.flush(timeout=30)
    # Summing 0.1 as floats 200,000 times drifts; integer nano-USD does not.
    assert sum(0.1 for _ in range(200_000)) != 20_000.0
    assert _hash(r, keys.totals("openrouter"))["cost_nusd"] == 20_000 * 1_000_000_000


@pytest.mark.parametrize(
    ("args", "kwargs", "cause"),
    [
        (("", 0.1), {}, "invalid_provider"),
        (("x" * 65, 0.1), {}, "invalid_provider"),
        (("open}router", 0.1), {}, "invalid_provider"),
        (("a:b", 0.1), {}, "invalid_provider"),
        ((None, 0.1), {}, "invalid_provider"),
        ((["list"], 0.1), {}, "invalid_argument"),
        (("openrouter", float("nan")), {}, "invalid_latency"),
        (("openrouter", float("inf")), {}, "invalid_latency"),
        (("openrouter", -0.1), {}, "invalid_latency"),
        (("openrouter", "fast"), {}, "invalid_argument"),
        (("openrouter", 0.1), {"outcome": "meh"}, "invalid_outcome"),
        (("openrouter", 0.1), {"status_code": 200, "outcome": "success"}, "status_and_outcome"),
        (("openrouter", 0.1), {"status_code": 700}, "invalid_status_code"),
        (("openrouter", -0.1), {"tokens": -1, "cost_usd": "x"}, "invalid_latency"),  # once
    ],
)
def test_invalid_calls_are_rejected_and_counted_never_raised(
    make_client: MakeClient,
    r: redis.Redis,
    keys: Keys,
    args: tuple[object, ...],
    kwargs: dict[str, object],
    cause: str,
) -> None:
    metrics = make_client()
    metrics.record(*args, **kwargs)  # type: ignore[arg-type]
    metrics.record(*args, **kwargs)  # type: ignore[arg-type]
    assert metrics.flush(timeout=5)
    assert metrics.stats()["rejected"] == {cause: 2}
    assert metrics.stats()["accepted"] == 0
    assert _hash(r, keys.client_stats) == {f"rejected:{cause}": 2}
    assert not r.exists(keys.providers)


def test_a_bad_value_beside_the_health_event_is_left_out_alone(
    make_client: MakeClient, r: redis.Redis, keys: Keys
) -> None:
    metrics = make_client()
    assert metrics.record("openrouter", 0.5, 503, tokens=12.0, cost_usd=0.5) is True
    assert metrics.record("openrouter", 0.5, 503, tokens=-12, cost_usd=float("nan")) is True
    assert metrics.record("openrouter", 0.5, 200, tokens="many", cost_usd="a lot") is True
    assert metrics.record("openrouter", 0.5, 200, exemplar={"trace_id": object()}) is True
    assert metrics.flush(timeout=5)
    totals = _hash(r, keys.totals("openrouter"))
    assert (totals["n:failure"], totals["n:success"]) == (2, 2)
    assert (totals["tokens"], totals["cost_nusd"]) == (12, 500_000_000)
    assert sum(int(r.zcard(k)) for k in keys.window_keys("openrouter")) == 4
    assert metrics.stats()["rejected"] == {"invalid_tokens": 2, "invalid_cost": 2}
    assert metrics.stats()["accepted"] == 4


def test_a_cancelled_call_is_counted_outside_the_window(
    make_client: MakeClient, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    exemplar = {"trace_id": "ab" * 16}
    assert metrics.record("openrouter", 7.5, outcome="cancelled", tokens=30, exemplar=exemplar)
    assert metrics.record("openrouter", 0.5)
    assert metrics.flush(timeout=5)
    assert _hash(r, keys.totals("openrouter")) == {
        "n:success": 1, "b:0.5": 1, "lat_us": 500_000, "cancelled": 1, "tokens": 30,
    }  # no latency, no bucket, no exemplar of the cancelled call  # fmt: skip
    assert sum(int(r.zcard(k)) for k in keys.window_keys("openrouter")) == 1
    assert not r.exists(keys.exemplars("openrouter"))
    assert r.zscore(keys.providers, "openrouter") == clock.now  # a cancelled call is activity


def test_each_rejection_cause_is_logged_once(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = make_client()
    with caplog.at_level(logging.WARNING, logger="gatewayz.metrics.client"):
        for _ in range(5):
            metrics.record("bad name", 0.1)
            metrics.record("openrouter", -1.0)
    messages = [rec.getMessage() for rec in caplog.records]
    assert len(messages) == 2
    assert "invalid_provider" in messages[0]
    assert "invalid_latency" in messages[1]
    assert metrics.stats()["rejected"] == {"invalid_provider": 5, "invalid_latency": 5}


def test_after_close_nothing_is_booked_a_drop_is_counted_and_nothing_waits(
    make_client: MakeClient, r: redis.Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = make_client()
    gateway = GatewayMetrics(metrics)
    assert metrics.record("openrouter", 0.1) is True
    assert metrics.close(timeout=5) is True
    with caplog.at_level(logging.WARNING, logger="gatewayz.metrics.client"):
        assert metrics.record("openrouter", 0.2) is False
        with metrics.track("openrouter") as call:  # a request still in flight at shutdown
            call.status_code = 200
        assert call.booked_as is None
        assert call.add_usage(tokens=5) is False
        assert gateway.record_inference("openrouter", "gpt", 0.3) is False
    assert [rec.getMessage() for rec in caplog.records] == [
        "metrics recorded after close() are dropped (counted as dropped, cause closed); "
        "further ones are only counted"
    ]
    stats = metrics.stats()
    assert (stats["accepted"], stats["buffered"], stats["settled"]) == (1, 0, 1)
    assert (stats["dropped"], stats["dropped_by_cause"]) == (4, {"closed": 4})
    # Nothing buffered, no flusher to wait for: a buffered event held every flush() for its
    # whole timeout (and the exit's close() for 5 s), then said False
    assert metrics.flush(timeout=2) is True
    assert metrics.close(timeout=2) is True  # the exit's, after the application's
    assert _hash(r, keys.totals("openrouter"))["n:success"] == 1
    assert r.hget(keys.client_stats, "dropped:closed") is None  # nothing writes after close


def test_backend_metric_updates_after_close_are_counted_dropped_not_written_nor_waited_for(
    make_client: MakeClient, r: redis.Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = make_client()
    jobs = metrics.counter("jobs", "Jobs", ["kind"])
    depth = metrics.gauge("depth", "Depth")
    jobs.labels("batch").inc(2)
    assert metrics.close(timeout=5) is True
    with caplog.at_level(logging.WARNING, logger="gatewayz.metrics.client"):
        jobs.labels("batch").inc()  # a request still in flight at shutdown
        jobs.labels("stream").inc(5)
        depth.set(7)
    assert [rec.getMessage() for rec in caplog.records] == [
        "backend metric updates after close() are dropped (counted in "
        "stats()['metric_updates_dropped'], cause closed); further ones are only counted"
    ]
    assert metrics.stats()["metric_updates_dropped"] == {"closed": 3}
    # refused as a call after close() is: no flush() waits for them (the exit's neither)
    assert metrics.flush(timeout=2) is True
    assert metrics.close(timeout=2) is True
    assert {k.decode(): v for k, v in r.hgetall(keys.metric_data("jobs")).items()} == {
        'i:["batch"]': b"2"
    }


def test_close_under_updates_from_threads_stops_the_flusher_and_counts_every_update_once(
    make_client: MakeClient, r: redis.Redis, keys: Keys
) -> None:
    # A concurrency audit (8 threads inc() while close() runs): close() returned with the
    # flusher still writing every new update (it never stopped while the updates went on),
    # updates were both written and counted dropped (183,061 counted for 160,000 made), and
    # those between the last drain and close()'s end were neither. Now each update is either
    # in before close() (and flushed by it) or refused after it and counted: exactly once.
    metrics = make_client()
    calls = metrics.counter("busy_calls", "Calls")
    threads = 8
    started, done = threading.Barrier(threads + 1), threading.Event()
    made = [0] * threads

    def work(index: int) -> None:
        started.wait()
        while not done.is_set():  # the gateway goes on while a lifespan closes the client
            calls.inc()
            made[index] += 1

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    started.wait()
    try:
        assert metrics.close(timeout=10) is True
        flusher = metrics._flusher._thread  # whether it still runs is what this test is about
        assert flusher is not None and not flusher.is_alive()
    finally:
        done.set()
        for worker in workers:
            worker.join()
    written = int(r.hget(keys.metric_data("busy_calls"), "i:[]") or 0)
    dropped = metrics.stats()["metric_updates_dropped"].get("closed", 0)
    assert written + dropped == sum(made)


def test_forked_child_does_not_resend_parent_events(
    make_client: MakeClient, r: redis.Redis, keys: Keys
) -> None:
    metrics = make_client(flush_interval_seconds=30.0)  # keep the parent's events buffered
    for _ in range(10):
        metrics.record("openrouter", 0.1)
    assert metrics.stats()["buffered"] == 10

    def child() -> bool:  # its own events only
        for _ in range(5):
            metrics.record("openrouter", 0.2)
        return metrics.flush(timeout=5)

    assert _exit_code_of_forked(child) == 0
    assert metrics.flush(timeout=5)
    totals = _hash(r, keys.totals("openrouter"))
    assert totals["n:success"] == 15
    assert totals["lat_us"] == 10 * 100_000 + 5 * 200_000


def _exit_code_of_forked(body: Callable[[], bool]) -> int:
    """``body()`` in a forked child, which leaves without running atexit hooks: 0 when it
    returned True, 2 when False, 1 when it raised."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if body() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _scores(r: redis.Redis, keys: Keys, provider: str) -> list[float]:
    return [
        score
        for key in keys.window_keys(provider)
        for _, score in r.zrange(key, 0, -1, withscores=True)
    ]


@pytest.mark.parametrize("step", [600.0, -600.0])
def test_a_clock_step_between_record_and_flush_moves_no_event(
    make_client: MakeClient,
    r: redis.Redis,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
    step: float,
) -> None:
    # Before: events carried the wall clock, moved onto Redis's by the offset measured at flush
    # time, after the step: +600 s scored them 600 s in the past (trimmed, never counted),
    # -600 s 600 s in the future (counted late, and for too long).
    real, stepped = time.time, [0.0]
    monkeypatch.setattr(time, "time", lambda: real() + stepped[0])  # the host's clock
    metrics = make_client(flush_interval_seconds=30.0)  # the events stay buffered meanwhile
    metrics.record("stepped", 0.1)
    assert metrics.flush(timeout=5)  # the offset measured once
    for _ in range(100):
        metrics.record("stepped", 0.1)
    stepped[0] = step  # stepped (NTP, an operator, a VM resumed) with 100 events buffered
    assert metrics.flush(timeout=5)
    redis_now = float(r.time()[0])
    scores = _scores(r, keys, "stepped")
    assert len(scores) == 101
    assert all(redis_now - 10 < score <= redis_now + 1 for score in scores)
    (skew,) = [float(v.split(b"|")[0]) for v in r.hgetall(keys.clock_offsets).values()]
    assert skew == pytest.approx(-step, abs=1.0)  # what the host's clock is off by, exported


def test_a_gauge_set_before_the_first_measurement_is_on_redis_clock(
    make_client: MakeClient, r: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A host 20 s ahead whose first batch is a gauge: before, no id reservation measured the
    # offset, and the gauge carried the host's clock: "latest" won for 20 s over later updates.
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 20.0)
    metrics = make_client()
    metrics.gauge("depth", "Depth", combine="latest").set(3)
    assert metrics.flush(timeout=5)
    redis_now = float(r.time()[0]) + r.time()[1] / 1e6
    ((writer, newest),) = r.zrange(keys.gauge_writers, 0, -1, withscores=True)
    assert redis_now - 5 < newest <= redis_now + 0.5
    ((_, value, updated_at),) = decode_gauges(
        {k.decode(): v.decode() for k, v in r.hgetall(keys.gauge_values(writer.decode())).items()},
        "depth",
    )
    assert value == 3 and redis_now - 5 < updated_at <= redis_now + 0.5


# -- properties of record(): strategies --------------------------------------------------------

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
    st.just(100_000).map(lambda n: "a" * n),  # built, so the strategy's repr stays short
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


def _record_time_rejections(stats: dict[str, Any]) -> int:
    rejected: dict[str, int] = stats["rejected"]
    return sum(n for cause, n in rejected.items() if cause != "too_many_providers")


def _event_rejections(stats: dict[str, Any]) -> int:
    """Calls rejected: every cause but those of a value left out of a call booked."""
    rejected: dict[str, int] = stats["rejected"]
    return sum(n for cause, n in rejected.items() if cause not in LEFT_OUT_CAUSES)


LEFT_OUT_CAUSES = frozenset({"too_many_providers", "invalid_tokens", "invalid_cost"})


# -- record(): never raises, never blocks, every call is counted once --------------------------


# The flusher thread (redis-py's retry jitter) uses the random module while examples are drawn.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_record_never_raises_never_blocks_and_counts_every_call(
    make_client: MakeClient, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)

    @property_settings(150)
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
            rejected = _event_rejections(after) - _event_rejections(seen)
            left_out = _record_time_rejections(after) - _record_time_rejections(seen) - rejected
            assert (accepted, rejected) in ((1, 0), (0, 1)), (provider, latency_s, extra)
            assert left_out <= 2 * accepted  # tokens and cost left out only of a call booked
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
            _event_rejections(after) - _event_rejections(before)
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

    @property_settings(30)
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


# -- backend metrics: the registry's factories, offered as the client's -------------------------


def test_the_factories_have_prometheus_clients_signatures(make_client: MakeClient) -> None:
    metrics = make_client()
    # Counter(name, documentation, labelnames, namespace, subsystem, unit, registry)
    assert metrics.counter("c_total", "C", ["a"], "ns", "sub", "", None).spec.name == "ns_sub_c"
    assert metrics.gauge("g", "G", multiprocess_mode="mostrecent").spec.combine == "latest"
    assert metrics.gauge("g2", "G", combine="max").spec.combine == "max"
    histogram = metrics.histogram("h", "H", ["a"], "", "", "seconds", None, buckets=[0.1, 1])
    assert (histogram.spec.name, histogram.spec.buckets) == ("h_seconds", (0.1, 1.0))
    summary = metrics.summary("s", "S", labelnames=["table"], namespace="db")
    assert (summary.spec.name, summary.spec.kind) == ("db_s", "summary")
    assert metrics.info("i", "I", registry=object()).spec.kind == "info"


def test_a_preloading_master_that_only_declares_runs_no_thread_and_its_workers_ship(
    make_client: MakeClient, r: redis.Redis, keys: Keys
) -> None:
    """A Gunicorn master with ``preload_app`` builds the client and declares the gateway's
    metrics, then forks. A flusher thread started by the declarations ran in the master while
    it forked: a lock it held then stays held in a worker (one worker's events once never
    reached Redis). Declaring starts no thread; the worker's first value starts its own."""
    metrics = make_client()
    requests = metrics.counter("preload_requests", "Requests", ["route"])
    metrics.gauge("preload_inflight", "In flight", combine="sum")
    assert not metrics._flusher.started

    def worker() -> bool:
        requests.labels("/chat").inc(3)
        metrics.record("openrouter", 0.1)
        return metrics.flush(timeout=5)

    assert _exit_code_of_forked(worker) == 0
    assert not metrics._flusher.started  # the master still runs no thread of ours
    assert _hash(r, keys.totals("openrouter"))["n:success"] == 1
    requests.labels("/chat").inc(2)  # the master's own first value starts its thread
    assert metrics._flusher.started
    assert metrics.flush(timeout=5)


def test_declarations_alone_are_written_by_flush(
    make_client: MakeClient, r: redis.Redis, keys: Keys
) -> None:
    metrics = make_client()
    metrics.counter("declared_only", "Declared, never counted")
    assert not metrics._flusher.started  # declaring starts nothing (a preloading master)
    assert metrics.flush(timeout=5)
    wait_for(lambda: r.hexists(keys.metric_schema, "declared_only"), timeout=5)

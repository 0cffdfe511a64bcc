"""The Flusher driven with a fake sink: what a batch holds, and that whatever happens to a batch
it took (written, refused, an unexpected error, Redis down at stop()), its events are settled:
written, or counted as dropped. No Redis, no sleeps; except the last test: an idle client's
flusher measured on a real thread against a real Redis."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from client import MetricsClient
from client._admission import ProviderAdmission
from client._batch import Batch
from client._buffer import EventBuffer
from client._events import Event
from client._flusher import IDLE_CHECK_SECONDS, Flusher, Pass
from client._instruments import InstrumentStore
from client._ledger import Ledger
from client._metric_registry import MetricRegistry
from client._settings import ClientSettings
from client._writer import WriteReport
from tests.support.processes import wait_for


class FakeSink:
    """Keeps the batches it is given; ``failures`` are raised first, one per write."""

    def __init__(self, failures: list[BaseException] | None = None) -> None:
        self.batches: list[Batch] = []
        self.writes = 0
        self.failures = list(failures or [])
        self.report = WriteReport()
        self.next_id = 1000

    def reserve_event_ids(self, count: int) -> int:
        first, self.next_id = self.next_id, self.next_id + count
        return first

    def write(self, batch: Batch) -> WriteReport:
        self.writes += 1
        if self.failures:
            raise self.failures.pop(0)
        self.batches.append(batch)
        return self.report


class Registry:
    def __init__(self, refuse: set[str] | None = None, error: Exception | None = None) -> None:
        self.refuse = refuse or set()
        self.error = error

    def admit(self, providers: list[str], cap: int, now: float) -> dict[str, bool]:
        if self.error is not None:
            raise self.error
        return {p: p not in self.refuse for p in providers}


class Parts:
    """A flusher and what it drains, as MetricsClient wires them."""

    def __init__(
        self, sink: FakeSink, registry: Registry | None = None, max_batch: int = 100
    ) -> None:
        settings = ClientSettings(backoff_initial_seconds=0.001, max_batch=max_batch)
        self.ledger = Ledger()
        self.buffer = EventBuffer(1000, self.ledger.evicted)
        self.store = InstrumentStore(100, clock=lambda: 1.0)
        self.sink = sink
        self.flusher = Flusher(
            self.buffer,
            self.ledger,
            self.store,
            sink,
            ProviderAdmission(registry or Registry(), 10, clock=lambda: 1.0),
            settings,
        )

    def record(self, *events: Event) -> None:
        for event in events:
            self.buffer.append(event)

    def flushed(self) -> bool:
        """Whether everything noted or buffered so far is settled, and nothing was lost."""
        target, dropped = self.ledger.target(self.buffer.appended, self.store.version)
        return self.ledger.wait(target, dropped, 0.0)


def _event(provider: str, i: int, outcome: int = 0) -> Event:
    return (provider, 1_800_000_000.0 + i, 0.2, outcome, 10, 1000, None)


def test_one_pass_writes_everything_waiting_as_one_batch() -> None:
    parts = Parts(FakeSink())
    parts.record(*(_event("openrouter", i) for i in range(3)), _event("anthropic", 0, 1))
    parts.ledger.reject("invalid_latency")
    assert parts.flusher.flush_once() is Pass.WRITTEN
    (batch,) = parts.sink.batches
    assert batch.events == 4
    assert sorted(batch.providers) == ["anthropic", "openrouter"]
    assert batch.providers["openrouter"].totals["n:success"] == 3
    assert batch.providers["anthropic"].totals["n:failure"] == 1
    assert batch.notes.rejected == {"invalid_latency": 1}
    assert parts.flushed()
    assert parts.flusher.flush_once() is Pass.IDLE
    assert parts.sink.writes == 1


def test_a_transient_error_resends_the_same_batch() -> None:
    parts = Parts(FakeSink([redis.ConnectionError("down"), redis.TimeoutError("slow")]))
    parts.record(*(_event("openrouter", i) for i in range(5)))
    assert parts.flusher.flush_once() is Pass.WRITTEN
    assert parts.sink.writes == 3  # the same batch object, tried three times
    assert parts.sink.batches[0].events == 5
    assert parts.flusher.redis_ok is True
    assert parts.flushed()


def test_an_unexpected_error_writing_counts_the_events_as_dropped() -> None:
    parts = Parts(FakeSink([RuntimeError("a bug")]))
    parts.record(*(_event("openrouter", i) for i in range(7)))
    parts.ledger.reject("invalid_cost")
    assert parts.flusher.flush_once() is Pass.REFUSED  # given up on: the thread backs off
    assert parts.sink.batches == []
    stats = parts.ledger.stats()
    assert (stats["settled"], stats["dropped"], stats["write_errors"]) == (7, 7, 1)
    assert not parts.flushed()  # the notes of the lost batch are noted again
    parts.flusher.flush_once()
    (batch,) = parts.sink.batches
    assert (batch.events, batch.notes.dropped) == (0, {"error": 7})
    assert batch.notes.rejected == {"invalid_cost": 1}
    assert parts.flushed()


def test_an_unexpected_error_before_the_batch_exists_settles_the_events_taken() -> None:
    parts = Parts(FakeSink(), Registry(error=RuntimeError("a bug in admission")))
    parts.record(*(_event("openrouter", i) for i in range(4)))
    with pytest.raises(RuntimeError):  # the thread logs it and goes on
        parts.flusher.flush_once()
    assert len(parts.buffer) == 0
    assert parts.ledger.stats()["settled"] == 4
    assert parts.ledger.stats()["dropped"] == 4
    assert parts.sink.writes == 0


def test_a_batch_redis_refuses_whole_is_dropped_and_its_notes_kept() -> None:
    parts = Parts(FakeSink([redis.ResponseError("EXECABORT Transaction discarded")]))
    parts.record(*(_event("openrouter", i) for i in range(3)))
    parts.ledger.reject_call("openrouter")
    parts.flusher.flush_once()
    assert parts.ledger.stats()["dropped"] == 3
    parts.flusher.flush_once()
    (batch,) = parts.sink.batches
    assert batch.notes.dropped == {"refused": 3}
    assert batch.notes.breaker_rejected == {"openrouter": 1}


def test_a_batch_redis_refuses_in_part_counts_exactly_the_refused_events() -> None:
    sink = FakeSink()
    sink.report = WriteReport(refused_events=2, errors=("WRONGTYPE",))
    parts = Parts(sink)
    parts.record(*(_event("openrouter", i) for i in range(5)))
    parts.flusher.flush_once()
    stats = parts.ledger.stats()
    assert (stats["settled"], stats["dropped"], stats["write_errors"]) == (5, 2, 1)


def test_refused_providers_are_counted_and_never_written() -> None:
    parts = Parts(FakeSink(), Registry(refuse={"newcomer"}))
    parts.record(_event("openrouter", 0), _event("newcomer", 1), _event("newcomer", 2))
    parts.flusher.flush_once()
    (batch,) = parts.sink.batches
    assert list(batch.providers) == ["openrouter"]
    assert batch.notes.rejected == {"too_many_providers": 2}
    assert parts.ledger.stats()["settled"] == 3
    assert parts.flushed()


def test_stop_while_redis_is_down_settles_the_batch_as_dropped() -> None:
    parts = Parts(FakeSink([redis.ConnectionError("down")] * 100))
    parts.record(*(_event("openrouter", i) for i in range(6)))
    parts.flusher.stop(timeout=1.0)  # never started: only marks it stopping
    assert parts.flusher.flush_once() is Pass.STOPPED
    assert parts.flusher.redis_ok is False
    assert parts.ledger.stats()["settled"] == 6
    assert parts.ledger.stats()["dropped"] == 6


def test_the_thread_drains_what_is_recorded() -> None:
    parts = Parts(FakeSink())
    parts.flusher.start()
    for i in range(250):
        parts.flusher.notify(parts.buffer.append(_event("openrouter", i)))
    target, dropped = parts.ledger.target(parts.buffer.appended, parts.store.version)
    parts.flusher.wake()
    assert parts.ledger.wait(target, dropped, timeout=10.0)
    parts.flusher.stop(timeout=5.0)
    assert sum(batch.events for batch in parts.sink.batches) == 250
    assert all(batch.events <= 100 for batch in parts.sink.batches)  # max_batch


@pytest.mark.parametrize(
    "refusal",
    [
        redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
        redis.exceptions.ExecAbortError(
            "Transaction discarded because of: -OOM command not allowed when used memory > "
            "'maxmemory'."
        ),
        redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
        redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
        redis.exceptions.TryAgainError("Multiple keys request during rehashing of slot"),
        redis.exceptions.MasterDownError("Link with MASTER is down"),
        redis.ResponseError("BUSY Redis is busy running a script."),
        redis.ResponseError("NOREPLICAS Not enough good replicas to write."),
    ],
    ids=lambda exc: type(exc).__name__ + ":" + str(exc)[:12],
)
def test_refusals_for_now_are_retried_like_an_outage(refusal: Exception) -> None:
    parts = Parts(FakeSink([refusal, refusal]))
    parts.record(*(_event("openrouter", i) for i in range(10)))  # too few to split
    parts.flusher.wake()
    assert parts.flusher.flush_once() is Pass.WRITTEN
    (batch,) = parts.sink.batches
    assert batch.events == 10
    assert parts.ledger.stats()["dropped"] == 0
    assert parts.flushed()


class FullRedis(FakeSink):
    """Refuses, for lack of memory, every batch of more than ``fits`` events."""

    def __init__(self, fits: int) -> None:
        super().__init__()
        self.fits = fits
        self.refused = 0

    def write(self, batch: Batch) -> WriteReport:
        if batch.events > self.fits:
            self.refused += 1
            raise redis.exceptions.OutOfMemoryError("command not allowed when used memory")
        return super().write(batch)


def test_a_batch_too_large_for_the_headroom_is_split_under_the_same_ids() -> None:
    sink = FullRedis(fits=300)
    parts = Parts(sink, max_batch=1000)
    parts.record(*(_event("openrouter", i) for i in range(1000)))
    parts.ledger.reject("invalid_cost")
    assert parts.flusher.flush_once() is Pass.WRITTEN
    assert [b.events for b in sink.batches] == [250, 250, 250, 250]  # 1000 -> 500 -> 250
    members = [m for b in sink.batches for flat in b.providers["openrouter"].partitions.values()
               for m in flat[1::2]]  # fmt: skip
    assert len(set(members)) == 1000  # each event once, named as reserved
    assert sum(b.notes.rejected.get("invalid_cost", 0) for b in sink.batches) == 1
    assert parts.ledger.stats()["dropped"] == 0
    assert parts.flushed()


def test_a_batch_that_cannot_be_split_waits_for_room_until_close() -> None:
    sink = FullRedis(fits=0)
    parts = Parts(sink)
    parts.record(*(_event("openrouter", i) for i in range(100)))  # under twice the split size
    parts.flusher.stop(timeout=1.0)  # the retries end at once: nothing is lost silently
    assert parts.flusher.flush_once() is Pass.STOPPED
    assert sink.refused == 1
    assert parts.ledger.stats()["dropped_by_cause"] == {"shutdown": 100}


class Monotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_idle_flusher_sleeps_until_its_next_deadline() -> None:
    clock = Monotonic()
    settings = ClientSettings(gauge_ttl_seconds=30.0)
    ledger = Ledger()
    store = InstrumentStore(100, clock=lambda: 1.0)
    flusher = Flusher(
        EventBuffer(1000, ledger.evicted),
        ledger,
        store,
        FakeSink(),
        ProviderAdmission(Registry(), 10, clock=lambda: 1.0),
        settings,
        monotonic=clock,
    )
    assert flusher.idle_seconds() == IDLE_CHECK_SECONDS  # nothing at all: the longest sleep
    registry = MetricRegistry(store)
    registry.gauge("inflight", "In flight", (), combine="sum").set(3)
    assert flusher.flush_once() is Pass.WRITTEN  # writes the gauge: its TTL runs from now
    clock.now += 4.0
    assert flusher.idle_seconds() == IDLE_CHECK_SECONDS  # 10 s until the gauge rewrite
    clock.now += 4.0
    assert flusher.idle_seconds() == pytest.approx(2.0)
    clock.now += 9.0
    assert flusher.idle_seconds() == 0.0  # overdue


def test_an_idle_client_makes_no_flush_passes_and_wakes_for_an_event(redis_url: str) -> None:
    """End to end on a real thread: idleness measured over real time."""
    metrics = MetricsClient(
        settings=ClientSettings(redis_url=redis_url, namespace=f"idle-{uuid.uuid4().hex[:8]}")
    )
    try:
        metrics.record("openrouter", 0.1)
        assert metrics.flush(timeout=5)
        flusher = metrics._flusher  # the count this test is about
        wait_for(lambda: flusher._idle, timeout=5)
        before = flusher.passes
        time.sleep(1.0)  # a measurement window, not a synchronisation
        assert flusher.passes == before  # 20 passes a second before it learnt to sleep
        started = time.monotonic()
        metrics.record("openrouter", 0.1)
        assert metrics.flush(timeout=5)
        assert time.monotonic() - started < 1.0  # woken by the event, not by a deadline
    finally:
        metrics.close(timeout=2)


def test_half_a_batch_waiting_wakes_the_flusher_before_its_interval(redis_url: str) -> None:
    """End to end on a real thread (client.md: "every 50 ms, or as soon as 5,000 are
    waiting"): with a 20 s interval, 5,000 events recorded after a pass are written at once."""
    namespace = f"wake-{uuid.uuid4().hex[:8]}"
    settings = ClientSettings(redis_url=redis_url, namespace=namespace, flush_interval_seconds=20.0)
    metrics = MetricsClient(settings=settings)
    connection = redis.Redis.from_url(redis_url)
    totals = f"{namespace}:{{openrouter}}:totals"
    try:
        assert settings.max_batch // 2 == 5_000
        metrics.record("openrouter", 0.1)
        assert metrics.flush(timeout=5)
        flusher = metrics._flusher  # its state is what this test waits on
        wait_for(lambda: flusher._idle, timeout=5)
        metrics.record("openrouter", 0.1)  # wakes it to wait 20 s for a batch to gather
        wait_for(lambda: not flusher._idle and not flusher._wake.is_set(), timeout=5)
        for _ in range(4_998):
            metrics.record("openrouter", 0.1)
        assert metrics.stats()["buffered"] == 4_999  # below half a batch: still waiting
        metrics.record("openrouter", 0.1)  # the 5,000th
        wait_for(lambda: connection.hget(totals, "n:success") == b"5001", timeout=5)
        assert metrics.stats()["buffered"] == 0
    finally:
        metrics.close(timeout=2)
        connection.delete(*connection.keys(f"{namespace}:*"))
        connection.close()


def test_a_backlog_of_many_batches_drains_pass_after_pass(redis_url: str) -> None:
    """End to end on a real thread. A concurrency audit: with 30,000 events waiting and
    batches of 100, the flusher waited its interval between passes (one batch per 50 ms:
    15 s), so flush(5) said False with Redis healthy. Half a batch waiting is a pass now."""
    namespace = f"backlog-{uuid.uuid4().hex[:8]}"
    settings = ClientSettings(redis_url=redis_url, namespace=namespace, max_batch=100)
    metrics = MetricsClient(settings=settings)
    connection = redis.Redis.from_url(redis_url)
    try:
        for _ in range(30_000):
            metrics.record("openrouter", 0.1)
        assert metrics.flush(timeout=5) is True
        totals = f"{namespace}:{{openrouter}}:totals"
        assert connection.hget(totals, "n:success") == b"30000"
    finally:
        metrics.close(timeout=2)
        connection.delete(*connection.keys(f"{namespace}:*"))
        connection.close()

"""FlushPass built directly, with a fake sink: how many events a pass takes and under which ids,
that events wait in the buffer while no ids can be had, which backend values it takes, and when
every gauge value is written again (GaugeRefresh). No Redis, no sleeps. (What happens to a
batch it delivers, refused, split or lost: tests/client/test_flusher.py, through the flusher.)"""

from __future__ import annotations

import redis

from client._admission import ProviderAdmission
from client._batch import Batch
from client._buffer import EventBuffer
from client._events import Event
from client._flush_pass import MAX_RESENDS, FlushPass, GaugeRefresh, Pass
from client._instruments import InstrumentStore
from client._ledger import Ledger
from client._metric_registry import MetricRegistry
from client._retry import Backoff
from client._writer import WriteReport


class Sink:
    """Names events from 1000 on and keeps the batches; ``down``: every round trip fails."""

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.next_id = 1000
        self.batches: list[Batch] = []

    def reserve_event_ids(self, count: int) -> int:
        if self.down:
            raise redis.ConnectionError("down")
        first, self.next_id = self.next_id, self.next_id + count
        return first

    def write(self, batch: Batch) -> WriteReport:
        if self.down:
            raise redis.ConnectionError("down")
        self.batches.append(batch)
        return WriteReport()


class AdmitAll:
    def admit(self, providers: list[str], cap: int, now: float) -> dict[str, bool]:
        return dict.fromkeys(providers, True)


class Monotonic:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Parts:
    """A pass and what it drains; ``stopping``: stop() was called (retries end at once)."""

    def __init__(self, sink: Sink, max_batch: int = 100, stopping: bool = False) -> None:
        self.ledger = Ledger()
        self.buffer = EventBuffer(1000, self.ledger.evicted)
        self.store = InstrumentStore(100, clock=lambda: 1.0)
        self.monotonic = Monotonic()
        self.sink = sink
        self.flush_pass = FlushPass(
            self.buffer,
            self.ledger,
            self.store,
            sink,
            ProviderAdmission(AdmitAll(), 10, clock=lambda: 1.0),
            Backoff(0.001, 0.001, stopping=lambda: stopping),
            GaugeRefresh(30.0, self.monotonic),
            max_batch=max_batch,
            max_providers=10,
        )

    def record(self, count: int) -> None:
        for i in range(count):
            self.buffer.append(_event(i))


def _event(i: int) -> Event:
    return ("openrouter", 1_800_000_000.0 + i, 0.2, 0, 0, 0, None)


def test_a_pass_takes_at_most_max_batch_events_named_from_the_reserved_ids() -> None:
    parts = Parts(Sink(), max_batch=100)
    parts.record(250)
    assert parts.flush_pass.run() is Pass.WRITTEN
    assert parts.flush_pass.run() is Pass.WRITTEN
    assert [(b.first_id, b.events) for b in parts.sink.batches] == [(1000, 100), (1100, 100)]
    assert len(parts.buffer) == 50
    assert parts.ledger.stats()["settled"] == 200


def test_while_no_ids_can_be_had_the_events_stay_in_the_buffer() -> None:
    parts = Parts(Sink(down=True), stopping=True)
    parts.record(5)
    assert parts.flush_pass.run() is Pass.STOPPED
    assert len(parts.buffer) == 5  # never taken: nothing to settle or count as dropped
    assert parts.ledger.stats()["settled"] == 0
    assert parts.ledger.stats()["dropped"] == 0


def test_a_pass_takes_the_backend_values_changed_since_the_last_one() -> None:
    parts = Parts(Sink())
    counter = MetricRegistry(parts.store).counter("jobs", "Jobs", ())
    counter.inc(3)
    assert parts.store.version != parts.flush_pass.drained_version  # the flusher has work
    assert parts.flush_pass.run() is Pass.WRITTEN
    assert parts.flush_pass.drained_version == parts.store.version
    (batch,) = parts.sink.batches
    assert batch.instruments is not None
    assert [(spec.name, updates) for spec, _, updates, _ in batch.instruments.deltas] == [
        ("jobs", 1)
    ]
    assert parts.flush_pass.run() is Pass.IDLE  # nothing changed since
    assert len(parts.sink.batches) == 1


def test_every_gauge_value_is_written_again_each_third_of_its_ttl() -> None:
    clock = Monotonic(100.0)
    gauges = GaugeRefresh(30.0, clock)
    assert gauges.due()  # the first pass writes them all
    assert gauges.seconds_until_due() == 10.0
    clock.now = 109.5
    assert not gauges.due()
    assert gauges.seconds_until_due() == 0.5
    clock.now = 110.0
    assert gauges.due()  # a third of the TTL since the last refresh: due again
    assert gauges.seconds_until_due() == 10.0
    clock.now = 125.0
    assert gauges.seconds_until_due() == -5.0  # overdue
    assert gauges.due()


def test_an_unchanged_gauge_is_written_only_when_the_refresh_is_due() -> None:
    parts = Parts(Sink())
    MetricRegistry(parts.store).gauge("depth", "Depth", (), combine="sum").set(4)
    assert parts.flush_pass.run() is Pass.WRITTEN  # changed: written
    parts.monotonic.now += 9.0
    assert parts.flush_pass.run() is Pass.IDLE  # unchanged, refresh not due
    parts.monotonic.now += 1.0
    assert parts.flush_pass.run() is Pass.WRITTEN  # unchanged, but due: written again
    assert [
        [(name, value) for name, _, value, _ in b.instruments.gauges]
        for b in parts.sink.batches
        if b.instruments is not None
    ] == [[("depth", 4.0)], [("depth", 4.0)]]


class ForgetfulSink(Sink):
    """Answers each batch's increments as not applied (Redis did not know their script)
    ``forgets`` times, as a writer reports it: the rest of the batch was written."""

    def __init__(self, forgets: int, down_after: int | None = None) -> None:
        super().__init__()
        self.forgets = forgets
        self.down_after = down_after

    def write(self, batch: Batch) -> WriteReport:
        if self.down_after is not None and len(self.batches) >= self.down_after:
            raise redis.ConnectionError("down")
        self.batches.append(batch)
        if self.forgets and batch.instruments is not None and batch.instruments.deltas:
            self.forgets -= 1
            return WriteReport(leftover=batch.instruments.increments())
        return WriteReport()


def test_increments_a_transaction_left_undone_are_sent_again_before_the_flush_is_done() -> None:
    parts = Parts(ForgetfulSink(forgets=1))
    MetricRegistry(parts.store).counter("jobs", "Jobs", ()).inc(3)
    parts.record(2)
    target, losses = parts.ledger.target(2, parts.store.version)
    assert parts.flush_pass.run() is Pass.WRITTEN
    whole, leftover = parts.sink.batches
    assert (whole.events, leftover.events, leftover.providers) == (2, 0, {})
    assert leftover.instruments is not None and whole.instruments is not None
    assert leftover.instruments.deltas == whole.instruments.deltas  # only the increments
    assert (leftover.instruments.gauges, leftover.instruments.specs) == ([], [])
    assert parts.ledger.wait(target, losses, 0.0) is True


def test_increments_left_undone_and_never_delivered_fail_the_flush_and_are_counted() -> None:
    parts = Parts(ForgetfulSink(forgets=1, down_after=1), stopping=True)  # then Redis is gone
    MetricRegistry(parts.store).counter("jobs", "Jobs", ()).inc(3)
    target, losses = parts.ledger.target(0, parts.store.version)
    assert parts.flush_pass.run() is Pass.STOPPED
    assert parts.ledger.wait(target, losses, 0.0) is False
    assert parts.ledger.stats()["metric_updates_dropped"] == {"shutdown": 1}


def test_increments_redis_forgets_the_script_of_every_time_are_given_up_on() -> None:
    parts = Parts(ForgetfulSink(forgets=10))
    MetricRegistry(parts.store).counter("jobs", "Jobs", ()).inc(3)
    target, losses = parts.ledger.target(0, parts.store.version)
    assert parts.flush_pass.run() is Pass.WRITTEN
    assert len(parts.sink.batches) == 1 + MAX_RESENDS  # the batch, then each resend
    assert parts.ledger.wait(target, losses, 0.0) is False
    assert parts.ledger.stats()["metric_updates_dropped"] == {"refused": 1}

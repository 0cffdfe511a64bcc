"""The flusher: the background thread that drains a MetricsClient's buffer into Redis.

One batch per round trip (MULTI/EXEC), at most one in flight, waiting ``flush_interval`` first
so events accumulate. While Redis is unreachable it backs off exponentially and keeps the batch
it has taken, so a retry re-sends the same members (never applied twice: a transaction either
ran or did not). A batch Redis refuses is dropped and counted, never retried.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import replace

import redis

from client.admission import ProviderAdmission
from client.breaker_gate import BreakerGate
from client.events import Event
from client.instruments import InstrumentStore
from client.settings import ClientSettings
from client.writer import Batch, RedisWriter, build_batch

log = logging.getLogger("gatewayz.metrics.client")


class Flushing:
    """The flusher half of MetricsClient: the state below is the client's, set up by
    ``MetricsClient._reset_process_state`` and guarded by ``_lock``."""

    settings: ClientSettings
    _lock: threading.Lock
    _settled_cond: threading.Condition
    _wake: threading.Event
    _retry_now: threading.Event
    _buffer: deque[Event]
    _writer: RedisWriter
    _writer_id: str
    _gate: BreakerGate
    _admission: ProviderAdmission
    _instruments: InstrumentStore
    _instruments_written: int
    _gauges_refreshed_at: float
    _logged_causes: set[str]
    _rejected: Counter[str]
    _rejected_total: Counter[str]
    _breaker_rejected: Counter[str]
    _dropped_unsent: int
    _settled: int
    _stats_version: int
    _stats_written: int
    _write_errors: int
    _closing: bool
    _redis_ok: bool

    def _take_batch(self) -> tuple[Batch, int]:
        """The next batch; raises redis.RedisError, taking nothing, when no ids can be
        reserved for its events."""
        with self._lock:
            count = min(len(self._buffer), self.settings.max_batch)
        # Only this thread shortens the buffer (record() drops the oldest to append), so the
        # ``count`` events are still there after the round trip.
        first_id = self._writer.reserve_event_ids(count) if count else 0
        now = time.monotonic()
        refresh_gauges = now - self._gauges_refreshed_at >= self.settings.gauge_ttl_seconds / 3
        if refresh_gauges:
            self._gauges_refreshed_at = now
        instruments = self._instruments.drain(include_all_gauges=refresh_gauges)
        with self._lock:
            buffer = self._buffer
            events = [buffer.popleft() for _ in range(count)]
        events = self._admitted_only(events)  # may count rejections: take the stats after it
        with self._lock:
            rejected = dict(self._rejected)
            self._rejected.clear()
            dropped = self._dropped_unsent
            self._dropped_unsent = 0
            breaker_rejected = dict(self._breaker_rejected)
            self._breaker_rejected.clear()
            stats_version = self._stats_version
        batch = build_batch(events, first_id, rejected, dropped, breaker_rejected)
        if not instruments.empty or instruments.version:
            batch = replace(batch, instruments=instruments)
        return batch, stats_version

    def _admitted_only(self, events: list[Event]) -> list[Event]:
        """Drop (and count) the events of providers the registry refused."""
        refused = self._admission.refused({event[0] for event in events})
        if not refused:
            return events
        kept = [event for event in events if event[0] not in refused]
        dropped = len(events) - len(kept)
        with self._settled_cond:
            self._rejected["too_many_providers"] += dropped
            self._rejected_total["too_many_providers"] += dropped
            self._stats_version += 1
            self._settled += dropped
            self._settled_cond.notify_all()
        if "too_many_providers" not in self._logged_causes:
            self._logged_causes.add("too_many_providers")
            log.warning(
                "provider registry is full (%d providers): events of new providers such as %r "
                "are dropped and counted",
                self.settings.max_providers,
                sorted(refused)[0],
            )
        return kept

    def _run_flusher(self, writer_id: str) -> None:
        """The flusher thread: never dies of an unexpected error while the client is open."""
        while True:
            try:
                self._flush_until_closed(writer_id)
                return
            except Exception:
                log.exception("metrics flusher failed unexpectedly; restarting it")
                self._retry_now.wait(self.settings.backoff_max_seconds)
                self._retry_now.clear()

    def _flush_until_closed(self, writer_id: str) -> None:
        settings = self.settings
        writer, gate = self._writer, self._gate
        backoff = settings.backoff_initial_seconds
        pending: tuple[Batch, int] | None = None
        while True:
            if pending is None:
                if not self._closing:
                    # Wait first, so a batch accumulates: one round trip per interval.
                    self._wake.wait(settings.flush_interval_seconds)
                    self._wake.clear()
                gate.refresh_if_due()
                try:
                    pending = self._take_batch()
                except (redis.RedisError, OSError) as exc:
                    # Nothing was taken: the events wait in the (bounded) buffer.
                    if not self._wait_to_retry(exc, writer_id, backoff):
                        return
                    backoff = min(backoff * 2, settings.backoff_max_seconds)
                    continue
                batch, stats_version = pending
                if batch.empty:
                    pending = None
                    with self._lock:
                        self._stats_written = max(self._stats_written, stats_version)
                        if batch.instruments is not None:
                            self._instruments_written = batch.instruments.version
                        if self._closing or self._writer_id != writer_id:
                            return
                    continue
            batch, stats_version = pending
            try:
                conflicts = writer.write(batch)
            except Exception as exc:
                if isinstance(exc, redis.ResponseError) or not isinstance(
                    exc, (redis.RedisError, OSError)
                ):
                    # Redis executed the transaction and refused a command, or the batch holds
                    # a value redis-py cannot encode: retrying would fail again, or apply the
                    # rest of the batch twice. Drop it, count it, keep the flusher alive.
                    log.error("metrics batch refused, not retried: %r", exc)
                    self._settle(batch, stats_version, write_error=True)
                    pending = None
                    continue
                if not self._wait_to_retry(exc, writer_id, backoff):
                    return
                backoff = min(backoff * 2, settings.backoff_max_seconds)
                continue
            if not self._redis_ok:
                self._redis_ok = True
                log.warning("metrics flush to Redis recovered")
            for name in conflicts:
                if name not in self._logged_causes:
                    self._logged_causes.add(name)
                    log.error(
                        "metric %r is declared differently in Redis (another deployment?); "
                        "the aggregator exports the first declaration",
                        name,
                    )
            backoff = settings.backoff_initial_seconds
            pending = None
            self._settle(batch, stats_version)

    def _wait_to_retry(self, exc: Exception, writer_id: str, backoff: float) -> bool:
        """After a failed round trip: wait ``backoff`` seconds, or until flush() or close()
        asks. record() filling the buffer does not cut it short: with Redis down, that would
        turn the backoff into a busy loop of reconnects. False when the client is closing or
        this thread belongs to a parent process (stop, don't retry)."""
        if self._redis_ok:
            self._redis_ok = False
            log.error("metrics flush to Redis failed, retrying with backoff: %s", exc)
        with self._lock:
            if self._closing or self._writer_id != writer_id:
                return False
        self._retry_now.wait(backoff)
        self._retry_now.clear()
        return True

    def _settle(self, batch: Batch, stats_version: int, write_error: bool = False) -> None:
        """The batch is done with (written, or refused for good): wake flush() waiters."""
        with self._settled_cond:
            self._write_errors += write_error
            self._settled += batch.events
            self._stats_written = max(self._stats_written, stats_version)
            if batch.instruments is not None:
                self._instruments_written = batch.instruments.version
            self._settled_cond.notify_all()

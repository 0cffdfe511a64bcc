"""Breakers woken by workers (``gatewayz_protocol.wakes``): the leader's evaluation of them now,
and the thread that waits for wakes.

``WokenBreakers.evaluate`` reads the woken providers (``wake_read``), decides with
``evaluate_woken`` (the cycle's rules, and for a closed breaker also over the recent calls),
applies the max-open-share guard against every breaker the last snapshot knows, and writes the
transitions compare-and-set on the epoch and fenced by the lease, exactly as a cycle does
(``evaluate.BreakerStep`` logs and applies what the commit made of them).

``WakeListener`` is a thread with a Redis connection of its own. While this replica leads, it
waits on the wake stream with a blocking ``XREAD`` (``BLOCK_SECONDS`` at most, so a quiet fleet
costs one command per that time), hands the woken providers to the ``WakeSchedule`` and has the
due ones evaluated (``WokenBreakers.evaluate``), again every recheck interval while wakes keep
coming. A follower's thread sends nothing: it only looks whether it leads now, once a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis
from opentelemetry import trace

from aggregator.core.breaker import Transition, evaluate_woken, limit_open_share
from aggregator.core.decisions import Decisions
from aggregator.core.served import ServedState
from aggregator.core.snapshot import Snapshot
from aggregator.core.wake_schedule import WakeSchedule
from aggregator.engine.clock import CycleClock
from aggregator.engine.evaluate import BreakerStep
from aggregator.engine.lease import LeaderLease
from aggregator.engine.wake_read import read_woken
from aggregator.engine.writer import FENCED, StateWriter
from aggregator.settings import AggregatorSettings, describe_error
from gatewayz_protocol import wakes
from gatewayz_protocol.breaker_state import CLOSED, BreakerState
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import Connection

log = logging.getLogger("gatewayz.aggregator")
tracer = trace.get_tracer("gatewayz.aggregator")

BLOCK_SECONDS = 30.0
"""The longest the leader's XREAD blocks: its only command while nothing fails."""
FOLLOWER_CHECK_SECONDS = 1.0
"""How often a follower's thread looks whether its replica leads now (no Redis I/O)."""
ERROR_PAUSE_SECONDS = 1.0


class Woken:
    """Evaluates woken breakers and commits their transitions, for a leader (``WokenBreakers``
    holds the lease and the lock)."""

    def __init__(
        self,
        connection: Connection,
        keys: Keys,
        writer: StateWriter,
        step: BreakerStep,
        settings: AggregatorSettings,
        tolerance: float,
    ) -> None:
        self._redis = connection
        self.keys = keys
        self._writer = writer
        self._step = step
        self._policy = settings.breaker_policy
        self._tolerance = tolerance
        self.ops: Counter[str] = Counter()
        """Commands read with, not yet reported (the next commit adds them to the shared count)."""

    def evaluate(
        self,
        providers: Sequence[str],
        now: float,
        last: Snapshot | None,
        fence: int,
        valid_until_ms: int | None,
    ) -> tuple[dict[str, BreakerState], list[Transition], bool]:
        """(the states after the commit, the transitions applied, whether a newer leader fenced
        us off)."""
        readings, _ = read_woken(
            self._redis, self.keys, providers, now, self._policy, self._tolerance, self.ops
        )
        states = {r.provider: r.breaker for r in readings}
        planned = []
        for reading in readings:
            config = self._policy.config(reading.provider)
            transition = evaluate_woken(reading.breaker, reading.calls, reading.recent, now, config)
            if transition is not None:
                planned.append((reading.provider, transition))
        if not planned:
            return states, [], False
        known = _known_states(last, states)
        share = self._policy.default.max_open_share
        kept, suppressed = limit_open_share(planned, known, share)
        for name, transition in suppressed:
            log.warning(
                "breaker %s: would open (%s) but %.0f%% of providers are already open",
                name,
                transition.reason,
                share * 100,
            )
        decisions = Decisions(tuple(kept), tuple(suppressed), {})
        commit = self._writer.begin(fence, valid_until_ms)
        commit.transitions(self._step.writes(decisions))
        ops, self.ops = self.ops, Counter()
        committed = commit.send(ops)
        applied = self._step.settle(decisions, committed, states)
        return states, applied, FENCED in committed.results


class WokenBreakers:
    """A replica's woken breakers: ``evaluate()`` while it leads, under the cycles' lock (never
    two of them at once), and the ``listener()`` that calls it."""

    def __init__(
        self,
        woken: Woken,
        lock: threading.RLock,
        lease: LeaderLease,
        clock: CycleClock,
        served: Callable[[], ServedState],
    ) -> None:
        self._woken = woken
        self._lock = lock
        self._lease = lease
        self._clock = clock
        self._served = served

    def evaluate(self, providers: list[str]) -> list[tuple[str, BreakerState]]:
        """Evaluate ``providers``' breakers now (leader only; nothing when this replica just
        took the lease and its fences are not raised yet: its next cycle raises them);
        (provider, state after) of those read."""
        with self._lock, tracer.start_as_current_span("woken_breakers"):
            fence, lease = self._lease.fence, self._lease
            if not fence or lease.taken_over:
                return []
            try:
                now = self._clock.now()
                until = lease.valid_until_ms
                states, _, fenced = self._woken.evaluate(
                    providers, now, self._served().snapshot, fence, until
                )
            except (redis.RedisError, OSError) as exc:
                log.error("woken breaker evaluation failed: %s", describe_error(exc))
                return []
            if fenced:
                lease.deposed()
            return list(states.items())

    def listener(self, connection: Connection) -> WakeListener:
        """The thread that waits for wakes on ``connection`` (its own: its reads block) and
        has them evaluated while this replica leads (not started)."""
        keys = self._woken.keys
        return WakeListener(
            connection, keys, WakeSchedule(), self.evaluate, lambda: self._lease.is_leader
        )


def _known_states(
    last: Snapshot | None, read: Mapping[str, BreakerState]
) -> dict[str, BreakerState]:
    """Every breaker the last snapshot knows, as just read where it was: what the max-open-share
    guard counts against."""
    known = {p.provider: p.breaker for p in (last.providers if last else ())}
    known.update(read)
    return known


class WakeListener:
    """The thread that waits for wakes while its replica leads (``start()``, ``stop()``)."""

    def __init__(
        self,
        connection: Connection,
        keys: Keys,
        schedule: WakeSchedule,
        evaluate: Callable[[list[str]], Sequence[tuple[str, BreakerState]]],
        is_leader: Callable[[], bool],
        monotonic: Callable[[], float] = time.monotonic,
        block_seconds: float = BLOCK_SECONDS,
    ) -> None:
        """``evaluate(providers)``: evaluates them now (``WokenBreakers.evaluate``), returns
        (provider, state after) of those read."""
        self._redis = connection
        self._key = keys.breaker_wakes
        self._schedule = schedule
        self._evaluate = evaluate
        self._is_leader = is_leader
        self._monotonic = monotonic
        self._block = block_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_id: Any = None
        self._failing = False  # the last step failed (logged once until one succeeds)
        self.evaluations = 0
        """Providers evaluated because of wakes so far."""
        self.invalid = 0
        """Entries naming no provider a worker could have written (skipped)."""

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gatewayz-breaker-wakes")
            self._thread.daemon = True
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread: it is woken by an entry of its own when blocked in Redis."""
        self._stop.set()
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        thread.join(min(timeout, 0.2))  # a follower's thread ends at once
        if not thread.is_alive():
            return
        try:
            for command in wakes.wake_commands(self._key, [""]):  # names no provider
                self._redis.execute_command(*command)  # type: ignore[no-untyped-call]
        except (redis.RedisError, OSError):
            pass  # Redis gone: the read fails, and the thread ends
        thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._is_leader():
                    self._last_id = None
                    self._stop.wait(FOLLOWER_CHECK_SECONDS)
                    continue
                self.step()
                self._failing = False
            except Exception as exc:  # Redis away, a failover: try again shortly
                if not self._failing:
                    log.warning("breaker wakes unavailable, the breaker cycle decides: %s", exc)
                self._failing = True
                self._stop.wait(ERROR_PAUSE_SECONDS)

    def step(self) -> None:
        """One wait for wakes (at most until the next due evaluation), then the evaluations
        due. (The thread's loop; tests call it directly.)"""
        if self._last_id is None:
            # A new leader: the wakes of the last few seconds count (entry ids are Redis's
            # time in ms, read from the node holding the stream).
            seconds, _ = self._redis_time()
            self._last_id = f"{max(0, int(seconds - self._schedule.policy.watch_seconds))}000-0"
        wait = min(self._block, self._schedule.seconds_until_due(self._monotonic()))
        if wait > 0:
            self._read(wait)
        if self._stop.is_set() or not self._is_leader():
            return
        due = self._schedule.due(self._monotonic())
        if not due:
            return
        self.evaluations += len(due)
        after = self._evaluate(due)
        self._schedule.settle([name for name, state in after if state.state != CLOSED])

    def _redis_time(self) -> tuple[int, int]:
        if isinstance(self._redis, redis.Redis):
            seconds, micros = self._redis.time()
        else:  # TIME has no key: ask the node the stream is on
            node = self._redis.get_node_from_key(self._key)  # type: ignore[no-untyped-call]
            seconds, micros = self._redis.time(target_nodes=node)
        return int(seconds), int(micros)

    def _read(self, wait: float) -> None:
        reply = self._redis.xread(
            {self._key: self._last_id},
            count=wakes.READ_COUNT,
            block=max(1, int(wait * 1000)),
        )
        last, providers, invalid = wakes.decode_wakes(reply)
        if last is not None:
            self._last_id = last
        self.invalid += invalid
        if providers:
            self._schedule.wake(providers, self._monotonic())

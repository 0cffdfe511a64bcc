"""Worker-side view of the cluster-wide circuit breakers: answers ``allow()`` from a local cache.

closed (or unknown: Redis never answered) -> True with no I/O; open -> False with no I/O;
half_open -> a trial permit taken atomically in Redis (at most N across all workers and hosts,
each expiring so a crashed worker cannot hold one forever). A denied permit is remembered until
the next refresh so a half-open provider does not cost a round trip per call. ``status()``
answers ``breaker()`` from the same cache and never takes a permit.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol

from client._breaker_status import BreakerStatus, open_deadline, retry_after
from gatewayz_protocol import scripts
from gatewayz_protocol.breaker_state import (
    CLOSED,
    FORCED_FIELD,
    HALF_OPEN,
    OPEN,
    STATE_FIELD,
    decode_state_name,
)
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.names import is_valid_provider
from gatewayz_transport.connection import Connection
from gatewayz_transport.errors import explained
from gatewayz_transport.routing import pipeline
from gatewayz_transport.scripts import register

log = logging.getLogger("gatewayz.metrics.client")

HURRY_SECONDS = 0.1
"""How often a hurried provider's state is refreshed (one that woke its breaker: its calls fail
here, so the verdict is wanted at once)."""


class Stored(NamedTuple):
    """What a worker reads of a breaker hash."""

    state: str
    open_until: float = 0.0
    """when an automatic open ends (Redis's clock; 0: unknown)"""
    forced: bool = False


class BreakerStore(Protocol):
    """Where breaker states live; both methods raise when Redis cannot answer."""

    def states(self, providers: list[str]) -> dict[str, Stored]:
        """providers -> their breakers (no state: closed)."""
        ...

    def take_permit(self, provider: str, holder: str) -> tuple[str, bool]:
        """Try to take a half-open trial permit: (current state, granted)."""
        ...


class RedisBreakerStore:
    """The gate's Redis I/O: states in one pipelined read, permits through a script. A name's
    keys (its breaker hash, its permits) come from ``keys_of``: a provider's by default, a
    (provider, model) scope's for the model breakers (``client._model_scopes``)."""

    def __init__(
        self,
        connection: Connection,
        keys: Keys,
        keys_of: Callable[[str], tuple[str, str]] | None = None,
    ) -> None:
        self._redis = connection
        self._keys_of = keys_of or (
            lambda provider: (keys.breaker(provider), keys.permits(provider))
        )
        self._permit = register(connection, scripts.PERMIT)

    def states(self, providers: list[str]) -> dict[str, Stored]:
        pipe = pipeline(self._redis)
        for provider in providers:
            pipe.hmget(self._keys_of(provider)[0], [STATE_FIELD, "open_until", FORCED_FIELD])
        replies = pipe.execute()
        return {p: stored_breaker(*raw) for p, raw in zip(providers, replies, strict=True)}

    def take_permit(self, provider: str, holder: str) -> tuple[str, bool]:
        state, granted = self._permit(keys=list(self._keys_of(provider)), args=[holder])
        return decode_state_name(state), bool(granted)


def stored_breaker(state: object, open_until: object, forced: object) -> Stored:
    """A breaker as HMGET read it: what is not a number is unknown (0), as a hand edit may be."""
    try:
        until = float(open_until)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        until = 0.0
    name = decode_state_name(state)  # type: ignore[arg-type]
    return Stored(name, until if math.isfinite(until) else 0.0, forced in (b"1", "1"))


class _Entry:
    """A provider's cached breaker. ``state`` is ``known.state`` (None: never learned, Redis
    unreachable: fail open), kept apart so ``allow()`` reads one attribute."""

    __slots__ = ("denied_until", "hurry_until", "known", "refreshed_at", "state")

    def __init__(self, known: Stored | None, refreshed_at: float) -> None:
        self.refreshed_at = refreshed_at
        self.denied_until = 0.0
        self.hurry_until = 0.0
        """Until then (monotonic) refreshed every ``HURRY_SECONDS``: its calls fail here."""
        self.known: Stored | None = None
        self.state: str | None = None
        self.learn(known)

    def learn(self, known: Stored | None) -> None:
        self.known = known
        self.state = None if known is None else known.state


class BreakerGate:
    """The per-process cache of breaker states that answers ``allow()``."""

    def __init__(
        self,
        store: BreakerStore,
        holder_prefix: str,
        refresh_seconds: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        max_entries: int = 2000,
        now: Callable[[], float] = time.time,
        valid: Callable[[str], bool] = is_valid_provider,
        on_schedule: Callable[[], None] = lambda: None,
    ) -> None:
        """``now``: the clock breaker deadlines are on (Redis's: the shared clock); ``valid``:
        which names a breaker can exist for (provider names; scopes for model breakers);
        ``on_schedule``: called when the refresh schedule changes (a state cached, a breaker
        hurried), so the refresher (``client._breaker_refresh``) looks at it again."""
        self._valid = valid
        self._on_schedule = on_schedule
        self._max_entries = max_entries
        self._now = now
        self._store = store
        self._holder_prefix = holder_prefix
        self._refresh_seconds = refresh_seconds
        self._monotonic = monotonic
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._permits_taken = 0
        self._redis_errors_logged = False

    def __len__(self) -> int:
        """Providers whose state is cached (at most ``max_entries``)."""
        return len(self._entries)

    def state(self, provider: str) -> str | None:
        entry = self._entries.get(provider)
        return None if entry is None else entry.state

    def status(self, provider: str, allowed: bool | None = None) -> BreakerStatus:
        """``provider``'s breaker, no permit taken (Redis read once for a provider never asked
        about); ``allowed``: the verdict of ``allow()`` on this call, if one was asked for."""
        if allowed is None:
            allowed = self.peek(provider)
            if allowed is None:
                allowed = True  # half-open, not refused lately: a permit may be free
        entry = self._entries.get(provider)
        known = None if entry is None else entry.known
        if known is None or entry is None:
            return BreakerStatus(provider, None, allowed)
        deadline = open_deadline(known.state, known.open_until, known.forced)
        wait = None
        if not allowed:
            wait = retry_after(
                known.state, deadline, self._now(), entry.denied_until, self._monotonic()
            )
        return BreakerStatus(provider, known.state, allowed, wait, deadline, known.forced)

    def knows(self, provider: str) -> bool:
        """Whether ``status()`` needs no Redis I/O for ``provider``."""
        return self.cached(provider) is not None or provider in self._entries

    def allow(self, provider: str) -> bool:
        """Whether a call may go to ``provider`` now (Redis I/O only to learn a provider's state
        the first time, and to take a half-open trial permit)."""
        verdict = self.peek(provider)
        if verdict is None:
            entry = self._entries.get(provider) or self._learn(provider)
            verdict = self._take_permit(provider, entry)
        return verdict

    def peek(self, provider: str) -> bool | None:
        """``allow()``'s answer short of taking a permit: ``cached()``, after reading the state
        of a provider never asked about (no permit taken). None: half-open, a permit to take.
        So a caller asking two breakers learns whether either refuses before taking the
        other's permit (``client._breaker_queries``)."""
        verdict = self.cached(provider)
        if verdict is None and provider not in self._entries:
            self._learn(provider)
            verdict = self.cached(provider)
        return verdict

    def cached(self, provider: str) -> bool | None:
        """``allow()``'s answer when it needs no Redis I/O, else None (a provider never asked
        about, or a half-open one whose trial permit must be taken in Redis)."""
        entry = self._entries.get(provider)
        if entry is None:
            if not self._valid(provider) or len(self._entries) >= self._max_entries:
                # No breaker can exist for it (record() rejects it), or a flood of names: the
                # cache stays bounded and such calls pass without a round trip.
                return True
            return None
        if entry.state == OPEN:
            return False
        if entry.state != HALF_OPEN:
            return True  # closed, or never learned (Redis unreachable): fail open
        return False if self._monotonic() < entry.denied_until else None

    def _take_permit(self, provider: str, entry: _Entry) -> bool:
        now = self._monotonic()
        with self._lock:
            self._permits_taken += 1
            holder = f"{self._holder_prefix}.{self._permits_taken:x}"
        try:
            current, granted = self._store.take_permit(provider, holder)
        except Exception as exc:  # Redis unreachable: no permit can be had
            self._log_redis_error(exc)
            entry.denied_until = now + self._refresh_seconds
            return False
        if current != entry.state:  # its deadline is read at the next refresh
            entry.learn(Stored(current))
        if current == HALF_OPEN:
            if not granted:
                entry.denied_until = now + self._refresh_seconds
            return granted
        return current != OPEN

    def _learn(self, provider: str) -> _Entry:
        try:
            known: Stored | None = self._store.states([provider]).get(provider, Stored(CLOSED))
        except Exception as exc:
            self._log_redis_error(exc)
            known = None
        entry = _Entry(known, self._monotonic())
        with self._lock:
            entry = self._entries.setdefault(provider, entry)
        self._on_schedule()
        return entry

    def hurry(self, providers: Iterable[str], until: float) -> None:
        """Refresh ``providers``' cached states every ``HURRY_SECONDS`` (at most the refresh
        interval) until ``until`` (monotonic): their breakers were just woken
        (``client._wake``). Providers not cached are left alone (``allow()`` learns them)."""
        hurried = False
        for provider in providers:
            entry = self._entries.get(provider)
            if entry is not None:
                entry.hurry_until = max(entry.hurry_until, until)
                hurried = True
        if hurried:
            self._on_schedule()

    @property
    def retry_seconds(self) -> float:
        """How long a refresh Redis did not answer waits to be tried again."""
        return self._refresh_seconds

    def _due_at(self, entry: _Entry, now: float) -> float:
        if now < entry.hurry_until:
            return entry.refreshed_at + min(HURRY_SECONDS, self._refresh_seconds)
        return entry.refreshed_at + self._refresh_seconds

    def seconds_until_refresh(self) -> float:
        """Until the first cached state is due for a refresh (infinity: nothing cached)."""
        if not self._entries:
            return math.inf
        now = self._monotonic()
        first = min(self._due_at(e, now) for e in list(self._entries.values()))
        return first - now

    def refresh_if_due(self) -> bool:
        """Refresh every cached state older than the refresh interval (a hurried one: older than
        ``HURRY_SECONDS``), on the refresher's thread. False when Redis did not answer (the
        last known states keep answering)."""
        now = self._monotonic()
        due = [p for p, e in list(self._entries.items()) if now >= self._due_at(e, now)]
        if not due:
            return True
        try:
            states = self._store.states(due)
        except Exception as exc:  # keep answering from the last known states
            self._log_redis_error(exc)
            return False
        for provider in due:
            entry = self._entries[provider]
            new = states.get(provider, Stored(CLOSED))
            if new.state != entry.state:
                entry.denied_until = 0.0
            if new.state != CLOSED:
                entry.hurry_until = 0.0  # the verdict a wake waited for: back to the interval
            entry.learn(new)
            entry.refreshed_at = now
        self._redis_errors_logged = False
        return True

    def _log_redis_error(self, exc: Exception) -> None:
        if not self._redis_errors_logged:
            self._redis_errors_logged = True
            log.warning(
                "breaker state unavailable, answering from the last known state: %s",
                explained(exc),
            )

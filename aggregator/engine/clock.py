"""The aggregator's "now": the clock the clients' events are on."""

from __future__ import annotations

import time
from collections.abc import Callable

from gatewayz_protocol.clock import SharedClock


class CycleClock:
    """Redis's clock (the shared clock: the system clock corrected by an offset measured with
    ``TIME`` at each cycle's start), or an injected clock taken as it is (tests)."""

    def __init__(
        self,
        redis_time: Callable[[], tuple[int, int]],
        injected: Callable[[], float] | None = None,
        local: Callable[[], float] = time.time,
    ) -> None:
        """``redis_time``: Redis's ``TIME``; ``injected``: a clock to take as it is instead;
        ``local``: this host's clock, the one corrected."""
        self._redis_time = redis_time
        self._injected = injected
        self._shared = SharedClock(local) if injected is None else None

    def measure(self) -> float:
        """The time now, measuring the offset to Redis's clock first (one round trip)."""
        shared = self._shared
        if shared is None:
            return self.now()
        sent_at = shared.local()
        shared.observe(self._redis_time(), sent_at, shared.local())
        return shared.now()

    def now(self) -> float:
        """The time now, by the last offset measured (no I/O)."""
        if self._shared is not None:
            return self._shared.now()
        assert self._injected is not None
        return self._injected()

    @property
    def offset(self) -> float | None:
        """Redis's clock minus this host's (None: an injected clock)."""
        return self._shared.offset if self._shared is not None else None

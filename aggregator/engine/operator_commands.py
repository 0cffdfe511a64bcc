"""The operator's breaker commands against Redis: ``status``, ``open``, ``close``, ``reset``,
run the same way by ``python -m aggregator breaker`` (``cli.breaker``) and by the HTTP API
(``serve.admin``): one implementation, two shells that only turn a ``CommandResult`` into their
own answer.

Read only means read only: the reader is built with ``maintains=False`` (no trimming, no registry
pruning, whatever the command's window and clock). A change is a compare-and-set on the state
epoch read (the transition script: it deletes the half-open permits and counts the transition),
retried a few times while the state keeps changing under it, and registers the provider so the
forced state is exported. Redis errors are raised to the shell.

Every command's work is bounded whatever the registry holds (a week of clients whose provider
names churn can leave 100,000 names in it, which read in full took 16 s a request): ``status``
reads at most ``max_providers`` breakers, the most recently seen (the cap the cycles read),
and says how many the registry holds; a named provider is looked up by name (``ZSCORE``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aggregator.core.operator_actions import (
    CommandResult,
    changes_nothing,
    done_row,
    forced_state,
    status_row,
    transition_counted,
    unchanged_row,
)
from aggregator.engine.clock import CycleClock
from aggregator.engine.reader import WindowReader
from aggregator.engine.writer import PlannedWrite, StateWriter
from aggregator.settings import AggregatorSettings
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import Connection

ATTEMPTS = 5
"""Compare-and-set attempts of a change before it answers ``conflict``."""


@dataclass(frozen=True)
class StatusResult(CommandResult):
    """A status's result; for every breaker's, also how many names the registry holds and
    whether more than the rows shown (``truncated``: the cap of names read was reached)."""

    registered: int = 0
    truncated: bool = False


class BreakerCommands:
    """The commands on one connection, in one namespace, on the clock the breakers are on:
    Redis's (the HTTP API: the aggregator's own measure of it; the CLI, ``clock`` None: measured
    with ``TIME`` before each read), or an injected one (tests). ``where`` names the namespace
    (and, for the CLI, the Redis) in the messages of what was not found."""

    def __init__(
        self,
        connection: Connection,
        settings: AggregatorSettings,
        clock: Callable[[], float] | None,
        where: str,
    ) -> None:
        keys = Keys(settings.namespace)
        self.namespace = settings.namespace
        self._cap = settings.max_providers
        self._where = where
        self._window = settings.window_seconds
        self._reader = WindowReader(connection, keys, settings.window_seconds, maintains=False)
        self._clock = clock or CycleClock(self._reader.redis_time).measure
        self._writer = StateWriter(
            connection,
            keys,
            settings.retention_seconds,
            settings.breaker.half_open_calls,
            settings.permit_seconds,
        )

    def status(self, provider: str | None = None) -> StatusResult:
        """Every registered breaker (at most ``max_providers``: the most recently seen), sorted
        by name, or ``provider``'s; ``no_data`` for an empty registry, or a provider neither
        registered nor holding any key."""
        now = self._clock()
        newest = self._cap if provider is None else 0
        names = [] if provider is None else [provider]
        registered, count = self._reader.registered(newest, names)
        if provider is None and not registered:
            return StatusResult(
                "no_data", message=f"no data in {self._where}: no provider registered"
            )
        if provider is not None and provider not in registered:
            (found,) = self._reader.inspect(now, [provider], [now - self._window, now])
            if not found.exists:
                return StatusResult(
                    "no_data", message=f"no data for provider {provider!r} in {self._where}"
                )
        reading = self._reader.read(now, names or sorted(registered))
        rows = tuple(
            status_row(item.provider, item.breaker, item.transitions) for item in reading.providers
        )
        truncated = provider is None and count > self._cap
        return StatusResult("done", rows, registered=count, truncated=truncated)

    def force(self, action: str, provider: str, create: bool) -> CommandResult:
        """Set the state ``action`` asks for (``open``, ``close``, ``reset``). ``create`` False
        refuses a provider that is not registered (no traffic seen: a typo must not make a
        breaker)."""
        if not create and not self._reader.registered(0, [provider])[0]:
            return CommandResult(
                "not_registered",
                message=f"provider {provider!r} is not registered in namespace"
                f" {self.namespace!r} (no traffic seen)",
            )
        for _ in range(ATTEMPTS):
            now = self._clock()
            (current,) = self._reader.read(now, [provider]).providers
            old = current.breaker
            if changes_nothing(action, old):
                return CommandResult("unchanged", (unchanged_row(provider, action),))
            new = forced_state(action, old, now)
            write = PlannedWrite(provider, old.epoch, new, transition_counted(old, new))
            # Registered too (an operator forcing a state wants it exported, traffic or not);
            # the registry write may wait while Redis is out of memory, the breaker's may not.
            commit = self._writer.begin(fence=None).transitions([write])
            (result,) = commit.keep_registered([provider], now).send().results
            if result == 1:
                return CommandResult("done", (done_row(provider, action, new),))
        return CommandResult("conflict", message=f"{provider}: state kept changing, try again")

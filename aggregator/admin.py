"""Operator commands: ``python -m aggregator breaker status|open|close|reset [PROVIDER]``.

A forced state (open, close) is exported as such (``gatewayz_circuit_breaker_forced``) and never
changed automatically until ``reset``, which returns the breaker to closed, counting only calls
made after the reset. Commands go straight to Redis (compare-and-set on the state epoch), never
over HTTP.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict

import redis

from aggregator.reader import WindowReader
from aggregator.settings import AggregatorSettings, parse_settings
from aggregator.writer import PlannedWrite, StateWriter
from protocol.breaker_state import CLOSED, OPEN, BreakerState
from protocol.connection import connect
from protocol.keys import Keys
from protocol.names import is_valid_provider

ACTIONS = ("status", "open", "close", "reset")
_ATTEMPTS = 5


def forced_state(action: str, current: BreakerState, now: float) -> BreakerState:
    """The state an operator action sets, from the current one."""
    epoch = current.epoch + 1
    if action == "open":
        return BreakerState(OPEN, now, epoch, 0.0, current.consecutive_opens, forced=True)
    if action == "close":
        return BreakerState(CLOSED, now, epoch, 0.0, 0, forced=True)
    if action == "reset":
        return BreakerState(CLOSED, now, epoch, 0.0, 0, forced=False)
    raise ValueError(f"unknown action {action!r}")


def _status(reader: WindowReader, names: list[str], now: float) -> list[dict[str, object]]:
    reading = reader.read(now, names)
    return [
        {"provider": item.provider, **asdict(item.breaker), "transitions": item.transitions}
        for item in reading.providers
    ]


def run(
    action: str,
    provider: str | None,
    settings: AggregatorSettings,
    clock: Callable[[], float] = time.time,
) -> int:
    connection = connect(settings.redis_url, socket_timeout=5.0)
    keys = Keys(settings.namespace)
    reader = WindowReader(connection, keys, settings.window_seconds)
    writer = StateWriter(
        connection,
        keys,
        settings.retention_seconds,
        settings.breaker.half_open_calls,
        settings.permit_seconds,
    )
    try:
        if action == "status":
            now = clock()
            names = [provider] if provider else reader.known_providers(now, 1e12)
            for row in _status(reader, sorted(names), now):
                print(json.dumps(row))
            return 0
        assert provider is not None
        for _ in range(_ATTEMPTS):
            now = clock()
            (current,) = reader.read(now, [provider]).providers
            new = forced_state(action, current.breaker, now)
            write = PlannedWrite(
                provider, current.breaker.epoch, new, f"{current.breaker.state}>{new.state}"
            )
            # Registered too (an operator forcing a state wants it exported, traffic or not);
            # the registry write may wait while Redis is out of memory, the breaker's may not.
            committed = writer.commit(
                [write], Counter(), fence=None, keep_registered=[provider], now=now
            )
            (result,) = committed.results
            if result == 1:
                print(json.dumps({"provider": provider, "action": action, **asdict(new)}))
                return 0
        sys.stderr.write(f"aggregator: error: {provider}: state kept changing, try again\n")
        return 1
    except (redis.RedisError, OSError) as exc:
        sys.stderr.write(f"aggregator: error: redis: {type(exc).__name__}: {exc}\n")
        return 1
    finally:
        connection.close()


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="aggregator breaker", description=__doc__)
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("provider", nargs="?")
    args, rest = parser.parse_known_args(argv)
    if args.action != "status" and not args.provider:
        parser.exit(2, f"aggregator breaker: error: {args.action} needs a PROVIDER\n")
    if args.provider is not None and not is_valid_provider(args.provider):
        parser.exit(2, f"aggregator breaker: error: invalid provider name {args.provider!r}\n")
    return run(args.action, args.provider, parse_settings(rest))

"""Operator commands: ``python -m aggregator breaker status|open|close|reset [PROVIDER]``.

A forced state (open, close) is exported as such (``gatewayz_circuit_breaker_forced``) and never
changed automatically until ``reset``, which returns the breaker to closed, counting only calls
made after the reset. Commands go straight to Redis (compare-and-set on the state epoch), never
over HTTP.

Exit codes: 0 done (a reset of a breaker already closed and automatic writes nothing); 1 no
data (``status`` on an empty namespace or an unknown provider), a provider not registered
without ``--create``, the state kept changing, or Redis unreachable; 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict

import redis

from aggregator.engine.reader import WindowReader
from aggregator.engine.writer import PlannedWrite, StateWriter
from aggregator.options import (
    CONNECTION_FLAGS,
    add_options,
    make_parser,
    parse_settings,
    settings_from_args,
)
from aggregator.settings import AggregatorSettings, describe_error, redact
from gatewayz_protocol.breaker_state import CLOSED, OPEN, BreakerState
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.names import is_valid_provider
from gatewayz_transport.connection import connect

DESCRIPTION = """Shows or forces circuit breakers, straight in Redis (never over HTTP).

status [PROVIDER]  every breaker (or one) as JSON lines; reads only
open PROVIDER      force it open: no call goes through until reset
close PROVIDER     force it closed: every call goes through until reset
reset PROVIDER     back to closed and automatic, judging only calls made after the reset

A forced state is exported as gatewayz_circuit_breaker_forced and never changed automatically.
open/close/reset refuse a provider with no traffic seen unless --create (a typo must not make a
breaker).

Exit codes: 0 done; 1 no data, not registered without --create, the state kept changing, or
Redis unreachable; 2 bad usage."""

ACTIONS = ("status", "open", "close", "reset")
FLAGS = (*CONNECTION_FLAGS, "--window", "--breaker-half-open-calls", "--breaker-permit-seconds")
__all__ = ["ACTIONS", "configure", "forced_state", "main", "parse_settings", "run", "run_args"]
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
    create: bool = True,
) -> int:
    """Run ``action``. ``create`` False refuses to force the state of a provider that is not
    registered (the CLI's default: a typo must not create a breaker); callers of this function
    force on purpose, hence its default."""
    connection = connect(settings.redis_url, socket_timeout=5.0)
    keys = Keys(settings.namespace)
    reader = WindowReader(connection, keys, settings.window_seconds, maintains=False)
    writer = StateWriter(
        connection,
        keys,
        settings.retention_seconds,
        settings.breaker.half_open_calls,
        settings.permit_seconds,
    )
    try:
        if action == "status":
            return _show_status(reader, settings, provider, clock())
        assert provider is not None
        if not create and provider not in reader.registered():
            sys.stderr.write(
                f"aggregator breaker: error: provider {provider!r} is not registered in namespace"
                f" {settings.namespace!r} (no traffic seen); pass --create to {action} it anyway\n"
            )
            return 1
        return _force(reader, writer, action, provider, clock)
    except (redis.RedisError, OSError) as exc:
        sys.stderr.write(f"aggregator: error: redis: {describe_error(exc)}\n")
        return 1
    finally:
        connection.close()


def _show_status(
    reader: WindowReader, settings: AggregatorSettings, provider: str | None, now: float
) -> int:
    registered = reader.registered()
    names = [provider] if provider else list(registered)
    missing = _no_data(reader, settings, provider, registered, now)
    if missing:
        sys.stderr.write(f"aggregator breaker: {missing}\n")
        return 1
    for row in _status(reader, sorted(names), now):
        print(json.dumps(row))
    return 0


def _force(
    reader: WindowReader,
    writer: StateWriter,
    action: str,
    provider: str,
    clock: Callable[[], float],
) -> int:
    """Set the state ``action`` asks for, compare-and-set on the epoch read (retried a few
    times while the state keeps changing under it)."""
    for _ in range(_ATTEMPTS):
        now = clock()
        (current,) = reader.read(now, [provider]).providers
        old = current.breaker
        if action == "reset" and old.state == CLOSED and not old.forced:
            message = "already closed and automatic: nothing to reset"
            unchanged = {"provider": provider, "action": action, "changed": False}
            print(json.dumps({**unchanged, "message": message}))
            return 0
        new = forced_state(action, old, now)
        # forced closed -> closed changes who decides, not the state: no transition counted
        counter = "" if old.state == new.state == CLOSED else f"{old.state}>{new.state}"
        write = PlannedWrite(provider, old.epoch, new, counter)
        # Registered too (an operator forcing a state wants it exported, traffic or not);
        # the registry write may wait while Redis is out of memory, the breaker's may not.
        commit = writer.begin(fence=None).transitions([write])
        (result,) = commit.keep_registered([provider], now).send().results
        if result == 1:
            print(json.dumps({"provider": provider, "action": action, **asdict(new)}))
            return 0
    sys.stderr.write(f"aggregator: error: {provider}: state kept changing, try again\n")
    return 1


def _no_data(
    reader: WindowReader,
    settings: AggregatorSettings,
    provider: str | None,
    registered: Mapping[str, float],
    now: float,
) -> str | None:
    """Why ``status`` has nothing to show, if so: an empty registry, or a provider that is not
    registered and has no key."""
    where = f"namespace {settings.namespace!r} on {redact(settings.redis_url)}"
    if provider is None:
        return None if registered else f"no data in {where}: no provider registered"
    if provider in registered:
        return None
    (found,) = reader.inspect(now, [provider], [now - settings.window_seconds, now])
    return None if found.exists else f"no data for provider {provider!r} in {where}"


def configure(parser: argparse.ArgumentParser) -> None:
    """The ``breaker`` arguments: ACTION, PROVIDER, --create and the connection flags."""
    parser.add_argument("action", choices=ACTIONS, help="status (JSON lines), open, close, reset")
    parser.add_argument("provider", nargs="?", help="required but for status (default: all)")
    parser.add_argument(
        "--create",
        action="store_true",
        help="open/close/reset a provider that is not registered (no traffic seen) anyway",
    )
    add_options(parser, FLAGS)


def run_args(
    args: argparse.Namespace, parser: argparse.ArgumentParser, env: Mapping[str, str] | None = None
) -> int:
    """Run ``breaker`` with parsed arguments (``configure``'s)."""
    if args.action != "status" and not args.provider:
        parser.error(f"{args.action} needs a PROVIDER")
    if args.provider is not None and not is_valid_provider(args.provider):
        parser.error(f"invalid provider name {args.provider!r}")
    settings = settings_from_args(args, parser, env)
    return run(args.action, args.provider, settings, create=args.create)


def main(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """``python -m aggregator breaker ...`` without the entry point's parser."""
    parser = make_parser("aggregator breaker", __doc__)
    configure(parser)
    return run_args(parser.parse_args(argv), parser, env)

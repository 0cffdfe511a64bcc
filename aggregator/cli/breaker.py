"""Operator commands: ``python -m aggregator breaker status|open|close|reset [PROVIDER]``.

A forced state (open, close) is exported as such (``gatewayz_circuit_breaker_forced``) and never
changed automatically until ``reset``, which returns the breaker to closed, counting only calls
made after the reset. Commands go straight to Redis (compare-and-set on the state epoch); the
aggregator's HTTP API offers the same ones under ``/admin/breakers`` (operator token), both shells
over one implementation (``engine.operator_commands``).

Exit codes: 0 done (a reset of a breaker already closed and automatic writes nothing); 1 no
data (``status`` on an empty namespace or an unknown provider), a provider not registered
without ``--create``, the state kept changing, or Redis unreachable; 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence

import redis

from aggregator.core.operator_actions import ACTIONS as CHANGES
from aggregator.core.operator_actions import CommandResult, command_error, forced_state
from aggregator.engine.operator_commands import BreakerCommands, StatusResult
from aggregator.options import (
    CONNECTION_FLAGS,
    add_options,
    make_parser,
    parse_settings,
    settings_from_args,
)
from aggregator.settings import AggregatorSettings, describe_error, redact
from gatewayz_transport.connection import connect

DESCRIPTION = """Shows or forces circuit breakers, straight in Redis (a serving aggregator
offers the same commands over HTTP: /admin/breakers, with its operator token).

status [PROVIDER]  every breaker (or one) as JSON lines; reads only
open PROVIDER      force it open: no call goes through until reset
close PROVIDER     force it closed: every call goes through until reset
reset PROVIDER     back to closed and automatic, judging only calls made after the reset

A forced state is exported as gatewayz_circuit_breaker_forced and never changed automatically.
open/close/reset refuse a provider with no traffic seen unless --create (a typo must not make a
breaker).

Exit codes: 0 done; 1 no data, not registered without --create, the state kept changing, or
Redis unreachable; 2 bad usage."""

ACTIONS = ("status", *CHANGES)
FLAGS = (*CONNECTION_FLAGS, "--window", "--breaker-half-open-calls", "--breaker-permit-seconds")
__all__ = ["ACTIONS", "configure", "forced_state", "main", "parse_settings", "run", "run_args"]


def run(
    action: str,
    provider: str | None,
    settings: AggregatorSettings,
    clock: Callable[[], float] | None = None,
    create: bool = True,
) -> int:
    """Run ``action``. ``create`` False refuses to force the state of a provider that is not
    registered (the CLI's default: a typo must not create a breaker); callers of this function
    force on purpose, hence its default. ``clock`` None: Redis's (``TIME``), which the breakers'
    deadlines are on, whatever this host's clock says."""
    connection = connect(settings.redis_url, socket_timeout=5.0)
    where = f"namespace {settings.namespace!r} on {redact(settings.redis_url)}"
    commands = BreakerCommands(connection, settings, clock, where)
    result: CommandResult
    try:
        if action == "status":
            result = commands.status(provider)
        else:
            assert provider is not None
            result = commands.force(action, provider, create)
    except (redis.RedisError, OSError) as exc:
        sys.stderr.write(f"aggregator: error: redis: {describe_error(exc)}\n")
        return 1
    finally:
        connection.close()
    return _shown(result, action)


def _shown(result: CommandResult, action: str) -> int:
    """The CLI's shell: each row a JSON line on stdout (exit 0), or why not on stderr (1)."""
    if result.kind in ("done", "unchanged"):
        for row in result.rows:
            print(json.dumps(row))
        if isinstance(result, StatusResult) and result.truncated:
            sys.stderr.write(
                f"aggregator breaker: {len(result.rows)} of {result.registered} registered"
                " providers shown, the most recently seen (GATEWAYZ_MAX_PROVIDERS); name one"
                " to see it: breaker status PROVIDER\n"
            )
        return 0
    if result.kind == "no_data":
        sys.stderr.write(f"aggregator breaker: {result.message}\n")
    elif result.kind == "not_registered":
        sys.stderr.write(
            f"aggregator breaker: error: {result.message}; pass --create to {action} it anyway\n"
        )
    else:
        sys.stderr.write(f"aggregator: error: {result.message}\n")
    return 1


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
    error = command_error(args.action, args.provider)
    if error is not None:
        parser.error(error)
    settings = settings_from_args(args, parser, env)
    return run(args.action, args.provider, settings, create=args.create)


def main(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """``python -m aggregator breaker ...`` without the entry point's parser."""
    parser = make_parser("aggregator breaker", __doc__)
    configure(parser)
    return run_args(parser.parse_args(argv), parser, env)

"""The aggregator's options: the parsers of every command, built from its option table
(``aggregator/option_table.py``: a flag and an environment variable per value), and
``AggregatorSettings`` made from flags, then the environment, then the defaults."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, NoReturn

from aggregator.core.breaker import BreakerConfig
from aggregator.option_table import AGGREGATOR_OPTIONS
from aggregator.settings import AggregatorSettings, read_token_file, read_url_file
from gatewayz_protocol.options import Option, blamed, lookup, parse_as


class _OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


_BREAKER_FIELDS = {f for f in BreakerConfig.__dataclass_fields__}

_FILES = {
    "auth_token_file": "auth_token",
    "operator_token_file": "operator_token",
    "redis_url_file": "redis_url",
}
"""Options naming a file whose content is the value of another (secrets out of ps)."""
_FILE_READERS: dict[str, Callable[[str], str]] = {
    "auth_token_file": read_token_file,
    "operator_token_file": lambda path: read_token_file(path, "operator token"),
    "redis_url_file": read_url_file,
}

CONNECTION_FLAGS: tuple[str, ...] = ("--redis-url", "--redis-url-file", "--namespace")
"""The flags every command shares (env GATEWAYZ_REDIS_URL, GATEWAYZ_NAMESPACE): which Redis,
which keys."""


def make_parser(prog: str, description: str | None = None) -> argparse.ArgumentParser:
    """An argument parser whose errors are one line (exit 2), as ``parse_settings``'s."""
    return _OneLineErrorParser(prog=prog, description=description)


def add_options(parser: argparse.ArgumentParser, flags: Collection[str] | None = None) -> None:
    """Add the settings' flags to ``parser`` (a subcommand's parser too): all of them, or only
    those named in ``flags`` (e.g. ``CONNECTION_FLAGS``). ``settings_from_args`` reads them."""
    for option in AGGREGATOR_OPTIONS:
        if option.flag is not None and (flags is None or option.flag in flags):
            bounds = f"; {option.bounds.text()}" if option.bounds else ""
            shown = f"{option.help} (env {option.env}; default: {option.shown_default()}{bounds})"
            parser.add_argument(option.flag, dest=option.name, help=shown)
    if flags is None:
        parser.add_argument(
            "--otel-console", action="store_true", help="print OpenTelemetry spans to stdout"
        )


def settings_from_args(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    env: Mapping[str, str] | None = None,
) -> AggregatorSettings:
    """Settings from parsed flags (those ``add_options`` added; a flag the parser lacks counts as
    not given), then env variables, then defaults. A bad value: ``parser.error`` (exit 2)."""
    env = os.environ if env is None else env
    given: dict[str, tuple[str, Any]] = {}  # source -> (settings field or breaker.<field>, value)
    for option in AGGREGATOR_OPTIONS:
        try:
            found = _given(option, args, env)
        except ValueError as exc:
            parser.error(str(exc))
        if found is None:
            continue
        source, value = found
        if option.name in _FILES:
            try:
                given[source] = (_FILES[option.name], _FILE_READERS[option.name](value))
            except ValueError as exc:
                parser.error(f"{source}: {exc}")
            continue
        field = option.name.removeprefix("breaker_")
        if field != option.name and field in _BREAKER_FIELDS:
            given[source] = (f"breaker.{field}", value)
        else:
            given[source] = (option.name, value)
    otel_console = bool(getattr(args, "otel_console", False))
    try:
        return _settings(given.values(), otel_console)
    except ValueError as exc:
        parser.error(blamed(exc, given, lambda one: _settings([one], otel_console)))


def _settings(given: Iterable[tuple[str, Any]], otel_console: bool) -> AggregatorSettings:
    values: dict[str, Any] = {"otel_console": otel_console}
    breaker: dict[str, Any] = {}
    for name, value in given:
        if name.startswith("breaker."):
            breaker[name.removeprefix("breaker.")] = value
        else:
            values[name] = value
    return AggregatorSettings(breaker=BreakerConfig(**breaker), **values)


def _given(
    option: Option[Any], args: argparse.Namespace, env: Mapping[str, str]
) -> tuple[str, Any] | None:
    """Where ``option``'s value comes from (its flag, else its variable, else an old name of
    it) and the value, parsed; None when none gives one. ValueError naming the source."""
    raw = getattr(args, option.name, None)
    if raw is not None:  # given on the command line ("": the default)
        source = option.flag or option.name
        return (source, parse_as(option, source, raw)) if raw != "" else None
    found = lookup(option, env)
    if found is None:
        return None
    return found[0], parse_as(option, *found)


def parse_settings(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> AggregatorSettings:
    """Settings from flags, then env variables, then defaults. Exits with code 2 and a one-line
    error on a bad value."""
    parser = make_parser("aggregator", "gatewayz metrics aggregator")
    add_options(parser)
    return settings_from_args(parser.parse_args(argv), parser, env)

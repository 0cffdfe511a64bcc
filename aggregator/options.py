"""The aggregator's options: one table of flags and environment variables (``_OPTIONS``), the
parsers of every command built from it, and ``AggregatorSettings`` made from flags, then
environment, then defaults."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import fields
from typing import Any, NoReturn

from aggregator.core.breaker import BreakerConfig
from aggregator.settings import AggregatorSettings, read_token_file, read_url_file


class _OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _numbers(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(",") if part.strip())


# (flag, env variable, settings field, type, help)
_OPTIONS: tuple[tuple[str, str, str, Callable[[str], Any], str], ...] = (
    ("--redis-url", "REDIS_URL", "redis_url", str, "Redis URL"),
    (
        "--redis-url-file",
        "REDIS_URL_FILE",
        "redis_url_file",
        str,
        "file holding the Redis URL, which wins over --redis-url (a password in it stays out of "
        "ps and of the environment)",
    ),
    ("--namespace", "METRICS_NAMESPACE", "namespace", str, "key prefix"),
    ("--host", "AGGREGATOR_HOST", "host", str, "HTTP bind address"),
    ("--port", "AGGREGATOR_PORT", "port", int, "HTTP port"),
    ("--interval", "AGGREGATION_INTERVAL_SECONDS", "interval_seconds", float, "cycle seconds"),
    (
        "--breaker-interval",
        "BREAKER_INTERVAL_SECONDS",
        "breaker_interval_seconds",
        float,
        "seconds between breaker evaluations",
    ),
    ("--instance", "AGGREGATOR_INSTANCE", "instance", str, "replica name (host:port:pid)"),
    ("--window", "WINDOW_SECONDS", "window_seconds", float, "sliding window seconds"),
    (
        "--export-horizon",
        "EXPORT_HORIZON_SECONDS",
        "export_horizon_seconds",
        float,
        "seconds without an event after which a provider leaves /metrics",
    ),
    ("--providers", "PROVIDERS", "providers", str, "comma-separated providers to always export"),
    (
        "--max-providers",
        "METRICS_MAX_PROVIDERS",
        "max_providers",
        int,
        "providers read and exported at most, the most recently seen (the clients' cap)",
    ),
    ("--breaker-min-calls", "BREAKER_MIN_CALLS", "breaker_min_calls", int, "calls before opening"),
    ("--breaker-failure-rate", "BREAKER_FAILURE_RATE", "breaker_failure_rate", float, "0..1"),
    (
        "--breaker-open-seconds",
        "BREAKER_OPEN_SECONDS",
        "breaker_open_seconds",
        float,
        "first open time",
    ),
    (
        "--breaker-max-open-seconds",
        "BREAKER_MAX_OPEN_SECONDS",
        "breaker_max_open_seconds",
        float,
        "cap",
    ),
    (
        "--breaker-window",
        "BREAKER_WINDOW_SECONDS",
        "breaker_window_seconds",
        float,
        "seconds of calls a closed breaker judges",
    ),
    (
        "--breaker-half-open-calls",
        "BREAKER_HALF_OPEN_CALLS",
        "breaker_half_open_calls",
        int,
        "trials",
    ),
    (
        "--breaker-half-open-timeout",
        "BREAKER_HALF_OPEN_TIMEOUT_SECONDS",
        "breaker_half_open_timeout_seconds",
        float,
        "back to open without enough trials",
    ),
    (
        "--breaker-permit-seconds",
        "BREAKER_PERMIT_SECONDS",
        "permit_seconds",
        float,
        "a trial permit's lifetime",
    ),
    (
        "--breaker-max-open-share",
        "BREAKER_MAX_OPEN_SHARE",
        "breaker_max_open_share",
        float,
        "largest share of providers held open at once, 0..1",
    ),
    ("--latency-target", "LATENCY_TARGET_SECONDS", "latency_target_seconds", float, "p95 ok"),
    ("--latency-ceiling", "LATENCY_CEILING_SECONDS", "latency_ceiling_seconds", float, "p95 bad"),
    (
        "--extra-latency-buckets",
        "AGGREGATOR_EXTRA_LATENCY_BUCKETS",
        "extra_latency_buckets",
        _numbers,
        "comma-separated bounds (seconds) added to provider_response_time_seconds's, among 15, 30, "
        "60 (its buckets stop at 10 s, the seed's)",
    ),
    ("--loki-url", "LOKI_URL", "loki_url", str, "Loki push URL (logs also go to stderr)"),
    ("--log-level", "LOG_LEVEL", "log_level", str, "DEBUG, INFO, WARNING, ERROR"),
    (
        "--otlp-endpoint",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "otlp_endpoint",
        str,
        "OTLP/HTTP base URL for the cycle spans (http://tempo:4318)",
    ),
    (
        "--max-header-bytes",
        "AGGREGATOR_MAX_HEADER_BYTES",
        "max_header_bytes",
        int,
        "largest request line plus headers; beyond: 431",
    ),
    (
        "--header-timeout",
        "AGGREGATOR_HEADER_TIMEOUT_SECONDS",
        "header_timeout_seconds",
        float,
        "seconds a request has to arrive in full from its first byte (or the connection's opening)",
    ),
    (
        "--keepalive-timeout",
        "AGGREGATOR_KEEPALIVE_TIMEOUT_SECONDS",
        "keepalive_timeout_seconds",
        float,
        "seconds an idle connection is kept between requests",
    ),
    (
        "--send-timeout",
        "AGGREGATOR_SEND_TIMEOUT_SECONDS",
        "send_timeout_seconds",
        float,
        "seconds a client may read nothing of a pending response before it is cut",
    ),
    (
        "--max-connections",
        "AGGREGATOR_MAX_CONNECTIONS",
        "max_connections",
        int,
        "open HTTP connections; beyond, the longest idle one is closed (503 if none is idle)",
    ),
    (
        "--allowed-hosts",
        "AGGREGATOR_ALLOWED_HOSTS",
        "allowed_hosts",
        str,
        "comma-separated Host header values served (*.example.com patterns, * for any; default: "
        "the loopback names when --host is one, else any)",
    ),
    (
        "--auth-token-file",
        "AGGREGATOR_AUTH_TOKEN_FILE",
        "auth_token_file",
        str,
        "file holding the bearer token /metrics and /health/dashboard require (default: open)",
    ),
    (
        "--operator-token-file",
        "AGGREGATOR_OPERATOR_TOKEN_FILE",
        "operator_token_file",
        str,
        "file holding the bearer token of the operator role, which the breaker commands over "
        "HTTP require (POST /admin/breakers/...; without it they answer 403)",
    ),
)
_BREAKER_FIELDS = {f for f in BreakerConfig.__dataclass_fields__}
_SETTINGS_DEFAULTS = {f.name: f.default for f in fields(AggregatorSettings)}
_SPECIAL_DEFAULTS = {
    "instance": "host:port:pid",
    "allowed_hosts": "the loopback names when --host is one, else any",
    "auth_token_file": "none: open",
    "operator_token_file": "none: no breaker command over HTTP",
}


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
"""The flags every command shares (env REDIS_URL, METRICS_NAMESPACE): which Redis, which keys."""


def make_parser(prog: str, description: str | None = None) -> argparse.ArgumentParser:
    """An argument parser whose errors are one line (exit 2), as ``parse_settings``'s."""
    return _OneLineErrorParser(prog=prog, description=description)


def add_options(parser: argparse.ArgumentParser, flags: Collection[str] | None = None) -> None:
    """Add the settings' flags to ``parser`` (a subcommand's parser too): all of them, or only
    those named in ``flags`` (e.g. ``CONNECTION_FLAGS``). ``settings_from_args`` reads them."""
    for flag, variable, dest, _, help_text in _OPTIONS:
        if flags is None or flag in flags:
            shown = f"{help_text} (env {variable}; default: {default_of(dest)})"
            parser.add_argument(flag, dest=dest, help=shown)
    if flags is None:
        parser.add_argument(
            "--otel-console", action="store_true", help="print OpenTelemetry spans to stdout"
        )


def default_of(dest: str) -> str:
    """What an option is when neither its flag nor its variable is given, for ``--help``."""
    field = dest.removeprefix("breaker_")
    if field != dest and field in _BREAKER_FIELDS:
        value: Any = getattr(BreakerConfig(), field)
    elif dest in _SPECIAL_DEFAULTS:
        return _SPECIAL_DEFAULTS[dest]
    else:
        value = _SETTINGS_DEFAULTS.get(dest)
    if value in (None, (), ""):
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def settings_from_args(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    env: Mapping[str, str] | None = None,
) -> AggregatorSettings:
    """Settings from parsed flags (those ``add_options`` added; a flag the parser lacks counts as
    not given), then env variables, then defaults. A bad value: ``parser.error`` (exit 2)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    breaker: dict[str, Any] = {}
    for flag, variable, dest, convert, _ in _OPTIONS:
        raw = getattr(args, dest, None)
        source = flag
        if raw is None:
            raw, source = env.get(variable), variable
        if raw is None or raw == "":
            continue
        try:
            value = convert(raw)
        except ValueError:
            parser.error(f"{source}: invalid value {raw!r}")
        if dest in ("providers", "allowed_hosts"):
            value = tuple(p.strip() for p in value.split(",") if p.strip())
        if dest in _FILES:
            try:
                values[_FILES[dest]] = _FILE_READERS[dest](value)
            except ValueError as exc:
                parser.error(f"{source}: {exc}")
            continue
        field = dest.removeprefix("breaker_")
        if field != dest and field in _BREAKER_FIELDS:
            breaker[field] = value
        else:
            values[dest] = value
    values["otel_console"] = bool(getattr(args, "otel_console", False))
    try:
        return AggregatorSettings(breaker=BreakerConfig(**breaker), **values)
    except ValueError as exc:
        parser.error(str(exc))


def parse_settings(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> AggregatorSettings:
    """Settings from flags, then env variables, then defaults. Exits with code 2 and a one-line
    error on a bad value."""
    parser = make_parser("aggregator", "gatewayz metrics aggregator")
    add_options(parser)
    return settings_from_args(parser.parse_args(argv), parser, env)

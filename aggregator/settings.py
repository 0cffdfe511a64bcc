"""Aggregator settings: one frozen object built from CLI flags, falling back to env variables."""

from __future__ import annotations

import argparse
import math
import os
import re
import socket
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from aggregator.core.breaker import BreakerConfig
from gatewayz_protocol.keys import DEFAULT_EXPORT_HORIZON_SECONDS, DEFAULT_NAMESPACE
from gatewayz_protocol.names import check_namespace, is_valid_provider
from gatewayz_transport.urls import DEFAULT_REDIS_URL, check_url

# scheme://user:password@ -> scheme://***@ (greedy to the last "@" before the path), and a
# password=... query parameter: neither may reach a log line, an error or /metrics.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^/\s]*@", re.IGNORECASE)
_PASSWORD_PARAM = re.compile(r"(?P<name>\bpassword=)[^&\s]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the credentials of any URL in it (``user:password@``, ``password=``)
    replaced by ``***``. Applied to every error message the aggregator logs or serves."""
    return _PASSWORD_PARAM.sub(r"\g<name>***", _URL_USERINFO.sub(r"\g<scheme>***@", text))


def describe_error(exc: BaseException) -> str:
    """An error message fit for a log line or /readyz: its type and text, credentials redacted
    (redis-py never puts the URL's password in one; this makes sure)."""
    return redact(f"{type(exc).__name__}: {exc}")


def read_token_file(path: str) -> str:
    """The bearer token in ``path``: its content without surrounding whitespace (as
    Prometheus's ``credentials_file`` sends it). Raises ValueError (never quoting the
    content) when the file is missing, unreadable, empty or not a single visible-ASCII word."""
    try:
        with open(path, encoding="utf-8") as file:
            token = file.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ValueError(f"cannot read auth token file {path!r}: {reason}") from None
    if not token:
        raise ValueError(f"auth token file {path!r} is empty")
    if not _is_token(token):
        raise ValueError(
            f"auth token in {path!r} must be one word of visible ASCII characters (no spaces)"
        )
    return token


def _is_token(token: str) -> bool:
    return bool(token) and all("!" <= c <= "~" for c in token)


@dataclass(frozen=True)
class AggregatorSettings:
    """Everything ``python -m aggregator`` is configured with. ``auth_token`` (None: open)
    is the bearer token /metrics and /health/dashboard require; neither it nor ``redis_url``
    (which may carry a password) is part of the repr."""

    redis_url: str = field(default=DEFAULT_REDIS_URL, repr=False)
    namespace: str = DEFAULT_NAMESPACE
    host: str = "127.0.0.1"
    port: int = 9108
    interval_seconds: float = 30.0
    breaker_interval_seconds: float = 5.0
    instance: str = ""
    window_seconds: float = 300.0
    providers: tuple[str, ...] = ()
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    latency_target_seconds: float = 2.0
    latency_ceiling_seconds: float = 10.0
    retention_seconds: float = 7 * 24 * 3600.0
    export_horizon_seconds: float = DEFAULT_EXPORT_HORIZON_SECONDS
    """A provider without an event for this long leaves /metrics (and the cycle's reads) until
    its next event; its counters stay in Redis for the retention period."""
    readiness_max_age_intervals: float = 3.0
    loki_url: str | None = None
    log_level: str = "INFO"
    otel_console: bool = False
    # OTLP/HTTP base URL (http://tempo:4318): the cycle spans are exported there (telemetry).
    otlp_endpoint: str | None = None
    permit_seconds: float = 30.0
    auth_token: str | None = field(default=None, repr=False)
    # HTTP connection bounds (aggregator/serve/http_server.py): what a client that is slow,
    # broken or hostile may hold before any route or token is looked at.
    max_header_bytes: int = 8192
    header_timeout_seconds: float = 10.0
    keepalive_timeout_seconds: float = 5.0
    send_timeout_seconds: float = 10.0
    max_connections: int = 100

    def __post_init__(self) -> None:
        try:
            check_url(self.redis_url)  # parses only: no connection yet
        except ValueError as exc:
            raise ValueError(f"invalid Redis URL: {redact(str(exc))}") from None
        if self.auth_token is not None and not _is_token(self.auth_token):
            raise ValueError("auth token must be one word of visible ASCII characters")
        if not self.instance:
            object.__setattr__(
                self, "instance", f"{socket.gethostname()}:{self.port}:{os.getpid()}"
            )
        if "|" in self.instance:
            raise ValueError("instance must not contain '|'")
        check_namespace(self.namespace)
        numbers = {
            "interval": self.interval_seconds,
            "breaker interval": self.breaker_interval_seconds,
            "window": self.window_seconds,
            "export horizon": self.export_horizon_seconds,
            "latency target": self.latency_target_seconds,
            "latency ceiling": self.latency_ceiling_seconds,
            "breaker open seconds": self.breaker.open_seconds,
            "breaker max open seconds": self.breaker.max_open_seconds,
            "breaker half-open timeout": self.breaker.half_open_timeout_seconds,
            "breaker permit seconds": self.permit_seconds,
            "breaker window": self.breaker.window_seconds,
            "header timeout": self.header_timeout_seconds,
            "keep-alive timeout": self.keepalive_timeout_seconds,
            "send timeout": self.send_timeout_seconds,
        }
        for label, value in numbers.items():
            if not math.isfinite(value):
                raise ValueError(f"{label} must be a finite number, got {value!r}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError(f"unknown log level {self.log_level!r}")
        for name in self.providers:
            if not is_valid_provider(name):
                raise ValueError(f"invalid provider name {name!r}")
        if not self.interval_seconds > 0:
            raise ValueError("interval must be > 0")
        if not self.breaker_interval_seconds > 0:
            raise ValueError("breaker interval must be > 0")
        if not self.permit_seconds > 0:
            raise ValueError("breaker permit seconds must be > 0")
        if not self.window_seconds > 0:
            raise ValueError("window must be > 0")
        if not self.window_seconds <= self.export_horizon_seconds <= self.retention_seconds:
            raise ValueError("export horizon must be between the window and the retention")
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} outside 1..65535")
        for label, seconds in (
            ("header timeout", self.header_timeout_seconds),
            ("keep-alive timeout", self.keepalive_timeout_seconds),
            ("send timeout", self.send_timeout_seconds),
        ):
            if not seconds > 0:
                raise ValueError(f"{label} must be > 0")
        if self.max_header_bytes < 1024:  # a request line and the usual headers need ~500
            raise ValueError("max header bytes must be >= 1024")
        if self.max_connections < 1:
            raise ValueError("max connections must be >= 1")
        if not 0.0 < self.latency_target_seconds < self.latency_ceiling_seconds:
            raise ValueError("need 0 < latency target < latency ceiling")
        b = self.breaker
        if b.min_calls < 1 or b.half_open_calls < 1:
            raise ValueError("breaker min calls and half-open calls must be >= 1")
        if not 0.0 < b.failure_rate <= 1.0:
            raise ValueError("breaker failure rate must be in (0, 1]")
        if not 0 < b.open_seconds <= b.max_open_seconds:
            raise ValueError("need 0 < breaker open seconds <= breaker max open seconds")
        if not b.window_seconds > 0:
            raise ValueError("breaker window must be > 0")
        if not b.half_open_timeout_seconds > 0:
            raise ValueError("breaker half-open timeout must be > 0")
        if not 0.0 <= b.max_open_share <= 1.0:
            raise ValueError("breaker max open share must be in [0, 1]")

    @property
    def lease_seconds(self) -> float:
        """Leader lease TTL. Renewed (or sought) every half breaker interval, so a follower takes
        over at most 2 breaker intervals after the leader's last renewal."""
        return 1.5 * self.breaker_interval_seconds


class _OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


# (flag, env variable, settings field, type, help)
_OPTIONS: tuple[tuple[str, str, str, Callable[[str], Any], str], ...] = (
    ("--redis-url", "REDIS_URL", "redis_url", str, "Redis URL"),
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
        "--auth-token-file",
        "AGGREGATOR_AUTH_TOKEN_FILE",
        "auth_token_file",
        str,
        "file holding the bearer token /metrics and /health/dashboard require (default: open)",
    ),
)
_BREAKER_FIELDS = {f for f in BreakerConfig.__dataclass_fields__}


CONNECTION_FLAGS: tuple[str, ...] = ("--redis-url", "--namespace")
"""The flags every command shares (env REDIS_URL, METRICS_NAMESPACE): which Redis, which keys."""


def make_parser(prog: str, description: str | None = None) -> argparse.ArgumentParser:
    """An argument parser whose errors are one line (exit 2), as ``parse_settings``'s."""
    return _OneLineErrorParser(prog=prog, description=description)


def add_options(parser: argparse.ArgumentParser, flags: Collection[str] | None = None) -> None:
    """Add the settings' flags to ``parser`` (a subcommand's parser too): all of them, or only
    those named in ``flags`` (e.g. ``CONNECTION_FLAGS``). ``settings_from_args`` reads them."""
    for flag, variable, dest, _, help_text in _OPTIONS:
        if flags is None or flag in flags:
            parser.add_argument(flag, dest=dest, help=f"{help_text} (env {variable})")
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
        if dest == "providers":
            value = tuple(p.strip() for p in value.split(",") if p.strip())
        if dest == "auth_token_file":
            try:
                values["auth_token"] = read_token_file(value)
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

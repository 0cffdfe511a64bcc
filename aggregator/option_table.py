"""The aggregator's options in ``--help``'s order: the shared ones (``gatewayz_protocol.options``),
telemetry's (``gatewayz_telemetry.settings``) and its own. ``AggregatorSettings`` takes its
defaults from them, ``aggregator/options.py`` every parser. Nothing here reads the environment."""

from __future__ import annotations

from typing import Any

from aggregator.core.breaker import BreakerConfig
from aggregator.core.breaker_policy import OVERRIDABLE, Overrides, parse_overrides
from gatewayz_protocol import options as shared
from gatewayz_protocol.bounds import DAY, HOUR, YEAR, Bounds
from gatewayz_protocol.options import AGGREGATOR, Option, integer, names, number, numbers, text
from gatewayz_telemetry import settings as telemetry

_BREAKER = BreakerConfig()
"""The breaker's defaults are its config's (aggregator/core/breaker.py), not repeated here."""


REDIS_URL_FILE: Option[str | None] = Option(
    name="redis_url_file",
    env="GATEWAYZ_REDIS_URL_FILE",
    parse=text,
    default=None,
    help="file holding the Redis URL, which wins over --redis-url (a password in it stays out of "
    "ps and of the environment)",
    read_by=(AGGREGATOR,),
    flag="--redis-url-file",
    deprecated=("REDIS_URL_FILE",),
)
HOST: Option[str] = Option(
    name="host",
    env="GATEWAYZ_AGGREGATOR_HOST",
    parse=text,
    default="127.0.0.1",
    help="HTTP bind address",
    read_by=(AGGREGATOR,),
    flag="--host",
    deprecated=("AGGREGATOR_HOST",),
)
PORT: Option[int] = Option(
    name="port",
    env="GATEWAYZ_AGGREGATOR_PORT",
    parse=integer,
    default=9108,
    help="HTTP port",
    read_by=(AGGREGATOR,),
    flag="--port",
    deprecated=("AGGREGATOR_PORT",),
    bounds=Bounds(1, 65_535, whole=True),
)
INTERVAL: Option[float] = Option(
    name="interval_seconds",
    env="GATEWAYZ_AGGREGATION_INTERVAL_SECONDS",
    parse=number,
    default=30.0,
    help="seconds between metrics cycles",
    read_by=(AGGREGATOR,),
    flag="--interval",
    deprecated=("AGGREGATION_INTERVAL_SECONDS",),
    bounds=Bounds(0.1, DAY),
)
BREAKER_INTERVAL: Option[float] = Option(
    name="breaker_interval_seconds",
    env="GATEWAYZ_BREAKER_INTERVAL_SECONDS",
    parse=number,
    default=5.0,
    help="seconds between breaker evaluations (the leader lease lasts 1.5 times this)",
    read_by=(AGGREGATOR,),
    flag="--breaker-interval",
    deprecated=("BREAKER_INTERVAL_SECONDS",),
    bounds=Bounds(0.1, HOUR),
)
INSTANCE: Option[str] = Option(
    name="instance",
    env="GATEWAYZ_AGGREGATOR_INSTANCE",
    parse=text,
    default="",
    help="replica name (gatewayz_aggregator_leader{replica})",
    read_by=(AGGREGATOR,),
    flag="--instance",
    deprecated=("AGGREGATOR_INSTANCE",),
    default_text="host:port:pid",
)
PROVIDERS: Option[tuple[str, ...]] = Option(
    name="providers",
    env="GATEWAYZ_PROVIDERS",
    parse=names,
    default=(),
    help="comma-separated providers exported even before any traffic, and while idle",
    read_by=(AGGREGATOR,),
    flag="--providers",
    deprecated=("PROVIDERS",),
)
BREAKER_MIN_CALLS: Option[int] = Option(
    name="breaker_min_calls",
    env="GATEWAYZ_BREAKER_MIN_CALLS",
    parse=integer,
    default=_BREAKER.min_calls,
    help="calls in the breaker window before the breaker may open",
    read_by=(AGGREGATOR,),
    flag="--breaker-min-calls",
    deprecated=("BREAKER_MIN_CALLS",),
    bounds=Bounds(1, 1_000_000, whole=True),
)
BREAKER_FAILURE_RATE: Option[float] = Option(
    name="breaker_failure_rate",
    env="GATEWAYZ_BREAKER_FAILURE_RATE",
    parse=number,
    default=_BREAKER.failure_rate,
    help="failure rate that opens it, and that trial calls must stay below",
    read_by=(AGGREGATOR,),
    flag="--breaker-failure-rate",
    deprecated=("BREAKER_FAILURE_RATE",),
    bounds=Bounds(0, 1, above_low=True),
)
BREAKER_OPEN_SECONDS: Option[float] = Option(
    name="breaker_open_seconds",
    env="GATEWAYZ_BREAKER_OPEN_SECONDS",
    parse=number,
    default=_BREAKER.open_seconds,
    help="first open time; doubles per consecutive re-open",
    read_by=(AGGREGATOR,),
    flag="--breaker-open-seconds",
    deprecated=("BREAKER_OPEN_SECONDS",),
    bounds=Bounds(0.1, YEAR),
)
BREAKER_MAX_OPEN_SECONDS: Option[float] = Option(
    name="breaker_max_open_seconds",
    env="GATEWAYZ_BREAKER_MAX_OPEN_SECONDS",
    parse=number,
    default=_BREAKER.max_open_seconds,
    help="cap of the open time",
    read_by=(AGGREGATOR,),
    flag="--breaker-max-open-seconds",
    deprecated=("BREAKER_MAX_OPEN_SECONDS",),
    bounds=Bounds(0.1, YEAR),
)
BREAKER_WINDOW: Option[float] = Option(
    name="breaker_window_seconds",
    env="GATEWAYZ_BREAKER_WINDOW_SECONDS",
    parse=number,
    default=_BREAKER.window_seconds,
    help="seconds of calls a closed breaker judges (never before its last transition)",
    read_by=(AGGREGATOR,),
    flag="--breaker-window",
    deprecated=("BREAKER_WINDOW_SECONDS",),
    bounds=Bounds(0.1, HOUR),
)
BREAKER_RECENT_WINDOW: Option[float] = Option(
    name="breaker_recent_window_seconds",
    env="GATEWAYZ_BREAKER_RECENT_WINDOW_SECONDS",
    parse=number,
    default=_BREAKER.recent_window_seconds,
    help="seconds of recent calls a closed breaker is also judged on when a worker wakes it "
    "(its calls fail there); 0: a wake judges the breaker window only",
    read_by=(AGGREGATOR,),
    flag="--breaker-recent-window",
    bounds=Bounds(0, HOUR),
)
BREAKER_PROVIDERS: Option[Overrides] = Option(
    name="breaker_providers",
    env="GATEWAYZ_BREAKER_PROVIDERS",
    parse=parse_overrides,
    default=(),
    help="per-provider breaker settings replacing the global ones for that provider: "
    "'openrouter:min_calls=50,failure_rate=0.3;groq:open_seconds=60' or the same as JSON "
    '({"openrouter": {"min_calls": 50}}); settings: '
    + ", ".join(OVERRIDABLE)
    + " (no Redis cost: the same keys are read with other bounds)",
    read_by=(AGGREGATOR,),
    flag="--breaker-providers",
    default_text="none: every provider has the global settings",
)
MAX_METRIC_FAMILIES: Option[int] = Option(
    name="max_metric_families",
    env="GATEWAYZ_MAX_METRIC_FAMILIES",
    parse=integer,
    default=128,
    help="workers' backend metrics read and exported at most, the first by name; the others are "
    "counted (gatewayz_aggregator_metric_families_over_cap)",
    read_by=(AGGREGATOR,),
    flag="--max-metric-families",
    bounds=Bounds(1, 10_000, whole=True),
)
BREAKER_HALF_OPEN_CALLS: Option[int] = Option(
    name="breaker_half_open_calls",
    env="GATEWAYZ_BREAKER_HALF_OPEN_CALLS",
    parse=integer,
    default=_BREAKER.half_open_calls,
    help="trial permits across all workers; their outcomes decide half_open -> closed or open",
    read_by=(AGGREGATOR,),
    flag="--breaker-half-open-calls",
    deprecated=("BREAKER_HALF_OPEN_CALLS",),
    bounds=Bounds(1, 10_000, whole=True),
)
BREAKER_HALF_OPEN_TIMEOUT: Option[float] = Option(
    name="breaker_half_open_timeout_seconds",
    env="GATEWAYZ_BREAKER_HALF_OPEN_TIMEOUT_SECONDS",
    parse=number,
    default=_BREAKER.half_open_timeout_seconds,
    help="seconds after which a half-open breaker with too few trial outcomes opens again",
    read_by=(AGGREGATOR,),
    flag="--breaker-half-open-timeout",
    deprecated=("BREAKER_HALF_OPEN_TIMEOUT_SECONDS",),
    bounds=Bounds(0.1, DAY),
)
BREAKER_PERMIT_SECONDS: Option[float] = Option(
    name="permit_seconds",
    env="GATEWAYZ_BREAKER_PERMIT_SECONDS",
    parse=number,
    default=30.0,
    help="a trial permit's lifetime (longer than a provider call)",
    read_by=(AGGREGATOR,),
    flag="--breaker-permit-seconds",
    deprecated=("BREAKER_PERMIT_SECONDS",),
    bounds=Bounds(0.1, HOUR),
)
BREAKER_MAX_OPEN_SHARE: Option[float] = Option(
    name="breaker_max_open_share",
    env="GATEWAYZ_BREAKER_MAX_OPEN_SHARE",
    parse=number,
    default=_BREAKER.max_open_share,
    help="largest share of providers held open or half-open at once (1: all may open)",
    read_by=(AGGREGATOR,),
    flag="--breaker-max-open-share",
    deprecated=("BREAKER_MAX_OPEN_SHARE",),
    bounds=Bounds(0, 1),
)
LATENCY_TARGET: Option[float] = Option(
    name="latency_target_seconds",
    env="GATEWAYZ_LATENCY_TARGET_SECONDS",
    parse=number,
    default=2.0,
    help="p95 latency at or below which the latency score is 1",
    read_by=(AGGREGATOR,),
    flag="--latency-target",
    deprecated=("LATENCY_TARGET_SECONDS",),
    bounds=Bounds(0.001, HOUR),
)
LATENCY_CEILING: Option[float] = Option(
    name="latency_ceiling_seconds",
    env="GATEWAYZ_LATENCY_CEILING_SECONDS",
    parse=number,
    default=10.0,
    help="p95 latency at or above which the latency score is 0",
    read_by=(AGGREGATOR,),
    flag="--latency-ceiling",
    deprecated=("LATENCY_CEILING_SECONDS",),
    bounds=Bounds(0.01, DAY),
)
EXTRA_LATENCY_BUCKETS: Option[tuple[float, ...]] = Option(
    name="extra_latency_buckets",
    env="GATEWAYZ_AGGREGATOR_EXTRA_LATENCY_BUCKETS",
    parse=numbers,
    default=(),
    help="comma-separated bounds (seconds) added to provider_response_time_seconds's, "
    "among 15, 30, 60 (its buckets stop at 10 s, the seed's)",
    read_by=(AGGREGATOR,),
    flag="--extra-latency-buckets",
    deprecated=("AGGREGATOR_EXTRA_LATENCY_BUCKETS",),
)
MAX_HEADER_BYTES: Option[int] = Option(
    name="max_header_bytes",
    env="GATEWAYZ_AGGREGATOR_MAX_HEADER_BYTES",
    parse=integer,
    default=8192,
    help="largest request line plus headers; beyond: 431",
    read_by=(AGGREGATOR,),
    flag="--max-header-bytes",
    deprecated=("AGGREGATOR_MAX_HEADER_BYTES",),
    bounds=Bounds(1024, 1_048_576, whole=True),
)
HEADER_TIMEOUT: Option[float] = Option(
    name="header_timeout_seconds",
    env="GATEWAYZ_AGGREGATOR_HEADER_TIMEOUT_SECONDS",
    parse=number,
    default=10.0,
    help="seconds a request has to arrive in full from its first byte (or the connection's "
    "opening)",
    read_by=(AGGREGATOR,),
    flag="--header-timeout",
    deprecated=("AGGREGATOR_HEADER_TIMEOUT_SECONDS",),
    bounds=Bounds(0.1, HOUR),
)
KEEPALIVE_TIMEOUT: Option[float] = Option(
    name="keepalive_timeout_seconds",
    env="GATEWAYZ_AGGREGATOR_KEEPALIVE_TIMEOUT_SECONDS",
    parse=number,
    default=5.0,
    help="seconds an idle connection is kept between requests",
    read_by=(AGGREGATOR,),
    flag="--keepalive-timeout",
    deprecated=("AGGREGATOR_KEEPALIVE_TIMEOUT_SECONDS",),
    bounds=Bounds(0.1, HOUR),
)
SEND_TIMEOUT: Option[float] = Option(
    name="send_timeout_seconds",
    env="GATEWAYZ_AGGREGATOR_SEND_TIMEOUT_SECONDS",
    parse=number,
    default=10.0,
    help="seconds a client may read nothing of a pending response before it is cut",
    read_by=(AGGREGATOR,),
    flag="--send-timeout",
    deprecated=("AGGREGATOR_SEND_TIMEOUT_SECONDS",),
    bounds=Bounds(0.1, HOUR),
)
MAX_CONNECTIONS: Option[int] = Option(
    name="max_connections",
    env="GATEWAYZ_AGGREGATOR_MAX_CONNECTIONS",
    parse=integer,
    default=100,
    help="open HTTP connections; beyond, the longest idle one is closed (503 if none is idle)",
    read_by=(AGGREGATOR,),
    flag="--max-connections",
    deprecated=("AGGREGATOR_MAX_CONNECTIONS",),
    bounds=Bounds(1, 100_000, whole=True),
)
ALLOWED_HOSTS: Option[tuple[str, ...]] = Option(
    name="allowed_hosts",
    env="GATEWAYZ_AGGREGATOR_ALLOWED_HOSTS",
    parse=names,
    default=(),
    help="comma-separated Host header values served (*.example.com patterns, * for any; default: "
    "the loopback names when --host is one, else any)",
    read_by=(AGGREGATOR,),
    flag="--allowed-hosts",
    deprecated=("AGGREGATOR_ALLOWED_HOSTS",),
    default_text="the loopback names when --host is one, else any",
)
AUTH_TOKEN_FILE: Option[str | None] = Option(
    name="auth_token_file",
    env="GATEWAYZ_AGGREGATOR_AUTH_TOKEN_FILE",
    parse=text,
    default=None,
    help="file holding the bearer token /metrics and /health/dashboard require (default: open)",
    read_by=(AGGREGATOR,),
    flag="--auth-token-file",
    deprecated=("AGGREGATOR_AUTH_TOKEN_FILE",),
    default_text="none: open",
)
OPERATOR_TOKEN_FILE: Option[str | None] = Option(
    name="operator_token_file",
    env="GATEWAYZ_AGGREGATOR_OPERATOR_TOKEN_FILE",
    parse=text,
    default=None,
    help="file holding the bearer token of the operator role, which the breaker commands over "
    "HTTP require (POST /admin/breakers/...; without it they answer 403)",
    read_by=(AGGREGATOR,),
    flag="--operator-token-file",
    deprecated=("AGGREGATOR_OPERATOR_TOKEN_FILE",),
    default_text="none: no breaker command over HTTP",
)

AGGREGATOR_OPTIONS: tuple[Option[Any], ...] = (
    shared.REDIS_URL,
    REDIS_URL_FILE,
    shared.NAMESPACE,
    HOST,
    PORT,
    INTERVAL,
    BREAKER_INTERVAL,
    INSTANCE,
    shared.WINDOW_SECONDS,
    shared.EXPORT_HORIZON_SECONDS,
    shared.RETENTION_SECONDS,
    PROVIDERS,
    shared.MAX_PROVIDERS,
    shared.MAX_SERIES,
    MAX_METRIC_FAMILIES,
    shared.MAX_LABEL_VALUE_BYTES,
    BREAKER_MIN_CALLS,
    BREAKER_FAILURE_RATE,
    BREAKER_OPEN_SECONDS,
    BREAKER_MAX_OPEN_SECONDS,
    BREAKER_WINDOW,
    BREAKER_RECENT_WINDOW,
    BREAKER_PROVIDERS,
    shared.BREAKER_MODELS,
    shared.MAX_MODELS_PER_PROVIDER,
    BREAKER_HALF_OPEN_CALLS,
    BREAKER_HALF_OPEN_TIMEOUT,
    BREAKER_PERMIT_SECONDS,
    BREAKER_MAX_OPEN_SHARE,
    LATENCY_TARGET,
    LATENCY_CEILING,
    EXTRA_LATENCY_BUCKETS,
    telemetry.LOKI_URL,
    telemetry.LOG_LEVEL,
    telemetry.OTLP_ENDPOINT,
    MAX_HEADER_BYTES,
    HEADER_TIMEOUT,
    KEEPALIVE_TIMEOUT,
    SEND_TIMEOUT,
    MAX_CONNECTIONS,
    ALLOWED_HOSTS,
    AUTH_TOKEN_FILE,
    OPERATOR_TOKEN_FILE,
)
"""Every option of ``python -m aggregator``, each with a flag."""

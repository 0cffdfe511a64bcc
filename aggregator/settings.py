"""Aggregator settings: one frozen object built from CLI flags, falling back to env variables."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any

from aggregator import option_table as table
from aggregator.core.breaker import BreakerConfig
from aggregator.core.breaker_policy import BreakerPolicy, Overrides
from aggregator.core.snapshot import HealthTargets
from gatewayz_protocol import options as shared
from gatewayz_protocol.bounds import Bounds, shown
from gatewayz_protocol.names import PROVIDER_NAME_HINT, check_namespace, is_valid_provider
from gatewayz_protocol.options import Option
from gatewayz_protocol.partitions import EXTRA_HISTOGRAM_BOUNDS, HISTOGRAM_BOUNDS
from gatewayz_telemetry import settings as telemetry
from gatewayz_telemetry.settings import push_url, traces_url
from gatewayz_transport.errors import explained, is_auth_failure
from gatewayz_transport.urls import check_url

# scheme://user:password@ -> scheme://***@ (greedy to the last "@" of the URL: a password may
# hold an unencoded "/" or "@"), and a password=... query parameter: neither may reach a log
# line, an error or /metrics.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)\S*@", re.IGNORECASE)
_PASSWORD_PARAM = re.compile(r"(?P<name>\bpassword=)[^&\s]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the credentials of any URL in it (``user:password@``, ``password=``)
    replaced by ``***``. Applied to every error message the aggregator logs or serves."""
    return _PASSWORD_PARAM.sub(r"\g<name>***", _URL_USERINFO.sub(r"\g<scheme>***@", text))


AUTH_HINT = (
    f"Redis wants other credentials: put them in {shared.REDIS_URL.env} or "
    f"{shared.REDIS_URL.flag} as redis://user:password@host:port/db"
)
"""What to do when Redis refuses to authenticate (``describe_error`` adds it)."""


def describe_error(exc: BaseException) -> str:
    """An error message fit for a log line or /readyz: its type and text, credentials redacted
    (redis-py never puts the URL's password in one; this makes sure), then what to do when
    Redis refuses the credentials or wants some (``AUTH_HINT``)."""
    if is_auth_failure(exc):  # the hint's own URL is no credential: kept out of redact()
        return f"{redact(f'{type(exc).__name__}: {exc}').rstrip('. ')} ({AUTH_HINT})"
    return redact(f"{type(exc).__name__}: {explained(exc)}")


def read_token_file(path: str, what: str = "auth token") -> str:
    """The bearer token in ``path``: its content without surrounding whitespace (as
    Prometheus's ``credentials_file`` sends it). Raises ValueError (never quoting the
    content) when the file is missing, unreadable, empty or not a single visible-ASCII word;
    ``what`` names the token in the message (``auth token``, ``operator token``)."""
    token = _read_secret(path, f"{what} file")
    if not _is_token(token):
        raise ValueError(
            f"{what} in {path!r} must be one word of visible ASCII characters (no spaces)"
        )
    return token


def read_url_file(path: str) -> str:
    """The Redis URL in ``path``, without surrounding whitespace. Raises ValueError (never
    quoting the content: it holds a password) when the file is missing, unreadable or empty."""
    return _read_secret(path, "the Redis URL file")


def _read_secret(path: str, what: str) -> str:
    """The content of ``path`` without surrounding whitespace; ValueError naming ``what`` and
    the path, never the content, when it is missing, unreadable or empty."""
    try:
        with open(path, encoding="utf-8") as file:
            content = file.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ValueError(f"cannot read {what} {path!r}: {reason}") from None
    if not content:
        raise ValueError(f"{what} {path!r} is empty")
    return content


def _is_token(token: str) -> bool:
    return bool(token) and all("!" <= c <= "~" for c in token)


@dataclass(frozen=True)
class AggregatorSettings:
    """Everything ``python -m aggregator`` is configured with. ``auth_token`` (None: open)
    is the bearer token /metrics and /health/dashboard require, ``operator_token`` (None: no
    breaker command over HTTP) the one /admin/breakers' changes require; neither token nor
    ``redis_url`` (which may carry a password) is part of the repr."""

    redis_url: str = field(default=shared.REDIS_URL.default, repr=False)
    namespace: str = shared.NAMESPACE.default
    host: str = table.HOST.default
    port: int = table.PORT.default
    interval_seconds: float = table.INTERVAL.default
    breaker_interval_seconds: float = table.BREAKER_INTERVAL.default
    instance: str = table.INSTANCE.default
    window_seconds: float = shared.WINDOW_SECONDS.default
    providers: tuple[str, ...] = table.PROVIDERS.default
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    breaker_providers: Overrides = table.BREAKER_PROVIDERS.default
    """Per provider, the breaker settings replacing ``breaker``'s for it (``breaker_policy``)."""
    breaker_models: tuple[str, ...] = shared.BREAKER_MODELS.default
    """Providers that also get a breaker per model (``gatewayz_protocol.model_scopes``)."""
    max_models_per_provider: int = shared.MAX_MODELS_PER_PROVIDER.default
    latency_target_seconds: float = table.LATENCY_TARGET.default
    latency_ceiling_seconds: float = table.LATENCY_CEILING.default
    extra_latency_buckets: tuple[float, ...] = table.EXTRA_LATENCY_BUCKETS.default
    """Bounds added to ``provider_response_time_seconds``'s (the seed's stop at 10 s), among
    ``EXTRA_HISTOGRAM_BOUNDS`` (15, 30, 60), so histogram_quantile() sees the calls the health
    score's p95 (which the window's partitions measure up to 60 s) sees."""
    retention_seconds: float = shared.RETENTION_SECONDS.default
    max_providers: int = shared.MAX_PROVIDERS.default
    """Providers read and exported at most, the most recently seen (the clients' own cap, also
    held against names written to the registry some other way)."""
    max_series_per_metric: int = shared.MAX_SERIES.default
    """Series served per gauge, across processes (the clients' cap for the other kinds)."""
    max_metric_families: int = table.MAX_METRIC_FAMILIES.default
    """Workers' backend metrics read and exported at most, the first by name (what a
    snapshot's size allows for: ``core.snapshot_rules``)."""
    max_label_value_bytes: int = shared.MAX_LABEL_VALUE_BYTES.default
    """UTF-8 bytes of a backend label value as served: the clients' bound, held again on read
    against raw writes (``gatewayz_protocol.labels``)."""
    export_horizon_seconds: float = shared.EXPORT_HORIZON_SECONDS.default
    """A provider without an event for this long leaves /metrics (and the cycle's reads) until
    its next event; its counters stay in Redis for the retention period."""
    readiness_max_age_intervals: float = 3.0
    loki_url: str | None = telemetry.LOKI_URL.default
    log_level: str = telemetry.LOG_LEVEL.default
    otel_console: bool = False
    # OTLP/HTTP base URL (http://tempo:4318): the cycle spans are exported there (telemetry).
    otlp_endpoint: str | None = telemetry.OTLP_ENDPOINT.default
    permit_seconds: float = table.BREAKER_PERMIT_SECONDS.default
    auth_token: str | None = field(default=None, repr=False)
    operator_token: str | None = field(default=None, repr=False)
    # HTTP connection bounds (aggregator/serve/http_server.py): what a client that is slow,
    # broken or hostile may hold before any route or token is looked at.
    max_header_bytes: int = table.MAX_HEADER_BYTES.default
    header_timeout_seconds: float = table.HEADER_TIMEOUT.default
    keepalive_timeout_seconds: float = table.KEEPALIVE_TIMEOUT.default
    send_timeout_seconds: float = table.SEND_TIMEOUT.default
    max_connections: int = table.MAX_CONNECTIONS.default
    allowed_hosts: tuple[str, ...] = table.ALLOWED_HOSTS.default
    """Host header values served (``*.example.com`` patterns, ``*``: any); empty: the loopback
    names when bound to a loopback address (a web page cannot reach the aggregator through a
    name of its own, DNS rebinding), any otherwise (``trusted_hosts``)."""

    def __post_init__(self) -> None:
        try:
            check_url(self.redis_url)  # parses only: no connection yet
        except ValueError as exc:
            raise ValueError(f"invalid Redis URL: {redact(str(exc))}") from None
        if self.auth_token is not None and not _is_token(self.auth_token):
            raise ValueError("auth token must be one word of visible ASCII characters")
        if self.operator_token is not None and not _is_token(self.operator_token):
            raise ValueError("operator token must be one word of visible ASCII characters")
        if self.operator_token is not None and self.operator_token == self.auth_token:
            # one token for both roles would let every scraper force breakers
            raise ValueError("the operator token must differ from the auth token")
        # Checked here, so a bad one is a one-line error at start (its message shows no
        # credentials), not a traceback when the first record or span is shipped.
        if self.loki_url:
            push_url(self.loki_url)
        if self.otlp_endpoint:
            traces_url(self.otlp_endpoint, None)
        if not self.instance:
            object.__setattr__(
                self, "instance", f"{socket.gethostname()}:{self.port}:{os.getpid()}"
            )
        if "|" in self.instance or not self.instance.isprintable():
            raise ValueError("instance must not contain '|' or a control character")
        check_namespace(self.namespace)
        _check_host(self.host)
        _check_bounds(self)
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError(f"unknown log level {self.log_level!r}")
        for name in self.providers:
            if not is_valid_provider(name):
                raise ValueError(f"invalid provider name {name!r}: {PROVIDER_NAME_HINT}")
        _check_ranges(self)
        _check_breaker(self.breaker)
        policy = BreakerPolicy.of(self.breaker, self.breaker_providers, _check_breaker)
        object.__setattr__(self, "_breaker_policy", policy)

    @property
    def breaker_policy(self) -> BreakerPolicy:
        """The configuration each provider's breaker is judged by: ``breaker``, and for the
        providers of ``breaker_providers`` their own."""
        policy: BreakerPolicy = self.__dict__["_breaker_policy"]
        return policy

    @property
    def trusted_hosts(self) -> tuple[str, ...]:
        """The Host header values served (``allowed_hosts``, or its default)."""
        if self.allowed_hosts:
            return self.allowed_hosts
        if self.host in _LOOPBACK:
            return _LOOPBACK
        return ("*",)

    @property
    def health_targets(self) -> HealthTargets:
        """What the health figures are measured against."""
        return HealthTargets(
            self.window_seconds,
            self.latency_target_seconds,
            self.latency_ceiling_seconds,
            (*HISTOGRAM_BOUNDS, *sorted(set(self.extra_latency_buckets))),
        )

    @property
    def backend_bounds(self) -> tuple[int, int]:
        """(series per gauge, UTF-8 bytes per label value): the backend families' bounds."""
        return self.max_series_per_metric, self.max_label_value_bytes

    @property
    def lease_seconds(self) -> float:
        """Leader lease TTL. Renewed (or sought) every half breaker interval, so a follower takes
        over at most 2 breaker intervals after the leader's last renewal."""
        return 1.5 * self.breaker_interval_seconds


_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def _label(option: Option[Any]) -> str:
    """What an error calls an option: its flag in words (``--breaker-interval``: breaker
    interval); ``parse_settings`` puts the flag or the variable the value came from first."""
    return (option.flag or option.name).removeprefix("--").replace("-", " ")


def _breaker_field(option: Option[Any]) -> str | None:
    """The ``BreakerConfig`` field ``option`` fills (``breaker_min_calls``: min_calls), if any."""
    field = option.name.removeprefix("breaker_")
    return field if field != option.name and field in BreakerConfig.__dataclass_fields__ else None


_SETTINGS_BOUNDS: list[tuple[str, str, Bounds]] = [
    (option.name, _label(option), option.bounds)
    for option in table.AGGREGATOR_OPTIONS
    if option.bounds is not None and not _breaker_field(option)
]
"""(settings field, label, bounds) of every bounded option but the breaker's."""
_BREAKER_BOUNDS: list[tuple[str, str, Bounds]] = [
    (_breaker_field(option) or "", _label(option), option.bounds)
    for option in table.AGGREGATOR_OPTIONS
    if option.bounds is not None and _breaker_field(option)
]
"""(``BreakerConfig`` field, label, bounds): held by the global breaker and by each provider's
of ``--breaker-providers`` alike."""


def _check_bounds(settings: AggregatorSettings) -> None:
    """Every numeric setting within the bounds its option declares (``option_table``)."""
    for name, label, bounds in _SETTINGS_BOUNDS:
        bounds.check(label, getattr(settings, name))


def _check_ranges(settings: AggregatorSettings) -> None:
    """The rules between settings (each within its own bounds already)."""
    if not settings.window_seconds <= settings.export_horizon_seconds <= settings.retention_seconds:
        raise ValueError("export horizon must be between the window and the retention")
    if not settings.latency_target_seconds < settings.latency_ceiling_seconds:
        raise ValueError("need 0 < latency target < latency ceiling")
    unknown = [b for b in settings.extra_latency_buckets if b not in EXTRA_HISTOGRAM_BOUNDS]
    if unknown:
        allowed = ", ".join(f"{b:g}" for b in EXTRA_HISTOGRAM_BOUNDS)
        raise ValueError(
            f"extra latency buckets must be among {allowed} (the window's latency partitions "
            f"above 10 s), got {', '.join(f'{b:g}' for b in unknown)}"
        )


def _check_host(host: str) -> None:
    """An address or a name: one line in every message that quotes it (no newline, no
    control character, no space)."""
    if len(host) > 255 or not host.isprintable() or any(c.isspace() for c in host):
        raise ValueError(
            f"host must be an address or a name, without spaces or control characters, got "
            f"{shown(host)}"
        )


def _check_breaker(b: BreakerConfig) -> None:
    for name, label, bounds in _BREAKER_BOUNDS:
        bounds.check(label, getattr(b, name))
    if not b.open_seconds <= b.max_open_seconds:
        raise ValueError("need 0 < breaker open seconds <= breaker max open seconds")

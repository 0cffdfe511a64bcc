"""What telemetry ships and where, read once from the environment into a frozen object.

The variables are the options of ``TELEMETRY_OPTIONS`` (``gatewayz_protocol.options``' kind):
this project's under ``GATEWAYZ_`` (their old names still read for one release, with a warning),
OpenTelemetry's under the names its specification gives them. Nothing here reads the
environment at import time: :meth:`TelemetrySettings.from_env` does, when
:func:`gatewayz_telemetry.setup` calls it (in the process that will ship, after any fork).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from gatewayz_protocol.options import AGGREGATOR, TELEMETRY, Option, integer, read_all, text

PUSH_PATH = "/loki/api/v1/push"
TRACES_PATH = "/v1/traces"
DEFAULT_ENVIRONMENT = "dev"
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


_USERINFO = re.compile(r"://\S*@")


def _http_url(url: str, what: str) -> SplitResult:
    """``url`` split, when it is an http(s) URL with a host and a valid port; else ValueError
    naming ``what`` and showing the URL without its credentials (a message may reach a log)."""
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 (raises for a port that is not one)
    except ValueError:
        valid = False
    if not valid:
        shown = _USERINFO.sub("://***@", url)
        rule = "an http(s) URL with a host and a port in 1-65535"
        raise ValueError(f"{what} must be {rule}, not {shown!r}")
    return parts


def push_url(url: str) -> str:
    """``GATEWAYZ_LOKI_URL`` may be Loki's base URL (``http://loki:3100``) or its push
    endpoint; a bare base gets the push path, so both spellings people copy from Grafana's docs
    work."""
    parts = _http_url(url.strip(), "GATEWAYZ_LOKI_URL")
    if parts.path in ("", "/"):
        parts = parts._replace(path=PUSH_PATH)
    return urlunsplit(parts)


def traces_url(base: str | None, traces: str | None) -> str | None:
    """The OTLP/HTTP traces URL, as the specification builds it: ``..._TRACES_ENDPOINT`` is
    used as is; the base ``OTEL_EXPORTER_OTLP_ENDPOINT`` gets ``/v1/traces`` appended."""
    if traces:
        url = traces.strip()
    elif base:
        url = base.strip().rstrip("/") + TRACES_PATH
    else:
        return None
    _http_url(url, "the OTLP traces endpoint")
    return url


def resource_attributes(raw: str | None) -> dict[str, str]:
    """``OTEL_RESOURCE_ATTRIBUTES`` (``key=value,key2=value2``, values percent-decoded); a pair
    without ``=`` is skipped, as the SDK does."""
    found: dict[str, str] = {}
    for pair in (raw or "").split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            found[unquote(key.strip())] = unquote(value.strip())
    return found


LOKI_URL: Option[str | None] = Option(
    "loki_url",
    "GATEWAYZ_LOKI_URL",
    text,
    None,
    "Loki's push URL (http://loki:3100/loki/api/v1/push) or its base URL (the path is added): "
    "logs are shipped there in the background, never blocking (none: no logs shipped)",
    (TELEMETRY, AGGREGATOR),
    flag="--loki-url",
    deprecated=("LOKI_URL",),
)
LOKI_APP: Option[str | None] = Option(
    "app",
    "GATEWAYZ_LOKI_APP",
    text,
    None,
    "the logs' app label",
    (TELEMETRY,),
    deprecated=("LOKI_APP",),
    default_text="the service name",
)
LOKI_ENV: Option[str | None] = Option(
    "environment",
    "GATEWAYZ_LOKI_ENV",
    text,
    None,
    "the logs' env label",
    (TELEMETRY,),
    deprecated=("LOKI_ENV",),
    default_text=f"GATEWAYZ_DEPLOYMENT_ENV, else {DEFAULT_ENVIRONMENT}",
)
DEPLOYMENT_ENV: Option[str | None] = Option(
    "deployment_environment",
    "GATEWAYZ_DEPLOYMENT_ENV",
    text,
    None,
    "where this runs: deployment.environment on every span, and the logs' env label unless "
    "GATEWAYZ_LOKI_ENV is set",
    (TELEMETRY,),
    deprecated=("DEPLOYMENT_ENV",),
    default_text="the logs' env label",
)
LOG_LEVEL: Option[str] = Option(
    "log_level",
    "GATEWAYZ_LOG_LEVEL",
    text,
    "INFO",
    "DEBUG, INFO, WARNING, ERROR or CRITICAL: records below are neither logged by the "
    "aggregator nor shipped",
    (TELEMETRY, AGGREGATOR),
    flag="--log-level",
    deprecated=("LOG_LEVEL",),
)
OTLP_ENDPOINT: Option[str | None] = Option(
    "otlp_endpoint",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    text,
    None,
    "OTLP/HTTP base URL (http://tempo:4318): spans are exported to its /v1/traces, batched in "
    "the background (none: no traces)",
    (TELEMETRY, AGGREGATOR),
    flag="--otlp-endpoint",
)
OTLP_TRACES_ENDPOINT: Option[str | None] = Option(
    "otlp_traces_endpoint",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    text,
    None,
    "the full OTLP/HTTP traces URL, used as is; wins over OTEL_EXPORTER_OTLP_ENDPOINT",
    (TELEMETRY,),
)
OTEL_SERVICE_NAME: Option[str | None] = Option(
    "otel_service_name",
    "OTEL_SERVICE_NAME",
    text,
    None,
    "service.name of the spans",
    (TELEMETRY,),
    default_text="the service name given to setup()",
)
OTEL_RESOURCE_ATTRIBUTES: Option[str | None] = Option(
    "resource",
    "OTEL_RESOURCE_ATTRIBUTES",
    text,
    None,
    "key=value,... added to the spans' resource (values percent-decoded)",
    (TELEMETRY,),
)
SPAN_QUEUE_SIZE: Option[int] = Option(
    "span_queue_size",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    integer,
    2048,
    "finished spans waiting for export at most; past it a span is dropped and counted",
    (TELEMETRY,),
)

TELEMETRY_OPTIONS: tuple[Option[Any], ...] = (
    LOKI_URL,
    LOKI_APP,
    LOKI_ENV,
    DEPLOYMENT_ENV,
    LOG_LEVEL,
    OTLP_ENDPOINT,
    OTLP_TRACES_ENDPOINT,
    OTEL_SERVICE_NAME,
    OTEL_RESOURCE_ATTRIBUTES,
    SPAN_QUEUE_SIZE,
)
"""What ``TelemetrySettings.from_env()`` reads. The sampler (``OTEL_TRACES_SAMPLER(_ARG)``) and
the batch delay and size (``OTEL_BSP_*``) are read by OpenTelemetry's SDK itself."""


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """Logs go to Loki only when ``loki_url`` is set; everything else has a safe default.

    Labels are exactly ``app``, ``env``, ``service`` and ``level``: a small, fixed set, so Loki
    keeps few streams. Anything with many values (provider, model, ids, durations) goes in the
    line instead.
    """

    service_name: str
    loki_url: str | None = None
    app: str | None = None  # the `app` label; None: the service name
    environment: str = DEFAULT_ENVIRONMENT
    log_level: str = LOG_LEVEL.default
    # At most this many records wait for the sender; past it a record is dropped and counted.
    # Lines are capped too (max_line_chars), so the queue's memory is bounded: ~2 MB at a
    # typical 200 characters a line, 10,000 x 16 KiB at the very worst.
    queue_size: int = 10_000
    max_line_chars: int = 16_384
    batch_size: int = 500  # records per push (one HTTP request, grouped into streams by level)
    connect_timeout_seconds: float = 2.0
    read_timeout_seconds: float = 5.0
    # After a failed push the sender waits before the next one, doubling up to the maximum.
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 10.0
    # At a clean exit the queue is drained for at most this long; what is left is dropped.
    exit_timeout_seconds: float = 5.0
    # Traces go over OTLP/HTTP only when this (the full traces URL) is set.
    otlp_traces_endpoint: str | None = None
    otel_service_name: str | None = None  # OTEL_SERVICE_NAME: wins over service_name
    resource: tuple[tuple[str, str], ...] = ()  # OTEL_RESOURCE_ATTRIBUTES, in order
    deployment_environment: str | None = None  # GATEWAYZ_DEPLOYMENT_ENV
    # At most this many finished spans wait for export; past it a span is dropped and counted.
    span_queue_size: int = SPAN_QUEUE_SIZE.default
    # One export request (its retries included) gives up after this long: it runs in the
    # batch processor's thread, so this bounds how stale the queue gets, never a request.
    otlp_timeout_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not self.service_name:
            raise ValueError("service_name must not be empty")
        if self.loki_url is not None:
            object.__setattr__(self, "loki_url", push_url(self.loki_url))
        if self.log_level.upper() not in _LEVELS:
            raise ValueError(f"unknown log level {self.log_level!r}")
        if self.otlp_traces_endpoint is not None:
            object.__setattr__(
                self, "otlp_traces_endpoint", traces_url(None, self.otlp_traces_endpoint)
            )
        for name in ("queue_size", "max_line_chars", "batch_size", "span_queue_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in (
            "connect_timeout_seconds",
            "read_timeout_seconds",
            "backoff_initial_seconds",
            "backoff_max_seconds",
            "exit_timeout_seconds",
            "otlp_timeout_seconds",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")

    @classmethod
    def from_env(cls, service_name: str, env: Mapping[str, str] | None = None) -> TelemetrySettings:
        """The options of ``TELEMETRY_OPTIONS`` that are set in ``env`` (default:
        ``os.environ``): no ``GATEWAYZ_LOKI_URL``, no logs shipped; no OTLP endpoint, no
        traces. The env label is ``GATEWAYZ_LOKI_ENV``, else ``GATEWAYZ_DEPLOYMENT_ENV``, else
        ``dev``."""
        found = read_all(TELEMETRY_OPTIONS, os.environ if env is None else env)
        deployment = found.get("deployment_environment")
        return cls(
            service_name=service_name,
            loki_url=found.get("loki_url"),
            app=found.get("app"),
            environment=found.get("environment") or deployment or DEFAULT_ENVIRONMENT,
            log_level=found.get("log_level", LOG_LEVEL.default).upper(),
            otlp_traces_endpoint=traces_url(
                found.get("otlp_endpoint"), found.get("otlp_traces_endpoint")
            ),
            otel_service_name=found.get("otel_service_name"),
            resource=tuple(resource_attributes(found.get("resource")).items()),
            deployment_environment=deployment,
            span_queue_size=found.get("span_queue_size", SPAN_QUEUE_SIZE.default),
        )

    @property
    def logs_enabled(self) -> bool:
        return self.loki_url is not None

    @property
    def traces_enabled(self) -> bool:
        return self.otlp_traces_endpoint is not None

    def resource_attributes(self) -> dict[str, str]:
        """The traces' resource: ``OTEL_RESOURCE_ATTRIBUTES``, then ``service.name``
        (``OTEL_SERVICE_NAME``, else one in the attributes, else the service name given) and
        ``deployment.environment`` (``GATEWAYZ_DEPLOYMENT_ENV``, else one in the attributes,
        else the logs' ``env`` label), so a trace and its log lines name the same service and
        place."""
        attributes = dict(self.resource)
        attributes["service.name"] = (
            self.otel_service_name or attributes.get("service.name") or self.service_name
        )
        attributes["deployment.environment"] = (
            self.deployment_environment
            or attributes.get("deployment.environment")
            or self.environment
        )
        return attributes

    def labels(self) -> dict[str, str]:
        """The stream labels every record carries, less ``level`` (added per record)."""
        return {
            "app": self.app or self.service_name,
            "env": self.environment,
            "service": self.service_name,
        }

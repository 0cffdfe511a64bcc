"""Client settings: one frozen object, built from keyword arguments or the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from client._sharding import ShardPlan
from gatewayz_protocol.keys import DEFAULT_EXPORT_HORIZON_SECONDS, DEFAULT_NAMESPACE
from gatewayz_protocol.names import check_namespace
from gatewayz_transport.urls import DEFAULT_REDIS_URL


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "")
    word = raw.strip().lower()
    if word == "":
        return default
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean (1/0, true/false, yes/no, on/off)")


@dataclass(frozen=True)
class ClientSettings:
    """How a worker's MetricsClient talks to Redis.

    ``window_seconds`` must match the aggregator's window: window keys expire
    ``window_seconds + key_ttl_margin_seconds`` after their last write.
    """

    redis_url: str = DEFAULT_REDIS_URL
    namespace: str = DEFAULT_NAMESPACE
    window_seconds: float = 300.0
    key_ttl_margin_seconds: float = 60.0
    retention_seconds: float = 7 * 24 * 3600.0
    flush_interval_seconds: float = 0.05
    max_batch: int = 10_000
    max_buffer: int = 200_000
    socket_timeout_seconds: float = 2.0
    backoff_initial_seconds: float = 0.1
    backoff_max_seconds: float = 5.0
    breaker_refresh_seconds: float = 0.5
    allow_timeout_seconds: float = 0.25
    max_series_per_metric: int = 1000
    max_providers: int = 1000
    gauge_ttl_seconds: float = 30.0
    handle_sigterm: bool = True
    """Flush on SIGTERM (then end as SIGTERM would) where its handler is still the default or
    a Python function (chained), when a client is constructed in the main thread; the
    handler is put back when the last client that asked for it closes (``METRICS_HANDLE_SIGTERM``
    in ``from_env()``)."""
    export_horizon_seconds: float = DEFAULT_EXPORT_HORIZON_SECONDS
    """Providers without an event for this long are idle: they do not count against
    ``max_providers`` (the aggregator's ``--export-horizon`` should match)."""
    provider_shards: str = ""
    """``8`` or ``openrouter:8,groq:4``: providers whose window and counters are split over
    that many Redis Cluster slots (``_sharding``); empty: one each."""

    def __post_init__(self) -> None:
        check_namespace(self.namespace)
        positive = {
            "window_seconds": self.window_seconds,
            "flush_interval_seconds": self.flush_interval_seconds,
            "max_batch": self.max_batch,
            "max_buffer": self.max_buffer,
            "socket_timeout_seconds": self.socket_timeout_seconds,
            "backoff_initial_seconds": self.backoff_initial_seconds,
            "backoff_max_seconds": self.backoff_max_seconds,
            "retention_seconds": self.retention_seconds,
            "breaker_refresh_seconds": self.breaker_refresh_seconds,
            "allow_timeout_seconds": self.allow_timeout_seconds,
            "max_series_per_metric": self.max_series_per_metric,
            "max_providers": self.max_providers,
            "gauge_ttl_seconds": self.gauge_ttl_seconds,
            "export_horizon_seconds": self.export_horizon_seconds,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if self.key_ttl_margin_seconds < 0:
            raise ValueError("key_ttl_margin_seconds must be >= 0")
        ShardPlan.parse(self.provider_shards)

    @property
    def shard_plan(self) -> ShardPlan:
        return ShardPlan.parse(self.provider_shards)

    @property
    def window_ttl_seconds(self) -> int:
        return int(self.window_seconds + self.key_ttl_margin_seconds + 0.999)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientSettings:
        """REDIS_URL, METRICS_NAMESPACE, WINDOW_SECONDS, METRICS_FLUSH_INTERVAL_SECONDS,
        METRICS_MAX_BUFFER, METRICS_BREAKER_REFRESH_SECONDS, METRICS_MAX_SERIES,
        METRICS_GAUGE_TTL_SECONDS, METRICS_MAX_PROVIDERS, METRICS_HANDLE_SIGTERM,
        METRICS_PROVIDER_SHARDS, EXPORT_HORIZON_SECONDS."""
        env = os.environ if env is None else env
        return cls(
            redis_url=env.get("REDIS_URL") or DEFAULT_REDIS_URL,
            namespace=env.get("METRICS_NAMESPACE") or DEFAULT_NAMESPACE,
            window_seconds=_env_float(env, "WINDOW_SECONDS", 300.0),
            flush_interval_seconds=_env_float(env, "METRICS_FLUSH_INTERVAL_SECONDS", 0.05),
            max_buffer=int(_env_float(env, "METRICS_MAX_BUFFER", 200_000)),
            breaker_refresh_seconds=_env_float(env, "METRICS_BREAKER_REFRESH_SECONDS", 0.5),
            max_series_per_metric=int(_env_float(env, "METRICS_MAX_SERIES", 1000)),
            gauge_ttl_seconds=_env_float(env, "METRICS_GAUGE_TTL_SECONDS", 30.0),
            max_providers=int(_env_float(env, "METRICS_MAX_PROVIDERS", 1000)),
            handle_sigterm=_env_bool(env, "METRICS_HANDLE_SIGTERM", True),
            provider_shards=env.get("METRICS_PROVIDER_SHARDS", ""),
            export_horizon_seconds=_env_float(env, "EXPORT_HORIZON_SECONDS", 3600.0),
        )

"""Client settings: one frozen object, built from keyword arguments or the environment (the
options of ``CLIENT_OPTIONS``: the shared ones of ``gatewayz_protocol.options``, then the
client's own, declared here)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from client._instruments import DEFAULT_MAX_BATCH_BYTES
from client._sharding import ShardPlan
from gatewayz_protocol.bounds import DAY, HOUR, MINUTE, Bounds
from gatewayz_protocol.names import PROVIDER_NAME_HINT, check_namespace, is_valid_provider
from gatewayz_protocol.options import (
    BREAKER_MODELS,
    CLIENT,
    EXPORT_HORIZON_SECONDS,
    MAX_LABEL_VALUE_BYTES,
    MAX_MODELS_PER_PROVIDER,
    MAX_PROVIDERS,
    MAX_SERIES,
    NAMESPACE,
    REDIS_URL,
    RETENTION_SECONDS,
    SHARED,
    WINDOW_SECONDS,
    Option,
    blamed,
    boolean,
    integer,
    number,
    read_sourced,
    text,
)
from gatewayz_transport.urls import check_url

FLUSH_INTERVAL_SECONDS: Option[float] = Option(
    "flush_interval_seconds",
    "GATEWAYZ_FLUSH_INTERVAL_SECONDS",
    number,
    0.05,
    "seconds between the flusher's batches (sooner when a batch is full)",
    (CLIENT,),
    deprecated=("METRICS_FLUSH_INTERVAL_SECONDS",),
    bounds=Bounds(0.001, MINUTE),
)
MAX_BUFFER: Option[int] = Option(
    "max_buffer",
    "GATEWAYZ_MAX_BUFFER",
    integer,
    200_000,
    "events a worker buffers while Redis is slow or away; beyond, the oldest are dropped (counted)",
    (CLIENT,),
    deprecated=("METRICS_MAX_BUFFER",),
    bounds=Bounds(1, 10_000_000, whole=True),
)
BREAKER_REFRESH_SECONDS: Option[float] = Option(
    "breaker_refresh_seconds",
    "GATEWAYZ_BREAKER_REFRESH_SECONDS",
    number,
    0.5,
    "seconds between the breaker refresher's reads of the states allow() answers from",
    (CLIENT,),
    deprecated=("METRICS_BREAKER_REFRESH_SECONDS",),
    bounds=Bounds(0.01, MINUTE),
)
BREAKER_WAKE_FAILURES: Option[int] = Option(
    "breaker_wake_failures",
    "GATEWAYZ_BREAKER_WAKE_FAILURES",
    integer,
    5,
    "failures of a provider within a second, at least half of this worker's calls to it, after "
    "which the worker asks the aggregator to evaluate its breaker at once (at most once a "
    "second); 0: never, the breaker cycle decides alone",
    (CLIENT,),
    bounds=Bounds(0, 100_000, whole=True),
)
GAUGE_TTL_SECONDS: Option[float] = Option(
    "gauge_ttl_seconds",
    "GATEWAYZ_GAUGE_TTL_SECONDS",
    number,
    30.0,
    "seconds a worker's gauge values outlive it (it refreshes them while alive)",
    (CLIENT,),
    deprecated=("METRICS_GAUGE_TTL_SECONDS",),
    bounds=Bounds(1, DAY),
)
HANDLE_SIGTERM: Option[bool] = Option(
    "handle_sigterm",
    "GATEWAYZ_HANDLE_SIGTERM",
    boolean,
    True,
    "flush on SIGTERM, then end as SIGTERM would (the handler is put back when the last "
    "client closes)",
    (CLIENT,),
    deprecated=("METRICS_HANDLE_SIGTERM",),
)
PROVIDER_SHARDS: Option[str] = Option(
    "provider_shards",
    "GATEWAYZ_PROVIDER_SHARDS",
    text,
    "",
    "8 or openrouter:8,groq:4: providers whose window and counters are split over that many "
    "Redis Cluster slots (none: one each)",
    (CLIENT,),
    deprecated=("METRICS_PROVIDER_SHARDS",),
)

MAX_BATCH_BYTES: Option[int] = Option(
    "max_batch_bytes",
    "GATEWAYZ_MAX_BATCH_BYTES",
    integer,
    DEFAULT_MAX_BATCH_BYTES,
    "bytes of backend metric increments (series ids and fields) one batch carries at most; "
    "the rest go with the next batch",
    (CLIENT,),
    bounds=Bounds(1, 64 * 1024 * 1024, whole=True),
)

CLIENT_OPTIONS: tuple[Option[Any], ...] = (
    *(option for option in SHARED if CLIENT in option.read_by),
    FLUSH_INTERVAL_SECONDS,
    MAX_BUFFER,
    BREAKER_REFRESH_SECONDS,
    BREAKER_WAKE_FAILURES,
    GAUGE_TTL_SECONDS,
    HANDLE_SIGTERM,
    PROVIDER_SHARDS,
    MAX_BATCH_BYTES,
)
"""What ``ClientSettings.from_env()`` reads: the shared options, then the client's own."""

FIELD_BOUNDS: dict[str, Bounds] = {
    "key_ttl_margin_seconds": Bounds(0, DAY),
    "max_batch": Bounds(1, 100_000, whole=True),
    "socket_timeout_seconds": Bounds(0.01, 5 * MINUTE),
    "backoff_initial_seconds": Bounds(0.001, MINUTE),
    "backoff_max_seconds": Bounds(0.001, HOUR),
    "allow_timeout_seconds": Bounds(0.001, MINUTE),
}
"""The bounds of the settings given as keyword arguments only (no variable): the
``ClientSettings`` docstring says them (``tests/client/test_settings.py`` holds it to these)."""

BOUNDS: dict[str, Bounds] = {
    **{option.name: option.bounds for option in CLIENT_OPTIONS if option.bounds is not None},
    **FIELD_BOUNDS,
}
"""Every numeric setting's bounds, held at construction (``ClientSettings.__post_init__``)."""


@dataclass(frozen=True)
class ClientSettings:
    """How a worker's MetricsClient talks to Redis.

    ``window_seconds`` must match the aggregator's window: window keys expire
    ``window_seconds + key_ttl_margin_seconds`` after their last write.

    Every setting is checked here, when the settings are built (``from_env()`` builds them
    too): a value the client cannot work with (a number outside its range, a fraction where a
    count is wanted, a Redis URL or query option no connection can use) is a ``ValueError`` of
    one line naming the setting, never an error later in ``record()``, ``allow()``,
    ``flush()`` or ``close()``. The range of each setting that has a variable is in the
    configuration reference; those of the others are:

    - ``key_ttl_margin_seconds`` (how much longer than the window its keys live): from 0 to 86400
    - ``max_batch`` (events one batch carries at most): a whole number from 1 to 100000
    - ``socket_timeout_seconds`` (of the writer's Redis commands and connects; a URL's
      ``?socket_timeout=`` and ``?socket_connect_timeout=`` take its place): from 0.01 to 300
    - ``backoff_initial_seconds`` (the first wait after a failed write): from 0.001 to 60
    - ``backoff_max_seconds`` (the longest such wait): from 0.001 to 3600
    - ``allow_timeout_seconds`` (the longest an ``allow`` call waits: the breaker connection's
      timeout, whatever the URL's ``?socket_timeout=`` says): from 0.001 to 60
    """

    redis_url: str = field(default=REDIS_URL.default, repr=False)  # its password stays out
    namespace: str = NAMESPACE.default
    window_seconds: float = WINDOW_SECONDS.default
    key_ttl_margin_seconds: float = 60.0
    retention_seconds: float = RETENTION_SECONDS.default
    flush_interval_seconds: float = FLUSH_INTERVAL_SECONDS.default
    max_batch: int = 10_000
    max_buffer: int = MAX_BUFFER.default
    socket_timeout_seconds: float = 2.0
    backoff_initial_seconds: float = 0.1
    backoff_max_seconds: float = 5.0
    breaker_refresh_seconds: float = BREAKER_REFRESH_SECONDS.default
    breaker_wake_failures: int = BREAKER_WAKE_FAILURES.default
    """A provider's failures within a second (at least half of this worker's calls to it)
    after which the worker asks the aggregator's leader to evaluate its breaker now
    (``client._wake``); 0: never (the breaker cycle alone decides)."""
    allow_timeout_seconds: float = 0.25
    max_series_per_metric: int = MAX_SERIES.default
    max_providers: int = MAX_PROVIDERS.default
    gauge_ttl_seconds: float = GAUGE_TTL_SECONDS.default
    handle_sigterm: bool = HANDLE_SIGTERM.default
    """Flush on SIGTERM (then end as SIGTERM would) where its handler is still the default or
    a Python function (chained), when a client is constructed in the main thread; the
    handler is put back when the last client that asked for it closes (``GATEWAYZ_HANDLE_SIGTERM``
    in ``from_env()``)."""
    export_horizon_seconds: float = EXPORT_HORIZON_SECONDS.default
    """Providers without an event for this long are idle: they do not count against
    ``max_providers`` (the aggregator's ``--export-horizon`` should match)."""
    provider_shards: str = PROVIDER_SHARDS.default
    """``8`` or ``openrouter:8,groq:4``: providers whose window and counters are split over
    that many Redis Cluster slots (``_sharding``); empty: one each."""
    max_label_value_bytes: int = MAX_LABEL_VALUE_BYTES.default
    """UTF-8 bytes of a backend metric's label value (at least 34): a longer one is truncated
    and ends with ``~`` and a hash of the whole (``gatewayz_protocol.labels``)."""
    max_batch_bytes: int = MAX_BATCH_BYTES.default
    """Bytes of backend metric increments one batch carries at most (one series at least)."""
    breaker_models: tuple[str, ...] = BREAKER_MODELS.default
    """Providers whose calls also feed a breaker per model (``allow(provider, model)``
    consults it; ``gatewayz_protocol.model_scopes``); others cost nothing more."""
    max_models_per_provider: int = MAX_MODELS_PER_PROVIDER.default
    """Model breakers per listed provider, cluster-wide (more: counted, provider only)."""

    def __post_init__(self) -> None:
        try:
            check_url(self.redis_url)  # parses only: a bad URL is refused here, naming itself
        except ValueError as exc:
            raise ValueError(f"invalid Redis URL: {exc}") from None
        check_namespace(self.namespace)
        for name, bounds in BOUNDS.items():
            # A value beyond them failed far from here: a TTL Redis refuses on every batch, a
            # timeout a thread's join() overflows on in close(), a batch size of 2.5
            bounds.check(name, getattr(self, name))
        ShardPlan.parse(self.provider_shards)
        for provider in self.breaker_models:
            if not is_valid_provider(provider):
                raise ValueError(
                    f"breaker_models: invalid provider name {provider!r}: {PROVIDER_NAME_HINT}"
                )

    @property
    def shard_plan(self) -> ShardPlan:
        return ShardPlan.parse(self.provider_shards)

    @property
    def window_ttl_seconds(self) -> int:
        return int(self.window_seconds + self.key_ttl_margin_seconds + 0.999)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientSettings:
        """Settings from ``env`` (default: ``os.environ``): each option of ``CLIENT_OPTIONS``
        that is set, the defaults otherwise (``docs/reference/configuration.md``). A value that
        cannot be read is a ValueError of one line naming its variable; an old name (such as
        ``REDIS_URL``) is still read, with a FutureWarning naming the new one."""
        given = read_sourced(CLIENT_OPTIONS, os.environ if env is None else env)
        try:
            return cls(**dict(given.values()))
        except ValueError as exc:
            raise ValueError(blamed(exc, given, lambda one: cls(**dict([one])))) from None

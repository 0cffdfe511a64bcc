"""Configuration, declared once: the option type every table is made of, how a value is read
from the environment, and the options both sides read (``SHARED``).

An :class:`Option` is one value: the settings field it fills, its environment variable, the
aggregator's flag when it has one, its parser, its default, its help and who reads it. The
client (``client/_settings.py``), the aggregator (``aggregator/option_table.py``) and telemetry
(``gatewayz_telemetry/settings.py``) each build their settings from a table of them; the
reference page (``docs/reference/configuration.md``) is generated from the same tables.

Every variable this project defines starts with ``GATEWAYZ_``; standard variables defined by
others keep their names (``OTEL_EXPORTER_OTLP_ENDPOINT`` and the other ``OTEL_*`` of the
OpenTelemetry specification). An option's old names (``deprecated``) are still read for one
release: when only an old name is set its value is used, and the process is told once which
variable to set instead; when both are set the new one wins, and that is said once too
(``gatewayz_protocol/deprecations.py``: a ``FutureWarning`` at the gateway's line that reads the
settings, one line on stderr in this project's own commands).

Nothing here reads the environment at import time: :func:`read` and :func:`read_all` read the
mapping they are given, when the settings are built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from gatewayz_protocol.bounds import DAY, YEAR, Bounds, shown
from gatewayz_protocol.deprecations import forget_notices as forget_notices  # tests reset it
from gatewayz_protocol.deprecations import tell_once
from gatewayz_protocol.keys import (
    DEFAULT_EXPORT_HORIZON_SECONDS,
    DEFAULT_MAX_PROVIDERS,
    DEFAULT_NAMESPACE,
)
from gatewayz_protocol.labels import DEFAULT_MAX_LABEL_VALUE_BYTES, MIN_MAX_LABEL_VALUE_BYTES
from gatewayz_protocol.model_scopes import DEFAULT_MAX_MODELS_PER_PROVIDER
from gatewayz_protocol.names import is_valid_provider

T = TypeVar("T")

PREFIX = "GATEWAYZ_"
"""The prefix of every environment variable this project defines."""
STANDARD_PREFIXES = ("OTEL_",)
"""Variables defined by others (the OpenTelemetry specification), read under their own names."""

CLIENT = "client"
"""Read by ``MetricsClient.from_env()`` / ``ClientSettings.from_env()`` in a gateway worker."""
AGGREGATOR = "aggregator"
"""Read by ``python -m aggregator`` (and its ``breaker`` and ``inspect`` commands)."""
TELEMETRY = "telemetry"
"""Read by ``gatewayz_telemetry.setup()``, in a worker or the aggregator."""


@dataclass(frozen=True)
class Option(Generic[T]):
    """One configurable value: ``name`` is the settings field it fills (also the aggregator's
    argparse dest), ``env`` its variable, ``flag`` the aggregator's flag (None: no flag),
    ``read_by`` who reads it (``CLIENT``, ``AGGREGATOR``, ``TELEMETRY``), ``deprecated`` its old
    variable names, still read for one release, and ``default_text`` what the reference shows
    when the default is worked out at run time (None: the default itself), ``bounds`` the
    values a numeric one may take (``gatewayz_protocol.bounds``: held by the settings object
    that reads it, shown by the reference and ``--help``)."""

    name: str
    env: str
    parse: Callable[[str], T]
    default: T
    help: str
    read_by: tuple[str, ...]
    flag: str | None = None
    deprecated: tuple[str, ...] = ()
    default_text: str | None = None
    bounds: Bounds | None = None

    def __post_init__(self) -> None:
        if not self.env.startswith((PREFIX, *STANDARD_PREFIXES)):
            raise ValueError(f"{self.env}: a variable of this project must start with {PREFIX}")
        for old in self.deprecated:
            if old.startswith(PREFIX) or old == self.env:
                raise ValueError(f"{self.env}: {old} cannot be one of its old names")

    def shown_default(self) -> str:
        """The default as the reference and ``--help`` show it."""
        if self.default_text is not None:
            return self.default_text
        value: Any = self.default
        if value is None or value == "" or value == ():
            return "none"
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, float):
            return f"{value:g}"
        if isinstance(value, tuple):
            return ",".join(str(item) for item in value)
        return str(value)


# ---------------------------------------------------------------------------------- parsers
# Each raises ValueError saying what it expects; ``read`` puts the variable and the value first.


def text(raw: str) -> str:
    return raw


def number(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError("a number") from None


def integer(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        value = float(raw)  # 1e5, 200000.0
    except ValueError:
        raise ValueError("a whole number") from None
    if not value.is_integer():
        raise ValueError("a whole number")
    return int(value)


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def boolean(raw: str) -> bool:
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError("a boolean: 1/0, true/false, yes/no, on/off")


def names(raw: str) -> tuple[str, ...]:
    """``a, b,,c`` -> ``("a", "b", "c")``: comma-separated, blanks dropped."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def numbers(raw: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in names(raw))
    except ValueError:
        raise ValueError("comma-separated numbers") from None


# ---------------------------------------------------------------------------------- reading


def lookup(option: Option[Any], env: Mapping[str, str]) -> tuple[str, str] | None:
    """The variable that gives ``option`` a value in ``env`` and that value (stripped), or None
    when none does: its own variable, else an old name (told once, with the new name). An empty
    or blank value counts as unset."""
    value = env.get(option.env, "").strip()
    for old in option.deprecated:
        old_value = env.get(old, "").strip()
        if not old_value:
            continue
        if value:
            tell_once(
                old,
                option.env,
                f"{old} is ignored: {option.env} is set and wins. {old} is deprecated and no "
                f"longer read from the next release: remove it.",
            )
        else:
            tell_once(
                old,
                option.env,
                f"{old} is deprecated and no longer read from the next release: set "
                f"{option.env} instead (its value is used meanwhile).",
            )
            return old, old_value
    return (option.env, value) if value else None


def parse_as(option: Option[T], source: str, raw: str) -> T:
    """``raw`` parsed by ``option``'s parser; a ValueError of one line naming ``source`` (the
    variable or the flag the value came from) otherwise."""
    try:
        return option.parse(raw)
    except ValueError as exc:
        expected = f" (expected {exc})" if str(exc) else ""
        raise ValueError(f"{source}: invalid value {shown(raw, 80)}{expected}") from None


def read(option: Option[T], env: Mapping[str, str]) -> T | None:
    """``option``'s value in ``env``, parsed; None when unset."""
    found = lookup(option, env)
    return None if found is None else parse_as(option, *found)


def read_all(options: Iterable[Option[Any]], env: Mapping[str, str]) -> dict[str, Any]:
    """``{option.name: value}`` for each option set in ``env`` (unset ones left out, so the
    settings' own defaults, which are the options' defaults, apply)."""
    return dict(read_sourced(options, env).values())


def read_sourced(
    options: Iterable[Option[Any]], env: Mapping[str, str]
) -> dict[str, tuple[str, Any]]:
    """``{variable: (option.name, value)}`` for each option set in ``env``: ``read_all`` with
    where each value came from, for ``blamed``."""
    values: dict[str, tuple[str, Any]] = {}
    for option in options:
        found = lookup(option, env)
        if found is not None:
            values[found[0]] = (option.name, parse_as(option, *found))
    return values


def blamed(error: ValueError, given: Mapping[str, T], build_alone: Callable[[T], object]) -> str:
    """``error``'s message, naming the source (a variable, a flag) of ``given`` whose value
    alone breaks a settings rule (``build_alone`` of it raises ValueError), as a value that
    cannot be parsed is named; a rule that two given values break together (a target above a
    ceiling) leaves the message as it is."""

    def breaks(value: T) -> bool:
        try:
            build_alone(value)
        except ValueError:
            return True
        return False

    culprits = [source for source, value in given.items() if breaks(value)]
    return f"{culprits[0]}: {error}" if len(culprits) == 1 else str(error)


# ------------------------------------------------------- shared: both sides must agree on these

REDIS_URL: Option[str] = Option(
    "redis_url",
    "GATEWAYZ_REDIS_URL",
    text,
    "redis://127.0.0.1:6379/0",
    "Redis (rediss:// for TLS, redis://:password@host); a Redis Cluster "
    "redis+cluster://host:port[,host:port...], a Sentinel-managed one "
    "redis+sentinel://host:26379[,...]/<master>[/<db>]; query options as redis-py reads them, "
    "each with a value a connection can use (?client_name= one word, ?socket_timeout= 0.01 to "
    "300, ?ssl_ca_certs= with rediss://; none with redis+sentinel://), but not "
    "?decode_responses= or an encoding other than UTF-8",
    (CLIENT, AGGREGATOR),
    flag="--redis-url",
    deprecated=("REDIS_URL",),
)
NAMESPACE: Option[str] = Option(
    "namespace",
    "GATEWAYZ_NAMESPACE",
    text,
    DEFAULT_NAMESPACE,
    "key prefix, the same for the clients and the aggregator",
    (CLIENT, AGGREGATOR),
    flag="--namespace",
    deprecated=("METRICS_NAMESPACE",),
)
WINDOW_SECONDS: Option[float] = Option(
    "window_seconds",
    "GATEWAYZ_WINDOW_SECONDS",
    number,
    300.0,
    "sliding window seconds; the clients' window keys expire this long (plus a margin) after "
    "their last write",
    (CLIENT, AGGREGATOR),
    flag="--window",
    deprecated=("WINDOW_SECONDS",),
    bounds=Bounds(1, DAY),
)
EXPORT_HORIZON_SECONDS: Option[float] = Option(
    "export_horizon_seconds",
    "GATEWAYZ_EXPORT_HORIZON_SECONDS",
    number,
    DEFAULT_EXPORT_HORIZON_SECONDS,
    "seconds without an event after which a provider is idle: it leaves /metrics until its "
    "next event and no longer counts against the clients' provider cap (at least the window, "
    "at most the retention)",
    (CLIENT, AGGREGATOR),
    flag="--export-horizon",
    deprecated=("EXPORT_HORIZON_SECONDS",),
    bounds=Bounds(1, YEAR),
)
MAX_PROVIDERS: Option[int] = Option(
    "max_providers",
    "GATEWAYZ_MAX_PROVIDERS",
    integer,
    DEFAULT_MAX_PROVIDERS,
    "providers tracked at once, cluster-wide: the clients admit no more, the aggregator reads "
    "and exports no more (the most recently seen)",
    (CLIENT, AGGREGATOR),
    flag="--max-providers",
    deprecated=("METRICS_MAX_PROVIDERS",),
    bounds=Bounds(1, 100_000, whole=True),
)
RETENTION_SECONDS: Option[float] = Option(
    "retention_seconds",
    "GATEWAYZ_RETENTION_SECONDS",
    number,
    7 * 24 * 3600.0,
    "seconds an idle provider's counters and registry entry are kept",
    (CLIENT, AGGREGATOR),
    flag="--retention",
    bounds=Bounds(60, YEAR),
)

MAX_SERIES: Option[int] = Option(
    "max_series_per_metric",
    "GATEWAYZ_MAX_SERIES",
    integer,
    1000,
    "label sets per backend metric: a client admits no more for counters and histograms, the "
    "aggregator serves no more for a gauge (across processes)",
    (CLIENT, AGGREGATOR),
    flag="--max-series",
    deprecated=("METRICS_MAX_SERIES",),
    bounds=Bounds(1, 100_000, whole=True),
)

MAX_LABEL_VALUE_BYTES: Option[int] = Option(
    "max_label_value_bytes",
    "GATEWAYZ_MAX_LABEL_VALUE_BYTES",
    integer,
    DEFAULT_MAX_LABEL_VALUE_BYTES,
    "UTF-8 bytes of a backend metric's label value; a longer one is truncated and ends with a "
    "hash of the whole (counted in gatewayz_metrics_label_values_truncated_total): the clients "
    "bound what they write, the aggregator what it reads (a raw write, a client set higher)",
    (CLIENT, AGGREGATOR),
    flag="--max-label-value-bytes",
    bounds=Bounds(MIN_MAX_LABEL_VALUE_BYTES, 65_536, whole=True),
)


def provider_names(raw: str) -> tuple[str, ...]:
    """``names`` that must each be a provider name (``gatewayz_protocol.names``)."""
    listed = names(raw)
    for name in listed:
        if not is_valid_provider(name):
            raise ValueError(f"provider names (A-Z a-z 0-9 . _ -), got {name!r}")
    return listed


BREAKER_MODELS: Option[tuple[str, ...]] = Option(
    "breaker_models",
    "GATEWAYZ_BREAKER_MODELS",
    provider_names,
    (),
    "comma-separated providers that also get a circuit breaker per model (for gateways that "
    "route by model): their clients write each call's model scope too (3 window sets, a "
    "registry, about 60 s of members) and the aggregator evaluates and exports each model's "
    "breaker; other providers cost nothing more (docs/guides/circuit-breaker.md)",
    (CLIENT, AGGREGATOR),
    flag="--breaker-models",
)

MAX_MODELS_PER_PROVIDER: Option[int] = Option(
    "max_models_per_provider",
    "GATEWAYZ_MAX_MODELS_PER_PROVIDER",
    integer,
    DEFAULT_MAX_MODELS_PER_PROVIDER,
    "model breakers per provider of --breaker-models, cluster-wide: calls of further models "
    "count for the provider's breaker only (counted as too_many_models)",
    (CLIENT, AGGREGATOR),
    flag="--max-models-per-provider",
    bounds=Bounds(1, 10_000, whole=True),
)

SHARED: tuple[Option[Any], ...] = (
    REDIS_URL,
    NAMESPACE,
    WINDOW_SECONDS,
    EXPORT_HORIZON_SECONDS,
    MAX_PROVIDERS,
    RETENTION_SECONDS,
    MAX_SERIES,
    MAX_LABEL_VALUE_BYTES,
    BREAKER_MODELS,
    MAX_MODELS_PER_PROVIDER,
)
"""What the clients and the aggregator must agree on, each declared here only."""

"""ClientSettings: the documented defaults, what is refused at construction, and the environment
variables of ``from_env()`` (docs/reference/configuration.md), their old names included."""

from __future__ import annotations

import dataclasses
import math
import re
import warnings

import pytest

from client import ClientSettings
from client._settings import BOUNDS, CLIENT_OPTIONS, FIELD_BOUNDS
from client._sharding import ShardPlan
from gatewayz_protocol.options import SHARED, forget_notices


def test_the_defaults_are_the_documented_ones() -> None:
    settings = ClientSettings()
    assert dataclasses.asdict(settings) == {
        "redis_url": "redis://127.0.0.1:6379/0",
        "namespace": "gatewayz",
        "window_seconds": 300.0,
        "key_ttl_margin_seconds": 60.0,
        "retention_seconds": 604_800.0,
        "flush_interval_seconds": 0.05,
        "max_batch": 10_000,
        "max_buffer": 200_000,
        "socket_timeout_seconds": 2.0,
        "backoff_initial_seconds": 0.1,
        "backoff_max_seconds": 5.0,
        "breaker_refresh_seconds": 0.5,
        "breaker_wake_failures": 5,
        "allow_timeout_seconds": 0.25,
        "max_series_per_metric": 1000,
        "max_providers": 1000,
        "gauge_ttl_seconds": 30.0,
        "handle_sigterm": True,
        "export_horizon_seconds": 3600.0,
        "provider_shards": "",
        "max_label_value_bytes": 256,
        "max_batch_bytes": 1_048_576,
        "breaker_models": (),
        "max_models_per_provider": 50,
    }
    assert settings.window_ttl_seconds == 360  # window + margin
    assert settings.shard_plan == ShardPlan()


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_a_value_outside_its_range_is_refused_naming_it_and_the_range(name: str) -> None:
    """Below, above, not finite, a bool, a fraction for a count: refused at construction, not
    taken to fail later (a TTL Redis refuses on every batch, a join() that overflows in close(),
    a batch of 2.5 events that never flushes)."""
    bounds = BOUNDS[name]
    outside: list[object] = [bounds.low - 1, bounds.high * 10, math.nan, math.inf, -math.inf, True]
    outside += [1e30, 10**30, "5"] + ([2.5, float(bounds.high)] if bounds.whole else [])
    for value in outside:
        with pytest.raises(ValueError) as refused:
            ClientSettings(**{name: value})  # type: ignore[arg-type]
        assert str(refused.value).startswith(f"{name} must be {bounds.text()}, got "), value
    for value in (bounds.low, bounds.high):  # the ends are inside
        end = int(value) if bounds.whole else float(value)
        assert getattr(ClientSettings(**{name: end}), name) == end  # type: ignore[arg-type]


def test_every_numeric_setting_has_bounds() -> None:
    numeric = {
        field.name for field in dataclasses.fields(ClientSettings) if field.type in ("int", "float")
    }
    assert numeric == set(BOUNDS)


def test_the_docstring_says_the_range_of_each_setting_without_a_variable() -> None:
    """The Python API page renders it: it must say what ``FIELD_BOUNDS`` holds."""
    doc = " ".join((ClientSettings.__doc__ or "").split())
    for name, bounds in FIELD_BOUNDS.items():
        assert re.search(rf"``{name}`` \([^)]*\): {re.escape(bounds.text())}", doc), name


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"key_ttl_margin_seconds": -1.0}, "key_ttl_margin_seconds must be from 0 to 86400"),
        ({"namespace": "a b"}, "invalid namespace 'a b'"),
        ({"namespace": "x" * 65}, "invalid namespace"),
        ({"provider_shards": "openrouter:0"}, "the count must be 1..64"),
        ({"provider_shards": "open router:2"}, "is not <provider>:<count>"),
        ({"max_label_value_bytes": 33}, "max_label_value_bytes must be a whole number from 34"),
    ],
)
def test_what_cannot_work_is_refused_at_construction(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ClientSettings(**overrides)  # type: ignore[arg-type]


def test_the_window_keys_outlive_the_window_by_the_margin_in_whole_seconds() -> None:
    assert ClientSettings(key_ttl_margin_seconds=0).window_ttl_seconds == 300
    assert ClientSettings(window_seconds=300.2, key_ttl_margin_seconds=0).window_ttl_seconds == 301
    assert ClientSettings(window_seconds=60, key_ttl_margin_seconds=5).window_ttl_seconds == 65


def test_from_env_reads_every_documented_variable() -> None:
    settings = ClientSettings.from_env(
        {
            "GATEWAYZ_REDIS_URL": "redis://cache:6380/2",
            "GATEWAYZ_NAMESPACE": "prod",
            "GATEWAYZ_WINDOW_SECONDS": "120",
            "GATEWAYZ_FLUSH_INTERVAL_SECONDS": "0.2",
            "GATEWAYZ_MAX_BUFFER": "5000",
            "GATEWAYZ_BREAKER_REFRESH_SECONDS": "1.5",
            "GATEWAYZ_MAX_SERIES": "50",
            "GATEWAYZ_GAUGE_TTL_SECONDS": "12",
            "GATEWAYZ_MAX_PROVIDERS": "20",
            "GATEWAYZ_HANDLE_SIGTERM": "off",
            "GATEWAYZ_PROVIDER_SHARDS": "openrouter:8",
            "GATEWAYZ_EXPORT_HORIZON_SECONDS": "600",
            "GATEWAYZ_MAX_LABEL_VALUE_BYTES": "128",
            "GATEWAYZ_MAX_BATCH_BYTES": "65536",
        }
    )
    assert settings == ClientSettings(
        redis_url="redis://cache:6380/2",
        namespace="prod",
        window_seconds=120.0,
        flush_interval_seconds=0.2,
        max_buffer=5000,
        breaker_refresh_seconds=1.5,
        max_series_per_metric=50,
        gauge_ttl_seconds=12.0,
        max_providers=20,
        handle_sigterm=False,
        provider_shards="openrouter:8",
        export_horizon_seconds=600.0,
        max_label_value_bytes=128,
        max_batch_bytes=65536,
    )
    assert settings.shard_plan == ShardPlan(per_provider={"openrouter": 8})


def test_from_env_without_variables_or_with_empty_ones_is_the_defaults() -> None:
    assert ClientSettings.from_env({}) == ClientSettings()
    empty = {"GATEWAYZ_REDIS_URL": "", "GATEWAYZ_NAMESPACE": "", "GATEWAYZ_WINDOW_SECONDS": "",
             "GATEWAYZ_HANDLE_SIGTERM": "", "GATEWAYZ_MAX_BUFFER": ""}  # fmt: skip
    assert ClientSettings.from_env(empty) == ClientSettings()


@pytest.mark.parametrize(
    ("word", "expected"),
    [("1", True), ("true", True), ("Yes", True), (" on ", True),
     ("0", False), ("false", False), ("NO", False), ("off", False)],
)  # fmt: skip
def test_handle_sigterm_reads_the_usual_words(word: str, expected: bool) -> None:
    assert ClientSettings.from_env({"GATEWAYZ_HANDLE_SIGTERM": word}).handle_sigterm is expected


def test_from_env_names_the_variable_it_cannot_read() -> None:
    with pytest.raises(ValueError) as info:
        ClientSettings.from_env({"GATEWAYZ_HANDLE_SIGTERM": "maybe"})
    assert str(info.value) == (
        "GATEWAYZ_HANDLE_SIGTERM: invalid value 'maybe' "
        "(expected a boolean: 1/0, true/false, yes/no, on/off)"
    )
    with pytest.raises(ValueError, match=r"^GATEWAYZ_MAX_BUFFER: invalid value 'lots' \("):
        ClientSettings.from_env({"GATEWAYZ_MAX_BUFFER": "lots"})
    with pytest.raises(ValueError, match=r"^GATEWAYZ_WINDOW_SECONDS: invalid value 'x' \("):
        ClientSettings.from_env({"GATEWAYZ_WINDOW_SECONDS": "x"})
    with pytest.raises(ValueError) as info:  # read, then refused by a rule: named too
        ClientSettings.from_env({"GATEWAYZ_WINDOW_SECONDS": "-5"})
    assert str(info.value) == (
        "GATEWAYZ_WINDOW_SECONDS: window_seconds must be from 1 to 86400, got -5.0"
    )
    with pytest.raises(ValueError) as info:  # beyond: Redis refused the TTL of every batch
        ClientSettings.from_env({"GATEWAYZ_RETENTION_SECONDS": "1e19"})
    assert str(info.value) == (
        "GATEWAYZ_RETENTION_SECONDS: retention_seconds must be from 60 to 31536000, got 1e+19"
    )
    with pytest.raises(ValueError) as info:
        ClientSettings.from_env({"GATEWAYZ_REDIS_URL": "localhost:6379"})
    assert str(info.value) == (  # every scheme the project reads, not redis-py's three
        "GATEWAYZ_REDIS_URL: invalid Redis URL: a Redis URL starts with one of redis://, "
        "rediss://, unix://, redis+cluster://, rediss+cluster://, redis+sentinel://, "
        "rediss+sentinel:// (redis://host:6379/0)"
    )


def test_the_shared_defaults_are_the_protocols_declarations() -> None:
    """What the aggregator must agree on is declared once, in gatewayz_protocol.options."""
    settings = ClientSettings()
    for option in SHARED:
        assert getattr(settings, option.name) == option.default, option.env


OLD_NAMES = {
    "REDIS_URL": ("redis_url", "redis://cache:6380/2"),
    "METRICS_NAMESPACE": ("namespace", "prod"),
    "WINDOW_SECONDS": ("window_seconds", 120.0),
    "METRICS_FLUSH_INTERVAL_SECONDS": ("flush_interval_seconds", 0.2),
    "METRICS_MAX_BUFFER": ("max_buffer", 5000),
    "METRICS_BREAKER_REFRESH_SECONDS": ("breaker_refresh_seconds", 1.5),
    "METRICS_MAX_SERIES": ("max_series_per_metric", 50),
    "METRICS_GAUGE_TTL_SECONDS": ("gauge_ttl_seconds", 12.0),
    "METRICS_MAX_PROVIDERS": ("max_providers", 20),
    "METRICS_HANDLE_SIGTERM": ("handle_sigterm", False),
    "METRICS_PROVIDER_SHARDS": ("provider_shards", "openrouter:8"),
    "EXPORT_HORIZON_SECONDS": ("export_horizon_seconds", 600.0),
}


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_an_old_name_alone_still_works_with_a_warning_naming_the_new_one(old: str) -> None:
    forget_notices()
    field, value = OLD_NAMES[old]
    raw = "0" if value is False else str(value)
    new = next(option.env for option in CLIENT_OPTIONS if option.name == field)
    with pytest.warns(FutureWarning, match=f"^{old} is deprecated .*: set {new} instead"):
        settings = ClientSettings.from_env({old: raw})
    assert getattr(settings, field) == value


def test_the_new_name_wins_over_the_old_one_and_says_so() -> None:
    forget_notices()
    env = {"GATEWAYZ_NAMESPACE": "new", "METRICS_NAMESPACE": "old"}
    with pytest.warns(FutureWarning, match="^METRICS_NAMESPACE is ignored: GATEWAYZ_NAMESPACE"):
        assert ClientSettings.from_env(env).namespace == "new"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # told once per process
        assert ClientSettings.from_env(env).namespace == "new"


def test_breaker_wake_failures_zero_turns_wakes_off_and_negative_is_refused() -> None:
    assert ClientSettings(breaker_wake_failures=0).breaker_wake_failures == 0
    from_env = ClientSettings.from_env({"GATEWAYZ_BREAKER_WAKE_FAILURES": "12"})
    assert from_env.breaker_wake_failures == 12
    with pytest.raises(ValueError, match="breaker_wake_failures must be a whole number from 0"):
        ClientSettings(breaker_wake_failures=-1)

"""The settings object (aggregator/settings.py) built directly: each rule with its exact message,
the first broken rule named, what never reaches a log (passwords, the token). Pure."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from aggregator.core.breaker import BreakerConfig
from aggregator.core.snapshot import HealthTargets
from aggregator.settings import AggregatorSettings, describe_error, read_token_file, redact


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"redis_url": "http://x"}, "invalid Redis URL"),
        ({"auth_token": "two words"}, "auth token must be one word of visible ASCII characters"),
        ({"instance": "a|b"}, "instance must not contain '|'"),
        ({"interval_seconds": float("nan")}, "interval must be from 0.1 to 86400, got nan"),
        ({"log_level": "LOUD"}, "unknown log level 'LOUD'"),
        ({"providers": ("ok", "not ok")}, "invalid provider name 'not ok'"),
        ({"interval_seconds": 0.0}, "interval must be from 0.1 to 86400, got 0.0"),
        ({"breaker_interval_seconds": -1.0}, "breaker interval must be from 0.1 to 3600"),
        ({"permit_seconds": 0.0}, "breaker permit seconds must be from 0.1 to 3600"),
        ({"window_seconds": 0.0}, "window must be from 1 to 86400"),
        ({"export_horizon_seconds": 10.0}, "export horizon must be between"),
        ({"port": 70000}, "port must be a whole number from 1 to 65535, got 70000"),
        ({"send_timeout_seconds": 0.0}, "send timeout must be from 0.1 to 3600"),
        ({"max_header_bytes": 1023}, "max header bytes must be a whole number from 1024 to"),
        ({"max_connections": 0}, "max connections must be a whole number from 1 to 100000"),
        ({"latency_target_seconds": 10.0}, "need 0 < latency target < latency ceiling"),
        ({"breaker": BreakerConfig(min_calls=0)}, "breaker min calls must be a whole number"),
        ({"breaker": BreakerConfig(half_open_calls=0)}, "breaker half open calls must be a"),
        ({"breaker": BreakerConfig(failure_rate=0.0)}, "breaker failure rate must be above 0, at"),
        ({"breaker": BreakerConfig(open_seconds=400.0)}, "need 0 < breaker open seconds"),
        ({"breaker": BreakerConfig(window_seconds=0.0)}, "breaker window must be from 0.1 to"),
        ({"breaker": BreakerConfig(half_open_timeout_seconds=0.0)}, "breaker half open timeout"),
        ({"breaker": BreakerConfig(max_open_share=1.5)}, "breaker max open share must be from 0"),
    ],
)
def test_each_rule_names_itself(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        AggregatorSettings(**changes)  # type: ignore[arg-type]
    assert str(raised.value).startswith(message)


def test_the_first_broken_rule_is_the_one_named() -> None:
    with pytest.raises(ValueError, match=r"^interval must be"):  # before the log level's rule
        AggregatorSettings(interval_seconds=float("inf"), log_level="LOUD")
    with pytest.raises(ValueError, match=r"^port"):  # before the latency rule
        AggregatorSettings(port=0, latency_target_seconds=20.0)


def test_secrets_stay_out_of_the_repr_and_the_messages() -> None:
    settings = AggregatorSettings(redis_url="redis://:hunter2@h:6379/0", auth_token="tok3n")
    assert "hunter2" not in repr(settings) and "tok3n" not in repr(settings)
    with pytest.raises(ValueError) as raised:
        AggregatorSettings(redis_url="redis+sentinel://:hunter2@/")
    assert "hunter2" not in str(raised.value)
    assert redact("redis://u:hunter2@h/0") == "redis://***@h/0"
    assert describe_error(OSError("at redis://:hunter2@h/0")) == "OSError: at redis://***@h/0"


def test_derived_values() -> None:
    settings = AggregatorSettings(
        breaker_interval_seconds=4.0,
        window_seconds=120.0,
        latency_target_seconds=1.0,
        latency_ceiling_seconds=5.0,
    )
    assert settings.lease_seconds == 6.0
    assert settings.health_targets == HealthTargets(120.0, 1.0, 5.0)


def test_a_token_file_holds_one_word(tmp_path: Path) -> None:
    folder = tmp_path
    (folder / "ok").write_text("  s3cret-token\n")
    assert read_token_file(str(folder / "ok")) == "s3cret-token"
    (folder / "two").write_text("two words")
    with pytest.raises(ValueError, match="must be one word") as raised:
        read_token_file(str(folder / "two"))
    assert "two words" not in str(raised.value)  # never quoted
    (folder / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        read_token_file(str(folder / "empty"))
    with pytest.raises(ValueError, match="cannot read auth token file"):
        read_token_file(str(folder / "missing"))


def test_a_password_holding_a_slash_or_an_at_is_redacted_whole() -> None:
    assert redact("redis://:pa/ss@h:6379/0 refused") == "redis://***@h:6379/0 refused"
    assert redact("x rediss://u:p@ss/w@h/0 y") == "x rediss://***@h/0 y"


def test_an_error_of_redis_refusing_the_credentials_says_where_to_put_them() -> None:
    hint = (
        "Redis wants other credentials: put them in GATEWAYZ_REDIS_URL or --redis-url as "
        "redis://user:password@host:port/db"
    )
    refused = redis.AuthenticationError("invalid username-password pair or user is disabled.")
    assert describe_error(refused) == (
        f"AuthenticationError: invalid username-password pair or user is disabled ({hint})"
    )
    no_auth = redis.ResponseError("NOAUTH Authentication required.")
    assert describe_error(no_auth) == f"ResponseError: NOAUTH Authentication required ({hint})"
    leaked = redis.AuthenticationError("at redis://:hunter2@h/0")  # redacted, the hint kept
    assert describe_error(leaked) == f"AuthenticationError: at redis://***@h/0 ({hint})"
    assert describe_error(redis.ConnectionError("Connection refused.")) == (
        "ConnectionError: Connection refused."
    )


def test_a_redis_url_of_another_scheme_names_every_scheme_read() -> None:
    with pytest.raises(ValueError) as raised:
        AggregatorSettings(redis_url="127.0.0.1:6379")
    assert str(raised.value) == (
        "invalid Redis URL: a Redis URL starts with one of redis://, rediss://, unix://, "
        "redis+cluster://, rediss+cluster://, redis+sentinel://, rediss+sentinel:// "
        "(redis://host:6379/0)"
    )

"""The options (aggregator/options.py, from aggregator/option_table.py): settings from flags, then
the environment (the old names for one release, with a warning), then defaults; bad values exit 2
with one line. Pure: explicit argv and env."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from aggregator.core.breaker import BreakerConfig
from aggregator.option_table import AGGREGATOR_OPTIONS
from aggregator.options import parse_settings
from aggregator.settings import AggregatorSettings
from gatewayz_protocol.options import forget_notices


def test_defaults() -> None:
    s = parse_settings([], {})
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.namespace == "gatewayz"
    assert s.host == "127.0.0.1"
    assert s.port == 9108
    assert s.interval_seconds == 30.0
    assert s.breaker_interval_seconds == 5.0
    assert s.window_seconds == 300.0
    assert s.providers == ()
    assert s.latency_target_seconds == 2.0
    assert s.latency_ceiling_seconds == 10.0
    assert s.loki_url is None
    assert s.log_level == "INFO"
    assert s.otel_console is False
    assert s.permit_seconds == 30.0
    assert s.breaker == BreakerConfig(
        min_calls=20,
        failure_rate=0.5,
        open_seconds=30.0,
        max_open_seconds=300.0,
        half_open_calls=5,
        half_open_timeout_seconds=60.0,
        rate_limited_is_failure=True,
        max_open_share=1.0,
    )
    # host:port:pid
    assert s.instance == f"{socket.gethostname()}:9108:{os.getpid()}"


def test_flags_win_over_env() -> None:
    env = {
        "GATEWAYZ_AGGREGATION_INTERVAL_SECONDS": "20",
        "GATEWAYZ_AGGREGATOR_PORT": "8000",
        "GATEWAYZ_BREAKER_MIN_CALLS": "7",
        "GATEWAYZ_NAMESPACE": "fromenv",
    }
    argv = ["--interval", "10", "--port", "9000", "--breaker-min-calls", "3", "--namespace", "cli"]
    s = parse_settings(argv, env)
    assert s.interval_seconds == 10.0
    assert s.port == 9000
    assert s.breaker.min_calls == 3
    assert s.namespace == "cli"


def test_env_used_without_flag() -> None:
    env = {
        "GATEWAYZ_REDIS_URL": "redis://example:6380/2",
        "GATEWAYZ_AGGREGATION_INTERVAL_SECONDS": "20",
        "GATEWAYZ_AGGREGATOR_PORT": "8000",
        "GATEWAYZ_AGGREGATOR_INSTANCE": "replica-1",
        "GATEWAYZ_BREAKER_MIN_CALLS": "7",
        "GATEWAYZ_BREAKER_FAILURE_RATE": "0.25",
        "GATEWAYZ_LATENCY_TARGET_SECONDS": "1.5",
        "GATEWAYZ_PROVIDERS": "openrouter,anthropic",
    }
    s = parse_settings(["--port", "9000"], env)
    assert s.redis_url == "redis://example:6380/2"
    assert s.interval_seconds == 20.0
    assert s.port == 9000  # the flag still wins for its own option
    assert s.instance == "replica-1"
    assert s.breaker.min_calls == 7
    assert s.breaker.failure_rate == 0.25
    assert s.breaker.open_seconds == 30.0  # untouched breaker field keeps its default
    assert s.latency_target_seconds == 1.5
    assert s.providers == ("openrouter", "anthropic")


def test_empty_env_value_means_default() -> None:
    s = parse_settings(
        [], {"GATEWAYZ_AGGREGATOR_PORT": "", "GATEWAYZ_AGGREGATION_INTERVAL_SECONDS": ""}
    )
    assert s.port == 9108
    assert s.interval_seconds == 30.0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a, b", ("a", "b")),
        ("openrouter", ("openrouter",)),
        (" a ,, b ,", ("a", "b")),  # blanks and empty items dropped
        ("a, ,b", ("a", "b")),  # whitespace-only item dropped
        ("google-vertex,fireworks.ai", ("google-vertex", "fireworks.ai")),
    ],
)
def test_providers_flag(raw: str, expected: tuple[str, ...]) -> None:
    assert parse_settings(["--providers", raw], {}).providers == expected


def test_http_limits_default_safe_and_configurable() -> None:
    s = parse_settings([], {})
    assert (s.max_header_bytes, s.max_connections) == (8192, 100)
    assert (s.header_timeout_seconds, s.keepalive_timeout_seconds) == (10.0, 5.0)
    assert s.send_timeout_seconds == 10.0
    env = {
        "GATEWAYZ_AGGREGATOR_MAX_HEADER_BYTES": "16384",
        "GATEWAYZ_AGGREGATOR_HEADER_TIMEOUT_SECONDS": "4",
        "GATEWAYZ_AGGREGATOR_KEEPALIVE_TIMEOUT_SECONDS": "2.5",
        "GATEWAYZ_AGGREGATOR_SEND_TIMEOUT_SECONDS": "20",
        "GATEWAYZ_AGGREGATOR_MAX_CONNECTIONS": "500",
    }
    s = parse_settings(["--max-connections", "50", "--header-timeout", "0.5"], env)
    assert s.max_connections == 50  # flags win
    assert s.header_timeout_seconds == 0.5
    assert s.max_header_bytes == 16384  # env without a flag
    assert s.keepalive_timeout_seconds == 2.5
    assert s.send_timeout_seconds == 20.0


@pytest.mark.parametrize(
    ("raw", "bounds"),
    [
        ("", (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)),  # the seed's
        ("60", (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 60.0)),
        (" 60, 15 ,,15", (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 60.0)),  # sorted, once each
    ],
)
def test_extra_latency_buckets_are_added_to_the_seeds(raw: str, bounds: tuple[float, ...]) -> None:
    settings = parse_settings([], {"GATEWAYZ_AGGREGATOR_EXTRA_LATENCY_BUCKETS": raw})
    assert settings.health_targets.histogram_bounds == bounds


def test_otel_console_flag() -> None:
    assert parse_settings(["--otel-console"], {}).otel_console is True


@pytest.mark.parametrize(
    ("argv", "env", "fragment"),
    [
        (["--interval", "abc"], {}, "--interval: invalid value 'abc'"),
        (
            [],
            {"GATEWAYZ_AGGREGATION_INTERVAL_SECONDS": "abc"},
            "GATEWAYZ_AGGREGATION_INTERVAL_SECONDS",
        ),
        (["--port", "0"], {}, "port must be a whole number from 1 to 65535, got 0"),
        (["--port", "65536"], {}, "got 65536"),
        (["--port", "1.5"], {}, "--port"),
        (["--interval", "0"], {}, "interval"),
        (["--breaker-failure-rate", "1.5"], {}, "failure rate"),
        (["--breaker-failure-rate", "0"], {}, "failure rate"),
        (["--breaker-min-calls", "0"], {}, "min calls"),
        (["--providers", "bad name"], {}, "bad name"),
        (["--latency-target", "20"], {}, "latency target"),  # default ceiling is 10
        (["--namespace", "a:b"], {}, "namespace"),
        (["--no-such-flag"], {}, "--no-such-flag"),
        (["--interval", "inf"], {}, "interval must be from 0.1 to 86400, got inf"),
        (["--interval", "1e30"], {}, "interval must be from 0.1 to 86400, got 1e+30"),
        (["--interval", "1e-9"], {}, "interval must be from 0.1 to 86400, got 1e-09"),
        (["--breaker-interval", "1e30"], {}, "breaker interval must be from 0.1 to 3600"),
        (["--max-providers", "1e30"], {}, "max providers must be a whole number from 1 to"),
        (["--host", "a\nb"], {}, "host must be an address or a name, without spaces or"),
        (["--window", "nan"], {}, "window"),
        (["--breaker-max-open-share", "1.5"], {}, "max open share"),
        (["--log-level", "LOUD"], {}, "log level"),
        (["--max-header-bytes", "100"], {}, "max header bytes must be a whole number from 1024"),
        (["--max-header-bytes", "8k"], {}, "--max-header-bytes: invalid value '8k'"),
        (["--header-timeout", "0"], {}, "header timeout must be from 0.1 to 3600, got 0.0"),
        (
            [],
            {"GATEWAYZ_AGGREGATOR_KEEPALIVE_TIMEOUT_SECONDS": "-1"},
            "keepalive timeout must be from 0.1 to 3600, got -1.0",
        ),
        (["--send-timeout", "nan"], {}, "send timeout must be from 0.1 to 3600, got nan"),
        (["--header-timeout", "inf"], {}, "header timeout must be from 0.1 to 3600, got inf"),
        (["--max-connections", "0"], {}, "max connections must be a whole number from 1 to"),
        (["--max-connections", "1.5"], {}, "--max-connections: invalid value '1.5'"),
        (
            ["--extra-latency-buckets", "15,20,45"],
            {},
            "extra latency buckets must be among 15, 30, 60 (the window's latency partitions "
            "above 10 s), got 20, 45",
        ),
        ([], {"GATEWAYZ_AGGREGATOR_EXTRA_LATENCY_BUCKETS": "30s"}, "invalid value '30s'"),
    ],
)
def test_bad_values_exit_2_with_one_line(
    argv: list[str], env: dict[str, str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parse_settings(argv, env)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.endswith("\n")
    assert captured.err.count("\n") == 1  # a single line, no usage block
    assert captured.err.startswith("aggregator: error: ")
    assert fragment in captured.err


def test_the_export_horizon_lies_between_the_window_and_the_retention() -> None:
    assert AggregatorSettings(export_horizon_seconds=300).export_horizon_seconds == 300
    for bad in (299.0, 7 * 24 * 3600.0 + 1):
        with pytest.raises(ValueError, match="export horizon"):
            AggregatorSettings(export_horizon_seconds=bad)


@pytest.mark.parametrize(
    "argv",
    [
        ["--loki-url", "http://user:s3cret@[bad/loki"],
        ["--loki-url", "ht tp://user:s3cret@loki:3100"],
        ["--loki-url", "http://user:s3cret@loki:99999"],
        ["--otlp-endpoint", "http://user:s3cret@tempo:port"],
        ["--redis-url", "redis://:s3cret@host:99999999/0"],
    ],
)
def test_a_bad_url_with_credentials_is_one_line_that_never_shows_them(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parse_settings(argv, {})
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("aggregator: error: ")
    assert "s3cret" not in err


def test_the_redis_url_can_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "redis-url"
    secret.write_text("redis://:pa%2Fss@10.0.0.5:6380/2\n")
    settings = parse_settings(
        ["--redis-url-file", str(secret)], {"GATEWAYZ_REDIS_URL": "redis://other:6379/0"}
    )
    assert settings.redis_url == "redis://:pa%2Fss@10.0.0.5:6380/2"  # the file wins
    env = {"GATEWAYZ_REDIS_URL_FILE": str(secret)}
    assert parse_settings([], env).redis_url == "redis://:pa%2Fss@10.0.0.5:6380/2"
    assert "pa%2Fss" not in repr(settings)


def test_an_unreadable_redis_url_file_never_quotes_a_content(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    for path, message in ((empty, "is empty"), (tmp_path / "missing", "cannot read")):
        with pytest.raises(SystemExit):
            parse_settings(["--redis-url-file", str(path)], {})
        assert message in capsys.readouterr().err


def test_help_shows_each_options_variable_and_default(capsys: pytest.CaptureFixture[str]) -> None:
    from aggregator.__main__ import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for shown in (
        "usage: aggregator [breaker|inspect] [flags]",
        "(env GATEWAYZ_REDIS_URL; default: redis://127.0.0.1:6379/0)",
        "(env GATEWAYZ_WINDOW_SECONDS; default: 300; from 1 to 86400)",
        "(env GATEWAYZ_BREAKER_MIN_CALLS; default: 20; a whole number from 1 to 1000000)",
        "(env GATEWAYZ_BREAKER_FAILURE_RATE; default: 0.5; above 0, at most 1)",
        "(env GATEWAYZ_MAX_PROVIDERS; default: 1000; a whole number from 1 to 100000)",
        "(env GATEWAYZ_AGGREGATOR_INSTANCE; default: host:port:pid)",
        "(env GATEWAYZ_LOKI_URL; default: none)",
    ):
        assert shown in text, shown


def test_help_names_every_option_with_its_variable_and_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from aggregator.__main__ import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in AGGREGATOR_OPTIONS:
        bounds = f"; {option.bounds.text()}" if option.bounds else ""  # its range, if a number
        assert f"(env {option.env}; default: {option.shown_default()}{bounds})" in text, option.env


def test_the_defaults_are_the_option_tables() -> None:
    settings = parse_settings([], {})
    for option in AGGREGATOR_OPTIONS:
        field = option.name.removeprefix("breaker_")
        if option.name.endswith("_file") or option.default_text is not None:
            continue
        if field != option.name and hasattr(settings.breaker, field):
            assert getattr(settings.breaker, field) == option.default, option.env
        else:
            assert getattr(settings, option.name) == option.default, option.env


@pytest.mark.parametrize(
    ("old", "new", "raw", "read"),
    [
        ("REDIS_URL", "GATEWAYZ_REDIS_URL", "redis://old:6379/1", lambda s: s.redis_url),
        ("METRICS_NAMESPACE", "GATEWAYZ_NAMESPACE", "old", lambda s: s.namespace),
        ("WINDOW_SECONDS", "GATEWAYZ_WINDOW_SECONDS", "120", lambda s: s.window_seconds),
        ("AGGREGATOR_PORT", "GATEWAYZ_AGGREGATOR_PORT", "8000", lambda s: s.port),
        ("BREAKER_MIN_CALLS", "GATEWAYZ_BREAKER_MIN_CALLS", "7", lambda s: s.breaker.min_calls),
        ("PROVIDERS", "GATEWAYZ_PROVIDERS", "a,b", lambda s: s.providers),
        ("LOKI_URL", "GATEWAYZ_LOKI_URL", "http://loki:3100", lambda s: s.loki_url),
        ("LOG_LEVEL", "GATEWAYZ_LOG_LEVEL", "DEBUG", lambda s: s.log_level),
    ],
)
def test_an_old_variable_alone_still_works_with_a_warning_naming_the_new_one(
    old: str, new: str, raw: str, read: Callable[[AggregatorSettings], object]
) -> None:
    forget_notices()
    with pytest.warns(FutureWarning, match=f"^{old} is deprecated .*: set {new} instead"):
        from_old = parse_settings([], {old: raw})
    assert read(from_old) == read(parse_settings([], {new: raw}))


def test_the_new_variable_wins_over_the_old_one_and_says_so_once() -> None:
    forget_notices()
    env = {"GATEWAYZ_AGGREGATOR_PORT": "8000", "AGGREGATOR_PORT": "7000"}
    with pytest.warns(FutureWarning, match="^AGGREGATOR_PORT is ignored: GATEWAYZ_AGGREGATOR_PORT"):
        assert parse_settings([], env).port == 8000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse_settings([], env).port == 8000
        assert parse_settings(["--port", "9000"], env).port == 9000  # the flag wins over both


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"GATEWAYZ_WINDOW_SECONDS": "x"},
            "aggregator: error: GATEWAYZ_WINDOW_SECONDS: invalid value 'x' (expected a number)\n",
        ),
        (
            {"AGGREGATION_INTERVAL_SECONDS": "abc"},
            "aggregator: error: AGGREGATION_INTERVAL_SECONDS: invalid value 'abc' "
            "(expected a number)\n",
        ),
        (
            {"GATEWAYZ_AGGREGATOR_PORT": "1.5"},
            "aggregator: error: GATEWAYZ_AGGREGATOR_PORT: invalid value '1.5' "
            "(expected a whole number)\n",
        ),
        (  # read, then refused by a rule of the settings: named the same way
            {"GATEWAYZ_AGGREGATION_INTERVAL_SECONDS": "0"},
            "aggregator: error: GATEWAYZ_AGGREGATION_INTERVAL_SECONDS: interval must be from 0.1 "
            "to 86400, got 0.0\n",
        ),
        (
            {"GATEWAYZ_BREAKER_FAILURE_RATE": "50"},
            "aggregator: error: GATEWAYZ_BREAKER_FAILURE_RATE: breaker failure rate must be "
            "above 0, at most 1, got 50.0\n",
        ),
        (
            {"GATEWAYZ_PROVIDERS": "Open Router"},
            "aggregator: error: GATEWAYZ_PROVIDERS: invalid provider name 'Open Router': use 1-64 "
            "of A-Z a-z 0-9 . _ -, starting with a letter or digit\n",
        ),
        (  # two values that break a rule together: the rule names them
            {"GATEWAYZ_LATENCY_TARGET_SECONDS": "8", "GATEWAYZ_LATENCY_CEILING_SECONDS": "5"},
            "aggregator: error: need 0 < latency target < latency ceiling\n",
        ),
    ],
)
def test_a_bad_variable_is_one_line_naming_the_variable_it_came_from(
    env: dict[str, str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with pytest.raises(SystemExit):
            parse_settings([], env)
    assert capsys.readouterr().err == line


def test_a_flag_refused_by_a_rule_is_named_as_given(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_settings(["--interval", "0"], {"GATEWAYZ_BREAKER_INTERVAL_SECONDS": "5"})
    assert capsys.readouterr().err == (
        "aggregator: error: --interval: interval must be from 0.1 to 86400, got 0.0\n"
    )


def test_retention_and_max_series_are_settings_of_both_sides() -> None:
    settings = parse_settings(["--max-series", "50"], {"GATEWAYZ_RETENTION_SECONDS": "86400"})
    assert (settings.retention_seconds, settings.max_series_per_metric) == (86400.0, 50)


def test_breaker_providers_from_flag_or_env_and_bad_values_exit_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    flag = parse_settings(["--breaker-providers", "groq:min_calls=40"], {})
    assert flag.breaker_policy.config("groq").min_calls == 40
    assert flag.breaker_policy.config("openrouter").min_calls == 20
    env = parse_settings(
        ["--breaker-min-calls", "10"],
        {"GATEWAYZ_BREAKER_PROVIDERS": '{"groq": {"failure_rate": 0.25}}'},
    )
    assert env.breaker_policy.config("groq") == replace(env.breaker, failure_rate=0.25)
    assert env.breaker_policy.config("groq").min_calls == 10  # the global setting, inherited
    for argv, message in [
        (["--breaker-providers", "groq:min_cals=4"], "'min_cals' is not a per-provider"),
        (["--breaker-providers", "groq:failure_rate=2"], "breaker providers: groq: breaker"),
    ]:
        with pytest.raises(SystemExit) as exited:
            parse_settings(argv, {})
        assert exited.value.code == 2
        assert message in capsys.readouterr().err


def test_python_m_aggregator_says_an_old_variable_in_one_line() -> None:
    """Not a FutureWarning naming a line of the aggregator's own code and quoting it."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAYZ_")}
    done = subprocess.run(
        [sys.executable, "-m", "aggregator", "--port", "notaport"],
        env={**env, "REDIS_URL": "redis://old:6379/0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (
        2,
        "aggregator: warning: REDIS_URL is deprecated and no longer read from the next release: "
        "set GATEWAYZ_REDIS_URL instead (its value is used meanwhile).\n"
        "aggregator: error: --port: invalid value 'notaport' (expected a whole number)\n",
    )

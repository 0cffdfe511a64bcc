"""The aggregator's logging and tracing set-up (aggregator/observability.py): stderr at the
configured level, APScheduler quiet, and where the cycle spans go (flag over environment)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

import gatewayz_telemetry
from aggregator.observability import _traces_endpoint, configure_logging
from aggregator.settings import AggregatorSettings

OTLP_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    scheduler_level = logging.getLogger("apscheduler").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("apscheduler").setLevel(scheduler_level)


def test_stderr_at_the_configured_level_and_the_scheduler_quiet(
    restored_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in (
        "GATEWAYZ_LOKI_URL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ):
        monkeypatch.delenv(variable, raising=False)
    configure_logging(AggregatorSettings(log_level="warning"))
    root = logging.getLogger()
    assert root.level == logging.WARNING
    assert [type(h) for h in root.handlers] == [logging.StreamHandler]  # no Loki: none asked
    assert logging.getLogger("apscheduler").level == logging.WARNING


@pytest.mark.parametrize(
    ("flag", "env", "expected"),
    [
        (None, {}, None),
        ("http://tempo:4318", {}, "http://tempo:4318/v1/traces"),  # the flag, given
        # the flag's value read from its own variable: the environment decides, traces first
        (
            "http://env:4318",
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/v1/traces",
            },
            "http://traces:4318/v1/traces",
        ),
        (
            "http://flag:4318",
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318"},
            "http://flag:4318/v1/traces",
        ),
    ],
)
def test_the_cycle_spans_go_where_the_flag_or_else_the_environment_says(
    flag: str | None, env: dict[str, str], expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in OTLP_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    from_env = gatewayz_telemetry.TelemetrySettings.from_env("gatewayz-aggregator", env)
    assert _traces_endpoint(AggregatorSettings(otlp_endpoint=flag), from_env) == expected

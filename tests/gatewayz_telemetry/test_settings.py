"""What telemetry ships and where (gatewayz_telemetry.settings): URLs as people write them, the
environment read once, the checks, the traces' resource and the logs' labels. Pure: mappings
stand in for the environment (``os.environ`` only through monkeypatch)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from gatewayz_protocol.options import forget_notices
from gatewayz_telemetry import TelemetrySettings
from gatewayz_telemetry.settings import (
    DEFAULT_ENVIRONMENT,
    PUSH_PATH,
    TELEMETRY_OPTIONS,
    TRACES_PATH,
    push_url,
    resource_attributes,
    traces_url,
)

ENV_NAMES = (
    "GATEWAYZ_LOKI_URL",
    "GATEWAYZ_LOKI_APP",
    "GATEWAYZ_LOKI_ENV",
    "GATEWAYZ_DEPLOYMENT_ENV",
    "GATEWAYZ_LOG_LEVEL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_BSP_MAX_QUEUE_SIZE",
)


def test_settings_come_from_the_environment_once() -> None:
    settings = TelemetrySettings.from_env(
        "gatewayz-api",
        {
            "GATEWAYZ_LOKI_URL": "http://loki:3100",
            "GATEWAYZ_DEPLOYMENT_ENV": "staging",
            "GATEWAYZ_LOG_LEVEL": "debug",
        },
    )
    assert settings.loki_url == "http://loki:3100/loki/api/v1/push"
    assert settings.labels() == {"app": "gatewayz-api", "env": "staging", "service": "gatewayz-api"}
    assert settings.log_level == "DEBUG"
    both = {
        "GATEWAYZ_DEPLOYMENT_ENV": "staging",
        "GATEWAYZ_LOKI_ENV": "eu-prod",
        "GATEWAYZ_LOKI_APP": "gw",
    }
    assert TelemetrySettings.from_env("s", both).labels() == {
        "app": "gw",
        "env": "eu-prod",
        "service": "s",
    }
    assert not TelemetrySettings.from_env("s", {"GATEWAYZ_LOKI_URL": " "}).logs_enabled
    assert push_url("https://logs.example/loki/api/v1/push") == (
        "https://logs.example/loki/api/v1/push"
    )
    with pytest.raises(ValueError):
        TelemetrySettings.from_env("s", {"GATEWAYZ_LOKI_URL": "loki:3100"})


def test_the_paths_and_the_default_environment() -> None:
    assert (PUSH_PATH, TRACES_PATH, DEFAULT_ENVIRONMENT) == (
        "/loki/api/v1/push",
        "/v1/traces",
        "dev",
    )


@pytest.mark.parametrize(
    ("url", "push"),
    [
        ("http://loki:3100", "http://loki:3100/loki/api/v1/push"),
        ("http://loki:3100/", "http://loki:3100/loki/api/v1/push"),
        ("  https://u:p@logs.example  ", "https://u:p@logs.example/loki/api/v1/push"),
        ("http://loki:3100?tenant=a", "http://loki:3100/loki/api/v1/push?tenant=a"),
        ("http://gw/custom/push", "http://gw/custom/push"),  # a path given is kept
        ("http://loki:3100/loki/api/v1/push", "http://loki:3100/loki/api/v1/push"),
    ],
)
def test_a_loki_base_url_gets_the_push_path(url: str, push: str) -> None:
    assert push_url(url) == push


@pytest.mark.parametrize("url", ["loki:3100", "ftp://loki", "http://", "", "/loki/api/v1/push"])
def test_a_loki_url_must_be_http(url: str) -> None:
    with pytest.raises(ValueError, match="GATEWAYZ_LOKI_URL must be an http"):
        push_url(url)


@pytest.mark.parametrize(
    ("base", "traces", "url"),
    [
        (None, None, None),
        ("http://tempo:4318", None, "http://tempo:4318/v1/traces"),
        ("http://tempo:4318/", None, "http://tempo:4318/v1/traces"),
        (" https://collector/otlp/ ", None, "https://collector/otlp/v1/traces"),
        ("http://tempo:4318", "http://other:4318/custom", "http://other:4318/custom"),
        (None, " http://other:4318/v1/traces ", "http://other:4318/v1/traces"),
    ],
)
def test_the_traces_url_as_the_otlp_specification_builds_it(
    base: str | None, traces: str | None, url: str | None
) -> None:
    assert traces_url(base, traces) == url


@pytest.mark.parametrize(("base", "traces"), [("tempo:4318", None), (None, "grpc://tempo:4317")])
def test_a_traces_url_must_be_http(base: str | None, traces: str | None) -> None:
    with pytest.raises(ValueError, match="OTLP traces endpoint must be an http"):
        traces_url(base, traces)


@pytest.mark.parametrize(
    ("raw", "attributes"),
    [
        (None, {}),
        ("", {}),
        (
            "team=llm, region = eu%2Dwest ,noequals,=orphan,k=a=b,%6Bey=v",
            {"team": "llm", "region": "eu-west", "k": "a=b", "key": "v"},
        ),
        ("service.name=x%20y", {"service.name": "x y"}),
        ("a=1,a=2", {"a": "2"}),
    ],
)
def test_resource_attributes_from_their_environment_variable(
    raw: str | None, attributes: dict[str, str]
) -> None:
    assert resource_attributes(raw) == attributes


def test_defaults() -> None:
    settings = TelemetrySettings(service_name="svc")
    assert (settings.logs_enabled, settings.traces_enabled) == (False, False)
    assert settings.labels() == {"app": "svc", "env": "dev", "service": "svc"}
    assert settings.resource_attributes() == {
        "service.name": "svc",
        "deployment.environment": "dev",
    }
    assert (settings.queue_size, settings.max_line_chars, settings.batch_size) == (
        10_000,
        16_384,
        500,
    )
    assert (settings.span_queue_size, settings.exit_timeout_seconds) == (2048, 5.0)


def test_urls_given_to_the_constructor_are_normalised_and_checked() -> None:
    settings = TelemetrySettings(
        service_name="svc",
        loki_url="http://loki:3100",
        otlp_traces_endpoint="http://tempo:4318/v1/traces",
    )
    assert settings.loki_url == "http://loki:3100/loki/api/v1/push"
    assert settings.otlp_traces_endpoint == "http://tempo:4318/v1/traces"
    assert (settings.logs_enabled, settings.traces_enabled) == (True, True)
    with pytest.raises(ValueError):
        TelemetrySettings(service_name="svc", otlp_traces_endpoint="tempo:4318")


@pytest.mark.parametrize(
    "fields",
    [
        {"service_name": ""},
        {"log_level": "verbose"},
        {"log_level": ""},
        *({name: 0} for name in ("queue_size", "max_line_chars", "batch_size", "span_queue_size")),
        *(
            {name: value}
            for name in (
                "connect_timeout_seconds",
                "read_timeout_seconds",
                "backoff_initial_seconds",
                "backoff_max_seconds",
                "exit_timeout_seconds",
                "otlp_timeout_seconds",
            )
            for value in (0.0, -1.0, math.nan)
        ),
    ],
)
def test_invalid_settings_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        TelemetrySettings(**{"service_name": "svc", **fields})  # type: ignore[arg-type]


def test_a_log_level_is_checked_in_any_case() -> None:
    assert TelemetrySettings(service_name="svc", log_level="warning").log_level == "warning"


def test_settings_are_frozen() -> None:
    settings = TelemetrySettings(service_name="svc")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.queue_size = 1  # type: ignore[misc]


def test_every_variable_read_from_the_environment() -> None:
    settings = TelemetrySettings.from_env(
        "svc",
        {
            "GATEWAYZ_LOKI_URL": " http://loki:3100 ",
            "GATEWAYZ_LOKI_APP": "gateway",
            "GATEWAYZ_LOKI_ENV": "eu-prod",
            "GATEWAYZ_DEPLOYMENT_ENV": "prod",
            "GATEWAYZ_LOG_LEVEL": "warning",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo:4318",
            "OTEL_SERVICE_NAME": "gateway-otel",
            "OTEL_RESOURCE_ATTRIBUTES": "team=llm,service.name=ignored",
            "OTEL_BSP_MAX_QUEUE_SIZE": "100",
            "UNRELATED": "x",
        },
    )
    assert settings == TelemetrySettings(
        service_name="svc",
        loki_url="http://loki:3100/loki/api/v1/push",
        app="gateway",
        environment="eu-prod",
        log_level="WARNING",
        otlp_traces_endpoint="http://tempo:4318/v1/traces",
        otel_service_name="gateway-otel",
        resource=(("team", "llm"), ("service.name", "ignored")),
        deployment_environment="prod",
        span_queue_size=100,
    )


def test_blank_variables_are_unset() -> None:
    blank = dict.fromkeys(ENV_NAMES, "  ")
    assert TelemetrySettings.from_env("svc", blank) == TelemetrySettings(service_name="svc")


def test_the_traces_endpoint_wins_over_the_base() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://base:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/x",
    }
    assert TelemetrySettings.from_env("svc", env).otlp_traces_endpoint == "http://traces:4318/x"


@pytest.mark.parametrize("size", ["0", "-5", "many"])
def test_an_invalid_span_queue_size_is_refused(size: str) -> None:
    with pytest.raises(ValueError):
        TelemetrySettings.from_env("svc", {"OTEL_BSP_MAX_QUEUE_SIZE": size})


def test_without_a_mapping_the_process_environment_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GATEWAYZ_LOKI_URL", "http://loki:3100")
    monkeypatch.setenv("GATEWAYZ_DEPLOYMENT_ENV", "from-os")
    settings = TelemetrySettings.from_env("svc")
    assert settings.loki_url == "http://loki:3100/loki/api/v1/push"
    assert settings.environment == "from-os"


@pytest.mark.parametrize(
    ("env", "service", "place"),
    [
        ({}, "svc", "dev"),
        ({"GATEWAYZ_LOKI_ENV": "eu"}, "svc", "eu"),  # the logs' env label
        (
            {"OTEL_RESOURCE_ATTRIBUTES": "service.name=attr-svc,deployment.environment=attr-env"},
            "attr-svc",
            "attr-env",
        ),
        (
            {
                "OTEL_RESOURCE_ATTRIBUTES": "service.name=attr-svc,deployment.environment=attr-env",
                "OTEL_SERVICE_NAME": "otel-svc",
                "GATEWAYZ_DEPLOYMENT_ENV": "deploy-env",
                "GATEWAYZ_LOKI_ENV": "loki-env",
            },
            "otel-svc",
            "deploy-env",
        ),
    ],
)
def test_the_resource_names_the_service_and_place_in_order_of_precedence(
    env: dict[str, str], service: str, place: str
) -> None:
    attributes = TelemetrySettings.from_env("svc", env).resource_attributes()
    assert attributes["service.name"] == service
    assert attributes["deployment.environment"] == place


def test_other_resource_attributes_are_kept() -> None:
    env = {"OTEL_RESOURCE_ATTRIBUTES": "team=llm,host.name=h1"}
    assert TelemetrySettings.from_env("svc", env).resource_attributes() == {
        "team": "llm",
        "host.name": "h1",
        "service.name": "svc",
        "deployment.environment": "dev",
    }


@pytest.mark.parametrize(
    ("old", "new", "raw", "field"),
    [
        ("LOKI_URL", "GATEWAYZ_LOKI_URL", "http://loki:3100", "loki_url"),
        ("LOKI_APP", "GATEWAYZ_LOKI_APP", "gw", "app"),
        ("LOKI_ENV", "GATEWAYZ_LOKI_ENV", "eu", "environment"),
        ("DEPLOYMENT_ENV", "GATEWAYZ_DEPLOYMENT_ENV", "prod", "deployment_environment"),
        ("LOG_LEVEL", "GATEWAYZ_LOG_LEVEL", "WARNING", "log_level"),
    ],
)
def test_an_old_name_alone_still_works_with_a_warning_naming_the_new_one(
    old: str, new: str, raw: str, field: str
) -> None:
    forget_notices()
    with pytest.warns(FutureWarning, match=f"^{old} is deprecated .*: set {new} instead"):
        from_old = TelemetrySettings.from_env("svc", {old: raw})
    assert getattr(from_old, field) == getattr(TelemetrySettings.from_env("svc", {new: raw}), field)


def test_the_new_name_wins_over_the_old_one_and_says_so() -> None:
    forget_notices()
    env = {"GATEWAYZ_LOG_LEVEL": "ERROR", "LOG_LEVEL": "DEBUG"}
    with pytest.warns(FutureWarning, match="^LOG_LEVEL is ignored: GATEWAYZ_LOG_LEVEL is set"):
        assert TelemetrySettings.from_env("svc", env).log_level == "ERROR"


def test_the_standard_variables_keep_their_names() -> None:
    assert {option.env for option in TELEMETRY_OPTIONS if not option.deprecated} == {
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_BSP_MAX_QUEUE_SIZE",
    }

"""Logging (stderr, plus Loki when configured) and OpenTelemetry tracing (OTLP when configured,
the console with ``--otel-console``) set-up."""

from __future__ import annotations

import dataclasses
import logging
import os

import gatewayz_telemetry
from aggregator.settings import AggregatorSettings
from gatewayz_protocol.options import read
from gatewayz_telemetry.settings import OTLP_ENDPOINT

SERVICE_NAME = "gatewayz-aggregator"


def configure_logging(settings: AggregatorSettings) -> None:
    """stderr always; Loki when ``--loki-url``/``GATEWAYZ_LOKI_URL`` is set, through ``telemetry``'s
    bounded queue and background sender, so a slow or down Loki never holds a cycle or a
    scrape (the synchronous handler used before did one POST per record, with no timeout).
    The same call exports the cycle spans over OTLP/HTTP when ``--otlp-endpoint`` or the
    ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`` variables are set (batched, in the background)."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        handlers=[logging.StreamHandler()],
        force=True,
    )
    # APScheduler logs every job run at INFO: one line per cycle says nothing the metrics don't.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # The label variables (GATEWAYZ_LOKI_APP, GATEWAYZ_LOKI_ENV/GATEWAYZ_DEPLOYMENT_ENV) from the
    # environment; the URL and the level as the aggregator's own settings resolved them (flag
    # or environment).
    from_env = gatewayz_telemetry.TelemetrySettings.from_env(SERVICE_NAME)
    shipped = dataclasses.replace(
        from_env,
        loki_url=settings.loki_url or None,
        log_level=settings.log_level.upper(),
        otlp_traces_endpoint=_traces_endpoint(settings, from_env),
    )
    gatewayz_telemetry.setup(SERVICE_NAME, settings=shipped)


def _traces_endpoint(
    settings: AggregatorSettings, from_env: gatewayz_telemetry.TelemetrySettings
) -> str | None:
    """``--otlp-endpoint`` when given on the command line; else what the environment says
    (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` before ``OTEL_EXPORTER_OTLP_ENDPOINT``). The
    settings read the flag's variable too, so a value equal to it came from the environment."""
    flag = settings.otlp_endpoint
    if flag and flag.strip() != (read(OTLP_ENDPOINT, os.environ) or ""):
        return gatewayz_telemetry.traces_url(flag, None)
    return from_env.otlp_traces_endpoint


def configure_tracing(settings: AggregatorSettings) -> None:
    """``--otel-console`` prints the spans too (debugging): on the OTLP provider when one is
    exported to (set by :func:`configure_logging`), else on a provider of its own."""
    if not settings.otel_console:
        return
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        trace.set_tracer_provider(provider)
    provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))

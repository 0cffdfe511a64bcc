"""Logging (stderr, plus Loki when configured) and OpenTelemetry tracing set-up."""

from __future__ import annotations

import dataclasses
import logging

import telemetry
from aggregator.settings import AggregatorSettings

SERVICE_NAME = "gatewayz-aggregator"


def configure_logging(settings: AggregatorSettings) -> None:
    """stderr always; Loki when ``--loki-url``/``LOKI_URL`` is set, through ``telemetry``'s
    bounded queue and background sender, so a slow or down Loki never holds a cycle or a
    scrape (the synchronous handler used before did one POST per record, with no timeout)."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        handlers=[logging.StreamHandler()],
        force=True,
    )
    # APScheduler logs every job run at INFO: one line per cycle says nothing the metrics don't.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # The label variables (LOKI_APP, LOKI_ENV/DEPLOYMENT_ENV) from the environment; the URL
    # and the level as the aggregator's own settings resolved them (flag or environment).
    shipped = dataclasses.replace(
        telemetry.TelemetrySettings.from_env(SERVICE_NAME),
        loki_url=settings.loki_url or None,
        log_level=settings.log_level.upper(),
    )
    telemetry.setup(SERVICE_NAME, settings=shipped)


def configure_tracing(settings: AggregatorSettings) -> None:
    """Spans go nowhere unless asked for: ``--otel-console`` prints them."""
    if not settings.otel_console:
        return
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)

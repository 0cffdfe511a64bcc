"""Logging (stderr, plus Loki when configured) and OpenTelemetry tracing set-up."""

from __future__ import annotations

import logging

from aggregator.settings import AggregatorSettings


def configure_logging(settings: AggregatorSettings) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if settings.loki_url:
        import logging_loki

        handlers.append(
            logging_loki.LokiHandler(
                url=settings.loki_url,
                tags={"app": "gatewayz-aggregator", "namespace": settings.namespace},
                version="1",
            )
        )
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        handlers=handlers,
        force=True,
    )
    # APScheduler logs every job run at INFO: one line per cycle says nothing the metrics don't.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def configure_tracing(settings: AggregatorSettings) -> None:
    """Spans go nowhere unless asked for: ``--otel-console`` prints them."""
    if not settings.otel_console:
        return
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": "gatewayz-aggregator"}))
    provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)

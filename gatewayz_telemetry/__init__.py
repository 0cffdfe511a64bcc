"""Telemetry for any process of the project (a gateway worker, the aggregator): one call,
``gatewayz_telemetry.setup(service_name=...)``, driven by the environment.

Logs go to Loki (``GATEWAYZ_LOKI_URL``) through a bounded queue and a background sender: a
logging call never waits on Loki; what cannot be delivered is dropped and counted
(:func:`log_records_dropped`). Traces go over OTLP/HTTP (``OTEL_EXPORTER_OTLP_ENDPOINT``, to
Tempo) through the SDK's batch processor: a span ending is a put in a bounded queue; what cannot
be exported is dropped and counted (:func:`spans_dropped`). Nothing configured, nothing started,
nothing of OpenTelemetry's SDK imported.

This package imports neither ``client`` nor ``aggregator``; both may import it.
"""

from gatewayz_telemetry._setup import (
    Telemetry,
    flush,
    log_records_dropped,
    setup,
    shutdown,
    spans_dropped,
)
from gatewayz_telemetry.settings import TelemetrySettings, traces_url

__all__ = [
    "Telemetry",
    "TelemetrySettings",
    "flush",
    "log_records_dropped",
    "setup",
    "shutdown",
    "spans_dropped",
    "traces_url",
]

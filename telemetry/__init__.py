"""Telemetry for any process of the project (a gateway worker, the aggregator): one call,
``telemetry.setup(service_name=...)``, driven by the environment.

Logs go to Loki (``LOKI_URL``) through a bounded queue and a background sender: a logging call
never waits on Loki; what cannot be delivered is dropped and counted
(:func:`log_records_dropped`). Nothing configured, nothing started. Traces come next.

This package imports neither ``client`` nor ``aggregator``; both may import it.
"""

from telemetry._setup import Telemetry, flush, log_records_dropped, setup, shutdown
from telemetry.settings import TelemetrySettings

__all__ = [
    "Telemetry",
    "TelemetrySettings",
    "flush",
    "log_records_dropped",
    "setup",
    "shutdown",
]

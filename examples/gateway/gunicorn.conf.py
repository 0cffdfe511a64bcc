"""Gunicorn settings for the example gateway.

``GATEWAY_BIND`` and ``GATEWAY_WORKERS`` are the example gateway's own variables, as a gateway
has its own (they are not the library's, hence no ``GATEWAYZ_`` prefix); the library's are
``GATEWAYZ_*`` (``MetricsClient.from_env()``: ``GATEWAYZ_REDIS_URL``, ``GATEWAYZ_NAMESPACE``...;
telemetry: ``GATEWAYZ_LOKI_URL``, ``OTEL_EXPORTER_OTLP_ENDPOINT``...), all listed in
docs/reference/configuration.md."""

import gc
import os
from typing import Any

import gatewayz_telemetry

bind = os.environ.get("GATEWAY_BIND", "127.0.0.1:8080")
workers = int(os.environ.get("GATEWAY_WORKERS", "4"))
worker_class = "uvicorn_worker.UvicornWorker"
preload_app = True  # the MetricsClient is built in the master and must survive the fork
graceful_timeout = 10
timeout = 60
accesslog = None


def post_fork(server: Any, worker: Any) -> None:
    """Telemetry starts in each worker after the fork, never in the preloaded master: a
    thread started there would not exist in the workers, and its queue would be shared.

    ``worker.app.wsgi()`` is the application Gunicorn serves: with ``--preload`` the one the
    master imported (inherited by the fork), without it loaded here, in the worker, and kept
    for the worker to serve. Instrumenting it here, before the worker serves its first
    request, adds the request span in this worker only."""
    gatewayz_telemetry.setup(service_name="gatewayz-api", app=worker.app.wsgi())
    # Everything imported so far lives as long as the worker: moved out of the collector's
    # sight, a full collection no longer scans it (62 ms -> under 0.01 ms in `make bench`'s
    # gc figures), which is what a saturated worker's p99 latency was made of.
    gc.freeze()

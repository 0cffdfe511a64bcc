"""Gunicorn settings for the example gateway (env: GATEWAY_BIND, GATEWAY_WORKERS)."""

import os

bind = os.environ.get("GATEWAY_BIND", "127.0.0.1:8080")
workers = int(os.environ.get("GATEWAY_WORKERS", "4"))
worker_class = "uvicorn_worker.UvicornWorker"
preload_app = True  # the MetricsClient is built in the master and must survive the fork
graceful_timeout = 10
timeout = 60
accesslog = None

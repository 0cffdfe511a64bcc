"""The gateway's metrics module BEFORE the migration (the origin's ``prometheus_metrics.py`` in
shape): prometheus_client metrics, per process. Not served by anything here: it is the "before"
side of docs/migration/origin-gateway.md (``../metrics.py`` is the "after")."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, Info, Summary

APP_NAME = "gatewayz"
REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
INFERENCE_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 25, 60)
TTFB_BUCKETS = (0.1, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0, 10.0)
TTFC_BUCKETS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 10.0, 15.0)
COST_BUCKETS = (0.00001, 0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0)


def get_trace_exemplar() -> dict[str, str] | None:
    """The current OpenTelemetry trace as an exemplar, or None without a valid span."""
    try:
        from opentelemetry import trace

        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            return {"trace_id": format(context.trace_id, "032x")}
    except Exception:
        pass
    return None


fastapi_app_info = Info("fastapi_app_info", "FastAPI application information")
fastapi_app_info.info({"app_name": APP_NAME})

fastapi_requests_duration = Histogram(
    "fastapi_requests_duration_seconds",
    "FastAPI request duration in seconds",
    ["app_name", "method", "path"],
    buckets=REQUEST_BUCKETS,
)
model_inference_requests = Counter(
    "model_inference_requests_total",
    "Total model inference requests",
    ["provider", "model", "status"],
)
model_inference_duration = Histogram(
    "model_inference_duration_seconds",
    "Model inference duration in seconds",
    ["provider", "model"],
    buckets=INFERENCE_BUCKETS,
)
tokens_used = Counter(
    "tokens_used_total", "Total tokens used (input + output)", ["provider", "model", "token_type"]
)
credits_used = Counter("credits_used_total", "Total credits consumed", ["provider", "model"])
time_to_first_chunk = Histogram(
    "time_to_first_chunk_seconds",
    "Time from stream start to first SSE chunk sent to client (TTFC)",
    ["provider", "model"],
    buckets=TTFC_BUCKETS,
)
backend_ttfb = Histogram(
    "backend_ttfb_seconds",
    "Backend API time to first byte (TTFB) in seconds",
    ["provider", "model", "endpoint"],
    buckets=TTFB_BUCKETS,
)
token_count_source = Counter(
    "gatewayz_token_count_source_total",
    "Count of streaming requests by token count source (provider-reported vs estimated)",
    ["provider", "model", "source"],
)
api_cost_per_request = Histogram(
    "gatewayz_api_cost_per_request_usd",
    "Cost per API request in USD",
    ["provider", "model"],
    buckets=COST_BUCKETS,
)
database_query_duration = Summary(
    "database_query_duration_seconds", "Database query duration in seconds", ["table"]
)

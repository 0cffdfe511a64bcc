"""Worker-side client of the gatewayz provider metrics pipeline.

from client import MetricsClient
metrics = MetricsClient.from_env()
metrics.record("openrouter", latency_s=0.42, status_code=200, tokens=1200, cost_usd=0.0031)
"""

from client.asgi import MetricsMiddleware
from client.breaker_gate import CircuitOpenError
from client.gateway import GatewayMetrics, InferenceCall
from client.keys import OUTCOMES, Keys
from client.metrics_client import MetricsClient
from client.settings import ClientSettings
from client.tracking import CallTracker

__all__ = [
    "OUTCOMES",
    "CallTracker",
    "CircuitOpenError",
    "ClientSettings",
    "GatewayMetrics",
    "InferenceCall",
    "Keys",
    "MetricsClient",
    "MetricsMiddleware",
]

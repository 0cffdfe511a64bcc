"""Worker-side client of the gatewayz provider metrics pipeline.

    from client import MetricsClient
    metrics = MetricsClient.from_env()
    metrics.record("openrouter", latency_s=0.42, status_code=200, tokens=1200, cost_usd=0.0031)

Everything a worker uses is named here; the modules are private (``client._*``).
"""

from client._asgi import MetricsMiddleware
from client._breaker_status import BreakerStatus, CircuitOpenError
from client._gateway import GatewayMetrics, InferenceCall
from client._metrics_client import MetricsClient
from client._settings import ClientSettings
from client._tracking import CallTracker
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.partitions import OUTCOMES

__all__ = [
    "OUTCOMES",
    "BreakerStatus",
    "CallTracker",
    "CircuitOpenError",
    "ClientSettings",
    "GatewayMetrics",
    "InferenceCall",
    "Keys",
    "MetricsClient",
    "MetricsMiddleware",
]

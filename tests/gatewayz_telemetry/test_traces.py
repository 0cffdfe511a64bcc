"""``gatewayz_telemetry.setup()``'s traces half, in subprocesses (a process has one global tracer
provider): nothing configured sets nothing and imports no exporter; a full queue under a
refused endpoint drops and counts spans without a log line per span."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.loki import refused_url

ROOT = Path(__file__).resolve().parents[2]


def run(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_nothing_configured_sets_no_provider_and_imports_no_exporter() -> None:
    done = run(
        """
import sys
import fastapi, gatewayz_telemetry
from opentelemetry import trace
result = gatewayz_telemetry.setup("svc", app=fastapi.FastAPI())
assert not result.traces and not result.instrumented, result
assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk",
    "opentelemetry.exporter", "opentelemetry.instrumentation", "gatewayz_telemetry._traces")))
print(loaded)
"""
    )
    assert done.stdout.strip() == "[]"


def test_a_full_queue_under_a_refused_endpoint_drops_and_counts_quietly() -> None:
    done = run(
        """
import logging, time
import gatewayz_telemetry
from opentelemetry import trace
logging.basicConfig(level=logging.DEBUG)
result = gatewayz_telemetry.setup("svc")
assert result.traces, result
tracer = trace.get_tracer("test")
started = time.perf_counter()
for _ in range(5000):
    with tracer.start_as_current_span("s"):
        pass
elapsed = time.perf_counter() - started
dropped = gatewayz_telemetry.spans_dropped()
assert dropped >= 5000 - 64 - 64, dropped  # at most a queue and a batch in flight kept
assert elapsed < 5, elapsed
print(dropped)
""",
        OTEL_EXPORTER_OTLP_ENDPOINT=refused_url(),
        OTEL_BSP_MAX_QUEUE_SIZE="64",
    )
    assert "Queue full" not in done.stderr
    assert len(done.stderr.splitlines()) < 20, done.stderr
    assert int(done.stdout) > 0

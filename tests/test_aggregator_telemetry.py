"""``python -m aggregator --loki-url``: its logs reach Loki as ``{app="gatewayz-aggregator"}``
through telemetry's queue, and still go to stderr."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from devtools.redis_server import free_port
from tests.support.loki import receiver
from tests.support.processes import wait_for

ROOT = Path(__file__).resolve().parent.parent


def test_the_aggregator_ships_its_logs_with_its_labels(redis_url: str, namespace: str) -> None:
    with receiver() as loki:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LOKI_", "GATEWAYZ_LOKI_"))}
        env["GATEWAYZ_DEPLOYMENT_ENV"] = "test"
        command = [
            sys.executable, "-m", "aggregator",
            "--port", str(free_port()),
            "--redis-url", redis_url,
            "--namespace", namespace,
            "--loki-url", loki.url,
        ]  # fmt: skip
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        try:
            wait_for(lambda: any("serving" in line.line for line in loki.lines()), timeout=30)
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
        serving = next(line for line in loki.lines() if "serving" in line.line)
    assert serving.labels == {
        "app": "gatewayz-aggregator",
        "env": "test",
        "service": "gatewayz-aggregator",
        "level": "info",
    }
    assert serving.fields()["logger"] == "gatewayz.aggregator"
    assert "serving http://" in stderr  # stderr as before

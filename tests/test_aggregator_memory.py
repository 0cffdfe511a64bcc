"""A real ``python -m aggregator`` under a churn of provider names, at an accelerated rate: new
names keep arriving and old ones go idle (a 1 s window and export horizon stand for 5 minutes
and 1 hour), 400 new names a second, so ten thousand names pass through in 24 s, the churn of
days. Its resident memory (VmRSS, sampled) must stay flat once the first 4,800 names went by
(what it remembers per name is bounded: caches of at most 4,096 names, full by then; per-read
schedules)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from client import ClientSettings, MetricsClient
from devtools.processes import stop_process
from devtools.redis_server import free_port
from tests.support.processes import HEAVY, wait_for

pytestmark = HEAVY

ROOT = Path(__file__).resolve().parent.parent
NAMES_PER_SECOND = 400
PHASE_SECONDS = 12.0
MAX_GROWTH_KIB = 4096


def _rss_kib(pid: int) -> int:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1])
    raise AssertionError("no VmRSS")


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
def test_aggregator_memory_is_flat_under_provider_churn(redis_url: str, namespace: str) -> None:
    if redis_url.startswith("redis+cluster://"):
        pytest.skip("one backend is enough: memory is the aggregator's, not Redis's")
    port = free_port()
    command = [
        sys.executable, "-m", "aggregator", "--redis-url", redis_url, "--namespace", namespace,
        "--port", str(port), "--window", "1", "--export-horizon", "1", "--interval", "0.5",
        "--breaker-interval", "0.5", "--log-level", "WARNING",
    ]  # fmt: skip
    aggregator = subprocess.Popen(command, cwd=ROOT)
    metrics = MetricsClient(
        settings=ClientSettings(
            redis_url=redis_url, namespace=namespace, export_horizon_seconds=1.0
        )
    )
    try:
        wait_for(lambda: _ready(port), timeout=30)
        made = 0

        def churn(seconds: float) -> list[int]:
            """New names at NAMES_PER_SECOND for ``seconds``; RSS samples of the last quarter."""
            nonlocal made
            started = time.monotonic()
            samples = []
            while (elapsed := time.monotonic() - started) < seconds:
                due = int((time.monotonic() - started) * NAMES_PER_SECOND) + phase_start
                while made < due:
                    for _ in range(2):
                        assert metrics.record(f"churn-{made}", 0.2)
                    made += 1
                if elapsed > seconds * 0.75:
                    samples.append(_rss_kib(aggregator.pid))
                time.sleep(0.05)  # pacing the writer: the test drives a real process
            return samples

        phase_start = 0
        warm = churn(PHASE_SECONDS)
        phase_start = made
        churned = churn(PHASE_SECONDS)
        assert aggregator.poll() is None
        assert made >= 2 * PHASE_SECONDS * NAMES_PER_SECOND * 0.9
        growth = max(churned) - max(warm)
        print(f"aggregator RSS: {max(warm)} KiB after {phase_start} names, "
              f"{max(churned)} KiB after {made} (+{growth} KiB)")  # fmt: skip
        assert growth <= MAX_GROWTH_KIB
    finally:
        metrics.close(timeout=5)
        stop_process(aggregator, timeout=15)

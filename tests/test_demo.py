"""``make demo ARGS=--cluster``: the whole stack (a local 3-master Redis Cluster, the aggregator,
the example gateway under Gunicorn, HTTP traffic) runs and shows traffic in /metrics."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from devtools.redis_server import free_port
from tests.support.processes import HEAVY, need_redis_tools

pytestmark = HEAVY

REPO = Path(__file__).resolve().parents[1]


def test_the_demo_runs_on_a_local_cluster() -> None:
    need_redis_tools()
    done = subprocess.run(
        [sys.executable, "-m", "devtools.demo", "--cluster", "--duration", "8", "--refresh", "3",
         "--port", str(free_port()), "--gateway-port", str(free_port()), "--workers", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert re.search(r"started a 3-master Redis Cluster: redis\+cluster://127\.0\.0\.1:\d+,", out)
    assert re.search(r"redis-cli -c -p \d+ HGETALL 'gatewayz-demo:\{flakyai\}:breaker'", out)
    assert "redis-cli --cluster call 127.0.0.1:" in out
    assert re.search(r"-m aggregator inspect --redis-url redis\+cluster://\S+ --namespace", out)
    windows = re.findall(r"^openrouter\s+\S+\s+\S+\s+\S+\s+\S+\s+(\d+)\s", out, re.M)
    assert windows and int(windows[-1]) > 0  # traffic counted through the cluster
    assert re.search(r"dashboard:  http://127\.0\.0\.1:\d+/dashboard ", out)  # the page
    assert "demo stopped" in out

"""Two real aggregator processes against one Redis: identical provider series, leader killed
mid-run, the follower takes over, and no breaker transition is lost or applied twice."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from client import MetricsClient
from devtools.redis_server import free_port
from gatewayz_protocol.keys import Keys
from tests.support.backends import BOTH_BACKENDS
from tests.support.processes import wait_for
from tests.support.scrape import scrape_url

pytestmark = BOTH_BACKENDS

BREAKER_INTERVAL = 1.0
PROVIDER_PREFIXES = (
    "provider_",
    "gatewayz_provider_",
    "gatewayz_circuit_breaker_",
    "gatewayz_cost",
)


def _provider_series(text: str) -> list[str]:
    return sorted(line for line in text.splitlines() if line.startswith(PROVIDER_PREFIXES))


def _value(text: str, series: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture
def start_aggregator(
    redis_url: str, namespace: str
) -> Iterator[Callable[[str], tuple[subprocess.Popen[bytes], int]]]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(instance: str) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        command = [
            sys.executable, "-m", "aggregator",
            "--redis-url", redis_url, "--namespace", namespace,
            "--port", str(port), "--instance", instance,
            "--interval", "1", "--breaker-interval", str(BREAKER_INTERVAL),
            "--breaker-open-seconds", "1", "--breaker-max-open-seconds", "1",
            "--breaker-half-open-timeout", "1", "--breaker-min-calls", "10",
            "--providers", "steady", "--log-level", "WARNING",
        ]  # fmt: skip
        process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        processes.append(process)
        return process, port

    yield start
    for process in processes:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)


def test_leader_failover_keeps_one_consistent_breaker(
    start_aggregator: Callable[[str], tuple[subprocess.Popen[bytes], int]],
    redis_url: str,
    namespace: str,
    r: redis.Redis,
) -> None:
    keys = Keys(namespace)
    leader, leader_port = start_aggregator("alpha")
    wait_for(lambda: (r.get(keys.leader_lease) or b"").startswith(b"alpha|"))
    follower, follower_port = start_aggregator("beta")
    metrics = MetricsClient(redis_url=redis_url, namespace=namespace)
    for _ in range(30):  # enough failures to open "flaky"; it then cycles open/half_open
        metrics.record("flaky", 0.5, status_code=503)
        metrics.record("steady", 0.2)
    assert metrics.flush(timeout=5)

    def same_snapshot() -> bool:
        a, b = scrape_url(leader_port), scrape_url(follower_port)
        cycle_a = _value(a, "gatewayz_aggregator_snapshot_cycle")
        return (
            cycle_a is not None
            and cycle_a == _value(b, "gatewayz_aggregator_snapshot_cycle")
            and 'gatewayz_provider_window_requests{provider="flaky"} 30.0' in a
            and _provider_series(a) == _provider_series(b)
        )

    wait_for(same_snapshot)
    text = scrape_url(follower_port)
    assert 'gatewayz_aggregator_leader{replica="beta"} 0.0' in text
    assert 'gatewayz_aggregator_leader{replica="alpha"} 1.0' in scrape_url(leader_port)
    wait_for(lambda: int(r.hget(keys.breaker("flaky"), "epoch") or 0) >= 2)

    leader.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    leader.wait()
    wait_for(lambda: (r.get(keys.leader_lease) or b"").startswith(b"beta|"))
    takeover = time.monotonic() - killed_at
    print(f"\nfollower took over {takeover:.2f}s after the leader was killed")
    # lease TTL 1.5 intervals, sought every half interval: at most 2 intervals (+ polling)
    assert takeover <= 2 * BREAKER_INTERVAL + 0.5
    epoch_at_takeover = int(r.hget(keys.breaker("flaky"), "epoch") or 0)
    wait_for(lambda: int(r.hget(keys.breaker("flaky"), "epoch") or 0) >= epoch_at_takeover + 2)
    wait_for(lambda: 'gatewayz_aggregator_leader{replica="beta"} 1.0' in scrape_url(follower_port))

    follower.send_signal(signal.SIGTERM)  # stop transitions, then audit them
    follower.wait(timeout=10)
    epoch = int(r.hget(keys.breaker("flaky"), "epoch") or 0)
    transitions = {k.decode(): int(v) for k, v in r.hgetall(keys.transitions("flaky")).items()}
    assert sum(transitions.values()) == epoch  # every applied transition counted exactly once
    assert set(transitions) <= {"closed>open", "open>half_open", "half_open>open"}
    # open -> half_open -> open ... alternates: the counts can differ by at most one
    assert transitions["closed>open"] == 1
    opened = transitions["closed>open"] + transitions.get("half_open>open", 0)
    assert opened - transitions["open>half_open"] in (0, 1)
    assert not r.exists(keys.leader_lease)  # released on a clean shutdown
    metrics.close(timeout=2)

"""The dashboard page in a real browser: headless Chromium loads ``/dashboard`` from running
aggregators and the test reads what a person would see (the DOM after the page's fetches)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from client import MetricsClient
from devtools.redis_server import free_port
from protocol.keys import Keys
from tests.conftest import need_tool, wait_for
from tests.scrape import samples, scrape_url

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = Path(os.environ.get("DASHBOARD_SCREENSHOT", REPO / "bench-results" / "dashboard.png"))
"""The test's artefact (git-ignored); ``DASHBOARD_SCREENSHOT=docs/dashboard.png`` refreshes the
README's picture."""
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)

Start = Callable[..., int]


def chromium(url: str, *extra: str) -> str:
    """The DOM of ``url`` after 5 s of (virtual) time, the page's fetches done (``extra``:
    instead of dumping the DOM, e.g. a screenshot)."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                "chromium",
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--virtual-time-budget=5000",
                *(extra or ("--dump-dom",)),
                url,
            ],
            capture_output=True,
            timeout=60,
            check=True,
        )
    return done.stdout.decode()


def row(dom: str, provider: str) -> str:
    found = re.search(rf'<tr data-provider="{provider}".*?</tr>', dom)
    assert found, f"no row for {provider}"
    return found.group(0)


def field(row_html: str, name: str) -> str:
    found = re.search(rf'data-field="{name}"[^>]*?data-value="([^"]*)"', row_html)
    assert found, f"no {name} value in {row_html}"
    return found.group(1)


@pytest.fixture
def start(redis_url: str, namespace: str) -> Iterator[Start]:
    need_tool("chromium", "apt-get install chromium")
    processes: list[subprocess.Popen[bytes]] = []

    def run(*extra: str, redis: str = redis_url) -> int:
        port = free_port()
        command = [
            sys.executable, "-m", "aggregator", "--redis-url", redis, "--namespace", namespace,
            "--port", str(port), "--interval", "1", "--breaker-interval", "1",
            "--breaker-min-calls", "10", "--providers", "steady,idle", "--log-level", "ERROR",
            *extra,
        ]  # fmt: skip
        processes.append(subprocess.Popen(command, cwd=REPO, stderr=subprocess.DEVNULL))
        wait_for(lambda: _answers(port), timeout=15)
        return port

    yield run
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def _answers(port: int) -> bool:
    try:
        subprocess.run(
            ["curl", "-sf", "-o", "/dev/null", f"http://127.0.0.1:{port}/healthz"], check=True
        )
    except subprocess.CalledProcessError:
        return False
    return True


def test_the_dashboard_shows_every_provider_as_metrics_does(
    start: Start, redis_url: str, namespace: str, r: redis.Redis
) -> None:
    port = start()
    metrics = MetricsClient(redis_url=redis_url, namespace=namespace)
    for _ in range(30):
        metrics.record("flaky", 0.5, status_code=503)
        metrics.record("steady", 0.2, tokens=100, cost_usd=0.002)
    assert metrics.flush(timeout=5)
    wait_for(lambda: 'gatewayz_circuit_breaker_state{provider="flaky",state="open"} 1.0' in
             scrape_url(port) and 'provider_window_requests{provider="steady"} 30.0' in
             scrape_url(port), timeout=15)  # fmt: skip
    wait_for(lambda: r.zcard(Keys(namespace).history("flaky")) == 1, timeout=10)

    url = f"http://127.0.0.1:{port}/dashboard"
    dom = chromium(url)
    text = scrape_url(port)
    found = samples(text)
    rows = re.findall(r'<tr data-provider="([^"]+)"', dom)
    assert sorted(rows) == ["flaky", "idle", "steady"]
    assert rows[0] == "flaky"  # sorted by health, worst first
    flaky, steady, idle = row(dom, "flaky"), row(dom, "steady"), row(dom, "idle")
    assert 'data-status="Offline"' in flaky and ">Offline<" in flaky
    assert 'class="state-open">open<' in flaky and "half-open in" in flaky
    assert 'data-status="Online"' in steady
    assert "no traffic in the window" in idle
    for provider, html in (("flaky", flaky), ("steady", steady)):
        labels = (("provider", provider),)
        assert float(field(html, "health")) == found[("gatewayz_provider_health_score", labels)]
        assert float(field(html, "error_rate")) == found[("provider_error_rate", labels)]
        assert float(field(html, "availability")) == found[("provider_availability", labels)]
        assert int(field(html, "calls")) == found[("gatewayz_provider_window_requests", labels)]
    assert "$0.0600" in steady and ">3,000<" in steady  # cost and tokens
    assert re.search(r'data-field="redis"[^>]*>reachable<', dom)
    assert 'aria-label="health score" data-points="1"' in flaky  # the history, from Redis
    assert 'id="banner" class="banner" role="alert" hidden' in dom

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    chromium(url, f"--screenshot={SCREENSHOT}", "--window-size=1720,640")
    assert SCREENSHOT.stat().st_size > 10_000


def test_the_dashboard_says_when_there_is_no_fresh_data(start: Start) -> None:
    port = start(redis=f"redis://127.0.0.1:{free_port()}/0")  # Redis never answers
    dom = chromium(f"http://127.0.0.1:{port}/dashboard")
    assert re.search(r'id="banner" class="banner stale"[^>]*data-kind="stale"', dom)
    assert "No snapshot yet" in dom
    assert re.search(r'data-field="redis"[^>]*>unreachable<', dom)


def test_the_dashboard_asks_for_the_token(start: Start, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    port = start("--auth-token-file", str(token_file))
    dom = chromium(f"http://127.0.0.1:{port}/dashboard")
    assert '<form id="auth">' in dom  # shown: no hidden attribute
    assert '<main id="content" hidden' in dom

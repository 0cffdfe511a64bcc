"""The dashboard page in a real browser: headless Chromium (driven over the DevTools protocol)
loads ``/dashboard`` from running aggregators, stays open while the test changes the world, and
the test reads what a person would see."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from client import MetricsClient
from devtools.redis_server import free_port
from gatewayz_protocol.keys import Keys
from tests.support.browser import Browser
from tests.support.processes import need_tool, wait_for
from tests.support.scrape import samples, scrape_url

REPO = Path(__file__).resolve().parents[3]
SCREENSHOT = Path(os.environ.get("DASHBOARD_SCREENSHOT", REPO / "bench-results" / "dashboard.png"))
"""The test's artefact (git-ignored); ``DASHBOARD_SCREENSHOT=docs/dashboard.png`` refreshes the
README's picture."""
ROWS = "document.querySelectorAll('#providers tr[data-provider]').length"
DOM = "document.documentElement.outerHTML"


@dataclass
class Aggregator:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/dashboard"


Start = Callable[..., Aggregator]


def row(dom: str, provider: str) -> str:
    found = re.search(rf'<tr data-provider="{provider}".*?</tr>', dom)
    assert found, f"no row for {provider}"
    return found.group(0)


def field(row_html: str, name: str) -> str:
    found = re.search(rf'data-field="{name}"[^>]*?data-value="([^"]*)"', row_html)
    assert found, f"no {name} value in {row_html}"
    return found.group(1)


def cell_text(provider: str, name: str) -> str:
    """JavaScript: the text a person reads in one cell of a provider's row."""
    return (f"document.querySelector('tr[data-provider=\"{provider}\"] "
            f"[data-field=\"{name}\"]')?.textContent")  # fmt: skip


@pytest.fixture
def browser() -> Iterator[Browser]:
    need_tool("chromium", "apt-get install chromium")
    with Browser(window_size=(1720, 640)) as opened:
        yield opened


@pytest.fixture
def start(redis_url: str, namespace: str) -> Iterator[Start]:
    processes: list[subprocess.Popen[bytes]] = []

    def run(*extra: str, redis: str = redis_url) -> Aggregator:
        port = free_port()
        command = [
            sys.executable, "-m", "aggregator", "--redis-url", redis, "--namespace", namespace,
            "--port", str(port), "--interval", "1", "--breaker-interval", "1",
            "--breaker-min-calls", "10", "--providers", "steady,idle", "--log-level", "ERROR",
            *extra,
        ]  # fmt: skip
        process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.DEVNULL)
        processes.append(process)
        wait_for(lambda: _answers(port), timeout=15)
        return Aggregator(port, process)

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
    start: Start, browser: Browser, redis_url: str, namespace: str, r: redis.Redis
) -> None:
    aggregator = start()
    metrics = MetricsClient(redis_url=redis_url, namespace=namespace)
    for _ in range(30):
        metrics.record("flaky", 0.5, status_code=503)
        metrics.record("steady", 0.2, tokens=100, cost_usd=0.002)
    assert metrics.flush(timeout=5)
    wait_for(lambda: 'gatewayz_circuit_breaker_state{provider="flaky",state="open"} 1.0' in
             scrape_url(aggregator.port) and 'provider_window_requests{provider="steady"} 30.0'
             in scrape_url(aggregator.port), timeout=15)  # fmt: skip
    wait_for(lambda: r.zcard(Keys(namespace).history("flaky")) == 1, timeout=10)

    browser.goto(aggregator.url)
    browser.wait_for(f"{ROWS} === 3 && {cell_text('flaky', 'breaker')}?.startsWith('open')")
    dom = browser.evaluate(DOM)
    found = samples(scrape_url(aggregator.port))
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
    # it fits a 1400 px window (cost, tokens and the history visible), headers as their cells
    metrics_override = {"width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": False}
    browser.send("Emulation.setDeviceMetricsOverride", metrics_override)
    assert browser.evaluate("window.innerWidth") == 1400
    width = browser.evaluate("document.documentElement.scrollWidth")
    assert width <= 1400, f"the page is {width} px wide: it scrolls sideways"
    aligned = browser.evaluate(
        "[...document.querySelectorAll('thead th')].map((th, i) => [getComputedStyle(th)"
        ".textAlign, getComputedStyle(document.querySelector('tbody tr').children[i])"
        ".textAlign])"
    )
    assert aligned and all(head == body for head, body in aligned), aligned
    assert "30 (30 failed)" in flaky  # the outcomes in a word each, the rest in its title

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.screenshot(SCREENSHOT)
    assert SCREENSHOT.stat().st_size > 10_000


def test_the_page_redraws_a_breaker_transition_and_says_when_the_aggregator_stops(
    start: Start, browser: Browser, redis_url: str, namespace: str
) -> None:
    aggregator = start()
    metrics = MetricsClient(redis_url=redis_url, namespace=namespace)
    for _ in range(20):
        metrics.record("flaky", 0.1)
    assert metrics.flush(timeout=5)
    browser.goto(aggregator.url)
    browser.wait_for(f"{cell_text('flaky', 'status')} === 'Online'")
    assert browser.evaluate(cell_text("flaky", "breaker")).startswith("closed")
    browser.evaluate("window.sameDocument = 'loaded once'")

    for _ in range(40):  # 40 of 60 calls failed: over the 0.5 failure rate
        metrics.record("flaky", 0.1, status_code=500)
    assert metrics.flush(timeout=5)
    browser.wait_for(f"{cell_text('flaky', 'breaker')}?.startsWith('open')")
    assert browser.evaluate(cell_text("flaky", "status")) == "Offline"
    calls = browser.evaluate(cell_text("flaky", "calls"))
    assert calls == "60 (20 ok, 40 failed)"  # the outcomes with calls, a word each
    assert browser.evaluate("window.sameDocument") == "loaded once"  # redrawn, not reloaded
    assert "flaky: breaker closed → open" in browser.evaluate(
        "document.querySelector('#events').textContent"
    )
    assert browser.evaluate("document.querySelector('#banner').hidden") is True

    aggregator.process.terminate()
    aggregator.process.wait(timeout=10)
    banner = browser.wait_for(
        "(b => !b.hidden && b.dataset.kind === 'unreachable' && b.textContent)"
        "(document.querySelector('#banner'))"
    )
    assert banner.startswith("Aggregator unreachable: showing the last data received")
    assert browser.evaluate(cell_text("flaky", "status")) == "Offline"  # the last data stays
    assert browser.evaluate("window.sameDocument") == "loaded once"


def test_the_dashboard_says_when_there_is_no_fresh_data(start: Start, browser: Browser) -> None:
    aggregator = start(redis=f"redis://127.0.0.1:{free_port()}/0")  # Redis never answers
    browser.goto(aggregator.url)
    browser.wait_for("document.querySelector('#banner').dataset.kind === 'stale'")
    dom = browser.evaluate(DOM)
    assert "No snapshot yet" in dom
    assert re.search(r'data-field="redis"[^>]*>unreachable<', dom)


def test_the_dashboard_asks_for_the_token_and_keeps_it_out_of_the_url(
    start: Start, browser: Browser, tmp_path: Path, redis_url: str, namespace: str
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    aggregator = start("--auth-token-file", str(token_file))
    browser.goto(aggregator.url)
    browser.wait_for("!document.querySelector('#auth').hidden")
    assert browser.evaluate("document.querySelector('#content').hidden") is True

    browser.evaluate("document.querySelector('#token').value = 'wrong'; "
                     "document.querySelector('#auth').requestSubmit()")  # fmt: skip
    browser.wait_for("document.querySelector('#auth-error').textContent === "
                     "'That token was refused.'")  # fmt: skip

    browser.evaluate("document.querySelector('#token').value = 's3cret-token'; "
                     "document.querySelector('#auth').requestSubmit()")  # fmt: skip
    browser.wait_for(f"!document.querySelector('#content').hidden && {ROWS} === 2")
    assert browser.evaluate("document.querySelector('#auth').hidden") is True
    assert browser.evaluate("location.href") == aggregator.url
    assert "s3cret" not in browser.evaluate("location.href + document.cookie")
    stored = "sessionStorage.getItem('gatewayz-dashboard-token')"
    assert browser.evaluate(stored) == "s3cret-token"


def test_provider_names_that_are_names_of_object_members_show_as_any_other(
    start: Start, browser: Browser, redis_url: str, namespace: str
) -> None:
    # Valid provider names that Object.prototype also has: the page kept its per-provider
    # state in plain objects, and showed "constructor: breaker function Object() { [native
    # code] } → closed" on its first draw (and a sparkline of a function).
    names = ["constructor", "toString", "valueOf", "hasOwnProperty"]
    aggregator = start()
    metrics = MetricsClient(redis_url=redis_url, namespace=namespace)
    for name in names:
        for _ in range(20):
            metrics.record(name, 0.1)
    assert metrics.flush(timeout=5)
    browser.goto(aggregator.url)
    browser.wait_for(f"{ROWS} === 6 && Number(document.body.dataset.updates) >= 2")
    events = "document.querySelector('#events').textContent"
    assert browser.evaluate(events) == ""
    for name in names:
        assert browser.evaluate(cell_text(name, "status")) == "Online"
        assert browser.evaluate(cell_text(name, "breaker")).startswith("closed")
        sparkline = f"document.querySelector('tr[data-provider=\"{name}\"] svg').dataset.points"
        assert browser.evaluate(sparkline) in ("0", "1")  # a list of points, not a function
    assert browser.evaluate("document.querySelector('#banner').hidden") is True

    for _ in range(40):  # a real transition of one of them is shown, once
        metrics.record("constructor", 0.1, status_code=500)
    assert metrics.flush(timeout=5)
    browser.wait_for(f"{cell_text('constructor', 'breaker')}?.startsWith('open')")
    shown = browser.evaluate(
        "[...document.querySelectorAll('#events .event')]"
        ".map(e => e.textContent.replace(/^.*?  /, ''))"  # without the time
    )
    assert shown == ["constructor: breaker closed → open"]

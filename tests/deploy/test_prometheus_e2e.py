"""deploy/prometheus/ against a real Prometheus scraping a real aggregator fed by real worker
processes: a healthy provider, a failing one (all 503s) and a slow one (6 s successes).

Prometheus runs the repository's prometheus.yml and rule files, copied into a tmp dir with only
what a test must change: the targets (this test's aggregator and Prometheus ports), 1 s
scrape/evaluation intervals (also the recording group's), no Alertmanager. Alert `for:`
durations stay the real ones, so the provider alerts are asserted pending (their expression holds
for the failing provider and never for the healthy one); GatewayzMetricsSeriesDropped
(`for: 0m`) is made to fire for real by a client that exceeds its series cap.

Every expression of every rule and of every Grafana panel target in
deploy/grafana/dashboards/*.json must parse and return data, except the ones listed in
EMPTY_WHEN_HEALTHY / DASHBOARD_EMPTY_WHEN_HEALTHY with the reason they are empty here.

The same Prometheus also loads deploy/prometheus/compat/railway-compat.yml and the origin's
recording rules, and checks the migration claims of tests/deploy/data/railway_expressions.yml
(see tests/support/railway.py): what is said to work has data, what is said not to cannot.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from client import ClientSettings, GatewayMetrics, MetricsClient
from devtools.processes import stop_process
from devtools.redis_server import free_port
from tests.support import railway
from tests.support.processes import HEAVY, need_tool, wait_for

pytestmark = HEAVY

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
HEALTHY, FAILING, SLOW = "healthy", "failing", "slow"
PROVIDERS = (HEALTHY, FAILING, SLOW)
OVERFLOW_METRIC = "e2e_overflow"  # the counter e2e_overflow_total, capped at 1 series

# Alert expressions that are empty while the stack is healthy, and why. They must still parse.
EMPTY_WHEN_HEALTHY = {
    "GatewayzCircuitBreakerFlapping": "the failing provider never closes again, so it never "
    "re-opens from closed (it cycles open -> half_open -> open)",
    "GatewayzAggregatorDown": "the aggregator answers every scrape",
    "GatewayzAggregatorsAllDown": "the aggregator answers every scrape",
    "GatewayzAggregatorSnapshotStale": "the aggregator cycles every second",
    "GatewayzAggregatorNoLeader": "the only replica holds the lease",
    "GatewayzAggregatorMultipleLeaders": "there is one replica",
    "GatewayzAggregatorBreakerCyclesFailing": "the leader's breaker cycles all succeed",
    "GatewayzClientEventsDropped": "Redis is up and accepts every event: nothing is dropped",
    "GatewayzRedisOutOfMemory": "the test Redis has memory",
    "GatewayzRedisPermissionRefused": "the aggregator's and the workers' users may run every "
    "command they send (INFO errorstats is server-wide: another test's refusal may show here)",
    "GatewayzRedisEvictingPolicy": "the test Redis runs noeviction (or no maxmemory); "
    "not asserted empty, as a developer's Redis may differ",
}
# Alerts whose expression must return exactly these label values here (and pend or fire).
EXPECTED_ALERTS = {
    "GatewayzProviderDown": ("provider", {FAILING}),
    "GatewayzProviderErrorRateHigh": ("provider", {FAILING}),
    "GatewayzProviderHealthScoreLow": ("provider", {FAILING}),
    "GatewayzProviderLatencyP95High": ("provider", {SLOW}),
    "GatewayzMetricsSeriesDropped": ("metric", {OVERFLOW_METRIC}),
}
# Dashboard target expressions (after variable substitution) that may be empty here: a regex
# matched against the expression -> the reason. Add a panel here only with a reason.
DASHBOARD_EMPTY_WHEN_HEALTHY: dict[str, str] = {
    r"gatewayz_circuit_breaker_forced\b[^\n]*(==|>)\s*1": "no operator forced a breaker",
    r"gatewayz_circuit_breaker_open_suppressed\b[^\n]*(==|>)\s*1": "the max-open-share guard "
    "is off (1.0)",
    r"ALERTS": "depends on which alerts are active",
}
DEADLINE_SECONDS = 60.0


def run_traffic(redis_url: str, namespace: str, stop_after: float) -> None:
    """A worker process: books calls of the three providers (and the gateway's backend metrics)
    about 25 times a second until SIGTERM (which flushes) or ``stop_after`` seconds."""
    from opentelemetry import trace  # a traced worker: its calls carry exemplars
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())
    tracer = trace.get_tracer("e2e")
    metrics = MetricsClient(redis_url=redis_url, namespace=namespace)
    gateway = GatewayMetrics(metrics, "gatewayz")
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < stop_after:
        n += 1
        with (
            tracer.start_as_current_span("request"),
            gateway.inference(HEALTHY, "traced-e2e", "/v1/chat/completions") as call,
        ):
            call.status_code = 200
        gateway.record_inference(
            HEALTHY, "gpt-e2e", 0.3, status_code=200, input_tokens=100, output_tokens=50,
            credits=0.5, cost_usd=0.002, endpoint="/v1/chat/completions", ttfb_s=0.1, ttfc_s=0.2,
        )  # fmt: skip
        gateway.record_inference(FAILING, "gpt-e2e", 0.2, status_code=503)
        gateway.record_inference(SLOW, "slow-e2e", 6.0, status_code=200, input_tokens=10)
        if n % 10 == 0:  # a few 429s and 404s: outcome classes besides success and failure
            gateway.record_inference(HEALTHY, "gpt-e2e", 0.1, status_code=429)
            gateway.record_inference(HEALTHY, "gpt-e2e", 0.1, status_code=404)
        metrics.allow(FAILING)  # turned away while its breaker is open: rejected_calls_total
        # mostly 200, and each 20 calls a 502, a 429, a 401 and a 499 (client gone)
        status = {0: 502, 5: 429, 10: 401, 15: 499}.get(n % 20, 200)
        gateway.requests.labels(
            "gatewayz", "POST", "/v1/chat/completions", status, f"{status // 100}xx"
        ).inc()
        gateway.request_duration.labels("gatewayz", "POST", "/v1/chat/completions").observe(0.31)
        gateway.cache_hits.labels("models").inc()
        if n % 4 == 0:
            gateway.cache_misses.labels("models").inc()
        gateway.database_queries.labels("users", "select").inc()
        time.sleep(0.04)
    metrics.close(timeout=5)


@dataclass
class Stack:
    prometheus: str  # base URL
    aggregator_port: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def api(self, path: str, **params: str) -> Any:
        """GET an API path; returns its `data`, asserting status success."""
        url = f"{self.prometheus}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            if error.code not in (400, 422):  # 503 while starting: an OSError, wait_for waits
                raise
            body = json.loads(error.read())  # a query that does not parse: its message
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("/api/v1/query", query=expr)
        result = data["result"]
        return result if data["resultType"] in ("vector", "matrix") else [{"value": result}]

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.api("/api/v1/alerts")["alerts"])


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _stop(process: subprocess.Popen[bytes]) -> None:
    stop_process(process, timeout=10)


def _write_config(tmp: Path, aggregator_port: int, prometheus_port: int) -> Path:
    """prometheus.yml and the rule files, as in deploy/, with test targets and 1 s intervals."""
    rules_dir = tmp / "rules"
    rules_dir.mkdir()
    for path in sorted((DEPLOY / "prometheus" / "rules").glob("*.yml")):
        rules = yaml.safe_load(path.read_text())
        for group in rules["groups"]:
            if "interval" in group:
                group["interval"] = "1s"
        (rules_dir / path.name).write_text(yaml.safe_dump(rules, sort_keys=False))
    railway.write_rule_files(rules_dir)
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config.pop("alerting", None)
    config["rule_files"] = [str(rules_dir / "*.yml")]
    targets = {
        "gatewayz": f"127.0.0.1:{aggregator_port}",
        "prometheus": f"127.0.0.1:{prometheus_port}",
    }
    config["scrape_configs"] = [
        {**job, "static_configs": [{"targets": [targets[job["job_name"]]]}]}
        for job in config["scrape_configs"]
        if job["job_name"] in targets  # no Alertmanager here
    ]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def stack(tmp_path: Path, redis_url: str, namespace: str) -> Iterator[Stack]:
    need_tool("prometheus", "apt-get install prometheus")
    aggregator_port, prometheus_port = free_port(), free_port()
    config = _write_config(tmp_path, aggregator_port, prometheus_port)
    result = Stack(f"http://127.0.0.1:{prometheus_port}", aggregator_port)
    log = (tmp_path / "prometheus.log").open("wb")
    try:
        result.processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "aggregator",
                    "--redis-url",
                    redis_url,
                    "--namespace",
                    namespace,
                    "--port",
                    str(aggregator_port),
                    "--instance",
                    "e2e-1",
                    "--interval",
                    "1",
                    "--breaker-interval",
                    "1",
                    "--providers",
                    ",".join(PROVIDERS),
                    "--log-level",
                    "WARNING",
                ],
                stderr=subprocess.DEVNULL,
            )
        )
        for _ in range(2):  # two workers: counters are summed across them in Redis
            code = (
                "from tests.deploy.test_prometheus_e2e import run_traffic; "
                f"run_traffic({redis_url!r}, {namespace!r}, 120.0)"
            )
            result.processes.append(subprocess.Popen(_python(code), cwd=REPO))
        result.processes.append(
            subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                    "--enable-feature=exemplar-storage",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=log,
            )
        )
        yield result
    finally:
        for process in reversed(result.processes):
            _stop(process)
        log.close()


def _rule_expressions() -> dict[str, str]:
    """Rule name (alert or record) -> expression, from the repository's rule files."""
    found: dict[str, str] = {}
    for path in sorted((DEPLOY / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                found[rule.get("alert") or rule["record"]] = rule["expr"]
    return found


def _substitute(expr: str) -> str:
    """A Grafana target expression as PromQL: intervals become 1m, every other variable
    matches anything (`label="$v"` becomes `label=~".*"`)."""
    expr = re.sub(r"\$\{?__(rate_interval|interval|range)(_ms|_s)?\}?", "1m", expr)
    expr = re.sub(r"\[\[__\w+\]\]", "1m", expr)
    variable = r"(\$\{\w+(:\w+)?\}|\$\w+|\[\[\w+\]\])"
    expr = re.sub(r'(\w+)\s*(=|=~)\s*"' + variable + '"', r'\1=~".*"', expr)
    expr = re.sub(r'(\w+)\s*(!=|!~)\s*"' + variable + '"', r'\1!~"^$"', expr)
    return re.sub(variable, ".*", expr)


def _panels(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "targets" in node:
            yield node
        for value in node.values():
            yield from _panels(value)
    elif isinstance(node, list):
        for value in node:
            yield from _panels(value)


def _datasource_kind(datasource: Any) -> str:
    if isinstance(datasource, dict):
        return f"{datasource.get('type', '')} {datasource.get('uid', '')}".lower()
    return str(datasource or "").lower()


def _dashboard_expressions(exemplar_only: bool = False) -> dict[str, str]:
    """ "dashboard / panel / refId" -> PromQL of every Prometheus target of every dashboard (of
    those showing exemplars only, if ``exemplar_only``)."""
    found: dict[str, str] = {}
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in _panels(dashboard.get("panels", [])):
            for target in panel.get("targets", []):
                kind = _datasource_kind(target.get("datasource") or panel.get("datasource"))
                if not target.get("expr") or any(s in kind for s in ("loki", "tempo")):
                    continue
                if exemplar_only and target.get("exemplar") is not True:
                    continue
                name = f"{path.name} / {panel.get('title', '?')} / {target.get('refId', '?')}"
                found[name] = _substitute(target["expr"])
    return found


def _trace_to_metrics_queries() -> dict[str, str]:
    """The Tempo datasource's "related metrics" queries, as Grafana runs them for a span of the
    healthy provider (YAML's `$$` is provisioning's escape of `$`)."""
    path = DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yml"
    sources = {s["uid"]: s for s in yaml.safe_load(path.read_text())["datasources"]}
    queries = sources["tempo"]["jsonData"]["tracesToMetrics"]["queries"]
    tags = f'provider="{HEALTHY}"'
    return {q["name"]: q["query"].replace("$$__tags", tags) for q in queries}


def test_rules_and_dashboards_against_a_real_prometheus(
    stack: Stack, redis_url: str, namespace: str
) -> None:
    started = time.monotonic()
    timings: dict[str, float] = {}

    def mark(what: str) -> None:
        timings[what] = time.monotonic() - started

    def target_up() -> bool:
        targets = stack.api("/api/v1/targets")["activeTargets"]
        ours = [t for t in targets if t["labels"]["job"] == "gatewayz"]
        return len(ours) == 1 and ours[0]["health"] == "up" and ours[0]["lastError"] == ""

    wait_for(target_up, timeout=30)
    mark("target up")

    # The cardinality guard, for real: a client capped at 1 series per metric writes one
    # series, Prometheus sees the drop counter at 0, then 3 more series are dropped.
    capped = MetricsClient(
        settings=ClientSettings(redis_url=redis_url, namespace=namespace, max_series_per_metric=1)
    )
    try:
        overflow = capped.counter(f"{OVERFLOW_METRIC}_total", "e2e overflow", ["key"])
        overflow.labels("a").inc()
        capped.record("not a provider!", 0.1)  # rejected: gatewayz_client_events_rejected_total
        assert capped.flush(timeout=5)
        dropped = f'gatewayz_metrics_series_dropped_total{{metric="{OVERFLOW_METRIC}"}}'
        seen_at_zero = f"count_over_time({dropped}[1m]) >= 2"
        wait_for(lambda: bool(stack.query(seen_at_zero)), timeout=DEADLINE_SECONDS)
        for key in "bcd":
            overflow.labels(key).inc()
        assert capped.flush(timeout=5)
    finally:
        capped.close(timeout=5)

    # Traces exist (the workers' calls run in spans): their exemplars reach Prometheus, and
    # every dashboard target that shows exemplars finds them (Grafana sends the target's own
    # expression to query_exemplars: a recording rule's series would have none).
    def exemplars(query: str) -> list[dict[str, Any]]:
        found = stack.api(
            "/api/v1/query_exemplars",
            query=query,
            start=str(time.time() - 300),
            end=str(time.time() + 60),
        )
        return [e for series in found for e in series["exemplars"]]

    queries = [f'provider_response_time_seconds_bucket{{provider="{HEALTHY}"}}']
    queries += _dashboard_expressions(exemplar_only=True).values()
    assert len(queries) >= 2
    for query in queries:
        wait_for(lambda query=query: bool(exemplars(query)), timeout=DEADLINE_SECONDS)
        found = exemplars(query)
        assert all(re.fullmatch(r"[0-9a-f]{32}", e["labels"]["trace_id"]) for e in found)
    mark("exemplars in Prometheus")

    rules = _rule_expressions()
    dashboards = _dashboard_expressions()
    expressions = {f"rule {name}": expr for name, expr in rules.items()}
    expressions |= {f"dashboard {name}": expr for name, expr in dashboards.items()}
    expressions |= {f"trace to metrics {n}": e for n, e in _trace_to_metrics_queries().items()}
    may_be_empty = {f"rule {name}" for name in EMPTY_WHEN_HEALTHY} | {
        f"dashboard {name}"
        for name, expr in dashboards.items()
        if any(re.search(pattern, expr) for pattern in DASHBOARD_EMPTY_WHEN_HEALTHY)
    }
    missing: dict[str, str] = {}

    def everything_has_data() -> bool:
        missing.clear()
        for name, expr in expressions.items():
            result = stack.query(expr)  # asserts the query parses and runs
            if not result and name not in may_be_empty:
                missing[name] = expr
        active = {
            (alert["labels"]["alertname"], alert["labels"].get(label, ""))
            for alert in stack.alerts()
            if alert["state"] in ("pending", "firing")
            for label in ("provider", "metric")
        }
        for alertname, (label, values) in EXPECTED_ALERTS.items():
            for value in values:
                if (alertname, value) not in active:
                    missing[f"alert {alertname}{{{label}={value!r}}}"] = "not pending/firing"
        return not missing

    try:
        wait_for(everything_has_data, timeout=DEADLINE_SECONDS, poll=0.5)
    except AssertionError:
        pytest.fail(f"no data / not active within {DEADLINE_SECONDS:.0f}s: {missing}")
    mark("every expression has data, provider alerts pending")

    # Each provider alert's expression names exactly the provider it is about; the healthy
    # provider is in none, and no active alert of any kind names it.
    for alertname, (label, values) in EXPECTED_ALERTS.items():
        got = {sample["metric"].get(label) for sample in stack.query(rules[alertname])}
        assert got == values, f"{alertname}: {got}"
    alerts = stack.alerts()
    assert not [a for a in alerts if a["labels"].get("provider") == HEALTHY], alerts

    def series_dropped_firing() -> bool:
        return any(
            a["labels"]["alertname"] == "GatewayzMetricsSeriesDropped" and a["state"] == "firing"
            for a in stack.alerts()
        )

    wait_for(series_dropped_firing, timeout=DEADLINE_SECONDS, poll=0.5)
    mark("GatewayzMetricsSeriesDropped firing")

    # Legitimately empty alert expressions: they parse (queried above) and, where the setup
    # guarantees it, are empty indeed.
    for name in EMPTY_WHEN_HEALTHY:
        if name != "GatewayzRedisEvictingPolicy":
            assert stack.query(rules[name]) == [], name

    # The recorded rate keeps the outcome classes the workers produced besides success/failure.
    recorded = stack.query(f'gatewayz:provider_requests:rate5m{{provider="{HEALTHY}"}}')
    assert {sample["metric"]["outcome"] for sample in recorded} >= {"success", "rate_limited"}

    railway.check_claims(stack.query, HEALTHY, FAILING, SLOW, DEADLINE_SECONDS)
    mark("railway-grafana-stack claims hold")

    print(
        f"\nrules: {len(rules)}, dashboard targets: {len(dashboards)}, "
        + ", ".join(f"{what} after {seconds:.1f}s" for what, seconds in timings.items())
    )

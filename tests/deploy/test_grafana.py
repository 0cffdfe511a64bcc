"""Grafana provisioning (deploy/grafana/) and the three dashboards: what Grafana needs to load them
and what they promise. Whether each expression returns data is the Prometheus end-to-end test's
job; here: the structure, the datasource uids, the variables, the panels' targets."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
GRAFANA = ROOT / "deploy" / "grafana"
DATASOURCES = GRAFANA / "provisioning" / "datasources"
PROVIDERS = GRAFANA / "provisioning" / "dashboards"
DASHBOARDS = GRAFANA / "dashboards"

EXPECTED = {
    "providers.json": ("gatewayz-providers", "Gatewayz — Providers"),
    "gateway.json": ("gatewayz-gateway", "Gatewayz — Gateway"),
    "aggregator.json": ("gatewayz-aggregator", "Gatewayz — Aggregator"),
}
# Grafana 10.4 writes schemaVersion 39 (11.x: 39-41); older numbers trigger migrations.
SCHEMA_VERSIONS = range(39, 42)
NO_TARGETS = {"row", "text"}
# The only Grafana variables a panel may use: the end-to-end test substitutes these.
VARIABLE = re.compile(r"\$(\{?\w+\}?)")
ALLOWED_VARIABLES = {"provider", "{provider}", "__rate_interval"}


def _yaml(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict), f"{path} is not a YAML mapping"
    return loaded


def _dashboard(name: str) -> dict[str, Any]:
    loaded = json.loads((DASHBOARDS / name).read_text())
    assert isinstance(loaded, dict)
    return loaded


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _datasources() -> list[dict[str, Any]]:
    sources = []
    for path in sorted(DATASOURCES.glob("*.yml")):
        document = _yaml(path)
        assert document["apiVersion"] == 1
        sources += document["datasources"]
    return sources


def _uids() -> dict[str, str]:
    """Provisioned datasource uid -> type."""
    return {source["uid"]: source["type"] for source in _datasources()}


def _targets(name: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in _panels(_dashboard(name)):
        for target in panel.get("targets", []):
            yield panel, target


def test_the_dashboard_folder_holds_exactly_the_three_dashboards() -> None:
    assert sorted(path.name for path in DASHBOARDS.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dashboard_identity(name: str) -> None:
    dashboard = _dashboard(name)
    assert (dashboard["uid"], dashboard["title"]) == EXPECTED[name]
    assert dashboard["schemaVersion"] in SCHEMA_VERSIONS
    assert "id" not in dashboard or dashboard["id"] is None  # Grafana assigns ids per instance
    assert "gatewayz" in dashboard["tags"]


def test_dashboard_uids_are_unique_and_valid() -> None:
    uids = [_dashboard(name)["uid"] for name in EXPECTED]
    assert len(set(uids)) == len(uids)
    for uid in uids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid), uid  # Grafana's uid limit is 40


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_panel_ids_are_unique(name: str) -> None:
    ids = [panel["id"] for panel in _panels(_dashboard(name))]
    assert all(isinstance(i, int) and i > 0 for i in ids)
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_panel_queries_something(name: str) -> None:
    for panel in _panels(_dashboard(name)):
        if panel["type"] in NO_TARGETS:
            continue
        exprs = [target.get("expr", "").strip() for target in panel.get("targets", [])]
        assert exprs, f"{name}: panel {panel['title']!r} has no target"
        assert all(exprs), f"{name}: panel {panel['title']!r} has a target without expr"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), f"{name}: {panel['title']!r} repeats a refId"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_panels_reference_provisioned_datasources(name: str) -> None:
    uids = _uids()
    for panel in _panels(_dashboard(name)):
        references = [panel.get("datasource")]
        references += [target.get("datasource") for target in panel.get("targets", [])]
        for reference in filter(None, references):
            assert reference["uid"] in uids, f"{name}: {panel['title']!r} uses {reference}"
            assert reference["type"] == uids[reference["uid"]]
        if panel["type"] not in NO_TARGETS:
            assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_panels_use_only_the_known_variables(name: str) -> None:
    for panel, target in _targets(name):
        used = set(VARIABLE.findall(target["expr"]))
        assert used <= ALLOWED_VARIABLES, f"{name}: {panel['title']!r} uses {used}"


def test_provider_variable() -> None:
    variables = {v["name"]: v for v in _dashboard("providers.json")["templating"]["list"]}
    provider = variables["provider"]
    assert provider["type"] == "query"
    assert provider["datasource"] == {"type": "prometheus", "uid": "prometheus"}
    query = provider["query"]
    text = query["query"] if isinstance(query, dict) else query
    assert text == provider["definition"] == "label_values(provider_availability, provider)"
    assert (provider["multi"], provider["includeAll"], provider["allValue"]) == (True, True, ".*")
    # every provider panel filters by it, as a regex (All is .*)
    for panel, target in _targets("providers.json"):
        assert 'provider=~"$provider"' in target["expr"], panel["title"]


def test_latency_panel_has_exemplars_on() -> None:
    panels = [p for p in _panels(_dashboard("providers.json")) if p["title"].startswith("Latency")]
    assert len(panels) == 1
    targets = panels[0]["targets"]
    exemplars = [t for t in targets if t.get("exemplar") is True]
    # on the raw buckets: a recording rule's series carries no exemplars
    assert [t["expr"] for t in exemplars] == [
        "histogram_quantile(0.95, sum by (provider, le) (max without (instance) (rate("
        'provider_response_time_seconds_bucket{provider=~"$provider"}[5m]))))'
    ]
    exprs = " ".join(t["expr"] for t in targets)
    assert "gatewayz:provider_latency_seconds:p50_5m" in exprs


def test_breaker_state_is_a_state_timeline() -> None:
    panels = [p for p in _panels(_dashboard("providers.json")) if p["type"] == "state-timeline"]
    assert [p["title"] for p in panels] == ["Breaker state"]
    assert "gatewayz_circuit_breaker_state" in panels[0]["targets"][0]["expr"]
    mappings = panels[0]["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert {v["text"] for v in mappings.values()} == {"closed", "half_open", "open"}


@pytest.mark.parametrize(
    ("name", "metrics"),
    [
        (
            "providers.json",
            [
                "provider_availability",
                "provider_error_rate",
                "gatewayz_provider_health_score",
                "gatewayz_circuit_breaker_state",
                "gatewayz:provider_requests:rate5m",
                "gatewayz:breaker_rejected_calls:rate5m",
                "gatewayz:provider_cost_usd:rate5m",
                "gatewayz:provider_tokens:rate5m",
            ],
        ),
        (
            "gateway.json",
            [
                "gatewayz:fastapi_requests:rate5m",
                "fastapi_requests_duration_seconds_bucket",
                "gatewayz:model_inference_requests:rate5m",
                "model_inference_duration_seconds_bucket",
                "tokens_used_total",
                "credits_used_total",
                "backend_ttfb_seconds_bucket",
                "time_to_first_chunk_seconds_bucket",
            ],
        ),
        (
            "aggregator.json",
            [
                "gatewayz_aggregator_cycle_duration_seconds",
                "gatewayz:aggregator_snapshot_age_seconds",
                "gatewayz_aggregator_leader",
                "gatewayz_aggregator_cycles_failed_total",
                "gatewayz_redis_operations_total",
                "gatewayz_client_events_dropped_total",
                "gatewayz_client_events_rejected_total",
                "gatewayz_metrics_series_dropped_total",
                "gatewayz_redis_memory_used_bytes",
                "gatewayz_redis_memory_max_bytes",
                "gatewayz_aggregator_clock_offset_seconds",
                "gatewayz_client_clock_offset_seconds",
            ],
        ),
    ],
)
def test_dashboards_cover_their_metrics(name: str, metrics: list[str]) -> None:
    exprs = " ".join(target["expr"] for _, target in _targets(name))
    missing = [m for m in metrics if not re.search(rf"(?<![\w:]){re.escape(m)}(?![\w:])", exprs)]
    assert missing == []


def test_leader_is_shown_per_replica() -> None:
    exprs = [t["expr"] for _, t in _targets("aggregator.json")]
    assert "max by (replica) (gatewayz_aggregator_leader)" in exprs


def test_provider_series_are_never_summed_across_replicas() -> None:
    """Both replicas serve the same provider series: a bare sum() over them counts each twice.
    A sum is fine only over a max() or a recording rule's output that already picked one."""
    for name in EXPECTED:
        for panel, target in _targets(name):
            for match in re.finditer(r"sum by \([^)]*\) \(\s*(\w+)", target["expr"]):
                assert match[1] in ("max", "rate", "increase"), (name, panel["title"])
                if match[1] in ("rate", "increase"):
                    assert "instance" in target["expr"], (name, panel["title"])


def test_datasources_are_provisioned_with_the_uids_the_dashboards_use() -> None:
    sources = {source["uid"]: source for source in _datasources()}
    assert {"prometheus", "loki", "tempo"} <= set(sources)
    assert (sources["prometheus"]["type"], sources["prometheus"]["url"]) == (
        "prometheus",
        "http://prometheus:9090",
    )
    assert (sources["loki"]["type"], sources["loki"]["url"]) == ("loki", "http://loki:3100")
    assert (sources["tempo"]["type"], sources["tempo"]["url"]) == ("tempo", "http://tempo:3200")
    assert [s["uid"] for s in _datasources() if s.get("isDefault")] == ["prometheus"]
    destinations = sources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert {"name": "trace_id", "datasourceUid": "tempo"} in destinations
    assert sources["tempo"]["jsonData"]["tracesToLogsV2"]["datasourceUid"] == "loki"
    (derived,) = sources["loki"]["jsonData"]["derivedFields"]
    assert (derived["name"], derived["datasourceUid"]) == ("trace_id", "tempo")
    assert derived["matcherRegex"] == r"trace_id=(\w+)"
    assert sources["tempo"]["jsonData"]["tracesToLogsV2"]["filterByTraceID"] is True


def test_traces_link_only_to_metrics_that_exist() -> None:
    """A span's "related metrics" queries take its `provider` attribute (every call span has
    one) as the label; no service map, which needs Tempo's metrics generator (not run here).
    The Prometheus end-to-end test runs each query with a provider's label."""
    tempo = {source["uid"]: source for source in _datasources()}["tempo"]["jsonData"]
    assert "serviceMap" not in tempo
    to_metrics = tempo["tracesToMetrics"]
    assert to_metrics["datasourceUid"] == "prometheus"
    assert to_metrics["tags"] == [{"key": "provider", "value": "provider"}]
    assert len(to_metrics["queries"]) == 3
    assert all("{$$__tags}" in query["query"] for query in to_metrics["queries"])


def test_dashboard_provider_path_is_the_folder_compose_mounts() -> None:
    documents = [_yaml(path) for path in sorted(PROVIDERS.glob("*.yml"))]
    providers = [p for document in documents for p in document["providers"]]
    assert len(providers) == 1
    provider = providers[0]
    assert (provider["type"], provider["orgId"]) == ("file", 1)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    home = compose["services"]["grafana"]["environment"][
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    ]
    assert home == provider["options"]["path"] + "/providers.json"

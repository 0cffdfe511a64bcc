"""The Prometheus side of deploy/ is valid as the tools read it: `promtool check config` and
`check rules`, `amtool check-config`, and the promtool unit tests of every alert and recording
rule. Plus what the tools do not check: every alert carries a severity and the three
annotations, every alert has a unit test that fires and one that must not, and the recording
rules the dashboards rely on exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.processes import need_tool

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RULE_FILES = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
UNIT_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"

CONTRACT_RECORDING_RULES = {
    "gatewayz:provider_requests:rate5m",
    "gatewayz:provider_latency_seconds:p50_5m",
    "gatewayz:provider_latency_seconds:p95_5m",
    "gatewayz:provider_cost_usd:rate5m",
    "gatewayz:provider_tokens:rate5m",
    "gatewayz:breaker_rejected_calls:rate5m",
    "gatewayz:aggregator_snapshot_age_seconds",
    "gatewayz:fastapi_requests:rate5m",
    "gatewayz:model_inference_requests:rate5m",
}

PROMTOOL_HINT = "apt-get install prometheus"
AMTOOL_HINT = "apt-get install prometheus-alertmanager"


def _run(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{output}"
    return output


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _rules(kind: str) -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in _load(path)["groups"]
        for rule in group["rules"]
        if kind in rule
    ]


def test_the_files_exist() -> None:
    assert PROMETHEUS_CONFIG.is_file()
    assert ALERTMANAGER_CONFIG.is_file()
    assert {path.name for path in RULE_FILES} >= {"recording.yml", "alerts.yml"}
    assert UNIT_TESTS


def test_promtool_check_config() -> None:
    need_tool("promtool", PROMTOOL_HINT)
    output = _run(["promtool", "check", "config", str(PROMETHEUS_CONFIG)])
    # rule_files is relative to the config: the check must have found and checked them all
    assert f"{len(RULE_FILES)} rule files found" in output, output


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda path: path.name)
def test_promtool_check_rules(path: Path) -> None:
    need_tool("promtool", PROMTOOL_HINT)
    _run(["promtool", "check", "rules", str(path)])


@pytest.mark.parametrize("path", UNIT_TESTS, ids=lambda path: path.name)
def test_promtool_unit_tests(path: Path) -> None:
    need_tool("promtool", PROMTOOL_HINT)
    _run(["promtool", "test", "rules", str(path)])


def test_amtool_check_config() -> None:
    need_tool("amtool", AMTOOL_HINT)
    _run(["amtool", "check-config", str(ALERTMANAGER_CONFIG)])


def test_every_alert_has_severity_and_annotations() -> None:
    alerts = _rules("alert")
    assert len(alerts) >= 12
    names = [rule["alert"] for rule in alerts]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in alerts:
        assert rule.get("labels", {}).get("severity") in {"critical", "warning"}, rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule.get("annotations", {})), rule[
            "alert"
        ]


def test_every_alert_has_a_unit_test_that_fires_and_one_that_does_not() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for path in UNIT_TESTS:
        for case in _load(path).get("tests", []):
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in _rules("alert")}
    assert names - fires == set(), "alerts without a unit test that fires"
    assert names - silent == set(), "alerts without a unit test where they must not fire"


def test_contract_recording_rules_exist_every_15s() -> None:
    recording = _load(DEPLOY / "prometheus" / "rules" / "recording.yml")
    assert all(group["interval"] == "15s" for group in recording["groups"])
    assert {rule["record"] for rule in _rules("record")} >= CONTRACT_RECORDING_RULES


def test_scrape_job_covers_both_replicas() -> None:
    jobs = {job["job_name"]: job for job in _load(PROMETHEUS_CONFIG)["scrape_configs"]}
    targets = [t for sc in jobs["gatewayz"]["static_configs"] for t in sc["targets"]]
    assert targets == ["aggregator-1:9108", "aggregator-2:9108"]


def test_every_runbook_names_docs_pages_that_exist() -> None:
    named = []
    for rule in _rules("alert"):
        runbook = " ".join(rule["annotations"]["runbook"].split())
        named += re.findall(r"docs/[a-z0-9/_-]+\.md", runbook)
    assert len(named) >= 12
    missing = sorted({page for page in named if not (DEPLOY.parent / page).is_file()})
    assert missing == []

"""The railway-grafana-stack's PromQL expressions (tests/deploy/data/railway_expressions.yml) and
what the end-to-end test needs of them: the compat rules and the origin's own recording rules as
rule files for the test's Prometheus, Grafana variables replaced, and the series selectors an
expression reads (to tell "no data here" from "no such series")."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.processes import wait_for

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "deploy" / "data" / "railway_expressions.yml"
COMPAT_RULES = REPO / "deploy" / "prometheus" / "compat" / "railway-compat.yml"
CORRECTED_ALERTS = REPO / "deploy" / "prometheus" / "compat" / "corrected-alerts.yml"
CORRECTED_PANELS = REPO / "deploy" / "prometheus" / "compat" / "corrected-panels.yml"
STATUSES = ("unchanged", "compat", "edit", "cannot")


@dataclass(frozen=True)
class Expression:
    source: str
    where: str
    expr: str
    status: str
    edited: str | None
    corrected: str | None  # a query that cannot work here, in valid PromQL
    missing: tuple[str, ...]  # for one that cannot work although other jobs match its series
    why: str | None
    empty_here: str | None
    record: str | None
    dashboard: str | None

    @property
    def name(self) -> str:
        return f"{self.source} / {self.where}"

    @property
    def works(self) -> bool:
        return self.status != "cannot"

    @property
    def to_run(self) -> str:
        """The expression as it runs here: the edited one where it needs an edit."""
        return self.edited if self.edited is not None else self.expr


def expressions() -> list[Expression]:
    rows: list[dict[str, Any]] = yaml.safe_load(DATA.read_text())
    return [
        Expression(
            source=row["source"],
            where=row["where"],
            expr=row["expr"],
            status=row["status"],
            edited=row.get("edited"),
            corrected=row.get("corrected"),
            missing=tuple(row.get("missing", ())),
            why=row.get("why"),
            empty_here=row.get("empty_here"),
            record=row.get("record"),
            dashboard=row.get("dashboard"),
        )
        for row in rows
    ]


def write_rule_files(rules_dir: Path) -> None:
    """The compat rules, and the origin's recording rules that work (edited where needed), with
    1 s group intervals, into the test Prometheus's rule directory."""
    compat = yaml.safe_load(COMPAT_RULES.read_text())
    for group in compat["groups"]:
        group["interval"] = "1s"
    (rules_dir / "railway-compat.yml").write_text(yaml.safe_dump(compat, sort_keys=False))
    recording = [
        {"record": e.record, "expr": e.to_run} for e in expressions() if e.record and e.works
    ]
    origin = {"groups": [{"name": "railway-origin", "interval": "1s", "rules": recording}]}
    (rules_dir / "railway-origin-recording.yml").write_text(yaml.safe_dump(origin))


def substitute(expr: str) -> str:
    """Grafana's variables as PromQL: intervals 1m, every other variable matches anything, and
    a `label_values(selector, label)` variable query becomes the query Grafana runs for it."""
    variable_query = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", expr, re.DOTALL)
    if variable_query:
        expr = f"group by ({variable_query[2]}) ({variable_query[1]})"
    expr = re.sub(r"\$\{?__(rate_interval|interval|range)(_ms|_s)?\}?", "1m", expr)
    variable = r"(\$\{\w+(:\w+)?\}|\$\w+|\[\[\w+\]\])"
    expr = re.sub(r'(\w+)\s*(=|=~)\s*"' + variable + '"', r'\1=~".*"', expr)
    expr = re.sub(r'(\w+)\s*(!=|!~)\s*"' + variable + '"', r'\1!~"^$"', expr)
    return re.sub(variable, ".*", expr)


_STRING = r""""(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'"""
_TOKENS = re.compile(
    rf"(?P<string>{_STRING})"
    rf"|(?P<matchers>\{{(?:{_STRING}|[^}}\"'])*\}})"
    r"|(?P<range>\[[^\]]*\])"
    r"|(?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[smhdwy]*)"
    r"|(?P<name>[a-zA-Z_:][\w:]*)"
    r"|(?P<other>\S)"
)
_LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile",
}  # fmt: skip
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def selectors(expr: str) -> list[str]:
    """The series selectors of a PromQL expression (`name{matchers}` or `name`), found by
    tokens, so that an expression that does not parse still names what it reads."""
    tokens = [(m.lastgroup or "", m.group()) for m in _TOKENS.finditer(expr)]
    found: list[str] = []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "name" and text in _LABEL_LISTS and following == "(":
            while i < len(tokens) and tokens[i][1] != ")":
                i += 1
        elif (
            kind == "name"
            and following != "("  # a function or an aggregation
            and not (text in _AGGREGATIONS and following in ("by", "without"))
            and text.lower() not in _KEYWORDS
        ):
            matchers = tokens[i + 1][1] if following.startswith("{") else ""
            found.append(text + matchers)
        i += 1
    return found


Query = Callable[[str], list[dict[str, Any]]]


def missing_data(query: Query) -> dict[str, str]:
    """What is wrong with the claims, against a Prometheus scraping this project: every
    expression claimed to work (unchanged, with the compat rules, or edited) runs and has data
    (unless it says why it is empty here), and so does every series it reads; every expression
    claimed unable to work reads at least one series that has none. Empty when all hold."""
    wrong: dict[str, str] = {}
    for e in expressions():
        reads = list(e.missing) or selectors(substitute(e.to_run))
        empty = [s for s in reads if not query(f"count({s})")]
        if e.works:
            if empty:
                wrong[e.name] = f"no series {empty}"
            elif not e.empty_here and not query(substitute(e.to_run)):
                wrong[e.name] = f"no data: {e.to_run}"
        elif not empty:
            wrong[e.name] = f"claimed it cannot work, but every series it reads has data: {reads}"
    return wrong


def corrected_expressions() -> dict[str, str]:
    """Every expression of deploy/prometheus/compat/corrected-*.yml, by where it is from, with
    Grafana's variables replaced."""
    found: dict[str, str] = {}
    for group in yaml.safe_load(CORRECTED_ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            found[f"corrected-alerts.yml {rule.get('alert') or rule['record']}"] = rule["expr"]
    for item in yaml.safe_load(CORRECTED_PANELS.read_text()):
        found[f"corrected-panels.yml {item['file']} / {item['target']}"] = substitute(item["use"])
    return found


def check_claims(query: Query, healthy: str, failing: str, slow: str, timeout: float) -> None:
    """The migration table's claims (missing_data), then the compat rules' values, against the
    e2e test's Prometheus and providers."""
    wrong: dict[str, str] = {}

    def claims_hold() -> bool:
        wrong.clear()
        wrong.update(missing_data(query))
        return not wrong

    try:
        wait_for(claims_hold, timeout=timeout, poll=1.0)
    except AssertionError:
        pytest.fail(f"railway-grafana-stack claims do not hold: {wrong}")
    for expr in corrected_expressions().values():
        query(expr)  # asserts that it parses and runs

    # The origin's 0-100 scale, exactly: the healthy provider scores 1 (available, no failures,
    # p95 0.3 s), the failing one (open or half-open, every call failed, none succeeded: latency
    # score 1) 0.4*0 + 0.3*(1 - 1) + 0.3*1 = 0.3. One-hot states, as the origin's panels sum them.
    def scores() -> dict[str, float]:
        found = query(f'provider_health_score{{provider=~"{healthy}|{failing}"}}')
        return {s["metric"]["provider"]: float(s["value"][1]) for s in found}

    wait_for(lambda: scores() == {healthy: 100.0, failing: 30.0}, timeout=timeout)
    closed = query('circuit_breaker_current_state{state="closed"}')
    by_provider = {s["metric"]["provider"]: s["value"][1] for s in closed}
    assert by_provider == {healthy: "1", slow: "1", failing: "0"}
    one_hot = query("sum by (provider) (circuit_breaker_current_state)")
    assert {s["metric"]["provider"]: s["value"][1] for s in one_hot} == dict.fromkeys(
        (healthy, failing, slow), "1"
    )

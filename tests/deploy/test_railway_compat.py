"""deploy/prometheus/compat/ and the migration table, without a running Prometheus: the files
pass promtool, are off by default, agree with tests/deploy/data/railway_expressions.yml, and so
does the table of docs/migration/railway-grafana-stack.md. What the expressions return is
checked in test_prometheus_e2e.py;
the compat rules' values in deploy/prometheus/tests/compat_test.yml (run by
test_prometheus_config.py)."""

from __future__ import annotations

import collections
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support import railway
from tests.support.processes import need_tool

PAGE = railway.REPO / "docs" / "migration" / "railway-grafana-stack.md"
PROMETHEUS_CONFIG = railway.REPO / "deploy" / "prometheus" / "prometheus.yml"
INVALID = "invalid PromQL"


def _words(expr: str) -> str:
    return " ".join(expr.split())


def _promtool_check(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    rules = [{"record": f"railway:check_{i}", "expr": expr} for i, expr in enumerate(exprs)]
    path = tmp_path / f"check-{len(list(tmp_path.iterdir()))}.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}))
    return subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "path", [railway.COMPAT_RULES, railway.CORRECTED_ALERTS], ids=lambda path: path.name
)
def test_promtool_check_rules(path: Path) -> None:
    need_tool("promtool", "apt-get install prometheus")
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compat_rules_are_off_unless_loaded() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["rule_files"] == ["rules/*.yml"]
    assert railway.COMPAT_RULES.parent.name == "compat"  # outside rules/, so not in the glob


def test_every_expression_is_classified_with_its_reason() -> None:
    found = railway.expressions()
    assert len(found) == 474
    # the origin's Four Golden Signals has 5 panels twice (same id, same query): counted twice,
    # as Grafana runs them twice; any other repeat would be an extraction mistake
    repeated = collections.Counter(e.name for e in found) - collections.Counter(
        set(e.name for e in found)
    )
    assert len(repeated) == 5 and all("Four-Golden-Signals" in name for name in repeated)
    assert len({(e.name, e.expr) for e in found}) == len(found) - 5
    for e in found:
        assert e.status in railway.STATUSES, e.name
        assert (e.edited is not None) == (e.status == "edit"), e.name
        assert bool(e.why) == (e.status in ("edit", "cannot")), e.name
        assert e.empty_here is None or e.works, e.name
        assert not e.missing or not e.works, e.name


def test_the_corrected_files_hold_every_edit() -> None:
    panels = {
        (item["file"], item["target"]): item["use"]
        for item in yaml.safe_load(railway.CORRECTED_PANELS.read_text())
    }
    groups = yaml.safe_load(railway.CORRECTED_ALERTS.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    origins = {rule["annotations"]["origin"] for rule in rules if "alert" in rule}
    records = {rule["record"]: _words(rule["expr"]) for rule in rules if "record" in rule}
    for e in railway.expressions():
        if e.dashboard is not None:
            if e.status == "edit" or e.corrected:
                assert panels.pop((e.source, e.where)) == (e.edited or e.corrected), e.name
        elif e.status == "edit" and e.record:
            assert records.pop(e.record) == _words(e.edited or ""), e.name
        elif e.status == "edit" and (" alert " in e.where or e.where.endswith("/ A")):
            assert f"{e.source} / {e.where}" in origins, e.name  # a Grafana rule's condition
    assert panels == {}, "corrected panels that are not in the data"
    assert records == {}, "corrected recording rules that are not in the data"


def test_the_invalid_ones_are_invalid_and_their_corrections_parse(tmp_path: Path) -> None:
    need_tool("promtool", "apt-get install prometheus")
    invalid = [e for e in railway.expressions() if e.why and INVALID in e.why]
    assert len(invalid) == 14
    for e in invalid:
        result = _promtool_check([railway.substitute(e.expr)], tmp_path)
        assert result.returncode != 0 and "parse error" in result.stdout + result.stderr, e.name
    corrected = [railway.substitute(e.edited or e.corrected or "") for e in invalid]
    result = _promtool_check(corrected, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def _page() -> str:
    return PAGE.read_text()


def test_the_page_table_matches_the_data() -> None:
    section = _page()
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for e in railway.expressions():
        counts[e.source.rsplit("/", 1)[-1]][e.status] += 1
    rows = {
        m[1]: [int(n.strip() or 0) for n in m[2].split("|")]
        for m in re.finditer(r"^\|[^\n]*\(`([^`]+)`\) \|([ \d|]+)\|$", section, re.MULTILINE)
    }
    for name, counter in counts.items():
        assert rows.pop(name) == [
            sum(counter.values()),
            *(counter[status] for status in railway.STATUSES),
        ], name
    assert all(sum(numbers) == 0 for numbers in rows.values()), rows  # dashboards without PromQL
    total = collections.Counter(e.status for e in railway.expressions())
    bold = " | ".join(f"**{total[status]}**" for status in railway.STATUSES)
    assert f"| **all** | **{sum(total.values())}** | {bold} |" in section


def test_the_page_lists_every_edit_and_every_expression_that_cannot_work() -> None:
    section = _page().replace("\\|", "|")
    for e in railway.expressions():
        if e.status == "edit":
            assert f"`{_words(e.edited or '')}`" in section, e.name
        elif e.status == "cannot":
            where = re.sub(r"^panel \d+ '(.*)' / (\w+)$", r"\1 (\2)", e.where)
            where = re.sub(r"^rule (\S+) '.*' / (\w+)$", r"rule \1 (\2)", where)
            where = re.sub(r"^group \S+ / (alert|record) (\S+)$", r"\1 \2", where)
            assert where in section, e.name

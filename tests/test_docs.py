"""The docs site's reference pages are what the code says (``devtools/docs_reference.py``
regenerates them; ``make docs`` builds the site with warnings as errors)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from devtools.docs_reference import PAGES, REFERENCE, ROOT, render


@pytest.mark.parametrize("name", sorted(PAGES))
def test_each_generated_reference_page_is_up_to_date(name: str) -> None:
    committed = (REFERENCE / name).read_text()
    assert committed == render()[name], (
        f"docs/reference/{name} is stale: run python -m devtools.docs_reference"
    )


def test_a_stale_page_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    import gatewayz_protocol.options as options

    changed = dataclasses.replace(options.SHARED[0], help="changed")
    monkeypatch.setattr(options, "SHARED", (changed, *options.SHARED[1:]))
    assert render()["configuration.md"] != (REFERENCE / "configuration.md").read_text()


def test_the_configuration_page_names_every_variable_and_its_old_name() -> None:
    from aggregator.option_table import AGGREGATOR_OPTIONS
    from client._settings import CLIENT_OPTIONS
    from gatewayz_telemetry.settings import TELEMETRY_OPTIONS

    page = render()["configuration.md"]
    for option in (*CLIENT_OPTIONS, *AGGREGATOR_OPTIONS, *TELEMETRY_OPTIONS):
        assert f"| `{option.env}` |" in page, option.env
        for old in option.deprecated:
            assert f"| `{old}` | `{option.env}` |" in page, old


def test_the_alerts_and_dashboards_page_names_every_provisioned_dashboard() -> None:
    page = (ROOT / "docs" / "operations" / "alerts-and-dashboards.md").read_text()
    dashboards = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
    titles = [json.loads(path.read_text())["title"] for path in dashboards]
    assert len(titles) == 3
    assert [title for title in titles if f"**{title}**" not in page] == []

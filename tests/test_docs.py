"""The docs site's reference pages are what the code says (``devtools/docs_reference.py``
regenerates them; ``make docs`` builds the site with warnings as errors)."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aggregator.engine.cycle import Aggregator
from aggregator.settings import AggregatorSettings
from client import MetricsClient
from devtools.docs_reference import PAGES, REFERENCE, ROOT, render
from gatewayz_transport.connection import connect
from tests.support.scrape import scrape


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


def _page_families(page: str) -> dict[tuple[str, str], str]:
    """The metrics page's rows: (family name as the parsers name it, type) -> help."""
    rows = {}
    for line in page.splitlines():
        found = re.fullmatch(r"\| `([a-z0-9_]+)` \| (\w+) \| [^|]*\| (.*) \|", line)
        if found:
            name, kind, help_text = found.groups()
            name = name.removesuffix("_total") if kind == "counter" else name
            rows[(name, kind)] = help_text.replace("\\|", "|")
    return rows


def test_the_metrics_page_lists_what_a_real_aggregator_serves_and_nothing_else(
    make_client: Callable[..., MetricsClient], redis_url: str, namespace: str
) -> None:
    """Every family of a real scrape (on Redis's clock, as served: no injected clock), the
    workers' own left out, is on the page with its type and help; the page lists no other (an
    example's worker family was once listed as the aggregator's)."""
    metrics = make_client()
    metrics.counter("docs_jobs_total", "Jobs", ["queue"]).labels("a").inc(1)
    metrics.record("openrouter", 0.2)
    assert metrics.flush(timeout=5)
    settings = AggregatorSettings(
        redis_url=redis_url, namespace=namespace, breaker_models=("openrouter",)
    )
    with connect(settings.redis_url, socket_timeout=2.0) as connection:
        aggregator = Aggregator(settings, connection)
        assert aggregator.run_cycle() is not None
        exposition = scrape(aggregator)
    scraped = {
        (family.name, family.type): family.documentation
        for family in text_string_to_metric_families(exposition)
    }
    assert scraped.pop(("docs_jobs", "counter")) == "Jobs"  # the worker's: not on the page
    assert _page_families((REFERENCE / "metrics.md").read_text()) == scraped


def test_the_example_gateways_providers_on_its_page_are_those_the_code_and_compose_set() -> None:
    """The gunicorn command shown sets no FAKE_PROVIDERS: the page names the code's default for
    it, and the compose stack's own list (a provider only compose has once 404'd a reader)."""
    import yaml  # type: ignore[import-untyped]  # PyYAML ships no types

    from examples.gateway.providers import DEFAULT_PROVIDERS

    text = (ROOT / "docs" / "guides" / "backend-metrics.md").read_text()
    (command,) = [line for line in text.splitlines() if "examples.gateway.app:app" in line]
    assert "FAKE_PROVIDERS" not in command
    page = " ".join(text.split())
    assert f"without it (as in the command below) they are `{DEFAULT_PROVIDERS}`" in page
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    compose_providers = compose["services"]["gateway"]["environment"]["FAKE_PROVIDERS"]
    assert f"The compose stack sets `{compose_providers}`" in page


def test_the_inspect_commands_the_aggregator_guide_shows_are_those_the_demo_prints() -> None:
    """The guide's demo session runs the commands `make demo` prints (its Redis named with
    --redis-url: a Redis the demo started is gone after it), with the venv's python."""
    from devtools.demo import cli_hints

    text = (ROOT / "docs" / "guides" / "aggregator.md").read_text()
    shown = [line[2:] for line in text.splitlines() if line.startswith("$ ") and " inspect" in line]
    url = re.search(r"--redis-url (\S+)", shown[0])
    assert len(shown) == 2 and url is not None
    printed = [hint.split("   #")[0] for hint in cli_hints(url.group(1), "gatewayz-demo-cli")]
    venv_python = [command.replace(sys.executable, ".venv/bin/python") for command in printed]
    assert shown == venv_python[:2]

"""Scraping /metrics and parsing the exposition, for every test that reads what the aggregator
serves: through the ASGI app (``scrape``), from a real process over HTTP (``scrape_url``), and
the text parsed into families (``families``), their HELP texts (``helps``) or one value per
sample (``samples``).

Every scrape asserts a 200 answer in the format asked for (``check_format``), and that the
exposition in both formats parses (``check_parses``: prometheus_client's OpenMetrics parser is
the strict one, which a single odd exemplar label fails, and Prometheus with it). No web framework
is imported at module level: worker processes spawned by tests import their test module, and
this one with it, and need none.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.samples import Sample

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from aggregator.engine.cycle import Aggregator

OPENMETRICS_TYPE = "application/openmetrics-text"

Families = dict[str, list[Sample]]
"""Family name -> its samples, as the Prometheus parsers name families."""

SampleKey = tuple[str, tuple[tuple[str, str], ...]]
"""A sample name and its labels, sorted."""

Samples = dict[SampleKey, float]


def asks_openmetrics(accept: str | None) -> bool:
    """Whether an Accept header asks for OpenMetrics (as the tests that pass one mean it)."""
    return accept is not None and OPENMETRICS_TYPE in accept.lower()


def check_format(text: str, content_type: str, openmetrics: bool) -> None:
    """The exposition is in the format asked for: OpenMetrics ending with ``# EOF``, or the
    Prometheus text format."""
    if openmetrics:
        assert content_type.startswith(OPENMETRICS_TYPE), content_type
        assert text.endswith("# EOF\n")
    else:
        assert content_type.startswith("text/plain"), content_type


def check_parses(text: str, openmetrics: bool) -> None:
    """The exposition parses in full with prometheus_client's parser of its format."""
    parse = parse_openmetrics if openmetrics else parse_text
    for family in parse(text):
        list(family.samples)


def scrape(aggregator: Aggregator, accept: str | None = None) -> str:
    """GET /metrics from ``aggregator``'s app (in process, no server), as Prometheus would:
    ``accept`` is the Accept header sent, if any. Returns the body after checking the answer
    is 200 in the format asked for."""
    return _scrape(_client(aggregator), accept)


def scraper(aggregator: Aggregator) -> Callable[[], str]:
    """For a test that scrapes one aggregator hundreds of times: its app is made once (making
    it costs more than a scrape), both formats must answer 200 and the OpenMetrics one, whose
    parser is the strict one, must parse (parsing is most of a scrape's cost). Returns it."""
    http = _client(aggregator)

    def scrape_both() -> str:
        text = http.get("/metrics")
        assert text.status_code == 200, text.text[:300]
        return _scrape(http, OPENMETRICS_TYPE)

    return scrape_both


def _client(aggregator: Aggregator) -> TestClient:
    # Imported here: see the module docstring.
    from fastapi.testclient import TestClient

    from aggregator.serve.app import create_app

    return TestClient(create_app(aggregator), base_url="http://127.0.0.1")


def _scrape(http: TestClient, accept: str | None) -> str:
    headers = {"accept": accept} if accept else {}
    response = http.get("/metrics", headers=headers)
    assert response.status_code == 200
    check_format(response.text, response.headers["content-type"], asks_openmetrics(accept))
    check_parses(response.text, asks_openmetrics(accept))
    if not asks_openmetrics(accept):  # and the other format of the same state
        other = http.get("/metrics", headers={"accept": OPENMETRICS_TYPE})
        check_parses(other.text, openmetrics=True)
    return response.text


def scrape_url(url_or_port: str | int, accept: str | None = None) -> str:
    """GET an exposition over real HTTP: a full URL, or the port of an aggregator process on
    127.0.0.1 (its /metrics). Returns the body after checking the answer is 200 in the format
    asked for. Connection failures raise OSError (``tests.support.processes.wait_for`` polls through
    them)."""
    url = url_or_port if isinstance(url_or_port, str) else f"http://127.0.0.1:{url_or_port}/metrics"
    headers = {"accept": accept} if accept else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
        text = str(response.read().decode())
        content_type = str(response.headers["content-type"])
    check_format(text, content_type, asks_openmetrics(accept))
    check_parses(text, asks_openmetrics(accept))
    return text


def families(text: str, openmetrics: bool = False) -> Families:
    """Parse an exposition (Prometheus text format, or OpenMetrics) into family name -> samples,
    asserting no family appears twice."""
    parse = parse_openmetrics if openmetrics else parse_text
    found: Families = {}
    for family in parse(text):
        assert family.name not in found, f"family {family.name} exposed twice"
        found[family.name] = list(family.samples)
    return found


def helps(text: str, openmetrics: bool = False) -> dict[str, str]:
    """Parse an exposition into family name -> its HELP text, asserting no family appears
    twice."""
    parse = parse_openmetrics if openmetrics else parse_text
    found: dict[str, str] = {}
    for family in parse(text):
        assert family.name not in found, f"family {family.name} exposed twice"
        found[family.name] = family.documentation
    return found


def samples(text: str) -> Samples:
    """Parse a Prometheus text exposition into (sample name, sorted labels) -> value, asserting
    no family and no sample appears twice."""
    found: Samples = {}
    for family_samples in families(text).values():
        for sample in family_samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in found, f"sample {key} exposed twice"
            found[key] = sample.value
    return found

"""The docs site's reference pages are what the code says (``devtools/docs_reference.py``
regenerates them; ``make docs`` builds the site with warnings as errors)."""

from __future__ import annotations

import pytest

from devtools.docs_reference import PAGES, REFERENCE, render


@pytest.mark.parametrize("name", sorted(PAGES))
def test_each_generated_reference_page_is_up_to_date(name: str) -> None:
    committed = (REFERENCE / name).read_text()
    assert committed == render()[name], (
        f"docs/reference/{name} is stale: run python -m devtools.docs_reference"
    )


def test_a_stale_page_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    import aggregator.options as options

    flag = options._OPTIONS[0]
    monkeypatch.setattr(options, "_OPTIONS", ((flag[0], flag[1], flag[2], flag[3], "changed"),))
    assert render()["configuration.md"] != (REFERENCE / "configuration.md").read_text()

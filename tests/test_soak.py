"""Smoke test of ``python -m devtools.soak``: tiny runs with real processes (its own
redis-server, the aggregator, spawned workers) whose exactness checks must all hold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import HEAVY, need_redis_tools

pytestmark = HEAVY


@pytest.fixture(autouse=True)
def _redis_tools() -> None:
    need_redis_tools()  # the soak starts its own redis-server


ROOT = Path(__file__).resolve().parent.parent


def _soak(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "soak.json"
    command = [sys.executable, "-m", "devtools.soak", "--workers", "2", "--scrapers", "1"]
    done = subprocess.run(
        [*command, "--json", str(out), *args], cwd=ROOT, capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(out.read_text())
    assert [c for c in result["checks"] if not c["ok"]] == []
    return result


def _in_redis(result: dict[str, Any]) -> int:
    return sum(sum(outcomes.values()) for outcomes in result["redis_totals"].values())


def test_soak_counts_every_written_event_once(tmp_path: Path) -> None:
    result = _soak(tmp_path, "--duration", "4", "--window", "3")
    workers = result["workers"]
    assert all(w["calls"] == w["accepted"] == w["written"] + w["dropped"] for w in workers)
    assert _in_redis(result) == sum(w["written"] for w in workers) > 0
    assert result["exported"]["requests"] == result["redis_totals"]
    assert result["redis_dropped"] == sum(w["dropped"] for w in workers)
    assert result["scrapes"]["count"] > 0 and result["scrapes"]["parsed"] > 0


def test_soak_with_a_redis_outage(tmp_path: Path) -> None:
    # A window longer than the run: nothing leaves it, so the window must hold every event
    # written to the restarted Redis exactly once, as must /metrics.
    args = ("--duration", "5", "--window", "30", "--outage-at", "1.5", "--outage-for", "2")
    result = _soak(tmp_path, *args)
    workers = result["workers"]
    assert all(w["calls"] == w["accepted"] == w["written"] + w["dropped"] for w in workers)
    assert all(w["max_buffered_outage"] <= w["max_buffer"] for w in workers)
    after_restart = sum(w["written"] - w["snapshot"]["written"] for w in workers)
    assert _in_redis(result) == after_restart > 0
    assert result["exported"]["requests"] == result["redis_totals"]
    assert result["exported"]["window"] == after_restart
    ready = [e["status"] for e in result["readyz"]]
    assert 503 in ready and 200 in ready[ready.index(503) :]

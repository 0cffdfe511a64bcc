"""Waiting on real processes with a deadline, and the tools a test needs on PATH."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable

import pytest

HEAVY = pytest.mark.xdist_group("heavy")
"""A module of heavy end-to-end runs (many processes, tens of seconds), or of timing a loaded
machine upsets (a Redis Cluster's 1 s node timeout): under ``make test``'s ``--dist=loadgroup``
one pytest process runs every such module, one after another, so none of them competes for the
cores with another (on a module: ``pytestmark = HEAVY``)."""


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, poll: float = 0.05) -> None:
    """Poll ``condition`` until it holds (for end-to-end tests of real processes); a condition
    that cannot connect yet (OSError) has not held. Fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(poll)


def need_tool(name: str, install: str) -> None:
    """Skip (with one line saying what to install) when ``name`` is not on PATH; under CI
    (CI=true) fail instead: a skipped test there would count as coverage it is not."""
    if shutil.which(name) is None:
        message = f"{name} not found: install it ({install})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def need_redis_tools() -> None:
    """``need_tool`` for what a test that starts its own Redis runs: redis-server and redis-cli."""
    need_tool("redis-server", "apt-get install redis-server")
    need_tool("redis-cli", "apt-get install redis-server")

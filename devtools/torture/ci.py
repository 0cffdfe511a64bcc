"""CI's torture runs, started together: the fixed seeds and the fresh one
(``tests/test_torture.py``) and the pinned schedules of the findings
(``tests/test_torture_findings.py``), each ``python -m devtools.torture`` in a process of its
own.

Each test module adds its runs to ``BATCH`` when it is imported (collection, before any test
runs); the first test that needs a result starts every run whose test was selected, so all of
them share the same wall time (on a loaded machine the runs' processes also get a larger share
of the cores than one run at a time would). A test waits for its own run's result; a module
stops its runs when it is done, and whatever is left when the process exits is stopped.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.torture.deployment import ROOT
from devtools.torture.history import History


@dataclass(frozen=True)
class CiRun:
    name: str
    """Unique in the batch; names the run's files."""
    test: str
    """The test that reads its result: the run starts only when that test is selected."""
    argv: tuple[str, ...]
    """Arguments to ``python -m devtools.torture`` (--json, --keep are added)."""
    schedule: str | None = None
    """A pinned schedule (``Schedule.to_json()``), replayed with ``--schedule``."""


@dataclass
class Finished:
    output: str
    """What the run printed (its end, at most 20,000 characters)."""
    results: list[dict[str, Any]]
    """Its ``--json`` lines: one per schedule, or the error that kept it from running."""
    history: History | None
    """The history it kept (the first schedule's)."""


def available() -> bool:
    """Whether a run can start here (it starts its own redis-server)."""
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


class Batch:
    def __init__(self) -> None:
        self._runs: dict[str, CiRun] = {}
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._base: Path | None = None
        self.started_at = 0.0

    def add(self, run: CiRun) -> None:
        self._runs[run.name] = run

    def start(self, selected: Iterable[str], temporary: Path) -> None:
        """Start every run whose test is in ``selected`` and that is not started yet, its
        files under ``temporary`` (the first call's: pytest's base temporary directory)."""
        if not available():
            return
        wanted = set(selected)
        if self._base is None:
            self._base, self.started_at = temporary / "torture-ci", time.monotonic()
            self._base.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for run in self._runs.values():
            if run.test not in wanted or run.name in self._processes:
                continue
            files = self._base / run.name
            command = [sys.executable, "-m", "devtools.torture", *run.argv]
            command += ["--json", f"{files}.jsonl", "--keep", str(files)]
            if run.schedule is not None:
                Path(f"{files}.schedule.json").write_text(run.schedule)
                command += ["--schedule", f"{files}.schedule.json"]
            with open(f"{files}.log", "wb") as log:
                self._processes[run.name] = subprocess.Popen(
                    command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env
                )

    def result(self, name: str, timeout: float = 180.0) -> Finished:
        """Wait for the run (``timeout`` from when the batch started), then read what it left."""
        process, base = self._processes[name], self._base
        assert base is not None
        try:
            process.wait(max(1.0, self.started_at + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._stop([name])
        output = (base / f"{name}.log").read_text(errors="replace")[-20_000:]
        jsonl = base / f"{name}.jsonl"
        lines = jsonl.read_text().splitlines() if jsonl.exists() else []
        histories = sorted((base / name).glob("history-*.json"))
        history = History.from_json(histories[0].read_text()) if histories else None
        return Finished(output, [json.loads(line) for line in lines], history)

    def stop(self, tests: Sequence[str] | None = None) -> None:
        """Stop the runs of these tests (every run: None) that are still running."""
        names = [n for n in self._processes if tests is None or self._runs[n].test in tests]
        self._stop(names)

    def _stop(self, names: Iterable[str]) -> None:
        for name in names:
            process = self._processes[name]
            if process.poll() is None:  # SIGTERM: the run stops every process it started
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(30)
            if process.poll() is None:
                process.kill()
                process.wait()


BATCH = Batch()
atexit.register(BATCH.stop)

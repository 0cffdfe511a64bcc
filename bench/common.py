"""What every benchmark shares: its context, figures, medians, the printed table and JSON."""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis


@dataclass(frozen=True)
class Context:
    redis_url: str
    """A Redis the benchmarks may fill and flush (started for the run)."""
    quick: bool
    repeats: int

    def namespace(self, label: str) -> str:
        return f"bench-{label}-{uuid.uuid4().hex[:6]}"

    def connection(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)


@dataclass(frozen=True)
class Figure:
    benchmark: str
    name: str
    value: float
    unit: str
    peer: str = ""
    """what this figure is compared with, measured in the same run ("" = ours)"""
    target: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)

    def add(self, *figures: Figure) -> None:
        for figure in figures:
            self.figures.append(figure)
            print(f"  {figure.benchmark:<10} {figure.name:<58} {_fmt(figure.value)} {figure.unit}",
                  flush=True)  # fmt: skip

    def table(self) -> str:
        header = "| benchmark | figure | value | unit | target | met |\n|---|---|---|---|---|---|"
        rows = [
            f"| {f.benchmark} | {f.name}{' (' + f.peer + ')' if f.peer else ''} | {_fmt(f.value)} "
            f"| {f.unit} | {f.target} | {'' if f.met is None else ('yes' if f.met else 'NO')} |"
            for f in self.figures
        ]
        return "\n".join([header, *rows])

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([asdict(f) for f in self.figures], indent=2) + "\n")


def _fmt(value: float) -> str:
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}"


def median_of(measure: Callable[[], float], repeats: int) -> float:
    """The median of ``repeats`` runs of ``measure``."""
    return statistics.median(measure() for _ in range(repeats))


def percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return sorted_values[index]


@contextmanager
def stopwatch() -> Iterator[Callable[[], float]]:
    started = time.perf_counter()
    elapsed: list[float] = []
    yield lambda: elapsed[0] if elapsed else time.perf_counter() - started
    elapsed.append(time.perf_counter() - started)

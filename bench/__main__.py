"""``python -m bench [--quick] [--only a,b] [--json PATH]``: run the benchmarks against a Redis
started for the run, print each figure as it comes and a table at the end, write JSON."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.common import Context, Report
from devtools.redis_server import start_redis

BENCHMARKS = (
    "record", "ingest", "cycle", "fleet", "fleet_scrape", "scrape", "memory", "breaker",
    "cluster", "idle", "gc", "gateway", "labels",
)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller run, under a minute")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {BENCHMARKS}")
    parser.add_argument("--json", type=Path, default=Path("bench-results/bench.json"))
    args = parser.parse_args(argv)
    chosen = [b for b in args.only.split(",") if b] or list(BENCHMARKS)
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    server = start_redis(extra_args=["--maxmemory-policy", "noeviction"])
    print(f"benchmarks on a fresh {server.kind} at {server.url}", flush=True)
    report = Report()
    try:
        context = Context(server.url, args.quick, repeats=3 if args.quick else 5)
        for name in chosen:
            print(f"\n[{name}]", flush=True)
            module = importlib.import_module(f"bench.bench_{name}")
            report.add(*module.run(context))
    finally:
        server.stop()
    print("\n" + report.table())
    report.write_json(args.json)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

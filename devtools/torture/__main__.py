"""``python -m devtools.torture --seed N --duration S [--cluster] [--faults a,b]``: run a random
fault schedule against real processes and check every invariant (``--help`` for the rest).

Without ``--seed`` a fresh seed is drawn and printed. ``--for SECONDS`` runs schedules one after
the other (seed, seed + 1, ...) until that much time has passed. ``--schedule FILE`` replays a
schedule saved as JSON. Exit status 0 when no run found an unexpected violation, 1 otherwise.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import random
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from devtools.torture.checker import check
from devtools.torture.deployment import Options
from devtools.torture.history import History
from devtools.torture.report import render, summary
from devtools.torture.run import run_schedule, save
from devtools.torture.schedule import ALL_KINDS, Schedule, make_schedule


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="devtools.torture", description=__doc__)
    add = parser.add_argument
    add("--seed", type=int, default=None, help="schedule seed (default: a fresh one, printed)")
    add("--duration", type=float, default=20.0, help="seconds of faults and load (20)")
    add("--cluster", action="store_true", help="a local Redis Cluster instead of one Redis")
    add("--faults", default=None, help=f"comma-separated kinds, of: {','.join(ALL_KINDS)}")
    add("--schedule", type=Path, default=None, help="replay a schedule saved as JSON")
    add("--workers", type=int, default=3)
    add("--rate", type=float, default=150.0, help="calls/s per worker (150)")
    add("--window", type=float, default=300.0, help="window seconds, aggregators and workers")
    add("--per-second", type=float, default=0.35, help="faults per second (0.35)")
    add("--for", dest="total", type=float, default=0.0, help="keep running seeds for S s")
    add("--keep", type=Path, default=None, help="keep the run's files and history here")
    add("--json", type=Path, default=None, help="append one JSON line per run here")
    add("--check", type=Path, default=None, help="only check a saved history (--keep's)")
    return parser.parse_args(argv)


def _schedule(args: argparse.Namespace, seed: int) -> Schedule:
    if args.schedule is not None:
        return Schedule.from_json(args.schedule.read_text())
    only = args.faults.split(",") if args.faults else None
    return make_schedule(
        seed, args.duration, args.cluster, only, args.workers, per_second=args.per_second
    )


def run_one(args: argparse.Namespace, seed: int) -> bool:
    schedule = _schedule(args, seed)
    # a run that hangs says where: every thread's stack, every few minutes past its due time
    faulthandler.cancel_dump_traceback_later()
    faulthandler.dump_traceback_later(schedule.duration + 240, repeat=True)
    options = Options(
        seed=schedule.seed,
        duration=schedule.duration,
        cluster=schedule.cluster,
        workers=args.workers,
        rate=args.rate,
        window=args.window,
        keep=args.keep / str(schedule.seed) if args.keep else None,
    )
    began = time.monotonic()
    try:
        history = run_schedule(schedule, options, log=lambda line: print(line, flush=True))
    except Exception as exc:  # the run could not run (a process that never started...)
        print(f"seed {schedule.seed}: the run itself failed: {type(exc).__name__}: {exc}")
        if args.json:
            with args.json.open("a") as out:
                error = {"seed": schedule.seed, "ok": False, "error": f"{exc}"}
                out.write(json.dumps(error) + "\n")
        return False
    if args.keep:
        print(f"history: {save(history, args.keep)}")
    verdict = check(history)
    print(render(history, verdict), flush=True)
    info = summary(history, verdict) | {"seconds": round(time.monotonic() - began, 1)}
    if args.json:
        with args.json.open("a") as out:
            out.write(json.dumps(info, default=str) + "\n")
    return bool(info["ok"])


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # the run's finally blocks stop every child it started


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if args.check is not None:
        history = History.from_json(args.check.read_text())
        verdict = check(history)
        print(render(history, verdict))
        return 0 if summary(history, verdict)["ok"] else 1
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    print(f"torture seed {seed}", flush=True)
    ok, runs, deadline = True, 0, time.monotonic() + args.total
    while True:
        ok &= run_one(args, seed)
        runs += 1
        if time.monotonic() >= deadline or args.schedule is not None:
            break
        seed += 1
    print(f"{runs} schedule(s), {'no unexpected violation' if ok else 'VIOLATIONS FOUND'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

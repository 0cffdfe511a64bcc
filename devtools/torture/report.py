"""A run's verdict as text, and as JSON for CI: the schedule, each invariant's status, the
violations (known breaks apart), what was suspended and why, the losses counted in numbers."""

from __future__ import annotations

import json
from typing import Any

from devtools.torture.checker import INVARIANTS, Verdict
from devtools.torture.history import History
from devtools.torture.known import classify
from devtools.torture.schedule import Schedule


def summary(history: History, verdict: Verdict) -> dict[str, Any]:
    schedule = Schedule.from_json(history.schedule)
    kinds = {f["kind"] for f in history.faults} | ({"cluster"} if history.cluster else set())
    unexpected, known = classify(verdict, kinds)
    calls = sum(w.calls_made for w in history.workers)
    return {
        "seed": history.seed,
        "cluster": history.cluster,
        "duration": schedule.duration,
        "faults": len(history.faults),
        "kinds": sorted(schedule.kinds()),
        "calls": calls,
        "held": verdict.held(),
        "suspended": verdict.suspended,
        "unexpected": unexpected,
        "known": {k: [(m, b.name) for m, b in v] for k, v in known.items()},
        "notes": verdict.notes,
        "checked": verdict.checked,
        "ok": not unexpected,
        "schedule": history.schedule,
    }


def render(history: History, verdict: Verdict) -> str:
    info = summary(history, verdict)
    schedule = Schedule.from_json(history.schedule)
    lines = [schedule.describe(), ""]
    for fault in history.faults:
        extra = {k: v for k, v in fault["notes"].items() if k not in ("written",)}
        error = f" ERROR {fault['error']}" if fault.get("error") else ""
        lines.append(
            f"  applied {fault['kind']} at {fault['start'] - history.t0:.1f}s {extra}{error}"
        )
    lines.append(f"\n{info['calls']} calls recorded by {len(history.workers)} workers")
    for name in INVARIANTS:
        if name in info["unexpected"]:
            status = "VIOLATED"
        elif name in info["known"]:
            status = "known break"
        elif name in verdict.suspended:
            status = "suspended"
        else:
            status = "held"
        lines.append(f"  {status:<11} {name}: {INVARIANTS[name]}")
        for message in info["unexpected"].get(name, [])[:8]:
            lines.append(f"      ! {message}")
        for message, known in info["known"].get(name, [])[:3]:
            lines.append(f"      ~ ({known}) {message}")
        if name in verdict.suspended:
            lines.append(f"      - {verdict.suspended[name]}")
    judged = ", ".join(f"{n:,} {what}" for what, n in verdict.checked.items())
    lines.append(f"  judged: {judged}")
    for note in verdict.notes[:20]:
        lines.append(f"  note: {note}")
    verdict_line = "OK" if info["ok"] else "FAILED"
    lines.append(
        f"seed {history.seed}: {verdict_line} (replay: --seed {history.seed} "
        f"--duration {schedule.duration:g}{' --cluster' if history.cluster else ''})"
    )
    return "\n".join(lines)


def to_json(history: History, verdict: Verdict) -> str:
    return json.dumps(summary(history, verdict), default=str)

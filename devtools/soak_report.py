"""The soak's verdict: exactness checks over what the workers, Redis and /metrics reported,
and the printed table (``devtools.soak`` runs them)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from devtools.soak_load import MB, Json


class Checks(list[Json]):
    def add(self, name: str, expected: Any, observed: Any, ok: Any = None) -> None:
        ok = expected == observed if ok is None else ok
        self.append({"check": name, "expected": expected, "observed": observed, "ok": bool(ok)})


def perworker(w: Json) -> dict[str, tuple[int, int]]:
    """Per worker: rule -> (expected, observed)."""
    capped, accepted = w["rejected"].get("too_many_providers", 0), w["accepted"]
    invalid = sum(w["rejected"].values()) - capped
    flushed = w["settled"] if w["closed"] and not w["buffered"] else -1
    return {
        "calls == accepted + rejected": (w["calls"], accepted + invalid),
        "accepted == written + dropped (+ cap)": (accepted, w["written"] + w["dropped"] + capped),
        "close() flushed: settled == accepted": (accepted, flushed),
        "write_errors (refused batches)": (0, w["write_errors"]),
        "max buffered <= max_buffer": (w["max_buffer"], max(w["max_buffered"], w["max_buffer"])),
    }


def check_totals(run: Json, checks: Checks) -> None:
    workers, outage = run["workers"], run["events"]
    rules = [perworker(w) for w in workers]
    for name in rules[0]:
        want, got = [r[name][0] for r in rules], [r[name][1] for r in rules]
        checks.add(f"every worker: {name}", sum(want), sum(got), want == got)
    written = sum(w["written"] - w.get("snapshot", {}).get("written", 0) for w in workers)
    in_redis = sum(sum(t.values()) for t in run["redis_totals"].values())
    label = "written after the restart" if outage else "written"
    checks.add(f"Redis totals == events {label}", written, in_redis)
    exported = run["exported"]["requests"]
    total = sum(sum(t.values()) for t in exported.values())
    name = "/metrics gatewayz_provider_requests_total == Redis totals (each provider, outcome)"
    checks.add(name, in_redis, total, exported == run["redis_totals"])
    if run["fresh"]:
        name = "/metrics window requests == Redis totals (nothing left the window yet)"
        checks.add(name, in_redis, run["exported"].get("window"))
    dropped, in_redis = sum(w["dropped"] for w in workers), run["redis_dropped"]
    if outage:
        low = sum(w["dropped"] - w.get("outage_start", {}).get("dropped", 0) for w in workers)
        name = "Redis dropped: drops since the kill <= it <= all drops"
        checks.add(name, f"{low}..{dropped}", in_redis, low <= in_redis <= dropped)
        killed, back = outage["killed_at"], outage["restarted_at"]
        down = next((e["t"] for e in run["readyz"] if e["status"] == 503 and e["t"] >= killed), 0)
        up = next((e["t"] for e in run["readyz"] if e["status"] == 200 and e["t"] > down), None)
        seen, ok = f"503 at {down}, 200 at {up}", 0 < down < back and up
        checks.add("/readyz 503 in the outage, then 200", "503, 200", seen, ok)
    else:
        checks.add("Redis client drops == drops counted by workers", dropped, in_redis)
    name = "/metrics gatewayz_client_events_dropped_total == Redis"
    checks.add(name, in_redis, run["exported"].get("dropped"))
    s = run["scrapes"]
    checks.add("scrapes not 200 / failed", 0, s["count"] - s["status"].get("200", 0))
    ok = not s["errors"] and s["parsed"]
    checks.add("scrape parse failures (parsed > 0)", 0, len(s["errors"]), ok)
    checks.add("/readyz at the end", 200, run["ready_end"])


def outage_delta(w: Json, name: str, unit: int) -> str:
    """RSS growth (max in the outage) or drops (kill to restart) during the outage."""
    if "outage_start" not in w:
        return "-"
    end = w["rss_max_outage"] if name == "rss" else w.get("recovered", w)["dropped"]
    return f"{(end - w['outage_start'][name]) / unit:,.{int(unit > 1)}f}"


def us(ns: float | None) -> str:
    return "-" if ns is None else f"{ns / 1000:.1f}"


COLUMNS: tuple[tuple[str, Callable[[Json], str]], ...] = (
    ("calls", lambda w: f"{w['calls']:,}"),
    ("calls/s", lambda w: f"{w['calls'] / w['seconds']:,.0f}"),
    ("written", lambda w: f"{w['written']:,}"),
    ("written/s", lambda w: f"{w['written'] / (w['seconds'] + w['close_seconds']):,.0f}"),
    ("dropped", lambda w: f"{w['dropped']:,}"),
    ("p50/p99 us", lambda w: f"{us(w['run_p50'])}/{us(w['run_p99'])}"),
    ("outage", lambda w: f"{us(w['outage_p50'])}/{us(w['outage_p99'])}"),
    ("max buf", lambda w: f"{w['max_buffered']:,}"),
    ("outage buf", lambda w: f"{w['max_buffered_outage']:,}"),
    ("RSS MB", lambda w: f"{w['rss_start'] // MB}/{w['rss_max'] // MB}/{w['rss_end'] // MB}"),
    ("outage +MB", lambda w: outage_delta(w, "rss", MB)),
    ("outage drop", lambda w: outage_delta(w, "dropped", 1)),
)


def print_run(run: Json) -> None:
    a, s = run["args"], run["scrapes"]
    print(
        f"\nsoak: {a['workers']} workers x {a['duration']:g} s, window {a['window']:g} s, "
        f"{a['scrapers']} scrapers, outage: {run['events'] or 'none'}"
    )
    print("worker" + "".join(f"{h:>12}" for h, _ in COLUMNS))
    for name, w in [*enumerate(run["workers"]), ("all", run["totals"])]:
        shown = COLUMNS if name != "all" else COLUMNS[:5]
        print(f"{name!s:>6}" + "".join(f"{get(w):>12}" for _, get in shown))
    print(
        f"(record() p50/p99: every 64th call timed; written/s: over recording + close(); "
        f"outage: while Redis was down; max_buffer {run['workers'][0]['max_buffer']:,})"
    )
    print(
        f"scrapes: {s['count']:,} ({s['per_s']}/s), p50 {s['p50_ms']} ms, p99 {s['p99_ms']} "
        f"ms, {dict(s['status'])}, {s['parsed']} parsed, {len(s['errors'])} parse failures"
    )
    print(f"redis memory: {json.dumps(run['memory'])}")
    print("readyz:", " -> ".join(f"{e['status']} at {e['t']}s" for e in run["readyz"]))
    width = max(len(c["check"]) for c in run["checks"])
    for c in run["checks"]:
        verdict = "ok  " if c["ok"] else "FAIL"
        line = f"  {verdict} {c['check']:<{width}}  expected {c['expected']}"
        print(f"{line}, observed {c['observed']}")

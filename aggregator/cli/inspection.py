"""``python -m aggregator inspect [PROVIDER] [--json]``: what Redis holds, read directly.

Without a provider: the registered providers with their window counts and breaker state, at
most ``--max-providers`` of them (the most recently seen, the cap the cycles read), and how many
the registry holds (it keeps names 7 days, and churning names can leave 100,000). With
one, looked up by name: its window minute by minute (calls by outcome, p50/p95 of successes
from the latency partitions), its cumulative totals, its breaker hash (deadlines in human
time), the live half-open permits and each key's TTL. "now" is Redis's clock (``TIME``).

Reads only: no window is trimmed, nothing is registered (``WindowReader.registered`` and
``WindowReader.inspect``, never ``known_providers`` or ``read``). The functions below the I/O
(``report``, ``overview``, ``format_*``) are pure.

Exit codes: 0 shown; 1 no data (empty namespace, unknown provider) or Redis unreachable;
2 bad usage.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import redis

from aggregator.core.health import WindowCounts, bucket_quantile
from aggregator.core.readings import ProviderInspection
from aggregator.core.times import human, iso, relative
from aggregator.engine.reader import FUTURE_TOLERANCE_SECONDS, WindowReader
from aggregator.options import CONNECTION_FLAGS, add_options, settings_from_args
from aggregator.settings import describe_error, redact
from gatewayz_protocol.fields import decode_totals
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.names import PROVIDER_NAME_HINT, is_valid_provider
from gatewayz_protocol.partitions import OUTCOMES, WINDOW_BOUNDS
from gatewayz_transport.connection import connect

DESCRIPTION = """Shows what Redis holds, read directly and never changed.

Without a provider: the registered providers with their window counts and breaker state, at
most --max-providers of them, the most recently seen (the line below the table says when more
are registered: name one to see it). With one: its window minute by minute (calls by outcome,
p50/p95 of successes), its cumulative totals, its breaker (deadlines in UTC and relative to
now), the live half-open permits and each key's TTL. "now" is Redis's clock. --json prints
one JSON document instead ("registered" and "truncated" beside the providers).

Exit codes: 0 shown; 1 no data (empty namespace, unknown provider) or Redis unreachable;
2 bad usage."""

FLAGS = (*CONNECTION_FLAGS, "--window", "--max-providers")
SKIPPED_NOTE = "fields no writer of this project writes, skipped as the aggregator skips them"
_DEADLINES = ("since", "open_until")


def configure(parser: argparse.ArgumentParser) -> None:
    """The ``inspect`` arguments: PROVIDER, --json and the connection flags (plus --window)."""
    parser.add_argument("provider", nargs="?", help="one provider in detail (default: all)")
    parser.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    add_options(parser, FLAGS)


# -- pure: times, counts, reports, text --------------------------------------------------------


def minute_edges(
    now: float, window: float, tolerance: float = FUTURE_TOLERANCE_SECONDS
) -> list[float]:
    """The window's bounds (``now - window``, ``now + tolerance``) with every UTC minute mark
    between them: row i covers ``[edges[i], edges[i+1])`` (the first excludes its start)."""
    start, end = now - window, now + tolerance
    marks = range(math.floor(start / 60) * 60 + 60, math.ceil(end / 60) * 60, 60)
    return [start, *(float(m) for m in marks if start < m < end), end]


def counts_row(counts: WindowCounts) -> dict[str, Any]:
    """Calls by outcome, their total and the p50/p95 of successes (None without any)."""
    p50 = bucket_quantile(0.5, counts.success_partitions, WINDOW_BOUNDS)
    p95 = bucket_quantile(0.95, counts.success_partitions, WINDOW_BOUNDS)
    by_outcome = (counts.successes, counts.failures, counts.rate_limited, counts.caller_errors)
    return {
        **dict(zip(OUTCOMES, by_outcome, strict=True)),
        "total": counts.total,
        "p50_seconds": p50,
        "p95_seconds": p95,
    }


def _summed(spans: Sequence[WindowCounts]) -> WindowCounts:
    if not spans:
        return WindowCounts.empty()
    return WindowCounts(
        tuple(sum(parts) for parts in zip(*(s.success_partitions for s in spans), strict=True)),
        sum(s.failures for s in spans),
        sum(s.rate_limited for s in spans),
        sum(s.caller_errors for s in spans),
    )


def _stamp(t: float, now: float) -> dict[str, Any]:
    return {
        "unix": t,
        "iso": iso(t) if t > 0 else None,
        "relative": relative(t, now) if t > 0 else None,
    }


def report(
    found: ProviderInspection,
    edges: Sequence[float],
    now: float,
    window: float,
    namespace: str,
    last_seen: float | None,
) -> dict[str, Any]:
    """One provider's inspection as a JSON-able document."""
    minutes = [
        {"start": a, "start_iso": iso(a), "end": b, **counts_row(counts)}
        for (a, b), counts in zip(itertools.pairwise(edges), found.spans, strict=True)
    ]
    breaker = found.breaker
    deadlines = {name: _stamp(float(breaker[name]), now) for name in _DEADLINES if name in breaker}
    return {
        "namespace": namespace,
        "provider": found.provider,
        "now": _stamp(now, now),
        "window_seconds": window,
        "registered": last_seen is not None,
        "last_seen": None if last_seen is None else _stamp(last_seen, now),
        "minutes": minutes,
        "window": counts_row(_summed(found.spans)),
        "totals": {**asdict(decode_totals(found.totals)), "fields": found.totals},
        "breaker": {
            "state": breaker.get("state", "closed"),
            "forced": breaker.get("forced") == "1",
            "fields": breaker,
            "deadlines": deadlines,
        },
        "transitions": found.transitions,
        "permits": {
            "limit": int(breaker.get("permits", 0)),
            "live": [{"holder": h, "expires": _stamp(t, now)} for h, t in found.permits],
        },
        "keys": {
            key: {"exists": ttl != -2, "ttl_seconds": ttl / 1000 if ttl >= 0 else None}
            for key, ttl in found.ttl_ms.items()
        },
        "skipped": found.bad,
    }


def overview(
    found: Sequence[ProviderInspection],
    registry: Mapping[str, float],
    now: float,
    window: float,
    namespace: str,
) -> dict[str, Any]:
    """Every provider's window counts and breaker state, as a JSON-able document."""
    rows = []
    for item in found:
        breaker = item.breaker
        rows.append(
            {
                "provider": item.provider,
                "last_seen": _stamp(registry[item.provider], now),
                **counts_row(_summed(item.spans)),
                "breaker": breaker.get("state", "closed"),
                "forced": breaker.get("forced") == "1",
                "skipped": sum(len(fields) for fields in item.bad.values()),
            }
        )
    return {
        "namespace": namespace,
        "now": _stamp(now, now),
        "window_seconds": window,
        "providers": rows,
    }


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cells = [[str(c) for c in header], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]


_COUNT_HEADER = (*OUTCOMES, "total", "p50 s", "p95 s")


def _count_cells(row: Mapping[str, Any]) -> list[object]:
    return [
        *(row[o] for o in OUTCOMES),
        row["total"],
        _seconds(row["p50_seconds"]),
        _seconds(row["p95_seconds"]),
    ]


def format_overview(doc: Mapping[str, Any]) -> str:
    """The providers table."""
    head = (
        f"namespace {doc['namespace']}  now {doc['now']['iso']}  window {doc['window_seconds']:g} s"
    )
    rows = [
        [
            p["provider"],
            *_count_cells(p),
            p["breaker"] + (" (forced)" if p["forced"] else ""),
            p["last_seen"]["relative"] or "never",
        ]
        for p in doc["providers"]
    ]
    table = _table(["provider", *_COUNT_HEADER, "breaker", "last seen"], rows)
    spoiled = [p["provider"] for p in doc["providers"] if p["skipped"]]
    if spoiled:
        table += ["", f"{SKIPPED_NOTE}, of: {', '.join(spoiled)} (inspect PROVIDER names them)"]
    if doc.get("truncated"):
        table += [
            "",
            f"{len(doc['providers'])} of {doc['registered']} registered providers shown, the most"
            " recently seen (--max-providers, GATEWAYZ_MAX_PROVIDERS); name one to see it:"
            " inspect PROVIDER",
        ]
    return "\n".join([head, "", *table])


def format_report(doc: Mapping[str, Any]) -> str:
    """One provider in detail."""
    now = doc["now"]["unix"]
    seen = doc["last_seen"]
    lines = [
        f"provider {doc['provider']}  namespace {doc['namespace']}  now {doc['now']['iso']}"
        f"  window {doc['window_seconds']:g} s",
        f"registered: {'last seen ' + human(seen['unix'], now) if seen else 'no'}",
        "",
        "window, minute by minute (UTC; the first row starts at the window's start):",
    ]
    rows = [[iso(m["start"])[11:19], *_count_cells(m)] for m in doc["minutes"]]
    rows.append(["window", *_count_cells(doc["window"])])
    lines += ["  " + line for line in _table(["from", *_COUNT_HEADER], rows)]
    totals = doc["totals"]
    requests = " ".join(f"{k}={v}" for k, v in totals["requests"].items())
    lines += [
        "",
        f"totals (cumulative): {requests}",
        f"  latency sum {totals['latency_sum_seconds']:.3f} s, tokens {totals['tokens']},"
        f" cost {totals['cost_usd']:.6f} USD, rejected by the breaker {totals['breaker_rejected']},"
        f" cancelled {totals['cancelled']}",
    ]
    breaker = doc["breaker"]
    fields = (
        " ".join(f"{k}={v}" for k, v in sorted(breaker["fields"].items())) or "(no hash: closed)"
    )
    lines += [
        "",
        f"breaker: {breaker['state']}{' (forced)' if breaker['forced'] else ''}",
        f"  {fields}",
    ]
    for name, stamp in breaker["deadlines"].items():
        lines.append(f"  {name}: {human(stamp['unix'], now)}")
    moves = " ".join(f"{k}={v}" for k, v in sorted(doc["transitions"].items()))
    lines.append(f"  transitions: {moves or 'none'}")
    permits = doc["permits"]
    lines.append(f"  half-open permits live: {len(permits['live'])} of {permits['limit']}")
    for permit in permits["live"]:
        lines.append(f"    {permit['holder']}  expires {human(permit['expires']['unix'], now)}")
    present = {k: v for k, v in doc["keys"].items() if v["exists"]}
    lines += ["", "keys (TTL):"]
    for key, info in present.items():
        ttl = info["ttl_seconds"]
        lines.append(f"  {key}  {'no expiry' if ttl is None else f'{ttl:.0f} s'}")
    lines.append(f"  ({len(doc['keys']) - len(present)} other keys of the provider absent)")
    if doc["skipped"]:
        lines += ["", f"{SKIPPED_NOTE} (left out above):"]
        for key, fields in doc["skipped"].items():
            lines += [f"  {key}", *(f"    {name!r} = {value!r}" for name, value in fields.items())]
    return "\n".join(lines)


# -- I/O ---------------------------------------------------------------------------------------


def run_args(
    args: argparse.Namespace, parser: argparse.ArgumentParser, env: Mapping[str, str] | None = None
) -> int:
    """Run ``inspect`` with parsed arguments (``configure``'s)."""
    provider: str | None = args.provider
    if provider is not None and not is_valid_provider(provider):
        parser.error(f"invalid provider name {provider!r}: {PROVIDER_NAME_HINT}")
    settings = settings_from_args(args, parser, env)
    connection = connect(settings.redis_url, socket_timeout=5.0)
    reader = WindowReader(
        connection, Keys(settings.namespace), settings.window_seconds, maintains=False
    )
    where = f"namespace {settings.namespace!r} on {redact(settings.redis_url)}"
    try:
        seconds, micros = reader.redis_time()
        now = seconds + micros / 1_000_000
        newest = settings.max_providers if provider is None else 0
        registry, count = reader.registered(newest, [provider] if provider else [])
        if provider is None:
            if not registry:
                return _no_data(f"no data in {where}: no provider registered")
            edges = [now - settings.window_seconds, now + FUTURE_TOLERANCE_SECONDS]
            found = reader.inspect(now, sorted(registry), edges)
            doc = overview(found, registry, now, settings.window_seconds, settings.namespace)
            doc |= {"registered": count, "truncated": count > settings.max_providers}
            text = format_overview(doc)
        else:
            edges = minute_edges(now, settings.window_seconds)
            (item,) = reader.inspect(now, [provider], edges)
            if provider not in registry and not item.exists:
                return _no_data(f"no data for provider {provider!r} in {where}")
            doc = report(
                item,
                edges,
                now,
                settings.window_seconds,
                settings.namespace,
                registry.get(provider),
            )
            text = format_report(doc)
    except (redis.RedisError, OSError) as exc:
        sys.stderr.write(f"aggregator inspect: error: redis: {describe_error(exc)}\n")
        return 1
    finally:
        connection.close()
    print(json.dumps(doc, indent=2) if args.json else printable(text))
    return 0


def printable(text: str) -> str:
    """``text`` as it may reach a terminal: every control or format character but the line
    breaks escaped (``\x1b``, ``\u202e``), so a value written into Redis can never set a title,
    clear the screen or write the clipboard (OSC 52). JSON output escapes them by itself."""
    return "".join(
        char
        if char == "\n" or unicodedata.category(char) not in _UNSAFE
        else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


_UNSAFE = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def _no_data(message: str) -> int:
    sys.stderr.write(f"aggregator inspect: {message}\n")
    return 1

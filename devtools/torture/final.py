"""The state the checker judges after the schedule quiesced: what Redis holds for every provider
(totals, window counts on Redis's clock, breaker), the clients' stats, the workers' backend
counters, and what each replica exports and answers on ``/readyz``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from devtools.torture.deployment import AggregatorProcess, http_get, plain_redis, text
from devtools.torture.ledger import CALLS_METRIC, COST_METRIC, merged, shard_count
from devtools.torture.recorder import parse_metrics, series_name
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import connect

FUTURE_TOLERANCE_SECONDS = 10.0
"""docs "Semantics": an event counts while now - window < t <= now + 10 s."""


def _text_hash(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {text(k): text(v) for k, v in raw.items()}


def read_redis(url: str, keys: Keys, providers: list[str], window: float) -> dict[str, Any]:
    connection = connect(url, 5.0)
    try:
        seconds, micros = connection.time()
        now = seconds + micros / 1e6
        low, high = f"({now - window!r}", repr(now + FUTURE_TOLERANCE_SECONDS)
        found: dict[str, Any] = {"now": now, "providers": {}}
        for provider in providers:
            shards = range(shard_count(provider))
            windows = [[int(connection.zcount(k, low, high)) for k in keys.window_keys(provider, n)]
                       for n in shards]  # fmt: skip
            found["providers"][provider] = {
                "totals": merged(
                    [_text_hash(connection.hgetall(keys.totals(provider, n))) for n in shards]
                ),
                "window": [sum(column) for column in zip(*windows, strict=True)],
                "breaker": _text_hash(connection.hgetall(keys.breaker(provider))),
                "transitions": _text_hash(connection.hgetall(keys.transitions(provider))),
            }
        found["client_stats"] = _text_hash(connection.hgetall(keys.client_stats))
        found["backend"] = {
            name: _text_hash(connection.hgetall(keys.metric_data(name)))
            for name in (CALLS_METRIC, COST_METRIC)
        }
        found["event_ids"] = int(connection.get(keys.event_ids) or 0)
        registry: Any = connection.zrange(keys.providers, 0, -1, withscores=True)
        found["registry"] = {text(member): float(score) for member, score in registry}
        found["lease"] = text(connection.get(keys.leader_lease) or b"")
        if hasattr(connection, "get_node_from_key"):
            markers = {p: keys.applied(keys.totals(p)) for p in providers}
            found["markers"] = {p: int(connection.hlen(key)) for p, key in markers.items()}
        return found
    finally:
        connection.close()


def command_flags(port: int, names: set[str]) -> dict[str, list[str]]:
    """Redis's own flags of each command (``write``, ``readonly``...; ``unknown`` for a name
    it does not know), asked of the server on ``port``."""
    client = plain_redis(port)
    client.set_response_callback("COMMAND", lambda response, **options: response)
    try:
        ordered = sorted(names)
        info = client.execute_command("COMMAND", "INFO", *ordered) if ordered else []  # type: ignore[no-untyped-call]
    finally:
        client.close()
    found = {}
    for name, entry in zip(ordered, info, strict=True):
        flags = entry[2] if entry else [b"unknown"]
        found[name] = [f.decode() if isinstance(f, bytes) else str(f) for f in flags]
    return found


READY_WITHIN_SECONDS = 30.0
"""How long a replica may take to answer /readyz 200 once the run quiesced: its snapshot may be
older than 3 of the harness's 1 s intervals for a moment on a loaded machine (cluster seed
210005: 3.5 s), anything that keeps it unready for good does not pass in 30 s."""


def read_replica(agg: AggregatorProcess) -> dict[str, Any]:
    """What one replica exports (the figures the checker compares) and its readiness (the
    last answer of /readyz, asked until 200 for at most ``READY_WITHIN_SECONDS``)."""
    found: dict[str, Any] = {"name": agg.name, "generation": agg.generation, "alive": agg.alive()}
    try:
        began = time.monotonic()
        while True:
            found["readyz"] = list(http_get(agg.port, "/readyz", 5.0))
            if found["readyz"][0] == 200 or time.monotonic() - began > READY_WITHIN_SECONDS:
                break
            time.sleep(0.2)
        found["ready_after"] = round(time.monotonic() - began, 2)
        _, body = http_get(agg.port, "/metrics", 5.0)
    except OSError as exc:
        found["error"] = f"{type(exc).__name__}: {exc}"
        return found
    counters, gauges = parse_metrics(body)
    found["counters"], found["gauges"] = counters, gauges
    return found


def exported(source: dict[str, Any], name: str, **labels: str) -> float | None:
    """A series' value in a replica's final scrape (counters first, then gauges)."""
    key = series_name(name, labels)
    for table in ("counters", "gauges"):
        if key in source.get(table, {}):
            return float(source[table][key])
    return None

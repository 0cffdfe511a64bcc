"""Foreign data in Redis: poisoned fields beside the real ones, and a snapshot published as a
'newer' leader (a later version, unknown fields) would publish it.

Nothing here changes a real field or a real event: what a worker or the leader wrote stays
exactly as it was, so every exactness check still applies. What the system owes is to skip and
count what it cannot read, never to stop a cycle or a scrape over it (DESIGN "Trust boundaries").
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Any

import redis

from aggregator.core.snapshot import PUBLISHED_PREFIX
from devtools.torture.deployment import plain_redis
from devtools.torture.ledger import CALLS_METRIC
from gatewayz_protocol.keys import Keys

Command = tuple[Any, ...]


def poison_commands(keys: Keys, provider: str, variant: int, cluster: bool) -> list[Command]:
    """The poisoned writes ``variant`` (a bit mask) picks, beside ``provider``'s real keys and
    the shared ones: fields no client writes, values that are not numbers, names that are not
    UTF-8 or not providers."""
    series_field = 'i:["ghost","extra"]'
    menu: list[Command] = [
        ("HSET", keys.totals(provider), "n:bogus", "xyz", "b:0.3", "7", b"\xff\xfe", "1"),
        ("HSET", keys.totals(provider), "lat_us_v9", "9" * 30),
        ("HSET", keys.breaker(provider), "zzz_future", "1", "note", "\xe9t\xe9"),
        ("HSET", keys.client_stats, "rejected:bogus", "abc", "dropped:weird", "12x"),
        ("HSET", keys.clock_offsets, "evil:1", "garbage|x", "evil:2", "nan|nan"),
        ("ZADD", keys.providers, "GT", "1", "bad name!"),
        ("HSET", keys.metric_data(CALLS_METRIC), series_field, "5", 'i:["x"]', "notint"),
        ("HSET", keys.metric_schema, "ghost_metric", "{not json"),
        ("HSET", keys.redis_ops, "evil", "NaN"),
        ("HSET", keys.transitions(provider), "sideways>up", "x"),
    ]
    if cluster:
        menu.append(("HSET", keys.applied(keys.totals(provider)), "ghost-writer", "garbage"))
    menu += [  # a gauge writer no client is: read (and skipped) while both are there
        ("HSET", keys.gauge_values("intruder"), "torture_gauge|[]", "nan|x", "~max_series", "-1"),
        ("ZADD", keys.gauge_writers, "+inf", "intruder"),
    ]
    chosen = [command for bit, command in enumerate(menu) if variant >> bit & 1]
    return chosen or menu[:1]


def poison(connection: Any, commands: list[Command]) -> list[str]:
    """Run each command on its own (a cluster routes each); the errors, as text."""
    errors = []
    for command in commands:
        try:
            connection.execute_command(*command)
        except redis.RedisError as exc:
            errors.append(f"{command[0]} {command[1]!r}: {exc}")
    return errors


def _decode(raw: bytes) -> tuple[dict[str, Any], bool]:
    if raw.startswith(PUBLISHED_PREFIX):
        return json.loads(zlib.decompress(raw[len(PUBLISHED_PREFIX) :])), True
    return json.loads(raw), False


def newer(snapshot: dict[str, Any], cycle: int) -> dict[str, Any]:
    """The same figures as a leader of a later version would publish them: a higher version,
    the next cycle number, fields this version does not know at every level."""
    future = dict(snapshot)
    future["version"] = int(snapshot.get("version", 1)) + 100
    future["cycle"] = cycle
    future["torture_future"] = {"shards": [1, 2], "note": "from a newer leader"}
    future["providers"] = [
        provider | {"future_gauge": 0.5, "future_map": {"a": 1}}
        for provider in snapshot.get("providers", [])
    ]
    return future


def publish_newer(node: redis.Redis, keys: Keys) -> dict[str, Any]:
    """Republish the published snapshot as a newer leader's, under the next cycle number, in a
    transaction that gives up when the leader publishes or numbers one meanwhile (``node``: the
    server of the ``{leader}`` slot)."""
    for _ in range(5):
        with node.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(keys.snapshot, keys.snapshot_cycle)  # type: ignore[no-untyped-call]
                raw: Any = pipe.get(keys.snapshot)
                ttl = pipe.pttl(keys.snapshot)
                last = int(pipe.get(keys.snapshot_cycle) or 0)
                if raw is None:
                    return {"skipped": "no snapshot published"}
                data, compressed = _decode(raw)
                text = json.dumps(newer(data, last + 1), separators=(",", ":"))
                body = PUBLISHED_PREFIX + zlib.compress(text.encode()) if compressed else text
                pipe.multi()
                pipe.set(keys.snapshot_cycle, last + 1)
                pipe.set(keys.snapshot, body, px=max(int(ttl), 1000))
                pipe.execute()
                return {"cycle": last + 1, "version": json.loads(text)["version"]}
            except redis.WatchError:
                continue
    return {"skipped": "the leader kept publishing"}


def leader_node(connection: Any, keys: Keys, plain: Callable[[], redis.Redis]) -> redis.Redis:
    """A plain connection to the server of the ``{leader}`` slot."""
    if hasattr(connection, "get_node_from_key"):
        node = connection.get_node_from_key(keys.snapshot)
        return plain_redis(int(node.port), str(node.host))
    return plain()

"""A namespace's Redis state as plain data, to assert exactly what a command left behind."""

from __future__ import annotations

from typing import Any, cast

import pytest
import redis

from aggregator.engine import plan
from gatewayz_protocol.keys import Keys

OP_COUNTER = ":stats:redis_ops"
"""The shared op counter's key ends so: every writer bumps it, so it is left out."""


def state_of(r: redis.Redis, keys: Keys) -> dict[str, object]:
    """Every key of the namespace but the op counter, by its name without the namespace: its
    type, its content (hash fields and sorted-set members decoded) and whether it expires."""
    found: dict[str, object] = {}
    for raw in r.scan_iter(match=keys.pattern(), count=1000):
        key = bytes(raw).decode()
        if key.endswith(OP_COUNTER):
            continue
        kind = bytes(r.type(raw)).decode()  # type: ignore[arg-type]
        if kind == "hash":
            fields = cast(dict[bytes, bytes], r.hgetall(raw))
            content: object = {k.decode(): v.decode() for k, v in fields.items()}
        elif kind == "zset":
            members = cast(list[tuple[bytes, float]], r.zrange(raw, 0, -1, withscores=True))
            content = [(m.decode(), s) for m, s in members]
        else:
            content = r.dump(raw)
        found[key.removeprefix(keys.namespace + ":")] = (kind, content, r.ttl(raw) > 0)
    return found


def breaker_hash(state: str, epoch: int, forced: bool, since: float) -> dict[str, str]:
    """A breaker hash as a forced or reset state leaves it (default permits and permit time)."""
    return {
        "state": state,
        "since": repr(since),
        "epoch": str(epoch),
        "open_until": "0.0",
        "consecutive_opens": "0",
        "forced": "1" if forced else "0",
        "permits": "5",
        "permit_ms": "30000",
    }


def sent_commands(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The list every command the aggregator's plans send from now on is appended to, in
    order (``plan.execute_raw`` recorded, then run)."""
    sent: list[tuple[Any, ...]] = []
    execute = plan.execute_raw

    def recorded(connection: Any, commands: list[tuple[Any, ...]]) -> Any:
        sent.extend(commands)
        return execute(connection, commands)

    monkeypatch.setattr(plan, "execute_raw", recorded)
    return sent

"""A Redis Cluster slot moved by hand, step by step, the way ``redis-cli --cluster reshard`` moves
each slot: IMPORTING on the target, MIGRATING on the source, MIGRATE of the keys (here: the ones
a test chooses, so it can hold the slot half-moved), then the slot given to the target on every
master. While it is half-moved, clients meet ASK for the keys already moved."""

from __future__ import annotations

import time
from typing import Any

import redis

from devtools.redis_cluster import LocalCluster, start_node


def ask(port: int, *args: Any) -> Any:
    """One command to the node on ``port`` (a plain connection: no redirection followed)."""
    connection = redis.Redis(port=port, socket_timeout=5)
    try:
        return connection.execute_command(*args)  # type: ignore[no-untyped-call]
    finally:
        connection.close()


def node_id(port: int) -> str:
    raw = ask(port, "CLUSTER", "MYID")
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def keys_on(port: int, slot: int) -> set[bytes]:
    """The keys of ``slot`` the node on ``port`` holds now."""
    return set(ask(port, "CLUSTER", "GETKEYSINSLOT", slot, 100_000))


def masters(cluster: LocalCluster) -> list[int]:
    """The ports of the nodes serving slots now."""
    slots = ask(cluster.nodes[0].port, "CLUSTER", "SLOTS")
    return sorted({int(entry[2][1]) for entry in slots})


class SlotMigration:
    """``slot`` moved from the node serving it to ``target`` (default: another master)."""

    def __init__(self, cluster: LocalCluster, slot: int, target: int | None = None) -> None:
        self.cluster, self.slot = cluster, slot
        self.source = cluster.master_of_slot(slot).port
        self.target = target or next(p for p in masters(cluster) if p != self.source)

    def begin(self) -> SlotMigration:
        ask(self.target, "CLUSTER", "SETSLOT", self.slot, "IMPORTING", node_id(self.source))
        ask(self.source, "CLUSTER", "SETSLOT", self.slot, "MIGRATING", node_id(self.target))
        return self

    def move(self, keys: list[Any]) -> None:
        """MIGRATE these keys (of the slot) to the target, as one batch."""
        if keys:
            ask(self.source, "MIGRATE", "127.0.0.1", self.target, "", 0, 5000, "KEYS", *keys)

    def finish(self) -> None:
        """The rest of the keys moved, the slot given to the target on every master (the
        target first, as redis-cli does), and every master agreeing."""
        self.move(sorted(keys_on(self.source, self.slot)))
        others = [p for p in masters(self.cluster) if p not in (self.source, self.target)]
        for port in (self.target, self.source, *others):
            ask(port, "CLUSTER", "SETSLOT", self.slot, "NODE", node_id(self.target))
        self.cluster.wait_healthy(timeout=30)


def add_empty_master(cluster: LocalCluster, timeout: float = 30.0) -> int:
    """A new node joined to ``cluster`` without any slot (``redis-cli --cluster add-node``):
    what an operator scaling out adds before resharding onto it. Stopped with the cluster."""
    node = start_node()
    port = node.port
    cluster.nodes.append(node)
    ask(port, "CLUSTER", "MEET", "127.0.0.1", cluster.nodes[0].port)
    deadline = time.monotonic() + timeout
    while not (all(_knows(p, port) for p in masters(cluster)) and _ok(port)):
        if time.monotonic() > deadline:
            raise RuntimeError("the new node did not join the cluster")
        time.sleep(0.1)
    return port


def _ok(port: int) -> bool:
    """The node on ``port`` knows every slot's master (it serves requests)."""
    info = ask(port, "CLUSTER", "INFO")
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "cluster_state:ok" in text


def _knows(port: int, new_port: int) -> bool:
    nodes = ask(port, "CLUSTER", "NODES")
    text = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
    return any(f":{new_port}@" in line and "handshake" not in line for line in text.splitlines())

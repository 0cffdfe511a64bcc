"""Redis Cluster faults: a manual failover, one slot moved under load, a master killed.

Each one targets the slot of a given key (a busy provider's), so the load is on what moves.
"""

from __future__ import annotations

import signal
from typing import Any

import redis
from redis.crc import key_slot

from devtools.redis_cluster import LocalCluster
from devtools.redis_server import RedisProcess
from devtools.torture.deployment import plain_redis


def _client(port: int) -> redis.Redis:
    return plain_redis(port)


def _ask(port: int, *args: Any) -> Any:
    client = _client(port)
    try:
        return client.execute_command(*args)  # type: ignore[no-untyped-call]
    finally:
        client.close()


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def node_id(port: int) -> str:
    return _text(_ask(port, "CLUSTER", "MYID"))


def replication_id(port: int) -> str:
    """The server's replication id: it changes when a master is demoted to follow another (its
    data set then replaced by the new master's), and never comes back."""
    client = _client(port)
    try:
        return str(client.info("replication")["master_replid"])
    finally:
        client.close()


def live(cluster: LocalCluster) -> list[RedisProcess]:
    return [node for node in cluster.nodes if node.process.poll() is None]


def masters(cluster: LocalCluster) -> list[int]:
    """Ports of the nodes serving slots now, sorted."""
    for node in live(cluster):
        try:
            slots = _ask(node.port, "CLUSTER", "SLOTS")
        except redis.RedisError:
            continue
        return sorted({int(entry[2][1]) for entry in slots})
    return []


def slot_of(tag: str) -> int:
    return key_slot(("{" + tag + "}").encode())


def replica_of(cluster: LocalCluster, master_port: int) -> int | None:
    for node in live(cluster):
        try:
            role = _ask(node.port, "ROLE")
        except redis.RedisError:
            continue
        if _text(role[0]) == "slave" and int(role[2]) == master_port:
            return node.port
    return None


def failover(cluster: LocalCluster, tag: str) -> dict[str, Any]:
    """``CLUSTER FAILOVER`` on the replica of the master serving ``tag``: coordinated, the
    replica takes over once it has all the master acknowledged (nothing lost)."""
    master = cluster.master_of_slot(slot_of(tag)).port
    replica = replica_of(cluster, master)
    if replica is None:
        return {"skipped": f"no replica of {master}"}
    _ask(replica, "CLUSTER", "FAILOVER")
    return {"master": master, "replica": replica}


class Migration:
    """One slot moved, keys and all, to the next master (what ``redis-cli --cluster reshard``
    does for each slot): ``begin()`` marks it IMPORTING and MIGRATING, ``move()`` MIGRATEs keys
    (clients meet ASK for those moved), ``finish()`` moves the rest and gives the slot to the
    target on every master. A migration that failed half-way (its target out of memory) is
    finished later, as ``redis-cli --cluster fix`` would."""

    def __init__(self, cluster: LocalCluster, tag: str) -> None:
        self.cluster, self.slot = cluster, slot_of(tag)
        self.source = cluster.master_of_slot(self.slot).port
        ports = masters(cluster)
        self.target = next((p for p in ports if p > self.source), ports[0])
        self.moved = 0

    def notes(self) -> dict[str, Any]:
        return {"slot": self.slot, "from": self.source, "to": self.target, "keys": self.moved}

    def begin(self) -> bool:
        if self.target == self.source:
            return False
        _ask(self.target, "CLUSTER", "SETSLOT", self.slot, "IMPORTING", node_id(self.source))
        _ask(self.source, "CLUSTER", "SETSLOT", self.slot, "MIGRATING", node_id(self.target))
        return True

    def move(self, at_most: int | None = None) -> None:
        while keys := _ask(self.source, "CLUSTER", "GETKEYSINSLOT", self.slot, at_most or 100):
            _ask(self.source, "MIGRATE", "127.0.0.1", self.target, "", 0, 5000, "KEYS", *keys)
            self.moved += len(keys)
            if at_most is not None:
                return

    def finish(self) -> None:
        self.move()
        target_id = node_id(self.target)
        others = [p for p in masters(self.cluster) if p not in (self.source, self.target)]
        for port in [self.target, self.source, *others]:
            _ask(port, "CLUSTER", "SETSLOT", self.slot, "NODE", target_id)


def kill_master(cluster: LocalCluster, tag: str) -> tuple[RedisProcess, list[list[int]]]:
    """SIGKILL the master serving ``tag``; returns it and the slot ranges it served (what a
    failover may lose: writes it acknowledged and had not replicated)."""
    node = cluster.master_of_slot(slot_of(tag))
    ranges = [list(pair) for pair in cluster.slots_of(node.port)]
    node.process.send_signal(signal.SIGKILL)
    node.process.wait()
    return node, ranges


def all_nodes(cluster: LocalCluster) -> list[redis.Redis]:
    return [_client(node.port) for node in live(cluster)]

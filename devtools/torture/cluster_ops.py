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


def migrate_slot(cluster: LocalCluster, tag: str) -> dict[str, Any]:
    """Move the slot of ``tag``, keys and all, to the next master (what ``redis-cli --cluster
    reshard`` does for each slot): IMPORTING, MIGRATING, MIGRATE in batches, then NODE on every
    master."""
    slot = slot_of(tag)
    source = cluster.master_of_slot(slot).port
    ports = masters(cluster)
    target = next((p for p in ports if p > source), ports[0])
    if target == source:
        return {"skipped": "one master"}
    source_id, target_id = node_id(source), node_id(target)
    _ask(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    _ask(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    moved = 0
    while keys := _ask(source, "CLUSTER", "GETKEYSINSLOT", slot, 100):
        _ask(source, "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
        moved += len(keys)
    for port in [target, source, *(p for p in ports if p not in (source, target))]:
        _ask(port, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
    return {"slot": slot, "from": source, "to": target, "keys": moved}


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

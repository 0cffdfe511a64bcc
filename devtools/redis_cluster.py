"""Start a throw-away Redis Cluster (or a Sentinel-managed Redis) from ``redis-server`` and
``redis-cli`` on PATH, on free ports, nothing on disk that outlives it.

``python -m devtools.redis_cluster [--masters 3] [--replicas 0] -- COMMAND...`` runs COMMAND
with REDIS_URL set to the cluster (``redis+cluster://127.0.0.1:PORT``) and stops the cluster
afterwards; without a command it prints the URL and runs until interrupted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from devtools.redis_server import (
    RedisProcess,
    local_connection,
    stable_port,
    start_redis,
    wait_replicas_synced,
)

INSTALL_HINT = "redis-server and redis-cli not on PATH: install them (apt-get install redis-server)"


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too, both outside the ephemeral
    range (a killed node comes back on its port); Redis refuses ports above 55535 in cluster
    mode, which this keeps below."""
    return stable_port(plus=10_000)


CLUSTER_NODE_ARGS = (
    "--cluster-enabled", "yes",
    "--cluster-node-timeout", "1000",
    "--cluster-replica-validity-factor", "0",
    "--repl-diskless-sync-delay", "0",
)  # fmt: skip
"""Fast failure detection (1 s), any replica may take over however long it was cut off, and a
replica's first sync starts at once (Redis waits 5 s by default: a master killed before then
would take everything with it)."""


def node_urls(url: str) -> list[str]:
    """One plain ``redis://`` URL per server: ``url`` itself, or each seed of a
    ``redis+cluster://`` URL (a local cluster's lists every node)."""
    if not url.startswith("redis+cluster://"):
        return [url]
    return [f"redis://{seed}/0" for seed in url[len("redis+cluster://") :].split(",")]


def _ask(connection: redis.Redis, command: str) -> Any:
    return connection.execute_command(command)  # type: ignore[no-untyped-call]


def tools_present() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


@dataclass
class LocalCluster:
    """A local cluster this code started: ``nodes`` in creation order (masters first)."""

    nodes: list[RedisProcess]
    masters: int
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        """Every live node as a seed (one would do while it answers)."""
        live = [f"127.0.0.1:{node.port}" for node in self.nodes if node.process.poll() is None]
        return "redis+cluster://" + ",".join(live)

    def node(self, port: int) -> RedisProcess:
        return next(node for node in self.nodes if node.port == port)

    def master_of_slot(self, slot: int) -> RedisProcess:
        """The node that serves ``slot`` now, as the first node that answers sees it."""
        for node in self.nodes:
            if not node.answers():
                continue
            connection = local_connection(node.port)
            try:
                for start, end, master, *_ in _ask(connection, "CLUSTER SLOTS"):
                    if start <= slot <= end:
                        return self.node(int(master[1]))
            except redis.RedisError:
                continue
            finally:
                connection.close()
        raise RuntimeError(f"no live node serves slot {slot}")

    def slots_of(self, port: int) -> list[tuple[int, int]]:
        """The slot ranges the node on ``port`` serves."""
        connection = local_connection(port)
        try:
            return [
                (int(start), int(end))
                for start, end, master, *_ in _ask(connection, "CLUSTER SLOTS")
                if int(master[1]) == port
            ]
        finally:
            connection.close()

    def reshard(self, source: int, target: int, slots: int, timeout: float = 120.0) -> None:
        """``redis-cli --cluster reshard``: move ``slots`` slots (the source's lowest) from the
        node on port ``source`` to the one on ``target``, keys and all."""
        subprocess.run(
            ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{source}",
             "--cluster-from", self._node_id(source), "--cluster-to", self._node_id(target),
             "--cluster-slots", str(slots), "--cluster-yes"],
            check=True, capture_output=True, timeout=timeout,
        )  # fmt: skip

    def _node_id(self, port: int) -> str:
        connection = local_connection(port)
        try:
            raw = _ask(connection, "CLUSTER MYID")
            return raw.decode() if isinstance(raw, bytes) else str(raw)
        finally:
            connection.close()

    def wait_replicas_synced(self, timeout: float = 30.0) -> None:
        """Until every live replica has its first copy of its master's data and is linked."""
        live = [node.port for node in self.nodes if node.process.poll() is None]
        wait_replicas_synced(live, timeout)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every live node says the cluster is ok and agrees on every slot's master."""
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not become healthy")
            time.sleep(0.1)

    def healthy(self) -> bool:
        """Whether every node that answers (not one exited or stopped) says the cluster is ok
        and agrees on every slot's master."""
        views = set()
        for node in self.nodes:
            if not node.answers():
                continue
            connection = local_connection(node.port)
            try:
                if _ask(connection, "CLUSTER INFO").get("cluster_state") != "ok":
                    return False
                slots = _ask(connection, "CLUSTER SLOTS")
                views.add(tuple(sorted((s[0], s[1], int(s[2][1])) for s in slots)))
            except redis.RedisError:
                return False
            finally:
                connection.close()
        return len(views) == 1

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for node in self.nodes:
            node.stop()


def cluster_ports(count: int) -> list[int]:
    """``count`` distinct free ports a cluster node may use."""
    ports: list[int] = []
    while len(ports) < count:
        port = _cluster_port()
        if port not in ports:
            ports.append(port)
    return ports


def start_node(port: int | None = None) -> RedisProcess:
    """One cluster node, not yet in any cluster, on ``port`` (a free one by default). Its
    ``nodes.conf`` lives in its own directory, where a restart with ``--dir`` finds it."""
    return start_redis(port, extra_args=CLUSTER_NODE_ARGS, choose_port=_cluster_port)


def start_cluster(
    masters: int = 3,
    replicas: int = 0,
    timeout: float = 30.0,
    ports: Sequence[int] | None = None,
) -> LocalCluster:
    """``masters`` masters with ``replicas`` replicas each (on ``ports``, default free ones),
    slots spread evenly; fast failure detection (node timeout 1 s) so failover tests finish in
    seconds."""
    if not tools_present():
        raise RuntimeError(INSTALL_HINT)
    nodes: list[RedisProcess] = []
    try:
        chosen: Sequence[int | None] = ports or [None] * (masters * (1 + replicas))
        for port in chosen:
            nodes.append(start_node(port))
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses,
             "--cluster-replicas", str(replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=timeout,
        )  # fmt: skip
        cluster = LocalCluster(nodes, masters)
        cluster.wait_healthy(timeout)
        cluster.wait_replicas_synced(timeout)
        return cluster
    except BaseException:
        for node in nodes:
            node.stop()
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devtools.redis_cluster", description=__doc__)
    parser.add_argument("--masters", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        cluster = start_cluster(args.masters, args.replicas)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 3
    try:
        if not command:
            print(cluster.url, flush=True)
            while True:
                time.sleep(3600)
        sys.stderr.write(f"started a Redis Cluster of {len(cluster.nodes)} nodes: {cluster.url}\n")
        return subprocess.call(command, env={**os.environ, "REDIS_URL": cluster.url})
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())

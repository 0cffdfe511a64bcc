"""Start a throw-away Sentinel-managed Redis from ``redis-server`` on PATH: a master, its
replicas and three sentinels on free ports, failing over within about two seconds.

``python -m devtools.redis_sentinel -- COMMAND...`` runs COMMAND with REDIS_URL set to
``redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/gatewayz`` and stops everything
afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from devtools.redis_server import (
    RedisProcess,
    local_connection,
    on_a_free_port,
    start_redis,
    wait_answering,
    wait_replicas_synced,
)

MASTER_NAME = "gatewayz"
REPLICATION = ("--repl-diskless-sync-delay", "0")
"""A replica's first sync starts at once (Redis waits 5 s by default)."""


@dataclass
class LocalSentinel:
    servers: list[RedisProcess]
    """The master first, then its replicas (until a failover)."""
    sentinels: list[subprocess.Popen[bytes]]
    sentinel_ports: list[int]
    workdir: str

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{seeds}/{MASTER_NAME}/0"

    def master(self) -> RedisProcess:
        """The server the sentinels name as master now."""
        for port in self.sentinel_ports:
            connection = local_connection(port)
            try:
                address: Any = connection.sentinel_get_master_addr_by_name(MASTER_NAME)
                return next(s for s in self.servers if s.port == int(address[1]))
            except (redis.RedisError, StopIteration, TypeError):
                continue
            finally:
                connection.close()
        raise RuntimeError("no sentinel names a master")

    def stop(self) -> None:
        for sentinel in self.sentinels:
            if sentinel.poll() is None:
                sentinel.terminate()
                sentinel.wait(timeout=10)
        for server in self.servers:
            server.stop()


def start_sentinel(replicas: int = 1, sentinels: int = 3, timeout: float = 30.0) -> LocalSentinel:
    """A master with ``replicas`` replicas, watched by ``sentinels`` sentinels (quorum: a
    majority); a master unreachable for 1 s is failed over."""
    workdir = tempfile.mkdtemp(prefix="gatewayz-sentinel-")
    servers: list[RedisProcess] = []
    processes: list[subprocess.Popen[bytes]] = []
    try:
        master = start_redis(extra_args=REPLICATION)
        servers.append(master)
        for _ in range(replicas):
            servers.append(
                start_redis(extra_args=(*REPLICATION, "--replicaof", "127.0.0.1", str(master.port)))
            )
        ports: list[int] = []
        for _ in range(sentinels):
            process, port = _start_one_sentinel(workdir, master.port, sentinels // 2 + 1)
            processes.append(process)
            ports.append(port)
        cluster = LocalSentinel(servers, processes, ports, workdir)
        wait_replicas_synced([server.port for server in servers], timeout)
        deadline = time.monotonic() + timeout
        while True:  # every sentinel knows the master and the others
            try:
                if all(_sentinel_ready(port, sentinels) for port in ports):
                    return cluster
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinels did not start")
            time.sleep(0.1)
    except BaseException:
        for process in processes:
            process.terminate()
        for server in servers:
            server.stop()
        raise


def _start_one_sentinel(
    workdir: str, master_port: int, quorum: int, timeout: float = 10.0
) -> tuple[subprocess.Popen[bytes], int]:
    """A sentinel answering on a free port (another tried when the one chosen was taken, as
    ``start_redis`` does)."""
    return on_a_free_port(
        lambda port: _launch_sentinel(port, workdir, master_port, quorum, timeout)
    )


def _launch_sentinel(
    port: int, workdir: str, master_port: int, quorum: int, timeout: float
) -> tuple[subprocess.Popen[bytes], int]:
    config = Path(workdir) / f"sentinel-{port}.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {quorum}\n"
        f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
        f"sentinel failover-timeout {MASTER_NAME} 5000\n"
    )
    process = subprocess.Popen(
        ["redis-server", str(config), "--sentinel"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_answering(process, port, "a sentinel", timeout)
    except BaseException:
        process.kill()
        process.wait(timeout=10)
        raise
    return process, port


def _sentinel_ready(port: int, sentinels: int) -> bool:
    connection = local_connection(port)
    try:
        state: Any = connection.sentinel_master(MASTER_NAME)
        return int(state.get("num-other-sentinels", 0)) == sentinels - 1
    finally:
        connection.close()


def main(argv: Sequence[str] | None = None) -> int:
    command = list(sys.argv[1:] if argv is None else argv)
    command = command[1:] if command[:1] == ["--"] else command
    sentinel = start_sentinel()
    try:
        sys.stderr.write(f"started a Sentinel-managed Redis: {sentinel.url}\n")
        if not command:
            print(sentinel.url, flush=True)
            while True:
                time.sleep(3600)
        return subprocess.call(command, env={**os.environ, "REDIS_URL": sentinel.url})
    except KeyboardInterrupt:
        return 0
    finally:
        sentinel.stop()


if __name__ == "__main__":
    sys.exit(main())

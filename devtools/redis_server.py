"""Find or start a Redis for tests, CI and the demo.

``python -m devtools.redis_server [--allow-fake] -- COMMAND...`` runs COMMAND with a Redis
answering on REDIS_URL: the one already there, else a ``redis-server`` from PATH started on
REDIS_URL's port (and, with ``--allow-fake``, fakeredis's TCP server when there is no binary).
Whatever it started, it stops afterwards; nothing else is touched.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from devtools.processes import stop_process

DEFAULT_URL = "redis://127.0.0.1:6379/0"
INSTALL_HINT = (
    "no Redis answers on {url} and no redis-server is on PATH: install one "
    "(Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) or point "
    "REDIS_URL at a running server"
)


def answers(url: str, timeout: float = 0.5, *, asking_credentials: bool = False) -> bool:
    """True when a Redis server answers PING at ``url``; with ``asking_credentials`` also when
    it answers that it wants other credentials (a server started with ``--requirepass``, asked
    without the password: it runs)."""
    try:
        connection = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        try:
            return bool(connection.ping())
        finally:
            connection.close()
    except redis.AuthenticationError:
        return asking_credentials
    except (redis.RedisError, OSError, ValueError):
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ephemeral_ports() -> range:
    """The ports the kernel hands out to a bind on port 0 and to outgoing connections (Linux:
    ``ip_local_port_range``; elsewhere IANA's dynamic range)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        low, high = (int(word) for word in text.split())
    except (OSError, ValueError):
        low, high = 49152, 65535
    return range(low, high + 1)


def bindable(port: int) -> bool:
    """Whether ``port`` can be bound on 127.0.0.1 now."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stable_port(plus: int = 0) -> int:
    """A free port outside the kernel's ephemeral range, ``port + plus`` free and outside it
    too (a cluster node's bus port). For a process restarted on its port after a kill (a
    cluster node, the torture's Redis and aggregators): an ephemeral port freed by the kill can
    go meanwhile to another process's port-0 bind (``free_port``, run by tests in parallel) or
    outgoing connection, and the restart then finds it taken or, worse, another server on it."""
    ephemeral = ephemeral_ports()
    candidates = [
        port
        for port in range(10_000, 65_536 - plus)
        if port not in ephemeral and port + plus not in ephemeral
    ]
    for _ in range(1000):
        port = random.choice(candidates)
        if bindable(port) and (plus == 0 or bindable(port + plus)):
            return port
    raise RuntimeError("no free port outside the ephemeral range")


@dataclass
class RedisProcess:
    """A Redis server this code started; ``stop()`` ends it (and only it)."""

    process: subprocess.Popen[bytes]
    port: int
    kind: str  # "redis-server" or "fakeredis"
    workdir: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        stop_process(self.process, timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def answers(self) -> bool:
        """Whether it runs and is not stopped (SIGSTOP, whose server takes connections and
        answers nothing: a question to it only waits for its timeout). Linux tells from /proc;
        elsewhere a stopped one counts as answering."""
        if self.process.poll() is not None:
            return False
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return True
        return stat.rsplit(")", 1)[-1].split()[0] not in ("T", "t")


def local_connection(port: int, timeout: float = 2.0, host: str = "127.0.0.1") -> redis.Redis:
    """A connection to the server on ``host``'s ``port`` (this host's by default) that gives up
    after ``timeout`` seconds (connecting: after 2 s) and does not retry (its callers poll, or
    try the next server): a stopped server (SIGSTOP) whose listen backlog is full held a connect
    forever, and redis-py 6's default retries then held it for seconds a call (torture seed
    171000)."""
    return redis.Redis(
        host=host,
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=2,
        retry=Retry(NoBackoff(), 0),
    )


def replicas_synced(ports: Sequence[int]) -> bool:
    """Whether every replica among the servers on ``ports`` has its first copy of its master's
    data and is linked (masters pass; a server that does not answer does not)."""
    for port in ports:
        connection = local_connection(port)
        try:
            info = connection.info("replication")
        except redis.RedisError:
            return False
        finally:
            connection.close()
        if info.get("role") == "slave" and (
            info.get("master_link_status") != "up" or info.get("master_sync_in_progress")
        ):
            return False
    return True


def wait_replicas_synced(ports: Sequence[int], timeout: float = 30.0) -> None:
    """Until ``replicas_synced(ports)``; RuntimeError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not replicas_synced(ports):
        if time.monotonic() > deadline:
            raise RuntimeError("the replicas did not sync")
        time.sleep(0.1)


PORT_ATTEMPTS = 5


class ExitedAtStart(RuntimeError):
    """The server exited before it answered (most often: its port was taken)."""


def start_redis(
    port: int | None = None,
    *,
    allow_fake: bool = False,
    force_fake: bool = False,
    extra_args: Sequence[str] = (),
    timeout: float = 10.0,
    choose_port: Callable[[], int] = free_port,
) -> RedisProcess:
    """Start a throw-away Redis on 127.0.0.1:``port`` (one ``choose_port`` gives by default),
    nothing on disk: ``redis-server`` from PATH, else (``allow_fake``) or always
    (``force_fake``) fakeredis.

    A port chosen here can be taken by another process before the server binds it (tests run
    in parallel, and clients' ephemeral ports come from the same range); the server then exits
    at once, and another port is tried."""
    return on_a_free_port(
        lambda chosen: _start_redis(chosen, allow_fake, force_fake, extra_args, timeout),
        port,
        choose_port,
    )


_T = TypeVar("_T")


def on_a_free_port(
    start: Callable[[int], _T], port: int | None = None, choose_port: Callable[[], int] = free_port
) -> _T:
    """``start(port)``, or with no ``port`` on one ``choose_port`` gives: when the server
    exits at start there (``ExitedAtStart``: the port was taken since it was chosen), on
    another, ``PORT_ATTEMPTS`` in all."""
    if port is not None:
        return start(port)
    for attempt in range(PORT_ATTEMPTS):
        try:
            return start(choose_port())
        except ExitedAtStart:
            if attempt == PORT_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def wait_answering(process: subprocess.Popen[bytes], port: int, kind: str, timeout: float) -> None:
    """Until the server ``process`` runs answers PING on 127.0.0.1:``port`` (or that it wants a
    password: ``--requirepass`` among its arguments); raises ``ExitedAtStart`` when it exits
    first, RuntimeError after ``timeout`` seconds (the caller stops it)."""
    deadline = time.monotonic() + timeout
    while not answers(f"redis://127.0.0.1:{port}", timeout=0.2, asking_credentials=True):
        if process.poll() is not None:
            raise ExitedAtStart(f"{kind} exited at start on port {port}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{kind} did not start on port {port}")
        time.sleep(0.05)


def _start_redis(
    port: int,
    allow_fake: bool,
    force_fake: bool,
    extra_args: Sequence[str],
    timeout: float,
) -> RedisProcess:
    workdir = tempfile.mkdtemp(prefix="gatewayz-redis-")
    binary = None if force_fake else shutil.which("redis-server")
    if binary:
        command = [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", workdir,
            "--logfile", "",
            "--loglevel", "warning",
            *extra_args,
        ]  # fmt: skip
        kind = "redis-server"
    elif allow_fake or force_fake:
        command = [sys.executable, "-m", "devtools.fake_redis", "--port", str(port)]
        kind = "fakeredis"
    else:
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(INSTALL_HINT.format(url=f"redis://127.0.0.1:{port}"))
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
    server = RedisProcess(process, port, kind, workdir)
    try:
        wait_answering(process, port, kind, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def ensure_redis(url: str, *, allow_fake: bool = False) -> RedisProcess | None:
    """None when ``url`` already answers; else a server started on its port."""
    if answers(url):
        return None
    parsed = urlparse(url)
    if parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise RuntimeError(f"no Redis answers on {parsed.hostname}:{parsed.port}")
    return start_redis(parsed.port or 6379, allow_fake=allow_fake)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devtools.redis_server", description=__doc__)
    parser.add_argument("--allow-fake", action="store_true")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = [c for c in args.command if c != "--"] if args.command[:1] == ["--"] else args.command
    url = os.environ.get("REDIS_URL") or DEFAULT_URL
    try:
        server = ensure_redis(url, allow_fake=args.allow_fake)
    except RuntimeError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 3
    if server is not None:
        sys.stderr.write(f"started {server.kind} on port {server.port} for this run\n")
    try:
        if not command:
            return 0
        return subprocess.call(command)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())

"""The real processes of a torture run, started and stopped here and nowhere else.

A single Redis with an append-only file fsynced on every write (in ``/dev/shm`` when there is
one: a restart from it loses nothing acknowledged, and one without it loses everything), or a
local Redis Cluster (``devtools.redis_cluster``, one replica per master); two aggregator
replicas (``a1`` through its own fault proxy on one Redis); worker processes, each through the
workers' fault proxy. ``stop()`` ends every child it started, whatever state the run left
them in (stopped ones are continued first so they can die).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from devtools.processes import stop_process
from devtools.redis_cluster import CLUSTER_NODE_ARGS, LocalCluster, start_cluster
from devtools.redis_server import RedisProcess, answers, local_connection, stable_port
from devtools.torture.proxy import FaultProxy

ROOT = Path(__file__).resolve().parents[2]
BREAKER_FLAGS = (
    "--interval", "1", "--breaker-interval", "1", "--breaker-window", "4",
    "--breaker-min-calls", "20", "--breaker-open-seconds", "2",
    "--breaker-max-open-seconds", "4", "--breaker-half-open-timeout", "3",
)  # fmt: skip


@dataclass(frozen=True)
class Options:
    seed: int
    duration: float
    cluster: bool = False
    workers: int = 3
    rate: float = 150.0
    """calls/s per worker"""
    window: float = 300.0
    max_batch: int = 2000
    keep: Path | None = None
    """Where the run's files stay (default: a temporary directory, removed)."""


def code_fingerprint() -> str:
    """A digest of the aggregator's and the contract's sources as they are now: a replica
    restarted while the working tree changes under the run may serve another version."""
    digest = hashlib.sha1()
    for package in ("aggregator", "gatewayz_protocol", "gatewayz_transport"):
        for path in sorted((ROOT / package).rglob("*.py")):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def text(raw: object) -> str:
    """A reply as text (redis-py types replies as bytes or str)."""
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def plain_redis(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> redis.Redis:
    """A connection to one server that never retries on its own (redis-py's default retries
    with backoff would hold the nemesis for seconds against a server it just killed)."""
    return local_connection(port, timeout, host)


def wait_until(condition: Any, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if condition():
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(step)


def _answered_or_gone(aggregator: AggregatorProcess) -> bool:
    return not aggregator.alive() or http_get(aggregator.port, "/healthz")[0] == 200


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


class SingleRedis:
    """One redis-server, its AOF fsynced always; ``kill()`` then ``start(keep=False)`` is a
    restart that lost everything."""

    def __init__(self, workdir: Path) -> None:
        self.port = stable_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.incarnation = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, keep: bool = True) -> None:
        """(Re)start on the same port and directory; a server still running (a restart healed
        after another one) is killed first, never left behind."""
        self.kill()
        if not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir),
            "--logfile", "", "--loglevel", "warning",
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
        self.incarnation += 1
        if not wait_until(lambda: answers(self.url, 0.2), 20):
            raise RuntimeError(f"redis-server did not start on {self.port}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            self.kill(signal.SIGKILL)
        shutil.rmtree(self.workdir, ignore_errors=True)


def relaunch_node(node: RedisProcess) -> None:
    """A killed cluster node started again in its own directory (its nodes.conf kept): it
    rejoins, as a replica when its slots failed over meanwhile."""
    command = [
        "redis-server", "--port", str(node.port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", node.workdir, "--logfile", "", "--loglevel", "warning",
        *CLUSTER_NODE_ARGS,
    ]  # fmt: skip
    node.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
    wait_until(lambda: answers(node.url, 0.2), 20)


@dataclass
class AggregatorProcess:
    name: str
    port: int
    redis_url: str
    namespace: str
    window: float
    log: Path
    process: subprocess.Popen[bytes] | None = None
    generation: int = 0
    code: str = ""
    """``code_fingerprint()`` when this generation started."""

    def start(self) -> None:
        command = [
            sys.executable, "-m", "aggregator", "--redis-url", self.redis_url,
            "--namespace", self.namespace, "--port", str(self.port), "--instance", self.name,
            "--window", f"{self.window:g}", *BREAKER_FLAGS, "--log-level", "INFO",
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=out)
        self.generation += 1
        self.code = code_fingerprint()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(sig)

    def kill(self) -> None:
        if self.process is not None and self.alive():
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            if self.alive():
                self.process.send_signal(signal.SIGCONT)
            stop_process(self.process, timeout=10)


@dataclass
class WorkerProcess:
    slot: int
    index: int
    conf: dict[str, Any]
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    killed_at: float | None = None
    control_seq: int = 0
    clock_target: float = 0.0

    @property
    def ledger(self) -> Path:
        return self.directory / f"worker-{self.index}.jsonl"

    @property
    def counters(self) -> Path:
        return self.directory / f"worker-{self.index}.counters"

    @property
    def control(self) -> Path:
        return self.directory / f"worker-{self.index}.control"

    def start(self) -> None:
        conf = self.conf | {
            "index": self.index,
            "slot": self.slot,
            "ledger": str(self.ledger),
            "counters": str(self.counters),
            "control": str(self.control),
        }
        path = self.directory / f"worker-{self.index}.json"
        path.write_text(json.dumps(conf))
        self.send({})
        with (self.directory / f"worker-{self.index}.log").open("ab") as out:
            command = [sys.executable, "-m", "devtools.torture.workers", str(path)]
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=out)

    def started(self) -> bool:
        return self.ledger.exists() and '"kind": "start"' in self.ledger.read_text()

    def send(self, message: dict[str, Any]) -> None:
        """The control file, replaced atomically (the worker polls it)."""
        self.control_seq += 1
        temporary = self.control.with_suffix(".tmp")
        temporary.write_text(json.dumps({"seq": self.control_seq, **message}))
        os.replace(temporary, self.control)

    def set_clock(self, target: float, seconds: float) -> None:
        self.clock_target = target
        self.send({"clock": {"target": target, "seconds": seconds}})

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.process is not None and self.alive():
            self.process.kill()
            self.process.wait()
            self.killed_at = time.time()

    def read_counters(self) -> tuple[int, int]:
        try:
            data = self.counters.read_bytes()
        except OSError:
            return (0, 0)
        if len(data) < 16:
            return (0, 0)
        return int.from_bytes(data[:8], "little"), int.from_bytes(data[8:16], "little")


@dataclass
class Deployment:
    options: Options
    namespace: str = field(default_factory=lambda: f"torture-{uuid.uuid4().hex[:8]}")
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="torture-")))
    redis: SingleRedis | None = None
    cluster: LocalCluster | None = None
    proxies: dict[str, FaultProxy] = field(default_factory=dict)
    aggregators: list[AggregatorProcess] = field(default_factory=list)
    workers: dict[int, WorkerProcess] = field(default_factory=dict)
    retired: list[WorkerProcess] = field(default_factory=list)
    next_index: int = 0
    worker_url: str = ""

    @property
    def direct_url(self) -> str:
        if self.cluster is not None:
            return self.cluster.url
        assert self.redis is not None
        return self.redis.url

    def start(self) -> None:
        if self.options.keep is not None:
            self.directory = self.options.keep
            self.directory.mkdir(parents=True, exist_ok=True)
        if self.options.cluster:
            self.cluster = start_cluster(masters=3, replicas=1)
            worker_url = agg_url = self.cluster.url
        else:
            shm = Path("/dev/shm")
            base = Path(tempfile.mkdtemp(prefix="torture-aof-", dir=shm if shm.is_dir() else None))
            self.redis = SingleRedis(base)
            self.redis.start()
            for name in ("workers", "a1"):
                self.proxies[name] = FaultProxy(self.redis.port, name).start()
            worker_url = f"redis://127.0.0.1:{self.proxies['workers'].port}/0"
            agg_url = f"redis://127.0.0.1:{self.proxies['a1'].port}/0"
        for name, url in (("a0", self.direct_url), ("a1", agg_url)):
            log = self.directory / f"{name}.log"
            agg = AggregatorProcess(
                name, stable_port(), url, self.namespace, self.options.window, log
            )
            agg.start()
            self.aggregators.append(agg)
        self.worker_url = worker_url
        for slot in range(self.options.workers):
            self.add_worker(slot)
        for agg in self.aggregators:
            # one that exited (its port taken meanwhile, say) will never answer: say why at once
            if not wait_until(lambda a=agg: _answered_or_gone(a), 120, 0.1) or not agg.alive():
                tail = agg.log.read_text(errors="replace")[-2000:] if agg.log.exists() else ""
                raise RuntimeError(f"aggregator {agg.name} did not answer /healthz:\n{tail}")
        # 120 s: a loaded machine (a long run under nice) takes long to start Python processes
        if not wait_until(lambda: all(w.started() for w in self.workers.values()), 120, 0.05):
            raise RuntimeError("workers did not start")

    def add_worker(self, slot: int) -> WorkerProcess:
        conf = {
            "seed": self.options.seed,
            "redis_url": self.worker_url,
            "direct_url": self.direct_url,
            "namespace": self.namespace,
            "window": self.options.window,
            "max_batch": self.options.max_batch,
            "rate": self.options.rate,
            "flush_timeout": 1.0,
            "peers": [f"w{i}-flaky" for i in range(self.options.workers)],
            "close_timeout": 20.0,
        }
        worker = WorkerProcess(slot, self.next_index, conf, self.directory)
        self.next_index += 1
        worker.start()
        self.workers[slot] = worker
        return worker

    def all_workers(self) -> list[WorkerProcess]:
        return [*self.retired, *self.workers.values()]

    def stop(self) -> None:
        """Every child this run started, ended; their files removed unless kept."""
        for worker in self.all_workers():
            if worker.process is not None and worker.alive():
                worker.process.kill()
                worker.process.wait()
        for agg in self.aggregators:
            agg.stop()
        for proxy in self.proxies.values():
            proxy.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.cluster is not None:
            for node in self.cluster.nodes:
                if node.process.poll() is None:
                    node.process.send_signal(signal.SIGCONT)
            self.cluster.stop()
        if self.options.keep is None:
            shutil.rmtree(self.directory, ignore_errors=True)

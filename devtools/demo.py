"""``make demo``: Redis + aggregator + simulated gateway workers, with live /metrics excerpts.

Uses (or starts) the Redis on REDIS_URL, clears its own namespace (``gatewayz-demo``), starts
``python -m aggregator`` and ``--workers`` ``devtools.demo_worker`` processes, prints where to
look and a /metrics excerpt every ``--refresh`` s; Ctrl-C, SIGTERM or ``--duration`` stops
exactly the processes it started."""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from types import FrameType
from typing import IO

import redis

from client.keys import SUCCESS, Keys, window_partition
from client.settings import DEFAULT_NAMESPACE
from devtools.redis_server import DEFAULT_URL, RedisProcess, ensure_redis

PROVIDERS = ("openrouter", "anthropic", "flakyai", "idle-provider")
TRAFFIC = re.compile(r'^gatewayz_provider_window_requests\{provider="openrouter"\} [1-9]', re.M)
BREAKER_STATE = "gatewayz_circuit_breaker_state{"
EXCERPT = (
    "provider_availability{", "provider_error_rate{", "gatewayz_provider_health_score{",
    BREAKER_STATE, "gatewayz_provider_window_requests{",
)  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="devtools.demo", description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--port", type=int, default=9108, help="aggregator HTTP port (default 9108)")
    add("--workers", type=int, default=4, help="simulated gateway workers (default 4)")
    add("--rate", type=float, default=150.0, help="calls/s, all workers together (default 150)")
    add("--interval", type=float, default=2.0, help="aggregation cycle seconds (default 2)")
    add("--window", type=float, default=300.0, help="sliding window seconds (default 300)")
    add("--breaker-open-seconds", type=float, default=10.0, help="first open time (default 10)")
    add("--namespace", default="gatewayz-demo", help="Redis key prefix (default gatewayz-demo)")
    add("--keep-data", action="store_true", help="do not clear the namespace's keys first")
    add("--refresh", type=float, default=10.0, help="seconds between excerpts (default 10)")
    add("--duration", type=float, default=None, help="stop after SECONDS (default: Ctrl-C)")
    args = parser.parse_args(argv)
    if args.workers < 1 or not args.rate > 0 or not args.refresh > 0 or not args.interval > 0:
        parser.error("--workers, --rate, --refresh and --interval must be positive")
    try:
        Keys(args.namespace)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def _die_with_parent() -> None:  # in the child: SIGTERM when the demo dies, even by SIGKILL
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Children:
    """The processes this demo started, each in its own session; stop() ends exactly those."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.redis: RedisProcess | None = None

    def start(self, name: str, command: list[str], log: IO[bytes] | None = None) -> None:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )  # fmt: skip
        self.procs.append((name, proc))

    def died(self) -> list[str]:
        return [f"{name} (exit {p.returncode})" for name, p in self.procs if p.poll() is not None]

    def stop(self) -> None:
        """Workers first (they flush), then the aggregator, then a Redis we started."""
        for _, proc in self.procs:
            proc.terminate()  # a no-op once it has exited and been reaped
        for _, proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()  # ignored SIGTERM for 10 s
                proc.wait()
        if self.redis is not None:
            self.redis.stop()  # idempotent


def fetch(url: str, timeout: float = 2.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bytes(response.read()).decode()
    except urllib.error.HTTPError as exc:  # /readyz answers 503 with a body
        return exc.read().decode()
    except (OSError, ValueError):
        return None


def excerpt(metrics_text: str) -> list[str]:
    """The health lines of a /metrics body: no comments, only the breaker state that is 1."""
    lines = (line for line in metrics_text.splitlines() if line.startswith(EXCERPT))
    return [x for x in lines if not x.startswith(BREAKER_STATE) or x.endswith(" 1.0")]


def prepare_redis(url: str, namespace: str, keep: bool) -> str | None:
    """Check that Redis runs Lua (the aggregator needs it) and clear the namespace; or an error."""
    with redis.Redis.from_url(url, socket_timeout=5) as connection:
        try:
            connection.eval("return 1", 0)
        except redis.ResponseError:
            return f"the Redis on {url} cannot run Lua scripts (fakeredis needs `pip install lupa`)"
        if keep or namespace == DEFAULT_NAMESPACE:
            print(f"keeping the existing keys of namespace {namespace!r}", flush=True)
            return None
        keys = list(connection.scan_iter(match=Keys(namespace).pattern(), count=1000))
        for start in range(0, len(keys), 500):
            connection.unlink(*keys[start : start + 500])
    print(f"cleared {len(keys)} old keys of namespace {namespace!r}", flush=True)
    return None


def redis_cli_hints(url: str, namespace: str) -> list[str]:
    cli = "redis-cli" if url == DEFAULT_URL else f"redis-cli -u {url}"
    keys = Keys(namespace)
    ok = keys.window_keys("openrouter")[window_partition(SUCCESS, 0.45)]
    return [
        f"{cli} ZCOUNT '{keys.window_keys('openrouter')[-3]}' -inf +inf   # failures in window",
        f"{cli} ZRANGE '{ok}' -3 -1 WITHSCORES   # newest 0.25-0.5 s successes (member, time)",
        f"{cli} HGETALL '{keys.breaker('flakyai')}'   # breaker state",
        f"{cli} HGETALL '{keys.totals('anthropic')}'   # cumulative counters",
        f"{cli} --scan --pattern '{namespace}:{{openrouter}}:*'   # all keys of a provider",
    ]


def aggregator_command(args: argparse.Namespace, url: str) -> list[str]:
    return [
        sys.executable, "-m", "aggregator", "--redis-url", url, "--namespace", args.namespace,
        "--port", str(args.port), "--interval", str(args.interval),
        "--breaker-interval", str(args.interval), "--window", str(args.window),
        "--providers", ",".join(PROVIDERS),
        "--breaker-open-seconds", str(args.breaker_open_seconds),
    ]  # fmt: skip


def worker_command(args: argparse.Namespace, url: str, seed: int) -> list[str]:
    return [
        sys.executable, "-m", "devtools.demo_worker", "--redis-url", url,
        "--namespace", args.namespace, "--seed", str(seed),
        "--rate", str(args.rate / args.workers), "--window", str(args.window),
    ]  # fmt: skip


def print_where(base: str, url: str, namespace: str) -> None:
    print(f"\n  metrics:    {base}/metrics\n  dashboard:  {base}/health/dashboard")
    print(f"  readiness:  {base}/readyz -> {(fetch(f'{base}/readyz') or '?').strip()}")
    print(f"\ninspect the windows in Redis (namespace {namespace!r}) while the demo runs:")
    print("\n".join(f"  {hint}" for hint in redis_cli_hints(url, namespace)), flush=True)


def print_excerpt(text: str | None, elapsed: float) -> None:
    body = "(/metrics did not answer)" if text is None else "\n".join(excerpt(text))
    print(f"\n--- /metrics excerpt at +{elapsed:.0f}s ---\n{body}", flush=True)


def run(args: argparse.Namespace, children: Children, stop: threading.Event, log: IO[bytes]) -> int:
    url = os.environ.get("REDIS_URL") or DEFAULT_URL
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", args.port)) == 0:
            sys.stderr.write(f"error: port {args.port} is in use; pick another with --port\n")
            return 2
    try:
        children.redis = ensure_redis(url, allow_fake=True)
    except RuntimeError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 3
    if children.redis is None:
        print(f"using the Redis already on {url}", flush=True)
    else:
        url = children.redis.url
        print(f"started {children.redis.kind} on {url} (stopped on exit)", flush=True)
    if error := prepare_redis(url, args.namespace, args.keep_data):
        sys.stderr.write(f"error: {error}\n")
        return 3
    children.start("aggregator", aggregator_command(args, url), log)
    for i in range(args.workers):
        children.start(f"worker {i}", worker_command(args, url, i))
    base = f"http://127.0.0.1:{args.port}"
    print(f"aggregator on {base} (log: {log.name}); {args.workers} workers, ~{args.rate:g} calls/s")
    started = time.monotonic()
    end = math.inf if args.duration is None else started + args.duration
    deadline = started + max(20.0, 5 * args.interval)
    ready, next_refresh = False, 0.0
    while not stop.is_set() and time.monotonic() < end:
        if died := children.died():
            sys.stderr.write(f"error: {', '.join(died)} exited; see {log.name}\n")
            return 1
        now = time.monotonic()
        if not ready or now >= next_refresh:
            text = fetch(f"{base}/metrics")
            if not ready and text is not None and TRAFFIC.search(text):
                ready = True
                print_where(base, url, args.namespace)
            elif not ready and now > deadline:
                sys.stderr.write(f"error: no traffic on {base}/metrics; see {log.name}\n")
                return 1
            if ready:
                next_refresh = now + args.refresh
                print_excerpt(text, now - started)
        stop.wait(min(0.5, max(0.0, end - time.monotonic())))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    children = Children()
    prefix = "gatewayz-demo-aggregator-"
    with tempfile.NamedTemporaryFile(prefix=prefix, suffix=".log", delete=False) as log:
        try:
            code = run(args, children, stop, log)
        finally:
            print("\nstopping the demo's workers, aggregator and Redis (if started)...", flush=True)
            children.stop()
    print("demo stopped", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())

"""``make demo``: Redis + aggregator + the example gateway under Gunicorn, driven by HTTP traffic.

Uses (or starts) the Redis on GATEWAYZ_REDIS_URL (``--cluster``: starts a local 3-master Redis
Cluster), clears its own namespace (``gatewayz-demo``), starts ``python -m aggregator``, the
example gateway (``examples.gateway.app``) under Gunicorn with ``--workers`` uvicorn workers and
fake providers (healthy openrouter, slow anthropic, failing flakyai), and ``devtools.demo_traffic``
sending it ``--rate`` requests/s; prints where to look and a /metrics excerpt every ``--refresh``
s. Ctrl-C, SIGTERM or ``--duration`` stops exactly the
processes it started, newest first: traffic, Gunicorn (its workers flush), aggregator, Redis."""

from __future__ import annotations

import argparse
import contextlib
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
from pathlib import Path
from types import FrameType
from typing import IO
from urllib.parse import urlparse

import redis

from devtools.demo_traffic import HEALTH, excerpt
from devtools.redis_cluster import LocalCluster, node_urls, start_cluster
from devtools.redis_server import DEFAULT_URL, RedisProcess, ensure_redis
from gatewayz_protocol.deprecations import notices_as_lines
from gatewayz_protocol.keys import DEFAULT_NAMESPACE, Keys
from gatewayz_protocol.options import REDIS_URL, read
from gatewayz_protocol.partitions import SUCCESS, latency_partition, window_partition

ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONF = ROOT / "examples" / "gateway" / "gunicorn.conf.py"
PROVIDERS = ("openrouter", "anthropic", "flakyai", "idle-provider")
FAKE_PROVIDERS = "openrouter:0.3:0.01,anthropic:4:0.01,flakyai:0.1:0.65"  # healthy, slow, failing
TRAFFIC = re.compile(r'^gatewayz_provider_window_requests\{provider="openrouter"\} [1-9]', re.M)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="devtools.demo", description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--port", type=int, default=9108, help="aggregator HTTP port (default 9108)")
    add("--gateway-port", type=int, default=8080, help="example gateway port (default 8080)")
    add("--workers", type=int, default=4, help="Gunicorn (uvicorn) workers (default 4)")
    add("--rate", type=float, default=60.0, help="HTTP requests/s to the gateway (default 60)")
    add(
        "--fake-providers",
        default=FAKE_PROVIDERS,
        help=f"name:latency_s:failure_rate,... (default {FAKE_PROVIDERS})",
    )
    add("--interval", type=float, default=2.0, help="aggregation cycle seconds (default 2)")
    add("--window", type=float, default=300.0, help="sliding window seconds (default 300)")
    add("--breaker-open-seconds", type=float, default=10.0, help="first open time (default 10)")
    add("--namespace", default="gatewayz-demo", help="Redis key prefix (default gatewayz-demo)")
    add("--keep-data", action="store_true", help="do not clear the namespace's keys first")
    add(
        "--cluster",
        action="store_true",
        help="run on a local 3-master Redis Cluster started for the demo (redis-server and "
        "redis-cli on PATH) instead of GATEWAYZ_REDIS_URL",
    )
    add("--refresh", type=float, default=10.0, help="seconds between excerpts (default 10)")
    add(
        "--duration",
        type=float,
        default=None,
        help="stop after SECONDS of traffic (default: run until Ctrl-C)",
    )
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


def exit_code(proc: subprocess.Popen[bytes]) -> int | None:
    """``proc``'s exit code once it has exited, without reaping it where the OS allows: until
    ``wait()`` its pid, and so its process group's id, cannot name another process."""
    if proc.returncode is not None or not hasattr(os, "waitid"):
        return proc.poll()
    with contextlib.suppress(ChildProcessError):
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
    return proc.poll()


class Children:
    """The processes this demo started, each leading its own session; stop() ends exactly those
    (and what they started: Gunicorn's workers)."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes], float]] = []
        self.redis: RedisProcess | LocalCluster | None = None

    def start(
        self, name: str, command: list[str], log: IO[bytes] | None = None,
        env: dict[str, str] | None = None, grace: float = 10.0,
    ) -> int:  # fmt: skip
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            cwd=ROOT, env=None if env is None else {**os.environ, **env},
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )  # fmt: skip
        self.procs.append((name, proc, grace))
        return proc.pid

    def died(self) -> list[str]:
        return [
            f"{n} (exit {code})" for n, p, _ in self.procs if (code := exit_code(p)) is not None
        ]

    def stop(self) -> bool:
        """Newest first, one at a time: traffic, Gunicorn (the master stops its workers
        gracefully: they flush), aggregator; then a Redis we started. Says what it stops;
        False when nothing was started."""
        started = [name for name, _, _ in reversed(self.procs)]
        started += [] if self.redis is None else [f"the Redis it started ({self.redis.url})"]
        if not started:
            return False
        print(f"\nstopping {', '.join(started)}...", flush=True)
        for name, proc, grace in reversed(self.procs):
            if proc.returncode is not None:
                continue  # reaped already
            if exit_code(proc) is None:
                proc.terminate()
            deadline = time.monotonic() + grace
            while exit_code(proc) is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.returncode is None:  # unreaped: its pid still names its process group
                alive = exit_code(proc) is None  # ignored SIGTERM: kill it and its group
                with contextlib.suppress(OSError):  # else: orphans of a crashed leader
                    os.killpg(proc.pid, signal.SIGKILL if alive else signal.SIGTERM)
            code = proc.wait()
            how = f"exit {code}" if code >= 0 else signal.Signals(-code).name
            print(f"  stopped {name} (pid {proc.pid}, {how})", flush=True)
        if self.redis is not None:
            self.redis.stop()  # idempotent
            print(f"  stopped the Redis it started ({self.redis.url}), and its data", flush=True)
        return True


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # local: never a proxy


def fetch(url: str, timeout: float = 2.0) -> str | None:
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return bytes(response.read()).decode()
    except urllib.error.HTTPError as exc:  # /readyz answers 503 with a body
        return exc.read().decode()
    except (OSError, ValueError):
        return None


def prepare_redis(url: str, namespace: str, keep: bool) -> str | None:
    """Check that Redis runs Lua (the aggregator needs it) and clear the namespace; or an error.
    A cluster: each node's own keys (the URL lists every node)."""
    cleared = 0
    for node_url in node_urls(url):
        with redis.Redis.from_url(node_url, socket_timeout=5) as connection:
            try:
                connection.eval("return 1", 0)
            except redis.ResponseError:
                return f"the Redis on {url} cannot run Lua (fakeredis needs `pip install lupa`)"
            if keep or namespace == DEFAULT_NAMESPACE:
                continue
            for key in list(connection.scan_iter(match=Keys(namespace).pattern(), count=1000)):
                cleared += connection.unlink(key)  # one by one: a cluster node's keys differ
    if keep or namespace == DEFAULT_NAMESPACE:
        print(f"keeping the existing keys of namespace {namespace!r}", flush=True)
    else:
        print(f"cleared {cleared} old keys of namespace {namespace!r}", flush=True)
    return None


def redis_cli_hints(url: str, namespace: str) -> list[str]:
    keys = Keys(namespace)
    pattern = f"'{namespace}:{{openrouter}}:*'"
    if url.startswith("redis+cluster://"):  # -c: follow the redirections to a key's node
        port = urlparse(node_urls(url)[0]).port
        cli = f"redis-cli -c -p {port}"
        every_key = f"redis-cli --cluster call 127.0.0.1:{port} KEYS {pattern}"  # each node
    else:
        cli = "redis-cli" if url == DEFAULT_URL else f"redis-cli -u {url}"
        every_key = f"{cli} --scan --pattern {pattern}"
    ok = keys.window_keys("openrouter")[window_partition(SUCCESS, latency_partition(0.45))]
    return [
        f"{cli} ZCOUNT '{keys.window_keys('flakyai')[-3]}' -inf +inf   # failures in window",
        f"{cli} ZRANGE '{ok}' -3 -1 WITHSCORES   # newest 0.25-0.5 s successes (member, time)",
        f"{cli} HGETALL '{keys.breaker('flakyai')}'   # breaker state",
        f"{cli} HGETALL '{keys.totals('anthropic')}'   # cumulative counters",
        f"{every_key}   # all keys of a provider",
    ]


def cli_hints(url: str, namespace: str) -> list[str]:
    """The exact ``inspect`` and ``breaker status`` commands for this demo's Redis and namespace."""
    flags = f"--redis-url {url} --namespace {namespace}"
    return [
        f"{sys.executable} -m aggregator inspect {flags}   # every provider",
        f"{sys.executable} -m aggregator inspect flakyai {flags}   # one, minute by minute",
        f"{sys.executable} -m aggregator breaker status {flags}   # breakers as JSON lines",
    ]


def aggregator_command(args: argparse.Namespace, url: str) -> list[str]:
    return [
        sys.executable, "-m", "aggregator", "--redis-url", url, "--namespace", args.namespace,
        "--port", str(args.port), "--interval", str(args.interval),
        "--breaker-interval", str(args.interval), "--window", str(args.window),
        "--providers", ",".join(PROVIDERS),
        "--breaker-open-seconds", str(args.breaker_open_seconds),
    ]  # fmt: skip


def gateway_env(args: argparse.Namespace, url: str) -> dict[str, str]:
    return {
        "GATEWAYZ_REDIS_URL": url, "GATEWAYZ_NAMESPACE": args.namespace,
        "GATEWAYZ_WINDOW_SECONDS": str(args.window),
        "GATEWAY_BIND": f"127.0.0.1:{args.gateway_port}", "GATEWAY_WORKERS": str(args.workers),
        "FAKE_PROVIDERS": args.fake_providers,
    }  # fmt: skip


def print_where(base: str, gateway: str, url: str, namespace: str) -> None:
    print(f"\n  gateway:    {gateway}/v1/chat/completions   ({gateway}/worker-metrics: one worker)")
    print(f"  dashboard:  {base}/dashboard   (the page: open it in a browser)")
    print(f"  metrics:    {base}/metrics\n  JSON:       {base}/health/dashboard")
    print(f"  readiness:  {base}/readyz -> {(fetch(f'{base}/readyz') or '?').strip()}")
    legend = [f"{c}={m}" for c, m, _ in HEALTH]
    print(f"  columns:    {' '.join(legend[:2])}\n              {' '.join(legend[2:])}")
    print(f"\ninspect the windows in Redis (namespace {namespace!r}) while the demo runs:")
    print("\n".join(f"  {hint}" for hint in redis_cli_hints(url, namespace)), flush=True)
    print("\n".join(f"  {command}" for command in cli_hints(url, namespace)), flush=True)


def print_excerpt(text: str | None, elapsed: float) -> None:
    body = "(/metrics did not answer)" if text is None else "\n".join(excerpt(text, PROVIDERS))
    print(f"\n--- /metrics excerpt at +{elapsed:.0f}s ---\n{body}", flush=True)


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def fail(message: str, code: int = 1) -> int:
    sys.stderr.write(f"error: {message}\n")
    return code


def run(args: argparse.Namespace, children: Children, stop: threading.Event, log: IO[bytes]) -> int:
    url = read(REDIS_URL, os.environ) or DEFAULT_URL  # the product's variable, as the demo runs it
    for port, flag in ((args.port, "--port"), (args.gateway_port, "--gateway-port")):
        if port_in_use(port):
            another = f'{flag} N (make demo ARGS="{flag} N")'
            return fail(f"port {port} is in use: nothing started; pick another with {another}", 2)
    if args.cluster:
        try:
            children.redis = start_cluster(masters=3)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            return fail(f"could not start a local Redis Cluster: {exc}", 3)
        url = children.redis.url
        print(f"started a 3-master Redis Cluster: {url} (stopped on exit)", flush=True)
    else:
        try:
            children.redis = ensure_redis(url, allow_fake=True)
        except RuntimeError as exc:
            return fail(str(exc), 3)
        if children.redis is None:
            print(f"using the Redis already on {url}", flush=True)
        else:
            url = children.redis.url
            print(f"started {children.redis.kind} on {url} (stopped on exit)", flush=True)
    if error := prepare_redis(url, args.namespace, args.keep_data):
        return fail(error, 3)
    base, gateway = f"http://127.0.0.1:{args.port}", f"http://127.0.0.1:{args.gateway_port}"
    pid = children.start("aggregator", aggregator_command(args, url), log)
    print(f"aggregator on {base} (pid {pid})", flush=True)
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF)]
    pid = children.start(
        "gunicorn", [*gunicorn, "examples.gateway.app:app"], log, gateway_env(args, url), 20.0
    )
    print(f"gunicorn master (pid {pid}) on {gateway}, {args.workers} workers ...", flush=True)
    deadline = time.monotonic() + 30.0
    while fetch(f"{gateway}/v1/chat/10", timeout=1.0) is None:  # up once it answers
        if children.died() or time.monotonic() > deadline:
            return fail(f"the gateway did not start on {gateway}; see {log.name}")
        if stop.wait(0.2):
            return 0
    traffic = [sys.executable, "-m", "devtools.demo_traffic", "--url", gateway]
    pid = children.start("traffic", [*traffic, "--rate", str(args.rate)], grace=15.0)
    print(f"traffic (pid {pid}): ~{args.rate:g} requests/s; logs: {log.name}", flush=True)
    started = time.monotonic()
    end = math.inf if args.duration is None else started + args.duration
    deadline = started + max(20.0, 5 * args.interval)
    ready, next_refresh = False, 0.0
    while not stop.is_set() and time.monotonic() < end:
        if died := children.died():
            return fail(f"{', '.join(died)} exited; see {log.name}")
        now = time.monotonic()
        if not ready or now >= next_refresh:
            text = fetch(f"{base}/metrics")
            if not ready and text is not None and TRAFFIC.search(text):
                ready = True
                print_where(base, gateway, url, args.namespace)
            elif not ready and now > deadline:
                return fail(f"no traffic on {base}/metrics; see {log.name}")
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
    with (
        tempfile.NamedTemporaryFile(prefix="gatewayz-demo-", suffix=".log", delete=False) as log,
        notices_as_lines("demo"),  # a renamed variable: one line, "demo: warning: ..."
    ):
        try:
            code = run(args, children, stop, log)
        finally:
            stopped = children.stop()
    if stopped:
        print("demo stopped", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())

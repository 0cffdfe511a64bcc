"""Load and Redis-outage soak with real processes: ``python -m devtools.soak [options]``.

Starts its own redis-server and ``python -m aggregator``, then N spawned workers that call
``MetricsClient.record()`` flat out for D seconds while S threads scrape /metrics back to back.
Measures record() p50/p99 (every 64th call timed), client buffers and RSS, scrape latency, Redis
memory and window sizes, and checks that every event that reached Redis is counted exactly once,
in the totals hashes and in /metrics. ``--outage-at T --outage-for O`` SIGKILLs Redis at T and
restarts it EMPTY on the same port O seconds later. Prints the figures, writes JSON and exits 0
only when every check holds.

    python -m devtools.soak                                  # 8 workers, 60 s, 20 s window
    python -m devtools.soak --outage-at 20 --outage-for 15   # with a 15 s Redis outage
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import queue
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

import redis
from prometheus_client.parser import text_string_to_metric_families

from devtools.processes import stop_process
from devtools.redis_server import free_port, start_redis
from devtools.soak_load import (
    OUTAGE,
    PROVIDERS,
    RECOVERED,
    RUN,
    SNAPSHOT,
    Json,
    percentile,
    worker,
)
from devtools.soak_report import Checks, check_totals, print_run
from gatewayz_protocol.fields import COUNT_FIELDS, decode_client_stats
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.partitions import OUTCOMES


class RedisWatch:
    """Samples Redis once a second: window ZCARDs and oldest member, totals, used_memory; the
    sum of MEMORY USAGE over the namespace's keys at window-full, every 10 s and at the end."""

    def __init__(self, url: str, keys: Keys, t0: float, wall_start: float) -> None:
        self.url, self.keys, self.t0, self.wall_start = url, keys, t0, wall_start
        self.starts = [0.0]  # when the first and the restarted (empty) Redis started
        self.samples: list[Json] = []

    def run(self, stop: threading.Event, window: float, end: float) -> None:
        keys = [k for p in PROVIDERS for k in self.keys.window_keys(p)]
        conn = redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=1)
        usage_at = sorted({window, end - 1, *range(int(window) + 10, int(end) - 1, 10)})
        while not stop.wait(1.0 - (time.monotonic() - self.t0) % 1.0):
            t, before = time.monotonic() - self.t0, time.time()
            sample: Json = {"t": round(t, 2), "before": before}
            try:
                pipe = conn.pipeline(transaction=True)  # ZCARDs then totals, at one instant
                pipe.info("server")  # run_id: which redis-server process answered
                for key in keys:
                    pipe.zcard(key)
                    pipe.zrange(key, 0, 0, withscores=True)
                for provider in PROVIDERS:
                    pipe.hmget(self.keys.totals(provider), list(COUNT_FIELDS))
                info, *replies = pipe.execute()
                sample |= {"after": time.time(), "instance": info["run_id"]}
                sample["used_memory"] = int(conn.info("memory")["used_memory"])
                if usage_at and t >= usage_at[0]:
                    usage_at = [u for u in usage_at if u > t]
                    pipe = conn.pipeline(transaction=False)
                    for name in conn.scan_iter(match=self.keys.pattern(), count=1000):
                        pipe.memory_usage(name)
                    sample["key_bytes"] = sum(int(b or 0) for b in pipe.execute())
            except (redis.RedisError, OSError):
                self.samples.append(sample | {"error": True})
                continue
            n = 2 * len(keys)
            sample["zcard"] = sum(replies[0:n:2])
            sample["oldest"] = min((r[0][1] for r in replies[1:n:2] if r), default=None)
            sample["written"] = sum(int(v or 0) for r in replies[n:] for v in r)
            self.samples.append(sample)
        conn.close()

    def figures(self, window: float, end: float, max_lag: float, checks: Checks) -> Json:
        """Window bound at every sample: ZCARD <= events written since the time of the oldest
        member (exact: a member is written after its score), and that member at most ``window
        + max_lag`` old (trimmed once per tenth of the window). Memory figures are the last Redis
        instance's."""
        ok = [s for s in self.samples if "error" not in s]
        excess, lag = 0, 0.0
        for s in (s for s in ok if s["oldest"] is not None):
            lag = max(lag, s["before"] - window - s["oldest"])
            same = [b for b in ok if b["instance"] == s["instance"] and b["after"] <= s["oldest"]]
            excess = max(excess, s["zcard"] - s["written"] + (same[-1]["written"] if same else 0))
        checks.add("window ZCARD - written since its oldest member", "<= 0", excess, excess <= 0)
        fresh = [s for s in ok if s["before"] < self.wall_start + window]  # nothing trimmed yet
        if fresh:  # then every event written is exactly one member
            off = [(s["t"], s["zcard"], s["written"]) for s in fresh if s["zcard"] != s["written"]]
            name = f"before t=window (no trim yet): samples with ZCARD != written, of {len(fresh)}"
            checks.add(name, [], off[:3], not off)
        lag = round(lag, 2)
        checks.add("oldest member's age - window (s)", f"<= {max_lag}", lag, lag <= max_lag)
        start = self.starts[-1] + window
        newest = ok[-1]["instance"] if ok else None
        full = [s for s in ok if s["instance"] == newest and start <= s["t"] <= end + 0.5]
        fig: Json = {"redis_started_at": self.starts[-1], "max_trim_lag_s": round(lag, 2)}
        if not full:
            return fig
        at, last = full[0], full[-1]
        for name, s in (("at_window", at), ("end", last)):
            fig |= {f"{name}_{f}": s[f] for f in ("t", "used_memory", "zcard")}
        fig["max_used_memory_after_window"] = high = max(s["used_memory"] for s in full)
        fig["max_zcard_after_window"] = max(s["zcard"] for s in full)
        fig["end_over_window_memory"] = round(last["used_memory"] / at["used_memory"], 3)
        if last["t"] > at["t"]:
            rate = (last["written"] - at["written"]) / (last["t"] - at["t"])
            fig["redis_ingest_per_s_after_window"] = round(rate)
        for s in [s for s in full if s.get("key_bytes") and s["zcard"]][-1:]:
            fig |= {"key_bytes_t": s["t"], "key_bytes": s["key_bytes"], "key_zcard": s["zcard"]}
            fig["key_bytes_per_window_event"] = round(s["key_bytes"] / s["zcard"], 1)
        if last["t"] - at["t"] >= window / 2:  # unbounded growth would give ~ t / window
            ratio = round(high / at["used_memory"], 3)
            checks.add("max used_memory after window / at window", "<= 1.5", ratio, ratio <= 1.5)
        return fig


def _get(port: int, path: str, timeout: float = 10) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _exported(port: int) -> Json:
    """Per-provider request counters, client drops and the snapshot cycle, from /metrics."""
    found: Json = {"requests": {p: dict.fromkeys(OUTCOMES, 0) for p in PROVIDERS}}
    for family in text_string_to_metric_families(_get(port, "/metrics")[1].decode()):
        for s in family.samples:
            provider = s.labels.get("provider") if s.labels.get("provider") in PROVIDERS else None
            if s.name == "gatewayz_provider_requests_total" and provider:
                found["requests"][provider][s.labels["outcome"]] = int(s.value)
            elif s.name == "gatewayz_provider_window_requests" and provider:
                found["window"] = found.get("window", 0) + int(s.value)
            elif s.name == "gatewayz_client_events_dropped_total":
                found["dropped"] = found.get("dropped", 0) + int(s.value)
            elif s.name == "gatewayz_aggregator_snapshot_cycle":
                found["cycle"] = int(s.value)
    return found


class Soak:
    """One run: Redis, the aggregator, workers, scrapers and watchers; ``run()`` -> results."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.port, self.processes = args, free_port(), list[BaseProcess]()
        self.aggregator: subprocess.Popen[bytes] | None = None
        self.namespace = f"soak-{uuid.uuid4().hex[:8]}"
        self.servers = [start_redis()]
        self.stop, self.lock, self.t0 = threading.Event(), threading.Lock(), 0.0
        self.events: Json = {}
        self.readyz: list[Json] = []
        self.scrapes: Json = {"latencies": [], "status": Counter(), "errors": [], "parsed": 0}

    def run(self) -> Json:
        args, port, url = self.args, self.port, self.servers[0].url
        self.log = log = Path(tempfile.mkdtemp(prefix="gatewayz-soak-")) / "aggregator.log"
        command = f"-m aggregator --redis-url {url} --namespace {self.namespace} --port {port} "
        command += f"--window {args.window:g} --interval 1 --log-level WARNING"
        with open(log, "wb") as out_file:
            self.aggregator = subprocess.Popen(
                [sys.executable, *command.split()], stdout=out_file, stderr=subprocess.STDOUT
            )
        _wait(lambda: _get(port, "/healthz", 1)[0] == 200, 30, "the aggregator's /healthz")
        spawn = multiprocessing.get_context("spawn")
        phase, acks = spawn.Value("i", RUN), spawn.Value("i", 0)
        start, out = spawn.Barrier(args.workers + 1), spawn.Queue()
        conf = {"url": url, "namespace": self.namespace, "rate": args.rate}
        conf |= {"window": args.window, "duration": args.duration}
        shared = (phase, acks, start, out)
        processes = self.processes
        for _ in range(args.workers):
            processes.append(spawn.Process(target=worker, args=(conf, shared)))
        for process in processes:
            process.start()
        self.wall_start = time.time()  # no event is older: workers start at the barrier
        start.wait(timeout=120)
        self.t0 = time.monotonic()
        keys, stop_watch = Keys(self.namespace), threading.Event()
        watch = RedisWatch(url, keys, self.t0, self.wall_start)
        threads = [threading.Thread(target=self._scrape) for _ in range(args.scrapers)]
        threads.append(threading.Thread(target=self._watch_ready))
        watch_args = (stop_watch, args.window, args.duration)
        threads.append(threading.Thread(target=watch.run, args=watch_args))
        for thread in threads:
            thread.start()
        if args.outage_at is not None:
            self._outage(watch, phase, acks)
        workers: list[Json] = []
        deadline = time.monotonic() + args.duration + 180
        while len(workers) < len(processes):
            with contextlib.suppress(queue.Empty):
                workers.append(out.get(timeout=1.0))
            if time.monotonic() > deadline or any(p.exitcode for p in processes):
                raise RuntimeError(f"workers failed: {[p.exitcode for p in processes]}")
        scrape_seconds = time.monotonic() - self.t0
        self.stop.set()
        stop_watch.set()
        for thread in threads:
            thread.join()
        cycle = _exported(port)["cycle"]  # let a cycle run that started after every write
        _wait(lambda: _exported(port)["cycle"] >= cycle + 2, 30, "two more aggregator cycles")
        return self._results(workers, watch, scrape_seconds)

    def close(self) -> None:
        """Stop what this run started: workers, the aggregator, the Redis servers."""
        for process in self.processes:
            if process.is_alive():
                process.kill()
        if self.aggregator is not None:
            stop_process(self.aggregator, timeout=15)
            text = self.log.read_text(errors="replace")
            if "Traceback" in text:
                sys.stderr.write(f"aggregator log {self.log} (tail):\n{text[-3000:]}\n")
        for server in self.servers:
            server.stop()

    def _results(self, workers: list[Json], watch: RedisWatch, seconds: float) -> Json:
        keys, args, lat = Keys(self.namespace), self.args, self.scrapes.pop("latencies")
        run: Json = {"args": vars(args), "events": self.events, "workers": workers}
        git = ["git", "describe", "--always", "--dirty"]
        run["git"] = subprocess.run(git, capture_output=True, text=True).stdout.strip()
        with redis.Redis.from_url(self.servers[-1].url) as final:
            raw = {
                p: [n or 0 for n in final.hmget(keys.totals(p), COUNT_FIELDS)] for p in PROVIDERS
            }
            stats = {k.decode(): int(v) for k, v in final.hgetall(keys.client_stats).items()}
            run["redis_dropped"] = sum(decode_client_stats(stats)[1].values())
        totals = {p: dict(zip(OUTCOMES, map(int, v), strict=True)) for p, v in raw.items()}
        pct = {f"p{q}_ms": round((percentile(lat, q / 100) or 0) * 1e3, 2) for q in (50, 99)}
        self.scrapes |= pct | {"count": len(lat), "per_s": round(len(lat) / seconds, 1)}
        run["totals"] = {k: sum(w[k] for w in workers) for k in ("calls", "written", "dropped")}
        for k in ("seconds", "close_seconds"):
            run["totals"][k] = max(w[k] for w in workers)
        run["fresh"] = time.time() < self.wall_start + args.window  # no event left the window
        run |= {"redis_totals": totals, "exported": _exported(self.port), "scrapes": self.scrapes}
        run |= {"ready_end": _get(self.port, "/readyz")[0], "readyz": self.readyz}
        run["checks"] = checks = Checks()
        check_totals(run, checks)
        run["memory"] = watch.figures(args.window, args.duration, args.max_trim_lag, checks)
        run["redis_samples"] = watch.samples
        return run

    def _scrape(self) -> None:
        """GET /metrics back to back on one keep-alive connection; parse every Nth body."""
        conn: http.client.HTTPConnection | None = None
        latencies, status, errors, parsed = [], Counter[str](), [], 0
        while not self.stop.is_set():
            try:
                conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                t0 = time.perf_counter()
                conn.request("GET", "/metrics")
                response = conn.getresponse()
                body = response.read()
                latencies.append(time.perf_counter() - t0)
                status[str(response.status)] += 1
            except (OSError, http.client.HTTPException) as exc:
                status[f"error {type(exc).__name__}"] += 1
                if conn:
                    conn.close()
                conn = None
                continue
            if response.status == 200 and status.total() % self.args.parse_every == 0:
                try:
                    if not list(text_string_to_metric_families(body.decode())):
                        raise ValueError("no metric families")
                    parsed += 1
                except Exception as exc:
                    errors.append(repr(exc)[:200])
        with self.lock:
            self.scrapes["latencies"] += latencies
            self.scrapes["status"].update(status)
            self.scrapes["errors"] += errors
            self.scrapes["parsed"] += parsed

    def _watch_ready(self) -> None:
        last = None
        while not self.stop.wait(0.2):
            try:
                code, body = _get(self.port, "/readyz", timeout=5)
                reason = json.loads(body).get("reason", "")
            except (OSError, http.client.HTTPException, ValueError) as exc:
                code, reason = 0, type(exc).__name__
            if code != last:
                t = round(time.monotonic() - self.t0, 2)
                self.readyz.append({"t": t, "status": code, "reason": reason})
                last = code

    def _outage(self, watch: RedisWatch, phase: Synchronized[int], acks: Synchronized[int]) -> None:
        """SIGKILL Redis at T; after O s let every worker note what it wrote (nothing can be
        written while Redis is down), then start an empty Redis on the same port."""
        args, server = self.args, self.servers[0]
        time.sleep(max(0.0, self.t0 + args.outage_at - time.monotonic()))
        server.kill()
        self.events["killed_at"] = round(time.monotonic() - self.t0, 2)
        phase.value = OUTAGE
        time.sleep(max(0.0, self.t0 + args.outage_at + args.outage_for - time.monotonic()))
        phase.value = SNAPSHOT
        _wait(lambda: acks.value >= args.workers, 10, "workers to note what they wrote")
        self.events["snapshot_acks"] = acks.value
        self.servers.append(start_redis(port=server.port))
        self.events["restarted_at"] = round(time.monotonic() - self.t0, 2)
        watch.starts.append(self.events["restarted_at"])
        phase.value = RECOVERED


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, http.client.HTTPException, ValueError, KeyError):
            if condition():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="devtools.soak", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    add = parser.add_argument
    add("--workers", type=int, default=8, help="worker processes (8)")
    add("--duration", type=float, default=60.0, help="seconds of recording (60)")
    add("--window", type=float, default=20.0, help="window seconds, aggregator and clients (20)")
    add("--scrapers", type=int, default=4, help="concurrent /metrics scrapers (4)")
    add("--parse-every", type=int, default=10, help="parse every Nth scraped body (10)")
    paced = "calls/s per worker (0: flat out); paced, the timed call is the first after a pause"
    add("--rate", type=float, default=0.0, help=paced)
    add("--outage-at", type=float, default=None, help="SIGKILL Redis at T s (default: none)")
    add("--outage-for", type=float, default=15.0, help="restart it empty after O s (15)")
    add("--max-trim-lag", type=float, default=5.0, help="allowed window member age - window")
    add("--json", default="bench-results/soak.json", help="results (bench-results/soak.json)")
    args = parser.parse_args(argv)
    at, length = args.outage_at, args.outage_for
    if at is not None and not 0 < at < at + length < args.duration:
        parser.error("the outage must start and end inside the run: 0 < T < T + O < duration")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    soak = Soak(args)
    try:
        run = soak.run()
    finally:
        soak.close()
    print_run(run)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(run, indent=1, default=str) + "\n")
    print(f"wrote {args.json}")
    return 0 if all(c["ok"] for c in run["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())

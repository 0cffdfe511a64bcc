"""Gateway-level cost: the example gateway's Gunicorn setup (2 workers, ``gc.freeze()`` after the
fork) serving one trivial route (a 1 ms ``asyncio.sleep`` as the provider call) in three
variants (``bench/gateway_variants.py``): (A) no metrics, (B) prometheus_client multiprocess mode
with prometheus-fastapi-instrumentator and the provider metrics by hand, (C) this project's
middleware and ``gateway.inference()``.

All three run at once on loopback and are driven in turns, A B C A B C ..., each turn:
``wrk -t2 -c32 --latency`` (saturation: requests/s, p50, p99, and the workers' CPU per request);
a fixed 500 requests/s from an open-loop generator (``bench/openloop.py``: p50, p99 without
coordinated omission); a fixed 100 requests/s. Workers' CPU is read from ``/proc/<pid>/stat``
(every thread: the flusher's too); on a shared machine it is the steadier figure, as requests/s
depend on what else runs. Figures are medians over the turns, ratios the median of each turn's
ratio. Then B's ``/metrics`` is timed with 500 dead workers' files in its multiprocess
directory (one live worker's files copied under 500 pid names, as prometheus_client leaves them
behind), next to our aggregator's ``/metrics`` over the same traffic.

The machine is shared: each turn notes the 1-minute load average when it starts, and the run
starts with ``redis-benchmark``'s ZADD ceiling against the same Redis (a slow day of the machine
shows there first).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.bench_ingest import _redis_benchmark
from bench.bench_scrape import aggregator_process, scrape_load
from bench.common import Context, Figure, percentile
from bench.gateway_variants import ROUTE
from devtools.processes import stop_process
from devtools.redis_server import free_port

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"A": "none", "B": "prometheus", "C": "ours"}
NAMES = {"A": "A no metrics", "B": "B prometheus_client mp", "C": "C ours"}
WRK = ("-t2", "-c32", "--latency")
DEAD_WORKERS = 500
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Gateway:
    variant: str
    port: int
    process: subprocess.Popen[bytes]
    multiproc_dir: Path | None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{ROUTE}"

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]


@contextmanager
def gateway(
    variant: str, redis_url: str, namespace: str, workdir: Path, root: Path = ROOT
) -> Iterator[Gateway]:
    """Gunicorn with ``examples/gateway/gunicorn.conf.py`` serving one variant on 2 workers,
    from the checkout at ``root`` (another one: to compare two versions of the client)."""
    port = free_port()
    env = {**os.environ, "GATEWAYZ_REDIS_URL": redis_url, "GATEWAYZ_NAMESPACE": namespace,
           "GATEWAY_BIND": f"127.0.0.1:{port}", "GATEWAY_WORKERS": "2",
           "GATEWAY_VARIANT": VARIANTS[variant[0]]}  # fmt: skip
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    multiproc_dir = None
    if variant.startswith("B"):
        multiproc_dir = workdir / f"prometheus-multiproc-{variant}"
        multiproc_dir.mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc_dir)
    config = str(root / "examples/gateway/gunicorn.conf.py")
    command = [sys.executable, "-m", "gunicorn", "-c", config, "bench.gateway_variants:app"]
    log = (workdir / f"gunicorn-{variant}.log").open("wb")
    process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=log)
    served = Gateway(variant, port, process, multiproc_dir)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(served.url, timeout=1).close()
                if len(served.workers()) == 2:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn ({variant}) did not start: see {log.name}")
            time.sleep(0.1)
        yield served
    finally:
        stop_process(process, timeout=30)
        log.close()


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, seconds: float) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, requests) under saturation."""
    done = subprocess.run(["wrk", *WRK, f"-d{seconds:g}s", url],
                          capture_output=True, text=True, check=True)  # fmt: skip
    out = done.stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")

    def latency(quantile: str) -> float:
        found = re.search(rf"^\s+{quantile}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if found is None:
            raise RuntimeError(f"no {quantile}% in wrk's output:\n{out}")
        return float(found[1]) * _UNITS[found[2]]

    rate = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    count = re.search(r"^\s+(\d+) requests in", out, re.M)
    if rate is None or count is None:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{out}")
    return float(rate[1]), latency("50"), latency("99"), int(count[1])


def open_loop(port: int, rate: float, seconds: float) -> tuple[list[float], list[float]]:
    """(sorted latencies in ms, sorted send lags in ms) at a fixed ``rate``."""
    command = [sys.executable, "-m", "bench.openloop", str(port), ROUTE, str(rate), str(seconds)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    if result["error_count"]:
        raise RuntimeError(f"open-loop requests failed: {result['errors']}")
    return sorted(x * 1000 for x in result["latencies"]), [x * 1000 for x in result["lags"]]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the processes (all their threads) so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / TICKS


@dataclass
class Turns:
    """Per variant, one value per turn."""

    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    fixed_p50: list[float] = field(default_factory=list)
    fixed_p99: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    saturated_cpu_us: list[float] = field(default_factory=list)
    lag_p99: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    """the 1-minute load average when the turn started"""


@dataclass(frozen=True)
class Plan:
    rounds: int
    saturated_s: float
    fixed_s: float
    cpu_s: float
    fixed_rate: float = 500.0
    cpu_rate: float = 100.0


def one_turn(served: Gateway, plan: Plan, turns: Turns) -> None:
    turns.load.append(os.getloadavg()[0])
    pids = served.workers()
    before = cpu_seconds(pids)
    rps, p50, p99, count = wrk(served.url, plan.saturated_s)
    turns.saturated_cpu_us.append((cpu_seconds(pids) - before) / count * 1e6)
    turns.rps.append(rps)
    turns.p50.append(p50)
    turns.p99.append(p99)
    time.sleep(0.5)  # the saturated run's backlog (the flusher's batches) settles
    latencies, lags = open_loop(served.port, plan.fixed_rate, plan.fixed_s)
    turns.fixed_p50.append(percentile(latencies, 0.5))
    turns.fixed_p99.append(percentile(latencies, 0.99))
    turns.lag_p99.append(percentile(lags, 0.99))
    before = cpu_seconds(pids)
    latencies, _ = open_loop(served.port, plan.cpu_rate, plan.cpu_s)
    turns.cpu_us.append((cpu_seconds(pids) - before) / len(latencies) * 1e6)


def scrape_times(port: int, path: str, scrapes: int) -> tuple[float, int]:
    """(median ms of one scrape, body bytes), one scraper at a time."""
    timings = []
    size = 0
    for _ in range(scrapes):
        started = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as response:
            size = len(response.read())
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings), size


def add_dead_workers(directory: Path, live_pid: int, count: int) -> int:
    """Copy one live worker's files under ``count`` pid names no process has: what
    prometheus_client leaves behind for every worker that ever ran. Returns the files made."""
    made = 0
    own = [p for p in directory.glob(f"*_{live_pid}.db")]
    for index in range(count):
        for source in own:
            kind = source.name.rsplit("_", 1)[0]
            shutil.copyfile(source, directory / f"{kind}_{9_000_000 + index}.db")
            made += 1
    return made


def run(ctx: Context) -> list[Figure]:
    plan = (Plan(rounds=2, saturated_s=3, fixed_s=3, cpu_s=3) if ctx.quick
            else Plan(rounds=5, saturated_s=6, fixed_s=6, cpu_s=5))  # fmt: skip
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk)")
    namespace = ctx.namespace("gateway")
    ceiling, ceiling_note = _redis_benchmark(ctx, 3, 300_000 if ctx.quick else 1_000_000)
    print(f"  redis-benchmark ZADD ceiling: {ceiling:,.0f}/s ({ceiling_note})", flush=True)
    turns = {v: Turns() for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp, ExitStack() as stack:
        served = {v: stack.enter_context(gateway(v, ctx.redis_url, namespace, Path(tmp)))
                  for v in VARIANTS}  # fmt: skip
        for each in served.values():
            wrk(each.url, 1)  # warm-up: imports, caches, first connections to Redis
        for turn in range(plan.rounds):
            for variant, each in served.items():
                one_turn(each, plan, turns[variant])
                t = turns[variant]
                print(f"  turn {turn + 1} {NAMES[variant]:<24} {t.rps[-1]:8,.0f} req/s "
                      f"p50 {t.p50[-1]:6.2f} p99 {t.p99[-1]:6.2f} ms "
                      f"({t.saturated_cpu_us[-1]:,.0f} us CPU/req) | {plan.fixed_rate:g}/s "
                      f"p50 {t.fixed_p50[-1]:.2f} p99 {t.fixed_p99[-1]:.2f} ms | "
                      f"{plan.cpu_rate:g}/s {t.cpu_us[-1]:,.0f} us CPU/req | load {t.load[-1]:.1f}",
                      flush=True)  # fmt: skip
        scrapes = 5 if ctx.quick else 15
        b = served["B"]
        assert b.multiproc_dir is not None
        live_ms, _ = scrape_times(b.port, "/metrics", scrapes)
        files = add_dead_workers(b.multiproc_dir, b.workers()[0], DEAD_WORKERS)
        dead_ms, dead_size = scrape_times(b.port, "/metrics", scrapes)
    with aggregator_process(ctx.redis_url, namespace, "--interval", "1") as port:
        scrape_load(port, 1, 3)  # warm-up
        ours = scrape_load(port, 1, scrapes)
    ours_ms = statistics.median(ours) * 1000
    machine = Figure("gateway", "machine: redis-benchmark ZADD ceiling", ceiling, "requests/s",
                     peer="redis-benchmark", note=ceiling_note)  # fmt: skip
    return [machine, *_figures(plan, turns, (live_ms, dead_ms, dead_size, files, ours_ms))]


def _figures(plan: Plan, turns: dict[str, Turns],
             scraped: tuple[float, float, int, int, float]) -> list[Figure]:  # fmt: skip
    med = statistics.median
    a, b, c = turns["A"], turns["B"], turns["C"]
    loads = a.load + b.load + c.load
    how = (f"{plan.rounds} interleaved turns; 1-min load {min(loads):.1f}..{max(loads):.1f} "
           f"(median {med(loads):.1f}) on {os.cpu_count()} cores")  # fmt: skip
    sat = f"wrk {' '.join(WRK)} -d{plan.saturated_s:g}s; 2 workers; {how}"
    fixed = (f"open loop, {plan.fixed_rate:g} req/s for {plan.fixed_s:g} s; {how}; generator lag "
             f"p99 {med(a.lag_p99 + b.lag_p99 + c.lag_p99):.2f} ms")  # fmt: skip
    figures = []
    for variant, t in turns.items():
        peer = "" if variant == "C" else ("no metrics" if variant == "A" else "prometheus_client")
        name = NAMES[variant]
        figures += [
            Figure("gateway", f"{name}: requests/s, saturated", med(t.rps), "req/s", peer=peer,
                   note=sat),
            Figure("gateway", f"{name}: p50, saturated", med(t.p50), "ms", peer=peer, note=sat),
            Figure("gateway", f"{name}: p99, saturated", med(t.p99), "ms", peer=peer, note=sat),
            Figure("gateway", f"{name}: worker CPU per request, saturated", med(t.saturated_cpu_us),
                   "us", peer=peer, note=f"utime+stime of both workers (all threads), /proc; "
                   f"{sat}; Redis's and wrk's CPU not included"),
            Figure("gateway", f"{name}: p50 at {plan.fixed_rate:g} req/s", med(t.fixed_p50), "ms",
                   peer=peer, note=fixed),
            Figure("gateway", f"{name}: p99 at {plan.fixed_rate:g} req/s", med(t.fixed_p99), "ms",
                   peer=peer, note=fixed),
            Figure("gateway", f"{name}: worker CPU per request at {plan.cpu_rate:g} req/s",
                   med(t.cpu_us), "us", peer=peer,
                   note=f"utime+stime of both workers (all threads), /proc; {how}"),
        ]  # fmt: skip
    c_over_a = med(x / y for x, y in zip(c.rps, a.rps, strict=True))
    c_over_b = med(x / y for x, y in zip(c.rps, b.rps, strict=True))
    p99_ratio = med(x / y for x, y in zip(c.p99, a.p99, strict=True))
    b_p99_ratio = med(x / y for x, y in zip(b.p99, a.p99, strict=True))
    fixed_gap = med(x - y for x, y in zip(c.fixed_p99, a.fixed_p99, strict=True))
    a_noise = max(a.fixed_p99) - min(a.fixed_p99)  # A against itself, turn to turn
    cpu_ratio = med(x / y for x, y in zip(c.cpu_us, b.cpu_us, strict=True))
    figures += [
        Figure("gateway", "C/A requests/s, saturated", c_over_a, "x", target=">= 0.90",
               met=c_over_a >= 0.90, note=f"median of per-turn ratios; {sat}"),
        Figure("gateway", "C/B requests/s, saturated", c_over_b, "x", target=">= 1.3",
               met=c_over_b >= 1.3, note=f"median of per-turn ratios; {sat}"),
        Figure("gateway", "B/A p99, saturated", b_p99_ratio, "x", peer="prometheus_client",
               note=f"median of per-turn ratios; {sat}"),
        Figure("gateway", "C/A p99, saturated", p99_ratio, "x", target="<= B/A",
               met=p99_ratio <= b_p99_ratio, note=f"median of per-turn ratios; {sat}"),
        Figure("gateway", f"C - A p99 at {plan.fixed_rate:g} req/s", fixed_gap, "ms",
               target=f"<= A's own spread ({a_noise:.2f} ms)", met=fixed_gap <= a_noise,
               note=f"median of per-turn gaps; A's spread: max - min of its turns; {fixed}"),
        Figure("gateway", f"C/B worker CPU per request at {plan.cpu_rate:g} req/s", cpu_ratio, "x",
               target="<= 0.8", met=cpu_ratio <= 0.8, note=f"median of per-turn ratios; {how}"),
    ]  # fmt: skip
    live_ms, dead_ms, dead_size, files, ours_ms = scraped
    figures += [
        Figure("gateway", "B /metrics, live workers' files only", live_ms, "ms",
               peer="prometheus_client", note="served by a gateway worker; median, one scraper"),
        Figure("gateway", f"B /metrics with {DEAD_WORKERS} dead workers' files", dead_ms, "ms",
               peer="prometheus_client",
               note=f"{files} files; {dead_size / 1024:.0f} KiB; median, one scraper; the "
               "worker's event loop waits meanwhile"),
        Figure("gateway", "our aggregator's /metrics, same traffic (C)", ours_ms, "ms",
               note="python -m aggregator --interval 1; median, one scraper"),
    ]  # fmt: skip
    return figures

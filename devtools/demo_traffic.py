"""HTTP load for ``make demo``: chat completions, chat look-ups and a few 404s against the gateway.

``python -m devtools.demo_traffic --url http://127.0.0.1:8080 [--rate 60] [--duration S]
[--mix openrouter:0.6,anthropic:0.2,flakyai:0.2]``

Standard library only. The main thread paces requests to ``--rate`` per second and hands them to
``--concurrency`` daemon threads (urllib.request, no proxy); when every thread is busy a request
is skipped and counted, never queued up. The mix: 85% ``POST /v1/chat/completions`` (60%
openrouter, 20% anthropic, 20% flakyai, or the ``--mix`` given: provider:share,...; two models
each; random token counts), 12%
``GET /v1/chat/{id}`` (ids ending in 0 are cache hits) and 3% unknown paths (404). Error answers
(503 breaker open, 502 upstream failure, 429 upstream rate limit) and connection errors are
counted, never fatal.
SIGTERM, SIGINT or ``--duration`` stops the sending; requests in flight get ``--grace`` seconds,
then one summary line (requests by status) goes to stderr and it exits 0.

``excerpt()`` reads what the traffic did back from the aggregator's /metrics (``make demo`` prints
it): a provider health table and the backend metrics, summed over the labels it does not show.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import random
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import FrameType

COMPLETIONS = "/v1/chat/completions"
MIX: tuple[tuple[str, float, tuple[str, str]], ...] = (
    ("openrouter", 0.6, ("openai/gpt-4o-mini", "meta-llama/llama-3.1-70b")),
    ("anthropic", 0.2, ("claude-3-5-sonnet", "claude-3-5-haiku")),
    ("flakyai", 0.2, ("flaky-large", "flaky-small")),
)
"""(provider, share of the chat completions, its two model names)."""
Mix = tuple[tuple[str, float, tuple[str, str]], ...]
KINDS = (("completion", 0.85), ("lookup", 0.12), ("unknown", 0.03))
SKIPPED = "skipped (all threads busy)"
# Reading /metrics back
SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
HEALTH = (  # excerpt table: (column, metric, format)
    ("health", "gatewayz_provider_health_score", "{:8.3f}"),
    ("avail", "provider_availability", "{:8.3f}"),
    ("errors", "provider_error_rate", "{:8.3f}"),
    ("p95_s", "gatewayz_provider_latency_p95_seconds", "{:8.2f}"),
    ("window", "gatewayz_provider_window_requests", "{:8.0f}"),
)
BACKEND = (  # excerpt lines: (metric, labels of a line, label whose values it lists)
    ("fastapi_requests_total", ("method", "path"), "status_code"),
    ("model_inference_requests_total", ("provider",), "status"),
    ("tokens_used_total", ("provider",), "token_type"),
)


@dataclass(frozen=True)
class Job:
    method: str
    path: str
    body: dict[str, object] | None = None


def parse_mix(spec: str) -> Mix:
    """``provider:share,...`` -> a mix; a provider of MIX keeps its model names, another one
    gets ``<provider>-large`` and ``<provider>-small``. ValueError when malformed."""
    models = {provider: names for provider, _, names in MIX}
    mix = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        provider, sep, share = item.partition(":")
        weight = float(share) if sep else float("nan")
        if not provider or not weight > 0 or weight == float("inf"):
            raise ValueError(f"--mix item {item!r}: provider:share with a positive share")
        mix.append(
            (provider, weight, models.get(provider, (f"{provider}-large", f"{provider}-small")))
        )
    if not mix:
        raise ValueError("--mix names no provider")
    return tuple(mix)


def next_job(rng: random.Random, mix: Mix = MIX) -> Job:
    kind = rng.choices([k for k, _ in KINDS], [w for _, w in KINDS])[0]
    if kind == "lookup":
        return Job("GET", f"/v1/chat/{rng.randrange(1000)}")
    if kind == "unknown":
        return Job("GET", rng.choice(("/v1/models/none", "/favicon.ico", "/v2/chat")))
    provider, _, models = rng.choices(mix, [share for _, share, _ in mix])[0]
    body: dict[str, object] = {
        "provider": provider,
        "model": rng.choice(models),
        "input_tokens": rng.randint(20, 2000),
        "output_tokens": rng.randint(10, 800),
    }
    return Job("POST", COMPLETIONS, body)


class Load:
    """The sending threads and what they got back, by status (or error type)."""

    def __init__(self, base_url: str, threads: int, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.jobs: queue.Queue[Job] = queue.Queue(maxsize=threads)
        self.results: Counter[str] = Counter()
        self.busy = 0
        self.lock = threading.Condition()
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for i in range(threads):
            threading.Thread(target=self._work, name=f"traffic-{i}", daemon=True).start()

    def offer(self, job: Job) -> None:
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            self.count(SKIPPED)

    def count(self, key: str) -> None:
        with self.lock:
            self.results[key] += 1

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            with self.lock:
                self.busy += 1
            key = "error (unexpected)"
            try:
                key = self.send(job)
            finally:
                with self.lock:
                    self.busy -= 1
                    self.results[key] += 1
                    self.lock.notify_all()

    def send(self, job: Job) -> str:
        data = None if job.body is None else json.dumps(job.body).encode()
        request = urllib.request.Request(
            self.base_url + job.path,
            data=data,
            method=job.method,
            headers={"content-type": "application/json"},
        )
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                response.read()
                return str(response.status)
        except urllib.error.HTTPError as exc:  # 4xx/5xx: an answer, not a failure to send
            exc.read()
            exc.close()
            return str(exc.code)
        except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, reset, timeout
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            return f"error {type(reason).__name__}"

    def drain(self, grace: float) -> int:
        """Drop the requests not yet sent, wait up to ``grace`` s for those in flight; how many
        are still in flight."""
        while True:
            try:
                self.jobs.get_nowait()
            except queue.Empty:
                break
        deadline = time.monotonic() + grace
        with self.lock:
            while self.busy and (left := deadline - time.monotonic()) > 0:
                self.lock.wait(left)
            return self.busy


def pace(
    load: Load, rate: float, stop: threading.Event, end: float, seed: int | None, mix: Mix = MIX
) -> int:
    """Offer requests at ``rate`` per second (jittered) until ``stop`` or ``end``; how many."""
    rng = random.Random(seed)
    parent = os.getppid()
    offered = 0
    next_at = time.monotonic()
    while not stop.is_set() and time.monotonic() < end and os.getppid() == parent:
        load.offer(next_job(rng, mix))
        offered += 1
        next_at += rng.uniform(0.5, 1.5) / rate
        delay = next_at - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        elif delay < -1.0:
            next_at = time.monotonic()  # fell behind (suspended?): do not burst
    return offered


def summary(results: Counter[str], elapsed: float, in_flight: int) -> str:
    total = sum(n for key, n in results.items() if key != SKIPPED)
    parts = [f"{key}={n}" for key, n in sorted(results.items())]
    if in_flight:
        parts.append(f"abandoned in flight={in_flight}")
    rate = total / elapsed if elapsed > 0 else 0.0
    return f"demo traffic: {total} requests in {elapsed:.0f}s ({rate:.1f}/s): " + (
        ", ".join(parts) or "none"
    )


def samples(metrics_text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    for match in filter(None, map(SAMPLE.match, metrics_text.splitlines())):
        try:
            value = float(match[3])
        except ValueError:
            continue
        yield match[1], dict(LABEL.findall(match[2] or "")), value


def excerpt(metrics_text: str, providers: Sequence[str]) -> list[str]:
    """A provider health table and the backend metrics summed over the labels not shown."""
    rows = list(samples(metrics_text))
    health: dict[tuple[str, str], float] = {}
    for name, labels, value in rows:
        if name == "gatewayz_circuit_breaker_state" and value == 1:
            health[labels.get("provider", ""), labels.get("state", "?")] = 1.0
        else:
            health[labels.get("provider", ""), name] = value
    lines = [f"{'provider':<14}" + "".join(f"{c:>8}" for c, _, _ in HEALTH) + "  breaker"]
    for p in providers:
        cells = (
            fmt.format(health[p, m]) if (p, m) in health else f"{'-':>8}" for _, m, fmt in HEALTH
        )
        state = next((s for s in ("open", "half_open", "closed") if (p, s) in health), "-")
        lines.append(f"{p:<14}" + "".join(cells) + f"  {state}")
    for metric, keys, split in BACKEND:
        sums: defaultdict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
        for name, labels, value in rows:
            if name == metric:
                sums[" ".join(labels.get(k, "") for k in keys)][labels.get(split, "")] += value
        for group, counts in sorted(sums.items()):
            values = " ".join(f"{k}={v:.0f}" for k, v in sorted(counts.items()))
            lines.append(f"{metric:<31} {group:<26} {values}")
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="devtools.demo_traffic", description=__doc__)
    add = parser.add_argument
    add("--url", default="http://127.0.0.1:8080", help="gateway base URL")
    add("--rate", type=float, default=60.0, help="requests per second (default 60)")
    add("--duration", type=float, default=None, help="stop after SECONDS (default: signal)")
    add("--concurrency", type=int, default=128, help="sending threads (default 128)")
    add("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    add("--grace", type=float, default=6.0, help="seconds for requests in flight at exit")
    add("--seed", type=int, default=None, help="random seed")
    add(
        "--mix",
        default=None,
        help="provider:share,... of the completions (default: openrouter:0.6,"
        "anthropic:0.2,flakyai:0.2)",
    )
    args = parser.parse_args(argv)
    try:
        args.mix = MIX if args.mix is None else parse_mix(args.mix)
    except ValueError as exc:
        parser.error(str(exc))
    if not (args.rate > 0 and args.concurrency > 0 and args.timeout > 0 and args.grace >= 0):
        parser.error("--rate, --concurrency and --timeout must be positive, --grace >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    load = Load(args.url, args.concurrency, args.timeout)
    started = time.monotonic()
    end = float("inf") if args.duration is None else started + args.duration
    pace(load, args.rate, stop, end, args.seed, args.mix)
    elapsed = time.monotonic() - started
    in_flight = load.drain(args.grace)
    with load.lock:
        line = summary(load.results, elapsed, in_flight)
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

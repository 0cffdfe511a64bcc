"""One simulated gateway worker for ``make demo``: records fake provider calls with MetricsClient.

``python -m devtools.demo_worker --redis-url URL --namespace NS --seed I [--rate CALLS_PER_S]``

Nothing is called for real and nothing sleeps for the simulated latency: each call's outcome,
latency, tokens and cost are drawn from a per-provider profile and passed to ``record()``, paced
by a short sleep between calls. Like a real worker it asks ``allow()`` first and skips a provider
whose circuit breaker is open. Exits cleanly (flushes and closes the client) on SIGTERM/SIGINT,
after ``--duration`` seconds, or when its parent dies.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

from client.metrics_client import MetricsClient
from client.settings import ClientSettings


@dataclass(frozen=True)
class Call:
    """One simulated provider call: what ``MetricsClient.record()`` gets."""

    latency_s: float
    status_code: int | None = None
    outcome: str | None = None
    tokens: int = 0
    cost_usd: float = 0.0


def _tokens_and_cost(rng: random.Random, usd_per_1k_tokens: float) -> tuple[int, float]:
    tokens = max(1, int(rng.lognormvariate(6.8, 0.6)))  # median ~900 tokens
    return tokens, tokens / 1000 * usd_per_1k_tokens


def openrouter(rng: random.Random) -> Call:
    """Healthy: latency lognormal around 0.3-0.8 s, 99% 200, some 429, a few 400."""
    latency = rng.lognormvariate(-0.7, 0.3)  # median ~0.5 s
    roll = rng.random()
    if roll < 0.007:
        return Call(latency * 0.2, status_code=429)
    if roll < 0.01:
        return Call(latency * 0.1, status_code=400)
    tokens, cost = _tokens_and_cost(rng, 0.002)
    return Call(latency, status_code=200, tokens=tokens, cost_usd=cost)


def anthropic(rng: random.Random) -> Call:
    """Slow but working: latencies 3-9 s, mostly 200, now and then a 429 or a 529."""
    latency = min(9.0, max(3.0, rng.gauss(6.0, 1.6)))
    roll = rng.random()
    if roll < 0.01:
        return Call(latency * 0.1, status_code=429)
    if roll < 0.015:
        return Call(latency, status_code=529)
    tokens, cost = _tokens_and_cost(rng, 0.015)
    return Call(latency, status_code=200, tokens=tokens, cost_usd=cost)


def flakyai(rng: random.Random) -> Call:
    """Failing: ~40% 503, ~25% client-side timeouts (15 s), the rest fine."""
    roll = rng.random()
    if roll < 0.40:
        return Call(rng.uniform(0.05, 0.3), status_code=503)
    if roll < 0.65:
        return Call(15.0, outcome="failure")  # timeout: no status code
    tokens, cost = _tokens_and_cost(rng, 0.001)
    return Call(rng.lognormvariate(0.0, 0.4), status_code=200, tokens=tokens, cost_usd=cost)


PROFILES: tuple[tuple[str, float, Callable[[random.Random], Call]], ...] = (
    ("openrouter", 0.6, openrouter),
    ("anthropic", 0.2, anthropic),
    ("flakyai", 0.2, flakyai),
)
"""(provider, share of the traffic, call generator)."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="devtools.demo_worker", description=__doc__)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--seed", type=int, default=0, help="random seed (and worker number)")
    parser.add_argument("--rate", type=float, default=40.0, help="calls per second (~)")
    parser.add_argument("--window", type=float, default=300.0, help="aggregator window seconds")
    parser.add_argument("--duration", type=float, default=None, help="stop after SECONDS")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, stop: threading.Event) -> Counter[str]:
    """Send calls until ``stop`` is set; returns calls recorded per provider (and skipped)."""
    rng = random.Random(args.seed)
    settings = ClientSettings(
        redis_url=args.redis_url, namespace=args.namespace, window_seconds=args.window
    )
    metrics = MetricsClient(settings=settings)
    names = [name for name, _, _ in PROFILES]
    weights = [share for _, share, _ in PROFILES]
    generators = {name: generate for name, _, generate in PROFILES}
    interval = 1.0 / args.rate
    parent = os.getppid()
    started = next_call = time.monotonic()
    sent: Counter[str] = Counter()
    try:
        while not stop.is_set():
            if args.duration is not None and time.monotonic() - started >= args.duration:
                break
            if os.getppid() != parent:  # the demo died without stopping us
                break
            provider = rng.choices(names, weights)[0]
            if metrics.allow(provider):
                call = generators[provider](rng)
                metrics.record(
                    provider,
                    call.latency_s,
                    status_code=call.status_code,
                    outcome=call.outcome,
                    tokens=call.tokens,
                    cost_usd=call.cost_usd,
                )
                sent[provider] += 1
            else:
                sent[f"{provider} skipped (breaker)"] += 1
            next_call += interval * rng.uniform(0.5, 1.5)
            delay = next_call - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            elif delay < -1.0:
                next_call = time.monotonic()  # fell behind (suspended?): do not burst
    finally:
        metrics.close(timeout=5.0)
    return sent


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.rate > 0:
        sys.stderr.write("demo_worker: --rate must be > 0\n")
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sent = run(args, stop)
    summary = ", ".join(f"{name} {count}" for name, count in sorted(sent.items()))
    sys.stderr.write(f"demo worker {args.seed}: recorded {summary or 'nothing'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

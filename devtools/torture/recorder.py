"""What the run records while the nemesis works: the lease and every breaker hash, sampled every
50 ms (``Sampler``), and both replicas' ``/metrics`` counters, scraped every 0.4 s (``Scraper``:
only values that changed are kept, which is all the monotonic check needs).

Each sample carries the real times just before and after its read, so the checker can bound when
a change it first sees happened: after the previous sample's read began, before this one's ended.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from devtools.torture.deployment import AggregatorProcess, http_get, text
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import connect

BREAKER_FIELDS = ("state", "epoch", "fence", "forced", "since")
SERVED_GAUGES = ("gatewayz_aggregator_snapshot_cycle",)
"""Gauges that must not go backwards either (docs "Two replicas": numbers continue)."""
PROVIDER_SERIES = ("provider_", "gatewayz_provider_", "gatewayz_circuit_breaker_", "gatewayz_cost")
"""Series every replica serves from the snapshot: equal on both for the same cycle."""


def provider_series(counters: dict[str, float], gauges: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in sorted((counters | gauges).items()) if k.startswith(PROVIDER_SERIES)}


def provider_digest(served: dict[str, float]) -> str:
    return hashlib.sha1(json.dumps(sorted(served.items())).encode()).hexdigest()[:16]


def series_name(name: str, labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}" if inner else name


def parse_metrics(text: str) -> tuple[dict[str, float], dict[str, float]]:
    """(counters: every sample of a counter or histogram family, gauges) by series name."""
    counters: dict[str, float] = {}
    gauges: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            name = series_name(sample.name, dict(sample.labels))
            if family.type in ("counter", "histogram"):
                counters[name] = float(sample.value)
            else:
                gauges[name] = float(sample.value)
    return counters, gauges


class Sampler:
    """The lease (value, PTTL), the token counter and each provider's breaker hash."""

    def __init__(self, url: str, keys: Keys, providers: Callable[[], list[str]]) -> None:
        self.url, self.keys, self.providers = url, keys, providers
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True, name="sampler")

    def run(self) -> None:
        connection = connect(self.url, 1.0)
        keys = self.keys
        while not self.stop.wait(0.05):
            names = self.providers()
            t0 = time.time()
            try:
                lease = connection.get(keys.leader_lease)
                pttl = connection.pttl(keys.leader_lease)
                token = connection.get(keys.leader_token)
                breakers = {}
                for name in names:
                    raw = connection.hmget(keys.breaker(name), list(BREAKER_FIELDS))
                    fields = dict(zip(BREAKER_FIELDS, raw, strict=True))
                    breakers[name] = {k: text(v) for k, v in fields.items() if v is not None}
            except Exception as exc:
                self.samples.append({"t0": t0, "t1": time.time(), "error": type(exc).__name__})
                continue
            self.samples.append(
                {
                    "t0": t0,
                    "t1": time.time(),
                    "lease": text(lease) if lease else None,
                    "pttl": pttl,
                    "token": int(token) if token else 0,
                    "breakers": breakers,
                }
            )
        connection.close()


class Scraper:
    """Both replicas' counters: per replica, each scrape's changed values."""

    def __init__(self, aggregators: list[AggregatorProcess], incarnation: Callable[[], int]):
        self.aggregators, self.incarnation = aggregators, incarnation
        self.scrapes: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True, name="scraper")
        self._last: dict[str, dict[str, float]] = {}
        self._digests: dict[str, str] = {}

    def run(self) -> None:
        while not self.stop.wait(0.4):
            for agg in self.aggregators:
                self.scrape(agg)

    def scrape(self, agg: AggregatorProcess) -> None:
        if not agg.alive():
            return
        t0 = time.time()
        try:
            status, body = http_get(agg.port, "/metrics", 2.0)
            if status != 200:
                return
            counters, gauges = parse_metrics(body)
        except Exception:
            return
        if series_name("gatewayz_aggregator_leader", {"replica": agg.name}) not in gauges:
            return  # another process on its port (one that took it while it was down)
        values = counters | {k: v for k, v in gauges.items() if k in SERVED_GAUGES}
        served = provider_series(counters, gauges)
        digest = provider_digest(served)
        new_digest = digest != self._digests.get(agg.name)
        self._digests[agg.name] = digest
        last = self._last.setdefault(agg.name, {})
        changed = {k: v for k, v in values.items() if last.get(k) != v}
        last.update(values)
        self.scrapes.append(
            {
                "replica": agg.name,
                "generation": agg.generation,
                "code": agg.code,
                "incarnation": self.incarnation(),
                "t0": t0,
                "t1": time.time(),
                "values": changed,
                "cycle": gauges.get("gatewayz_aggregator_snapshot_cycle"),
                "digest": digest,
                **({"served": served} if new_digest else {}),  # to show what differs
            }
        )

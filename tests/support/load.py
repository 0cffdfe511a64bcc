"""Traffic for fault tests: a worker thread recording flat out, and what reached Redis."""

from __future__ import annotations

import threading
import time
from collections import Counter

from client import MetricsClient
from gatewayz_protocol.keys import Keys
from tests.support.backends import open_redis


class Load:
    """A worker thread recording calls round robin over ``providers`` until stopped, about
    ``per_second`` of them a second (not a busy loop)."""

    def __init__(
        self, metrics: MetricsClient, providers: list[str], per_second: int = 30_000
    ) -> None:
        self.metrics = metrics
        self._pause = 200 / per_second
        self.providers = providers
        self.recorded: Counter[str] = Counter()
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            provider = self.providers[i % len(self.providers)]
            try:
                self.metrics.record(provider, 0.1, status_code=200 if i % 4 else 503)
            except BaseException as exc:  # the contract: never
                self.errors.append(exc)
            self.recorded[provider] += 1
            i += 1
            if i % 200 == 0:
                time.sleep(self._pause)

    def stop(self) -> Counter[str]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.recorded


def counted(url: str, namespace: str, provider: str) -> tuple[int, int]:
    """(events in the window, calls in the cumulative totals) of one provider."""
    r = open_redis(url)
    keys = Keys(namespace)
    try:
        window = sum(int(r.zcard(key)) for key in keys.window_keys(provider))
        totals = r.hgetall(keys.totals(provider))
        return window, sum(int(v) for k, v in totals.items() if k.startswith(b"n:"))
    finally:
        r.close()

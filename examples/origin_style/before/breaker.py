"""A home-grown circuit breaker BEFORE the migration (the origin's ``circuit_breaker.py`` in
shape): one per provider and per process, so each worker opens, half-opens and resets on its
own slice of traffic. Deleted by the migration: the aggregator keeps one breaker per provider
for every worker and host."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class CircuitBreakerError(Exception):
    def __init__(self, provider: str, state: str) -> None:
        super().__init__(f"circuit breaker for {provider} is {state}")
        self.provider, self.state = provider, state


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures; half-open after
    ``timeout_seconds``; closed again after ``success_threshold`` successes in a row."""

    def __init__(self, provider: str, failure_threshold: int = 5, timeout_seconds: float = 60.0):
        self.provider = provider
        self.failure_threshold, self.timeout_seconds = failure_threshold, timeout_seconds
        self.success_threshold = 2
        self.state, self.failures, self.successes, self.opened_at = "closed", 0, 0, 0.0
        self._lock = threading.Lock()

    def is_available(self) -> bool:
        with self._lock:
            if self.state == "open" and time.monotonic() - self.opened_at >= self.timeout_seconds:
                self.state, self.successes = "half_open", 0
            return self.state != "open"

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if not self.is_available():
            raise CircuitBreakerError(self.provider, self.state)
        try:
            result = fn(*args, **kwargs)
        except Exception:
            with self._lock:
                self.failures, self.successes = self.failures + 1, 0
                if self.state == "half_open" or self.failures >= self.failure_threshold:
                    self.state, self.opened_at = "open", time.monotonic()
            raise
        with self._lock:
            self.failures, self.successes = 0, self.successes + 1
            if self.state == "half_open" and self.successes >= self.success_threshold:
                self.state = "closed"
        return result

    def get_state(self) -> dict[str, Any]:
        with self._lock:
            waited = time.monotonic() - self.opened_at
            left = max(0.0, self.timeout_seconds - waited) if self.state == "open" else 0.0
            return {"state": self.state, "failures": self.failures, "seconds_until_retry": left}

    def reset(self) -> None:
        with self._lock:
            self.state, self.failures, self.successes = "closed", 0, 0


_breakers: dict[str, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def get_circuit_breaker(provider: str) -> CircuitBreaker:
    with _breakers_lock:
        return _breakers.setdefault(provider, CircuitBreaker(provider))

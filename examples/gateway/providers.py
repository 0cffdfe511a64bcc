"""Fake upstream providers, in-process: configurable latency, failure rate and failure status.

``FAKE_PROVIDERS="openrouter:0.05:0.0,slowai:3:0.0,flakyai:0.02:0.6,busyai:0.1:0.3:429"``
(name:latency s:failure rate[:failure status]). The failure status defaults to 503 (a provider
failure); 429 makes a rate-limited provider, whose failures the metrics count as
``rate_limited``, not in the error rate. A request may force the outcome (``status``) and
latency (``latency_s``) so tests know every total exactly.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

DEFAULT_PROVIDERS = "openrouter:0.05:0.0,anthropic:0.4:0.02,flakyai:0.03:0.6"


@dataclass(frozen=True)
class FakeProvider:
    name: str
    latency_s: float
    failure_rate: float
    failure_status: int = 503


class UpstreamError(Exception):
    """What a provider SDK raises on an error response: carries the status code."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"upstream answered {status_code}")
        self.status_code = status_code


def parse_providers(spec: str) -> dict[str, FakeProvider]:
    """``name:latency:failure_rate[:failure_status]`` items, comma-separated; ValueError on a
    malformed item or a failure status outside 400..599."""
    providers = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        fields = item.split(":")
        if len(fields) not in (3, 4):
            raise ValueError(f"FAKE_PROVIDERS item {item!r}: name:latency:failure_rate[:status]")
        name, latency, failure = fields[:3]
        status = int(fields[3]) if len(fields) == 4 else 503
        if not 400 <= status <= 599:
            raise ValueError(f"FAKE_PROVIDERS item {item!r}: failure status must be 400..599")
        providers[name] = FakeProvider(name, float(latency), float(failure), status)
    return providers


def load(env: Mapping[str, str]) -> dict[str, FakeProvider]:
    return parse_providers(env.get("FAKE_PROVIDERS") or DEFAULT_PROVIDERS)


async def complete(
    provider: FakeProvider, status: int | None, latency_s: float | None, chunks: int
) -> AsyncIterator[str]:
    """Stream ``chunks`` pieces of a completion, or raise UpstreamError."""
    wait = provider.latency_s if latency_s is None else latency_s
    if status is None:
        status = provider.failure_status if random.random() < provider.failure_rate else 200
    await asyncio.sleep(wait / 2)  # time to first byte
    if status >= 400:
        raise UpstreamError(status)
    for index in range(chunks):
        await asyncio.sleep(wait / 2 / chunks)
        yield f"chunk {index} from {provider.name} "

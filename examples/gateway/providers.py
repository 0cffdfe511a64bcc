"""Fake upstream providers, in-process: configurable latency and failure rate.

``FAKE_PROVIDERS="openrouter:0.05:0.0,slowai:3:0.0,flakyai:0.02:0.6"`` (name:latency s:failure
rate). A request may force the outcome (``status``) and latency (``latency_s``) so tests know
every total exactly.
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


class UpstreamError(Exception):
    """What a provider SDK raises on an error response: carries the status code."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"upstream answered {status_code}")
        self.status_code = status_code


def parse_providers(spec: str) -> dict[str, FakeProvider]:
    providers = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, latency, failure = item.split(":")
        providers[name] = FakeProvider(name, float(latency), float(failure))
    return providers


def load(env: Mapping[str, str]) -> dict[str, FakeProvider]:
    return parse_providers(env.get("FAKE_PROVIDERS") or DEFAULT_PROVIDERS)


async def complete(
    provider: FakeProvider, status: int | None, latency_s: float | None, chunks: int
) -> AsyncIterator[str]:
    """Stream ``chunks`` pieces of a completion, or raise UpstreamError."""
    wait = provider.latency_s if latency_s is None else latency_s
    if status is None:
        status = 503 if random.random() < provider.failure_rate else 200
    await asyncio.sleep(wait / 2)  # time to first byte
    if status >= 400:
        raise UpstreamError(status)
    for index in range(chunks):
        await asyncio.sleep(wait / 2 / chunks)
        yield f"chunk {index} from {provider.name} "

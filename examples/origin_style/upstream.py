"""What the example gateway calls, in the shape of the origin gateway's provider clients: a
synchronous SDK call (the gateway runs it in a thread), a stream that is a synchronous iterator
(read with ``asyncio.to_thread(next, stream, None)``) whose ``close()`` releases the connection,
usage counts as a provider's JSON gives them (``12.0``), an error that carries the status code,
and the models' failover chains and prices.

A request says how each provider behaves (``Behaviour``), so a test knows every outcome; with
``UPSTREAM_CALL_LOG`` set (a file path), every call a provider receives is appended to that file
as one ``provider model`` line, from every worker, so a test sees which providers were called.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

CHAINS: dict[str, tuple[str, ...]] = {
    "openai/gpt-4o": ("flakyai", "openrouter"),
    "anthropic/claude-3.5-sonnet": ("anthropic", "openrouter"),
    "anthropic/claude-3-haiku": ("anthropic",),
    "meta/llama-3-70b": ("flakyai",),
}
"""Each model's providers in failover order (the origin builds this chain per request)."""

PROVIDERS = tuple(sorted({provider for chain in CHAINS.values() for provider in chain}))

PRICES: dict[str, tuple[float, float]] = {model: (1e-6, 2e-6) for model in CHAINS}
"""USD per input token and per output token, by model (the origin reads them from its DB)."""


class Behaviour(BaseModel):
    """How a fake provider answers one request."""

    status: int = 200
    latency_s: float = 0.01
    """until it answers, or its stream starts"""
    chunk_s: float = 0.0
    """before each streamed chunk"""
    chunks: int = 3
    prompt_tokens: float = 12.0
    completion_tokens: float = 5.0


class ProviderError(Exception):
    """What a provider SDK raises on an error answer: carries its status code."""

    def __init__(self, provider: str, status_code: int) -> None:
        super().__init__(f"{provider} answered {status_code}")
        self.status_code = status_code


@dataclass(frozen=True)
class Completion:
    provider: str
    text: str
    usage: dict[str, Any]
    """as the provider's JSON has it: ``{"prompt_tokens": 12.0, "completion_tokens": 5.0}``"""


@dataclass(frozen=True)
class Chunk:
    text: str
    usage: dict[str, Any] | None = None
    """in the last chunk only"""


@dataclass
class Stream:
    """A provider's stream: blocks in ``next()`` until its next chunk; ``close()`` ends it at
    once, from any thread (as closing an HTTP response ends a blocked read)."""

    provider: str
    behaviour: Behaviour
    sent: int = 0
    closed: threading.Event = field(default_factory=threading.Event)

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Chunk:
        if self.sent == self.behaviour.chunks or self.closed.wait(self.behaviour.chunk_s):
            raise StopIteration
        self.sent += 1
        if self.sent < self.behaviour.chunks:
            return Chunk(f"chunk {self.sent} ")
        return Chunk(f"chunk {self.sent} ", _usage(self.behaviour))

    def close(self) -> None:
        self.closed.set()


def complete(provider: str, model: str, messages: list[dict[str, str]], b: Behaviour) -> Completion:
    """A blocking chat completion."""
    _answer(provider, model, b)
    return Completion(provider, f"{model} on {provider}", _usage(b))


def stream(provider: str, model: str, messages: list[dict[str, str]], b: Behaviour) -> Stream:
    """A blocking request whose answer is a stream (an error status raises here, before any
    chunk)."""
    _answer(provider, model, b)
    return Stream(provider, b)


def _answer(provider: str, model: str, b: Behaviour) -> None:
    log = os.environ.get("UPSTREAM_CALL_LOG")
    if log:  # one write of one short line in append mode: whole, whichever worker writes it
        with open(log, "a") as calls:
            calls.write(f"{provider} {model}\n")
    time.sleep(b.latency_s)
    if b.status >= 400:
        raise ProviderError(provider, b.status)


def _usage(b: Behaviour) -> dict[str, Any]:
    return {"prompt_tokens": b.prompt_tokens, "completion_tokens": b.completion_tokens}


def model_pricing(model: str) -> tuple[float, float]:
    """A blocking lookup of a model's prices (the origin's pricing table is in its DB)."""
    return PRICES[model]

"""``MetricsClient.track()``: time a block as one provider call."""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING

from client._outcome import outcome_of_block
from client._spans import CallSpan

if TYPE_CHECKING:
    from client._metrics_client import MetricsClient


class CallTracker:
    """The object ``MetricsClient.track()`` yields; see there."""

    __slots__ = (
        "_client",
        "_span",
        "_start",
        "cost_usd",
        "outcome",
        "provider",
        "status_code",
        "tokens",
    )

    def __init__(self, client: MetricsClient, provider: str) -> None:
        self._client = client
        self.provider = provider
        self.status_code: int | None = None
        self.outcome: str | None = None
        self.tokens = 0
        self.cost_usd = 0.0
        self._start = 0.0
        self._span: CallSpan | None = None

    def __enter__(self) -> CallTracker:
        self._span = CallSpan({"gen_ai.system": self.provider, "provider": self.provider})
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        latency_s = time.perf_counter() - self._start
        outcome = outcome_of_block(exc, self.status_code, self.outcome)
        exemplar = None
        if self._span is not None:
            exemplar = self._span.finish(self.status_code, outcome, self.tokens, self.cost_usd, exc)
        self._client.record(
            self.provider,
            latency_s,
            self.status_code,
            outcome,
            self.tokens,
            self.cost_usd,
            exemplar=exemplar,
        )

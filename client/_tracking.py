"""A ``with`` block timed as one provider call: ``MetricsClient.track()`` (``CallTracker``), and
``GatewayMetrics.inference()`` (``InferenceCall``) through the same ``TimedCall``."""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from client._breaker_status import BREAKER_REJECTED
from client._outcome import outcome_name, outcome_of_block
from client._spans import CallSpan

if TYPE_CHECKING:
    from client._metrics_client import MetricsClient


class TimedCall:
    """What a timed block does around the caller's code, however the call is then booked.

    Entering opens the call's ``model_inference`` span and starts the clock; ``_finished()``,
    called by the subclass's ``__exit__`` before it books the call, takes the latency, the
    outcome (what the block set in ``status_code``/``outcome``, else the class of the exception
    that escaped it) and finishes the span (its exemplar links the latency bucket to the
    trace). The exception is never swallowed. (Each ``__exit__`` books the call itself rather
    than through a hook: this is per call, and the hooks cost a twentieth of ``track()``.)

    After the block, ``booked_as`` says what the call was booked as: its outcome class
    (``success``, ``failure``, ``rate_limited``, ``caller_error``), ``cancelled`` (the caller
    gave up: counted, outside the window), ``breaker_rejected`` (a ``CircuitOpenError`` escaped:
    nothing booked), or None (rejected as invalid, or the block has not ended).
    """

    __slots__ = ("_span", "_start", "booked_as", "cost_usd", "outcome", "provider", "status_code")

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.status_code: int | None = None
        self.outcome: str | None = None
        self.cost_usd = 0.0
        self.booked_as: str | None = None
        self._start = 0.0
        self._span: CallSpan | None = None

    def __enter__(self) -> Self:
        self._span = CallSpan(self._span_attributes())
        self._start = time.perf_counter()
        return self

    def _span_attributes(self) -> dict[str, Any]:
        """The span's attributes when the call starts."""
        return {"gen_ai.system": self.provider, "provider": self.provider}

    def _finished(
        self, exc: BaseException | None, tokens: object
    ) -> tuple[float, str | None, dict[str, str] | None]:
        """(latency in seconds, outcome to record, exemplar labels) of the call that just
        ended, ``exc`` escaping it; ``tokens``: its total, as the span reports it."""
        latency_s = time.perf_counter() - self._start
        outcome = outcome_of_block(exc, self.status_code, self.outcome)
        exemplar = None
        if self._span is not None:  # None only when the block was never entered
            exemplar = self._span.finish(self.status_code, outcome, tokens, self.cost_usd, exc)
        return latency_s, outcome, exemplar

    def _booked(self, accepted: bool, outcome: str | None) -> None:
        self.booked_as = outcome_name(self.status_code, outcome) if accepted else None


class CallTracker(TimedCall):
    """The object ``MetricsClient.track()`` yields; see there. ``add_usage()`` adds tokens and
    cost known only later."""

    __slots__ = ("_client", "_model", "tokens")

    def __init__(self, client: MetricsClient, provider: str, model: str | None = None) -> None:
        TimedCall.__init__(self, provider)  # not super(): a third of the construction
        self._client = client
        self._model = model
        self.tokens = 0

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        latency_s, outcome, exemplar = self._finished(exc, self.tokens)
        if type(outcome) is str and outcome == BREAKER_REJECTED:
            self.booked_as = outcome
            return
        accepted = self._client.record(
            self.provider,
            latency_s,
            self.status_code,
            outcome,
            self.tokens,
            self.cost_usd,
            exemplar=exemplar,
            model=self._model,
        )
        self.booked_as = outcome_name(self.status_code, outcome) if accepted else None

    def add_usage(self, *, tokens: int = 0, cost_usd: float = 0.0) -> bool:
        """Add tokens and cost to the call, in the provider's totals only (never a second window
        event, nor the call's span: it ended with the block): for what is known only after the
        block, such as a response post-processed later, from any thread. Each call adds what it
        is given (call it once per amount). A bad value is left out and counted
        (``invalid_tokens``, ``invalid_cost``). Returns whether it was accepted (not with an
        invalid provider name); never raises."""
        return self._client._add_usage(self.provider, tokens, cost_usd) is not None

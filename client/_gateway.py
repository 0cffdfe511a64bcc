"""The gateway's existing metrics (same names and label sets as today), ready to use, and one call
that books a model inference everywhere it belongs: provider health, cost and tokens by provider,
and the per-model backend metrics. No double bookkeeping for the caller."""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

from client._breaker_status import BREAKER_REJECTED, CircuitOpenError
from client._events import Omitted, check_inference, nano_usd
from client._exemplars import valid_exemplar
from client._instruments import InstrumentStore, Series
from client._metric_types import _Metric
from client._metrics_client import MetricsClient
from client._outcome import CANCELLED_OUTCOME, outcome_name
from client._tracking import TimedCall
from gatewayz_protocol.fields import NANO_USD_PER_USD

_CallKey = tuple[str, str, str, str]
"""(provider, model, status, endpoint) of a model call"""
_Slot = tuple[_Metric, Callable[[str, str, str, str], tuple[str, ...]]]
"""A metric a model call updates, and its label values from the call's ``_CallKey``"""
_UNRESOLVED: Any = object()
MAX_CACHED_CALLS = 4096
"""Label sets of model calls whose series are remembered (beyond: looked up per call)."""

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
INFERENCE_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
ORIGIN_BUCKETS: Mapping[str, tuple[float, ...]] = {
    "fastapi_requests_duration_seconds": (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    "model_inference_duration_seconds": (0.1, 0.5, 1, 2.5, 5, 10, 25, 60),
    "backend_ttfb_seconds": (0.1, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0, 10.0),
    "time_to_first_chunk_seconds": (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 10.0, 15.0),
}
"""The origin gateway's buckets for these histograms (``src/services/metrics/
prometheus_metrics.py``): ``GatewayMetrics(client, buckets=ORIGIN_BUCKETS)`` keeps them."""


def histogram_buckets(chosen: Mapping[str, Sequence[float]] | None) -> dict[str, Sequence[float]]:
    """The buckets of each of ``GatewayMetrics``' histograms: ``chosen`` ones (ValueError for a
    name that is not one of them), this module's for the others."""
    buckets: dict[str, Sequence[float]] = {
        "fastapi_requests_duration_seconds": REQUEST_BUCKETS,
        "model_inference_duration_seconds": INFERENCE_BUCKETS,
        "backend_ttfb_seconds": INFERENCE_BUCKETS,
        "time_to_first_chunk_seconds": INFERENCE_BUCKETS,
    }
    unknown = set(chosen or {}) - set(buckets)
    if unknown:
        raise ValueError(f"buckets for histograms GatewayMetrics has not: {sorted(unknown)}")
    return buckets | dict(chosen or {})


class GatewayMetrics:
    """Declares the gateway's metrics on ``client`` (once per process; safe to repeat).

    ``status_values`` sets the ``status`` label of model_inference_requests_total: "outcome"
    (default) is the outcome class (success, failure, rate_limited, caller_error); "origin" is
    what the railway-grafana-stack's gateway wrote, "success" or "error" (every other class),
    so its ``status="error"`` queries keep working unchanged. ``buckets`` chooses the buckets of
    any of its histograms by name (``ORIGIN_BUCKETS``: the origin gateway's); a histogram's
    buckets are declared once per name across the fleet (the first declaration wins)."""

    def __init__(
        self,
        client: MetricsClient,
        app_name: str = "gatewayz",
        *,
        status_values: Literal["outcome", "origin"] = "outcome",
        buckets: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        if status_values not in ("outcome", "origin"):
            raise ValueError(f"status_values must be 'outcome' or 'origin', not {status_values!r}")
        self.client = client
        self.app_name = app_name
        self.status_values = status_values
        self.requests = client.counter(
            "fastapi_requests_total",
            "HTTP requests",
            ["app_name", "method", "path", "status_code", "status_class"],
        )
        self.request_duration = client.histogram(
            "fastapi_requests_duration_seconds",
            "Request latency",
            ["app_name", "method", "path"],
            buckets=histogram_buckets(buckets)["fastapi_requests_duration_seconds"],
        )
        self.inference_requests = client.counter(
            "model_inference_requests_total", "Model calls", ["provider", "model", "status"]
        )
        self.inference_duration = client.histogram(
            "model_inference_duration_seconds",
            "Model latency",
            ["provider", "model"],
            buckets=histogram_buckets(buckets)["model_inference_duration_seconds"],
        )
        self.tokens = client.counter(
            "tokens_used_total", "Token usage", ["provider", "model", "token_type"]
        )
        self.credits = client.counter("credits_used_total", "Credit usage", ["provider", "model"])
        # By model too (the provider's window only keeps it by provider): the origin's cost panels
        # query it under this name.
        self.cost = client.counter(
            "gatewayz_api_cost_usd_total", "Cost in USD", ["provider", "model"]
        )
        self.database_queries = client.counter(
            "database_queries_total", "Database operations", ["table", "operation"]
        )
        self.cache_hits = client.counter("cache_hits_total", "Cache hits", ["cache_name"])
        self.cache_misses = client.counter("cache_misses_total", "Cache misses", ["cache_name"])
        self.ttfb = client.histogram(
            "backend_ttfb_seconds",
            "Time to first byte from the provider",
            ["provider", "model", "endpoint"],
            buckets=histogram_buckets(buckets)["backend_ttfb_seconds"],
        )
        self.ttfc = client.histogram(
            "time_to_first_chunk_seconds",
            "Time to the first streamed chunk",
            ["provider", "model"],
            buckets=histogram_buckets(buckets)["time_to_first_chunk_seconds"],
        )
        self._booking = InferenceBooking(client._instruments, self._model_call_slots())

    def _model_call_slots(self) -> tuple[_Slot, ...]:
        """What a model call updates: one slot per (metric, label values from the call's
        (provider, model, status, endpoint)), in the order ``InferenceBooking.book()`` fills."""
        return (
            (self.inference_requests, lambda p, m, s, e: (p, m, s)),
            (self.inference_duration, lambda p, m, s, e: (p, m)),
            (self.tokens, lambda p, m, s, e: (p, m, "input")),
            (self.tokens, lambda p, m, s, e: (p, m, "output")),
            (self.credits, lambda p, m, s, e: (p, m)),
            (self.ttfb, lambda p, m, s, e: (p, m, e)),
            (self.ttfc, lambda p, m, s, e: (p, m)),
            (self.cost, lambda p, m, s, e: (p, m)),
        )

    def record_inference(
        self,
        provider: str,
        model: str,
        latency_s: float,
        *,
        status_code: int | None = None,
        outcome: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        credits: float = 0.0,
        cost_usd: float = 0.0,
        endpoint: str = "",
        ttfb_s: float | None = None,
        ttfc_s: float | None = None,
        exemplar: Mapping[str, str] | None = None,
    ) -> bool:
        """Book one finished model call: the provider's health window, cost and tokens (through
        ``MetricsClient.record``) and model_inference_*, tokens_used_total, credits_used_total,
        gatewayz_api_cost_usd_total, backend_ttfb_seconds, time_to_first_chunk_seconds.
        ``exemplar`` (e.g. ``{"trace_id": ...}``) links its latency buckets to its trace.
        Returns whether the call was booked; never raises. What ``record()`` rejects rejects
        the call (counted once, nothing booked); any other bad value is left out alone and
        counted by cause (``check_inference``): a model that is not a string, every per-model
        metric. A ``cancelled`` call books neither latency nor model_inference_requests_total:
        its tokens, cost, credits, TTFB and TTFC only."""
        omitted: Omitted = []
        model_, endpoint_, tokens_in, tokens_out, amount, ttfb, ttfc = check_inference(
            model, endpoint, input_tokens, output_tokens, credits, ttfb_s, ttfc_s, omitted
        )
        client = self.client
        if not client.record(
            provider, latency_s, status_code, outcome, tokens_in + tokens_out, cost_usd,
            exemplar=exemplar, model=model_,
        ):  # fmt: skip
            return False
        for cause, value in omitted:
            client._reject(cause, value)
        if model_ is None:
            return True
        status = outcome_name(status_code, outcome)
        finished = status != CANCELLED_OUTCOME
        if self.status_values == "origin" and status != "success":
            status = "error"
        self._booking.book(
            (provider, model_, status, endpoint_ or ""),
            latency_s if finished else None,
            tokens_in,
            tokens_out,
            amount,
            None if endpoint_ is None else ttfb,
            ttfc,
            nano_usd(cost_usd) or 0,  # as record() booked it (left out: counted there)
            exemplar,
        )
        return True

    def _add_usage(
        self,
        provider: str,
        model: str,
        input_tokens: object,
        output_tokens: object,
        credits: object,
        cost_usd: object,
    ) -> bool:
        """``InferenceCall.add_usage()``: the provider's tokens and cost (no window event), and
        tokens_used_total, credits_used_total and gatewayz_api_cost_usd_total of the model,
        each bad value left out and counted."""
        omitted: Omitted = []
        model_, _, tokens_in, tokens_out, amount, _, _ = check_inference(
            model, "", input_tokens, output_tokens, credits, None, None, omitted
        )
        cost_nusd = self.client._add_usage(provider, tokens_in + tokens_out, cost_usd)
        if cost_nusd is None:
            return False
        for cause, value in omitted:
            self.client._reject(cause, value)
        if model_ is not None and (tokens_in or tokens_out or amount or cost_nusd):
            key = (provider, model_, "", "")
            self._booking.book(key, None, tokens_in, tokens_out, amount, None, None, cost_nusd)
        return True

    def inference(
        self, provider: str, model: str, endpoint: str = "", *, guard: bool = False
    ) -> InferenceCall:
        """Time a model call in a ``with`` block; see InferenceCall. With ``guard=True`` the
        breaker is asked first (``client.admit()``, with the model: a provider of
        ``breaker_models`` has a breaker per model too): when it rejects the call,
        CircuitOpenError (with ``retry_after_s``) is raised and the block never runs."""
        if guard:
            status = self.client.admit(provider, model)
            if not status:
                raise CircuitOpenError.of(status)
        return InferenceCall(self, provider, model, endpoint)


class InferenceBooking:
    """The backend-metric side of ``record_inference()``: the series a model call updates,
    resolved once per label set (a label lookup per metric per call was a third of
    ``inference()``'s cost) and remembered for up to ``MAX_CACHED_CALLS`` label sets."""

    def __init__(self, store: InstrumentStore, slots: tuple[_Slot, ...]) -> None:
        self._store = store
        self._slots = slots
        self._booked: dict[_CallKey, list[Any]] = {}

    def book(
        self,
        key: _CallKey,
        latency_s: float | None,
        input_tokens: int,
        output_tokens: int,
        credits: float,
        ttfb_s: float | None,
        ttfc_s: float | None,
        cost_nusd: int,
        exemplar: Mapping[str, str] | None = None,
    ) -> None:
        """Update every series of a model call ``record()`` accepted (every value was checked:
        straight into the store, under one lock). ``latency_s`` None: no count and no latency
        (a cancelled call, usage added later), ``ttfb_s``/``ttfc_s`` None: not measured."""
        booked = self._booked.get(key)
        if booked is None:
            booked = [_UNRESOLVED] * len(self._slots)
            if len(self._booked) < MAX_CACHED_CALLS and self._cacheable(key):
                self._booked[key] = booked
        adds: list[tuple[Series, float]] = []
        observes: list[tuple[Series, float, dict[str, str] | None]] = []
        if latency_s is not None:
            if (series := self._series(booked, 0, key)) is not None:
                adds.append((series, 1))
            if (series := self._series(booked, 1, key)) is not None:
                labels = valid_exemplar(exemplar) if exemplar is not None else None
                observes.append((series, float(latency_s), labels))
        if input_tokens and (series := self._series(booked, 2, key)) is not None:
            adds.append((series, input_tokens))
        if output_tokens and (series := self._series(booked, 3, key)) is not None:
            adds.append((series, output_tokens))
        if credits and (series := self._series(booked, 4, key)) is not None:
            adds.append((series, credits if type(credits) is int else float(credits)))
        if ttfb_s is not None and (series := self._series(booked, 5, key)) is not None:
            observes.append((series, float(ttfb_s), None))
        if ttfc_s is not None and (series := self._series(booked, 6, key)) is not None:
            observes.append((series, float(ttfc_s), None))
        if cost_nusd and (series := self._series(booked, 7, key)) is not None:
            adds.append((series, cost_nusd / NANO_USD_PER_USD))
        self._store.update(adds, observes)

    def _cacheable(self, key: _CallKey) -> bool:
        """Whether a call's label set is remembered: not with a model or endpoint beyond the
        label value bound (they are truncated, and counted, at every call; remembering their
        whole text would let 4,096 long ones hold megabytes)."""
        limit = self._store.max_label_value_bytes
        return len(key[1]) <= limit and len(key[3]) <= limit

    def _series(self, booked: list[Any], slot: int, key: _CallKey) -> Series | None:
        """The series a call of ``key`` updates in ``slot``, resolved the first time; None past
        the cardinality cap, and the update is counted as dropped."""
        series = booked[slot]
        if series is _UNRESOLVED:
            metric, labels = self._slots[slot]
            series = booked[slot] = metric.series(*labels(*key))
        if series is None:
            self._slots[slot][0].count_drop()
        return series  # type: ignore[no-any-return]


class InferenceCall(TimedCall):
    """``with gateway.inference(provider, model, endpoint) as call:`` times the call; inside,
    ``call.first_byte()`` when the provider's response starts (TTFB), ``call.chunk()`` on each
    streamed chunk (the first one sets TTFC) or ``async for c in call.stream(chunks)``; set
    ``status_code``/``outcome``, ``input_tokens``, ``output_tokens``, ``credits``, ``cost_usd``.
    An exception records a failure (or its status code's class) and is re-raised; the caller
    giving up (a cancelled task, a stream closed early) records ``cancelled``, a
    ``CircuitOpenError`` nothing. After the block, ``booked_as`` says what was booked and
    ``add_usage()`` adds what is known only later."""

    def __init__(self, gateway: GatewayMetrics, provider: str, model: str, endpoint: str):
        TimedCall.__init__(self, provider)  # not super(): a third of the construction
        self._gateway = gateway
        self.model, self.endpoint = model, endpoint
        self.input_tokens = 0
        self.output_tokens = 0
        self.credits = 0.0
        self._ttfb: float | None = None
        self._ttfc: float | None = None

    def first_byte(self) -> None:
        if self._ttfb is None:
            self._ttfb = time.perf_counter() - self._start

    def chunk(self) -> None:
        if self._ttfc is None:
            self._ttfc = time.perf_counter() - self._start
            self.first_byte()

    async def stream(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        """Pass ``chunks`` through, marking the first one."""
        async for item in chunks:
            self.chunk()
            yield item

    def add_usage(
        self,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        credits: float = 0.0,
        cost_usd: float = 0.0,
    ) -> bool:
        """Add tokens, credits and cost to the call once they are known (after the response is
        post-processed, from any thread): the provider's tokens and cost, and the model's
        tokens_used_total, credits_used_total and gatewayz_api_cost_usd_total; never a second
        window event, count or latency (nor the call's span: it ended with the block). Each
        call adds what it is given (call it once per amount). A bad value is left out and
        counted by cause, as ``record_inference()`` does. Returns whether it was accepted (not
        with an invalid provider name); never raises."""
        return self._gateway._add_usage(
            self.provider, self.model, input_tokens, output_tokens, credits, cost_usd
        )

    def _span_attributes(self) -> dict[str, Any]:
        return {"gen_ai.system": self.provider, "provider": self.provider, "model": self.model}

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        ints = type(self.input_tokens) is int and type(self.output_tokens) is int
        tokens = self.input_tokens + self.output_tokens if ints else None
        latency_s, outcome, exemplar = self._finished(exc, tokens)
        if type(outcome) is str and outcome == BREAKER_REJECTED:
            self.booked_as = outcome
            return
        accepted = self._gateway.record_inference(
            self.provider,
            self.model,
            latency_s,
            status_code=self.status_code,
            outcome=outcome,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            credits=self.credits,
            cost_usd=self.cost_usd,
            endpoint=self.endpoint,
            ttfb_s=self._ttfb,
            ttfc_s=self._ttfc,
            exemplar=exemplar,
        )
        self._booked(accepted, outcome)

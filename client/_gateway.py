"""The gateway's existing metrics (same names and label sets as today), ready to use, and one call
that books a model inference everywhere it belongs: provider health, cost and tokens by provider,
and the per-model backend metrics. No double bookkeeping for the caller."""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

from client._events import Rejected, check_inference
from client._exemplars import valid_exemplar
from client._instruments import InstrumentStore, Series
from client._metric_types import _Metric
from client._metrics_client import MetricsClient
from client._outcome import classify_status
from client._tracking import TimedCall
from gatewayz_protocol.partitions import OUTCOMES, SUCCESS

_CallKey = tuple[str, str, str, str]
"""(provider, model, status, endpoint) of a model call"""
_Slot = tuple[_Metric, Callable[[str, str, str, str], tuple[str, ...]]]
"""A metric a model call updates, and its label values from the call's ``_CallKey``"""
_UNRESOLVED: Any = object()
MAX_CACHED_CALLS = 4096
"""Label sets of model calls whose series are remembered (beyond: looked up per call)."""

_OUTCOME_LABELS: dict[int | str | None, str] = {
    **{code: OUTCOMES[classify_status(code)] for code in range(100, 600)},
    **{outcome: outcome for outcome in OUTCOMES},
    None: OUTCOMES[SUCCESS],
}
"""The outcome class of every status code and outcome ``record()`` accepts (None: success), as
the ``status`` label of model_inference_requests_total: one lookup per call."""

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
    ) -> None:
        """Book one finished model call: the provider's health window, cost and tokens (through
        ``MetricsClient.record``) and model_inference_*, tokens_used_total, credits_used_total,
        gatewayz_api_cost_usd_total, backend_ttfb_seconds, time_to_first_chunk_seconds. One rule
        for all of them: an invalid call (any argument ``record()`` would reject, token counts
        that are not non-negative ints, credits that are not a number in [0, 1e6], a negative
        TTFB) is rejected and counted once by cause, and books nothing. ``exemplar`` (e.g.
        ``{"trace_id": ...}``) links the latency buckets of the call to its trace. Never
        raises."""
        try:
            tokens = check_inference(
                model, endpoint, input_tokens, output_tokens, credits, ttfb_s, ttfc_s
            )
        except Rejected as rejection:
            self.client._reject(rejection.cause, rejection.value)
            return
        except Exception:
            self.client._reject("invalid_argument", provider)
            return
        if not self.client.record(
            provider, latency_s, status_code, outcome, tokens, cost_usd, exemplar=exemplar
        ):
            return
        status = _OUTCOME_LABELS[outcome if status_code is None else status_code]
        if self.status_values == "origin" and status != "success":
            status = "error"
        self._booking.book(
            (provider, model, status, endpoint),
            latency_s,
            input_tokens,
            output_tokens,
            credits,
            ttfb_s,
            ttfc_s,
            cost_usd,
            exemplar,
        )

    def inference(self, provider: str, model: str, endpoint: str = "") -> InferenceCall:
        """Time a model call in a ``with`` block; see InferenceCall."""
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
        latency_s: float,
        input_tokens: int,
        output_tokens: int,
        credits: float,
        ttfb_s: float | None,
        ttfc_s: float | None,
        cost_usd: float,
        exemplar: Mapping[str, str] | None,
    ) -> None:
        """Update every series of a model call ``record()`` accepted (every value was checked:
        straight into the store, under one lock)."""
        booked = self._booked.get(key)
        if booked is None:
            booked = [_UNRESOLVED] * len(self._slots)
            if len(self._booked) < MAX_CACHED_CALLS and self._cacheable(key):
                self._booked[key] = booked
        adds: list[tuple[Series, float]] = []
        observes: list[tuple[Series, float, dict[str, str] | None]] = []
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
        # record() accepted the cost: a number in [0, 1e6], maybe a Decimal or a bool
        if cost_usd and (series := self._series(booked, 7, key)) is not None:
            adds.append((series, float(cost_usd)))
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
    An exception records a failure (or its status code's class) and is re-raised."""

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
        self._gateway.record_inference(
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

"""Traces to Tempo (or any OTLP/HTTP receiver): a TracerProvider with a batch span processor,
set as the process's global provider, and the FastAPI instrumentation of an app.

Imported only when an OTLP endpoint is configured: a process without one never loads the SDK's
exporter (nor ``requests`` through it). Everything that can wait on the network runs in the
batch processor's thread; a request only appends a finished span to a bounded queue, and when
that queue is full the span is dropped and counted (:func:`spans_dropped`), never waited for.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from gatewayz_telemetry.settings import TelemetrySettings

log = logging.getLogger("telemetry.traces")

# The OTLP/HTTP client logs each failed export (and each retry) here; the exporter below says
# the same once per outage instead.
_SDK_EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"

_lock = threading.Lock()
_provider: TracerProvider | None = None
_processor: CountingBatchProcessor | None = None


class _Drops:
    """A thread-safe counter shared by the processor (queue full) and the exporter (failed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.count += n


class _InExport(logging.Filter):
    """Drops the SDK exporter's records logged during one of our exports (see above)."""

    def __init__(self) -> None:
        super().__init__()
        self.active = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.active, "on", False)


class QuietExporter(SpanExporter):
    """The OTLP exporter, counting what it fails to deliver and logging an outage twice (when
    it starts, when it ends), never per batch; it never raises."""

    def __init__(self, inner: SpanExporter, drops: _Drops, quiet: _InExport) -> None:
        self._inner = inner
        self._drops = drops
        self._quiet = quiet
        self._failing_since: int | None = None  # the drop count when the outage began

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._quiet.active.on = True
        try:
            result = self._inner.export(spans)
        except Exception:
            result = SpanExportResult.FAILURE
        finally:
            self._quiet.active.on = False
        if result is SpanExportResult.SUCCESS:
            if self._failing_since is not None:
                lost = self._drops.count - self._failing_since
                self._failing_since = None
                log.warning("the OTLP endpoint takes spans again; %d spans were dropped", lost)
            return result
        if self._failing_since is None:
            self._failing_since = self._drops.count
            log.warning("cannot export spans over OTLP: dropping spans (counted) until it answers")
        self._drops.add(len(spans))
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class CountingBatchProcessor(BatchSpanProcessor):
    """The SDK's batch processor, dropping (and counting) a span when its queue is full before
    the SDK would: the SDK drops too, but logs a warning for every span it drops, which under
    load would be a log line per request."""

    def __init__(
        self, exporter: SpanExporter, drops: _Drops, max_queue_size: int, exit_timeout: float
    ) -> None:
        # The SDK refuses a batch larger than the queue (its default batch is 512).
        batch = min(max_queue_size, int(os.environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)))
        super().__init__(exporter, max_queue_size=max_queue_size, max_export_batch_size=batch)
        self._drops = drops
        self._max_queue = max_queue_size
        self._exit_timeout_millis = int(exit_timeout * 1000)
        # The SDK's deque (thread-safe; its length is what the SDK compares to the bound). If a
        # later SDK renames it, we fall back to its own drop (still bounded, then logged).
        self._queue: Any = getattr(getattr(self, "_batch_processor", None), "_queue", None)

    def on_end(self, span: ReadableSpan) -> None:
        queue = self._queue
        if queue is not None and len(queue) >= self._max_queue:
            self._drops.add(1)
            return
        super().on_end(span)

    def shutdown(self) -> None:
        # The SDK would wait up to 30 s for a dead endpoint at exit; bounded like the logs.
        inner: Any = getattr(self, "_batch_processor", None)
        if inner is None:
            super().shutdown()  # type: ignore[no-untyped-call]
        else:
            inner.shutdown(timeout_millis=self._exit_timeout_millis)


def install(settings: TelemetrySettings) -> bool:
    """Set a TracerProvider exporting to ``settings.otlp_traces_endpoint`` as the global one;
    True when this call set it. Once per process: OpenTelemetry's global provider can be set
    only once, so a later call (or a provider the application set first) keeps the one there.
    """
    global _provider, _processor
    with _lock:
        if _provider is not None:
            return False
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            log.warning("a tracer provider is already set: spans are not exported over OTLP")
            return False
        drops = _Drops()
        quiet = _InExport()
        logging.getLogger(_SDK_EXPORTER_LOGGER).addFilter(quiet)
        exporter = QuietExporter(
            OTLPSpanExporter(
                endpoint=settings.otlp_traces_endpoint, timeout=settings.otlp_timeout_seconds
            ),
            drops,
            quiet,
        )
        # TracerProvider() reads OTEL_TRACES_SAMPLER(_ARG) itself; its own exit hook would let
        # the processor wait 30 s, so gatewayz_telemetry.shutdown() (at exit) stops it instead.
        provider = TracerProvider(
            resource=Resource.create(settings.resource_attributes()), shutdown_on_exit=False
        )
        processor = CountingBatchProcessor(
            exporter, drops, settings.span_queue_size, settings.exit_timeout_seconds
        )
        provider.add_span_processor(processor)
        trace.set_tracer_provider(provider)
        _provider, _processor = provider, processor
        return True


def instrument(app: object) -> None:
    """Wrap ``app`` (a FastAPI application) in OpenTelemetry's ASGI middleware: one server
    span per request, the parent of the spans opened while it is served."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    if not getattr(app, "_is_instrumented_by_opentelemetry", False):
        FastAPIInstrumentor.instrument_app(app)  # type: ignore[arg-type]


def spans_exported() -> bool:
    """True when :func:`install` set this process's provider (now or in an earlier call)."""
    return _provider is not None


def spans_dropped() -> int:
    processor = _processor
    return 0 if processor is None else processor._drops.count


def flush(timeout: float) -> bool:
    provider = _provider
    return True if provider is None else provider.force_flush(int(timeout * 1000))


def shutdown() -> None:
    provider = _provider
    if provider is not None:
        provider.shutdown()

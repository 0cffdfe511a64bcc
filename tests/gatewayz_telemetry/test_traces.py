"""Traces (gatewayz_telemetry._traces). ``setup()``'s traces half end to end, in subprocesses (a
process has one global tracer provider): nothing configured sets nothing and imports no
exporter; a full queue under a refused endpoint drops and counts spans without a log line per
span. Then the module's parts in this process: the exporter's counting and its two outage
lines, the processor's bounds and its drop before the SDK's, install() once, instrument()."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import fastapi
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import ProxyTracerProvider

from gatewayz_telemetry import TelemetrySettings, _traces
from gatewayz_telemetry._traces import (
    _SDK_EXPORTER_LOGGER,
    CountingBatchProcessor,
    QuietExporter,
    _Drops,
    _InExport,
)
from tests.support.loki import refused_url

ROOT = Path(__file__).resolve().parents[2]


def run(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_nothing_configured_sets_no_provider_and_imports_no_exporter() -> None:
    done = run(
        """
import sys
import fastapi, gatewayz_telemetry
from opentelemetry import trace
result = gatewayz_telemetry.setup("svc", app=fastapi.FastAPI())
assert not result.traces and not result.instrumented, result
assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk",
    "opentelemetry.exporter", "opentelemetry.instrumentation", "gatewayz_telemetry._traces")))
print(loaded)
"""
    )
    assert done.stdout.strip() == "[]"


def test_a_full_queue_under_a_refused_endpoint_drops_and_counts_quietly() -> None:
    done = run(
        """
import logging, time
import gatewayz_telemetry
from opentelemetry import trace
logging.basicConfig(level=logging.DEBUG)
result = gatewayz_telemetry.setup("svc")
assert result.traces, result
tracer = trace.get_tracer("test")
started = time.perf_counter()
for _ in range(5000):
    with tracer.start_as_current_span("s"):
        pass
elapsed = time.perf_counter() - started
dropped = gatewayz_telemetry.spans_dropped()
assert dropped >= 5000 - 64 - 64, dropped  # at most a queue and a batch in flight kept
assert elapsed < 5, elapsed
print(dropped)
""",
        OTEL_EXPORTER_OTLP_ENDPOINT=refused_url(),
        OTEL_BSP_MAX_QUEUE_SIZE="64",
    )
    assert "Queue full" not in done.stderr
    assert len(done.stderr.splitlines()) < 20, done.stderr
    assert int(done.stdout) > 0


# -- the module's own parts, in this process (gatewayz_telemetry._traces) -----------------------
# The exporter and the processor are built here on a scripted exporter and a provider of the
# test's own; install() runs with OpenTelemetry's global provider functions replaced, so this
# process's provider is never set.


class Scripted(SpanExporter):
    """Answers each export with the next scripted result (an exception is raised), and logs on
    the SDK exporter's logger while exporting, as the OTLP exporter does on each failure."""

    def __init__(self, *results: SpanExportResult | Exception, chatty: bool = True) -> None:
        self.results = list(results)
        self.chatty = chatty
        self.exported: list[int] = []
        self.calls: list[tuple[str, int | None]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(30)
        self.exported.append(len(spans))
        if self.chatty:
            logging.getLogger(_SDK_EXPORTER_LOGGER).warning("sdk: export failed, retrying")
        result = self.results.pop(0) if self.results else SpanExportResult.SUCCESS
        if isinstance(result, Exception):
            raise result
        return result

    def shutdown(self) -> None:
        self.calls.append(("shutdown", None))

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.calls.append(("force_flush", timeout_millis))
        return True


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def logged() -> Iterator[tuple[list[str], list[str]]]:
    """(what ``telemetry.traces`` says, what the SDK exporter's logger lets through)."""
    ours, sdk = Captured(), Captured()
    logging.getLogger("telemetry.traces").addHandler(ours)
    logging.getLogger(_SDK_EXPORTER_LOGGER).addHandler(sdk)
    yield ours.messages, sdk.messages
    logging.getLogger("telemetry.traces").removeHandler(ours)
    logging.getLogger(_SDK_EXPORTER_LOGGER).removeHandler(sdk)


@pytest.fixture
def quiet() -> Iterator[_InExport]:
    """The filter install() puts on the SDK exporter's logger, removed afterwards."""
    in_export = _InExport()
    sdk_logger = logging.getLogger(_SDK_EXPORTER_LOGGER)
    sdk_logger.addFilter(in_export)
    yield in_export
    sdk_logger.removeFilter(in_export)


def _spans(n: int) -> list[ReadableSpan]:
    return [ReadableSpan(name=f"s{i}") for i in range(n)]


def test_the_exporter_counts_failures_and_says_an_outage_twice(
    logged: tuple[list[str], list[str]], quiet: _InExport
) -> None:
    ours, sdk = logged
    failure, success = SpanExportResult.FAILURE, SpanExportResult.SUCCESS
    inner = Scripted(success, failure, RuntimeError("refused"), failure, success, failure)
    drops = _Drops()
    exporter = QuietExporter(inner, drops, quiet)
    results = [exporter.export(_spans(n)) for n in (2, 3, 4, 1, 5, 2)]
    assert results == [success, failure, failure, failure, success, failure]
    assert inner.exported == [2, 3, 4, 1, 5, 2]
    assert drops.count == 3 + 4 + 1 + 2
    assert ours == [
        "cannot export spans over OTLP: dropping spans (counted) until it answers",
        "the OTLP endpoint takes spans again; 8 spans were dropped",
        "cannot export spans over OTLP: dropping spans (counted) until it answers",
    ]
    assert sdk == []  # the SDK's per-export lines were filtered while we exported
    logging.getLogger(_SDK_EXPORTER_LOGGER).warning("outside an export")
    assert sdk == ["outside an export"]


def test_the_exporter_passes_shutdown_and_flush_on(quiet: _InExport) -> None:
    inner = Scripted()
    exporter = QuietExporter(inner, _Drops(), quiet)
    assert exporter.force_flush(1234)
    exporter.shutdown()
    assert inner.calls == [("force_flush", 1234), ("shutdown", None)]


@pytest.fixture
def processors() -> Iterator[list[CountingBatchProcessor]]:
    made: list[CountingBatchProcessor] = []
    yield made
    for processor in made:
        processor.shutdown()


def test_the_processor_bounds_its_batch_by_its_queue_and_its_exit_wait(
    processors: list[CountingBatchProcessor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", raising=False)
    small = CountingBatchProcessor(Scripted(), _Drops(), max_queue_size=64, exit_timeout=0.25)
    large = CountingBatchProcessor(Scripted(), _Drops(), max_queue_size=4096, exit_timeout=2.0)
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "16")
    configured = CountingBatchProcessor(Scripted(), _Drops(), max_queue_size=64, exit_timeout=1)
    processors += [small, large, configured]
    batch_sizes = [p._batch_processor._max_export_batch_size for p in processors]
    assert batch_sizes == [64, 512, 16]  # min(queue, OTEL_BSP_MAX_EXPORT_BATCH_SIZE or 512)
    assert [p._exit_timeout_millis for p in processors] == [250, 2000, 1000]
    assert all(p._queue is p._batch_processor._queue for p in processors)  # the SDK's deque


def test_a_full_queue_drops_and_counts_each_span_quietly(
    processors: list[CountingBatchProcessor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")  # exports only when a batch is full
    said = Captured()
    logging.getLogger("opentelemetry").addHandler(said)  # the SDK's "Queue full" among them
    exporter = Scripted(chatty=False)
    exporter.release.clear()  # the first export hangs until the test lets it go
    drops = _Drops()
    processor = CountingBatchProcessor(exporter, drops, max_queue_size=2, exit_timeout=5.0)
    processors.append(processor)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    for _ in range(2):
        tracer.start_span("taken").end()
    assert exporter.entered.wait(10)  # the worker took both and hangs in the export
    for _ in range(2):
        tracer.start_span("queued").end()  # the queue is full now
    for _ in range(5):
        tracer.start_span("dropped").end()
    assert drops.count == 5
    exporter.release.set()
    assert provider.force_flush(10_000)
    assert exporter.exported == [2, 2]
    logging.getLogger("opentelemetry").removeHandler(said)
    assert said.messages == []  # no line per span dropped


def test_install_sets_the_provider_once(
    monkeypatch: pytest.MonkeyPatch, logged: tuple[list[str], list[str]]
) -> None:
    set_providers: list[object] = []
    monkeypatch.setattr(_traces, "_provider", None)
    monkeypatch.setattr(_traces, "_processor", None)
    monkeypatch.setattr(_traces.trace, "get_tracer_provider", lambda: ProxyTracerProvider())
    monkeypatch.setattr(_traces.trace, "set_tracer_provider", set_providers.append)
    sdk_logger = logging.getLogger(_SDK_EXPORTER_LOGGER)
    filters = list(sdk_logger.filters)
    settings = TelemetrySettings(
        service_name="svc",
        environment="test",
        otlp_traces_endpoint="http://127.0.0.1:9/v1/traces",  # never reached: no span ends
        exit_timeout_seconds=0.5,
    )
    try:
        assert not _traces.spans_exported()
        assert _traces.install(settings)
        assert not _traces.install(settings)  # once per process
        [provider] = set_providers
        assert isinstance(provider, TracerProvider)
        assert provider is _traces._provider
        assert _traces.spans_exported()
        assert provider.resource.attributes["service.name"] == "svc"
        assert provider.resource.attributes["deployment.environment"] == "test"
        assert _traces._processor is not None and _traces.spans_dropped() == 0
        assert len(sdk_logger.filters) == len(filters) + 1  # the exporter's own lines quieted
    finally:
        sdk_logger.filters[:] = filters
        if _traces._provider is not None:
            _traces._provider.shutdown()
    assert logged == ([], [])


def test_install_keeps_a_provider_the_application_set_first(
    monkeypatch: pytest.MonkeyPatch, logged: tuple[list[str], list[str]]
) -> None:
    set_providers: list[object] = []
    theirs = TracerProvider(shutdown_on_exit=False)
    monkeypatch.setattr(_traces, "_provider", None)
    monkeypatch.setattr(_traces, "_processor", None)
    monkeypatch.setattr(_traces.trace, "get_tracer_provider", lambda: theirs)
    monkeypatch.setattr(_traces.trace, "set_tracer_provider", set_providers.append)
    settings = TelemetrySettings(service_name="svc", otlp_traces_endpoint="http://t:4318/v1/traces")
    assert not _traces.install(settings)
    assert set_providers == [] and not _traces.spans_exported()
    assert logged[0] == ["a tracer provider is already set: spans are not exported over OTLP"]


def test_without_a_provider_installed_nothing_is_exported_or_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_traces, "_provider", None)
    monkeypatch.setattr(_traces, "_processor", None)
    assert (_traces.spans_exported(), _traces.spans_dropped(), _traces.flush(1.0)) == (
        False,
        0,
        True,
    )
    _traces.shutdown()


def test_an_app_is_instrumented_once() -> None:
    app = fastapi.FastAPI()
    _traces.instrument(app)
    assert app._is_instrumented_by_opentelemetry  # type: ignore[attr-defined]
    middleware = list(app.user_middleware)
    _traces.instrument(app)
    assert list(app.user_middleware) == middleware

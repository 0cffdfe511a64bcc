"""``gatewayz_telemetry.setup()``: one call per process, after any fork, sets up what the
environment asks for: logs to Loki (``GATEWAYZ_LOKI_URL``) and traces over OTLP/HTTP
(``OTEL_EXPORTER_OTLP_*``).
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gatewayz_protocol.hooks import register_log_drops
from gatewayz_telemetry.settings import TelemetrySettings

if TYPE_CHECKING:  # importing it loads logging_loki: only when logs are shipped
    from gatewayz_telemetry._handler import LokiLogHandler

_lock = threading.Lock()
_handler: LokiLogHandler | None = None
_retired_drops = 0  # drops counted by handlers a later setup() replaced
_atexit_registered = False


@dataclass(frozen=True, slots=True)
class Telemetry:
    """What :func:`setup` configured in this process."""

    settings: TelemetrySettings
    logs: bool  # records go to Loki
    traces: bool = False  # spans go to the OTLP endpoint (this call or an earlier one set it)
    instrumented: bool = False  # the app given has OpenTelemetry's FastAPI middleware


def setup(
    service_name: str,
    *,
    app: object | None = None,
    env: Mapping[str, str] | None = None,
    settings: TelemetrySettings | None = None,
) -> Telemetry:
    """Ship this process's logs to Loki when ``GATEWAYZ_LOKI_URL`` is set, and its spans over
    OTLP/HTTP when an OTLP endpoint is; with nothing configured, do nothing (no handler, no
    provider, no thread, no import of logging_loki or of OpenTelemetry's SDK).

    ``settings`` (when given) wins over ``env``, which defaults to ``os.environ``. ``app``, a
    FastAPI application, gets OpenTelemetry's middleware (a server span per request) when
    traces are exported. Calling it again replaces the logs' set-up; the tracer provider is
    set once per process and kept. Call it in the process that will log and trace: in a
    Gunicorn worker (``post_fork``), never in a ``--preload`` master.
    """
    chosen = settings if settings is not None else TelemetrySettings.from_env(service_name, env)
    logs = _setup_logs(chosen)
    traces = instrumented = False
    if chosen.traces_enabled:
        from gatewayz_telemetry import _traces

        _traces.install(chosen)
        traces = _traces.spans_exported()
        if traces and app is not None:
            _traces.instrument(app)
            instrumented = True
        _register_atexit()
    return Telemetry(settings=chosen, logs=logs, traces=traces, instrumented=instrumented)


def _register_atexit() -> None:
    global _atexit_registered
    with _lock:
        if not _atexit_registered:
            # Registered after `logging` was imported, so it runs before logging.shutdown():
            # the queues are drained (bounded) while the senders can still push.
            atexit.register(shutdown)
            _atexit_registered = True


def _setup_logs(chosen: TelemetrySettings) -> bool:
    global _handler, _retired_drops
    root = logging.getLogger()
    with _lock:
        previous, _handler = _handler, None
        if previous is not None:
            root.removeHandler(previous)
            previous.close(timeout=1.0)
            _retired_drops += previous.dropped
        if not chosen.logs_enabled:
            return False
        from gatewayz_telemetry._handler import LokiLogHandler

        handler = LokiLogHandler(chosen)
        root.addHandler(handler)
        # The root logger's level gates every handler: a process that never configured logging
        # (a Gunicorn worker) is at WARNING and would ship nothing at INFO.
        if root.getEffectiveLevel() > handler.level:
            root.setLevel(handler.level)
        _handler = handler
    # What this process's side (a worker's flusher, the aggregator) reports to Redis with its
    # own writes: registered, never looked up.
    register_log_drops(log_records_dropped)
    _register_atexit()
    return True


def log_records_dropped() -> int:
    """Log records this process did not deliver to Loki (queue full, push failed, left at
    exit), since it started; thread-safe. For ``gatewayz_log_records_dropped_total``."""
    with _lock:
        handler = _handler
        retired = _retired_drops
    return retired + (handler.dropped if handler is not None else 0)


def spans_dropped() -> int:
    """Finished spans this process did not export (the queue was full, or the export failed:
    refused, timed out, non-2xx), since it started; 0 when traces are not exported."""
    traces = sys.modules.get("gatewayz_telemetry._traces")
    return 0 if traces is None else int(traces.spans_dropped())


def flush(timeout: float = 5.0) -> bool:
    """Wait up to ``timeout`` seconds until every record logged so far is delivered or
    dropped, then export the spans queued (one blocking export per batch, each bounded by the
    exporter's timeout); True when the records all settled in time (or logs are not shipped)."""
    handler = _handler
    settled = True if handler is None else handler.drain(timeout)
    traces = sys.modules.get("gatewayz_telemetry._traces")
    if traces is not None:
        traces.flush(timeout)
    return settled


def shutdown(timeout: float | None = None) -> None:
    """Drain (at most ``timeout`` s, default the settings' ``exit_timeout_seconds``) and stop
    the sender; runs by itself at exit. The handler stays installed and counts what is logged
    afterwards as dropped."""
    handler = _handler
    if handler is not None:
        handler.close(timeout)
    traces = sys.modules.get("gatewayz_telemetry._traces")
    if traces is not None:
        traces.shutdown()

"""``telemetry.setup()``: one call per process, after any fork, sets up what the environment
asks for. Today: logs to Loki. Traces (OTLP) and exemplars will be set up here too, next to it.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from telemetry.settings import TelemetrySettings

if TYPE_CHECKING:  # importing it loads logging_loki: only when logs are shipped
    from telemetry._handler import LokiLogHandler

_lock = threading.Lock()
_handler: LokiLogHandler | None = None
_retired_drops = 0  # drops counted by handlers a later setup() replaced
_atexit_registered = False


@dataclass(frozen=True, slots=True)
class Telemetry:
    """What :func:`setup` configured in this process."""

    settings: TelemetrySettings
    logs: bool  # records go to Loki


def setup(
    service_name: str,
    *,
    app: object | None = None,
    env: Mapping[str, str] | None = None,
    settings: TelemetrySettings | None = None,
) -> Telemetry:
    """Ship this process's logs to Loki when ``LOKI_URL`` is set; with nothing configured,
    do nothing (no handler, no thread, no import of logging_loki).

    ``settings`` (when given) wins over ``env``, which defaults to ``os.environ``. ``app`` is
    the FastAPI application, for the tracing half (its instrumentation); unused for now.
    Calling it again replaces what the previous call set up. Call it in the process that will
    log: in a Gunicorn worker (``post_fork``), never in a ``--preload`` master.
    """
    global _handler, _retired_drops, _atexit_registered
    del app  # reserved: FastAPI instrumentation comes with traces
    chosen = settings if settings is not None else TelemetrySettings.from_env(service_name, env)
    root = logging.getLogger()
    with _lock:
        previous, _handler = _handler, None
        if previous is not None:
            root.removeHandler(previous)
            previous.close(timeout=1.0)
            _retired_drops += previous.dropped
        if not chosen.logs_enabled:
            return Telemetry(settings=chosen, logs=False)
        from telemetry._handler import LokiLogHandler

        handler = LokiLogHandler(chosen)
        root.addHandler(handler)
        # The root logger's level gates every handler: a process that never configured logging
        # (a Gunicorn worker) is at WARNING and would ship nothing at INFO.
        if root.getEffectiveLevel() > handler.level:
            root.setLevel(handler.level)
        _handler = handler
        if not _atexit_registered:
            # Registered after `logging` was imported, so it runs before logging.shutdown():
            # the queue is drained (bounded) while the sender can still push.
            atexit.register(shutdown)
            _atexit_registered = True
    return Telemetry(settings=chosen, logs=True)


def log_records_dropped() -> int:
    """Log records this process did not deliver to Loki (queue full, push failed, left at
    exit), since it started; thread-safe. For ``gatewayz_log_records_dropped_total``."""
    with _lock:
        handler = _handler
        retired = _retired_drops
    return retired + (handler.dropped if handler is not None else 0)


def flush(timeout: float = 5.0) -> bool:
    """Wait up to ``timeout`` seconds until every record logged so far is delivered or
    dropped; True when they all were in time (or logs are not shipped)."""
    handler = _handler
    return True if handler is None else handler.drain(timeout)


def shutdown(timeout: float | None = None) -> None:
    """Drain (at most ``timeout`` s, default the settings' ``exit_timeout_seconds``) and stop
    the sender; runs by itself at exit. The handler stays installed and counts what is logged
    afterwards as dropped."""
    handler = _handler
    if handler is not None:
        handler.close(timeout)

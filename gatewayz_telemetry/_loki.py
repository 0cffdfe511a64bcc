"""The sender: one background thread per process that takes batches from the outbox and pushes
them to Loki with python-logging-loki's emitter, under a connect/read timeout.

This module imports ``logging_loki`` (and through it ``requests``): only a process that ships
logs loads it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import logging_loki.emitter

from gatewayz_telemetry._outbox import Entry, Outbox
from gatewayz_telemetry.settings import TelemetrySettings

log = logging.getLogger("telemetry.logs")

# How long the sender waits for a first record before looking at its stop flag again.
_IDLE_WAIT_SECONDS = 0.5


class PushError(Exception):
    """Loki did not take a batch (an HTTP status other than 2xx)."""


class BatchEmitter:
    """python-logging-loki's v1 emitter (its labels, label-name rules and ``requests`` session),
    with what it lacks: several records per push and a timeout on every request. (Its own
    ``__call__`` posts one record per request and waits forever for an answer.)"""

    def __init__(self, settings: TelemetrySettings) -> None:
        self._emitter: Any = logging_loki.emitter.LokiEmitterV1(settings.loki_url, {})
        self._labels = {
            self._emitter.format_label(name): value for name, value in settings.labels().items()
        }
        self._timeout = (settings.connect_timeout_seconds, settings.read_timeout_seconds)

    def payload(self, batch: list[Entry]) -> dict[str, Any]:
        """Loki's push body: one stream per label set (here: per level), the values in the
        order logged. Loki takes many values per stream in one request."""
        streams: dict[str, list[list[str]]] = {}
        for entry in batch:
            streams.setdefault(entry.level, []).append([str(entry.timestamp_ns), entry.line])
        return {
            "streams": [
                {"stream": {**self._labels, "level": level}, "values": values}
                for level, values in streams.items()
            ]
        }

    def push(self, batch: list[Entry]) -> None:
        """One POST for the whole batch; raises on a refused connection, a timeout or a
        non-2xx answer."""
        response = self._emitter.session.post(
            self._emitter.url, json=self.payload(batch), timeout=self._timeout
        )
        try:
            if not 200 <= response.status_code < 300:
                raise PushError(f"Loki answered HTTP {response.status_code}")
        finally:
            response.close()

    def close(self) -> None:
        self._emitter.close()


class Sender:
    """Pushes batches until stopped. A failed push drops its batch (counted) and backs off,
    doubling from ``backoff_initial_seconds`` to ``backoff_max_seconds``; records that arrive
    meanwhile wait in the bounded outbox, and past its capacity are dropped at the logging call.
    An outage is logged once when it starts and once when it ends, never per record."""

    def __init__(self, outbox: Outbox, settings: TelemetrySettings) -> None:
        self._outbox = outbox
        self._settings = settings
        self._emitter = BatchEmitter(settings)
        self._stopping = threading.Event()
        self._failing_since_drops: int | None = None  # the drop count when the outage began
        self._thread = threading.Thread(target=self._run, name="telemetry-loki", daemon=True)

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        """Wake the sender out of a back-off; once the caller has closed the outbox, it ends
        when the queue is empty (at once if Loki is failing: the rest is dropped)."""
        self._stopping.set()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.0
        try:
            while True:
                batch = self._outbox.take(self._settings.batch_size, _IDLE_WAIT_SECONDS)
                if not batch:
                    if self._outbox.closed or self._stopping.is_set():
                        return
                    continue
                if self._failing_since_drops is not None and self._outbox.closed:
                    # Exiting while Loki is down: do not spend the exit waiting on it.
                    self._outbox.settle(0, len(batch))
                    self._outbox.drop_waiting()
                    return
                if self._send(batch):
                    backoff = 0.0
                    continue
                backoff = min(
                    self._settings.backoff_max_seconds,
                    max(self._settings.backoff_initial_seconds, backoff * 2),
                )
                self._stopping.wait(backoff)
        finally:
            self._emitter.close()

    def _send(self, batch: list[Entry]) -> bool:
        try:
            self._emitter.push(batch)
        except Exception as exc:  # refused, timed out, 5xx, 4xx: the batch is lost either way
            self._outbox.settle(0, len(batch))
            if self._failing_since_drops is None:
                self._failing_since_drops = self._outbox.counts().dropped - len(batch)
                log.warning(
                    "cannot push logs to Loki (%s): dropping log records (counted) until it "
                    "answers",
                    _describe(exc),
                )
            return False
        self._outbox.settle(len(batch), 0)
        if self._failing_since_drops is not None:
            lost = self._outbox.counts().dropped - self._failing_since_drops
            self._failing_since_drops = None
            log.warning("Loki takes logs again; %d log records were dropped meanwhile", lost)
        return True


def _describe(exc: BaseException) -> str:
    """The failure's class and first line: enough to tell refused from timeout from HTTP 500,
    and never a URL with credentials in it."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    if "://" in text:
        text = ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

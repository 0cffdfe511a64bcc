"""The logging handler: ``emit`` formats the record and puts it in a bounded queue, nothing else.

No I/O, no wait on Loki, no exception out of a logging call. The sender thread starts on the
first record, in the process that logs: a Gunicorn ``--preload`` master that never logs through
it starts nothing, and a forked child gets an empty queue and starts a sender of its own.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref

from gatewayz_telemetry._logfmt import format_line
from gatewayz_telemetry._loki import Sender
from gatewayz_telemetry._outbox import Counts, Entry, Outbox
from gatewayz_telemetry.settings import TelemetrySettings


class LokiLogHandler(logging.Handler):
    """Ships records to Loki through a bounded queue and a background sender."""

    def __init__(self, settings: TelemetrySettings) -> None:
        super().__init__(level=settings.log_level.upper())
        if settings.loki_url is None:
            raise ValueError("LokiLogHandler needs settings.loki_url")
        self.settings = settings
        self._fresh_state()
        # A child forked while the sender held the outbox's lock would inherit it locked, and
        # the parent's queue and HTTP connection are not the child's to use: start over.
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _reset_in_child(ref))

    def _fresh_state(self) -> None:
        self._outbox = Outbox(self.settings.queue_size)
        self._start_lock = threading.Lock()
        self._sender: Sender | None = None
        self._closed = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sender = self._sender
            if sender is not None and threading.get_ident() == sender.ident:
                # The sender's own records (urllib3's debug lines, the outage warning) would
                # feed back into the queue they come from; they go to the other handlers only.
                return
            entry = Entry(
                timestamp_ns=int(record.created * 1e9),
                level=record.levelname.lower(),
                line=format_line(record, self.settings.max_line_chars),
            )
            if self._outbox.offer(entry) and sender is None:
                self._start_sender()
        except Exception:
            # Never raise into the application and never print a traceback per record
            # (logging's handleError would): the record counts as dropped.
            self._outbox.count_dropped()

    def _start_sender(self) -> None:
        with self._start_lock:
            if self._sender is None and not self._closed:
                sender = Sender(self._outbox, self.settings)
                sender.start()
                self._sender = sender

    def flush(self) -> None:
        """Non-blocking, as ``logging`` may call it at any time; :meth:`drain` waits."""

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until every record queued so far is delivered or dropped."""
        if self._sender is None:
            return True
        return self._outbox.wait_settled(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Drain for at most ``timeout`` (default ``exit_timeout_seconds``), then stop: what
        is still queued or in flight is dropped and counted. Records logged afterwards are
        dropped and counted too."""
        limit = self.settings.exit_timeout_seconds if timeout is None else timeout
        with self._start_lock:
            self._closed = True
            sender = self._sender
        self._outbox.close()
        if sender is not None:
            sender.request_stop()  # out of a back-off now: at exit an outage drops, not waits
            if self._outbox.wait_settled(limit):
                sender.join(timeout=0.5)  # it is ending: let it close its connection
            else:
                # Stuck in a push (a black hole): count the rest dropped, leave the daemon
                # thread to its timeout rather than hold the exit any longer.
                self._outbox.drop_waiting()
                self._outbox.abandon_in_flight()
        super().close()

    def counts(self) -> Counts:
        return self._outbox.counts()

    @property
    def dropped(self) -> int:
        return self._outbox.counts().dropped

    @property
    def sender_started(self) -> bool:
        return self._sender is not None


def _reset_in_child(ref: weakref.ReferenceType[LokiLogHandler]) -> None:
    handler = ref()
    if handler is not None:
        handler._fresh_state()

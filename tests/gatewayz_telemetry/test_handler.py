"""The logging handler (gatewayz_telemetry._handler): ``emit`` only formats and queues, never
raises, ignores the sender's own records; the sender starts on the first record; ``close`` is
bounded and counts what it leaves. Handlers sit on private loggers (``make_logger``), never on
the root logger."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator

import pytest

from gatewayz_telemetry import TelemetrySettings
from gatewayz_telemetry._handler import LokiLogHandler, _reset_in_child
from gatewayz_telemetry._outbox import Counts
from tests.support.loki import Receiver, black_hole

MakeLogger = Callable[..., tuple[logging.Logger, LokiLogHandler]]
NEVER_CONTACTED = "http://127.0.0.1:9/loki/api/v1/push"  # no test here starts a sender on it


class Captured(logging.Handler):
    """Keeps the records it sees; ``seen`` is set at the first."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.seen.set()


@pytest.fixture
def quiet_handler() -> Iterator[LokiLogHandler]:
    handler = LokiLogHandler(TelemetrySettings(service_name="svc", loki_url=NEVER_CONTACTED))
    yield handler
    handler.close(timeout=1.0)


def _unformattable() -> logging.LogRecord:
    return logging.LogRecord("app", logging.ERROR, __file__, 1, "%d items", ("many",), None)


def test_a_handler_needs_a_loki_url() -> None:
    with pytest.raises(ValueError, match="loki_url"):
        LokiLogHandler(TelemetrySettings(service_name="svc"))


@pytest.mark.parametrize(("level", "number"), [("debug", 10), ("INFO", 20), ("warning", 30)])
def test_the_handler_level_is_the_settings_level(level: str, number: int) -> None:
    handler = LokiLogHandler(
        TelemetrySettings(service_name="svc", loki_url=NEVER_CONTACTED, log_level=level)
    )
    assert handler.level == number
    handler.close(timeout=0)


def test_a_handler_starts_its_sender_on_the_first_record_only(
    loki: Receiver, make_logger: MakeLogger
) -> None:
    logger, handler = make_logger(loki.url)
    assert not handler.sender_started  # set up in a --preload master: nothing runs there
    logger.info("first")
    assert handler.sender_started


def test_a_record_is_shipped_with_its_time_level_and_line(
    loki: Receiver, make_logger: MakeLogger
) -> None:
    logger, handler = make_logger(loki.url)
    captured = Captured()
    logger.addHandler(captured)
    logger.warning("disk %s", "full", extra={"provider": "openrouter"})
    assert handler.drain(timeout=10)
    [line] = loki.lines()
    [record] = captured.records
    assert line.timestamp_ns == int(record.created * 1e9)
    assert line.labels["level"] == "warning"
    assert line.line == f'msg="disk full" logger={logger.name} provider=openrouter'
    assert handler.counts() == Counts(1, 1, 0, 0, 0)
    assert handler.dropped == 0


def test_a_record_that_cannot_be_formatted_is_counted_dropped_and_never_raises(
    quiet_handler: LokiLogHandler, capsys: pytest.CaptureFixture[str]
) -> None:
    quiet_handler.handle(_unformattable())
    assert quiet_handler.counts() == Counts(1, 0, 1, 0, 0)
    assert quiet_handler.dropped == 1
    assert not quiet_handler.sender_started  # nothing was queued
    assert capsys.readouterr().err == ""  # no "--- Logging error ---" per record


def test_records_of_the_sender_thread_itself_are_not_queued(
    loki: Receiver, make_logger: MakeLogger
) -> None:
    """The sender's outage warning goes to ``telemetry.logs``: a handler there (as on the root
    logger) must not queue it, or every outage would feed itself."""
    loki.status = 500
    logger, handler = make_logger(loki.url)
    sender_logger = logging.getLogger("telemetry.logs")
    warned = Captured()
    sender_logger.addHandler(handler)
    sender_logger.addHandler(warned)  # after ours: when it sees the warning, ours has too
    try:
        logger.info("one")
        assert warned.seen.wait(10)
    finally:
        sender_logger.removeHandler(warned)
        sender_logger.removeHandler(handler)
    assert [r.thread for r in warned.records] != [threading.get_ident()]
    assert handler.drain(timeout=10)
    assert handler.counts() == Counts(1, 0, 1, 0, 0)  # the warning was never offered


def test_drain_without_a_sender_is_at_once_true(quiet_handler: LokiLogHandler) -> None:
    assert quiet_handler.drain(timeout=0)


def test_after_close_records_are_dropped_and_counted_and_no_sender_starts(
    quiet_handler: LokiLogHandler,
) -> None:
    quiet_handler.close(timeout=0)
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "late", (), None)
    quiet_handler.handle(record)
    quiet_handler.handle(record)
    assert quiet_handler.counts() == Counts(2, 0, 2, 0, 0)
    assert not quiet_handler.sender_started


def test_close_with_loki_black_holed_is_bounded_and_counts_everything_dropped(
    make_logger: MakeLogger,
) -> None:
    with black_hole() as url:
        logger, handler = make_logger(url, batch_size=10)
        for i in range(25):
            logger.info("line %d", i)
        started = time.monotonic()
        handler.close(timeout=0.3)
        elapsed = time.monotonic() - started
    assert elapsed < 2.0  # the push still hangs (read timeout 5 s): close does not wait on it
    assert handler.counts() == Counts(25, 0, 25, 0, 0)
    logger.info("after close")
    assert handler.counts() == Counts(26, 0, 26, 0, 0)


def test_a_forked_child_starts_from_an_empty_outbox_and_no_sender(
    quiet_handler: LokiLogHandler,
) -> None:
    quiet_handler.handle(_unformattable())
    assert quiet_handler.counts().offered == 1
    _reset_in_child(weakref.ref(quiet_handler))  # what os.fork runs in the child
    assert quiet_handler.counts() == Counts(0, 0, 0, 0, 0)
    assert not quiet_handler.sender_started


def test_a_fork_after_the_handler_is_gone_does_nothing() -> None:
    handler = LokiLogHandler(TelemetrySettings(service_name="svc", loki_url=NEVER_CONTACTED))
    ref = weakref.ref(handler)
    handler.close(timeout=0)
    del handler
    assert ref() is None
    _reset_in_child(ref)

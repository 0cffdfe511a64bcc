"""The Loki sender (gatewayz_telemetry._loki): the push body, one POST per batch against the
stand-in Loki of ``tests.support.loki`` (healthy, answering 500, refused, a black hole), the
outage logged once when it starts and once when it ends with the exact number lost, and the
sender thread's exit."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
import requests

from gatewayz_telemetry._loki import BatchEmitter, PushError, Sender, _describe
from gatewayz_telemetry._outbox import Counts, Entry, Outbox
from gatewayz_telemetry.settings import TelemetrySettings
from tests.support.loki import Receiver, black_hole, refused_url


def _settings(url: str, **overrides: object) -> TelemetrySettings:
    return TelemetrySettings(
        service_name="svc",
        loki_url=url,
        app="gw",
        environment="prod",
        **overrides,  # type: ignore[arg-type]
    )


def _entries(levels: str) -> list[Entry]:
    """One entry per letter: i(nfo), w(arning), e(rror); timestamps 1, 2, ..."""
    names = {"i": "info", "w": "warning", "e": "error"}
    return [Entry(n + 1, names[c], f"msg=m{n + 1}") for n, c in enumerate(levels)]


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def said() -> Iterator[list[logging.LogRecord]]:
    """What the sender says (it logs on ``telemetry.logs``)."""
    captured = Captured()
    logger = logging.getLogger("telemetry.logs")
    logger.addHandler(captured)
    yield captured.records
    logger.removeHandler(captured)


def test_the_push_body_is_one_stream_per_level_in_the_order_logged() -> None:
    emitter = BatchEmitter(_settings("http://loki:3100"))
    labels = {"app": "gw", "env": "prod", "service": "svc"}
    assert emitter.payload(_entries("iei")) == {
        "streams": [
            {"stream": {**labels, "level": "info"}, "values": [["1", "msg=m1"], ["3", "msg=m3"]]},
            {"stream": {**labels, "level": "error"}, "values": [["2", "msg=m2"]]},
        ]
    }
    assert emitter.payload([]) == {"streams": []}
    emitter.close()


def test_a_push_is_one_post_of_the_whole_batch(loki: Receiver) -> None:
    emitter = BatchEmitter(_settings(loki.url))
    emitter.push(_entries("iwi"))
    emitter.close()
    assert loki.pushes == 1
    assert [(line.labels["level"], line.timestamp_ns, line.line) for line in loki.lines()] == [
        ("info", 1, "msg=m1"),
        ("info", 3, "msg=m3"),
        ("warning", 2, "msg=m2"),
    ]
    assert {line.labels["app"] for line in loki.lines()} == {"gw"}


def test_a_push_loki_refuses_raises(loki: Receiver) -> None:
    loki.status = 500
    emitter = BatchEmitter(_settings(loki.url))
    with pytest.raises(PushError, match=r"^Loki answered HTTP 500$"):
        emitter.push(_entries("i"))
    loki.status = 400
    with pytest.raises(PushError, match=r"^Loki answered HTTP 400$"):
        emitter.push(_entries("i"))
    emitter.close()
    assert (loki.pushes, loki.failed_pushes, loki.lines()) == (0, 2, [])


def test_a_push_to_nobody_raises() -> None:
    emitter = BatchEmitter(_settings(refused_url()))
    with pytest.raises(requests.exceptions.ConnectionError):
        emitter.push(_entries("i"))
    emitter.close()


def test_a_push_into_a_black_hole_gives_up_after_the_read_timeout() -> None:
    with black_hole() as url:
        emitter = BatchEmitter(_settings(url, read_timeout_seconds=0.2))
        started = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):
            emitter.push(_entries("i"))
        elapsed = time.monotonic() - started
        emitter.close()
    assert 0.15 < elapsed < 5


def _in_flight(outbox: Outbox, levels: str) -> list[Entry]:
    for entry in _entries(levels):
        assert outbox.offer(entry)
    return outbox.take(100, timeout=0)


def test_an_outage_is_said_once_when_it_starts_and_once_when_it_ends(
    loki: Receiver, said: list[logging.LogRecord]
) -> None:
    outbox = Outbox(100)
    sender = Sender(outbox, _settings(loki.url))  # not started: the test sends
    loki.status = 500
    assert not sender._send(_in_flight(outbox, "iii"))
    assert outbox.counts() == Counts(3, 0, 3, 0, 0)
    assert not sender._send(_in_flight(outbox, "ee"))
    assert outbox.counts() == Counts(5, 0, 5, 0, 0)
    assert [r.getMessage() for r in said] == [
        "cannot push logs to Loki (PushError: Loki answered HTTP 500): dropping log records "
        "(counted) until it answers"
    ]
    loki.status = 204
    assert sender._send(_in_flight(outbox, "w"))
    assert outbox.counts() == Counts(6, 1, 5, 0, 0)
    assert said[1].getMessage() == "Loki takes logs again; 5 log records were dropped meanwhile"
    assert sender._send(_in_flight(outbox, "i"))
    assert len(said) == 2 and all(r.levelno == logging.WARNING for r in said)
    sender._emitter.close()


def test_the_count_lost_in_an_outage_includes_records_dropped_at_the_call(
    loki: Receiver, said: list[logging.LogRecord]
) -> None:
    outbox = Outbox(2)
    sender = Sender(outbox, _settings(loki.url))
    loki.status = 503
    assert not sender._send(_in_flight(outbox, "ii"))
    assert [outbox.offer(entry) for entry in _entries("iiii")] == [True, True, False, False]
    loki.status = 204
    assert sender._send(outbox.take(10, timeout=0))
    assert outbox.counts() == Counts(6, 2, 4, 0, 0)
    assert said[-1].getMessage() == "Loki takes logs again; 4 log records were dropped meanwhile"
    sender._emitter.close()


def test_a_sender_delivers_what_was_queued_then_ends_once_the_outbox_closes(
    loki: Receiver,
) -> None:
    outbox = Outbox(100)
    for entry in _entries("iiiii"):
        outbox.offer(entry)
    outbox.close()
    sender = Sender(outbox, _settings(loki.url, batch_size=2))
    sender.start()
    sender.join(timeout=10)
    assert not sender._thread.is_alive()
    assert outbox.counts() == Counts(5, 5, 0, 0, 0)
    assert loki.pushes == 3  # batches of 2, 2, 1
    assert [line.timestamp_ns for line in loki.lines()] == [1, 2, 3, 4, 5]


def test_a_sender_exiting_while_loki_fails_drops_the_rest_at_once(
    said: list[logging.LogRecord],
) -> None:
    outbox = Outbox(100)
    for entry in _entries("iiiiiii"):
        outbox.offer(entry)
    outbox.close()
    settings = _settings(refused_url(), batch_size=2, backoff_initial_seconds=60.0)
    sender = Sender(outbox, settings)
    sender.request_stop()  # as at exit: no back-off of 60 s
    started = time.monotonic()
    sender.start()
    sender.join(timeout=10)
    assert not sender._thread.is_alive()
    assert time.monotonic() - started < 5
    assert outbox.counts() == Counts(7, 0, 7, 0, 0)
    assert len(said) == 1  # the outage began; it never ended


@pytest.mark.parametrize(
    ("error", "described"),
    [
        (PushError("Loki answered HTTP 500"), "PushError: Loki answered HTTP 500"),
        (ValueError("first line\nsecond line"), "ValueError: first line"),
        (TimeoutError(), "TimeoutError"),
        (
            ConnectionError("Max retries exceeded with url: http://user:secret@loki:3100/push"),
            "ConnectionError",  # never a URL: it may carry credentials
        ),
    ],
)
def test_a_failure_is_described_by_its_class_and_first_line(
    error: BaseException, described: str
) -> None:
    assert _describe(error) == described

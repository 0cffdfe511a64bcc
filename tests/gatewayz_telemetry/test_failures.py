"""Loki refused, a black hole, Loki answering 500: every logging call returns at once, the
queue stays bounded, every record is delivered or counted dropped, and the outage is logged
once, never per record."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gatewayz_telemetry._handler import LokiLogHandler
from tests.support.loki import Receiver, black_hole, receiver, refused_url
from tests.support.processes import wait_for

ROOT = Path(__file__).resolve().parents[2]
MakeLogger = Callable[..., tuple[logging.Logger, LokiLogHandler]]
CALLS = 1000
QUEUE = 200
# Short timeouts so a black-holed push gives up within the test; the defaults are 2 s / 5 s.
FAST = {
    "queue_size": QUEUE,
    "batch_size": 50,
    "connect_timeout_seconds": 0.5,
    "read_timeout_seconds": 0.5,
    "backoff_initial_seconds": 0.05,
    "backoff_max_seconds": 0.2,
}


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def telemetry_warnings() -> Iterator[list[logging.LogRecord]]:
    """What the sender says about Loki (it logs on ``telemetry.logs``)."""
    captured = Captured()
    logger = logging.getLogger("telemetry.logs")
    logger.addHandler(captured)
    yield captured.records
    logger.removeHandler(captured)


@contextmanager
def _loki(kind: str) -> Iterator[tuple[str, Receiver | None]]:
    if kind == "refused":
        yield refused_url(), None
    elif kind == "black hole":
        with black_hole() as url:
            yield url, None
    else:
        with receiver() as server:
            server.status = 500
            yield server.url, server


@pytest.mark.parametrize("kind", ["refused", "black hole", "HTTP 500"])
def test_a_failing_loki_never_slows_a_logging_call_and_drops_are_exact(
    kind: str,
    make_logger: MakeLogger,
    telemetry_warnings: list[logging.LogRecord],
    capsys: pytest.CaptureFixture[str],
) -> None:
    with _loki(kind) as (url, server):
        logger, handler = make_logger(url, **FAST)
        durations, waiting = [], []
        for i in range(CALLS):
            started = time.perf_counter()
            logger.info("call %d", i, extra={"provider": "openrouter", "i": i})
            durations.append(time.perf_counter() - started)
            waiting.append(handler.counts().waiting)
        durations.sort()
        p50, p99, worst = durations[CALLS // 2], durations[CALLS * 99 // 100], durations[-1]
        with capsys.disabled():  # the figures the README quotes (pytest -s)
            us = f"p50 {p50 * 1e6:.1f} us, p99 {p99 * 1e6:.1f} us"
            print(f"\n{kind}: {us}, max {worst * 1e3:.2f} ms")
        # Never waited on Loki: a call that did would take a connect timeout (0.5 s) or more.
        # (Speed itself is a figure, printed above, not an assertion.)
        assert worst < FAST["connect_timeout_seconds"], (kind, worst)
        assert max(waiting) <= QUEUE  # bounded: the rest was dropped at the call
        assert handler.counts().dropped > 0
        # Whatever was queued is tried and dropped within the timeouts: nothing in between.
        wait_for(lambda: handler.counts().dropped == CALLS, timeout=30)
        counts = handler.counts()
        assert (counts.offered, counts.delivered, counts.waiting, counts.in_flight) == (
            CALLS,
            0,
            0,
            0,
        )
        if server is not None:
            assert server.failed_pushes > 0 and server.lines() == []
    # One warning when the outage began, none per record; nothing printed by logging.
    assert [r.levelno for r in telemetry_warnings] == [logging.WARNING]
    assert "Loki" in telemetry_warnings[0].getMessage()
    assert "Logging error" not in capsys.readouterr().err


def test_records_logged_are_delivered_plus_dropped_across_an_outage_and_recovery(
    loki: Receiver, make_logger: MakeLogger, telemetry_warnings: list[logging.LogRecord]
) -> None:
    logger, handler = make_logger(loki.url, **FAST)
    total = 0

    def burst(n: int) -> None:
        nonlocal total
        for _ in range(n):
            logger.info("n", extra={"seq": total})
            total += 1

    burst(300)
    assert handler.drain(timeout=10)
    loki.status = 500
    burst(2000)
    wait_for(lambda: loki.failed_pushes > 0)
    burst(2000)
    loki.status = 204
    wait_for(lambda: handler.counts().waiting == 0 and handler.counts().in_flight == 0)
    burst(300)
    assert handler.drain(timeout=10)
    delivered = len(loki.lines())
    counts = handler.counts()
    assert counts.delivered == delivered
    assert delivered + counts.dropped == total == counts.offered
    assert counts.dropped > 0 and delivered >= 600
    delivered_seqs = [int(line.fields()["seq"]) for line in loki.lines()]
    assert len(set(delivered_seqs)) == delivered  # none twice
    # The outage began once and ended once: two lines, not one per record.
    assert len(telemetry_warnings) == 2
    assert "dropped meanwhile" in telemetry_warnings[1].getMessage()


def test_exit_with_loki_black_holed_is_bounded_and_counts_what_is_left() -> None:
    with black_hole() as url:
        script = f"""
            import logging, time, gatewayz_telemetry
            gatewayz_telemetry.setup("exit-test", env={{"GATEWAYZ_LOKI_URL": {url!r}}})
            log = logging.getLogger("app")
            for i in range(500):
                log.info("line %d", i)
            started = time.monotonic()
            gatewayz_telemetry.shutdown(timeout=1.0)
            print(time.monotonic() - started, gatewayz_telemetry.log_records_dropped())
        """
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    shutdown_s, dropped = done.stdout.split()
    print(f"\nexit with a black hole: shutdown {float(shutdown_s):.2f} s, process {elapsed:.2f} s")
    assert float(shutdown_s) < 2.0
    assert int(dropped) == 500  # the default 5 s read timeout never answered: all dropped

"""Acknowledged writes a Redis lost are sent again (``client._acknowledged``, ``client._resend``),
on a real Redis that comes back behind its last writes: restarted from a snapshot taken before
them, as a promoted replica that had not replicated them is. Nothing is lost, nothing counted
twice, and what cannot be told apart from applied is not sent."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import ClientSettings, MetricsClient
from client._acknowledged import AcknowledgedLog
from devtools.redis_server import RedisProcess, local_connection, start_redis
from tests.support.load import counted
from tests.support.processes import need_redis_tools

NAMESPACE = "resend"


class Restartable:
    """A Redis that saves a snapshot only when told and, killed, comes back on its port from
    the last one."""

    def __init__(self, directory: Path) -> None:
        self._args = ("--dir", str(directory), "--dbfilename", "dump.rdb")
        self.server: RedisProcess = start_redis(extra_args=self._args)

    @property
    def url(self) -> str:
        return self.server.url

    def snapshot(self) -> None:
        with local_connection(self.server.port) as connection:
            connection.save()

    def crash_and_restart(self) -> None:
        self.server.kill()  # SIGKILL: what came after the snapshot is gone
        self.server = start_redis(self.server.port, extra_args=self._args)

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[Restartable]:
    need_redis_tools()
    server = Restartable(tmp_path)
    yield server
    server.stop()


def _record(metrics: MetricsClient, provider: str, calls: int) -> None:
    for i in range(calls):
        metrics.record(provider, 0.05, status_code=503 if i % 5 == 0 else 200)
    assert metrics.flush(timeout=30)


def test_writes_acknowledged_after_the_snapshot_a_restart_went_back_to_are_sent_again(
    restartable: Restartable, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = MetricsClient(settings=ClientSettings(redis_url=restartable.url, namespace=NAMESPACE))
    try:
        _record(metrics, "openrouter", 300)
        restartable.snapshot()
        for _ in range(4):  # four flushes Redis acknowledged, then lost with the crash
            _record(metrics, "openrouter", 50)
            _record(metrics, "anthropic", 25)
        restartable.crash_and_restart()
        assert counted(restartable.url, NAMESPACE, "openrouter") == (300, 300)
        with caplog.at_level(logging.WARNING, logger="gatewayz.metrics.client"):
            _record(metrics, "openrouter", 10)  # meets the restart: a failed round trip
        stats = metrics.stats()
    finally:
        metrics.close(timeout=5)
    assert counted(restartable.url, NAMESPACE, "openrouter") == (510, 510)
    assert counted(restartable.url, NAMESPACE, "anthropic") == (100, 100)
    assert stats["dropped"] == 0
    resent = [r.getMessage() for r in caplog.records if "sent again" in r.getMessage()]
    assert len(resent) == 1 and " lost 8 transactions " in resent[0], resent


def test_a_restart_that_lost_nothing_has_nothing_sent_again(
    restartable: Restartable, caplog: pytest.LogCaptureFixture
) -> None:
    """The snapshot holds every acknowledged write: the markers name the last transactions
    kept, and nothing is sent twice."""
    metrics = MetricsClient(settings=ClientSettings(redis_url=restartable.url, namespace=NAMESPACE))
    try:
        for _ in range(4):
            _record(metrics, "openrouter", 50)
            _record(metrics, "anthropic", 25)
        restartable.snapshot()
        restartable.crash_and_restart()
        with caplog.at_level(logging.WARNING, logger="gatewayz.metrics.client"):
            _record(metrics, "openrouter", 10)
    finally:
        metrics.close(timeout=5)
    assert counted(restartable.url, NAMESPACE, "openrouter") == (210, 210)
    assert counted(restartable.url, NAMESPACE, "anthropic") == (100, 100)
    assert not [r for r in caplog.records if "sent again" in r.getMessage()]


@pytest.mark.parametrize("max_kept", [8, 6])
def test_what_is_kept_after_a_forgotten_marker_is_sent_again_and_the_rest_reported_lost(
    restartable: Restartable,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    max_kept: int,
) -> None:
    """The log keeps only the last ``max_kept`` transactions (as a worker flat out past its
    budget keeps few): the one whose marker the snapshot holds is no longer kept, but every
    kept one came after it, so all are sent again (before, a marker naming nothing kept sent
    nothing: 200 calls lost). With 6 kept, the first 2 of the 8 lost are gone for good, and
    the worker says so."""
    monkeypatch.setattr(
        "client._writer.AcknowledgedLog", functools.partial(AcknowledgedLog, max_kept=max_kept)
    )
    metrics = MetricsClient(settings=ClientSettings(redis_url=restartable.url, namespace=NAMESPACE))
    try:
        _record(metrics, "openrouter", 300)
        restartable.snapshot()
        for _ in range(4):  # eight transactions, acknowledged and then lost
            _record(metrics, "openrouter", 50)
            _record(metrics, "anthropic", 25)
        restartable.crash_and_restart()
        with caplog.at_level(logging.WARNING, logger="gatewayz.metrics.client"):
            _record(metrics, "openrouter", 10)
    finally:
        metrics.close(timeout=5)
    gone = 8 - max_kept  # the oldest transactions: one of each provider's per round
    openrouter, anthropic = 510 - 50 * gone // 2, 100 - 25 * gone // 2
    assert counted(restartable.url, NAMESPACE, "openrouter") == (openrouter, openrouter)
    assert counted(restartable.url, NAMESPACE, "anthropic") == (anthropic, anthropic)
    messages = [r.getMessage() for r in caplog.records]
    resent = [m for m in messages if "sent again" in m]
    assert len(resent) == 1 and f" lost {max_kept} transactions " in resent[0], resent
    for_good = [m for m in messages if "lost for good" in m]
    assert len(for_good) == (1 if gone else 0), for_good
    assert all(f" lost {gone} transactions " in m for m in for_good)

"""ProcessParts: what a process (and each forked child) gets of its own. Built against a Redis
that cannot answer: building does no I/O and starts no thread (a preload master only builds)."""

from __future__ import annotations

import socket
import threading
import time

from client import MetricsClient
from client._events import Event
from client._instruments import InstrumentStore
from client._process_parts import ProcessParts
from client._settings import ClientSettings
from gatewayz_protocol.keys import Keys

NOWHERE = ClientSettings(redis_url="redis://127.0.0.1:1/0", namespace="parts", max_buffer=3)


def build() -> ProcessParts:
    store = InstrumentStore(100, clock=lambda: 1.0)
    return ProcessParts.build(NOWHERE, Keys("parts"), store, lambda: 1.0, shared_clock=True)


def _event(i: int) -> Event:
    return ("openrouter", 1_800_000_000.0 + i, 0.1, 0, 0, 0, None)


def test_building_does_no_io_and_starts_no_thread() -> None:
    threads = threading.active_count()
    parts = build()  # nothing answers on port 1: any I/O would fail
    assert parts.flusher.started is False
    assert threading.active_count() == threads


def test_each_build_is_a_process_of_its_own() -> None:
    parent, child = build(), build()
    assert parent.writer_id != child.writer_id  # its events and gauge values named apart
    assert len(parent.writer_id) == 8  # 6 random bytes, URL-safe base64
    parent.buffer.append(_event(0))
    parent.ledger.reject("invalid_cost")
    assert (len(child.buffer), child.ledger.stats()["rejected"]) == (0, {})


def test_the_buffer_holds_max_buffer_events_and_its_evictions_are_counted() -> None:
    parts = build()
    for i in range(5):
        parts.buffer.append(_event(i))
    assert [event[1] for event in parts.buffer.take(10)] == [
        1_800_000_002.0,
        1_800_000_003.0,
        1_800_000_004.0,
    ]
    assert parts.ledger.stats()["dropped_by_cause"] == {"buffer_full": 2}


def test_allow_waits_at_most_allow_timeout_whatever_the_urls_socket_timeout() -> None:
    """The breaker connection keeps ``allow_timeout_seconds`` (how long ``allow()`` may wait
    on Redis) over a URL's ``?socket_timeout=``, which sets the writer's connection. Before, the
    URL's won there too: against a Redis that never answers, the first ``allow()`` of a
    provider waited the URL's 5 s, not 0.2 s."""
    silent = socket.socket()  # accepts connections (the kernel's backlog), never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    settings = ClientSettings(
        redis_url=f"redis://127.0.0.1:{port}/0?socket_timeout=5",
        namespace="parts",
        allow_timeout_seconds=0.2,
    )
    metrics = MetricsClient(settings=settings)
    try:
        started = time.monotonic()
        assert metrics.allow("acme") is True  # Redis did not answer: fail open
        waited = time.monotonic() - started
    finally:
        metrics.close(timeout=0.5)
        silent.close()
    assert waited < 2.5  # 0.2 s and some scheduling; the URL's 5 s before

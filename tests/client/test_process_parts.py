"""ProcessParts: what a process (and each forked child) gets of its own. Built against a Redis
that cannot answer: building does no I/O and starts no thread (a preload master only builds)."""

from __future__ import annotations

import threading

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

"""The bounded queue between logging calls and the sender (gatewayz_telemetry._outbox): its
bound, its exact accounting (``offered == delivered + dropped + waiting + in flight``), what a
flush waits for, and the exit. Pure: no sender thread, no network; waits are given timeout 0
or are woken by the test itself."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayz_telemetry._outbox import Counts, Entry, Outbox
from tests.support.strategies import property_settings


def _entry(i: int) -> Entry:
    return Entry(timestamp_ns=i, level="info", line=f"msg=line{i}")


def _fill(outbox: Outbox, n: int, start: int = 0) -> list[bool]:
    return [outbox.offer(_entry(i)) for i in range(start, start + n)]


def test_offer_queues_up_to_the_capacity_then_drops_and_counts() -> None:
    outbox = Outbox(3)
    assert _fill(outbox, 5) == [True, True, True, False, False]
    assert outbox.counts() == Counts(offered=5, delivered=0, dropped=2, waiting=3, in_flight=0)


def test_take_hands_out_entries_in_order_and_they_are_in_flight_until_settled() -> None:
    outbox = Outbox(10)
    _fill(outbox, 5)
    assert outbox.take(2, timeout=0) == [_entry(0), _entry(1)]
    assert outbox.counts() == Counts(5, 0, 0, 3, 2)
    assert outbox.take(10, timeout=0) == [_entry(2), _entry(3), _entry(4)]
    assert outbox.counts() == Counts(5, 0, 0, 0, 5)
    outbox.settle(delivered=4, dropped=1)
    assert outbox.counts() == Counts(5, 4, 1, 0, 0)
    assert outbox.take(10, timeout=0) == []


def test_a_taken_entry_frees_its_place() -> None:
    outbox = Outbox(2)
    _fill(outbox, 2)
    outbox.take(1, timeout=0)
    assert _fill(outbox, 2, start=2) == [True, False]
    assert outbox.counts() == Counts(4, 0, 1, 2, 1)


def test_a_record_that_could_not_be_queued_is_offered_and_dropped() -> None:
    outbox = Outbox(2)
    outbox.count_dropped()
    assert outbox.counts() == Counts(1, 0, 1, 0, 0)


def test_drop_waiting_drops_and_counts_what_is_queued() -> None:
    outbox = Outbox(10)
    _fill(outbox, 4)
    outbox.take(1, timeout=0)
    assert outbox.drop_waiting() == 3
    assert outbox.counts() == Counts(4, 0, 3, 0, 1)
    assert outbox.drop_waiting() == 0


def test_a_closed_outbox_refuses_and_counts_every_record() -> None:
    outbox = Outbox(10)
    _fill(outbox, 2)
    assert not outbox.closed
    outbox.close()
    assert outbox.closed
    assert _fill(outbox, 3, start=2) == [False, False, False]
    assert outbox.counts() == Counts(5, 0, 3, 2, 0)
    assert outbox.take(10, timeout=0) == [_entry(0), _entry(1)]  # what waits still goes


def test_take_on_a_closed_empty_outbox_does_not_wait() -> None:
    outbox = Outbox(10)
    outbox.close()
    started = time.monotonic()
    assert outbox.take(10, timeout=60) == []
    assert time.monotonic() - started < 5


def test_a_take_waiting_for_a_first_entry_gets_it_when_offered() -> None:
    outbox = Outbox(10)
    taken: list[list[Entry]] = []
    thread = threading.Thread(target=lambda: taken.append(outbox.take(5, timeout=30)))
    thread.start()
    outbox.offer(_entry(7))  # before or during the wait: either way it is taken
    thread.join(10)
    assert not thread.is_alive()
    assert taken == [[_entry(7)]]


def test_abandoning_counts_in_flight_dropped_and_voids_the_late_settle() -> None:
    outbox = Outbox(10)
    _fill(outbox, 3)
    outbox.take(2, timeout=0)
    outbox.close()
    assert outbox.drop_waiting() == 1
    outbox.abandon_in_flight()
    assert outbox.counts() == Counts(3, 0, 3, 0, 0)
    outbox.settle(delivered=2, dropped=0)  # the push came back after the exit: void
    assert outbox.counts() == Counts(3, 0, 3, 0, 0)
    assert outbox.wait_settled(timeout=0)


def test_wait_settled_waits_for_every_queued_record() -> None:
    outbox = Outbox(2)
    assert outbox.wait_settled(timeout=0)  # nothing offered
    _fill(outbox, 3)  # the third dropped at the call: settled already
    assert not outbox.wait_settled(timeout=0)
    outbox.take(1, timeout=0)
    outbox.settle(1, 0)
    assert not outbox.wait_settled(timeout=0)  # one still waiting
    outbox.take(1, timeout=0)
    assert not outbox.wait_settled(timeout=0)  # in flight
    outbox.settle(0, 1)
    assert outbox.wait_settled(timeout=0)
    _fill(outbox, 1, start=3)
    assert not outbox.wait_settled(timeout=0)
    outbox.drop_waiting()
    assert outbox.wait_settled(timeout=0)


def test_a_waiting_flush_is_woken_by_the_settle() -> None:
    outbox = Outbox(10)
    _fill(outbox, 2)
    batch = outbox.take(2, timeout=0)
    settled: list[bool] = []
    thread = threading.Thread(target=lambda: settled.append(outbox.wait_settled(timeout=30)))
    thread.start()
    outbox.settle(len(batch), 0)
    thread.join(10)
    assert not thread.is_alive()
    assert settled == [True]


def test_entries_are_frozen() -> None:
    entry = _entry(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.line = "other"  # type: ignore[misc]


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("offer"), st.integers(1, 5)),
        st.tuples(st.just("count_dropped"), st.just(1)),
        st.tuples(st.just("take"), st.integers(1, 6)),
        st.tuples(st.just("settle"), st.integers(0, 6)),
        st.tuples(st.just("drop_waiting"), st.just(0)),
        st.tuples(st.just("close"), st.just(0)),
    ),
    max_size=60,
)


@property_settings(300)
@given(capacity=st.integers(1, 8), operations=OPERATIONS, abandon=st.booleans())
def test_every_record_offered_is_accounted_for_exactly_once(
    capacity: int, operations: list[tuple[str, int]], abandon: bool
) -> None:
    outbox = Outbox(capacity)
    # the model, by hand
    offered = delivered = dropped = in_flight = 0
    waiting: list[Entry] = []
    closed = False
    serial = 0
    for operation, n in operations:
        if operation == "offer":
            for _ in range(n):
                entry = _entry(serial)
                serial += 1
                accepted = outbox.offer(entry)
                offered += 1
                if closed or len(waiting) >= capacity:
                    assert not accepted
                    dropped += 1
                else:
                    assert accepted
                    waiting.append(entry)
        elif operation == "count_dropped":
            outbox.count_dropped()
            offered += 1
            dropped += 1
        elif operation == "take":
            expected, waiting = waiting[:n], waiting[n:]
            assert outbox.take(n, timeout=0) == expected
            in_flight += len(expected)
        elif operation == "settle":
            settled = min(n, in_flight)
            outbox.settle(settled // 2, settled - settled // 2)
            delivered += settled // 2
            dropped += settled - settled // 2
            in_flight -= settled
        elif operation == "drop_waiting":
            assert outbox.drop_waiting() == len(waiting)
            dropped += len(waiting)
            waiting = []
        else:
            outbox.close()
            closed = True
        counts = outbox.counts()
        assert counts == Counts(offered, delivered, dropped, len(waiting), in_flight)
        assert (
            counts.offered == counts.delivered + counts.dropped + counts.waiting + counts.in_flight
        )
        assert counts.waiting <= capacity
        assert outbox.wait_settled(timeout=0) is (not waiting and in_flight == 0)
    if abandon:
        outbox.close()
        outbox.drop_waiting()
        outbox.abandon_in_flight()
        outbox.settle(1, 0)
        assert outbox.counts() == Counts(offered, delivered, offered - delivered, 0, 0)
        assert outbox.wait_settled(timeout=0)

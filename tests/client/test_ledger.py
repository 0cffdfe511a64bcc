"""The Ledger: notes, settling and flush()'s wait. Pure, no Redis, no sleeps."""

from __future__ import annotations

from client._ledger import Ledger, Mark, Notes


def test_notes_are_taken_once_and_stay_in_the_totals() -> None:
    ledger = Ledger()
    assert ledger.reject("invalid_latency") is True  # the first of its cause: log it
    assert ledger.reject("invalid_latency") is False
    ledger.reject("too_many_providers", 3, settles=3)
    ledger.reject_call("openrouter")
    ledger.evicted()
    notes = ledger.take_notes()
    assert notes.rejected == {"invalid_latency": 2, "too_many_providers": 3}
    assert notes.breaker_rejected == {"openrouter": 1}
    assert notes.dropped == {"buffer_full": 1}
    assert notes.version == 5
    assert ledger.take_notes() == Notes({}, {}, {}, 5)
    stats = ledger.stats()
    assert stats["rejected"] == {"invalid_latency": 2, "too_many_providers": 3}
    assert (stats["dropped"], stats["settled"]) == (1, 4)  # 3 refused + 1 evicted events


def test_a_flush_target_is_reached_when_events_notes_and_instruments_are_written() -> None:
    ledger = Ledger()
    ledger.reject("invalid_cost")
    target, dropped = ledger.target(buffered=10, instruments_version=7)
    assert target == Mark(10, 1, 7)
    notes = ledger.take_notes()
    ledger.settle(6, notes, 7)
    assert ledger.wait(target, dropped, 0.0) is False  # 4 events to go
    ledger.settle(4, ledger.take_notes(), 7)
    assert ledger.wait(target, dropped, 0.0) is True


def test_lost_events_are_counted_as_dropped_and_fail_the_flush_that_waited() -> None:
    ledger = Ledger()
    target, dropped = ledger.target(buffered=5, instruments_version=0)
    ledger.settle(5, ledger.take_notes(), 0, lost=2, write_error=True)
    assert ledger.wait(target, dropped, 0.0) is False  # settled, but not all got there
    assert ledger.stats()["dropped"] == 2
    assert ledger.stats()["write_errors"] == 1
    assert ledger.take_notes().dropped == {"refused": 2}  # goes out with the next batch
    later, dropped = ledger.target(buffered=5, instruments_version=0)
    ledger.settle(0, Notes({}, {}, {}, later.notes), 0)
    assert ledger.wait(later, dropped, 0.0) is True


def test_notes_that_did_not_reach_redis_are_noted_again() -> None:
    ledger = Ledger()
    ledger.reject("invalid_outcome")
    ledger.reject_call("anthropic")
    target, dropped = ledger.target(buffered=0, instruments_version=0)
    notes = ledger.take_notes()
    ledger.settle(0, notes, 0, notes_lost=True)
    assert ledger.wait(target, dropped, 0.0) is False  # the notes are not in Redis
    again = ledger.take_notes()
    assert (again.rejected, again.breaker_rejected) == (notes.rejected, notes.breaker_rejected)
    ledger.settle(0, again, 0)
    assert ledger.wait(target, dropped, 0.0) is True


def test_a_write_redis_refused_or_updates_lost_fail_the_flush_that_waited() -> None:
    # every write of a batch must get there: a refused totals or gauge write drops no event,
    # lost backend metric updates neither; flush() says False all the same
    ledger = Ledger()
    target, losses = ledger.target(buffered=3, instruments_version=0)
    ledger.settle(3, ledger.take_notes(), 0, write_error=True)
    assert ledger.wait(target, losses, 0.0) is False
    assert ledger.stats()["dropped"] == 0
    target, losses = ledger.target(buffered=3, instruments_version=4)
    ledger.settle(0, ledger.take_notes(), 4, cause="shutdown", updates_lost=12)
    assert ledger.wait(target, losses, 0.0) is False
    assert ledger.stats()["metric_updates_dropped"] == {"shutdown": 12}
    target, losses = ledger.target(buffered=3, instruments_version=4)
    assert ledger.wait(target, losses, 0.0) is True  # nothing given up on since


def test_a_call_after_close_is_a_drop_that_waits_for_no_batch() -> None:
    ledger = Ledger()
    target, losses = ledger.target(buffered=0, instruments_version=0)
    assert ledger.dropped_after_close() is True  # the first: log it
    assert ledger.dropped_after_close() is False
    assert not ledger.has_notes()  # nothing will write a note after close
    assert ledger.target(buffered=0, instruments_version=0) == (target, losses)
    assert ledger.wait(target, losses, 0.0) is True  # refused, not given up on: flush() holds
    stats = ledger.stats()
    assert (stats["dropped"], stats["dropped_by_cause"], stats["settled"]) == (2, {"closed": 2}, 0)

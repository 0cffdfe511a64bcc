"""The log of acknowledged transactions a failover may still lose (pure, an injected clock): what
it keeps, for how long, and which transactions a marker read after a failover says were lost."""

from __future__ import annotations

from client._acknowledged import IN_ORDER, MAX_FORGOTTEN, AcknowledgedLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _log(clock: Clock, keep_seconds: float = 5.0, max_kept: int = 512) -> AcknowledgedLog[str]:
    return AcknowledgedLog(keep_seconds=keep_seconds, max_kept=max_kept, monotonic=clock)


def _ack(acked: AcknowledgedLog[str], unit: int, name: str, previous: str | None) -> None:
    """``name``'s transaction acknowledged by a master that held ``previous``'s marker."""
    acked.acknowledged(
        unit, f"m{name}", f"t{name}", previous=f"m{previous}".encode() if previous else None
    )


def test_nothing_is_checked_while_round_trips_succeed() -> None:
    acked = _log(Clock())
    for n in range(3):
        _ack(acked, 0, str(n), str(n - 1) if n else None)
    assert not acked.suspect and acked.to_check == []
    acked.failed()
    assert acked.suspect and acked.to_check == [0]


def test_the_transactions_after_the_one_the_marker_names_are_the_lost_ones() -> None:
    acked = _log(Clock())
    for n in range(5):
        _ack(acked, 0, str(n), str(n - 1) if n else None)
    acked.failed()
    assert [k.payload for k in acked.lost(0, b"m2")] == ["t3", "t4"]
    # the master has t0-t2: forgotten; t3 and t4, sent again, may be lost again
    assert len(acked) == 2
    assert [k.payload for k in acked.lost(0, "m3")] == ["t4"]
    assert acked.lost(0, "m4") == [] and len(acked) == 0


def test_a_marker_naming_nothing_kept_sends_nothing_and_forgets_the_unit() -> None:
    for marker in (None, b"a transaction whose reply was lost", b"m-never-kept"):
        acked = _log(Clock())
        _ack(acked, 0, "0", None)
        _ack(acked, 0, "1", "0")
        acked.failed()
        assert acked.lost(0, marker) == []
        assert len(acked) == 0


def test_units_are_apart() -> None:
    acked = _log(Clock())
    acked.acknowledged(7, "a0", "slot 7 t0")
    acked.acknowledged(9, "b0", "slot 9 t0")
    acked.acknowledged(7, "a1", "slot 7 t1", previous=b"a0")
    acked.failed()
    assert sorted(acked.to_check) == [7, 9]
    assert [k.payload for k in acked.lost(7, "a0")] == ["slot 7 t1"]
    assert acked.lost(9, "b0") == []
    acked.checked()
    assert not acked.suspect and acked.to_check == []
    assert len(acked) == 1


def test_old_transactions_are_forgotten_unless_a_round_trip_failed_since() -> None:
    clock = Clock()
    acked = _log(clock, keep_seconds=5.0)
    _ack(acked, 0, "0", None)
    clock.now += 4.0
    _ack(acked, 0, "1", "0")
    clock.now += 2.0  # t0 is 6 s old
    _ack(acked, 0, "2", "1")
    assert len(acked) == 2
    acked.failed()
    clock.now += 60.0  # an outage of a minute: what it may have lost is kept
    _ack(acked, 0, "3", "2")
    assert len(acked) == 3
    assert [k.payload for k in acked.lost(0, "m1")] == ["t2", "t3"]
    acked.checked()  # checked: the old ones go, the one just acknowledged stays
    assert len(acked) == 1


def test_each_unit_keeps_at_most_max_kept_the_oldest_going_first() -> None:
    acked = _log(Clock(), max_kept=3)
    for n in range(5):
        _ack(acked, 0, str(n), str(n - 1) if n else None)
    acked.failed()
    assert len(acked) == 3
    assert [k.payload for k in acked.lost(0, "m3")] == ["t4"]


def test_a_marker_naming_a_forgotten_transaction_sends_every_one_still_kept() -> None:
    """t0 and t1 went past max_kept: a master holding t1's marker (or t0's) applied nothing
    after it, and everything kept came after it."""
    for marker in (b"m1", b"m0"):
        acked = _log(Clock(), max_kept=3)
        for n in range(5):
            _ack(acked, 0, str(n), str(n - 1) if n else None)
        acked.failed()
        assert [k.payload for k in acked.lost(0, marker)] == ["t2", "t3", "t4"]
        assert len(acked) == 3  # sent again, they may be lost again
        assert acked.lost(0, b"m4") == [] and len(acked) == 0


def test_applied_transactions_are_forgotten_and_known_when_a_later_failover_goes_back() -> None:
    acked = _log(Clock())
    for n in range(4):
        _ack(acked, 0, str(n), str(n - 1) if n else None)
    acked.failed()
    assert [k.payload for k in acked.lost(0, b"m2")] == ["t3"]  # t0-t2 applied: forgotten
    acked.failed()  # another failover, to a replica that had only t1
    assert [k.payload for k in acked.lost(0, b"m1")] == ["t3"]  # t2's loss cannot be mended


def test_only_the_last_max_forgotten_markers_are_remembered() -> None:
    acked = _log(Clock(), max_kept=1)
    for n in range(MAX_FORGOTTEN + 2):
        _ack(acked, 0, str(n), str(n - 1) if n else None)
    acked.failed()
    assert [k.payload for k in acked.lost(0, b"m1")] == [f"t{MAX_FORGOTTEN + 1}"]
    assert acked.lost(0, b"m0") == [] and len(acked) == 0  # no longer known: nothing sent


def test_a_transaction_that_found_an_earlier_marker_has_the_ones_in_between_sent_after_it() -> None:
    """No round trip failed (a connection opened again without a word, a master restarted on
    its address): the transaction itself read an earlier marker than the writer's last."""
    acked = _log(Clock())
    for n in range(4):
        _ack(acked, 0, str(n), str(n - 1) if n else None)
    assert not acked.suspect
    acked.acknowledged(0, "m4", "t4", previous=b"m1")  # t2 and t3 are not on this master
    assert acked.suspect and acked.to_check == [0]
    # the master applied t4 after t1: read again, its marker names t4, and t2, t3 follow it
    assert [k.payload for k in acked.lost(0, b"m4")] == ["t2", "t3"]


def test_a_transaction_that_found_no_marker_or_an_unknown_one_sends_nothing() -> None:
    for previous in (None, b"m-a-transaction-whose-reply-was-lost"):
        acked = _log(Clock())
        _ack(acked, 0, "0", None)
        _ack(acked, 0, "1", "0")
        acked.acknowledged(0, "m2", "t2", previous=previous)
        assert not acked.suspect and len(acked) == 1
        _ack(acked, 0, "3", "2")
        assert not acked.suspect and len(acked) == 2


def test_past_the_size_budget_the_oldest_go_first_whatever_their_unit() -> None:
    acked = AcknowledgedLog[str](keep_seconds=60.0, max_size=10, monotonic=Clock())
    acked.acknowledged(1, "a0", "slot 1 t0", size=4)
    acked.acknowledged(2, "b0", "slot 2 t0", size=4)
    acked.acknowledged(1, "a1", "slot 1 t1", previous=b"a0", size=4)  # 12: slot 1 t0 goes
    assert acked.size == 8 and len(acked) == 2
    acked.acknowledged(2, "b1", "slot 2 t1", previous=b"b0", size=4)  # 12: slot 2 t0 goes
    assert acked.size == 8
    acked.failed()
    assert [k.payload for k in acked.lost(1, b"a1")] == []  # slot 1 t1 kept
    assert [k.payload for k in acked.lost(2, b"b0")] == ["slot 2 t1"]  # slot 2 t0 forgotten
    assert acked.lost(2, b"b-unknown") == []
    assert acked.size == 0 and len(acked) == 0


def test_the_budget_counts_what_a_loss_put_back_once() -> None:
    acked = AcknowledgedLog[str](keep_seconds=60.0, max_size=100, monotonic=Clock())
    for n in range(4):
        acked.acknowledged(
            0, f"m{n}", f"t{n}", previous=f"m{n - 1}".encode() if n else None, size=5
        )
    acked.acknowledged(0, "m4", "t4", previous=b"m1", size=5)  # t2, t3 lost: after t4 now
    assert acked.size == 15 and len(acked) == 3
    assert [k.payload for k in acked.lost(0, b"m4")] == ["t2", "t3"]
    assert acked.size == 10


def test_what_was_forgotten_after_the_named_marker_is_counted_lost_for_good() -> None:
    acked = _log(Clock(), max_kept=2)
    for n in range(6):  # t0-t3 forgotten, t4 and t5 kept
        _ack(acked, 0, str(n), str(n - 1) if n else None)
    acked.acknowledged(1, "other0", "another unit's")
    acked.failed()
    assert [k.payload for k in acked.lost(0, b"m1")] == ["t4", "t5"]
    assert acked.lost_for_good == 2  # t2 and t3: neither on the master nor kept
    assert [k.payload for k in acked.lost(0, b"m3")] == ["t4", "t5"]
    assert acked.lost_for_good == 2


def test_a_marker_naming_a_lost_reply_takes_what_is_kept_as_applied_and_remembers_it() -> None:
    """t2's reply was lost and it ran (its marker is on the master): t0 and t1, before it, are
    applied. Found to have run, t2 is kept; a later master holding t1 lacks t2."""
    acked = _log(Clock())
    _ack(acked, 0, "0", None)
    _ack(acked, 0, "1", "0")
    acked.failed()
    assert acked.lost(0, b"m2") == [] and len(acked) == 0
    acked.acknowledged(0, "m2", "t2", previous=IN_ORDER)  # found to have run: kept as it ran
    acked.checked()
    acked.failed()
    assert [k.payload for k in acked.lost(0, b"m1")] == ["t2"]
    assert acked.lost_for_good == 0

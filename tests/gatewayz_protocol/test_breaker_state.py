"""A provider's breaker hash (gatewayz_protocol.breaker_state): the field/value pairs the
transition script writes, and what the aggregator and the workers read back. Pure, no Redis."""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayz_protocol.breaker_state import (
    CLOSED,
    FORCED_FIELD,
    HALF_OPEN,
    OPEN,
    STATE_FIELD,
    STATES,
    BreakerState,
    decode_breaker,
    decode_state_name,
    encode_breaker,
    is_transition_field,
    read_breaker,
)
from gatewayz_protocol.scripts import PERMIT
from tests.support.strategies import CLOCKS, property_settings


def _as_hgetall(pairs: list[str]) -> dict[bytes, bytes]:
    """What HGETALL returns after ``HSET key *pairs`` (redis-py, bytes)."""
    assert len(pairs) % 2 == 0
    return {pairs[i].encode(): pairs[i + 1].encode() for i in range(0, len(pairs), 2)}


def test_the_state_names_and_fields_workers_read() -> None:
    assert (CLOSED, OPEN, HALF_OPEN) == ("closed", "open", "half_open")
    assert STATES == ("closed", "open", "half_open")
    assert (STATE_FIELD, FORCED_FIELD) == ("state", "forced")


def test_a_default_breaker_is_closed_never_transitioned() -> None:
    assert BreakerState() == BreakerState(
        state="closed", since=0.0, epoch=0, open_until=0.0, consecutive_opens=0, forced=False
    )


def test_a_breaker_state_is_immutable() -> None:
    state = BreakerState()
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.state = "open"  # type: ignore[misc]


def test_encode_writes_every_field_then_the_permit_fields() -> None:
    state = BreakerState(
        state="half_open",
        since=1_800_000_000.25,
        epoch=7,
        open_until=1_800_000_030.5,
        consecutive_opens=3,
        forced=True,
    )
    assert encode_breaker(state, permits=5, permit_seconds=30.0) == [
        "state", "half_open",
        "since", "1800000000.25",
        "epoch", "7",
        "open_until", "1800000030.5",
        "consecutive_opens", "3",
        "forced", "1",
        "permits", "5",
        "permit_ms", "30000",
    ]  # fmt: skip
    assert encode_breaker(BreakerState(), permits=1, permit_seconds=0.25) == [
        "state", "closed",
        "since", "0.0",
        "epoch", "0",
        "open_until", "0.0",
        "consecutive_opens", "0",
        "forced", "0",
        "permits", "1",
        "permit_ms", "250",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("permit_seconds", "permit_ms"),
    [(30.0, "30000"), (2, "2000"), (0.25, "250"), (0.001, "1"), (0.0004, "1"), (0.0, "1")],
)
def test_the_permit_lifetime_is_in_ms_and_at_least_one(
    permit_seconds: float, permit_ms: str
) -> None:
    fields = encode_breaker(BreakerState(), permits=2, permit_seconds=permit_seconds)
    assert fields[-2:] == ["permit_ms", permit_ms]


@pytest.mark.parametrize(("permit_seconds", "permit_ms"), [(1.005, "1005"), (1.001, "1001")])
def test_a_permit_lifetime_in_ms_is_not_cut_by_float_error(
    permit_seconds: float, permit_ms: str
) -> None:
    fields = encode_breaker(BreakerState(), permits=2, permit_seconds=permit_seconds)
    assert fields[-2:] == ["permit_ms", permit_ms]


def test_the_permit_script_reads_the_fields_encode_writes() -> None:
    read = re.search(r"redis\.call\('HMGET', KEYS\[1\], ([^)]*)\)", PERMIT)
    assert read is not None
    names = [name.strip().strip("'") for name in read.group(1).split(",")]
    assert names == ["state", "permits", "permit_ms"]
    written = encode_breaker(BreakerState(), permits=3, permit_seconds=1.0)[::2]
    assert set(names) <= set(written)


# Epochs of at most 15 digits: the transition script compares them as Lua numbers (doubles,
# exact below 2**53) and both it and the reader take no longer one; a breaker counts one per
# transition, so none comes near.
STORED_STATES = st.builds(
    BreakerState,
    state=st.sampled_from(STATES),
    since=CLOCKS,
    epoch=st.integers(0, 10**15 - 1),
    open_until=CLOCKS,
    consecutive_opens=st.integers(0, 10**6),
    forced=st.booleans(),
)


@property_settings(300)
@given(state=STORED_STATES, permits=st.integers(1, 1000), seconds=st.floats(0.001, 3600))
def test_what_encode_writes_decodes_to_the_same_state(
    state: BreakerState, permits: int, seconds: float
) -> None:
    assert decode_breaker(_as_hgetall(encode_breaker(state, permits, seconds))) == state


def test_a_missing_hash_is_a_default_closed_breaker() -> None:
    assert decode_breaker({}) == BreakerState()


def test_missing_fields_take_their_defaults_and_unknown_fields_are_ignored() -> None:
    assert decode_breaker({b"state": b"open"}) == BreakerState(state="open")
    assert decode_breaker(
        {b"epoch": b"4", b"fence": b"12", b"permits": b"5", b"permit_ms": b"30000"}
    ) == BreakerState(epoch=4)


@pytest.mark.parametrize(("raw", "forced"), [(b"1", True), (b"0", False), (b"true", False)])
def test_only_1_marks_a_forced_state(raw: bytes, forced: bool) -> None:
    assert decode_breaker({b"state": b"open", b"forced": raw}).forced is forced


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (None, "closed"),
        (b"", "closed"),
        ("", "closed"),
        (b"open", "open"),
        (b"half_open", "half_open"),
        ("open", "open"),
    ],
)
def test_a_state_field_as_a_worker_reads_it(raw: bytes | str | None, name: str) -> None:
    assert decode_state_name(raw) == name


def test_a_hand_edited_breaker_reads_with_defaults_and_names_what_it_skipped() -> None:

    state, bad = read_breaker(
        {
            b"state": b"open",
            b"epoch": b"abc",
            b"since": b"nan",
            b"open_until": b"12.5",
            b"consecutive_opens": b"-1",
            b"\xff": b"x",
        }
    )
    assert state == BreakerState("open", 0.0, 0, 12.5, 0)
    assert sorted(bad) == sorted(["\ufffd", "since", "epoch", "consecutive_opens"])
    state, bad = read_breaker({b"state": b"isolated", b"epoch": b"7", b"forced": b"1"})
    assert (state, bad) == (BreakerState("closed", 0.0, 7, 0.0, 0, forced=True), ["state"])
    # an epoch the transition script reads as absent is read as 0 here too (at most 15 digits)
    for epoch in (b" 3", b"3_0", b"0x10", b"1e3", "\u0661".encode(), b"9" * 16, b"0" * 15 + b"7"):
        assert read_breaker({b"epoch": epoch}) == (BreakerState(), ["epoch"])
    assert read_breaker({b"epoch": b"9" * 15})[0].epoch == 10**15 - 1
    assert read_breaker({b"epoch": b"0" * 14 + b"7"})[0].epoch == 7


def test_a_worker_reads_any_state_it_does_not_know_as_closed() -> None:

    assert decode_state_name(b"open") == "open"
    assert decode_state_name(b"\xff\xfe") == "closed"
    assert decode_state_name("isolated") == "closed"
    assert decode_state_name(None) == "closed"


def test_a_transition_field_names_two_states() -> None:
    assert is_transition_field("closed>open") and is_transition_field("open>open")
    for name in ("closed>bogus", "closed", "closed>open>half_open", "", ">", "x\ny"):
        assert not is_transition_field(name), name

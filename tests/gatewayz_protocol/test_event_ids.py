"""Window members (gatewayz_protocol.event_ids): six base-64 digits per event id. Pure, no Redis."""

from __future__ import annotations

from gatewayz_protocol.event_ids import event_members

_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _member_by_hand(event_id: int) -> str:
    """Six base-64 digits of ``event_id`` mod 2**36, most significant first, one at a time."""
    event_id %= 64**6
    digits = []
    for _ in range(6):
        event_id, digit = divmod(event_id, 64)
        digits.append(_DIGITS[digit])
    return "".join(reversed(digits))


def test_event_members_are_six_base64_digits_of_consecutive_ids() -> None:
    assert event_members(0, 3) == ["AAAAAA", "AAAAAB", "AAAAAC"]
    assert event_members(63, 2) == ["AAAAA_", "AAAABA"]
    assert event_members(4095, 2) == ["AAAA__", "AAABAA"]  # crosses a run of 4,096
    assert event_members(64**6 - 1, 2) == ["______", "AAAAAA"]  # wraps at 2**36
    assert event_members(2**40 + 5, 1) == ["AAAAAF"]
    assert event_members(17, 0) == []


def test_event_members_match_digit_by_digit_encoding_across_runs() -> None:
    first = 3 * 64**5 + 7 * 4096 - 100  # a run boundary inside the range
    members = event_members(first, 10_000)
    assert members == [_member_by_hand(first + i) for i in range(10_000)]
    assert len(set(members)) == 10_000

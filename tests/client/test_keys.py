"""Pure unit tests for the Redis key schema (client/keys.py): no Redis."""

from __future__ import annotations

import pytest

from client.keys import (
    CALLER_ERROR,
    FAILURE,
    RATE_LIMITED,
    SUCCESS,
    Keys,
    event_members,
    histogram_bucket,
    is_valid_provider,
    window_partition,
)


@pytest.mark.parametrize(
    "name",
    ["openrouter", "google-vertex", "fireworks.ai", "a", "A9_b", "7up", "a" * 64],
)
def test_valid_provider_names(name: str) -> None:
    assert is_valid_provider(name) is True


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a" * 65,
        "open}router",
        "open{router",
        "{openrouter}",
        "open:router",
        "open*",
        "open router",
        "openrouter\n",
        "\nopenrouter",
        "opénrouter",
        "-openrouter",
        ".openrouter",
        "_openrouter",
        5,
        None,
        b"x",
        ["openrouter"],
    ],
)
def test_invalid_provider_names(name: object) -> None:
    assert is_valid_provider(name) is False


def test_window_keys_format() -> None:
    keys = Keys("ns").window_keys("openrouter")
    # 20 finite latency partitions + +Inf = 21 ok keys, then fail, rl, ce
    assert len(keys) == 24
    assert keys[0] == "ns:{openrouter}:w:ok:0"
    assert keys[20] == "ns:{openrouter}:w:ok:20"
    assert keys[21:] == ("ns:{openrouter}:w:fail", "ns:{openrouter}:w:rl", "ns:{openrouter}:w:ce")
    assert keys[:21] == tuple(f"ns:{{openrouter}}:w:ok:{i}" for i in range(21))


def test_totals_and_breaker_format() -> None:
    keys = Keys("ns")
    assert keys.totals("openrouter") == "ns:{openrouter}:totals"
    assert keys.breaker("openrouter") == "ns:{openrouter}:breaker"


def test_provider_keys_share_hash_tag_and_namespace() -> None:
    keys = Keys("ns")
    provider = "fireworks.ai"
    all_keys = [*keys.window_keys(provider), keys.totals(provider), keys.breaker(provider)]
    for key in all_keys:
        assert key.startswith("ns:")
        assert "{fireworks.ai}" in key
        # exactly one hash tag, so Redis Cluster hashes on the provider name only
        assert key.count("{") == 1
        assert key.count("}") == 1


def test_default_namespace() -> None:
    assert Keys().totals("a") == "gatewayz:{a}:totals"


@pytest.mark.parametrize("provider", ["", "bad name", "x}y", "a" * 65, "-a"])
def test_keys_reject_invalid_provider(provider: str) -> None:
    keys = Keys("ns")
    with pytest.raises(ValueError):
        keys.window_keys(provider)
    with pytest.raises(ValueError):
        keys.totals(provider)
    with pytest.raises(ValueError):
        keys.breaker(provider)


@pytest.mark.parametrize("namespace", ["", "a:b", "{ns}", "-ns", "n s", "a" * 65, "ns\n"])
def test_keys_reject_invalid_namespace(namespace: str) -> None:
    with pytest.raises(ValueError):
        Keys(namespace)


# WINDOW_BOUNDS: 0.05 0.1 0.25 0.5 0.75 1 1.5 2 2.5 3 4 5 6 7 8 9 10 15 30 60 (indices 0..19)
@pytest.mark.parametrize(
    ("latency", "partition"),
    [
        (0.0, 0),
        (0.05, 0),  # on the bound -> that bound's partition (le)
        (0.0501, 1),  # just above -> next
        (0.1, 1),
        (0.25, 2),
        (1.0, 5),
        (1.0001, 6),
        (2.0, 7),
        (2.0001, 8),
        (10.0, 16),
        (60.0, 19),  # last finite bound
        (60.0001, 20),  # +Inf
        (1e9, 20),
    ],
)
def test_window_partition_success(latency: float, partition: int) -> None:
    assert window_partition(SUCCESS, latency) == partition


@pytest.mark.parametrize(
    ("outcome", "partition"),
    [(FAILURE, 21), (RATE_LIMITED, 22), (CALLER_ERROR, 23)],  # after the 21 ok partitions
)
def test_window_partition_non_success(outcome: int, partition: int) -> None:
    # latency does not matter for non-success outcomes
    assert window_partition(outcome, 0.01) == partition
    assert window_partition(outcome, 100.0) == partition


@pytest.mark.parametrize(
    ("outcome", "suffix"),
    [(FAILURE, ":w:fail"), (RATE_LIMITED, ":w:rl"), (CALLER_ERROR, ":w:ce")],
)
def test_window_partition_indexes_window_keys(outcome: int, suffix: str) -> None:
    keys = Keys("ns").window_keys("p")
    assert keys[window_partition(outcome, 1.0)] == "ns:{p}" + suffix
    assert keys[window_partition(SUCCESS, 1.0)] == "ns:{p}:w:ok:5"  # 1.0 is bound index 5


# HISTOGRAM_BOUNDS: 0.1 0.5 1 2 5 10 (indices 0..5), +Inf = 6
@pytest.mark.parametrize(
    ("latency", "bucket"),
    [
        (0.0, 0),
        (0.1, 0),  # on the bound (le)
        (0.1001, 1),
        (0.5, 1),
        (0.5001, 2),
        (1.0, 2),
        (2.0, 3),
        (5.0, 4),
        (10.0, 5),  # last finite bound
        (10.0001, 6),  # +Inf
        (1e9, 6),
    ],
)
def test_histogram_bucket(latency: float, bucket: int) -> None:
    assert histogram_bucket(latency) == bucket


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

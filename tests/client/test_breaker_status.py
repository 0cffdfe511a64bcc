"""BreakerStatus, CircuitOpenError and the retry-after arithmetic (pure)."""

from __future__ import annotations

import pytest

from client import BreakerStatus, CircuitOpenError
from client._breaker_status import open_deadline, retry_after


def test_a_status_is_true_when_allowed() -> None:
    assert BreakerStatus("p", "closed", True)
    assert not BreakerStatus("p", "open", False, 3.0, 1_800_000_003.0)
    assert BreakerStatus("p", None, True)  # unknown: fails open


def test_an_error_carries_what_the_status_said() -> None:
    error = CircuitOpenError.of(BreakerStatus("p", "half_open", False, 0.25))
    assert (error.provider, error.state, error.retry_after_s) == ("p", "half_open", 0.25)
    assert str(error) == "circuit breaker for 'p' is half_open: call not allowed"
    assert CircuitOpenError("p", "open").retry_after_s is None  # the old signature holds
    assert CircuitOpenError.of(BreakerStatus("p", None, False)).state == "open"


@pytest.mark.parametrize(
    ("state", "open_until", "forced", "expected"),
    [
        ("open", 1_800_000_030.0, False, 1_800_000_030.0),
        ("open", 1_800_000_030.0, True, None),  # an operator holds it: no deadline
        ("open", 0.0, False, None),  # unknown
        ("half_open", 1_800_000_030.0, False, None),
        ("closed", 1_800_000_030.0, False, None),
    ],
)
def test_only_an_automatic_open_has_a_deadline(
    state: str, open_until: float, forced: bool, expected: float | None
) -> None:
    assert open_deadline(state, open_until, forced) == expected


def test_retry_after_counts_down_to_the_deadline_or_the_next_permit_request() -> None:
    now, mono = 1_800_000_000.0, 50.0
    assert retry_after("open", now + 12.5, now, 0.0, mono) == 12.5
    assert retry_after("open", now - 3.0, now, 0.0, mono) == 0.0  # due: next evaluation
    assert retry_after("open", None, now, 0.0, mono) is None
    assert retry_after("half_open", None, now, mono + 0.375, mono) == 0.375
    assert retry_after("half_open", None, now, mono - 1.0, mono) == 0.0

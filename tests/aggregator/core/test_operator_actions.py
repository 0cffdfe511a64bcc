"""The operator's breaker commands as pure functions: the state each action sets, the transition
it counts, the rows both shells answer, and the input refused (no Redis)."""

from __future__ import annotations

import pytest

from aggregator.core.operator_actions import (
    ACTIONS,
    MAX_SHOWN_NAME,
    changes_nothing,
    command_error,
    done_row,
    forced_state,
    shown_name,
    status_row,
    transition_counted,
    unchanged_row,
)
from gatewayz_protocol.breaker_state import CLOSED, HALF_OPEN, OPEN, BreakerState

NOW = 1_800_000_000.0
REOPENED = BreakerState(OPEN, NOW - 60, 7, NOW + 60, 3)


def test_open_keeps_the_consecutive_opens_close_and_reset_clear_them() -> None:
    assert forced_state("open", REOPENED, NOW) == BreakerState(OPEN, NOW, 8, 0.0, 3, forced=True)
    assert forced_state("close", REOPENED, NOW) == BreakerState(CLOSED, NOW, 8, 0.0, 0, True)
    assert forced_state("reset", REOPENED, NOW) == BreakerState(CLOSED, NOW, 8, 0.0, 0, False)
    with pytest.raises(ValueError, match="unknown action 'status'"):
        forced_state("status", REOPENED, NOW)


@pytest.mark.parametrize(
    ("current", "action", "nothing"),
    [
        (BreakerState(), "reset", True),  # closed and automatic
        (BreakerState(CLOSED, forced=True), "reset", False),  # forced closed: back to automatic
        (BreakerState(OPEN), "reset", False),
        (BreakerState(HALF_OPEN), "reset", False),
        (BreakerState(), "close", False),  # forcing closed changes who decides
        (BreakerState(), "open", False),
    ],
)
def test_only_a_reset_of_an_automatic_closed_breaker_changes_nothing(
    current: BreakerState, action: str, nothing: bool
) -> None:
    assert changes_nothing(action, current) is nothing


def test_closed_to_closed_counts_no_transition() -> None:
    closed, forced_closed = BreakerState(), BreakerState(CLOSED, forced=True)
    assert transition_counted(closed, forced_closed) == ""
    assert transition_counted(forced_closed, closed) == ""
    assert transition_counted(closed, BreakerState(OPEN)) == "closed>open"
    assert transition_counted(BreakerState(HALF_OPEN), closed) == "half_open>closed"


def test_the_rows_both_shells_answer() -> None:
    state = BreakerState(OPEN, NOW, 2, 0.0, 1, forced=True)
    fields = {
        "state": "open",
        "since": NOW,
        "epoch": 2,
        "open_until": 0.0,
        "consecutive_opens": 1,
        "forced": True,
    }
    assert status_row("acme", state, {"closed>open": 2}) == {
        "provider": "acme",
        **fields,
        "transitions": {"closed>open": 2},
    }
    assert done_row("acme", "open", state) == {"provider": "acme", "action": "open", **fields}
    assert unchanged_row("acme", "reset") == {
        "provider": "acme",
        "action": "reset",
        "changed": False,
        "message": "already closed and automatic: nothing to reset",
    }


@pytest.mark.parametrize(
    ("action", "provider", "error"),
    [
        ("status", None, None),
        ("status", "acme", None),
        *((action, "google-vertex", None) for action in ACTIONS),
        ("open", None, "open needs a PROVIDER"),
        ("reset", "", "reset needs a PROVIDER"),
        ("open", "a b", "invalid provider name 'a b'"),
        ("close", "-lead", "invalid provider name '-lead'"),
        ("status", "x" * 65, "invalid provider name '" + "x" * 65 + "'"),
        ("open", "acme\x1b[2J", "invalid provider name 'acme\\x1b[2J'"),
        ("reset", "{acme}", "invalid provider name '{acme}'"),
        ("delete", "acme", "unknown action 'delete': status, open, close, reset"),
    ],
)
def test_what_a_command_refuses(action: str, provider: str | None, error: str | None) -> None:
    assert command_error(action, provider) == error


def test_a_name_quoted_back_is_escaped_and_bounded() -> None:
    assert shown_name("a\nb\u202e") == "'a\\nb\\u202e'"
    long = "y" * 5000
    assert shown_name(long) == repr("y" * MAX_SHOWN_NAME) + "..."

"""Bounds (gatewayz_protocol.bounds): what a numeric setting may be, said the same way by the
reference, ``--help`` and the one-line error."""

from __future__ import annotations

import math

import pytest

from gatewayz_protocol.bounds import Bounds, shown


def test_the_text_says_the_range_without_exponents() -> None:
    assert Bounds(0.1, 86_400).text() == "from 0.1 to 86400"
    assert Bounds(1, 10_000_000, whole=True).text() == "a whole number from 1 to 10000000"
    assert Bounds(0, 1, above_low=True).text() == "above 0, at most 1"


@pytest.mark.parametrize(
    ("bounds", "inside", "outside"),
    [
        (Bounds(0.1, 3600), [0.1, 1, 3600, 3600.0], [0.0999, 3600.5, 1e30, -1, 5e-324]),
        (Bounds(1, 100, whole=True), [1, 100, 50], [0, 101, 2.5, 50.0, 10**30]),
        (Bounds(0, 1, above_low=True), [1e-9, 1, 0.5], [0, -0.0, 1.5]),
    ],
)
def test_holds_the_ends_and_nothing_beyond(
    bounds: Bounds, inside: list[float], outside: list[float]
) -> None:
    assert [value for value in inside if not bounds.holds(value)] == []
    assert [value for value in outside if bounds.holds(value)] == []


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True, False, "5", None, [1]])
def test_what_is_not_a_finite_number_is_outside(value: object) -> None:
    assert not Bounds(0, 10).holds(value)


def test_a_value_outside_is_one_line_naming_the_setting_and_the_range() -> None:
    with pytest.raises(ValueError) as refused:
        Bounds(0.1, 86_400).check("interval", 1e30)
    assert str(refused.value) == "interval must be from 0.1 to 86400, got 1e+30"
    with pytest.raises(ValueError) as refused:
        Bounds(1, 100, whole=True).check("max_batch", 10**400)
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 100  # cut, one line
    Bounds(1, 100, whole=True).check("max_batch", 100)  # the end is inside


def test_shown_cuts_a_long_value_on_one_line() -> None:
    assert shown("a\nb") == "'a\\nb'"
    assert shown("x" * 100) == repr("x" * 100)[:37] + "..."
    assert shown(int(1e30)) == "1e+30"  # "--max-providers 1e30", not its 31 digits
    assert shown(10**400) == repr(10**400)[:37] + "..."
    assert shown(99_999) == "99999"


def test_bounds_need_finite_ends_in_order() -> None:
    for low, high in [(1, 1), (2, 1), (0, math.inf), (math.nan, 1)]:
        with pytest.raises(ValueError):
            Bounds(low, high)

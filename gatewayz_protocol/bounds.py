"""The values a numeric setting may take: :class:`Bounds`, declared with the setting's option
(``gatewayz_protocol.options``, ``aggregator/option_table.py``, ``client/_settings.py``), held
by the settings object that reads it and shown by the configuration reference and ``--help``.

A value outside its bounds is refused when the settings are built, in one line naming the
setting: not taken, to fail later where nothing names it (a key TTL Redis refuses on every
batch, a timeout a thread's ``join`` cannot take, an interval the scheduler overflows on, a
count Redis cannot read as an integer). The bounds are what a deployment could want, and
nothing beyond: what is outside them is a typo, a unit mistake (ms for s) or a templating bug.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MINUTE, HOUR, DAY, YEAR = 60, 3600, 86_400, 365 * 86_400
"""Seconds, for the bounds of durations."""


@dataclass(frozen=True)
class Bounds:
    """``low`` to ``high`` (both included; ``low`` excluded when ``above_low``), whole numbers
    only when ``whole``. Any other value, ``nan``, an infinity, a bool or what is not a number
    (a string given as a keyword argument) is outside."""

    low: float
    high: float
    whole: bool = False
    above_low: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"bounds need finite low < high, got {self.low!r}, {self.high!r}")

    def text(self) -> str:
        """What the bounds allow, as the reference, ``--help`` and the errors say it."""
        low, high = _number(self.low), _number(self.high)
        if self.whole:
            return f"a whole number from {low} to {high}"
        if self.above_low:
            return f"above {low}, at most {high}"
        return f"from {low} to {high}"

    def holds(self, value: object) -> bool:
        """Whether ``value`` is within the bounds (and of the right kind)."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.whole and not isinstance(value, int):
            return False
        above = self.low < value if self.above_low else self.low <= value
        return above and value <= self.high  # nan: neither

    def check(self, name: str, value: object) -> None:
        """ValueError of one line naming ``name`` unless ``value`` is within the bounds."""
        if not self.holds(value):
            raise ValueError(f"{name} must be {self.text()}, got {shown(value)}")


def shown(value: object, limit: int = 40) -> str:
    """``value`` as an error message quotes it: its repr, on one line, cut at ``limit``
    characters (a value of 400 digits says where it starts, not all of it); a whole number of
    more than 15 digits as a float says it (``1e+30``, as given, not the 31 digits it reads as)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**15:
        return f"{float(value):g}" if abs(value) < 10**308 else f"{repr(value)[: limit - 3]}..."
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _number(value: float) -> str:
    """``86400``, ``0.1``, ``1048576``: never ``8.64e+04``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))

"""The dashboard's last hour per provider: one point per minute (health score, error rate),
kept by the leader in Redis (``Keys.history``) so every replica shows the same history and a
restart keeps it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Final

from pydantic import ConfigDict

from aggregator.core.schema import DATA_CONFIG
from aggregator.core.snapshot import Snapshot

HISTORY_POINTS: Final = 60
"""Points kept per provider: one hour of minutes (older ones are trimmed on each write)."""
HISTORY_TTL_SECONDS: Final = 2 * 3600
"""A provider's history expires this long after its last point."""
MINUTE: Final = 60
MAX_MINUTE: Final = 253_402_300_740
"""The last minute a date can name (9999-12-31T23:59Z): a point's minute is a Unix time."""


@dataclass(frozen=True)
class HistoryPoint:
    """One minute of one provider's health, for the dashboard."""

    __pydantic_config__: ClassVar[ConfigDict] = DATA_CONFIG

    minute_start: int
    """Unix time of the minute's start (the first snapshot taken in that minute)."""
    health_score: float
    error_rate: float

    def encode(self) -> str:
        """The zset member: ``<minute>|<health>|<error rate>`` (floats round-trip)."""
        return f"{self.minute_start}|{self.health_score!r}|{self.error_rate!r}"

    @classmethod
    def decode(cls, member: bytes | str) -> HistoryPoint | None:
        """Inverse of encode; None for a member that is not one (written by something else):
        not UTF-8, not three parts, a minute that is not one (``MAX_MINUTE``), a figure that is
        not a finite number in [0, 1] (a health score and an error rate are)."""
        try:
            text = member.decode() if isinstance(member, bytes) else member
            minute, health, error = text.split("|")
            point = cls(int(minute), float(health), float(error))
        except ValueError:  # UnicodeDecodeError is one
            return None
        figures_ok = 0.0 <= point.health_score <= 1.0 and 0.0 <= point.error_rate <= 1.0
        minute_ok = 0 <= point.minute_start <= MAX_MINUTE and point.minute_start % MINUTE == 0
        return point if figures_ok and minute_ok else None


def minute_start(timestamp: float) -> int:
    return int(timestamp // MINUTE) * MINUTE


def snapshot_points(snapshot: Snapshot) -> dict[str, HistoryPoint]:
    """Each provider's point for the minute ``snapshot`` was taken in."""
    minute = minute_start(snapshot.taken_at)
    return {
        p.provider: HistoryPoint(minute, p.health_score, p.error_rate) for p in snapshot.providers
    }


class HistoryMinutes:
    """Which points a leader still owes the dashboard: one per minute and provider, from the
    first snapshot taken in that minute that shows the provider."""

    def __init__(self) -> None:
        self._written: dict[str, int] = {}  # provider -> the last minute this leader wrote

    def due(self, snapshot: Snapshot | None) -> dict[str, HistoryPoint]:
        """``snapshot``'s points not written yet (marked written: the caller writes them)."""
        if snapshot is None:
            return {}
        points = snapshot_points(snapshot)
        due = {
            name: point
            for name, point in points.items()
            if self._written.get(name) != point.minute_start
        }
        self._written = {name: point.minute_start for name, point in points.items()}
        return due


def decode_points(members: Iterable[bytes | str]) -> list[HistoryPoint]:
    """Decoded points, oldest first, skipping members that are not points."""
    return read_points(members)[0]


def read_points(members: Iterable[bytes | str]) -> tuple[list[HistoryPoint], list[str]]:
    """Decoded points, oldest first, and the members that are not points (as text, bytes that
    are not UTF-8 replaced): another writer's, skipped."""
    points, bad = [], []
    for member in members:
        point = HistoryPoint.decode(member)
        if point is not None:
            points.append(point)
        else:
            bad.append(member.decode("utf-8", "replace") if isinstance(member, bytes) else member)
    return sorted(points, key=lambda p: p.minute_start), bad

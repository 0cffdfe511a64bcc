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
        """Inverse of encode; None for a member that is not one (written by something else)."""
        text = member.decode() if isinstance(member, bytes) else member
        try:
            minute, health, error = text.split("|")
            return cls(int(minute), float(health), float(error))
        except ValueError:
            return None


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
    points = (HistoryPoint.decode(member) for member in members)
    return sorted((p for p in points if p is not None), key=lambda p: p.minute_start)

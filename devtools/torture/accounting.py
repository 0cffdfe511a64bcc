"""Pure accounting of one provider: what its worker's ledger says Redis must hold, against what
it holds.

A provider has one writer and its events reach Redis in order, so Redis holds a prefix of its
recorded events: at least the ``lo`` a True ``flush()``/``close()`` vouched for, at most the
``hi`` its worker recorded. The totals must be exactly those of one such prefix, field by field;
the window (counted on Redis's clock) that prefix's events whose time falls inside it; the
backend counters (drained apart from the events) between the two bounds. What a fault makes
impossible by design is said, never checked silently weaker:

- a Redis that lost its data (a restart without AOF; a cluster master killed with no replica
  promoted, for its slots) keeps no prefix: only "no event invented or counted twice" (upper
  bounds) is checked. A master killed or stalled whose replica took over loses nothing of the
  workers' provider keys: they send again what the replica lacks (``faults_cluster``);
- a lost reply applies nothing twice (the writer reads its applied marker before it sends
  that batch again): no allowance is made for it;
- events a client dropped (and counted) leave holes: counts are checked, not composition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from devtools.torture.ledger import FIELDS, ProviderProfile, WorkerLedger
from gatewayz_protocol.fields import COUNT_FIELDS
from gatewayz_protocol.partitions import WINDOW_PARTITIONS

EDGE_TOLERANCE = 1.0
"""Seconds of doubt at the window's edges: the shared clock's measurement error (at most half
a 0.5 s round trip) plus when the ledger saw the call."""
FUTURE = 10.0


def count_of(totals: dict[str, int]) -> int:
    return sum(totals.get(name, 0) for name in COUNT_FIELDS)


def int_totals(raw: dict[str, str]) -> dict[str, int]:
    """The totals fields a worker writes, as integers (absent: 0; a value that is not an
    integer: -1, which no prefix matches)."""
    found = {}
    for name in FIELDS:
        value = raw.get(name, "0")
        found[name] = int(value) if value.lstrip("-").isdigit() else -1
    return found


def diff(expected: dict[str, int], observed: dict[str, int]) -> str:
    parts = [
        f"{name} {expected.get(name, 0)}->{observed.get(name, 0)}"
        for name in FIELDS
        if expected.get(name, 0) != observed.get(name, 0)
    ]
    return ", ".join(parts) or "none"


@dataclass
class Case:
    """One provider at the end of a run."""

    provider: str
    ledger: WorkerLedger
    profile: ProviderProfile
    observed: dict[str, int]
    window: list[int]
    lo: int = 0
    """events Redis must hold (vouched for by a True flush()/close())"""
    hi: int = 0
    """events recorded (at most: a killed worker's last call may not have been)"""
    lost: bool = False
    """Redis may have lost this provider's data (by design)."""
    matched: int | None = None
    """The prefix the totals matched, once known."""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lo = self.profile.prefix(self.ledger.durable())
        self.hi = len(self.profile.events)


def match_totals(case: Case, dropped: int) -> list[str]:
    """Violations of ``totals_exact`` (an empty list: held); sets ``case.matched``."""
    observed, profile = case.observed, case.profile
    if case.lost or dropped:
        top = profile.totals(case.hi)
        if count_of(observed) > count_of(top):
            seen = count_of(observed)
            return [f"{case.provider}: {seen} calls counted, {count_of(top)} recorded"]
        flushed = count_of(profile.totals(case.lo))
        if dropped and count_of(observed) < flushed - dropped:
            seen = count_of(observed)
            return [f"{case.provider}: {seen} counted < {flushed} flushed - {dropped} dropped"]
        return []
    best: tuple[int, int] | None = None
    for m, totals in enumerate(profile.cumulative()):
        if m < case.lo:
            continue
        if m > case.hi:
            break
        if all(totals[name] == observed[name] for name in FIELDS):
            case.matched = m
            if m < case.hi:
                case.notes.append(f"{case.provider}: {case.hi - m} recorded events not in Redis")
            return []
        distance = abs(count_of(totals) - count_of(observed))
        if best is None or distance < best[0]:
            best = (distance, m)
    nearest = best[1] if best else case.lo
    return [
        f"{case.provider}: totals match no prefix of {case.lo}..{case.hi} recorded events; "
        f"nearest ({nearest}) differs: {diff(profile.totals(nearest), observed)}"
    ]


def window_flags(
    case: Case, now: float, window: float, tolerance: float = EDGE_TOLERANCE
) -> tuple[list[bool], list[bool]]:
    """For each of the provider's events: surely in the window at ``now`` (by when its worker
    recorded it), and possibly in it."""
    marks = case.ledger.call_times()
    certain, possible = [], []
    start, end = now - window, now + FUTURE
    for index in case.profile.call_index:
        low, high = case.ledger.time_bounds(index, marks)
        certain.append(low > start + tolerance and high <= end - tolerance)
        possible.append(high > start - tolerance and low <= end + tolerance)
    return certain, possible


def _prefix_counts(case: Case, flags: list[bool]) -> list[list[int]]:
    """counts[m][partition]: flagged events among the first m."""
    row = [0] * WINDOW_PARTITIONS
    table = [list(row)]
    for event, flag in zip(case.profile.events, flags, strict=True):
        if flag:
            row[event.partition] += 1
        table.append(list(row))
    return table


def match_window(case: Case, observed: list[int], now: float, window: float) -> str | None:
    """None when some prefix of ``lo..hi`` events explains ``observed`` (per partition, within
    the edge tolerance), else why not. A provider whose data may be lost: upper bound only."""
    certain, possible = window_flags(case, now, window)
    low_table, high_table = _prefix_counts(case, certain), _prefix_counts(case, possible)
    if case.lost:
        top = high_table[case.hi]
        over = [p for p in range(WINDOW_PARTITIONS) if observed[p] > top[p]]
        return f"{case.provider}: partitions {over} above every event recorded" if over else None
    for m in range(case.lo, case.hi + 1):
        if all(low_table[m][p] <= observed[p] <= high_table[m][p] for p in range(len(observed))):
            return None
    m = case.matched if case.matched is not None else case.hi
    expected = high_table[m]
    wrong = {
        p: (observed[p], low_table[m][p], expected[p])
        for p in range(WINDOW_PARTITIONS)
        if not low_table[m][p] <= observed[p] <= expected[p]
    }
    return (
        f"{case.provider}: window {sum(observed)} calls, the {m} events in Redis put "
        f"{sum(low_table[m])}..{sum(expected)} in it; partition (seen, min, max): {wrong}"
    )


def window_total_bounds(case: Case, now: float, window: float) -> tuple[int, int]:
    """The provider's window total at ``now`` for the prefix the totals matched (or lo..hi)."""
    certain, possible = window_flags(case, now, window)
    low_m = case.matched if case.matched is not None else case.lo
    high_m = case.matched if case.matched is not None else case.hi
    return sum(certain[:low_m]), sum(possible[:high_m])


def backend_bounds(case: Case) -> tuple[tuple[int, int], tuple[int, int]]:
    """(calls, cost in nano-USD) the backend counters may hold: the ``lo`` and ``hi`` prefixes'
    (the instruments are drained apart from the events, so their prefix may differ)."""
    events = case.profile.events
    calls = (case.lo, case.hi)
    costs = (
        sum(e.cost_nanos() for e in events[: case.lo]),
        sum(e.cost_nanos() for e in events[: case.hi]),
    )
    return calls, costs

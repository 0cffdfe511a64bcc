"""Breaks the harness has found and that are being fixed, each with its regression test.

A violation matches a known break when its invariant is the break's, its message matches the
break's pattern, and the run applied one of the faults that trigger it. CI reports such a
violation as known (with the test that pins it) instead of failing; when the break is fixed, its
strict ``xfail`` test starts passing and fails, and the entry here goes with the marker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from devtools.torture.checker import Verdict


@dataclass(frozen=True)
class KnownBreak:
    name: str
    invariants: frozenset[str]
    triggers: frozenset[str]
    """fault kinds: the run must have applied at least one"""
    pattern: str
    summary: str
    test: str
    needs: frozenset[str] = frozenset()
    """fault kinds the run must all have applied too (``cluster``: it ran on a Redis Cluster)"""


# Fixed since they were found (their regression tests pass, the markers went): a worker's clock
# step between record() and flush misplacing events (2d03db8), a slot in migration stopping the
# aggregator's cycles (9b56980; found here, 480e4c3), a cluster master changing between the
# cycle's INFO reads escaping the cycle as a KeyError (found here: the masters that answered
# both reads are reported, and a cycle none answered fails by name), the breaker cache going
# stale while a flush pass retries a batch (its refresh now runs in the backoff waits), backend
# metrics vanishing after Redis restarts empty (a declaration is sent again with its values at
# most a second after it was last sent), a split batch's second half applied again after a
# leftover was resent between its halves (what a lineage applied is kept until its last half).
KNOWN: tuple[KnownBreak, ...] = ()


def classify(
    verdict: Verdict, kinds: set[str], breaks: tuple[KnownBreak, ...] | None = None
) -> tuple[dict[str, list[str]], dict[str, list[tuple[str, KnownBreak]]]]:
    """(unexpected violations, known ones with their break) by invariant; ``breaks``: the
    known breaks (``KNOWN`` unless given: tests pass their own)."""
    unexpected: dict[str, list[str]] = {}
    known: dict[str, list[tuple[str, KnownBreak]]] = {}
    for invariant, messages in verdict.violations.items():
        for message in messages:
            match = next(
                (
                    k
                    for k in (KNOWN if breaks is None else breaks)
                    if invariant in k.invariants
                    and k.triggers & kinds
                    and k.needs <= kinds
                    and re.search(k.pattern, message)
                ),
                None,
            )
            if match is None:
                unexpected.setdefault(invariant, []).append(message)
            else:
                known.setdefault(invariant, []).append((message, match))
    return unexpected, known

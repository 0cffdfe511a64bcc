"""Label sets read from hashes any Redis writer may fill: the clients' rejection reasons and drop
causes, the Redis operations counted, the writers' clock offsets. A client writes a handful of
each; a raw write (or a bug) could write 20,000, or one 16 KB long, and each would become a
series of /metrics. So each set is bounded in shape and in number before it is served: what
falls outside is summed under ``other`` (counts) or left out (writers), never lost silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

OTHER: Final = "other"
"""The label value the counts outside the bound are summed under."""
MAX_COUNT_LABELS: Final = 64
"""Distinct reasons, causes or operations served per family: the clients know about 20."""
MAX_WRITERS: Final = 1000
"""Writers' clock offsets served at once (the most recently measured): a fleet's processes."""
COUNT_NAME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}")
"""A name a client writes: ``invalid_latency``, ``buffer_full``, ``EVALSHA``."""
WRITER_RE: Final = re.compile(r"[!-~]{1,255}")
"""``<host>:<pid>``: printable ASCII without spaces, at most a host name's length and a pid."""


def bounded_counts(counts: Mapping[str, int], limit: int = MAX_COUNT_LABELS) -> dict[str, int]:
    """``counts`` with at most ``limit`` names, each shaped like a name a client writes (the
    first ``limit`` such names in sorted order, so the set does not churn as counts move); every
    other count is added to ``other``."""
    kept: dict[str, int] = {}
    other = 0
    for name in sorted(counts):
        if len(kept) < limit and name != OTHER and COUNT_NAME_RE.fullmatch(name):
            kept[name] = counts[name]
        else:
            other += counts[name]
    if other or OTHER in counts:
        kept[OTHER] = other
    return kept


def bounded_writers(
    measured: Mapping[str, tuple[float, float]], limit: int = MAX_WRITERS
) -> dict[str, tuple[float, float]]:
    """The ``limit`` most recently measured writers (offset, measured at) whose id is shaped
    like ``<host>:<pid>``; the rest are left out."""
    shaped = [(writer, value) for writer, value in measured.items() if WRITER_RE.fullmatch(writer)]
    shaped.sort(key=lambda item: (-item[1][1], item[0]))
    return dict(shaped[:limit])

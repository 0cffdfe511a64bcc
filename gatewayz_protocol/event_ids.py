"""Window members: one per event, unique across every writer of the namespace.

Writers reserve blocks of ids with INCRBY on ``Keys.event_ids`` (a batch's transaction reserves
the block its next batches use) and name each event by its id modulo 2**36 in six base-64
characters (``A-Z a-z 0-9 - _``). Six characters is the longest member Redis 7 keeps in its
smallest allocation (8 bytes); a longer one costs 8-16 bytes more per event. Ids repeat after
2**36 ids were handed out: the events written, the ids a writer reserved ahead and never used
(at most a few batches' worth when it stopped or failed a round trip), plus 2**24 each time
the Redis holding the counter changed master (a failover, a restart: the counter jumps once
per master, whatever its writers, so that ids the old master handed out and did not replicate
are not handed out again; a writer failing to reserve, for memory or a timeout, jumps nothing).
That is 68 billion events, or 4,096 failovers, per cycle; an id repeats in a window only if a
whole cycle passes within one window.
"""

from __future__ import annotations

import string
from typing import Final

EVENT_ID_BITS: Final = 36
"""Window member ids are taken modulo 2**EVENT_ID_BITS: six base-64 digits."""

_DIGITS: Final = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
_LOW_PAIRS: Final = tuple(a + b for a in _DIGITS for b in _DIGITS)  # the 12 low bits, 4096 pairs


def event_members(first_id: int, count: int) -> list[str]:
    """Window members of ``count`` consecutive event ids from ``first_id`` (modulo 2**36): six
    base-64 digits each, most significant first. Each run of 4,096 ids is one C-level
    concatenation, not per-id arithmetic: the flusher names every event this way."""
    members: list[str] = []
    modulus = 1 << EVENT_ID_BITS
    event_id, end = first_id % modulus, first_id % modulus + count
    while event_id < end:
        high, low = divmod(event_id % modulus, 4096)
        take = min(4096 - low, end - event_id)
        prefix = "".join(_DIGITS[(high >> shift) & 63] for shift in (18, 12, 6, 0))
        members += map(prefix.__add__, _LOW_PAIRS[low : low + take])
        event_id += take
    return members

"""Bounded label values: every label value a client writes into Redis is at most a configured
number of UTF-8 bytes. A longer one is truncated, not rejected, and ends with a hash of the whole
value, so distinct values stay distinct series.

Truncated rather than rejected: a label value is one part of an update (a request's ``model``, a
route's method); refusing the update would lose the request's count, latency and cost in every
metric it books, while a truncated value keeps them all and still names the series (its start is
readable, its hash tells apart values that share the start). What is cut is counted per metric.
"""

from __future__ import annotations

import hashlib
from typing import Final

DEFAULT_MAX_LABEL_VALUE_BYTES: Final = 256
"""The default bound: above any real model id, route template or provider name (the longest
seen are about 100 bytes), and 1,000 series of three such labels stay under 1 MB per metric."""
HASH_HEX_DIGITS: Final = 16
"""64 bits of BLAKE2b: two distinct values sharing their first bytes collide with a
probability of about n^2 / 2^65 (for 1,000 series of a metric: 3e-14)."""
SEPARATOR: Final = "~"
MIN_MAX_LABEL_VALUE_BYTES: Final = 2 * (HASH_HEX_DIGITS + len(SEPARATOR))
"""The smallest bound allowed: half of a truncated value is left for the value itself."""


def bounded_label_value(value: str, max_bytes: int) -> str:
    """``value`` itself when it is at most ``max_bytes`` UTF-8 bytes, else its longest start
    that fits with ``~`` and 16 hex digits of the whole value's hash, cut between characters
    (exactly ``max_bytes`` bytes or a few less). Pure; the callers count what is cut."""
    if len(value) * 4 <= max_bytes:  # every character is at most 4 bytes: no encoding needed
        return value
    encoded = value.encode("utf-8", "surrogatepass")
    if len(encoded) <= max_bytes:
        return value
    digest = hashlib.blake2b(encoded, digest_size=HASH_HEX_DIGITS // 2).hexdigest()
    keep = max_bytes - HASH_HEX_DIGITS - len(SEPARATOR)
    start = encoded[:keep].decode("utf-8", "ignore")  # a character cut in two is left out
    return f"{start}{SEPARATOR}{digest}"

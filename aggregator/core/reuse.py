"""What the last read decoded, kept for the next one: a reply that comes back exactly as it came
last time decodes to what it decoded to then, without decoding it again.

At 1,000 providers a read decodes four hashes and up to 24 counts per provider, and builds each
provider's reading from them; most of it comes back unchanged from one cycle to the next (a
provider's totals change only when it has calls, its breaker hash only at a transition). Raw
replies compare in C (bytes, lists and dicts of bytes), so an unchanged provider costs a few
comparisons instead of its decoding, and the objects decoded stay the same objects: what is
built from them downstream (the provider's reading, its health figures, its JSON and exposition
text) can be reused by identity too.

Only replies equal to the last ones are reused, so every figure is exactly what decoding them
again would give; what a decoding skipped (``Skip``) is reported again each time its reply is
reused. Entries live for one read: whatever the next read does not ask for is forgotten, so the
memory follows the providers read, not every name ever seen.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from aggregator.core.readings import Skip, Skips

T = TypeVar("T")


class Reuse:
    """Decoded replies by key, from the last read (``previous``) and this one (``current``).
    ``finish()`` ends a read: what it did not ask for is dropped."""

    def __init__(self) -> None:
        self._previous: dict[Hashable, tuple[Any, Any, tuple[Skip, ...]]] = {}
        self._current: dict[Hashable, tuple[Any, Any, tuple[Skip, ...]]] = {}
        self._reused = 0
        self.reused = 0
        """Decodings (and builds) the last read finished saved: its replies equal to the read
        before's."""

    def decode(self, key: Hashable, raw: Any, skips: Skips, decode: Callable[[Any], T]) -> T:
        """``decode(raw)``, or what it returned last read when ``raw`` equals that read's raw
        reply for ``key``; the skips ``decode`` noted in ``skips`` are noted again on reuse."""
        last = self._previous.get(key)
        if last is not None and last[0] == raw:
            self._current[key] = last
            if last[2]:
                skips.found.extend(last[2])
            self._reused += 1
            return last[1]  # type: ignore[no-any-return]
        before = len(skips.found)
        value = decode(raw)
        self._current[key] = (raw, value, tuple(skips.found[before:]))
        return value

    def reuse(self, key: Hashable, inputs: tuple[Any, ...], build: Callable[[], T]) -> T:
        """``build()``, or what it returned last read when ``inputs`` equal that read's (an
        object built from decoded values: compared by value, so equal inputs give the object
        built last time)."""
        last = self._previous.get(key)
        if last is not None and last[0] == inputs:
            self._current[key] = last
            self._reused += 1
            return last[1]  # type: ignore[no-any-return]
        value = build()
        self._current[key] = (inputs, value, ())
        return value

    def finish(self) -> None:
        """The read is over: the next one reuses what this one decoded, and nothing else."""
        self._previous, self._current = self._current, {}
        self.reused, self._reused = self._reused, 0

    def __len__(self) -> int:
        return len(self._previous)

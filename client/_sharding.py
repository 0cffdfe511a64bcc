"""A hot provider split over several Redis Cluster slots: which shard a batch's events go to.

``GATEWAYZ_PROVIDER_SHARDS``: ``8`` (every provider over 8 shards) or ``openrouter:8,groq:4``
(those providers; every other one keeps 1). Each batch sends a provider's events to one of its
shards, chosen from the batch's first event id: consecutive batches of one process spread over
the shards, and a batch retried (or split in halves) always goes to the same one, so a retried
slot is still recognised as applied (``_slots``). The aggregator learns each provider's shard
count from Redis (``Keys.shards``) and sums the shards.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from gatewayz_protocol.names import is_valid_provider

MAX_SHARDS = 64


@dataclass(frozen=True)
class ShardPlan:
    """How many shards each provider's window and counters are split over (1: not split)."""

    default: int = 1
    per_provider: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str) -> ShardPlan:
        """ValueError for anything but ``N`` or ``name:N,name:N...`` with N in 1..64."""
        spec = spec.strip()
        if not spec:
            return cls()
        if spec.isdigit():
            return cls(default=_count(spec, spec))
        per_provider: dict[str, int] = {}
        for item in spec.split(","):
            name, _, count = item.strip().rpartition(":")
            if not is_valid_provider(name):
                raise ValueError(
                    f"provider shards: {item!r} is not <provider>:<count> (e.g. openrouter:8)"
                )
            per_provider[name] = _count(count, item)
        return cls(per_provider=per_provider)

    def count(self, provider: str) -> int:
        return self.per_provider.get(provider, self.default)

    def shard(self, provider: str, batch_first_id: int) -> int:
        """The shard a batch (named by its first event id, or the id of the batch it is half
        of) writes ``provider``'s events to: stable for the batch, spread across batches."""
        count = self.count(provider)
        if count == 1:
            return 0
        return zlib.crc32(f"{provider}|{batch_first_id}".encode()) % count


def _count(text: str, item: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_SHARDS:
        raise ValueError(f"provider shards: {item!r}: the count must be 1..{MAX_SHARDS}")
    return int(text)

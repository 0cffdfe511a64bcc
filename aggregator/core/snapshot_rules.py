"""What a published snapshot may be, as a follower takes it: at most ``published_bytes`` of
JSON (decompressed no further: ``snapshot.decode_published``).

The bound is what the leader can publish at this replica's settings (every replica should run
the same): each provider at its largest, the model breakers, the bounded counts and clock
offsets, and the workers' own metrics at ``BACKEND_FAMILIES`` families at their series cap.
"""

from __future__ import annotations

from typing import Final, Protocol

from aggregator.core.bounded import MAX_COUNT_LABELS, MAX_WRITERS

PROVIDER_BYTES: Final = 36 * 1024
"""A provider's JSON at its largest is 16.7 KB (every figure at its longest: 19-digit counts,
17-digit floats; an exemplar in each of the 10 buckets, 128 characters of labels each at 12
bytes escaped); twice that for the providers a snapshot holds beyond ``max_providers`` (the
configured ones, those whose breaker is open)."""
MODEL_BYTES: Final = 512
"""A model breaker's JSON but its model name (a provider name and a breaker state)."""
ESCAPED: Final = 6
"""Bytes of JSON per byte of text at most (a control character is ``\\u0001``)."""
FIXED_BYTES: Final = 64 * 1024 + MAX_WRITERS * 300 + 3 * (MAX_COUNT_LABELS + 1) * 100
"""The rest: the snapshot's own fields, the clients' rejection, drop and Redis operation counts
(``MAX_COUNT_LABELS`` names each) and ``MAX_WRITERS`` writers' clock offsets."""
BACKEND_FAMILIES: Final = 64
"""The workers' metric families allowed for at their series cap: a gateway declares tens (the
aggregator reads every declaration: ``docs/operations/reliability.md``)."""
SERIES_BYTES: Final = 768
"""A backend series' JSON but one label value at the bound: its other label values, a
histogram's cumulative counts and sum, an exemplar."""


class SnapshotSettings(Protocol):
    """The settings a snapshot's size follows (``AggregatorSettings``' own)."""

    @property
    def max_providers(self) -> int: ...
    @property
    def providers(self) -> tuple[str, ...]: ...
    @property
    def breaker_models(self) -> tuple[str, ...]: ...
    @property
    def max_models_per_provider(self) -> int: ...
    @property
    def max_series_per_metric(self) -> int: ...
    @property
    def max_label_value_bytes(self) -> int: ...


def published_bytes(settings: SnapshotSettings) -> int:
    """The most JSON a leader publishes at ``settings``: ``max_providers`` read from the
    registry and the configured ``providers``, ``max_models_per_provider`` model breakers for
    each of the ``breaker_models``, ``BACKEND_FAMILIES`` families of ``max_series_per_metric``
    series whose label values are at most ``max_label_value_bytes`` UTF-8 bytes. About 103 MB
    at the defaults (1,000 providers, 1,000 series, 256 bytes)."""
    label = settings.max_label_value_bytes
    models = len(settings.breaker_models) * settings.max_models_per_provider
    backend = BACKEND_FAMILIES * settings.max_series_per_metric * (SERIES_BYTES + label)
    providers = settings.max_providers + len(settings.providers)
    return (
        FIXED_BYTES
        + providers * PROVIDER_BYTES
        + models * (MODEL_BYTES + ESCAPED * label)
        + backend
    )

"""What a published snapshot may be (aggregator/core/snapshot_rules.py): the bound on its JSON
at given settings holds a snapshot at its largest, and what is published at those settings.
Pure."""

from __future__ import annotations

import json
from dataclasses import dataclass

from aggregator.core.backend import BackendFamily
from aggregator.core.model_breakers import ModelBreaker
from aggregator.core.snapshot import ProviderHealth, Snapshot, fields_of
from aggregator.core.snapshot_rules import PROVIDER_BYTES, published_bytes
from gatewayz_protocol.breaker_state import BreakerState
from gatewayz_protocol.partitions import EXTRA_HISTOGRAM_BOUNDS, HISTOGRAM_BOUNDS, OUTCOMES

LONGEST = 2**63 - 1
FLOAT = -1.2345678901234567e-300  # 24 characters: a float at its longest
BOUNDS = HISTOGRAM_BOUNDS + EXTRA_HISTOGRAM_BOUNDS


@dataclass(frozen=True)
class Settings:
    max_providers: int = 3
    providers: tuple[str, ...] = ("configured",)
    breaker_models: tuple[str, ...] = ("p0",)
    max_models_per_provider: int = 2
    max_series_per_metric: int = 5
    max_label_value_bytes: int = 64


def _breaker() -> BreakerState:
    return BreakerState("half_open", FLOAT, LONGEST, FLOAT, LONGEST, True)


def _provider(name: str) -> ProviderHealth:
    """A provider with every figure at its longest and an exemplar in every bucket, its 128
    characters of labels each escaped to 12 bytes (outside the Basic Multilingual Plane)."""
    exemplar = ({"trace_id": "\U0001f600" * 120}, FLOAT, FLOAT)
    counts = dict.fromkeys(OUTCOMES, LONGEST)
    states = ("closed", "open", "half_open")
    return ProviderHealth(
        name, FLOAT, FLOAT, FLOAT, FLOAT, FLOAT, LONGEST, counts, _breaker(), counts,
        (LONGEST,) * (len(BOUNDS) + 1), FLOAT, FLOAT, LONGEST, LONGEST,
        {f"{a}>{b}": LONGEST for a in states for b in states if a != b}, True,
        {str(bucket): exemplar for bucket in range(len(BOUNDS) + 1)}, FLOAT, LONGEST,
    )  # fmt: skip


def test_the_bound_is_its_parts_at_these_settings() -> None:
    fixed = 64 * 1024 + 1000 * 300 + 3 * 65 * 100
    providers = (3 + 1) * 36 * 1024
    models = 1 * 2 * (512 + 6 * 64)
    backend = 64 * 5 * (768 + 64)
    assert published_bytes(Settings()) == fixed + providers + models + backend


def test_a_snapshot_at_its_largest_holds_within_the_bound() -> None:
    settings = Settings()
    names = [f"p{i}" + "x" * 60 for i in range(settings.max_providers)]
    models = tuple(
        ModelBreaker("p0", "\x01" * settings.max_label_value_bytes + str(i), _breaker())
        for i in range(settings.max_models_per_provider)
    )
    value = "\x01" * settings.max_label_value_bytes  # 6 bytes of JSON each
    family = BackendFamily(
        "requests_total", "counter", "Requests", ("route",), (),
        tuple(((value + str(i),), float(LONGEST)) for i in range(5)), (), LONGEST, LONGEST,
    )  # fmt: skip
    snapshot = Snapshot(
        taken_at=FLOAT,
        cycle=LONGEST,
        providers=tuple(_provider(name) for name in [*names, "configured"]),
        backend=(family,),
        histogram_bounds=BOUNDS,
        model_breakers=models,
        redis_ops={f"op{i:061d}": LONGEST for i in range(65)},
        client_rejected={f"r{i:062d}": LONGEST for i in range(65)},
        client_dropped_by_cause={f"d{i:062d}": LONGEST for i in range(65)},
        client_clock_offsets={f"{i:0255d}": FLOAT for i in range(1000)},
    )
    assert len(snapshot.to_json()) <= published_bytes(settings)


def test_a_provider_at_its_largest_is_half_what_is_allowed_for_one() -> None:
    text = json.dumps(_provider("p" * 64), default=fields_of, separators=(",", ":"))
    assert 16_000 < len(text) <= PROVIDER_BYTES // 2

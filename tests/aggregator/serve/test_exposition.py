"""The /metrics text rendered from what changed (aggregator/serve/exposition.py): byte for byte
the text prometheus_client writes from the whole collector, in both formats, through snapshots
that keep some providers' and workers' families (the same objects) and change others; a
provider's lines written again exactly when its health object is new. Pure (hypothesis)."""

from __future__ import annotations

import gzip
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.exposition import choose_encoder

from aggregator.core.backend import build_families
from aggregator.core.served import CycleStatus, ServedState
from aggregator.core.snapshot import ProviderHealth, Snapshot
from aggregator.serve.exposition import Exposition
from aggregator.serve.rendering import make_registry
from gatewayz_protocol.names import PROVIDER_NAME_RE
from gatewayz_protocol.partitions import EXTRA_HISTOGRAM_BOUNDS, HISTOGRAM_BOUNDS
from tests.aggregator.serve.test_rendering import Backend, backend_data, provider_healths
from tests.support.strategies import COUNTS, property_settings

FORMATS = ("", "application/openmetrics-text")


def _whole(served: ServedState, accept: str) -> bytes:
    """What prometheus_client writes from the whole collector."""
    encoder, _ = choose_encoder(accept)
    return encoder(make_registry(lambda: served))


def _snapshot(providers: tuple[ProviderHealth, ...], backend: Backend, cycle: int) -> Snapshot:
    schema, series, values, writers = backend
    return Snapshot(
        taken_at=1e9 + cycle,
        cycle=cycle,
        providers=providers,
        redis_ops={"zadd": cycle},
        backend=build_families(schema, series, values, writers),
    )


def test_the_text_rendered_from_what_changed_is_the_whole_text_in_every_format() -> None:
    @property_settings(12)
    @given(
        names=st.lists(st.from_regex(PROVIDER_NAME_RE, fullmatch=True), max_size=5, unique=True),
        backends=st.lists(backend_data(), min_size=2, max_size=2),
        data=st.data(),
    )
    def check(names: list[str], backends: list[Backend], data: st.DataObject) -> None:
        expositions = {accept: Exposition(choose_encoder(accept)[0]) for accept in FORMATS}
        providers = tuple(data.draw(provider_healths(name)) for name in names)
        first = _snapshot(providers, backends[0], 1)
        # the next cycle: some providers changed (new objects), some kept, one gone; the
        # workers' families of the first kept where drawn so
        changed = data.draw(st.lists(st.sampled_from(names), unique=True)) if names else []
        kept = [p for p in providers[: max(0, len(providers) - 1)]]
        second_providers = tuple(
            data.draw(provider_healths(p.provider)) if p.provider in changed else p for p in kept
        )
        second = _snapshot(second_providers, backends[data.draw(st.integers(0, 1))], 2)
        if data.draw(st.booleans()):
            second = replace(second, backend=first.backend)
        bounds = HISTOGRAM_BOUNDS + EXTRA_HISTOGRAM_BOUNDS[:1]
        third = replace(  # other histogram bounds: every provider's lines are new
            second,
            cycle=3,
            histogram_bounds=bounds,
            providers=tuple(
                replace(
                    p, histogram_cumulative=(*p.histogram_cumulative, p.histogram_cumulative[-1])
                )
                for p in second.providers
            ),
            window_seconds=60.0,
        )
        # the same objects under other bounds of the same number: the le labels differ
        fourth = replace(
            third, cycle=4, histogram_bounds=HISTOGRAM_BOUNDS + EXTRA_HISTOGRAM_BOUNDS[1:2]
        )
        status = CycleStatus(cycles_ok=data.draw(COUNTS), values_skipped={"totals": 1})
        for accept, exposition in expositions.items():
            for snapshot in (None, first, second, second, third, fourth):
                served = ServedState("replica-1", snapshot, status, leader=True)
                whole = _whole(served, accept)
                assert exposition.render(served) == whole
                assert gzip.decompress(exposition.gzipped(served)) == whole
            served = ServedState("replica-1", second)
            exposition.render(served)
            assert exposition.render(served) == _whole(served, accept)
            assert exposition.rendered_providers == 0

    check()


def test_only_the_providers_whose_health_is_a_new_object_are_rendered_again() -> None:
    exposition = Exposition(choose_encoder("")[0])
    providers = tuple(ProviderHealth(f"p{i}", window_requests=i) for i in range(10))
    backend: Backend = ({}, {}, {}, [])
    first = _snapshot(providers, backend, 1)
    exposition.render(ServedState("r", first))
    assert exposition.rendered_providers == 10
    changed = (replace(providers[3], window_requests=99), *providers[4:])
    second = replace(first, providers=(*providers[:3], *changed))
    body = exposition.render(ServedState("r", second))
    assert exposition.rendered_providers == 1
    assert b'gatewayz_provider_window_requests{provider="p3"} 99.0\n' in body
    assert body == _whole(ServedState("r", second), "")
    # a follower decodes new objects from each published snapshot: equal ones are not new
    decoded = Snapshot.from_json(second.to_json())
    assert decoded.providers[0] is not second.providers[0]
    assert exposition.render(ServedState("r", decoded)) == body
    assert exposition.rendered_providers == 0


def test_the_gzipped_body_compresses_only_the_parts_that_changed() -> None:
    exposition = Exposition(choose_encoder("")[0])
    providers = tuple(ProviderHealth(f"p{i}", window_requests=i) for i in range(200))
    first = ServedState("r", _snapshot(providers, ({}, {}, {}, []), 1))
    packed = exposition.gzipped(first)  # renders first: the state was not rendered yet
    body = exposition.render(first)
    assert gzip.decompress(packed) == body
    assert len(packed) <= len(gzip.compress(body, 6, mtime=0)) * 1.02  # as one compression
    second = ServedState("r", replace(first.snapshot, cycle=2), leader=True)  # type: ignore[arg-type]
    before = list(exposition._chunks)
    assert gzip.decompress(exposition.gzipped(second)) == exposition.render(second)
    kept = [chunk for chunk in exposition._chunks if any(chunk is old for old in before)]
    assert len(kept) == 3  # the three groups of provider families: compressed once
    assert all(chunk.packed is not None for chunk in kept)

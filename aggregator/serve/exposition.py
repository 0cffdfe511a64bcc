"""One format's /metrics text, rendered from what changed since the last rendering.

prometheus_client's encoder writes every family on its own (its HELP and TYPE lines, then one
line per sample), so a body is the concatenation of its families' texts, and a family's text is
its header followed by its samples' lines. At 1,000 providers nearly all of a body is the
families with series per provider and the workers' families, and between two cycles most of
them are unchanged: the reader and the snapshot keep a provider's health object, and a workers'
family object, while nothing of it changed (``core.reuse``). So:

- a provider's lines in each family are written (by the encoder, for all the providers new to
  the cache at once) the first time its health object is rendered, then reused while the
  snapshot holds the same object;
- a workers' family's text is reused while the snapshot holds the same family object;
- the headers (the window length is in some) and the replica's own families (new figures each
  cycle) are rendered every time.

The text is byte for byte what rendering every family at once gives (``SnapshotCollector``
through the encoder: the tests compare). Should the encoder ever write a family otherwise than
one line per sample, the families with series per provider are rendered whole, without reuse.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import cast

from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from aggregator.core.backend import BackendFamily
from aggregator.core.served import ServedState
from aggregator.core.snapshot import ProviderHealth, Snapshot
from aggregator.serve.backend_metrics import count_metrics, metric_of, served_families
from aggregator.serve.collector import (
    PROVIDER_GROUPS,
    client_metrics,
    le_labels,
    status_metrics,
)
from aggregator.serve.model_metrics import model_metrics

Encoder = Callable[[CollectorRegistry], bytes]
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
"""A gzip member's header (RFC 1952): deflate, no name, no time (as gzip.compress mtime=0)."""
_WINDOW = 32768
"""Deflate's window: how far back a back-reference may reach."""
_LAST_BLOCK = b"\x03\x00"
"""An empty final deflate block (fixed Huffman): ends the stream of non-final parts."""
Lines = list[list[str]]
"""Per group of ``PROVIDER_GROUPS``, per family of it: one provider's lines (as one text)."""


class _Families(Collector):
    """The families given, as the encoder reads a registry (it only collects from it)."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = list(metrics)

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics)


def _registry(metrics: Iterable[Metric]) -> CollectorRegistry:
    return cast(CollectorRegistry, _Families(metrics))


class _Chunk:
    """A run of the body, as bytes, and the same compressed once asked for (``after``: the
    chunk whose end it was compressed after, None when alone). ``kept``: a chunk the
    exposition keeps while its part is unchanged (the others are new at every rendering)."""

    __slots__ = ("after", "data", "kept", "packed")

    def __init__(self, text: str, kept: bool = False) -> None:
        self.data = text.encode()
        self.kept = kept
        self.packed: bytes | None = None
        self.after: _Chunk | None = None

    def pack(self, before: _Chunk | None, level: int) -> bytes:
        """The chunk as deflate blocks that end on a byte (none of them final), compressed
        after ``before``'s end: back-references may reach into its last 32 KB, which a decoder
        has just written (as one compression of the whole body would; compressed alone, each
        part lost about 15% of the ratio). Kept while both are the same chunks."""
        if self.packed is None or self.after is not before:
            packer = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
            if before is not None:
                packer = zlib.compressobj(
                    level,
                    zlib.DEFLATED,
                    -zlib.MAX_WBITS,
                    zlib.DEF_MEM_LEVEL,
                    zlib.Z_DEFAULT_STRATEGY,
                    before.data[-_WINDOW:],
                )
            self.packed = packer.compress(self.data) + packer.flush(zlib.Z_SYNC_FLUSH)
            self.after = before
        return self.packed


class Exposition:
    """The /metrics text of one format (``encoder``: prometheus_client's for it), rendered from
    the parts that changed (module docstring), and gzipped from the parts that changed too
    (``gzipped``). Not thread-safe: one rendering at a time."""

    def __init__(self, encoder: Encoder, gzip_level: int = 6) -> None:
        self._encoder = encoder
        self._level = gzip_level
        self._end = encoder(_registry(())).decode()
        """What the encoder writes after the last family (OpenMetrics: ``# EOF``)."""
        self._le: tuple[str, ...] | None = None
        self._providers: dict[str, tuple[ProviderHealth, Lines]] = {}
        """Per provider, the health its lines were written from (a follower decodes a new
        object for each snapshot: an equal one has the same lines), and the lines."""
        self._groups: list[tuple[tuple[object, ...], _Chunk]] = []
        """Per group of ``PROVIDER_GROUPS``: what its text was written from, and the text."""
        self._backend: dict[str, tuple[BackendFamily, _Chunk]] = {}
        self._last: ServedState | None = None
        self._chunks: list[_Chunk] = []
        self._body = b""
        self.rendered_providers = 0
        """Providers whose lines the last ``render`` wrote (the others were reused)."""

    def render(self, served: ServedState) -> bytes:
        chunks = [_Chunk(self._text(status_metrics(served)))]
        snapshot = served.snapshot
        self.rendered_providers = 0
        if snapshot is not None:
            chunks += self._provider_chunks(snapshot)
            chunks += self._backend_chunks(served_families(snapshot))
            families = [*count_metrics(snapshot), *client_metrics(snapshot)]
            chunks.append(_Chunk(self._text([*families, *model_metrics(snapshot)])))
        chunks.append(_Chunk(self._end))
        self._last, self._chunks = served, chunks
        self._body = b"".join([chunk.data for chunk in chunks])
        return self._body

    def gzipped(self, served: ServedState) -> bytes:
        """``render(served)`` gzip-compressed: one gzip member whose deflate stream is the
        parts' blocks one after the other (``_Chunk.pack``), so an unchanged part is not
        compressed again; a decoder reads one stream, as from gzip.compress."""
        body = self.render(served) if served is not self._last else self._body
        packed: list[bytes] = []
        before: _Chunk | None = None
        for chunk in self._chunks:
            # compressed after the chunk before it when that one is kept (a new chunk before
            # it, new at every rendering, would make it compressed again every time)
            after = before if before is not None and before.kept else None
            packed.append(chunk.pack(after, self._level))
            before = chunk if chunk.data else before  # an empty chunk leaves the history
        trailer = struct.pack("<II", zlib.crc32(body), len(body) & 0xFFFFFFFF)
        return b"".join([_GZIP_HEADER, *packed, _LAST_BLOCK, trailer])

    def _text(self, metrics: Iterable[Metric]) -> str:
        text = self._encoder(_registry(metrics)).decode()
        return text[: len(text) - len(self._end)]

    # -- the families with series per provider ---------------------------------------------------

    def _provider_chunks(self, snapshot: Snapshot) -> list[_Chunk]:
        le = le_labels(snapshot)
        if le != self._le:  # the bucket bounds are in every provider's histogram lines
            self._providers, self._groups, self._le = {}, [], le
        headers = [
            [self._text([family]) for family in group.families(snapshot)]  # without samples
            for group in PROVIDER_GROUPS
        ]
        keys: list[tuple[object, ...]] = [(tuple(t), le, snapshot.providers) for t in headers]
        if [key for key, _ in self._groups] == keys:
            return [chunk for _, chunk in self._groups]
        cached = self._providers
        fresh = [h for h in snapshot.providers if not _same(cached.get(h.provider), h)]
        self.rendered_providers = len(fresh)
        if fresh and not self._write_lines(snapshot, fresh, le):
            self._providers, self._groups = {}, []
            return [_Chunk(text) for text in self._whole_provider_parts(snapshot, le)]
        kept = {h.provider: cached[h.provider] for h in snapshot.providers}
        self._providers = kept
        groups: list[tuple[tuple[object, ...], _Chunk]] = []
        for index, texts in enumerate(headers):
            parts = []
            for position, header in enumerate(texts):
                parts.append(header)
                parts += [kept[h.provider][1][index][position] for h in snapshot.providers]
            groups.append((keys[index], _Chunk("".join(parts), kept=True)))
        self._groups = groups
        return [chunk for _, chunk in groups]

    def _write_lines(
        self, snapshot: Snapshot, fresh: Sequence[ProviderHealth], le: tuple[str, ...]
    ) -> bool:
        """Write the lines of the ``fresh`` providers, all at once per family, into the cache;
        False when a family's text is not one line per sample after its header."""
        lines: list[Lines] = [[] for _ in fresh]
        for group in PROVIDER_GROUPS:
            families = group.families(snapshot)
            headers = [self._text([family]).count("\n") for family in families]
            starts = []
            for health in fresh:
                starts.append([len(family.samples) for family in families])
                group.add(families, health, le)
            per_provider: list[list[str]] = [[] for _ in fresh]
            for position, family in enumerate(families):
                written = self._text([family]).split("\n")[headers[position] : -1]
                if len(written) != len(family.samples):
                    return False
                ends = [start[position] for start in starts[1:]] + [len(family.samples)]
                for number, (start, end) in enumerate(zip(starts, ends, strict=True)):
                    chunk = written[start[position] : end]
                    per_provider[number].append("".join(f"{line}\n" for line in chunk))
            for number, texts in enumerate(per_provider):
                lines[number].append(texts)
        for health, provider_lines in zip(fresh, lines, strict=True):
            self._providers[health.provider] = (health, provider_lines)
        return True

    def _whole_provider_parts(self, snapshot: Snapshot, le: tuple[str, ...]) -> list[str]:
        parts = []
        for group in PROVIDER_GROUPS:
            families = group.families(snapshot)
            for health in snapshot.providers:
                group.add(families, health, le)
            parts.append(self._text(families))
        return parts

    # -- the workers' families ------------------------------------------------------------------

    def _backend_chunks(self, families: Sequence[BackendFamily]) -> list[_Chunk]:
        cached: dict[str, tuple[BackendFamily, _Chunk]] = self._backend
        kept: dict[str, tuple[BackendFamily, _Chunk]] = {}
        chunks = []
        for family in families:
            found = cached.get(family.name)
            if found is None or not _same(found, family):
                found = (family, _Chunk(self._text([metric_of(family)]), kept=True))
            kept[family.name] = found
            chunks.append(found[1])
        self._backend = kept
        return chunks


def _same(cached: tuple[object, object] | None, item: object) -> bool:
    """Whether ``cached`` was written from ``item``: the same object (a leader's snapshot keeps
    it while unchanged) or an equal one (a follower's is decoded anew each cycle)."""
    return cached is not None and (cached[0] is item or cached[0] == item)

"""/metrics bodies: the collector's families rendered in the format a scraper asks for, and
gzipped, once per served state, then served as bytes."""

from __future__ import annotations

import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from aggregator.core.served import ServedState
from aggregator.serve.collector import SnapshotCollector
from aggregator.serve.exposition import Exposition


def make_registry(served: Callable[[], ServedState]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(served))
    return registry


def _encoder(accept: str | None) -> tuple[Callable[[CollectorRegistry], bytes], str]:
    try:
        return choose_encoder(accept or "")
    except (TypeError, ValueError):  # e.g. "version=foo": answer in the default format
        return choose_encoder("")


def render(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """Body and content type: OpenMetrics when ``accept`` asks for it, else text 0.0.4."""
    encoder, content_type = _encoder(accept)
    return encoder(registry), content_type


class RenderedMetrics:
    """/metrics bodies rendered (and gzipped) once per served state and format, then served as
    bytes: a scrape costs no formatting, however many series there are or scrapers ask at once.
    The served state is immutable and replaced whenever anything in it changes, so its identity
    says when to render again. While ``prime`` renders a new state, scrapes get the previous
    state's finished bodies: a scrape never waits for a render it did not ask for. ``prime``
    renders the formats scrapers have asked for (a body rendered whole costs 0.25-0.5 s at 1,000
    providers, and Prometheus asks for one format only): a format's first scrape renders it.
    Each format renders what changed since its last body only (``exposition.Exposition``)."""

    GZIP_LEVEL = 6

    def __init__(self, served: Callable[[], ServedState]):
        self._served = served
        self._lock = threading.Lock()
        # (state they were rendered from, {(content type, gzipped): body}), replaced as a whole
        # so a lock-free reader never pairs one state with another's bodies.
        self._cache: tuple[ServedState | None, dict[tuple[str, bool], bytes]] = (None, {})
        self._priming: ServedState | None = None
        """The state ``prime`` is rendering, None when it is not."""
        self._asked: set[tuple[str, bool]] = set()
        """(content type, gzipped) of every body a scrape asked for."""
        self._expositions: dict[str, Exposition] = {}
        """Per content type, its text as last rendered, by part (reused where unchanged)."""

    def cached(
        self, accept: str | None, gzipped: bool = False, ask: bool = True
    ) -> tuple[bytes, str] | None:
        """(body, content type) when it is rendered for the current state, or for the previous
        one while the current one is being primed; else None. Never waits (no lock): an event
        loop may call it. ``ask``: count the format as asked for (``prime`` renders it)."""
        content_type = _encoder(accept)[1]
        if ask:
            self._asked.add((content_type, gzipped))
        state, bodies = self._cache
        current = self._served()
        if state is not current and self._priming is not current:
            return None
        body = bodies.get((content_type, gzipped))
        return None if body is None else (body, content_type)

    def render(self, accept: str | None, gzipped: bool = False) -> tuple[bytes, str]:
        """(body, content type) for the current state, gzip-compressed when ``gzipped``;
        renders what is not cached yet (one rendering at a time, concurrent callers share
        it)."""
        encoder, content_type = _encoder(accept)
        self._asked.add((content_type, gzipped))
        state = self._served()
        with self._lock:
            if state is not self._cache[0]:
                self._cache = (state, {})
            body = self._body(state, self._cache[1], encoder, content_type, gzipped)
            return body, content_type

    def prime(self) -> None:
        """Render every body scrapers asked for so far, now (after a cycle), so no scrape
        waits; they are served once all of them are ready."""
        state = self._served()
        with self._lock:
            cached_state, cached = self._cache
            bodies = dict(cached) if cached_state is state else {}
            self._priming = state
            try:
                for content_type, gzipped in sorted(self._asked):
                    encoder = _encoder(content_type)[0]
                    self._body(state, bodies, encoder, content_type, gzipped)
                self._cache = (state, bodies)
            finally:
                self._priming = None

    def _body(
        self,
        state: ServedState,
        bodies: dict[tuple[str, bool], bytes],
        encoder: Callable[[CollectorRegistry], bytes],
        content_type: str,
        gzipped: bool,
    ) -> bytes:
        exposition = self._expositions.get(content_type)
        if exposition is None:
            exposition = Exposition(encoder, self.GZIP_LEVEL)
            self._expositions[content_type] = exposition
        body = bodies.get((content_type, False))
        if body is None:
            body = bodies[(content_type, False)] = exposition.render(state)
        if not gzipped:
            return body
        compressed = bodies.get((content_type, True))
        if compressed is None:
            compressed = bodies[(content_type, True)] = exposition.gzipped(state)
        return compressed


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an Accept-Encoding header lets the response be gzip-compressed (Prometheus
    always sends ``gzip``); ``gzip;q=0`` refuses it, and ``gzip`` outranks ``*``."""
    qualities: dict[str, float] = {}
    for item in (accept_encoding or "").split(","):
        coding, _, params = item.partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        qualities.setdefault(coding.strip().lower(), quality)
    quality = qualities.get("gzip", qualities.get("*", 0.0))
    return quality > 0

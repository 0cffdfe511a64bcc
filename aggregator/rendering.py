"""/metrics bodies: the collector's families rendered in the format a scraper asks for, and
gzipped, once per served state, then served as bytes."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from aggregator.collector import SnapshotCollector
from aggregator.served import ServedState


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
    says when to render again."""

    FORMATS = ("text/plain", "application/openmetrics-text")
    GZIP_LEVEL = 6

    def __init__(self, served: Callable[[], ServedState]):
        self._served = served
        self._lock = threading.Lock()
        # (state they were rendered from, {(content type, gzipped): body}), replaced as a whole
        # so a lock-free reader never pairs one state with another's bodies.
        self._cache: tuple[ServedState | None, dict[tuple[str, bool], bytes]] = (None, {})

    def cached(self, accept: str | None, gzipped: bool = False) -> tuple[bytes, str] | None:
        """(body, content type) when it is already rendered for the current state, else None.
        Never waits (no lock): an event loop may call it."""
        content_type = _encoder(accept)[1]
        state, bodies = self._cache
        if state is not self._served():
            return None
        body = bodies.get((content_type, gzipped))
        return None if body is None else (body, content_type)

    def render(self, accept: str | None, gzipped: bool = False) -> tuple[bytes, str]:
        """(body, content type) for the current state, gzip-compressed when ``gzipped``;
        renders what is not cached yet (one rendering at a time, concurrent callers share
        it)."""
        encoder, content_type = _encoder(accept)
        state = self._served()
        with self._lock:
            if state is not self._cache[0]:
                self._cache = (state, {})
            bodies = self._cache[1]
            body = bodies.get((content_type, False))
            if body is None:
                body = encoder(make_registry(lambda: state))
                bodies[(content_type, False)] = body
            if gzipped:
                compressed = bodies.get((content_type, True))
                if compressed is None:
                    compressed = gzip.compress(body, self.GZIP_LEVEL, mtime=0)
                    bodies[(content_type, True)] = compressed
                body = compressed
            return body, content_type

    def prime(self) -> None:
        """Render every format, plain and gzipped, now (after a cycle), so no scrape waits."""
        for accept in self.FORMATS:
            self.render(accept, gzipped=True)


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

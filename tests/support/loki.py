"""Stand-ins for Loki in tests: a push receiver (answering 204, or 500 when told), and a black
hole that accepts TCP connections and never answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from devtools.redis_server import free_port
from tests.support.listeners import BrokenServer
from tests.support.receiver import PostReceiver, running

PUSH_PATH = "/loki/api/v1/push"


@dataclass(frozen=True)
class Line:
    labels: dict[str, str]
    timestamp_ns: int
    line: str

    def fields(self) -> dict[str, str]:
        """The logfmt line as a dict (values unquoted; enough for the tests' values)."""
        out: dict[str, str] = {}
        rest = self.line
        while rest:
            key, _, rest = rest.partition("=")
            if rest.startswith('"'):
                end = 1
                while rest[end] != '"' or rest[end - 1] == "\\":
                    end += 1
                value, rest = rest[1:end].replace('\\"', '"'), rest[end + 1 :]
            else:
                value, _, rest = rest.partition(" ")
            out[key.strip()] = value
            rest = rest.lstrip(" ")
        return out


class Receiver(PostReceiver):
    """Takes ``POST /loki/api/v1/push`` (JSON); answers 204 like Loki, or ``status`` (set 500
    to fail). Only pushes answered 2xx count as received."""

    PATH = PUSH_PATH
    STATUS = 204

    def __init__(self) -> None:
        self._lines: list[Line] = []
        super().__init__()
        self.url = self.endpoint + PUSH_PATH

    @property
    def pushes(self) -> int:
        return self.taken

    @property
    def failed_pushes(self) -> int:
        return self.refused

    def _take(self, body: bytes) -> None:
        for stream in json.loads(body)["streams"]:
            for timestamp, line in stream["values"]:
                self._lines.append(Line(dict(stream["stream"]), int(timestamp), line))

    def lines(self) -> list[Line]:
        with self._lock:
            return list(self._lines)


def receiver() -> AbstractContextManager[Receiver]:
    return running(Receiver)


@contextmanager
def black_hole() -> Iterator[str]:
    """A push URL whose server accepts connections and never reads nor answers."""
    hole = BrokenServer(hang=True)
    try:
        yield f"http://127.0.0.1:{hole.port}{PUSH_PATH}"
    finally:
        hole.close()


def refused_url() -> str:
    """A push URL on a port nothing listens on (connections refused)."""
    return f"http://127.0.0.1:{free_port()}{PUSH_PATH}"

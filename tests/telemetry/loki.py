"""Stand-ins for Loki in tests: a push receiver (answering 204, or 500 when told), and a black
hole that accepts TCP connections and never answers."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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


class Receiver:
    """A threaded HTTP server taking ``POST /loki/api/v1/push``; ``status`` is what it answers
    (204 like Loki; set 500 to fail). Only pushes answered 2xx count as received."""

    def __init__(self) -> None:
        self.status = 204
        self.pushes = 0
        self.failed_pushes = 0
        self._lines: list[Line] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                status = receiver.status
                if self.path == PUSH_PATH and 200 <= status < 300:
                    receiver._take(json.loads(body))
                else:
                    with receiver._lock:
                        receiver.failed_pushes += 1
                self.send_response(status if self.path == PUSH_PATH else 404)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}{PUSH_PATH}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _take(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.pushes += 1
            for stream in body["streams"]:
                for timestamp, line in stream["values"]:
                    self._lines.append(Line(dict(stream["stream"]), int(timestamp), line))

    def lines(self) -> list[Line]:
        with self._lock:
            return list(self._lines)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def black_hole() -> Iterator[str]:
    """A push URL whose server accepts connections and never reads nor answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            held.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}{PUSH_PATH}"
    finally:
        stop.set()
        thread.join(timeout=2)
        for connection in held:
            connection.close()
        listener.close()


def refused_url() -> str:
    """A push URL on a port nothing listens on (connections refused)."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"http://127.0.0.1:{port}{PUSH_PATH}"

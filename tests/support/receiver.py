"""What the Loki and OTLP stand-ins share: a threaded HTTP server taking ``POST`` on one path,
answering ``status`` (set a 5xx to fail), counting what it took and what it refused."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar


class PostReceiver:
    """Subclasses set ``PATH`` and ``STATUS`` (the healthy answer) and implement ``_take``,
    called under ``self._lock`` with each body answered 2xx."""

    PATH = "/"
    STATUS = 200
    CONTENT_TYPE = "text/plain"

    def __init__(self) -> None:
        self.status = self.STATUS
        self.taken = 0
        self.refused = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                status = receiver.status
                ours = self.path == receiver.PATH
                with receiver._lock:
                    if ours and 200 <= status < 300:
                        receiver.taken += 1
                        receiver._take(body)
                    else:
                        receiver.refused += 1
                self.send_response(status if ours else 404)
                self.send_header("content-type", receiver.CONTENT_TYPE)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _take(self, body: bytes) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


_Receiver = TypeVar("_Receiver", bound=PostReceiver)


@contextmanager
def running(kind: type[_Receiver]) -> Iterator[_Receiver]:
    server = kind()
    try:
        yield server
    finally:
        server.stop()

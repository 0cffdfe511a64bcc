"""A TCP listener that plays a broken server (Redis, Loki, an OTLP endpoint), for tests of what a
client does then."""

from __future__ import annotations

import socket
import threading
import time


class BrokenServer:
    """Accepts connections and either closes each at once (a server that is down: the client's
    request fails) or, with ``hang=True``, holds it and never answers (a server that hangs).
    ``attempts`` records when each connection came."""

    def __init__(self, hang: bool = False) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.redis_url = f"redis://127.0.0.1:{self.port}/0"
        self.attempts: list[float] = []
        self._hang = hang
        self._held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self.attempts.append(time.monotonic())
            if self._hang:
                self._held.append(connection)
            else:
                connection.close()

    def close(self) -> None:
        self._socket.close()
        for connection in self._held:
            connection.close()

"""A TCP proxy in front of Redis that delays, drops or cuts its replies (asyncio, own thread).

Requests always reach Redis; what the nemesis varies is what comes back:

- ``pass``: replies forwarded as they come;
- ``delay``: each reply forwarded ``delay_ms`` after it arrived (order kept);
- ``drop``: a connection that gets a reply while dropping stalls for good (a black hole: that
  reply and every later one discarded) and is cut when the mode ends;
- ``cut``: a connection that gets a reply is cut at once, the reply discarded (the request ran,
  its client never learns it did); every other reply, drawn at random, goes through, so a
  client gets past its id reservation to the transaction whose reply is then cut.

``incidents`` counts connections that lost a reply (dropped, cut, or answered after its client
gave up), ``exec_incidents`` those whose unanswered requests included an ``EXEC``: each may
have run a transaction its client will send again: the writer reads its applied marker before
it does (``client/_applied.py``), so the checker allows no duplicate for them and only notes
how many there were.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from dataclasses import dataclass, field

MODES = ("pass", "delay", "drop", "cut")


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    stalled: bool = False
    lost: bool = False
    unsent: int = 0
    """Replies taken from Redis and not yet written to the client."""
    exec_sent: bool = False
    """The client's last request (the replies it waits for) ended a transaction."""
    answered: bool = True
    """A reply reached the client since its last request: a client that closes before one
    did gave up on it (a timeout), whether or not Redis had answered yet (torture seed 110012:
    a starved proxy had not read the reply when the worker's read timed out, and the batch the
    worker then sent again counted twice)."""
    queue: asyncio.Queue[tuple[float, bytes]] = field(default_factory=asyncio.Queue)

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            with contextlib.suppress(Exception):
                writer.transport.abort()


class FaultProxy:
    """``start()`` listens on a free port (``port``) and forwards to ``upstream_port``;
    ``set_mode()`` from any thread; ``stop()`` closes every connection."""

    def __init__(self, upstream_port: int, name: str = "proxy") -> None:
        self.upstream_port, self.name = upstream_port, name
        self.port = 0
        self.mode, self.delay_ms = "pass", 0
        self.incidents = self.exec_incidents = 0
        self.connections = 0
        self._random = random.Random(upstream_port)
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name=name)
        self._server: asyncio.Server | None = None

    def start(self) -> FaultProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = future.result(timeout=10)
        return self

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def set_mode(self, mode: str, delay_ms: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}")
        asyncio.run_coroutine_threadsafe(self._set(mode, delay_ms), self._loop).result(10)

    async def _set(self, mode: str, delay_ms: int) -> None:
        self.mode, self.delay_ms = mode, delay_ms
        if mode != "drop":
            for link in [link for link in self._links if link.stalled]:
                link.abort()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        self.connections += 1
        tasks = [
            asyncio.ensure_future(self._requests(reader, link)),
            asyncio.ensure_future(self._replies(up_reader, link)),
            asyncio.ensure_future(self._forward(link)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        link.lost |= link.unsent > 0 or (link.exec_sent and not link.answered)
        link.abort()
        self._links.discard(link)
        if link.lost:
            self.incidents += 1
            self.exec_incidents += link.exec_sent

    async def _requests(self, reader: asyncio.StreamReader, link: _Link) -> None:
        while data := await reader.read(65536):
            link.exec_sent = b"EXEC\r\n" in data  # a client waits for its pipeline's replies
            link.answered = False
            link.upstream.write(data)
            await link.upstream.drain()

    async def _replies(self, reader: asyncio.StreamReader, link: _Link) -> None:
        while data := await reader.read(65536):
            if link.stalled or self.mode == "drop":
                link.stalled = link.lost = True
                continue
            if self.mode == "cut" and self._random.random() < 0.5:
                link.lost = True
                return
            delay = self.delay_ms / 1000 if self.mode == "delay" else 0.0
            link.unsent += 1
            link.queue.put_nowait((self._loop.time() + delay, data))
        await link.queue.join()

    async def _forward(self, link: _Link) -> None:
        while True:
            due, data = await link.queue.get()
            try:
                wait = due - self._loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if link.client.is_closing():
                    link.lost = True
                    return
                link.client.write(data)
                await link.client.drain()
                link.answered = True
            except OSError:
                link.lost = True
                return
            finally:
                link.queue.task_done()
            link.unsent -= 1

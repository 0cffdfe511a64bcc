"""What one server's connections share (aggregator/serve/http_guard.py): the cap, eviction of
the longest waiting connection, and the busy ones kept. Real sockets: tests/.../test_http_server."""

from __future__ import annotations

from aggregator.serve.http_guard import FULL, TOO_LARGE, ConnectionGuard, HttpLimits


class Fake:
    def __init__(self) -> None:
        self.admitted = False
        self.cut_for: str | None = None

    def cut(self, reason: str) -> None:
        self.cut_for = reason


def test_beyond_the_cap_the_longest_waiting_goes_and_busy_ones_stay() -> None:
    guard = ConnectionGuard(HttpLimits(max_connections=2))
    a, b, c, d = Fake(), Fake(), Fake(), Fake()
    assert guard.admit(a) and guard.admit(b)
    guard.busy(a)  # a request in progress: never evicted
    assert guard.admit(c)  # evicts b, the longest waiting of those without a request
    assert b.cut_for == "evicted" and not b.admitted and a.cut_for is None
    guard.busy(c)
    assert not guard.admit(d)  # every connection busy: refused
    guard.idle(a)
    guard.release(c)
    guard.release(c)  # idempotent
    assert guard.open == 1 and list(guard.waiting) == [a]


def test_the_answers_that_end_a_connection() -> None:
    assert TOO_LARGE.startswith(b"HTTP/1.1 431 ") and FULL.startswith(b"HTTP/1.1 503 ")
    assert b"connection: close\r\n" in FULL

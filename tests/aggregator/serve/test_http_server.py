"""Hostile HTTP against a real ``python -m aggregator``: huge and slow headers, silent and idle
connections, more connections than the cap, clients that pipeline and never read. Every attack
is a bounded loop on loopback that stops by itself; timeouts are shortened by flags."""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.processes import stop_process
from devtools.redis_server import free_port
from tests.support.http_local import BAD, GET, LOOPS, Local, serving
from tests.support.processes import wait_for

MB = 1024 * 1024
REQUEST = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"
PROMETHEUS = {  # what Prometheus sends with a scrape
    "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    "Accept-Encoding": "gzip",
}


@dataclass
class Served:
    """A ``python -m aggregator`` process of this test, and where its stderr goes."""

    process: subprocess.Popen[bytes]
    port: int
    stderr: Path

    def memory_kib(self, field: str = "VmRSS") -> int:
        """``VmRSS`` (resident now) or ``VmHWM`` (the peak so far) from /proc, in KiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} for {self.process.pid}")

    def connect(self, receive_buffer: int | None = None) -> socket.socket:
        sock = socket.socket()
        if receive_buffer is not None:  # before connect, so the TCP window starts small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.connect(("127.0.0.1", self.port))
        return sock

    def get(self, path: str = "/metrics", headers: dict[str, str] | None = None) -> int:
        """One request on a new connection (as Prometheus scrapes every 15 s or more); the
        status, after reading the whole body."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()


@pytest.fixture
def serve(redis_url: str, namespace: str, tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(*flags: str) -> Served:
        port = free_port()
        stderr = tmp_path / f"aggregator-{port}.stderr"
        command = [
            sys.executable, "-m", "aggregator", "--redis-url", redis_url,
            "--namespace", namespace, "--port", str(port), "--interval", "1",
            "--log-level", "WARNING", *flags,
        ]  # fmt: skip
        with stderr.open("wb") as sink:
            served = Served(subprocess.Popen(command, stderr=sink), port, stderr)
        started.append(served)
        wait_for(lambda: served.get("/readyz") == 200)
        return served

    yield start
    for served in started:
        stop_process(served.process, timeout=10)


def status_of(sock: socket.socket, timeout: float = 5.0) -> int | None:
    """The status of the answer on ``sock``; None when it is closed (or reset) unanswered, or
    nothing came within ``timeout`` seconds."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ConnectionError, TimeoutError):
        pass
    return int(data.split()[1]) if data.startswith(b"HTTP/1.1 ") else None


def closed(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (EOF or reset), without waiting; drains any answer."""
    while select.select([sock], [], [], 0)[0]:
        try:
            if not sock.recv(65536):
                return True
        except ConnectionError:
            return True
    return False


TCP_CLOSE = 7  # tcp_info's tcpi_state after a reset (include/net/tcp_states.h)


def tcp_state(sock: socket.socket) -> int:
    """The kernel's TCP state of ``sock``, without reading from it."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)[0]


def read_responses(sock: socket.socket, count: int, timeout: float = 10.0) -> list[int]:
    """Statuses of up to ``count`` whole responses (Content-Length bodies) read from ``sock``,
    stopping early when the server closes it."""
    sock.settimeout(timeout)
    buffer, statuses = b"", []
    while len(statuses) < count:
        head_end = buffer.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buffer[:head_end].decode("latin-1").lower().split("\r\n")
            length = next(int(h.split(":")[1]) for h in head if h.startswith("content-length:"))
            if len(buffer) >= head_end + 4 + length:
                statuses.append(int(head[0].split()[1]))
                buffer = buffer[head_end + 4 + length :]
                continue
        try:
            chunk = sock.recv(1 << 20)
        except ConnectionError:
            break
        if not chunk:
            break
        buffer += chunk
    return statuses


def huge_header(served: Served, size: int, finish: bool) -> int | None:
    """Send a request whose one header is ``size`` bytes (the blank line that ends the headers
    only when ``finish``); the answer's status, None when closed unanswered."""
    with served.connect() as sock:
        try:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
            piece = b"a" * (256 * 1024)
            for start in range(0, size, len(piece)):
                sock.sendall(piece[: size - start])
            if finish:
                sock.sendall(b"\r\n\r\n")
        except ConnectionError:
            pass  # cut while sending: the answer may still be there to read
        return status_of(sock)


def test_a_huge_header_gets_431_and_costs_no_memory(serve: Callable[..., Served]) -> None:
    served = serve()  # default: 8 KiB
    assert served.get(headers={"X-Fill": "a" * 7000}) == 200
    assert served.get(headers={"X-Fill": "a" * 9000}) == 431
    # A body in the same write as headers within the limit is no header: 405 (GET only).
    with served.connect() as sock:
        body = b"x" * 20_000
        sock.sendall(
            b"POST /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 20000\r\n\r\n" + body
        )
        assert status_of(sock) == 405
    assert huge_header(served, 10 * MB, finish=True) == 431  # warms the path up, too
    rss_before, peak_before = served.memory_kib(), served.memory_kib("VmHWM")
    answers: list[int | None] = []
    attackers = [
        threading.Thread(target=lambda: answers.append(huge_header(served, 10 * MB, False)))
        for _ in range(20)
    ]
    started = time.monotonic()
    for attacker in attackers:
        attacker.start()
    for attacker in attackers:
        attacker.join(timeout=30)
    seconds = time.monotonic() - started
    peak, rss_after = served.memory_kib("VmHWM"), served.memory_kib()
    print(
        f"\n20 unfinished 10 MB headers in {seconds:.2f} s: answers {sorted(map(str, answers))};"
        f" RSS {rss_before / 1024:.1f} MB before, {rss_after / 1024:.1f} MB after, peak"
        f" {peak_before / 1024:.1f} -> {peak / 1024:.1f} MB"
    )
    assert len(answers) == 20
    assert set(answers) <= {431, None}  # None: cut (after the 431) before it was read
    assert answers.count(431) >= 10
    assert peak - max(peak_before, rss_before) < 5 * 1024  # no 10 MB header was ever held
    assert served.get() == 200
    assert "header_too_large" in served.stderr.read_text()  # logged, once per 10 s at most


def test_slow_silent_and_idle_connections_are_cut_after_their_timeouts(
    serve: Callable[..., Served],
) -> None:
    served = serve("--header-timeout", "1", "--keepalive-timeout", "1")
    opened: dict[socket.socket, float] = {}
    slow = [served.connect() for _ in range(40)]
    for sock in slow:
        opened[sock] = time.monotonic()
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")
    silent = [served.connect() for _ in range(20)]
    idle = served.connect()  # one whole request, then nothing: the keep-alive timeout
    idle.sendall(REQUEST)
    assert read_responses(idle, 1) == [200]
    trickle = served.connect()  # one whole request, then the next one byte by byte
    trickle.sendall(REQUEST)
    assert read_responses(trickle, 1) == [200]
    for sock in [*silent, idle, trickle]:
        opened[sock] = time.monotonic()
    trickle.sendall(b"GET /metrics HTTP/1.1\r\n")
    cut_after: dict[socket.socket, float] = {}
    deadline = time.monotonic() + 8  # never cut without the fix: the loop stops by itself
    while len(cut_after) < len(opened) and time.monotonic() < deadline:
        for sock in [*slow, trickle]:
            if sock not in cut_after:
                with contextlib.suppress(ConnectionError):
                    sock.send(b"X")  # one byte of a header line every 0.2 s
        readable = select.select(list(set(opened) - set(cut_after)), [], [], 0.2)[0]
        for sock in readable:
            if closed(sock):
                cut_after[sock] = time.monotonic() - opened[sock]
    times = sorted(cut_after.values())
    print(
        f"\n{len(cut_after)} of {len(opened)} connections cut (header/keep-alive timeout 1 s):"
        f" after {times[0] if times else 0:.2f}-{times[-1] if times else 0:.2f} s,"
        f" median {statistics.median(times) if times else 0:.2f} s"
    )
    assert len(cut_after) == len(opened)
    assert all(0.8 < after < 2.5 for after in times)
    for sock in opened:
        sock.close()
    assert served.get() == 200


def test_scrapes_answer_in_time_while_slow_and_huge_headers_attack(
    serve: Callable[..., Served],
) -> None:
    served = serve("--max-connections", "50", "--header-timeout", "2")
    assert served.get(headers=PROMETHEUS) == 200
    rss_before, peak_before = served.memory_kib(), served.memory_kib("VmHWM")
    stop = threading.Event()
    opened, huge_answers = [0], []

    def slowloris() -> None:  # keeps 150 connections, one byte per connection each 0.5 s
        socks: list[socket.socket] = []
        while not stop.wait(0.5):
            socks = [sock for sock in socks if not closed(sock)]
            while len(socks) < 150:
                sock = served.connect()
                sock.sendall(b"GET /metrics HTTP/1.1\r\n")
                socks.append(sock)
                opened[0] += 1
            for sock in socks:
                with contextlib.suppress(ConnectionError):
                    sock.send(b"X")
        for sock in socks:
            sock.close()

    def huge() -> None:  # unfinished 10 MB headers, one after the other
        while not stop.is_set():
            huge_answers.append(huge_header(served, 10 * MB, finish=False))

    attackers = [threading.Thread(target=slowloris)] + [
        threading.Thread(target=huge) for _ in range(2)
    ]
    for attacker in attackers:
        attacker.start()
    latencies: list[float] = []
    statuses: list[int] = []
    try:
        wait_for(lambda: opened[0] >= 150 and len(huge_answers) >= 2, timeout=15)
        for _ in range(30):
            started = time.perf_counter()
            statuses.append(served.get(headers=PROMETHEUS))
            latencies.append(time.perf_counter() - started)
            time.sleep(0.1)  # pacing, not synchronisation: 30 scrapes over ~3 s of attack
        peak = served.memory_kib("VmHWM")
    finally:
        stop.set()
        for attacker in attackers:
            attacker.join(timeout=30)
    latencies.sort()
    print(
        f"\nunder attack ({opened[0]} slow connections opened, {len(huge_answers)} 10 MB"
        f" headers): 30 scrapes p50 {latencies[14] * 1000:.1f} ms, max"
        f" {latencies[-1] * 1000:.1f} ms; RSS {rss_before / 1024:.1f} MB before, peak"
        f" {peak_before / 1024:.1f} -> {peak / 1024:.1f} MB"
    )
    assert statuses == [200] * 30
    assert latencies[-1] < 1.0  # Prometheus's default scrape timeout is 10 s
    assert set(huge_answers) <= {431, None}
    assert huge_answers.count(431) >= len(huge_answers) / 2
    assert peak - max(peak_before, rss_before) < 10 * 1024


def test_beyond_the_cap_the_longest_waiting_connection_is_closed(
    serve: Callable[..., Served],
) -> None:
    served = serve("--max-connections", "20", "--header-timeout", "30")
    socks = []
    for _ in range(60):
        socks.append(served.connect())
        socks[-1].sendall(b"GET /metrics HTTP/1.1\r\n")  # headers never finished
    wait_for(lambda: all(closed(sock) for sock in socks[:40]), timeout=5)
    assert not any(closed(sock) for sock in socks[40:])  # the newest 20 stay
    assert served.get() == 200  # a scrape is served at once: it pushes the oldest out
    wait_for(lambda: closed(socks[40]), timeout=5)
    assert not any(closed(sock) for sock in socks[41:])
    for sock in socks:
        sock.close()
    assert "evicted" in served.stderr.read_text()


def test_busy_connections_are_not_evicted_a_stalled_one_is_cut(
    serve: Callable[..., Served],
) -> None:
    # 600 providers make /metrics about 1 MB: nine unread answers (8.5 MB) are more than the
    # socket buffers take (Linux's default tcp_wmem allows 4 MB), so each connection keeps a
    # request in progress, waiting to send.
    providers = ",".join(f"p{i:03d}" for i in range(600))
    served = serve(
        "--max-connections", "3", "--send-timeout", "3", "--providers", providers,
        "--interval", "30",
    )  # fmt: skip
    busy = [served.connect(receive_buffer=4096) for _ in range(3)]
    for sock in busy:
        sock.sendall(REQUEST * 9)  # 1 running + 8 queued: the most a connection may pipeline
    assert all(select.select([sock], [], [], 5)[0] for sock in busy)  # answers under way
    stalled_since = time.monotonic()
    assert status_of(served.connect()) == 503  # all 3 busy: refused, none evicted
    readers: list[list[int]] = [[], []]
    threads = [
        threading.Thread(target=lambda i=i: readers[i].extend(read_responses(busy[i], 9)))
        for i in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert readers == [[200] * 9, [200] * 9]  # the busy ones finished
    assert served.get("/healthz") == 200  # idle now: the first of them to finish made room
    wait_for(lambda: closed(busy[0]) or closed(busy[1]), timeout=5)
    # busy[2] never reads: cut (and reset) after 3 s without progress. Its TCP state tells,
    # read without reading the socket (reading would be progress).
    wait_for(lambda: tcp_state(busy[2]) == TCP_CLOSE, timeout=15, poll=0.05)
    cut_after = time.monotonic() - stalled_since
    left = read_responses(busy[2], 9)
    print(f"\nstalled reader cut after {cut_after:.2f} s (send timeout 3 s), {len(left)} of 9")
    # 3 s after its answers last made way: the kernel may still take some of them at first
    assert 2.5 < cut_after < 10
    assert len(left) < 9
    for sock in busy:
        sock.close()


def test_deep_pipelining_is_cut_without_memory_growth(serve: Callable[..., Served]) -> None:
    served = serve()
    with served.connect() as sock:  # pipelining within the limit is served in order
        sock.sendall(REQUEST * 5)
        assert read_responses(sock, 5) == [200] * 5
    rss_before, peak_before = served.memory_kib(), served.memory_kib("VmHWM")
    socks = []
    for _ in range(10):  # 8,000 pipelined requests each, none of the answers read
        sock = served.connect(receive_buffer=4096)
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.send(REQUEST * 8000)
        socks.append(sock)
    wait_for(lambda: all(closed(sock) for sock in socks), timeout=5)
    peak = served.memory_kib("VmHWM")
    print(
        f"\n10 x 8,000 pipelined requests never read: RSS {rss_before / 1024:.1f} MB before,"
        f" peak {peak_before / 1024:.1f} -> {peak / 1024:.1f} MB"
    )
    assert peak - max(peak_before, rss_before) < 5 * 1024
    for sock in socks:
        sock.close()
    assert served.get() == 200


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_request_without_exactly_one_host_gets_400(loop: str) -> None:
    with serving(LOOPS[loop]) as local:
        two = b"GET /x HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n"
        assert local.exchange(two) == [BAD]
        assert local.exchange(b"GET /x HTTP/1.1\r\n\r\n") == [BAD]
        assert local.exchange(b"GET /x HTTP/1.1\r\nHost: a b\r\n\r\n") == [BAD]
        assert local.exchange(GET % b"a" + two) == [(200, b"/a"), BAD]
        assert local.exchange(b"GET /x HTTP/1.0\r\n\r\n") == [(200, b"/x")]


def test_garbage_half_closes_and_two_hosts_on_the_aggregator(serve: Callable[..., Served]) -> None:
    # The fuzz audit's repro, on a real aggregator (uvloop, the FastAPI app): a request then
    # garbage lost its answer and logged a ~52-line traceback per connection, a half-closed
    # client got nothing, and the first of two Host headers was served.
    served = serve()
    local = Local(served.port)
    healthz = (200, b'{"status":"ok"}')
    for _ in range(20):
        assert local.exchange(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n\xff\xfe") == [
            healthz,
            BAD,
        ]
    request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
    assert local.exchange(request, half_close=True) == [healthz]
    two = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n"
    assert local.exchange(two) == [BAD]
    assert served.get("/healthz") == 200
    logged = served.stderr.read_text()
    assert "Traceback" not in logged and "ASGI" not in logged
    cut = [line for line in logged.splitlines() if "HTTP connections cut" in line]
    assert len(cut) == 1 and cut[0].endswith("bad_request 1")  # the rest 10 s later, in one line

"""The torture's scraper keeps only what its own replica answered: a replica killed and
restarted on its port may find another process serving there meanwhile (a test's aggregator on
a port that process was handed), whose counters must not be judged as the replica's."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from devtools.torture.deployment import AggregatorProcess
from devtools.torture.recorder import Scraper

EXPOSITION = """# TYPE gatewayz_aggregator_leader gauge
gatewayz_aggregator_leader{{replica="{replica}"}} 0
# TYPE gatewayz_aggregator_snapshot_cycle gauge
gatewayz_aggregator_snapshot_cycle 7
"""


class _Alive(AggregatorProcess):
    def alive(self) -> bool:
        return True


@pytest.fixture
def served() -> Iterator[tuple[int, list[str]]]:
    """An HTTP server answering /metrics as the replica named by the list's last entry."""
    replica = ["a1"]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = EXPOSITION.format(replica=replica[-1]).encode()
            self.send_response(200)
            self.send_header("content-type", "text/plain; version=0.0.4")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], replica
    finally:
        server.shutdown()
        server.server_close()


def test_a_scrape_answered_by_another_replica_is_left_out(
    served: tuple[int, list[str]], tmp_path: Path
) -> None:
    port, replica = served
    agg = _Alive("a1", port, "redis://unused", "ns", 300.0, tmp_path / "a1.log")
    scraper = Scraper([agg], lambda: 1)
    scraper.scrape(agg)
    replica.append("someone-else")
    scraper.scrape(agg)
    replica.append("a1")
    scraper.scrape(agg)
    assert [(s["replica"], s["cycle"]) for s in scraper.scrapes] == [("a1", 7.0), ("a1", 7.0)]

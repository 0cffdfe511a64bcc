"""An address the aggregator cannot listen on (aggregator/serve/http_serving.py ``listen``,
called first by aggregator/serve/process.py ``serve``): exit code 2 and one line on stderr, as a
bad setting, before the leader lease or any other Redis work (a second aggregator started by
mistake on a taken port must not steal leadership on its way out)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from aggregator.serve.http_serving import ListenError, listen
from devtools.redis_server import free_port
from gatewayz_protocol.keys import Keys

START_DEADLINE_SECONDS = 60.0
"""The process must exit on its own well within this (a resolver without network may take a
few seconds to give up on a name); a process still running then is killed and fails the test."""


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else listens on (say, an aggregator still running)."""
    with socket.create_server(("127.0.0.1", 0)) as occupant:
        yield occupant.getsockname()[1]


def run_aggregator(redis_url: str, namespace: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aggregator", "--interval", "1", *flags],
        env={**os.environ, "GATEWAYZ_REDIS_URL": redis_url, "GATEWAYZ_NAMESPACE": namespace},
        capture_output=True,
        text=True,
        timeout=START_DEADLINE_SECONDS,
    )


def assert_nothing_written(redis_url: str, namespace: str) -> None:
    connection = redis.Redis.from_url(redis_url)
    try:
        assert connection.exists(Keys(namespace).leader_lease) == 0
        # nor anything else of the namespace: it never got as far as a Redis command
        assert list(connection.scan_iter(match=Keys(namespace).pattern(), count=1000)) == []
    finally:
        connection.close()


def test_a_port_in_use_is_a_one_line_error_before_any_lease(
    redis_url: str, namespace: str, taken_port: int
) -> None:
    done = run_aggregator(redis_url, namespace, "--port", str(taken_port))
    assert done.returncode == 2
    assert done.stderr == (
        f"aggregator: error: cannot listen on 127.0.0.1:{taken_port}: address already in use; "
        'pick another port with --port N or GATEWAYZ_AGGREGATOR_PORT (make run ARGS="--port N")\n'
    )
    assert done.stdout == ""
    assert_nothing_written(redis_url, namespace)


def test_a_host_that_does_not_resolve_is_a_one_line_error_before_any_lease(
    redis_url: str, namespace: str
) -> None:
    port = free_port()
    done = run_aggregator(redis_url, namespace, "--host", "not.a.host.invalid", "--port", str(port))
    assert done.returncode == 2
    # the reason is the resolver's ("name or service not known", or without a network
    # "temporary failure in name resolution"): one line, whichever
    prefix = f"aggregator: error: cannot listen on not.a.host.invalid:{port}: "
    assert done.stderr.startswith(prefix), done.stderr
    assert done.stderr.endswith("\n") and done.stderr.count("\n") == 1
    assert len(done.stderr) > len(prefix) + 1  # a reason is given
    assert "Traceback" not in done.stderr and "pick another port" not in done.stderr
    assert_nothing_written(redis_url, namespace)


def test_listening_claims_the_port_before_serving_starts() -> None:
    """``listen`` listens at once, not only binds: with SO_REUSEADDR two sockets may both bind
    a port on Linux while neither listens, so a second aggregator starting at the same moment
    would find out only later. Listening, the port is taken for it at once, and connections
    wait in the backlog until the server runs."""
    sockets = listen("127.0.0.1", 0)
    try:
        port = sockets[0].getsockname()[1]
        with pytest.raises(ListenError) as raised:
            listen("127.0.0.1", port)
        assert str(raised.value) == f"cannot listen on 127.0.0.1:{port}: address already in use"
        assert raised.value.in_use
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # accepted into the backlog before any server runs
    finally:
        for sock in sockets:
            sock.close()


def test_an_ipv6_address_is_named_in_brackets() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    try:
        occupant = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback on this host")
    with occupant:
        port = occupant.getsockname()[1]
        with pytest.raises(ListenError) as raised:
            listen("::1", port)
    assert str(raised.value) == f"cannot listen on [::1]:{port}: address already in use"

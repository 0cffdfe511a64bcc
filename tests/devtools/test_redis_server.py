"""The throw-away servers tests start: a port taken between its choice and the server's bind
(parallel tests, clients' ephemeral ports) costs another try, not a failed test."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.redis_cluster import start_node
from devtools.redis_server import (
    ExitedAtStart,
    answers,
    bindable,
    ephemeral_ports,
    free_port,
    stable_port,
    start_redis,
)
from tests.support.processes import need_redis_tools


def _held_ports(count: int) -> Iterator[socket.socket]:
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def test_a_chosen_port_taken_before_the_server_binds_it_is_replaced() -> None:
    need_redis_tools()
    held = list(_held_ports(2))
    offered = [sock.getsockname()[1] for sock in held]
    choices = iter([*offered, free_port()])
    try:
        server = start_redis(choose_port=lambda: next(choices))
    finally:
        for sock in held:
            sock.close()
    try:
        assert server.port not in offered
        assert answers(server.url)
    finally:
        server.stop()


@pytest.mark.parametrize("named", [True, False])
def test_a_taken_port_the_caller_named_or_every_port_offered_fails_with_the_reason(
    named: bool,
) -> None:
    need_redis_tools()
    (held,) = _held_ports(1)
    port = int(held.getsockname()[1])
    try:
        with pytest.raises(ExitedAtStart, match=f"exited at start on port {port}"):
            start_redis(port) if named else start_redis(choose_port=lambda: port)
    finally:
        held.close()


def test_a_cluster_node_keeps_its_state_in_its_own_directory() -> None:
    """Two nodes' ``nodes.conf`` never collide: each is in the node's own directory."""
    need_redis_tools()
    first, second = start_node(), start_node()
    try:
        assert first.workdir != second.workdir
        for node in (first, second):
            assert answers(node.url)
            assert (Path(node.workdir) / "nodes.conf").is_file()
    finally:
        first.stop()
        second.stop()


def test_a_server_started_with_requirepass_is_waited_for_and_wants_the_password() -> None:
    """A server that answers "wants a password" runs: start_redis returns it (it waited for an
    answer to PING without the password, until its timeout, and failed)."""
    need_redis_tools()
    server = start_redis(extra_args=("--requirepass", "pw-8812"), timeout=5.0)
    try:
        assert not answers(server.url)
        assert answers(server.url, asking_credentials=True)
        assert answers(f"redis://:pw-8812@127.0.0.1:{server.port}/0")
    finally:
        server.stop()


def test_a_stable_port_is_free_and_outside_the_ports_the_kernel_hands_out() -> None:
    """A process restarted on its port after a kill must not find it handed, meanwhile, to a
    port-0 bind or an outgoing connection: those take ephemeral ports only."""
    ephemeral = ephemeral_ports()
    taken = [free_port() for _ in range(50)]
    assert all(port in ephemeral for port in taken)  # what free_port() (port 0) gives
    for plus in (0, 10_000):
        for _ in range(50):
            port = stable_port(plus)
            assert port not in ephemeral and port + plus not in ephemeral
            assert port >= 10_000 and port + plus <= 65_535
            assert bindable(port) and bindable(port + plus)
    cluster_ports = {stable_port(10_000) for _ in range(50)}
    assert max(cluster_ports) <= 55_535  # Redis refuses higher ports in cluster mode

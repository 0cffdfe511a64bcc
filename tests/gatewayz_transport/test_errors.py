"""What a Redis error means (gatewayz_transport.errors), classified from the errors real Redis
servers send: out of memory (``CONFIG SET maxmemory``), a read-only replica, a replica whose
master is down, too few replicas, a server busy in a script, a refused or hung connection, a
cluster node that does not serve a slot. Each test that reconfigures Redis has its own server
(``private_redis``). Replies no single test server can be made to send (LOADING, TRYAGAIN,
CLUSTERDOWN, ASK, Redis 6's script errors) are parsed from their text by redis-py's own parser,
as a connection would."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis

from devtools.redis_cluster import LocalCluster
from devtools.redis_server import start_redis
from gatewayz_transport.connection import connect
from gatewayz_transport.errors import (
    explained,
    is_auth_failure,
    is_out_of_memory,
    is_transient,
    raise_first_error,
)
from gatewayz_transport.raw import execute_raw
from gatewayz_transport.routing import slot_of
from gatewayz_transport.scripts import register
from tests.support.acl import user_without
from tests.support.listeners import BrokenServer
from tests.support.processes import need_redis_tools

NOT_AN_ERROR = (ValueError("x"), KeyError("k"), RuntimeError("OOM"), Exception("BUSY"))


def error_from_redis(url: str, reply: str) -> redis.RedisError:
    """The exception redis-py raises when a Redis answers ``reply`` (a script's error reply):
    the class its parser chose for the reply's code."""
    client = redis.Redis.from_url(url)
    try:
        with pytest.raises(redis.RedisError) as raised:
            client.eval("return redis.error_reply(ARGV[1])", 0, reply)
        return raised.value
    finally:
        client.close()


def _url(connection: redis.Redis) -> str:
    kwargs = connection.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


def _raised(call: Any) -> BaseException:
    try:
        call()
    except BaseException as exc:
        return exc
    raise AssertionError("no error")


@pytest.fixture
def full(private_redis: redis.Redis) -> redis.Redis:
    """A Redis at ``maxmemory``: it refuses every write that may grow memory."""
    private_redis.set("present", "1")
    private_redis.config_set("maxmemory", "1")
    return private_redis


def test_out_of_memory_on_a_write(full: redis.Redis) -> None:
    error = _raised(lambda: full.set("k", "v"))
    assert "maxmemory" in str(error)
    assert is_out_of_memory(error) and is_transient(error)
    assert full.get("present") == b"1"  # reads go on: a read is never out of memory


def test_out_of_memory_in_a_transaction(full: redis.Redis) -> None:
    error = _raised(lambda: full.pipeline(transaction=True).set("k", "v").incr("n").execute())
    assert is_out_of_memory(error) and is_transient(error)
    # The replies as Redis sent them: the queued write refused, then EXEC's EXECABORT
    connection = connect(_url(full), 2.0)
    ok, refused, aborted = execute_raw(connection, [("MULTI",), ("SET", "k", "v"), ("EXEC",)])
    assert ok == b"OK"
    assert isinstance(refused, redis.exceptions.OutOfMemoryError)
    assert is_out_of_memory(refused) and is_transient(refused)
    assert isinstance(aborted, redis.exceptions.ExecAbortError)
    assert full.exists("k", "n") == 0  # nothing of it applied


def test_memory_full_between_queueing_and_exec_is_the_reason_the_transaction_failed(
    private_redis: redis.Redis,
) -> None:
    client = redis.Redis.from_url(_url(private_redis), single_connection_client=True)
    try:
        assert client.execute_command("MULTI") == b"OK"
        client.execute_command("SET", "k", "v")  # QUEUED
        private_redis.config_set("maxmemory", "1")  # from another connection, meanwhile
        aborted = _raised(lambda: client.execute_command("EXEC"))
    finally:
        client.close()
    assert isinstance(aborted, redis.exceptions.ExecAbortError)
    assert "discarded because of: OOM" in str(aborted)
    assert is_out_of_memory(aborted) and is_transient(aborted)
    assert private_redis.exists("k") == 0


def test_out_of_memory_in_a_script(full: redis.Redis) -> None:
    error = _raised(lambda: full.eval("return redis.call('SET', KEYS[1], 'v')", 1, "k"))
    assert "script" in str(error)
    assert is_out_of_memory(error) and is_transient(error)


def test_a_read_only_replica_and_a_replica_whose_master_is_down(
    private_redis: redis.Redis,
) -> None:
    private_redis.config_set("replica-serve-stale-data", "no")
    private_redis.replicaof("127.0.0.1", "1")  # a master that never answers
    try:
        read_only = _raised(lambda: private_redis.set("k", "v"))
        master_down = _raised(lambda: private_redis.get("k"))
    finally:
        private_redis.replicaof("NO", "ONE")
    assert "read only replica" in str(read_only)
    assert "Link with MASTER is down" in str(master_down)
    for error in (read_only, master_down):
        assert is_transient(error) and not is_out_of_memory(error)


def test_too_few_replicas(private_redis: redis.Redis) -> None:
    private_redis.config_set("min-replicas-to-write", "1")
    error = _raised(lambda: private_redis.set("k", "v"))
    assert type(error) is redis.ResponseError  # no class of its own: known by its code
    assert str(error).startswith("NOREPLICAS ")
    assert is_transient(error) and not is_out_of_memory(error)


def test_a_server_busy_in_a_script(private_redis: redis.Redis) -> None:
    private_redis.config_set("busy-reply-threshold", "10")  # ms (lua-time-limit before 7)
    runner = redis.Redis.from_url(_url(private_redis))
    ended: list[BaseException] = []

    def spin() -> None:
        try:
            runner.eval("while true do end", 0)
        except redis.RedisError as exc:
            ended.append(exc)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    busy: BaseException | None = None
    while busy is None:  # PING answers PONG until the script runs, then BUSY
        assert time.monotonic() < deadline, "the server never said BUSY"
        try:
            private_redis.ping()
        except redis.ResponseError as exc:
            busy = exc
    private_redis.script_kill()
    thread.join(10)
    runner.close()
    assert str(busy).startswith("BUSY ")
    assert is_transient(busy) and not is_out_of_memory(busy)
    assert len(ended) == 1 and not thread.is_alive()


def test_refused_and_hung_connections_are_transient() -> None:
    hole = BrokenServer()  # accepts, then closes at once
    hung = BrokenServer(hang=True)
    try:
        closed = _raised(lambda: connect(hole.redis_url, socket_timeout=0.5).ping())
        timed_out = _raised(lambda: connect(hung.redis_url, socket_timeout=0.2).ping())
    finally:
        hole.close()
        hung.close()
    refused = _raised(lambda: connect(hole.redis_url, socket_timeout=0.5).ping())
    assert isinstance(closed, redis.ConnectionError)
    assert isinstance(timed_out, redis.TimeoutError)
    assert isinstance(refused, redis.ConnectionError)
    for error in (closed, timed_out, refused, ConnectionResetError(), OSError("unreachable")):
        assert is_transient(error) and not is_out_of_memory(error)


def test_errors_that_would_fail_again_are_not_transient(private_redis: redis.Redis) -> None:
    private_redis.set("text", "v")
    wrong_type = _raised(lambda: private_redis.lpush("text", 1))
    not_an_integer = _raised(lambda: private_redis.incr("text"))
    no_script = _raised(lambda: private_redis.evalsha("0" * 40, 0))
    unknown = _raised(lambda: private_redis.execute_command("NOSUCHCOMMAND"))
    syntax = _raised(lambda: private_redis.execute_command("SET", "k"))
    for error in (wrong_type, not_an_integer, no_script, unknown, syntax, *NOT_AN_ERROR):
        assert not is_transient(error), error
        assert not is_out_of_memory(error), error


def test_a_node_that_does_not_serve_the_slot_redirects(redis_cluster: LocalCluster) -> None:
    node = redis_cluster.nodes[0]
    key = next(
        f"{{k{i}}}"
        for i in range(10_000)
        if redis_cluster.master_of_slot(slot_of(f"{{k{i}}}")) != node
    )
    plain = redis.Redis.from_url(node.url)  # not cluster-aware: Redis answers MOVED
    try:
        moved = _raised(lambda: plain.get(key))
    finally:
        plain.close()
    # redis-py 5.0 parses it as a MovedError only on a cluster client's connections; later
    # releases on every connection: transient either way
    if isinstance(moved, redis.exceptions.MovedError):
        assert moved.slot_id == slot_of(key)
    else:
        assert isinstance(moved, redis.ResponseError) and str(moved).startswith("MOVED ")
    assert is_transient(moved) and not is_out_of_memory(moved)


@pytest.mark.parametrize(
    ("reply", "out_of_memory"),
    [
        ("LOADING Redis is loading the dataset in memory", False),
        ("TRYAGAIN Multiple keys request during rehashing of slot", False),
        ("CLUSTERDOWN The cluster is down", False),
        ("ASK 3999 127.0.0.1:6381", False),
        ("MOVED 3999 127.0.0.1:6381", False),
        ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", False),
        ("READONLY You can't write against a read only replica.", False),
        ("NOREPLICAS Not enough good replicas to write.", False),
        ("BUSY Redis is busy running a script.", False),
        (
            "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to "
            "persist to disk.",
            False,
        ),
        (
            "EXECABORT Transaction discarded because of: MISCONF Redis is configured to save RDB "
            "snapshots, but it's currently unable to persist to disk.",
            False,
        ),
        (
            "EXECABORT Transaction discarded because of: READONLY You can't write against a read "
            "only replica.",
            False,
        ),
        ("OOM command not allowed when used memory > 'maxmemory'.", True),
        (
            "ERR Error running script (call to f_0123): @user_script:1: @user_script: 1: "
            "-OOM command not allowed when used memory > 'maxmemory'.",
            True,
        ),
        (
            "EXECABORT Transaction discarded because of: OOM command not allowed when used "
            "memory > 'maxmemory'.",
            True,
        ),
    ],
)
def test_replies_that_say_not_now(single_redis_url: str, reply: str, out_of_memory: bool) -> None:
    error = error_from_redis(single_redis_url, reply)
    assert is_transient(error)
    assert is_out_of_memory(error) is out_of_memory


@pytest.mark.parametrize(
    "reply",
    [
        "ERR unknown command 'FOO'",
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "NOSCRIPT No matching script. Please use EVAL.",
        "EXECABORT Transaction discarded because of previous errors.",
        "ERR value is not an integer or out of range",
        "NOPERM this user has no permissions to run the 'set' command",
        "ERR Error running script: ROOM is full",  # OOM inside a word is not a code
        "EXECABORT Transaction discarded because of: NOPERM this user has no permissions to "
        "run the 'set' command",
    ],
)
def test_replies_that_say_never(single_redis_url: str, reply: str) -> None:
    error = error_from_redis(single_redis_url, reply)
    assert not is_transient(error)
    assert not is_out_of_memory(error)


def test_raise_first_error_raises_the_first_error_reply(private_redis: redis.Redis) -> None:
    private_redis.set("text", "v")
    pipe = private_redis.pipeline(transaction=False)
    pipe.set("a", 1).lpush("text", 1).incr("text").get("a")
    replies = pipe.execute(raise_on_error=False)
    assert replies[0] is True and replies[3] == b"1"
    with pytest.raises(redis.ResponseError) as raised:
        raise_first_error(replies)
    assert raised.value is replies[1]  # WRONGTYPE, not the INCR's error after it
    assert "WRONGTYPE" in str(raised.value)
    raise_first_error([True, b"1", None, 0])
    raise_first_error([])


def test_a_command_refused_inside_a_script_is_named(private_redis: redis.Redis) -> None:
    # Redis names the script's SHA and line, not the command: the operator needs the command
    body = "#!lua\nredis.call('SET', KEYS[1], 1)\n\nredis.call(\"PEXPIRE\", KEYS[1], 10)\n"
    with user_without(_url(private_redis), "pexpire") as url:
        script = register(connect(url, socket_timeout=2.0), body)
        refused = _raised(lambda: script(keys=["k"]))
    said = explained(refused)
    assert said.startswith(str(refused).rstrip(". "))
    assert said.endswith(
        "(line 4 runs 'pexpire': this Redis user's ACL must allow that command on the "
        "script's keys)"
    )
    assert explained(redis.ResponseError("ERR x script: " + "0" * 40 + ", on @user_script:1")) == (
        "ERR x script: " + "0" * 40 + ", on @user_script:1"
    )  # not a refusal, and a script this process never made: as it was


@pytest.mark.parametrize(
    ("reply", "auth"),
    [
        ("NOAUTH Authentication required.", True),
        ("WRONGPASS invalid username-password pair or user is disabled.", True),
        ("EXECABORT Transaction discarded because of: NOAUTH Authentication required.", True),
        ("NOPERM this user has no permissions to run the 'set' command", False),
        ("WRONGTYPE Operation against a key holding the wrong kind of value", False),
    ],
)
def test_replies_that_refuse_the_credentials(single_redis_url: str, reply: str, auth: bool) -> None:
    refused = error_from_redis(single_redis_url, reply)
    assert is_auth_failure(refused) is auth
    hint = (
        " (Redis wants other credentials: put them in the Redis URL as "
        "redis://user:password@host:port/db)"
    )
    # the client logs explained(): a refusal of credentials says where they go, only that one
    assert explained(refused) == (str(refused).rstrip(". ") + hint if auth else str(refused))
    assert explained(refused, "put them elsewhere").endswith(
        "(put them elsewhere)" if auth else str(refused)
    )


def test_a_server_that_wants_a_password_refuses_the_credentials_and_a_dead_one_does_not() -> None:
    need_redis_tools()
    server = start_redis(extra_args=("--requirepass", "pw-4410"))
    try:
        for url in (server.url, f"redis://:wrong@127.0.0.1:{server.port}/0"):
            with (
                connect(url, 2.0) as connection,
                pytest.raises(redis.AuthenticationError) as raised,
            ):
                connection.ping()
            assert is_auth_failure(raised.value)
    finally:
        server.stop()
    with connect(server.url, 2.0) as connection, pytest.raises(redis.ConnectionError) as refused:
        connection.ping()
    assert not is_auth_failure(refused.value)
    assert not is_auth_failure(OSError("NOAUTH"))

"""Scripts run by their SHA (gatewayz_transport.scripts): loaded again after ``SCRIPT FLUSH``,
alone and queued in pipelines and transactions, each call taking effect once; a Redis 7 flags
line kept where the server reads it (a flagged write runs at ``maxmemory``) and dropped where it
cannot (fakeredis). ``SCRIPT FLUSH`` and ``maxmemory`` run on a server of the test's own."""

from __future__ import annotations

import hashlib

import fakeredis
import pytest
import redis

from gatewayz_protocol.scripts import ALLOW_OOM
from gatewayz_transport.connection import connect
from gatewayz_transport.scripts import FlaggedScript, ScriptCalls, may_run_again, register

INCR = "return redis.call('INCR', KEYS[1])"
FAILS = "return redis.error_reply('boom')"


def _sha1(text: str) -> str:
    """A script's SHA as Redis names it: the SHA-1 of its text, in hex."""
    return hashlib.sha1(text.encode()).hexdigest()


def _url(connection: redis.Redis) -> str:
    kwargs = connection.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


def test_register_names_the_script_by_its_sha(private_redis: redis.Redis) -> None:
    script = register(private_redis, INCR)
    assert isinstance(script, FlaggedScript)
    assert script.sha == _sha1(INCR)
    assert private_redis.script_exists(script.sha) == [False]  # registering does no I/O
    assert script.load() == _sha1(INCR)
    assert private_redis.script_exists(script.sha) == [True]


def test_a_script_forgotten_by_redis_is_loaded_again_and_runs_once(
    private_redis: redis.Redis,
) -> None:
    connection = connect(_url(private_redis), socket_timeout=2.0)
    script = register(connection, INCR)
    assert script(keys=["k"]) == 1  # never loaded: NOSCRIPT, loaded, run
    assert script(keys=["k"]) == 2
    private_redis.script_flush()
    assert script(keys=["k"]) == 3  # forgotten: loaded again, run once
    assert private_redis.get("k") == b"3"
    assert private_redis.script_exists(_sha1(INCR)) == [True]


def test_a_flagged_script_keeps_its_flags_on_redis_7(private_redis: redis.Redis) -> None:
    connection = connect(_url(private_redis), socket_timeout=2.0)
    flagged = register(connection, ALLOW_OOM + INCR)
    plain = register(connection, "return redis.call('INCRBY', KEYS[1], 10)")
    private_redis.set("k", 0)
    private_redis.config_set("maxmemory", "1")
    assert flagged(keys=["k"]) == 1  # allow-oom: the breaker's writes go on at maxmemory
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        plain(keys=["k"])
    assert flagged.script == ALLOW_OOM + INCR and flagged.sha == _sha1(ALLOW_OOM + INCR)


def test_a_server_that_cannot_read_flags_runs_the_script_without_them() -> None:
    server = fakeredis.FakeRedis()
    flagged = register(server, ALLOW_OOM + INCR)
    with pytest.raises(redis.ResponseError) as unreadable:
        server.eval(ALLOW_OOM + INCR, 1, "k")  # what fakeredis says of a flags line
    assert may_run_again(unreadable.value)
    assert flagged(keys=["k"]) == 1
    assert flagged.script == INCR  # the same script without its first line
    assert flagged.sha == _sha1(INCR)
    assert flagged(keys=["k"]) == 2
    assert server.get("k") == b"2"


def test_may_run_again_only_for_a_call_that_did_nothing(private_redis: redis.Redis) -> None:
    with pytest.raises(redis.exceptions.NoScriptError) as unknown:
        private_redis.evalsha("0" * 40, 0)
    private_redis.set("text", "v")
    with pytest.raises(redis.ResponseError) as wrong_type:
        private_redis.eval("return redis.call('LPUSH', KEYS[1], 1)", 1, "text")
    with pytest.raises(redis.ResponseError) as failed:
        private_redis.eval(FAILS, 0)
    assert may_run_again(unknown.value)
    assert not may_run_again(wrong_type.value)
    assert not may_run_again(failed.value)
    assert not may_run_again(redis.ConnectionError("gone"))


@pytest.mark.parametrize("transaction", [False, True])
def test_pipelined_calls_redis_forgot_run_again_once(
    private_redis: redis.Redis, transaction: bool
) -> None:
    connection = connect(_url(private_redis), socket_timeout=2.0)
    script = register(connection, INCR)
    script.load()
    pipe = connection.pipeline(transaction=transaction)
    calls = ScriptCalls(pipe)
    pipe.set("a", 1)
    assert calls.queue(script, ["k"], []) == 1
    pipe.incr("a")
    assert calls.queue(script, ["k"], []) == 3
    private_redis.script_flush()  # forgotten between queueing and sending
    replies = pipe.execute(raise_on_error=False)
    assert replies[0] is True and replies[2] == 2  # the rest of the pipeline ran
    assert isinstance(replies[1], redis.exceptions.NoScriptError)
    assert isinstance(replies[3], redis.exceptions.NoScriptError)
    assert private_redis.get("k") is None  # the calls did nothing
    assert calls.rerun_missing(replies) == [True, 1, 2, 2]
    assert private_redis.get("k") == b"2"  # each call took effect once


def test_calls_redis_knew_are_not_run_again(private_redis: redis.Redis) -> None:
    connection = connect(_url(private_redis), socket_timeout=2.0)
    script = register(connection, INCR)
    script.load()
    pipe = connection.pipeline(transaction=False)
    calls = ScriptCalls(pipe)
    assert calls.queue(script, ["k"], []) == 0
    replies = pipe.execute(raise_on_error=False)
    assert calls.rerun_missing(replies) == [1]
    assert private_redis.get("k") == b"1"


def test_a_rerun_that_fails_is_its_reply_not_raised(private_redis: redis.Redis) -> None:
    connection = connect(_url(private_redis), socket_timeout=2.0)
    failing = register(connection, FAILS)
    pipe = connection.pipeline(transaction=False)
    calls = ScriptCalls(pipe)
    calls.queue(failing, [], [])
    pipe.ping()
    replies = calls.rerun_missing(pipe.execute(raise_on_error=False))  # never loaded
    assert isinstance(replies[0], redis.ResponseError)
    assert not isinstance(replies[0], redis.exceptions.NoScriptError)
    assert str(replies[0]) == "boom"
    assert replies[1] is True


def test_the_calls_redis_did_not_know_are_named_for_a_caller_that_sends_them_again(
    private_redis: redis.Redis,
) -> None:
    # A caller that must retry them (a re-run refused for memory is not a loss) sends them
    # itself, after loading: ``missing()`` names them and runs nothing.
    connection = connect(_url(private_redis), socket_timeout=2.0)
    script, failing = register(connection, INCR), register(connection, FAILS)
    failing.load()
    pipe = connection.pipeline(transaction=True)
    calls = ScriptCalls(pipe)
    calls.queue(script, ["k"], [])
    pipe.set("a", "answer: near '#'")  # a reply that is no error is never a missing call
    calls.queue(failing, [], [])
    replies = pipe.execute(raise_on_error=False)
    assert calls.indexes == [0, 2]
    assert calls.missing(replies) == [0]  # the failing one ran (and failed): not missing
    assert calls.missing([b"near '#'", True, 1]) == []
    assert private_redis.get("k") is None  # nothing run again

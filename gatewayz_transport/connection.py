"""How every process of the project connects to Redis: connections that never retry on their own
and send a pipeline in one piece (``connect``)."""

from __future__ import annotations

import inspect
import threading
from typing import Any, TypeAlias

import hiredis
import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import Connection as RedisConnection
from redis.connection import SSLConnection
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection, SentinelManagedSSLConnection

from gatewayz_transport.urls import (
    CLUSTER_SCHEMES,
    SENTINEL_SCHEMES,
    check_credentials,
    check_scheme,
    cluster_seeds,
    parse_sentinel_url,
)


class _OneBufferPipelines:
    """Packs a pipeline into one buffer, so it goes out in one ``sendall``. redis-py cuts it into
    ~6 KB pieces, and every socket call releases the GIL: a flusher taking it back from a
    thread that records flat out waits up to a switch interval (5 ms) per piece, which capped
    one process at about 100,000 events/s. Each command goes straight to hiredis's packer (a
    dependency via ``redis[hiredis]``): redis-py's per-argument checks cost more than the
    packing itself for a ZADD of thousands of members."""

    def pack_commands(self, commands: Any) -> list[bytes]:
        packed = []
        for args in commands:
            if isinstance(args[0], str) and " " in args[0]:  # "SCRIPT LOAD": redis-py splits
                packed += self.pack_command(*args)  # type: ignore[attr-defined]
                continue
            try:
                packed.append(hiredis.pack_command(tuple(args)))
            except TypeError as exc:  # an argument Redis has no encoding for
                raise redis.DataError(str(exc)) from exc
        return [b"".join(packed)]


_ONE_BUFFER_CLASSES: dict[type, type] = {}

Connection: TypeAlias = "redis.Redis | RedisCluster"
"""What ``connect`` returns: one Redis (also Sentinel-managed) or a Redis Cluster."""


def _one_buffer(base: type) -> type:
    one_buffer = _ONE_BUFFER_CLASSES.get(base)
    if one_buffer is None:
        one_buffer = type(f"OneBuffer{base.__name__}", (_OneBufferPipelines, base), {})
        _ONE_BUFFER_CLASSES[base] = one_buffer
    return one_buffer


_NAME_REQUIRED: dict[type, bool] = {}


def pooled_connection(pool: redis.ConnectionPool) -> RedisConnection:
    """A connection taken from ``pool`` (``ConnectionPool.get_connection``): redis-py before
    5.3 requires a command name, later releases warn when given one."""
    required = _NAME_REQUIRED.get(type(pool))
    if required is None:
        name = inspect.signature(pool.get_connection).parameters.get("command_name")
        required = name is not None and name.default is inspect.Parameter.empty
        _NAME_REQUIRED[type(pool)] = required
    connection: RedisConnection = pool.get_connection("PING") if required else pool.get_connection()
    return connection


_TIMEOUT_OPTIONS = frozenset({"socket_timeout", "socket_connect_timeout"})


def connect(redis_url: str, socket_timeout: float, *, timeout_wins: bool = False) -> Connection:
    """A connection that never retries on its own (the caller owns retries, so a command is
    never silently sent twice) and sends each pipeline in one piece. Does no I/O.

    ``socket_timeout`` bounds each command and each connect, unless the URL says otherwise
    (``?socket_timeout=``, ``?socket_connect_timeout=``: redis-py takes the URL's over the
    arguments); ``timeout_wins``: ``socket_timeout`` whatever the URL says (a connection whose
    timeout is a promise to its callers: the client's ``allow()``, ``allow_timeout_seconds``).

    ``redis://``, ``rediss://``, ``unix://``: one Redis.
    ``redis+cluster://[user:pass@]host:port[,host:port...]`` (``rediss+cluster``: TLS): a Redis
    Cluster, any nodes as the seeds (several: it is found while one of them answers).
    ``redis+sentinel://[user:pass@]host:port[,host:port...]/<master name>[/<db>]``
    (``rediss+sentinel``: TLS to the master): the master the sentinels name, followed across
    failovers. ValueError for a URL none of these read (``check_scheme``: naming them all), or
    whose credentials hold an unencoded '/', '?' or '#' (``check_credentials``: quoting none)."""
    check_scheme(redis_url)
    check_credentials(redis_url)
    if timeout_wins:
        redis_url = _without_options(redis_url, _TIMEOUT_OPTIONS)
    scheme = redis_url.partition("://")[0].lower()
    timeouts: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "health_check_interval": 0,
    }
    if scheme in CLUSTER_SCHEMES:
        plain, seeds = cluster_seeds(redis_url)
        tls = scheme.startswith("rediss")
        return _DeferredCluster(
            url=plain,
            startup_nodes=[ClusterNode(host, port) for host, port in seeds],  # type: ignore[no-untyped-call]
            connection_class=_one_buffer(SSLConnection if tls else RedisConnection),
            retry=Retry(NoBackoff(), 0),
            **timeouts,
        )
    if scheme in SENTINEL_SCHEMES:
        return _sentinel_master(redis_url, SENTINEL_SCHEMES[scheme], timeouts)
    pool = redis.ConnectionPool.from_url(redis_url, retry=Retry(NoBackoff(), 0), **timeouts)
    pool.connection_class = _one_buffer(pool.connection_class)  # TCP, TLS or Unix socket
    return redis.Redis.from_pool(pool)


def _without_options(redis_url: str, names: frozenset[str]) -> str:
    """``redis_url`` without the query options ``names`` (the others as given)."""
    base, question, query = redis_url.partition("?")
    kept = [part for part in query.split("&") if part.partition("=")[0] not in names]
    return f"{base}?{'&'.join(kept)}" if question and any(kept) else base


class _DeferredCluster(RedisCluster):
    """A RedisCluster that asks for the cluster's layout on first use, not when built: a
    worker must start while Redis is down (redis-py's constructor would raise). Until the
    layout is known, a command raises redis.ConnectionError (retried like any outage). Only
    redis-py's constructor runs late; nothing of its internals is looked at."""

    def __init__(self, **settings: Any) -> None:  # no I/O: RedisCluster.__init__ runs later
        self._deferred_settings = settings
        self._deferred_lock = threading.RLock()
        self._deferred_started = False
        self._deferred_starting = False

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes the object lacks: before the first successful start, the
        # cluster client's own state. While its constructor runs (in this thread), a missing
        # attribute is just missing.
        if name.startswith("_deferred") or name.startswith("__"):
            raise AttributeError(name)
        with self._deferred_lock:
            if self._deferred_starting:
                raise AttributeError(name)
            if not self._deferred_started:
                self._deferred_start()
        return object.__getattribute__(self, name)

    def _deferred_start(self) -> None:
        self._deferred_starting = True
        try:
            RedisCluster.__init__(self, **self._deferred_settings)
            self._deferred_started = True
        except RedisClusterException as exc:
            for name in [n for n in self.__dict__ if not n.startswith("_deferred")]:
                del self.__dict__[name]  # half built: started again on the next use
            why = self._deferred_why(exc)
            raise redis.ConnectionError(f"Redis Cluster unreachable: {exc}{why}") from exc
        finally:
            self._deferred_starting = False

    def _deferred_why(self, exc: RedisClusterException) -> str:
        """redis-py reads any error reply to CLUSTER SLOTS as "Cluster mode is not enabled on
        this node": what the first seed really answers (an ACL without CLUSTER SLOTS, say)."""
        if "Cluster mode is not enabled" not in str(exc):
            return ""
        settings = self._deferred_settings
        probe = redis.Redis.from_url(
            settings["url"],
            socket_timeout=settings.get("socket_timeout"),
            socket_connect_timeout=settings.get("socket_connect_timeout"),
        )
        try:
            probe.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call, unused-ignore]
        except redis.ResponseError as answer:
            return f" (its first node answers CLUSTER SLOTS with: {answer})"
        except (redis.RedisError, OSError):
            pass
        finally:
            probe.close()
        return ""

    def get_encoder(self) -> Any:
        """No I/O (scripts are registered before the first command): the encoder the cluster
        client will build, from the same settings (a connection pool's, built for it)."""
        if self._deferred_started:
            return super().get_encoder()  # type: ignore[no-untyped-call]
        settings = self._deferred_settings
        pool = redis.ConnectionPool(
            encoding=settings.get("encoding", "utf-8"),
            encoding_errors=settings.get("encoding_errors", "strict"),
            decode_responses=settings.get("decode_responses", False),
        )
        return pool.get_encoder()

    def close(self) -> None:
        if self._deferred_started:
            super().close()


def _sentinel_master(redis_url: str, tls: bool, timeouts: dict[str, Any]) -> redis.Redis:
    url = parse_sentinel_url(redis_url)
    # (redis-py types Sentinel from 8.x on; the ignores cover the untyped releases)
    sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
        url.sentinels, sentinel_kwargs=dict(timeouts), **timeouts
    )
    base = SentinelManagedSSLConnection if tls else SentinelManagedConnection
    master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call, unused-ignore]
        url.master,
        db=url.db,
        connection_class=_one_buffer(base),
        retry=Retry(NoBackoff(), 0),
        username=url.username,
        password=url.password,
        **timeouts,
    )
    return master

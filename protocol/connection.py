"""How every process of the project talks to Redis: connections that never retry on their own and
send a pipeline in one piece, and Lua scripts run by their SHA inside pipelines."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import unquote, urlparse

import hiredis
import redis
from redis._parsers import Encoder
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.connection import Connection as RedisConnection
from redis.connection import SSLConnection, parse_url
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection, SentinelManagedSSLConnection
from redis.typing import EncodableT, KeyT

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


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

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # -> TLS


def _one_buffer(base: type) -> type:
    one_buffer = _ONE_BUFFER_CLASSES.get(base)
    if one_buffer is None:
        one_buffer = type(f"OneBuffer{base.__name__}", (_OneBufferPipelines, base), {})
        _ONE_BUFFER_CLASSES[base] = one_buffer
    return one_buffer


def connect(redis_url: str, socket_timeout: float) -> Connection:
    """A connection that never retries on its own (the caller owns retries, so a command is
    never silently sent twice) and sends each pipeline in one piece. Does no I/O.

    ``redis://``, ``rediss://``, ``unix://``: one Redis.
    ``redis+cluster://[user:pass@]host:port[,host:port...]`` (``rediss+cluster``: TLS): a Redis
    Cluster, any nodes as the seeds (several: it is found while one of them answers).
    ``redis+sentinel://[user:pass@]host:port[,host:port...]/<master name>[/<db>]``
    (``rediss+sentinel``: TLS to the master): the master the sentinels name, followed across
    failovers. ValueError for a URL none of these read."""
    scheme = redis_url.partition("://")[0].lower()
    timeouts: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "health_check_interval": 0,
    }
    if scheme in CLUSTER_SCHEMES:
        plain, seeds = _cluster_seeds(redis_url)
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


class _DeferredCluster(RedisCluster):
    """A RedisCluster that asks for the cluster's layout on first use, not when built: a
    worker must start while Redis is down (redis-py's constructor would raise). Until the
    layout is known, a command raises redis.ConnectionError (retried like any outage)."""

    def __init__(self, **settings: Any) -> None:  # no I/O: RedisCluster.__init__ runs later
        self._deferred_settings = settings
        self._deferred_lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes the object lacks: before the first successful start, the
        # cluster client's own state (nodes_manager, ...).
        if name.startswith("_deferred") or name.startswith("__"):
            raise AttributeError(name)
        with self._deferred_lock:
            if "nodes_manager" not in self.__dict__:
                try:
                    RedisCluster.__init__(self, **self._deferred_settings)
                except RedisClusterException as exc:
                    self.__dict__.pop("nodes_manager", None)
                    raise redis.ConnectionError(f"Redis Cluster unreachable: {exc}") from exc
        return object.__getattribute__(self, name)

    def get_encoder(self) -> Encoder:
        """No I/O (scripts are registered before the first command): the encoder the cluster
        client will build, from the same settings."""
        if "nodes_manager" in self.__dict__:
            encoder: Encoder = super().get_encoder()  # type: ignore[no-untyped-call]
            return encoder
        settings = self._deferred_settings
        return Encoder(  # type: ignore[no-untyped-call]
            settings.get("encoding", "utf-8"),
            settings.get("encoding_errors", "strict"),
            settings.get("decode_responses", False),
        )

    def close(self) -> None:
        if "nodes_manager" in self.__dict__:
            super().close()


def _cluster_seeds(redis_url: str) -> tuple[str, list[tuple[str, int]]]:
    """A cluster URL (``redis+cluster://[user:pass@]host:port[,host:port...][?...]``) as the
    plain URL of its first node and the other seed nodes."""
    scheme, _, rest = redis_url.partition("://")
    netloc, slash, tail = rest.partition("/")
    netloc, question, query = netloc.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    first, *others = hosts.split(",")
    plain = f"{CLUSTER_SCHEMES[scheme.lower()]}://{userinfo}{at}{first}{slash}{tail}"
    plain += f"{question}{query}"
    seeds = []
    for address in others:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"a cluster seed reads host:port, not {address!r}")
        seeds.append((host.strip("[]"), int(port)))
    return plain, seeds


def check_url(redis_url: str) -> None:
    """ValueError unless ``connect`` can read ``redis_url`` (parses only: no I/O)."""
    scheme = redis_url.partition("://")[0].lower()
    if scheme in CLUSTER_SCHEMES:
        plain, _ = _cluster_seeds(redis_url)
        options = parse_url(plain)  # type: ignore[no-untyped-call]
        if options.get("db", 0) != 0 or "path" in options:
            raise ValueError("a Redis Cluster has only db 0, over TCP")
    elif scheme in SENTINEL_SCHEMES:
        _parse_sentinel_url(redis_url)
    else:
        redis.ConnectionPool.from_url(redis_url)


@dataclass(frozen=True)
class _SentinelUrl:
    sentinels: list[tuple[str, int]]
    master: str
    db: int
    username: str | None
    password: str | None


def _parse_sentinel_url(redis_url: str) -> _SentinelUrl:
    problem = (
        "a Sentinel URL reads redis+sentinel://[user:pass@]host:port[,host:port...]"
        "/<master name>[/<db>]"
    )
    parsed = urlparse(redis_url)
    hosts = parsed.netloc.rpartition("@")[2]
    path = [unquote(part) for part in parsed.path.split("/") if part]
    if not hosts or not 1 <= len(path) <= 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(problem)
    sentinels = []
    for address in hosts.split(","):
        host, _, port = address.rpartition(":") if ":" in address else (address, "", "26379")
        if not host or not port.isdigit():
            raise ValueError(problem)
        sentinels.append((host.strip("[]"), int(port)))
    return _SentinelUrl(
        sentinels,
        path[0],
        int(path[1]) if len(path) == 2 else 0,
        unquote(parsed.username) if parsed.username else None,
        unquote(parsed.password) if parsed.password else None,
    )


def _sentinel_master(redis_url: str, tls: bool, timeouts: dict[str, Any]) -> redis.Redis:
    url = _parse_sentinel_url(redis_url)
    credentials = {"username": url.username, "password": url.password}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        url.sentinels, sentinel_kwargs=dict(timeouts), **timeouts
    )
    base = SentinelManagedSSLConnection if tls else SentinelManagedConnection
    master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        url.master,
        db=url.db,
        connection_class=_one_buffer(base),
        retry=Retry(NoBackoff(), 0),
        **credentials,
        **timeouts,
    )
    return master


class FlaggedScript(Script):
    """A script that may start with a Redis 7 flags line (``#!lua flags=...``). A server that
    cannot run it (Redis 6, fakeredis: "unexpected symbol near '#'") gets it without the line:
    the same script, without the flags' privileges."""

    def load(self) -> str:
        """Load the script into Redis's cache; returns the SHA later calls use."""
        try:
            self.sha = self.registered_client.script_load(self.script)
        except redis.ResponseError as exc:
            if not self._drop_flags(exc):
                raise
            self.sha = self.registered_client.script_load(self.script)
        return self.sha

    def __call__(
        self,
        keys: Sequence[KeyT] | None = None,
        args: Iterable[EncodableT] | None = None,
        client: Any = None,
    ) -> Any:
        """EVALSHA; when Redis does not know the script (or cannot run its flags), load it and
        run it again. (For pipelines: ScriptCalls.)"""
        keys, args = list(keys or []), list(args or [])
        connection = self.registered_client if client is None else client
        for attempt in range(3):  # unknown, then (fakeredis) unreadable flags, then run
            try:
                return connection.evalsha(self.sha, len(keys), *keys, *args)
            except redis.ResponseError as exc:
                if attempt == 2 or not may_run_again(exc):
                    raise
                if not self._drop_flags(exc):
                    self.load()
        raise AssertionError("unreachable")

    def _drop_flags(self, exc: BaseException) -> bool:
        """Drop the flags line when ``exc`` says the server cannot read it; True if dropped."""
        body = self.script if isinstance(self.script, str) else bytes(self.script).decode()
        if not (body.startswith("#!") and _no_flags_support(exc)):
            return False
        self.script = body.split("\n", 1)[1]
        self.sha = self.registered_client.script_load(self.script)
        return True


def _no_flags_support(exc: BaseException) -> bool:
    text = str(exc)
    return "near '#'" in text or "shebang" in text.lower()


def may_run_again(exc: BaseException) -> bool:
    """A script call that did nothing because Redis did not know the script, or could not
    read its flags line: loading it and calling again is safe."""
    return isinstance(exc, redis.exceptions.NoScriptError) or _no_flags_support(exc)


def register(connection: Connection, source: str) -> FlaggedScript:
    """``connection.register_script(source)`` for scripts that may carry Redis 7 flags."""
    return FlaggedScript(connection, source)


class ScriptCalls:
    """Script calls queued in one pipeline by their SHA (EVALSHA).

    redis-py's own pipelined scripts cost a ``SCRIPT EXISTS`` round trip before every
    execution; here the script body travels only when Redis does not know it (a restart, a
    failover, ``SCRIPT FLUSH``). A call that met NOSCRIPT did nothing, while the rest of its
    pipeline (or transaction: Redis reports NOSCRIPT at EXEC time and runs the other commands)
    did: ``rerun_missing`` runs exactly those calls again, loading their script, so each call
    takes effect once.
    """

    def __init__(self, pipe: Pipeline) -> None:
        self._pipe = pipe
        self._calls: list[tuple[int, FlaggedScript, Sequence[Any], Sequence[Any]]] = []

    def queue(self, script: FlaggedScript, keys: Sequence[Any], args: Sequence[Any]) -> int:
        """Queue one call; returns the index of its reply in the pipeline's replies."""
        index = len(self._pipe)
        # EVALSHA by name: a cluster pipeline refuses ``evalsha()`` but routes this by its keys
        self._pipe.execute_command(  # type: ignore[no-untyped-call]
            "EVALSHA", script.sha, len(keys), *keys, *args
        )
        self._calls.append((index, script, keys, args))
        return index

    def rerun_missing(self, replies: list[Any]) -> list[Any]:
        """``replies`` (from ``execute(raise_on_error=False)``) with every NOSCRIPT reply
        replaced by the reply of the call run again, or by the error that run met: the
        pipeline itself ran, so an error here must not make the caller send it again."""
        for index, script, keys, args in self._calls:
            if may_run_again(replies[index]):
                try:
                    replies[index] = script(keys=keys, args=args)
                except (redis.RedisError, OSError) as exc:
                    replies[index] = exc
        return replies


_TRANSIENT_CODES = frozenset(
    (
        "OOM",
        "BUSY",
        "LOADING",
        "MASTERDOWN",
        "READONLY",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "NOREPLICAS",
        "MOVED",
        "ASK",
    )
)
"""Refusals that say "not now", not "never": out of memory, loading its data, busy running a
script, a replica after a failover, a cluster or its replicas not ready (MOVED and ASK: a
slot served elsewhere now, nothing of a transaction applied)."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Redis refused a write because it is at ``maxmemory`` (also as the reason a transaction
    was discarded)."""
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return True
    if not isinstance(exc, redis.ResponseError):
        return False
    text = str(exc)
    return text.startswith("OOM ") or "-OOM " in text or "discarded because of: OOM" in text


def is_transient(exc: BaseException) -> bool:
    """Whether a failed command may succeed if sent again later, unchanged: the connection
    failed (nothing or everything of a transaction was applied) or Redis refused it for now
    (nothing was applied). Anything else would fail again."""
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
        return True  # redis-py's BusyLoadingError (LOADING) is a ConnectionError
    if isinstance(
        exc,
        redis.exceptions.ReadOnlyError
        | redis.exceptions.TryAgainError
        | redis.exceptions.ClusterDownError
        | redis.exceptions.MovedError
        | redis.exceptions.AskError,
    ):
        return True
    if not isinstance(exc, redis.ResponseError):
        return False
    return is_out_of_memory(exc) or str(exc).split(" ", 1)[0] in _TRANSIENT_CODES


def raise_first_error(replies: Sequence[Any]) -> None:
    """Raise the first error reply of a pipeline executed with ``raise_on_error=False``."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply

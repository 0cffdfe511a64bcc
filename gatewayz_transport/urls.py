"""Redis URLs: which Redis (one, a Cluster or Sentinel-managed) a URL names, parsed without I/O."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlparse

import redis
from redis.connection import parse_url

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # -> TLS


def cluster_seeds(redis_url: str) -> tuple[str, list[tuple[str, int]]]:
    """A cluster URL (``redis+cluster://[user:pass@]host:port[,host:port...][?...]``) as the
    plain URL of its first node and the other seed nodes."""
    scheme, _, rest = redis_url.partition("://")
    netloc, slash, tail = rest.partition("/")
    netloc, question, query = netloc.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    first, *others = hosts.split(",")
    if not first:
        raise ValueError("a Redis Cluster URL names its nodes: redis+cluster://host:port[,...]")
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
        plain, _ = cluster_seeds(redis_url)
        options = parse_url(plain)  # type: ignore[no-untyped-call]
        if options.get("db", 0) != 0 or "path" in options:
            raise ValueError("a Redis Cluster has only db 0, over TCP")
    elif scheme in SENTINEL_SCHEMES:
        parse_sentinel_url(redis_url)
    else:
        redis.ConnectionPool.from_url(redis_url)
        path = urlparse(redis_url).path
        if scheme in ("redis", "rediss") and path.strip("/") and not path.strip("/").isdigit():
            # redis-py reads any other path as db 0, without a word
            raise ValueError(f"the path names a db number (/0, /1...), not {path!r}")


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: list[tuple[str, int]]
    master: str
    db: int
    username: str | None
    password: str | None


def parse_sentinel_url(redis_url: str) -> SentinelUrl:
    # No "user:pass@" in the form shown: credentials are redacted from every message up to
    # the last "@", which would eat the form itself
    form = (
        "redis+sentinel://host:port[,host:port...]/<master name>[/<db>], credentials before "
        "the hosts"
    )
    parsed = urlparse(redis_url)
    hosts = parsed.netloc.rpartition("@")[2]
    path = [unquote(part) for part in parsed.path.split("/") if part]
    problem = ""
    if not hosts:
        problem = "no Sentinel host"
    elif not path:
        problem = "no master name"
    elif len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        problem = f"the path is /<master name>[/<db number>], not {parsed.path!r}"
    if problem:
        raise ValueError(f"{problem}: a Sentinel URL reads {form}")
    sentinels = []
    for address in hosts.split(","):
        host, _, port = address.rpartition(":") if ":" in address else (address, "", "26379")
        if not host or not port.isdigit():
            raise ValueError(f"a Sentinel reads host[:port], not {address!r}: {form}")
        sentinels.append((host.strip("[]"), int(port)))
    return SentinelUrl(
        sentinels,
        path[0],
        int(path[1]) if len(path) == 2 else 0,
        unquote(parsed.username) if parsed.username else None,
        unquote(parsed.password) if parsed.password else None,
    )

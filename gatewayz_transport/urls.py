"""Redis URLs: which Redis (one, a Cluster or Sentinel-managed) a URL names, parsed without I/O."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

import redis
from redis.connection import URL_QUERY_ARGUMENT_PARSERS, parse_url

from gatewayz_transport.url_values import check_db as _check_db
from gatewayz_transport.url_values import check_values as _check_values

PLAIN_SCHEMES = ("redis", "rediss", "unix")
"""One Redis, as redis-py reads its URL (it takes these, lower case, and no other)."""
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # -> TLS
SCHEMES = (*PLAIN_SCHEMES, *CLUSTER_SCHEMES, *SENTINEL_SCHEMES)
"""Every scheme ``connect`` reads: what a URL with another is told (``check_scheme``)."""


def check_scheme(redis_url: str) -> None:
    """ValueError naming every scheme this project reads (redis-py's own message names only
    its three) unless ``redis_url`` starts with one of them. The URL is not quoted: it may hold
    a password."""
    scheme, separator, _ = redis_url.partition("://")
    plain = scheme in PLAIN_SCHEMES  # redis-py: lower case only
    if not separator or not (plain or scheme.lower() in (*CLUSTER_SCHEMES, *SENTINEL_SCHEMES)):
        listed = ", ".join(f"{known}://" for known in SCHEMES)
        raise ValueError(f"a Redis URL starts with one of {listed} (redis://host:6379/0)")


CREDENTIALS_HINT = (
    "an '@' comes after a '/', '?' or '#' (in a password?): percent-encode '/', '?', '#', '@' "
    "and ':' in a user name or password (%2F, %3F, %23, %40, %3A), an '@' elsewhere as %40"
)
"""What a URL with an '@' beyond its host part is told (``check_credentials``): no part of it."""


def check_credentials(redis_url: str) -> None:
    """ValueError (``CREDENTIALS_HINT``, quoting nothing of ``redis_url``) when an '@' comes
    after the first '/', '?' or '#' past the scheme: a user name or password holding one of them
    unencoded. Every parser (urllib's, redis-py's, ours) ends the host part there, reads the
    rest of the password as a port, path, query or fragment and would quote it in its error
    (``Port could not be cast to integer value as 'Ab'``), or take a URL whose host, port or
    socket path is made of it (a connection error then names them). Checked before any other
    parsing: every message after it quotes only what follows the credentials. A URL without a
    host part (``unix:///run/redis@main.sock``) holds no credentials: its '@' is left alone."""
    rest = redis_url.partition("://")[2]
    ends = [at for at in map(rest.find, "/?#") if at >= 0]
    host_part = rest[: min(ends)] if ends else rest
    if host_part and "@" in rest[len(host_part) :]:
        raise ValueError(CREDENTIALS_HINT)


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
    """ValueError unless ``connect`` can read ``redis_url`` (parses only: no I/O), its query
    options (``?client_name=...``) included."""
    check_scheme(redis_url)
    check_credentials(redis_url)
    scheme = redis_url.partition("://")[0].lower()
    if scheme in CLUSTER_SCHEMES:
        plain, _ = cluster_seeds(redis_url)
        options = parse_url(plain)  # type: ignore[no-untyped-call]
        if options.get("db", 0) != 0 or "path" in options:
            raise ValueError("a Redis Cluster has only db 0, over TCP")
        _check_options(plain)
    elif scheme in SENTINEL_SCHEMES:
        parse_sentinel_url(redis_url)
    else:
        redis.ConnectionPool.from_url(redis_url)
        path = urlparse(redis_url).path
        if scheme in ("redis", "rediss") and path.strip("/"):
            # redis-py reads any other path as db 0, without a word
            if not path.strip("/").isdigit():
                raise ValueError(f"the path names a db number (/0, /1...), not {path!r}")
            _check_db(int(path.strip("/")), "the path's db number")
        _check_options(redis_url)


_FROM_NETLOC = {"host", "port", "username", "password", "db", "path", "connection_class"}
_REFUSED = {
    "decode_responses": "replies are read as bytes here (whatever its value: redis-py reads "
    "any text as true)",
    "encoding": "keys, members and labels are UTF-8 for every writer",
    "encoding_errors": "a value UTF-8 cannot encode is refused when recorded, not replaced",
}
_TEXT_OPTIONS = ("client_name", "lib_name", "lib_version", "protocol", "ssl_")
"""Options a connection takes as text (as redis-py passes an option it does not parse; before
redis-py 5.1, ``protocol`` too): the others it does not parse would reach the connection as text
where it needs an object or a number."""


def _check_options(url: str) -> None:
    """ValueError for a query option a connection of this redis-py does not take (it would
    fail at the first connection, in the flusher's thread), or that breaks what every writer
    must agree on (decoded replies, another encoding); then for each value no connection can
    use (``_check_values``)."""
    options = parse_url(url)  # type: ignore[no-untyped-call]
    connection_class = options.get("connection_class", redis.Connection)
    taken = _parameters(connection_class) | _parameters(redis.ConnectionPool)
    for name in sorted(set(options) - _FROM_NETLOC):
        if name in _REFUSED:
            if not _as_ours(name, options[name]):
                raise ValueError(f"?{name}= is not supported: {_REFUSED[name]}")
        elif name not in taken and "password" in options:
            # the name may be the rest of a password cut at an unencoded '&': not quoted
            raise ValueError(
                "a query option is not one of a Redis connection (after ?password=: "
                "percent-encode '&' in a password as %26)"
            )
        elif name not in taken:
            over = "this kind of" if name.startswith("ssl_") else "a"
            raise ValueError(f"?{name}= is not an option of {over} Redis connection")
        elif name not in URL_QUERY_ARGUMENT_PARSERS and not name.startswith(_TEXT_OPTIONS):
            raise ValueError(f"?{name}= cannot be given in a URL (its value is not text)")
    _check_values(urlparse(url).query, set(options) - _FROM_NETLOC - set(_REFUSED))


def _as_ours(name: str, value: object) -> bool:
    """Whether a refused option's value is what the project uses anyway (UTF-8, strict)."""
    if name == "encoding":
        return str(value).lower().replace("-", "").replace("_", "") == "utf8"
    return name == "encoding_errors" and value == "strict"


def _parameters(cls: type) -> set[str]:
    """The keyword parameters of ``cls``'s constructors, along its MRO."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            names.update(inspect.signature(init).parameters)
    return names - {"self", "args", "kwargs"}


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
    if parsed.query:
        raise ValueError(
            "a Sentinel URL takes no query options: its connections' settings are the project's own"
        )
    db = int(path[1]) if len(path) == 2 else 0
    _check_db(db, "the path's db number")
    return SentinelUrl(
        sentinels,
        path[0],
        db,
        unquote(parsed.username) if parsed.username else None,
        unquote(parsed.password) if parsed.password else None,
    )

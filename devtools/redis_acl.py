"""Redis ACL users by role, rendered for a namespace: the one source of ``deploy/redis/users.acl``,
of the ``ACL SETUSER`` lines in docs/operations/access.md and of the users the tests run
every process under (``tests/test_redis_acl.py``, which also checks that the committed file and the
docs say exactly what ``render_acl_file()`` and ``setuser_lines()`` say).

``python -m devtools.redis_acl [--namespace NAME] [--setuser]`` prints the ACL file (default) or
the ``ACL SETUSER`` lines for another namespace than ``gatewayz``.

Roles:

- ``worker`` (``MetricsClient``): records (windows, totals, exemplars, the registry, backend
  metrics, its own gauges, client counts), ``allow()`` (reads the breaker's state) and takes
  half-open permits (the PERMIT script). Every grant is a selector naming one key kind and the
  commands that kind needs; the breaker hash is read-only to it.
- ``aggregator`` (``python -m aggregator``): every key of the namespace, with the commands its
  reader, its writer and its scripts send; DEL only on the keys its scripts delete.
- ``operator`` (``breaker status|open|close|reset``, and ``inspect``): the reader's reads, plus
  the TRANSITION script on one breaker's keys and the registration of that provider.
- ``reader`` (``inspect``, ``breaker status``): reads of the namespace's keys and nothing else.
- ``admin``: Redis's own administration (ACL, CONFIG, backups), held by people, by no process of
  the project. ``default`` is off: every connection names its user.

Key patterns come from ``gatewayz_protocol.keys.Keys`` (a provider's keys as ``{*}``, so shards
``{p:1}`` match too): every key of the schema carries exactly one ``}:`` (no provider, metric or
writer name holds a ``}``), so a pattern ``ns:{*}:<tail>`` matches that kind of key only.

Scripts run with their caller's rights: Redis checks every command a Lua script runs against
the calling user, keys included. EVAL/EVALSHA declare their keys read-write, so the worker's
PERMIT call (keys: the breaker, the permits) needs a selector allowing EVALSHA on the breaker;
inside, only the commands the worker may run anyway succeed (HMGET on the breaker: yes; HSET:
refused), whoever wrote the script.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gatewayz_protocol.keys import DEFAULT_NAMESPACE, Keys

# Sample names the patterns are cut from (each replaced by ``*``).
_PROVIDER, _METRIC, _WRITER, _MODEL = "p0", "m0", "w0", "model0"

ADMIN = "admin"
ROLES = ("worker", "aggregator", "operator", "reader")
PASSWORD_RE = re.compile(r"[0-9A-Za-z._~-]+")
"""What a password may hold here: URL-safe, so it goes into a redis:// URL unescaped (hex from
``openssl rand -hex 24`` is)."""

CONNECTION: tuple[str, ...] = (
    "+@connection",
    "-@admin",
    "-@dangerous",
    "-client|tracking",
    "-client|caching",
)
"""A connection's own commands: HELLO, AUTH, PING, ECHO, SELECT, RESET, QUIT, CLIENT SETNAME,
CLIENT SETINFO (Redis 7.2; a category, so one file loads on 7.0 too), CLIENT ID, COMMAND (a
cluster client's key lookup), ASKING and READONLY (redirections): none that touches another
connection (CLIENT KILL, LIST, PAUSE, NO-EVICT are @admin/@dangerous) or tracks keys."""
CLUSTER: tuple[str, ...] = ("+cluster|slots", "+cluster|shards", "+cluster|nodes")
"""What a Redis Cluster client asks for the layout with (redis-py: CLUSTER SLOTS)."""


@dataclass(frozen=True)
class Grant:
    """``commands`` on the keys of ``kinds`` (``%R~`` with ``read_only``): a Redis 7 selector. A
    command passes a selector only when every key it names matches that selector's patterns."""

    kinds: tuple[str, ...]
    commands: tuple[str, ...]
    read_only: bool = False
    why: str = ""


@dataclass(frozen=True)
class Role:
    name: str
    summary: str
    base: tuple[str, ...]
    """Root command rules (the connection's own, and commands that name no key)."""
    keys: str = ""
    """A root key pattern (``~{ns}:*``, ``%R~{ns}:*``) for ``commands``; none: every keyed
    command is in a grant."""
    commands: tuple[str, ...] = ()
    """Root command rules on ``keys``."""
    grants: tuple[Grant, ...] = ()


def key_patterns(namespace: str = DEFAULT_NAMESPACE) -> dict[str, str]:
    """Key kind (as ``Keys.kind`` names it) -> the glob pattern matching every key of that kind
    in ``namespace``."""
    keys = Keys(namespace)
    tag = "{" + _PROVIDER + "}"

    def provider(key: str) -> str:
        assert key.count(tag) == 1, key
        return key.replace(tag, "{*}")

    def named(key: str, name: str) -> str:
        assert key.endswith(name), key
        return key[: -len(name)] + "*"

    windows = keys.window_keys(_PROVIDER)
    window_prefix = windows[0][: windows[0].index(":w:") + 3]
    assert all(key.startswith(window_prefix) for key in windows)
    return {
        "window": provider(window_prefix) + "*",
        "totals": provider(keys.totals(_PROVIDER)),
        "exemplars": provider(keys.exemplars(_PROVIDER)),
        "breaker": provider(keys.breaker(_PROVIDER)),
        "permits": provider(keys.permits(_PROVIDER)),
        "transitions": provider(keys.transitions(_PROVIDER)),
        "history": provider(keys.history(_PROVIDER)),
        "model registry": provider(keys.models(_PROVIDER)),
        "model breaker": _any_model(provider(keys.model_breaker(_PROVIDER, _MODEL))),
        "model permits": _any_model(provider(keys.model_permits(_PROVIDER, _MODEL))),
        "model transitions": _any_model(provider(keys.model_transitions(_PROVIDER, _MODEL))),
        "applied": provider(keys.applied(keys.totals(_PROVIDER))),
        "registry": keys.providers,
        "shards": keys.shards,
        "event_ids": keys.event_ids,
        "client stats": keys.client_stats,
        "redis operations": keys.redis_ops,
        "clock offsets": keys.clock_offsets,
        "breaker wakes": keys.breaker_wakes,
        "lease": keys.leader_lease,
        "token": keys.leader_token,
        "cycle": keys.snapshot_cycle,
        "snapshot": keys.snapshot,
        "schema": keys.metric_schema,
        "metric series": named(keys.metric_series(_METRIC), _METRIC),
        "metric data": named(keys.metric_data(_METRIC), _METRIC),
        "metric exemplars": named(keys.metric_exemplars(_METRIC), _METRIC),
        "gauge values": named(keys.gauge_values(_WRITER), _WRITER),
        "gauge_writers": keys.gauge_writers,
    }


def _any_model(key: str) -> str:
    """A model breaker key's pattern: any model in place of ``_MODEL`` (percent-encoded, it
    holds no ``:``)."""
    assert key.count(f":m:{_MODEL}:") == 1, key
    return key.replace(f":m:{_MODEL}:", ":m:*:")


READS: tuple[str, ...] = (
    "+zrange",
    "+zrangebyscore",
    "+zcount",
    "+zscore",
    "+exists",
    "+hgetall",
    "+hget",
    "+hmget",
    "+pttl",
    "+ttl",
)
"""What ``inspect`` and ``breaker status`` read with (and TTL for redis-cli); ZSCORE: one
provider looked up in the registry by name, whatever its size."""

WORKER = Role(
    "worker",
    "MetricsClient: record, flush, allow(), half-open permits",
    (*CONNECTION, "+multi", "+exec", "+time", "+info", "+script|load", *CLUSTER),
    grants=(
        Grant(("window",), ("zadd", "expire"), why="a flush's window members"),
        Grant(("totals",), ("hincrby", "expire"), why="cumulative counters"),
        Grant(("exemplars",), ("hset", "expire"), why="latest exemplar per bucket"),
        Grant(("breaker",), ("hget", "hmget"), read_only=True, why="allow(): the state"),
        Grant(
            ("permits",),
            ("zadd", "zcard", "zremrangebyscore", "pexpire"),
            why="PERMIT's commands: ZREMRANGEBYSCORE on no other kind",
        ),
        Grant(("breaker", "permits"), ("evalsha",), why="the PERMIT call (keys read-write)"),
        Grant(("model breaker",), ("hget", "hmget"), read_only=True, why="allow(provider, model)"),
        Grant(
            ("model permits",),
            ("zadd", "zcard", "zremrangebyscore", "pexpire"),
            why="PERMIT's commands, a model's",
        ),
        Grant(("model breaker", "model permits"), ("evalsha",), why="a model's PERMIT call"),
        Grant(
            ("model registry",),
            ("evalsha", "zadd", "zscore", "zcount", "expire"),
            why="a provider's models: ADMIT and last-seen times",
        ),
        Grant(
            ("registry",),
            ("evalsha", "zadd", "zscore", "zcount", "expire"),
            why="ADMIT and last-seen times",
        ),
        Grant(("shards",), ("zadd", "expire"), why="shard counts"),
        Grant(("event_ids",), ("set", "incrby", "expire"), why="id blocks (SET NX)"),
        Grant(("event_ids", "applied"), ("evalsha",), why="the RESERVE_IDS call"),
        Grant(("client stats", "redis operations"), ("hincrby",), why="counts by cause"),
        Grant(("clock offsets",), ("hset",), why="its clock's offset"),
        Grant(("breaker wakes",), ("xadd", "expire"), why="a wake: evaluate a breaker now"),
        Grant(("schema",), ("hsetnx", "hget", "expire"), why="metric declarations"),
        Grant(
            ("metric series", "metric data"),
            ("evalsha", "sadd", "sismember", "scard", "hincrby", "expire"),
            why="INSTRUMENTS and dropped counts",
        ),
        Grant(
            ("metric series", "metric data", "applied"),
            ("evalsha",),
            why="INSTRUMENTS with the marker it sets once applied",
        ),
        Grant(("metric exemplars",), ("hset", "expire"), why="metric exemplars"),
        Grant(("gauge values",), ("del", "hset", "expire"), why="its gauges, replaced whole"),
        Grant(("gauge_writers",), ("zadd", "expire"), why="its last gauge write"),
        Grant(
            ("applied",),
            ("evalsha", "hset", "hget", "hgetall", "hdel", "expire"),
            why="applied markers, read after a lost reply (PRUNE_MARKERS)",
        ),
    ),
)

AGGREGATOR = Role(
    "aggregator",
    "python -m aggregator: reads, maintains, evaluates, leads, publishes",
    (*CONNECTION, "+time", "+info", "+script|load", *CLUSTER),
    keys="~{ns}:*",
    commands=(
        *READS,
        "+get",
        "+type",
        "+smembers",
        "+zrevrangebyscore",
        "+zcard",
        "+evalsha",
        "+set",
        "+incr",
        "+zadd",
        "+zrem",
        "+zremrangebyscore",
        "+zremrangebyrank",
        "+expire",
        "+pexpire",
        "+persist",
        "+hset",
        "+hdel",
        "+hincrby",
        "+xread",
        "+xadd",
    ),
    grants=(
        Grant(
            ("breaker", "permits", "model breaker", "model permits", "lease"),
            ("del",),
            why="TRANSITION, RAISE_FENCE, RELEASE",
        ),
    ),
)

OPERATOR = Role(
    "operator",
    "breaker status|open|close|reset (and inspect)",
    (*CONNECTION, "+time", "+script|load", *CLUSTER),
    keys="%R~{ns}:*",
    commands=READS,
    grants=(
        Grant(("breaker", "permits", "transitions"), ("evalsha",), why="the TRANSITION call"),
        Grant(
            ("breaker",),
            ("type", "hget", "hset", "expire", "persist", "del"),
            why="TRANSITION's commands",
        ),
        Grant(("permits",), ("del",), why="a transition ends the half-open permits"),
        Grant(("transitions",), ("hincrby",), why="the transition counted"),
        Grant(("registry",), ("zadd", "expire"), why="the provider registered"),
        Grant(("client stats", "redis operations"), ("hincrby",), why="operations counted"),
    ),
)

READER = Role(
    "reader",
    "inspect, breaker status: reads only",
    (*CONNECTION, "+time", *CLUSTER),
    keys="%R~{ns}:*",
    commands=READS,
)


def roles() -> tuple[Role, ...]:
    return (WORKER, AGGREGATOR, OPERATOR, READER)


def role_rules(role: Role, namespace: str = DEFAULT_NAMESPACE) -> list[str]:
    """The role's ACL rules for ``namespace`` (no password, not ``on``), in the order Redis
    applies them: root commands, root keys, then one selector per grant."""
    patterns = key_patterns(namespace)
    rules = ["resetchannels", "-@all", *role.base, *role.commands]
    if role.keys:
        rules.append(role.keys.format(ns=namespace))
    for grant in role.grants:
        prefix = "%R~" if grant.read_only else "~"
        parts = [prefix + patterns[kind] for kind in grant.kinds]
        parts += ["+" + command for command in grant.commands]
        rules.append("(" + " ".join(parts) + ")")
    return rules


def render_acl_file(namespace: str = DEFAULT_NAMESPACE) -> str:
    """The ACL file (``redis-server --aclfile``): ``default`` off, ``admin`` with every right,
    the four roles. No passwords: nobody can log in until ``with_passwords`` adds them (or
    ``ACL SETUSER NAME >password``), so the file as committed is safe to load."""
    lines = ["user default off resetchannels -@all", f"user {ADMIN} on ~* &* +@all"]
    lines += [f"user {role.name} on " + " ".join(role_rules(role, namespace)) for role in roles()]
    return "\n".join(lines) + "\n"


def setuser_lines(namespace: str = DEFAULT_NAMESPACE) -> list[str]:
    """The same users as ``ACL SETUSER`` commands for ``redis-cli`` (interactive, or one per line
    on its stdin): each selector one quoted argument, ``>NAME_PASSWORD`` where the password goes."""
    lines = []
    for role in roles():
        rules = [
            f'"{rule}"' if rule.startswith("(") else rule for rule in role_rules(role, namespace)
        ]
        password = f">{role.name.upper()}_PASSWORD"
        lines.append(f"ACL SETUSER {role.name} reset on {password} " + " ".join(rules))
    return lines


def with_passwords(acl_text: str, passwords: Mapping[str, str]) -> str:
    """``acl_text`` with each named user's password added (as its SHA-256, ``#<hex>``: the file
    holds no password in clear), as ``deploy/redis/start.sh`` does. ValueError for a password
    that is empty or not URL-safe, or a user the file does not have."""
    lines = acl_text.splitlines()
    for name, password in passwords.items():
        if not PASSWORD_RE.fullmatch(password):
            raise ValueError(f"the password of {name!r} must be URL-safe: {PASSWORD_RE.pattern}")
        found = [i for i, line in enumerate(lines) if line.startswith(f"user {name} ")]
        if len(found) != 1:
            raise ValueError(f"no user {name!r} in the ACL file")
        digest = hashlib.sha256(password.encode()).hexdigest()
        lines[found[0]] += f" #{digest}"
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devtools.redis_acl", description=__doc__.split("\n")[0])
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE)
    parser.add_argument("--setuser", action="store_true", help="ACL SETUSER lines for redis-cli")
    args = parser.parse_args(argv)
    try:
        text = (
            "\n".join(setuser_lines(args.namespace)) + "\n"
            if args.setuser
            else render_acl_file(args.namespace)
        )
    except ValueError as exc:
        parser.error(str(exc))
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

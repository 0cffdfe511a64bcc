"""A Redis user refused one command, for the tests that take commands away (an ACL written by
hand, a command renamed away, a proxy that passes only some)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import redis

from devtools.redis_acl import Role
from tests.support.backends import open_redis


@contextmanager
def user_without(redis_url: str, command: str) -> Iterator[str]:
    """``redis_url`` as a new user who may run every command but ``command`` (``xadd``,
    ``script|load``), on every node of a cluster; the user is deleted afterwards."""
    user = f"no-{command.replace('|', '-')}-{secrets.token_hex(4)}"
    password = secrets.token_hex(8)
    admin = open_redis(redis_url)
    nodes = (
        [node.redis_connection for node in admin.get_nodes()]
        if isinstance(admin, redis.RedisCluster)
        else [admin]
    )
    for node in nodes:
        node.acl_setuser(  # type: ignore[union-attr]
            user,
            enabled=True,
            passwords=[f"+{password}"],
            keys=["*"],
            commands=["+@all", f"-{command}"],
        )
    scheme, _, rest = redis_url.partition("://")
    try:
        yield f"{scheme}://{user}:{password}@{rest}"
    finally:
        for node in nodes:
            node.acl_deluser(user)  # type: ignore[union-attr]
        admin.close()


def role_commands(role: Role) -> list[str]:
    """Every command ``role``'s ACL names (its rules and its grants) but a cluster's layout
    queries, with the connection's own and EVAL (a script's fallback): what a search takes away
    in turn on one Redis."""
    rules = (*role.base, *role.commands)
    named = {rule[1:] for rule in rules if rule[:1] == "+" and rule[1:2] != "@"}
    named |= {command for grant in role.grants for command in grant.commands}
    named -= {command for command in named if command.startswith("cluster|")}
    return sorted(named | {"auth", "hello", "select", "ping", "eval"})


def check_named(refused: str, expected: object, got: object, said: Iterable[str]) -> None:
    """A run that ended otherwise (``got``) than the run with every right (``expected``) says
    so: something in ``said`` (its warnings, a readiness reason) names the refused command."""
    if got != expected:
        text = "\n".join(said).lower()
        assert f"'{refused}'" in text, (
            f"refusing {refused!r} changed the outcome {expected} into {got} and nothing said "
            f"names it:\n{text[:3000]}"
        )

"""A Redis user refused one command, for the tests that take commands away (an ACL written by
hand, a command renamed away, a proxy that passes only some)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import redis

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

"""What a Redis error means to a caller: retry later (transient), out of memory, or an error
reply to raise."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import redis

from gatewayz_transport.scripts import command_at

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
        "MISCONF",
    )
)
"""Refusals that say "not now", not "never": out of memory, loading its data, busy running a
script, a replica after a failover, a cluster or its replicas not ready (MOVED and ASK: a
slot served elsewhere now, nothing of a transaction applied), unable to save to disk (MISCONF:
writes refused until a save succeeds again)."""


CANNOT_SAVE_HINT = (
    "Redis refuses writes until it can save to disk again: free space on its disk, or check "
    "its dir and permissions"
)
CREDENTIALS_HINT = (
    "Redis wants other credentials: put them in the Redis URL as redis://user:password@host:port/db"
)
READ_ONLY_HINT = (
    "this Redis is a read-only replica: point the URL at its master, or use "
    "redis+sentinel:// to follow failovers"
)


_SCRIPT_LINE = re.compile(r"script: ([0-9a-f]{40}), on @user_script:(\d+)")


def explained(exc: BaseException, auth_hint: str = CREDENTIALS_HINT) -> str:
    """``exc``'s text, with what to do when it says something an operator must fix: a URL
    naming a replica (an old master after a failover) refuses every write for good, a Redis
    that cannot save to disk until it can, a Redis user refused a command inside a script
    (Redis names the script's line, not the command), a Redis that refuses the credentials or
    wants some (``auth_hint``: where a program's user puts them)."""
    text = str(exc)
    if is_auth_failure(exc):
        return f"{text.rstrip('. ')} ({auth_hint})"
    where = _SCRIPT_LINE.search(text) if "user executing the script can't" in text else None
    command = command_at(where.group(1), int(where.group(2))) if where else None
    if where and command:
        return (
            f"{text.rstrip('. ')} (line {where.group(2)} runs '{command}': this Redis user's "
            "ACL must allow that command on the script's keys)"
        )
    code = _refusal_code(exc)
    if (
        isinstance(exc, redis.exceptions.ReadOnlyError)
        or code == "READONLY"
        or "write against a read only replica" in text  # a script's error
    ):
        return f"{text.rstrip('.')} ({READ_ONLY_HINT})"
    if code == "MISCONF":
        return f"{text.rstrip('.')} ({CANNOT_SAVE_HINT})"
    return text


def _refusal_code(exc: BaseException) -> str:
    """The code of Redis's refusal (``OOM``, ``READONLY``...): a transaction discarded because
    of one command's refusal names that one; "" for anything but an error reply."""
    if not isinstance(exc, redis.ResponseError):
        return ""
    return str(exc).rpartition("discarded because of: ")[2].split(" ", 1)[0]


_AUTH_CODES = frozenset(("NOAUTH", "WRONGPASS"))


def is_auth_failure(exc: BaseException) -> bool:
    """Redis refused this connection's credentials, or wants some: redis-py's
    ``AuthenticationError`` (a ``ConnectionError``, yet no outage: it fails again until the
    credentials change) or a ``NOAUTH`` / ``WRONGPASS`` reply passed on as an error reply."""
    if isinstance(exc, redis.AuthenticationError):
        return True
    return isinstance(exc, redis.RedisError) and _refusal_code(exc) in _AUTH_CODES


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
    return is_out_of_memory(exc) or _refusal_code(exc) in _TRANSIENT_CODES


def raise_first_error(replies: Sequence[Any]) -> None:
    """Raise the first error reply of a pipeline executed with ``raise_on_error=False``."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply

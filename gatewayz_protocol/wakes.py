"""Breaker wakes: how a worker asks the aggregator's leader to evaluate a provider's breaker now,
instead of at the next breaker cycle. Both sides' half of it, written once.

A worker whose own recent calls to a provider fail (``client/_wake.py`` decides when) adds an
entry to the stream ``Keys.breaker_wakes`` with its flush (one ``XADD`` in the batch's
transaction, at most once a second per provider and worker). The leader waits on the stream with
a blocking ``XREAD`` on a connection of its own (``aggregator/engine/wake.py``): while nothing
fails no entry is added and the leader's read stays blocked, so a quiet fleet costs Redis
nothing more. The stream is capped (``MAXLEN ~``) and expires, so a worker cannot grow it and a
namespace that is given up leaves nothing behind; an entry only names a provider (validated
again where it is read, like every value in Redis), and what it can make the leader do is read
that provider's windows and apply the usual breaker rules: a worker's credentials still cannot
steer a breaker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from gatewayz_protocol.names import is_valid_provider

PROVIDER_FIELD: Final = "p"
"""The entry's one field: the provider whose breaker is to be evaluated."""
MAX_ENTRIES: Final = 1000
"""About how many entries the stream keeps (``XADD MAXLEN ~``): the leader reads them as they
come, so only a leader away for long lets it fill."""
TTL_SECONDS: Final = 300
"""The stream expires this long after its last entry."""
READ_COUNT: Final = 200
"""Entries the leader takes per read at most."""


def wake_commands(key: str, providers: Sequence[str]) -> list[tuple[Any, ...]]:
    """The commands that ask for ``providers``' evaluations (none for none)."""
    if not providers:
        return []
    adds: list[tuple[Any, ...]] = [
        ("XADD", key, "MAXLEN", "~", MAX_ENTRIES, "*", PROVIDER_FIELD, provider)
        for provider in providers
    ]
    return [*adds, ("EXPIRE", key, TTL_SECONDS)]


def decode_wakes(reply: Any) -> tuple[bytes | str | None, list[str], int]:
    """An ``XREAD`` reply of the wake stream: (the last entry id, the valid providers named in
    order, without repeats, how many entries named none that a worker could have written)."""
    last: bytes | str | None = None
    providers: dict[str, None] = {}
    invalid = 0
    if not reply:
        return last, [], 0
    entries = _entries(reply)
    for entry_id, fields in entries:
        last = entry_id
        name = _field(fields, PROVIDER_FIELD)
        if name is not None and is_valid_provider(name):
            providers[name] = None
        else:
            invalid += 1
    return last, list(providers), invalid


def _entries(reply: Any) -> list[tuple[Any, Any]]:
    """The entries of a one-stream XREAD reply, as RESP2 ([[key, entries]]) or RESP3 ({key:
    entries}) gives them."""
    if isinstance(reply, dict):
        streams = list(reply.values())
        return list(streams[0][0] if streams and _nested(streams[0]) else streams[0] or [])
    return list(reply[0][1] or [])


def _nested(value: Any) -> bool:
    return (
        bool(value)
        and isinstance(value[0], list)
        and bool(value[0])
        and isinstance(value[0][0], list | tuple)
    )


def _field(fields: Any, name: str) -> str | None:
    """A field of an entry (a dict, or a flat list of names and values), as text."""
    if isinstance(fields, dict):
        items = list(fields.items())
    else:
        flat = list(fields or [])
        items = list(zip(flat[0::2], flat[1::2], strict=False))
    for key, value in items:
        if _text(key) == name:
            return _text(value)
    return None


def _text(raw: Any) -> str | None:
    if isinstance(raw, bytes):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return raw if isinstance(raw, str) else None

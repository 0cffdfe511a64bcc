"""Per-(provider, model) breaker scopes: what clients and the aggregator agree on for the
optional model breakers (``breaker_models``), as pure functions.

A scope is a provider, or a (provider, model) pair of a provider listed in ``breaker_models``.
A model scope keeps, in its provider's hash tag (one Redis Cluster slot), a breaker hash, its
half-open permits, its transitions and three window sets (calls the breaker counts: successes,
failures, rate-limited), holding only what a breaker judges (``model_horizon_seconds``), not the
5-minute health window. Model names are request input: bounded like label values
(``gatewayz_protocol.labels``), percent-encoded in keys, and at most ``max_models_per_provider``
of them are tracked per provider (a registry per provider, the clients' ADMIT script).
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

from gatewayz_protocol.labels import bounded_label_value
from gatewayz_protocol.partitions import FAILURE, RATE_LIMITED, SUCCESS
from gatewayz_protocol.text import is_text

DEFAULT_MAX_MODELS_PER_PROVIDER: Final = 50
"""Models tracked per listed provider (cluster-wide): more are refused (their calls still count
for the provider's breaker) and counted as ``too_many_models``."""
MODEL_WINDOW_NAMES: Final = ("ok", "fail", "rl")
"""The window sets of a model scope, in index order."""
MODEL_WINDOW_OF_OUTCOME: Final = {SUCCESS: 0, FAILURE: 1, RATE_LIMITED: 2}
"""Outcome code -> model window index; caller errors, cancelled calls and usage: none."""
SCOPE_SEPARATOR: Final = "/"
"""Between provider and model in a scope's name: no provider name holds it (``names``)."""


def scope_name(provider: str, model: str) -> str:
    """The name a worker's breaker cache and the logs give a model scope."""
    return f"{provider}{SCOPE_SEPARATOR}{model}"


def split_scope(scope: str) -> tuple[str, str | None]:
    """(provider, model) of a scope name; model None for a provider's own scope."""
    provider, found, model = scope.partition(SCOPE_SEPARATOR)
    return provider, (model if found else None)


def bounded_model(model: object, max_bytes: int) -> str | None:
    """The model name a scope is kept under: ``model`` bounded to ``max_bytes`` UTF-8 bytes
    like a label value (a longer one ends with ``~`` and a hash of the whole); None when it is
    not a non-empty string. Pure, never raises."""
    if type(model) is not str or not model or not is_text(model):  # a lone surrogate: no key
        return None
    try:
        return bounded_label_value(model, max_bytes)
    except Exception:
        return None


def model_key_part(model: str) -> str:
    """``model`` as it stands in a key: percent-encoded UTF-8 outside ``A-Z a-z 0-9 _ . - ~``,
    so no brace (hash tag), colon (key structure) or glob character ever reaches a key, and two
    names never share one."""
    return quote(model, safe="")


def read_model_name(raw: object, max_bytes: int) -> str | None:
    """A model name read back from a registry (written by any writer): itself when it is valid
    UTF-8 text of 1 to ``max_bytes`` bytes, else None (to be skipped and counted)."""
    if isinstance(raw, bytes):
        if not 0 < len(raw) <= max_bytes:
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(raw, str) and is_text(raw) and 0 < len(raw.encode()) <= max_bytes:
        return raw
    return None


def model_horizon_seconds(
    window_seconds: float, recent_window_seconds: float, half_open_timeout_seconds: float
) -> float:
    """How far back a model scope's windows must reach: what a closed breaker judges (its
    window, its recent window on a wake) and a half-open one's trial calls (at most its
    timeout, then it reopens). Older members are trimmed each cycle."""
    return max(window_seconds, recent_window_seconds, half_open_timeout_seconds)

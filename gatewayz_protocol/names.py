"""What may be a name: providers, namespaces, backend metrics and their labels.

Only names matching these rules ever reach a Redis key or an exposition line, so a name can
never address another provider's keys, leave the namespace or break a scrape.
"""

from __future__ import annotations

import re
from typing import Final

PROVIDER_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""Provider names: 1-64 characters of ASCII letters, digits, ``.``, ``_``, ``-``, starting with
a letter or digit (``openrouter``, ``google-vertex``, ``fireworks.ai``)."""

PROVIDER_NAME_HINT: Final = "use 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit"
"""What an error about a provider name a person typed (a setting, a command) tells them."""

NAMESPACE_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""Key prefixes: the same alphabet as provider names."""

METRIC_NAME_RE: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME_RE: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def is_valid_provider(name: object) -> bool:
    """True when ``name`` is a provider name the key schema accepts."""
    return isinstance(name, str) and PROVIDER_NAME_RE.fullmatch(name) is not None


def check_namespace(namespace: object) -> str:
    """``namespace`` when it is a valid key prefix, else ValueError."""
    if not isinstance(namespace, str) or not NAMESPACE_RE.fullmatch(namespace):
        raise ValueError(f"invalid namespace {namespace!r}: use 1-64 of A-Z a-z 0-9 . _ -")
    return namespace


def is_valid_label_name(name: str) -> bool:
    """Prometheus label names, minus the reserved ``__`` prefix and ``le``."""
    return bool(LABEL_NAME_RE.fullmatch(name)) and not name.startswith("__") and name != "le"

"""Per-provider breaker thresholds: which ``BreakerConfig`` judges which provider (pure).

Every provider is judged by the global configuration (the ``--breaker-*`` options) unless
``--breaker-providers`` (``GATEWAYZ_BREAKER_PROVIDERS``) gives it settings of its own, which
replace the global ones for that provider only, the others inherited:

    openrouter:min_calls=50,failure_rate=0.3;groq:open_seconds=60

or the same as JSON: ``{"openrouter": {"min_calls": 50, "failure_rate": 0.3}, ...}``. What may
differ per provider is what judges one breaker (``OVERRIDABLE``); the half-open permit count and
the max-open share stay global (the first is written by one script for every breaker, the
second is a share of all of them). The cost in Redis is nil: the overrides live in the
aggregator's settings, and a provider's evaluation reads the same keys with other bounds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from aggregator.core.breaker import BreakerConfig
from gatewayz_protocol.names import is_valid_provider


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError("an integer")


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError("a number") from None


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("true or false")


OVERRIDABLE: Mapping[str, Callable[[Any], Any]] = {
    "min_calls": _integer,
    "failure_rate": _number,
    "window_seconds": _number,
    "recent_window_seconds": _number,
    "open_seconds": _number,
    "max_open_seconds": _number,
    "half_open_timeout_seconds": _number,
    "rate_limited_is_failure": _boolean,
}
"""The settings a provider may have of its own, and how each is read."""

Overrides = tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]
"""(provider, ((setting, value), ...)), ...: what ``parse_overrides`` reads (hashable, so it
can be a frozen settings field)."""


def parse_overrides(raw: str) -> Overrides:
    """``--breaker-providers``' value (text or JSON, see the module), each setting read as its
    type; ValueError saying what was expected, naming the provider and setting."""
    raw = raw.strip()
    if not raw:
        return ()
    found: dict[str, dict[str, Any]] = {}
    if raw.startswith("{"):
        try:
            decoded = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"JSON: {exc.msg} at character {exc.pos}") from None
        except RecursionError:  # nested deeper than the decoder's recursion
            raise ValueError("JSON: nested too deeply (an object of objects)") from None
        except ValueError:  # a number of more digits than int() reads
            raise ValueError("JSON: a number too long to read") from None
        if not isinstance(decoded, dict) or not all(isinstance(v, dict) for v in decoded.values()):
            raise ValueError('JSON: an object of objects, {"provider": {"setting": value}}')
        found = {str(name): dict(settings) for name, settings in decoded.items()}
    else:
        for part in filter(None, (p.strip() for p in raw.split(";"))):
            name, colon, rest = part.partition(":")
            name = name.strip()
            if not colon or not rest.strip():
                raise ValueError(f"provider:setting=value[,setting=value...], got {part!r}")
            if name in found:
                raise ValueError(f"provider {name!r} given twice")
            found[name] = {}
            for item in filter(None, (i.strip() for i in rest.split(","))):
                key, equals, value = item.partition("=")
                if not equals:
                    raise ValueError(f"{name}: setting=value, got {item!r}")
                found[name][key.strip()] = value.strip()
    return tuple(
        (name, tuple(sorted(_read_settings(name, settings).items())))
        for name, settings in sorted(found.items())
    )


def _read_settings(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    if not is_valid_provider(name):
        raise ValueError(f"a valid provider name, got {name!r}")
    if not settings:
        raise ValueError(f"{name}: at least one setting")
    values = {}
    for key, value in settings.items():
        reader = OVERRIDABLE.get(key)
        if reader is None:
            raise ValueError(
                f"{name}: {key!r} is not a per-provider breaker setting "
                f"(one of {', '.join(OVERRIDABLE)})"
            )
        try:
            values[key] = reader(value)
        except ValueError as exc:
            raise ValueError(f"{name}: {key} must be {exc}, got {value!r}") from None
    return values


@dataclass(frozen=True)
class BreakerPolicy:
    """The configuration each provider's breaker is judged by."""

    default: BreakerConfig = field(default_factory=BreakerConfig)
    providers: Mapping[str, BreakerConfig] = field(default_factory=dict)

    def config(self, provider: str) -> BreakerConfig:
        return self.providers.get(provider, self.default)

    @classmethod
    def of(
        cls,
        default: BreakerConfig,
        overrides: Overrides,
        check: Callable[[BreakerConfig], None] = lambda config: None,
    ) -> BreakerPolicy:
        """``default`` and, per provider of ``overrides``, ``default`` with its settings
        replaced; ``check`` raises a ValueError for a configuration that cannot be (named
        after its provider here)."""
        configs = {}
        for name, settings in overrides:
            config = replace(default, **dict(settings))
            try:
                check(config)
            except ValueError as exc:
                raise ValueError(f"breaker providers: {name}: {exc}") from None
            configs[name] = config
        return cls(default, configs)

"""A worker's side of the optional model breakers (``gatewayz_protocol.model_scopes``): which
calls feed a model scope, the cap on models per provider, and the model breakers' Redis I/O.

Only providers listed in ``breaker_models`` have model scopes: for every other provider nothing
here runs and nothing more is written. A call's model is bounded (like a label value) when it is
recorded; before a batch is built, the models new to this process are admitted into their
provider's model registry (at most ``max_models_per_provider`` cluster-wide, the providers'
ADMIT script): the calls of a model refused still count for their provider, the model is left
out of them and counted (``too_many_models``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from client._admission import ProviderAdmission, RedisRegistry
from client._events import Event
from client._ledger import Ledger
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.model_scopes import bounded_model, scope_name, split_scope
from gatewayz_protocol.names import is_valid_provider
from gatewayz_transport.connection import Connection

log = logging.getLogger("gatewayz.metrics.client")

TOO_MANY_MODELS = "too_many_models"
"""The cause counted for a call whose model its provider's model registry refused."""


class ModelScopes:
    """Which (provider, model) pairs have a scope: pure, from the settings."""

    def __init__(self, providers: tuple[str, ...], max_label_value_bytes: int) -> None:
        self.providers = frozenset(providers)
        self._max_bytes = max_label_value_bytes

    def model(self, provider: str, model: object) -> str | None:
        """The model a call of ``provider`` feeds the scope of (bounded), or None: the provider
        is not listed, or ``model`` is not a non-empty string."""
        if provider not in self.providers:
            return None
        return bounded_model(model, self._max_bytes)

    def scope(self, provider: str, model: object) -> str | None:
        """The breaker cache's name of the scope (``provider/model``), or None."""
        bounded = self.model(provider, model)
        return None if bounded is None else scope_name(provider, bounded)


def is_scope(scope: str) -> bool:
    """Whether ``scope`` names a model scope a breaker could exist for."""
    provider, model = split_scope(scope)
    return model is not None and bool(model) and is_valid_provider(provider)


class ModelAdmission:
    """Admits models into their provider's model registry (one ``ProviderAdmission`` per listed
    provider: remembered answers, nobody refused while Redis cannot answer)."""

    def __init__(
        self,
        admissions: dict[str, ProviderAdmission],
        ledger: Ledger,
        cap: int,
    ) -> None:
        self._admissions = admissions
        self._ledger = ledger
        self._cap = cap

    @classmethod
    def build(
        cls,
        connection: Connection,
        keys: Keys,
        providers: frozenset[str],
        cap: int,
        horizon_seconds: float,
        clock: Callable[[], float],
        ledger: Ledger,
    ) -> ModelAdmission:
        admissions = {
            provider: ProviderAdmission(
                RedisRegistry(connection, keys, horizon_seconds, key=keys.models(provider)),
                cap,
                clock,
            )
            for provider in sorted(providers)
        }
        return cls(admissions, ledger, cap)

    def admitted(self, events: list[Event]) -> list[Event]:
        """``events`` with the model left out of those whose model was refused (counted)."""
        asked: dict[str, set[str]] = {}
        for event in events:
            if len(event) == 8:
                asked.setdefault(event[0], set()).add(event[7])
        if not asked:
            return events
        refused: dict[str, set[str]] = {}
        for provider, models in asked.items():
            admission = self._admissions.get(provider)
            refused_here = models if admission is None else admission.refused(models)
            if refused_here:
                refused[provider] = refused_here
        if not refused:
            return events
        kept: list[Event] = []
        left_out = 0
        for event in events:
            if len(event) == 8 and event[7] in refused.get(event[0], ()):
                kept.append(event[:7])
                left_out += 1
            else:
                kept.append(event)
        if self._ledger.reject(TOO_MANY_MODELS, left_out):
            provider = sorted(refused)[0]
            log.warning(
                "model breakers of %r are full (%d models): calls of further models such as "
                "%.80r count for the provider only (counted)",
                provider,
                self._cap,
                sorted(refused[provider])[0],
            )
        return kept


def model_breaker_keys(keys: Keys) -> Callable[[str], tuple[str, str]]:
    """A scope's (``provider/model``) breaker and permits keys, for a ``RedisBreakerStore``
    whose names are scopes: the model breakers' gate."""

    def keys_of(scope: str) -> tuple[str, str]:
        provider, model = split_scope(scope)
        return keys.model_breaker(provider, model or ""), keys.model_permits(provider, model or "")

    return keys_of

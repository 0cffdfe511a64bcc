"""The Redis key schema: every key format of the client and the aggregator lives here.

Layout (namespace ``gatewayz`` by default; ``{p}`` is the provider name, a Redis Cluster hash tag
so all of one provider's keys share a slot and can be read in one pipeline):

==========================================  ======  ===============================================
key                                         type    content
==========================================  ======  ===============================================
``gatewayz:{shared}:providers``             zset    member = provider, score = last-seen unix time
``gatewayz:{p}:w:ok:<i>``                   zset    window: successful calls whose latency falls in
                                                    latency partition ``i`` (``partitions``)
``gatewayz:{p}:w:fail``                     zset    window: provider failures
``gatewayz:{p}:w:rl``                       zset    window: rate-limited calls (429)
``gatewayz:{p}:w:ce``                       zset    window: caller errors (other 4xx)
``gatewayz:{p}:totals``                     hash    cumulative counters since the key was created
``gatewayz:{p}:exemplars``                  hash    latest exemplar (trace id) per latency bucket
``gatewayz:{p:<n>}:...``                    same    shard ``n`` (1, 2...) of the windows, totals and
                                                    exemplars of a provider split over several
                                                    slots; the aggregator sums them
``gatewayz:{shared}:shards``                zset    member = provider, score = its shard count
                                                    (only providers split over more than one)
``gatewayz:{p}:breaker``                    hash    circuit-breaker state (aggregator writes)
``gatewayz:{p}:permits``                    zset    half-open trial permits: member = holder,
                                                    score = expiry (Redis server time)
``gatewayz:{p}:transitions``                hash    breaker transitions, field ``from>to``
``gatewayz:{p}:models``                     zset    model breakers (``breaker_models`` providers
                                                    only): member = model name (bounded), score =
                                                    last-seen unix time; at most 50 per provider
``gatewayz:{p}:w:m:<model>:<w>``            zset    a model's breaker window: ``<w>`` = ``ok``,
                                                    ``fail`` or ``rl`` (calls of that outcome);
                                                    ``<model>`` percent-encoded (``model_scopes``);
                                                    trimmed to what a breaker judges (about 60 s)
``gatewayz:{p}:m:<model>:breaker``          hash    a model's breaker (also ``:permits``,
                                                    ``:transitions``), as the provider's
``gatewayz:{p}:history``                    zset    the last hour's health, one member per minute:
                                                    ``<minute>|<health>|<error rate>``, score =
                                                    minute start (aggregator writes; 60 kept)
``gatewayz:{leader}:lease``                 string  ``<instance>|<fencing token>``, with a TTL
``gatewayz:{leader}:token``                 string  last fencing token handed out (INCR)
``gatewayz:{leader}:cycle``                 string  last snapshot cycle number handed out (INCR)
``gatewayz:{leader}:snapshot``              string  the leader's last snapshot (JSON)
``gatewayz:{shared}:event_ids``             string  last window member id handed out (INCRBY)
``gatewayz:{metrics}:schema``               hash    backend metric name -> its spec (JSON)
``gatewayz:{metrics}:series:<name>``        set     series ids (JSON label values) admitted
``gatewayz:{metrics}:data:<name>``          hash    counter/histogram values per series
``gatewayz:{metrics}:exemplars:<name>``     hash    latest exemplar per histogram bucket and series
``gatewayz:{metrics}:gauges:<writer>``      hash    one process's gauge values (expires)
``gatewayz:{metrics}:gauge_writers``        zset    processes with gauges, by last write
``gatewayz:{shared}:stats:clients``         hash    events rejected/dropped by clients, by cause
``gatewayz:{shared}:stats:redis_ops``       hash    Redis commands issued, by operation
``gatewayz:{shared}:stats:clock``           hash    each writer's clock offset to Redis's
``gatewayz:{shared}:breaker_wakes``         stream  workers' requests for an evaluation of a
                                                    breaker now (field ``p`` = provider; capped
                                                    at about 1,000 entries, expires; ``wakes``)
``gatewayz:{<tag>}:applied``                hash    per writer, the event ids (or batch) it last
                                                    applied in this slot (one Redis: in
                                                    ``{metrics}``), so a retried batch is never
                                                    applied twice
==========================================  ======  ===============================================

Every key carries a hash tag (``{p}``, ``{leader}``, ``{metrics}``, ``{shared}``): on a Redis
Cluster a client's flush is one MULTI/EXEC per tag, and every Lua script touches one tag.

Window members are event ids (``event_ids``), scored with the event's unix time. Every window
key expires ``window + margin`` seconds after its last write; ``totals`` and ``breaker`` expire
after the retention period of an idle provider.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from gatewayz_protocol.model_scopes import MODEL_WINDOW_NAMES, model_key_part
from gatewayz_protocol.names import check_namespace, is_valid_provider
from gatewayz_protocol.partitions import LATENCY_PARTITIONS

DEFAULT_NAMESPACE = "gatewayz"
DEFAULT_MAX_PROVIDERS = 1000
"""Providers tracked at once, cluster-wide: clients admit no more into the registry, and the
aggregator reads and exports no more (the most recently seen), whoever wrote the registry."""
DEFAULT_EXPORT_HORIZON_SECONDS = 3600.0
"""A registered provider without an event for this long is idle: the aggregator neither reads
nor exports it, and clients do not count it against their provider cap (both sides' setting)."""


@dataclass(frozen=True)
class Keys:
    """Key names for one namespace (ValueError for an invalid namespace or provider name)."""

    namespace: str = DEFAULT_NAMESPACE

    def __post_init__(self) -> None:
        check_namespace(self.namespace)

    @property
    def providers(self) -> str:
        return f"{self.namespace}:{{shared}}:providers"

    @property
    def client_stats(self) -> str:
        return f"{self.namespace}:{{shared}}:stats:clients"

    @property
    def redis_ops(self) -> str:
        return f"{self.namespace}:{{shared}}:stats:redis_ops"

    @property
    def clock_offsets(self) -> str:
        return f"{self.namespace}:{{shared}}:stats:clock"

    @property
    def breaker_wakes(self) -> str:
        """The stream workers ask the leader for breaker evaluations on (``wakes``)."""
        return f"{self.namespace}:{{shared}}:breaker_wakes"

    def _provider(self, provider: str, shard: int = 0) -> str:
        return _provider_prefix(self.namespace, provider, shard)

    def window_keys(self, provider: str, shard: int = 0) -> tuple[str, ...]:
        """All window partition keys of a provider's ``shard``, indexed by
        ``window_partition()``."""
        return _window_keys(self._provider(provider, shard))

    def totals(self, provider: str, shard: int = 0) -> str:
        return f"{self._provider(provider, shard)}:totals"

    def exemplars(self, provider: str, shard: int = 0) -> str:
        return f"{self._provider(provider, shard)}:exemplars"

    @property
    def shards(self) -> str:
        return f"{self.namespace}:{{shared}}:shards"

    def breaker(self, provider: str) -> str:
        return f"{self._provider(provider)}:breaker"

    def permits(self, provider: str) -> str:
        return f"{self._provider(provider)}:permits"

    def transitions(self, provider: str) -> str:
        return f"{self._provider(provider)}:transitions"

    def provider_keys(self, provider: str, shards: int = 1) -> tuple[str, ...]:
        """Every key the clients and the breaker keep for one provider, of each of its
        ``shards`` (its windows, totals and exemplars; breaker, permits and transitions), not
        its dashboard history."""
        data = []
        for shard in range(shards):
            data += [*self.window_keys(provider, shard), self.totals(provider, shard)]
            data.append(self.exemplars(provider, shard))
        return (
            *data,
            self.breaker(provider),
            self.permits(provider),
            self.transitions(provider),
        )

    # -- model breakers (``model_scopes``) ------------------------------------------------------

    def models(self, provider: str) -> str:
        """The registry of ``provider``'s model breakers (member: model, score: last seen)."""
        return f"{self._provider(provider)}:models"

    def model_window_keys(self, provider: str, model: str) -> tuple[str, ...]:
        """A model breaker's window sets, indexed as ``MODEL_WINDOW_NAMES``."""
        base = f"{self._provider(provider)}:w:m:{model_key_part(model)}"
        return tuple(f"{base}:{name}" for name in MODEL_WINDOW_NAMES)

    def model_breaker(self, provider: str, model: str) -> str:
        return f"{self._model(provider, model)}:breaker"

    def model_permits(self, provider: str, model: str) -> str:
        return f"{self._model(provider, model)}:permits"

    def model_transitions(self, provider: str, model: str) -> str:
        return f"{self._model(provider, model)}:transitions"

    def _model(self, provider: str, model: str) -> str:
        return f"{self._provider(provider)}:m:{model_key_part(model)}"

    def history(self, provider: str) -> str:
        return f"{self._provider(provider)}:history"

    @property
    def leader_lease(self) -> str:
        return f"{self.namespace}:{{leader}}:lease"

    @property
    def leader_token(self) -> str:
        return f"{self.namespace}:{{leader}}:token"

    @property
    def snapshot_cycle(self) -> str:
        return f"{self.namespace}:{{leader}}:cycle"

    @property
    def event_ids(self) -> str:
        return f"{self.namespace}:{{shared}}:event_ids"

    @property
    def snapshot(self) -> str:
        return f"{self.namespace}:{{leader}}:snapshot"

    @property
    def metric_schema(self) -> str:
        return f"{self.namespace}:{{metrics}}:schema"

    def metric_series(self, name: str) -> str:
        return f"{self.namespace}:{{metrics}}:series:{name}"

    def metric_data(self, name: str) -> str:
        return f"{self.namespace}:{{metrics}}:data:{name}"

    def metric_exemplars(self, name: str) -> str:
        return f"{self.namespace}:{{metrics}}:exemplars:{name}"

    def gauge_values(self, writer_id: str) -> str:
        return f"{self.namespace}:{{metrics}}:gauges:{writer_id}"

    @property
    def gauge_writers(self) -> str:
        return f"{self.namespace}:{{metrics}}:gauge_writers"

    def applied(self, key: str) -> str:
        """The writers' marker hash in the slot of ``key`` (one of this namespace's)."""
        tag = key[key.index("{") : key.index("}") + 1]
        return f"{self.namespace}:{tag}:applied"

    def kind(self, key: str) -> str:
        """The role of one of this namespace's keys, for reports: ``breaker``, ``totals``,
        ``window``, ``client stats``... (the last part of its name after the hash tag)."""
        tail = key.partition("}:")[2]
        if tail.startswith("w:"):
            return "window"
        if tail.startswith("m:"):  # a model breaker's: its model is percent-encoded (no ':')
            return "model " + tail.rpartition(":")[2]
        head, colon, _ = tail.partition(":")
        named = _KINDS.get(tail) or (_KINDS.get(head + colon) if colon else None)
        return named or tail.replace(":", " ") or "unknown"

    def pattern(self) -> str:
        """A SCAN pattern matching every key of this namespace."""
        return f"{self.namespace}:*"


_KINDS = {
    "providers": "registry",
    "models": "model registry",
    "stats:clients": "client stats",
    "stats:redis_ops": "redis operations",
    "stats:clock": "clock offsets",
    "breaker_wakes": "breaker wakes",
    "series:": "metric series",
    "data:": "metric data",
    "exemplars:": "metric exemplars",
    "gauges:": "gauge values",
}


# A cycle asks for the same providers' keys every few seconds: remembered (bounded, so a churn
# of provider names cannot grow them), each name validated once.
@functools.lru_cache(maxsize=4096)
def _provider_prefix(namespace: str, provider: str, shard: int) -> str:
    if not is_valid_provider(provider):
        raise ValueError(f"invalid provider name {provider!r}")
    if shard == 0:
        return f"{namespace}:{{{provider}}}"
    return f"{namespace}:{{{provider}:{shard}}}"  # ':' is in no provider name


@functools.lru_cache(maxsize=4096)
def _window_keys(base: str) -> tuple[str, ...]:
    ok = tuple(f"{base}:w:ok:{i}" for i in range(LATENCY_PARTITIONS))
    return (*ok, f"{base}:w:fail", f"{base}:w:rl", f"{base}:w:ce")

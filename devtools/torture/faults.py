"""What every fault family shares: the record of a fault, its heal, and ``Targets`` (the run's
processes as a fault sees them).

A fault family is a small object with a narrow interface (``FaultFamily``): ``handlers()``
names the fault kinds it applies, each a function ``(fault, record) -> heal or None``. The
families are ``faults_redis`` (the Redis server and the proxies in front of it),
``faults_process`` (aggregators, workers, worker clocks), ``faults_data`` (foreign data and
operator commands) and ``faults_cluster`` (a Redis Cluster's failovers, slot moves, a master
killed); the nemesis holds one of each and dispatches on the kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from devtools.torture import cluster_ops
from devtools.torture.deployment import Deployment, plain_redis, text
from devtools.torture.ledger import provider_name
from devtools.torture.schedule import Fault
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import connect

Heal = Callable[[], None]


class HealLater(Exception):
    """Raised by a heal that cannot finish yet (a slot move whose target is out of memory while
    a later fault keeps it so): the nemesis runs it again ``after`` seconds later, after the
    heals due before then, instead of waiting inside it while they cannot run."""

    def __init__(self, after: float, why: str) -> None:
        super().__init__(why)
        self.after = after


@dataclass
class FaultRecord:
    kind: str
    params: dict[str, Any]
    at: float
    start: float
    end: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


Apply = Callable[[Fault, FaultRecord], Heal | None]
"""One fault kind applied: notes what it did in the record, returns its heal (None: nothing to
heal, the record's ``end`` is set by the nemesis unless the fault set it)."""


class FaultFamily(Protocol):
    def handlers(self) -> Mapping[str, Apply]:
        """The fault kinds this family applies, by name (the schedule's ``Fault.kind``)."""
        ...


class Targets:
    """The run's processes as the faults see them: the deployment, its key names, and the
    lookups every family needs (each Redis node, the leader, a fault's provider). It holds no
    state of its own beyond them."""

    def __init__(self, deployment: Deployment) -> None:
        self.dep = deployment
        self.keys = Keys(deployment.namespace)

    def each_node(self, action: Callable[[redis.Redis], Any]) -> list[str]:
        """``action`` on every live Redis server of the run; the errors, as text."""
        errors = []
        if self.dep.cluster is not None:
            nodes = cluster_ops.all_nodes(self.dep.cluster)
        else:
            assert self.dep.redis is not None
            nodes = [plain_redis(self.dep.redis.port)]
        for node in nodes:
            try:
                action(node)
            except redis.RedisError as exc:
                errors.append(str(exc))
            finally:
                node.close()
        return errors

    def leader(self) -> str | None:
        """The name of the replica holding the leader lease now (None: no one)."""
        connection = connect(self.dep.direct_url, 2.0)
        try:
            raw = connection.get(self.keys.leader_lease)
        finally:
            connection.close()
        return text(raw).split("|")[0] if raw else None

    def provider(self, fault: Fault) -> str:
        """The provider a fault names by worker slot and flavor, as that worker records it."""
        worker = self.dep.workers[int(fault.params["slot"])]
        return provider_name(worker.index, str(fault.params.get("flavor", "ok")))


class Generations:
    """The newest fault of each overlapping kind (out of memory, each proxy's mode): a heal
    undoes its fault only while no later fault of that kind is in force."""

    def __init__(self) -> None:
        self._latest: dict[str, int] = {}

    def next(self, what: str) -> int:
        self._latest[what] = self._latest.get(what, 0) + 1
        return self._latest[what]

    def is_latest(self, what: str, generation: int) -> bool:
        return self._latest[what] == generation

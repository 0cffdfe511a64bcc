"""What the aggregator tells an operator once, not every cycle: values the reads skipped (no
writer of this project could have written them: another version, a bug, a hand edit; counted
by key kind for /metrics, each key named once, never a reason for a cycle or a breaker to
stop), a maxmemory-policy that can evict this project's keys, a leader publishing a newer
snapshot version, backend metrics or gauge writers beyond what a cycle reads."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

from aggregator.core.readings import RedisMemory, Skip
from aggregator.core.snapshot import SNAPSHOT_VERSION
from aggregator.engine.backend_read import MAX_GAUGE_WRITERS

log = logging.getLogger("gatewayz.aggregator")

QUIET_SECONDS = 600.0
"""A condition that lasts is said again after this long, not every cycle."""

MAX_NAMED = 10_000
"""Keys named in the log at most (a flood of bad keys must not grow this process): beyond, they
are counted only, and the log says so once."""


class Notices:
    def __init__(self, where: str = "this namespace") -> None:
        """``where``: the namespace and Redis read, as the notices name them."""
        self._where = where
        self.counts: Counter[str] = Counter()
        """Values skipped by key kind, since this process started (a whole key of another type
        counts one)."""
        self._named: set[str] = set()
        self._policy: str | None = None  # the evicting policy last reported
        self._versions: set[int] = set()  # newer snapshot versions reported
        self._no_providers_said: float | None = None  # when "no provider" was last said
        self._over_size = False  # the last snapshot published was over the followers' bound
        self._backend_over = (False, False)  # metrics, gauge writers over the read's caps

    def skipped(self, skipped: Iterable[Skip]) -> None:
        for skip in skipped:
            self.counts[skip.kind] += max(1, len(skip.fields))
            if skip.key in self._named or len(self._named) > MAX_NAMED:
                continue
            self._named.add(skip.key)
            what = f"fields {', '.join(map(repr, skip.fields[:10]))}" if skip.fields else "the key"
            more = f" and {len(skip.fields) - 10} more" if len(skip.fields) > 10 else ""
            log.warning(
                "skipped %s%s of %r (%s): no writer of this project writes that; counted in "
                "gatewayz_redis_values_skipped_total, named here once",
                what,
                more,
                skip.key,
                skip.kind,
            )
            if len(self._named) > MAX_NAMED:
                log.warning("more than %d keys with skipped values: counted only", MAX_NAMED)

    def memory_policy(self, memory: RedisMemory | None) -> None:
        """A maxmemory-policy that lets Redis evict this project's keys: once per policy."""
        policy = memory.policy if memory is not None and memory.can_evict else None
        if policy is not None and policy != self._policy:
            log.error(
                "Redis maxmemory-policy is %s with maxmemory %d bytes: it can evict this "
                "project's keys (windows, counters, breaker states); set noeviction",
                policy,
                memory.max_bytes if memory is not None else 0,
            )
        self._policy = policy

    def snapshot_version(self, version: int) -> None:
        """A leader publishing a snapshot version newer than this replica's: once per version."""
        if version > SNAPSHOT_VERSION and version not in self._versions:
            self._versions.add(version)
            log.warning(
                "the leader publishes snapshot version %d, this replica knows %d: what it does "
                "not know is left out until it is upgraded",
                version,
                SNAPSHOT_VERSION,
            )

    def published(self, text: str, limit: int) -> str:
        """``text``, the JSON of the snapshot the leader publishes, said once when it is over
        what followers take (``snapshot_rules``), and again after a snapshot under it."""
        if len(text) <= limit:
            self._over_size = False
        elif not self._over_size:
            self._over_size = True
            log.error(
                "the snapshot published is %d bytes of JSON, over the %d bytes a follower with "
                "these settings takes (docs/operations/reliability.md): followers refuse it "
                "(UnusableSnapshot) and keep serving the last one they took",
                len(text),
                limit,
            )
        return text

    def backend_over_cap(self, families: int, writers: int, max_families: int) -> None:
        """Backend metrics beyond ``--max-metric-families``, processes with gauges beyond
        those a cycle reads: each said when it starts, again after a read within its cap."""
        over = (families > 0, writers > 0)
        if over[0] and not self._backend_over[0]:
            log.warning(
                "%d backend metrics beyond --max-metric-families (%d) are neither read nor "
                "exported (the first by name are; gatewayz_aggregator_metric_families_over_cap): "
                "a metric named per value (a model, a route) instead of labelled?",
                families,
                max_families,
            )
        if over[1] and not self._backend_over[1]:
            log.warning(
                "%d processes with gauges beyond the %d that wrote them last: their gauges are "
                "not read until the retention forgets them "
                "(gatewayz_aggregator_gauge_writers_over_cap)",
                writers,
                MAX_GAUGE_WRITERS,
            )
        self._backend_over = over

    def providers_seen(self, count: int, now: float) -> None:
        """No provider registered (a wrong namespace or Redis fails silently otherwise): said
        at the first cycle that finds none, then every ``QUIET_SECONDS`` while it lasts."""
        if count:
            self._no_providers_said = None  # said again at once if they all go
            return
        last = self._no_providers_said
        if last is None or now - last >= QUIET_SECONDS:
            log.warning(
                "no provider registered in %s: are the workers writing to this Redis and "
                "namespace? (their GATEWAYZ_REDIS_URL and GATEWAYZ_NAMESPACE)",
                self._where,
            )
            self._no_providers_said = now

"""The checker: every invariant the docs promise, over a run's recorded history (pure).

``check(history)`` returns a ``Verdict``: for each invariant, held, violated (with what was seen
against what was expected), or suspended with the reason a fault of this run makes it
impossible by design (and what is checked instead). ``INVARIANTS`` names them; the docs'
Reliability page (docs/operations/reliability.md) names the check that tries to break each
guarantee.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from devtools.torture import accounting, authority, client_checks, gate_checks
from devtools.torture.accounting import Case
from devtools.torture.final import exported
from devtools.torture.history import History
from devtools.torture.ledger import (
    CALLS_METRIC,
    COST_METRIC,
    profiles,
    worker_of,
)
from devtools.torture.recorder import series_name
from gatewayz_protocol.fields import COUNT_FIELDS, HISTOGRAM_FIELDS, LATENCY_SUM_FIELD
from gatewayz_protocol.partitions import HISTOGRAM_BOUNDS, OUTCOMES
from gatewayz_protocol.specs import series_id

INVARIANTS = {
    "totals_exact": "a provider's cumulative counters are exactly those of a prefix of its "
    "recorded events, at least what a True flush() vouched for",
    "window_exact": "window counts (Redis, on its clock) hold exactly that prefix's events "
    "recorded in the window, within 1 s at its edges",
    "exported_window": "each replica's gatewayz_provider_window_requests within the same bounds",
    "exported_match": "each replica's /metrics counters equal what Redis holds",
    "backend_exact": "the workers' backend counters between the durable and recorded prefixes",
    "rejections_counted": "every invalid call rejected once, by cause, in the worker and Redis",
    "drops_counted": "events given up on are counted by cause, and only those",
    "flush_truthful": "flush() True only when its events were in Redis",
    "kill_loss": "a worker killed with SIGKILL while Redis is up loses only what it recorded "
    "since its last flush (50 ms; 250 ms allowed for the pass in flight)",
    "allow_follows_breaker": "allow() True only while the breaker is closed or half-open, "
    "False only while it is open or half-open (1.5 s of lag allowed)",
    "replicas_agree": "two replicas serving the same snapshot number serve the same provider "
    "series",
    "half_open_permits": "at most 5 calls allowed per half-open period, all workers together",
    "breaker_rejections_counted": "every allow() False counted once in Redis "
    "(gatewayz_circuit_breaker_rejected_calls_total)",
    "snapshots_advance": "every replica serves a newer snapshot within 5 s unless a fault "
    "stops its cycles (Redis down or paused, the replica stopped or cut off, a failover)",
    "counters_monotonic": "no exported counter goes backwards (per replica)",
    "breaker_authority": "breaker state changes only by the lease holder or an operator; "
    "forced states only by an operator",
    "readonly_commands": "inspect and breaker status send no write; open/close/reset write "
    "only their provider's breaker and the registry",
    "recovery": "after the faults heal, every replica is ready (within 30 s) and serves the "
    "same fresh snapshot, every worker's close() is True, no process died on its own",
}


@dataclass
class Verdict:
    violations: dict[str, list[str]] = field(default_factory=dict)
    suspended: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    """How many things each check judged (a check that judged nothing proves nothing)."""

    def count(self, what: str, n: int = 1) -> None:
        self.checked[what] = self.checked.get(what, 0) + n

    def fail(self, invariant: str, message: str) -> None:
        self.violations.setdefault(invariant, []).append(message)

    def suspend(self, invariant: str, reason: str) -> None:
        self.suspended.setdefault(invariant, reason)

    @property
    def ok(self) -> bool:
        return not self.violations

    def held(self) -> list[str]:
        return [
            name
            for name in INVARIANTS
            if name not in self.violations and name not in self.suspended
        ]


RESEND_SECONDS = 5.0
"""How long after the cluster settled a worker may take to send again what a promoted replica
lacks (its next flush, or its retries' backoff)."""
REPLICATION_SECONDS = 1.0
"""How long before a master's fault a worker killed may have written what the replica had not
yet replicated (asynchronous replication: far less on a sound machine)."""


def lost_tags(history: History) -> tuple[float | None, dict[str, float]]:
    """(time of the first total data loss, tag -> time it may have been lost). A master whose
    replica took over loses its workers' provider keys only when their worker was killed
    before it could send again what the replica lacked (``resent_tags``)."""
    total: float | None = None
    tags: dict[str, float] = {}
    killed = {w.index: w.killed_at for w in history.workers if w.killed_at is not None}
    for fault in history.faults:
        notes = fault.get("notes", {})
        start = float(fault["start"])
        if notes.get("data_loss") == "all":
            at = float(notes.get("killed_at", start))
            total = at if total is None else min(total, at)
        elif notes.get("data_loss") == "tags":
            for tag in notes.get("lost_tags", []):
                tags.setdefault(tag, start)
            until = float(notes.get("settled_at", math.inf)) + RESEND_SECONDS
            for tag in notes.get("resent_tags", []):
                index = worker_of(tag)
                died = None if index is None else killed.get(index)
                if died is not None and start - REPLICATION_SECONDS <= died <= until:
                    tags.setdefault(tag, start)
    return total, tags


def build_cases(history: History) -> list[Case]:
    total_loss, tags = lost_tags(history)
    cases = []
    for ledger in history.workers:
        found = profiles(ledger.seed, ledger.index, ledger.calls_made)
        for name, profile in found.items():
            state = history.redis.get("providers", {}).get(name)
            if state is None:
                continue
            observed = accounting.int_totals(state["totals"])
            case = Case(name, ledger, profile, observed, list(state["window"]))
            case.lost = total_loss is not None or name in tags
            cases.append(case)
    return cases


def check_accounting(history: History, cases: list[Case], verdict: Verdict) -> None:
    if any(case.lost for case in cases):
        reason = "Redis lost what it held (no AOF restart, a cluster master restarted empty)"
        for name in ("totals_exact", "window_exact", "backend_exact"):
            verdict.suspend(name, f"{reason}: only upper bounds checked for those providers")
    if history.incidents.get("workers_exec", 0):
        # no allowance: a writer reads its applied marker before it sends such a batch again
        verdict.notes.append(
            f"{history.incidents['workers_exec']} worker transactions lost their reply"
        )
    for case in cases:
        verdict.count("providers accounted")
        verdict.count("events accounted", case.hi)
        dropped = int(case.ledger.end["stats"]["dropped"]) if case.ledger.end else 0
        for message in accounting.match_totals(case, dropped):
            name = "totals_exact"
            if accounting.count_of(case.observed) < case.lo and not case.lost:
                name = "flush_truthful"
            verdict.fail(name, message)
        verdict.notes += case.notes
        problem = accounting.match_window(
            case, case.window, float(history.redis["now"]), history.window
        )
        if problem:
            verdict.fail("window_exact", problem)
        check_backend(history, case, verdict)
        check_exported_window(history, case, verdict)


def check_backend(history: History, case: Case, verdict: Verdict) -> None:
    sid = series_id([case.provider])
    data = history.redis.get("backend", {})
    calls = _amount(data.get(CALLS_METRIC, {}), sid)
    cost = _amount(data.get(COST_METRIC, {}), sid)
    (calls_lo, calls_hi), (cost_lo, cost_hi) = accounting.backend_bounds(case)
    if case.lost or "metrics" in lost_tags(history)[1]:  # all backend data is in {metrics}
        calls_lo = cost_lo = 0
    nano = 1_000_000_000
    if not calls_lo * nano <= calls <= calls_hi * nano:
        verdict.fail(
            "backend_exact",
            f"{case.provider}: {CALLS_METRIC} {calls / nano:g}, recorded {calls_lo}..{calls_hi}",
        )
    if not cost_lo <= cost <= cost_hi:
        verdict.fail(
            "backend_exact",
            f"{case.provider}: {COST_METRIC} {cost} nano-USD, recorded {cost_lo}..{cost_hi}",
        )


def _amount(data: dict[str, str], sid: str) -> int:
    """A backend series' value in nano-units (integer part and nano part)."""
    ints, nanos = data.get(f"i:{sid}", "0"), data.get(f"n:{sid}", "0")
    return int(ints) * 1_000_000_000 + int(nanos)


def check_exported_window(history: History, case: Case, verdict: Verdict) -> None:
    for replica in history.replicas:
        seen = exported(replica, "gatewayz_provider_window_requests", provider=case.provider)
        taken = exported(replica, "gatewayz_aggregator_snapshot_timestamp_seconds")
        if seen is None or taken is None:
            continue
        if case.lost:
            continue
        low, high = accounting.window_total_bounds(case, taken, history.window)
        if not low <= seen <= high:
            verdict.fail(
                "exported_window",
                f"{replica['name']}: {case.provider} window {seen:g}, expected {low}..{high}",
            )


def _unregistered(history: History, replica: dict[str, object], provider: str) -> bool:
    """A provider Redis's registry lost (with its data) and that had no event since: not
    exported until its next event, its counters kept (docs "Failure behaviour": writers
    re-register their providers with each batch). Said in a note, not checked."""
    total_loss, tags = lost_tags(history)
    if total_loss is None and "shared" not in tags:
        return False
    if provider in history.redis.get("registry", {provider: 0}):
        return False
    series = exported(
        replica, "gatewayz_provider_requests_total", outcome="success", provider=provider
    )
    return series is None


def check_exported(history: History, cases: list[Case], verdict: Verdict) -> None:
    """Each replica's final figures against the final Redis state (both read after the last
    write and a cycle that began after it)."""
    for replica in history.replicas:
        if "counters" not in replica:
            continue
        name = replica["name"]
        for case in cases:
            if not any(case.observed.values()):
                continue  # nothing in Redis (lost with it): nothing to export
            if _unregistered(history, replica, case.provider):
                note = f"{case.provider}: idle since Redis lost the registry: not exported"
                if note not in verdict.notes:
                    verdict.notes.append(note)
                continue
            wanted: dict[tuple[str, tuple[tuple[str, str], ...]], float | None]
            wanted = dict(_provider_exports(case))
            data = history.redis.get("backend", {})
            sid = series_id([case.provider])
            for metric in (CALLS_METRIC, COST_METRIC):
                held = data.get(metric, {})
                # a series Redis lost (its {metrics} master restarted empty) and that its
                # worker, killed since, never wrote again: exported by no one
                known = f"i:{sid}" in held or f"n:{sid}" in held
                value = _amount(held, sid) / 1e9 if known else None
                wanted[(f"{metric}_total", (("provider", case.provider),))] = value
            for (metric, labels), value in wanted.items():
                got = exported(replica, metric, **dict(labels))
                if value is None:  # none in Redis: none exported, or admitted at 0
                    mismatch = got not in (None, 0.0)
                else:
                    mismatch = got is None or abs(got - value) > 1e-6 * max(1.0, abs(value))
                if mismatch:
                    series = series_name(metric, dict(labels))
                    held_text = "nothing" if value is None else f"{value:g}"
                    verdict.fail(
                        "exported_match", f"{name}: {series} = {got}, Redis says {held_text}"
                    )
        _client_stats(history, replica, verdict)


def _provider_exports(case: Case) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    totals, p = case.observed, case.provider
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for outcome, field_name in zip(OUTCOMES, COUNT_FIELDS, strict=True):
        found[("gatewayz_provider_requests_total", (("outcome", outcome), ("provider", p)))] = (
            totals[field_name]
        )
    running = 0
    bounds = [f"{b:g}" if b != int(b) else f"{b:.1f}" for b in HISTOGRAM_BOUNDS] + ["+Inf"]
    for bound, field_name in zip(bounds, HISTOGRAM_FIELDS, strict=True):
        running += totals[field_name]
        key = ("provider_response_time_seconds_bucket", (("le", bound), ("provider", p)))
        found[key] = running
    found[("provider_response_time_seconds_count", (("provider", p),))] = running
    found[("provider_response_time_seconds_sum", (("provider", p),))] = (
        totals[LATENCY_SUM_FIELD] / 1e6
    )
    found[("gatewayz_provider_tokens_total", (("provider", p),))] = totals["tokens"]
    found[("gatewayz_cost_by_provider_total", (("provider", p),))] = totals["cost_nusd"] / 1e9
    return found


def _client_stats(history: History, replica: dict[str, object], verdict: Verdict) -> None:
    stats = history.redis.get("client_stats", {})
    for field_name, value in stats.items():
        if not value.lstrip("-").isdigit():
            continue
        for prefix, metric, label in (
            ("rejected:", "gatewayz_client_events_rejected_total", "reason"),
            ("dropped:", "gatewayz_client_events_dropped_total", "cause"),
        ):
            if field_name.startswith(prefix):
                labels = {label: field_name.removeprefix(prefix)}
                got = exported(replica, metric, **labels)
                if got != int(value):
                    verdict.fail(
                        "exported_match",
                        f"{replica['name']}: {metric} {field_name} = {got}, Redis {value}",
                    )


def _rejections_counted(history: History, verdict: Verdict) -> None:
    total_loss, tags = lost_tags(history)
    if total_loss is not None or tags:
        verdict.suspend("breaker_rejections_counted", "Redis lost counts it held")
        return
    killed = any(w.end is None for w in history.workers)
    gate_checks.check_rejections_counted(history, verdict, not killed)


def _markers(history: History, verdict: Verdict) -> None:
    """Cluster only, said not judged: how many writers' fields a slot's ``applied`` marker holds
    (docs: one per writer, kept 7 days; dead writers' stay)."""
    markers = history.redis.get("markers")
    if markers:
        writers = len(history.workers)
        verdict.notes.append(
            f"applied markers: at most {max(markers.values())} fields per slot, "
            f"{writers} writers ran, {sum(w.end is None for w in history.workers)} were killed"
        )


def _starvation(history: History, verdict: Verdict) -> None:
    windows = authority.starved_windows(history)
    if windows:
        longest = max(high - low - 4.0 for low, high in windows)
        verdict.notes.append(
            f"the machine starved {len(windows)} time(s) (the harness's own 50 ms reads stalled "
            f"up to {longest:.1f} s): snapshots_advance and allow() not judged there"
        )


def check(history: History) -> Verdict:
    verdict = Verdict()
    _markers(history, verdict)
    _starvation(history, verdict)
    cases = build_cases(history)
    check_accounting(history, cases, verdict)
    check_exported(history, cases, verdict)
    client_checks.check_rejections(history, verdict)
    client_checks.check_drops(history, verdict)
    client_checks.check_flushes(history, cases, verdict)
    client_checks.check_kill_loss(history, cases, verdict)
    authority.check_monotonic(history, verdict)
    authority.check_breakers(history, verdict)
    authority.check_operators(history, verdict)
    authority.check_recovery(history, verdict)
    gate_checks.check_allow(history, verdict, client_checks.redis_unreadable)
    gate_checks.check_permits(history, verdict, client_checks.redis_troubled)
    _rejections_counted(history, verdict)
    authority.check_same_cycle(history, verdict)
    authority.check_snapshots_advance(history, verdict)
    return verdict

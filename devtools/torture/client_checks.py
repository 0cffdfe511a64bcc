"""What each worker's client promises, checked against its ledger (pure): every invalid call
rejected once by cause, drops counted, ``flush()`` True only when its events were there, and a
SIGKILL losing only what was recorded since the last flush."""

from __future__ import annotations

from typing import TYPE_CHECKING

from devtools.torture import accounting
from devtools.torture.accounting import Case
from devtools.torture.cpu_wait import effective_clock
from devtools.torture.history import History
from devtools.torture.ledger import rejections

if TYPE_CHECKING:
    from devtools.torture.checker import Verdict

FLUSH_INTERVAL = 0.05
IN_FLIGHT_ALLOWANCE = 0.25
"""Seconds a flush pass may take on this loaded machine (the id reservation and the
transaction, two round trips): events taken by a pass the kill interrupted are lost too."""
QUIET_KINDS = frozenset(
    {"operator", "poison", "clock_step", "clock_slew", "newer_snapshot", "kill_worker",
     "kill_aggregator", "leader_stop"}
)  # fmt: skip
"""Faults that leave Redis up and reachable for the workers."""


def check_rejections(history: History, verdict: Verdict) -> None:
    from devtools.torture.checker import lost_tags

    total_loss, tags = lost_tags(history)
    for ledger in history.workers:
        for answer in ledger.unexpected[:3]:
            verdict.fail(
                "rejections_counted",
                f"worker {ledger.index}: record() answered {answer['accepted']} to call "
                f"{answer['i']}, built to be {answer['invalid'] or 'valid'}",
            )
    low: dict[str, int] = {}
    high: dict[str, int] = {}
    for ledger in history.workers:
        done = ledger.calls_returned
        expected = rejections(ledger.seed, ledger.index, done)
        if ledger.end is not None and ledger.end["stats"]["rejected"] != expected:
            verdict.fail(
                "rejections_counted",
                f"worker {ledger.index}: stats rejected {ledger.end['stats']['rejected']}, its "
                f"ledger {expected}",
            )
        for cause, count in rejections(ledger.seed, ledger.index, ledger.durable()).items():
            low[cause] = low.get(cause, 0) + count
        for cause, count in rejections(ledger.seed, ledger.index, ledger.calls_made).items():
            high[cause] = high.get(cause, 0) + count
    if total_loss is not None or "shared" in tags:
        verdict.suspend("rejections_counted", "Redis lost the clients' stats: workers only")
        return
    stats = history.redis.get("client_stats", {})
    for cause in sorted(set(low) | set(high)):
        seen = stats.get(f"rejected:{cause}", "0")
        got = int(seen) if seen.isdigit() else -1
        if not low.get(cause, 0) <= got <= high.get(cause, 0):
            verdict.fail(
                "rejections_counted",
                f"Redis rejected:{cause} = {got}, ledger {low.get(cause, 0)}..{high[cause]}",
            )


def check_drops(history: History, verdict: Verdict) -> None:
    for ledger in history.workers:
        if ledger.end is None:
            continue
        stats = ledger.end["stats"]
        accepted = ledger.calls_made - sum(
            rejections(ledger.seed, ledger.index, ledger.calls_made).values()
        )
        settled = stats["settled"]
        if settled < accepted and ledger.end.get("closed"):
            verdict.fail(
                "drops_counted",
                f"worker {ledger.index}: close() True with {settled} of {accepted} settled",
            )
        if stats["dropped"]:
            verdict.notes.append(
                f"worker {ledger.index}: {stats['dropped']} events dropped and counted, by cause "
                f"{stats['dropped_by_cause']}"
            )
        if stats["write_errors"]:
            verdict.notes.append(f"worker {ledger.index}: {stats['write_errors']} batches refused")
    _drops_in_redis(history, verdict)


def _drops_in_redis(history: History, verdict: Verdict) -> None:
    """Redis's drop counts, by cause, are the workers' (when every worker closed and Redis
    kept everything: else each side may know of drops the other lost)."""
    from devtools.torture.checker import lost_tags

    total_loss, tags = lost_tags(history)
    if any(w.end is None for w in history.workers) or total_loss or tags:
        return
    counted: dict[str, int] = {}
    for ledger in history.workers:
        assert ledger.end is not None
        for cause, count in ledger.end["stats"]["dropped_by_cause"].items():
            counted[cause] = counted.get(cause, 0) + int(count)
    stats = history.redis.get("client_stats", {})
    seen = {
        name.removeprefix("dropped:"): int(value)
        for name, value in stats.items()
        if name.startswith("dropped:") and value.isdigit() and int(value)
    }
    if seen != counted:
        verdict.fail("drops_counted", f"Redis counts drops {seen}, the workers {counted}")


def check_flushes(history: History, cases: list[Case], verdict: Verdict) -> None:
    from devtools.torture.checker import lost_tags

    total_loss, tags = lost_tags(history)
    by_provider = {case.provider: case for case in cases}
    for ledger in history.workers:
        for flush in ledger.flushes:
            if not flush["result"] or "read" not in flush:
                continue
            for provider, raw in flush["read"].items():
                case = by_provider.get(provider)
                loss = tags.get(provider, total_loss)
                if case is None or (loss is not None and loss < float(flush["t_read"])):
                    continue
                verdict.count("true flushes read back")
                vouched = case.profile.totals(case.profile.prefix(int(flush["n"])))
                seen = accounting.int_totals({k: str(v) for k, v in raw.items()})
                short = [n for n in vouched if seen.get(n, 0) < vouched[n]]
                if short:
                    verdict.fail(
                        "flush_truthful",
                        f"worker {ledger.index}: flush() True at call {flush['n']}, then "
                        f"{provider} short: {accounting.diff(vouched, seen)}",
                    )
                    break


def redis_troubled(history: History, at: float) -> bool:
    """Whether a fault that can keep a worker's writes from Redis was in force near ``at``."""
    for fault in history.faults:
        if fault["kind"] in QUIET_KINDS:
            continue
        end = float(fault.get("end") or fault["start"])
        if fault["start"] - 0.5 <= at and end + 2.0 >= at - 2.0:
            return True
    return False


READABLE_KINDS = frozenset({"oom", "script_flush", "reshard"})
"""Faults that refuse or redirect writes but leave every read served: a worker still reads
the breaker states (``client_pause`` in WRITE mode too)."""


def redis_unreadable(history: History, at: float) -> bool:
    """Whether a fault that can keep a worker from reading Redis was in force near ``at``
    (``redis_troubled`` without the faults that leave reads served)."""
    for fault in history.faults:
        kind = fault["kind"]
        if kind in QUIET_KINDS or kind in READABLE_KINDS:
            continue
        if kind == "client_pause" and fault["params"].get("mode") == "WRITE":
            continue
        end = float(fault.get("end") or fault["start"])
        if fault["start"] - 0.5 <= at and end + 2.0 >= at - 2.0:
            return True
    return False


def check_kill_loss(history: History, cases: list[Case], verdict: Verdict) -> None:
    """A killed worker's events missing from Redis: recorded within the last flush interval
    (plus a pass in flight) before the kill, when Redis was up; reported in ms either way."""
    for ledger in history.workers:
        if ledger.killed_at is None:
            continue
        marks = ledger.call_times()
        mine = [c for c in cases if c.ledger is ledger and c.matched is not None]
        lost = [c.profile.call_index[c.matched] for c in mine if c.matched < c.hi]  # type: ignore[operator, index]
        if not lost:
            continue
        first = min(lost)
        recorded_from, recorded_by = ledger.time_bounds(first, marks)
        # the oldest lost event is at least this old, on the clock of what the worker's flush
        # goes through (the worker, the proxy in the harness, Redis): their waits for a CPU
        # left out, as a loaded machine delays a flush without anything being wrong
        clock = effective_clock(history.waits, (f"w{ledger.index}", "redis", "harness"))
        span = clock(ledger.killed_at) - clock(recorded_by)
        events = sum(c.hi - (c.matched or 0) for c in mine)
        verdict.notes.append(
            f"worker {ledger.index} killed: {events} events lost, recorded in its last "
            f"{(ledger.killed_at - recorded_from) * 1000:.0f} ms or less"
        )
        if span > FLUSH_INTERVAL + IN_FLIGHT_ALLOWANCE and not redis_troubled(
            history, ledger.killed_at
        ):
            verdict.fail(
                "kill_loss",
                f"worker {ledger.index}: killed with Redis up, lost events recorded "
                f"{span * 1000:.0f} ms before the kill",
            )

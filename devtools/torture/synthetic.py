"""A history built by hand, consistent in every respect, for the checker's own tests: each test
breaks one thing in it and asserts the checker reports exactly that (a checker that cannot fail
is a defect). ``perfect_history()`` is what a run with no fault and no bug would record."""

from __future__ import annotations

from devtools.torture.history import History, Json
from devtools.torture.ledger import (
    CALLS_METRIC,
    COST_METRIC,
    FLAVORS,
    WorkerLedger,
    profiles,
    provider_name,
    rejections,
)
from devtools.torture.recorder import series_name
from devtools.torture.schedule import Schedule
from gatewayz_protocol.fields import COUNT_FIELDS, HISTOGRAM_FIELDS
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.partitions import HISTOGRAM_BOUNDS, OUTCOMES
from gatewayz_protocol.specs import series_id

T0 = 1_800_000_000.0
NAMESPACE = "torture-synthetic"


def ledger(seed: int, calls: int, index: int = 0) -> WorkerLedger:
    """A worker that recorded ``calls`` calls at 100/s, flushed halfway and closed cleanly."""
    progress = [(n, T0 + n / 100) for n in range(0, calls + 1, 10)]
    end_t = T0 + calls / 100
    stats: Json = {
        "buffered": 0,
        "accepted": calls - sum(rejections(seed, index, calls).values()),
        "settled": calls - sum(rejections(seed, index, calls).values()),
        "dropped": 0,
        "dropped_by_cause": {},
        "rejected": rejections(seed, index, calls),
        "write_errors": 0,
    }
    half = calls // 2
    read = {name: p.totals(p.prefix(half)) for name, p in profiles(seed, index, half).items()}
    flush: Json = {"n": half, "t0": T0 + half / 100, "t1": T0 + half / 100 + 0.01}
    flush["result"] = True
    flush |= {"read": read, "t_read": T0 + half / 100 + 0.02}
    return WorkerLedger(
        index, index, seed, T0, progress, [flush], [], {"calls": calls, "closed": True,
        "stats": stats, "t": end_t}, None, (calls, calls),
    )  # fmt: skip


def exports(provider: str, totals: dict[str, int], window: int) -> dict[str, float]:
    """What a replica serves for a provider with these totals (series name -> value)."""
    found = {}
    for outcome, name in zip(OUTCOMES, COUNT_FIELDS, strict=True):
        labels = {"outcome": outcome, "provider": provider}
        found[series_name("gatewayz_provider_requests_total", labels)] = float(totals.get(name, 0))
    running = 0
    for bound, name in zip([*HISTOGRAM_BOUNDS, None], HISTOGRAM_FIELDS, strict=True):
        running += totals.get(name, 0)
        le = "+Inf" if bound is None else (f"{bound:.1f}" if bound == int(bound) else f"{bound:g}")
        key = series_name("provider_response_time_seconds_bucket", {"le": le, "provider": provider})
        found[key] = float(running)
    label = {"provider": provider}
    found[series_name("provider_response_time_seconds_count", label)] = float(running)
    found[series_name("provider_response_time_seconds_sum", label)] = totals["lat_us"] / 1e6
    found[series_name("gatewayz_provider_tokens_total", label)] = float(totals.get("tokens", 0))
    found[series_name("gatewayz_cost_by_provider_total", label)] = totals.get("cost_nusd", 0) / 1e9
    found[series_name("gatewayz_provider_window_requests", label)] = float(window)
    return found


def backend_exports(provider: str, calls: int, cost_nanos: int) -> dict[str, float]:
    label = {"provider": provider}
    return {
        series_name(f"{CALLS_METRIC}_total", label): float(calls),
        series_name(f"{COST_METRIC}_total", label): cost_nanos / 1e9,
    }


def _redis_and_exports(seed: int, calls: int, now: float) -> tuple[Json, dict[str, float]]:
    """Redis holding every event of the worker, and the counters a replica exports from it."""
    redis: Json = {"now": now, "providers": {}, "backend": {CALLS_METRIC: {}, COST_METRIC: {}}}
    counters: dict[str, float] = {}
    for name, profile in profiles(seed, 0, calls).items():
        totals = profile.totals(len(profile.events))
        window = profile.partitions(list(range(len(profile.events))))
        redis["providers"][name] = {
            "totals": {k: str(v) for k, v in totals.items()},
            "window": window,
            "breaker": {},
            "transitions": {},
        }
        sid = series_id([name])
        redis["backend"][CALLS_METRIC][f"i:{sid}"] = str(len(profile.events))
        cost = sum(e.cost_nanos() for e in profile.events)
        redis["backend"][COST_METRIC] |= {
            f"i:{sid}": str(cost // 10**9),
            f"n:{sid}": str(cost % 10**9),
        }
        counters |= exports(name, totals | {"lat_us": totals.get("lat_us", 0)}, sum(window))
        counters |= backend_exports(name, len(profile.events), cost)
    redis["client_stats"] = {f"rejected:{c}": str(n) for c, n in rejections(seed, 0, calls).items()}
    for cause, count in rejections(seed, 0, calls).items():
        counters[series_name("gatewayz_client_events_rejected_total", {"reason": cause})] = count
    return redis, counters


def _replicas(counters: dict[str, float], now: float) -> list[Json]:
    gauges = {
        "gatewayz_aggregator_snapshot_timestamp_seconds": now - 1,
        "gatewayz_aggregator_snapshot_cycle": 10.0,
    }
    replicas = []
    for replica in ("a0", "a1"):
        leader = {
            series_name("gatewayz_aggregator_leader", {"replica": replica}): float(replica == "a0")
        }
        replicas.append({"name": replica, "generation": 1, "alive": True, "readyz": [200, "ok"],
                         "counters": dict(counters), "gauges": gauges | leader})  # fmt: skip
    return replicas


def _samples_and_scrapes(flaky: str) -> tuple[list[Json], list[Json]]:
    """The lease held by a0 (token 1) throughout, the flaky breaker opened by it at 2 s;
    a scrape a second of both replicas, a new snapshot each time."""
    samples = [
        {"t0": T0 + i * 0.05, "t1": T0 + i * 0.05 + 0.01, "lease": "a0|1", "pttl": 1400,
         "token": 1, "breakers": {flaky: {"epoch": str(int(i >= 40)), "fence": "1",
         "state": "open" if i >= 40 else "closed", "forced": "0"}}}
        for i in range(80)
    ]  # fmt: skip
    scrapes = [
        {"replica": r, "generation": 1, "incarnation": 1, "t0": T0 + i, "t1": T0 + i + 0.01,
         "values": {series_name("gatewayz_provider_requests_total", {"outcome": "success",
         "provider": flaky}): float(i)}, "cycle": float(i + 1), "digest": f"d{i}"}
        for i in range(5) for r in ("a0", "a1")
    ]  # fmt: skip
    return samples, scrapes


def perfect_history(seed: int = 7, calls: int = 400) -> History:
    worker = ledger(seed, calls)
    flaky = provider_name(0, "flaky")
    worker.allows = [  # the breaker below: closed until 2 s, then open
        {"p": flaky, "allowed": True, "t": T0 + 1.0},
        {"p": flaky, "allowed": False, "t": T0 + 3.0},
    ]
    now = T0 + calls / 100 + 5
    redis, counters = _redis_and_exports(seed, calls, now)
    redis["providers"][flaky]["totals"]["breaker_rejected"] = "1"  # the allow() False above
    samples, scrapes = _samples_and_scrapes(flaky)
    keys = Keys(NAMESPACE)
    status = {
        "action": "status", "provider": None, "argv": ["breaker", "status"], "start": T0 + 1,
        "end": T0 + 2, "returncode": 0, "output": "",
        "sent": [["TIME"], ["ZRANGE", keys.providers], ["HGETALL", keys.breaker(flaky)]],
    }  # fmt: skip
    flags = {"TIME": ["fast"], "ZRANGE": ["readonly"], "HGETALL": ["readonly"]}
    flags |= {"ZREMRANGEBYSCORE": ["write"], "HSET": ["write", "denyoom", "fast"]}
    return History(
        seed=seed, cluster=False, namespace=NAMESPACE, window=300.0, max_batch=2000, t0=T0,
        schedule=Schedule(seed, 10.0, False, ()).to_json(), workers=[worker], faults=[],
        operators=[status], command_flags=flags, samples=samples, scrapes=scrapes,
        incidents={"workers": 0, "workers_exec": 0}, redis=redis, replicas=_replicas(counters, now),
        quiesced_at=T0 + 10, written_at=T0 + 11, problems=[],
    )  # fmt: skip


def set_total(history: History, provider: str, name: str, value: int) -> None:
    """One totals field changed in Redis and in what every replica exports from it."""
    state = history.redis["providers"][provider]
    state["totals"][name] = str(value)
    totals = {k: int(v) for k, v in state["totals"].items()}
    for replica in history.replicas:
        replica["counters"] |= {
            k: v for k, v in exports(provider, totals, sum(state["window"])).items()
            if "window_requests" not in k
        }  # fmt: skip


def set_prefix(history: History, provider: str, events: int) -> None:
    """Redis (and every replica's export of it) holding only the provider's first ``events``
    events: totals, window, backend counters."""
    profile = profiles(history.seed, 0, history.workers[0].calls_made)[provider]
    state = history.redis["providers"][provider]
    for name in list(state["totals"]):
        set_total(history, provider, name, 0)
    for name, value in profile.totals(events).items():
        set_total(history, provider, name, value)
    state["window"] = profile.partitions(list(range(events)))
    key = series_name("gatewayz_provider_window_requests", {"provider": provider})
    for replica in history.replicas:
        replica["counters"][key] = float(events)
    sid = series_id([provider])
    cost = sum(e.cost_nanos() for e in profile.events[:events])
    history.redis["backend"][CALLS_METRIC][f"i:{sid}"] = str(events)
    history.redis["backend"][COST_METRIC] |= {
        f"i:{sid}": str(cost // 10**9),
        f"n:{sid}": str(cost % 10**9),
    }
    for replica in history.replicas:
        replica["counters"] |= backend_exports(provider, events, cost)


PROVIDERS = tuple(provider_name(0, flavor) for flavor in FLAVORS)

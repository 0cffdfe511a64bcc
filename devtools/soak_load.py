"""The soak's load: what each spawned worker process runs (``devtools.soak`` drives them).

A worker records a fixed mix of providers, latencies and statuses flat out (or at a given
rate), times every 64th record() call, watches its own buffer and RSS every 50 ms, and reports
its counters when done. The phases the main process announces let it note what it had written
when Redis went down, so the outage run can check the restarted Redis exactly.
"""

import itertools
import os
import threading
import time
from array import array
from collections.abc import Sequence
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier
from typing import Any

from client import ClientSettings, MetricsClient

PROVIDERS = tuple(f"soak-{i}" for i in range(10))
LATENCIES = (0.03, 0.08, 0.2, 0.4, 0.6, 0.9, 1.3, 1.8, 2.4, 3.5, 6.0)
STATUSES = (503, 429, *(200,) * 18)  # 90% 200, 5% 503, 5% 429
_CYCLE = [
    (PROVIDERS[i % 10], LATENCIES[i // 200 % 11], STATUSES[i // 10 % 20]) for i in range(2200)
]
_MIX = _CYCLE * 16  # 550 chunks of 64 calls; the first call of each chunk is timed
CHUNKS = tuple((_MIX[i], tuple(_MIX[i + 1 : i + 64])) for i in range(0, len(_MIX), 64))
RUN, OUTAGE, SNAPSHOT, RECOVERED = 0, 1, 2, 3  # phases the main process announces
MB = 1 << 20
Json = dict[str, Any]
Shared = tuple["Synchronized[int]", "Synchronized[int]", Barrier, "Queue[Json]"]
"""Between the main process and a worker: phase, snapshot acks, start barrier, result queue."""


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def percentile(values: Sequence[float], q: float) -> float | None:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))]) if ordered else None


def written_of(stats: Json) -> int:
    """Events that reached Redis. settled = written + dropped + refused by the provider cap +
    events of batches Redis refused (``write_errors`` counts those batches: must be 0)."""
    return int(stats["settled"] - stats["dropped"] - stats["rejected"].get("too_many_providers", 0))


def worker(conf: Json, shared: Shared) -> None:
    """One worker process: record() flat out (or at ``rate``), watching itself every 50 ms."""
    phase, acks, start, out = shared
    settings = ClientSettings(conf["url"], conf["namespace"], window_seconds=conf["window"])
    metrics = MetricsClient(settings=settings)
    timings = {False: array("q"), True: array("q")}  # by "Redis is down"
    seen: Json = {"outage": False, "max_buffered": 0, "max_buffered_outage": 0}
    seen["rss_start"] = seen["rss_max"] = resident_bytes()
    done = threading.Event()

    def watch() -> None:  # every 50 ms: phase, buffered, RSS
        while not done.wait(0.05):
            now, stats, rss = phase.value, metrics.stats(), resident_bytes()
            outage = now in (OUTAGE, SNAPSHOT)
            if outage and "outage_start" not in seen:
                seen["outage_start"] = {"dropped": stats["dropped"], "rss": rss}
                seen["rss_max_outage"] = rss
            if now == SNAPSHOT and "snapshot" not in seen:  # Redis down: nothing gets written
                seen["snapshot"] = {"written": written_of(stats), "dropped": stats["dropped"]}
                with acks.get_lock():
                    acks.value += 1
            if now == RECOVERED and "recovered" not in seen:
                seen["recovered"] = {"dropped": stats["dropped"], "rss": rss}
            seen["outage"] = outage
            seen["max_buffered"] = max(seen["max_buffered"], stats["buffered"])
            seen["rss_max"] = max(seen["rss_max"], rss)
            if outage:
                seen["max_buffered_outage"] = max(seen["max_buffered_outage"], stats["buffered"])
                seen["rss_max_outage"] = max(seen["rss_max_outage"], rss)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start.wait(timeout=120)
    began = time.monotonic()
    end, rate, calls = began + conf["duration"], conf["rate"], 0
    record, perf = metrics.record, time.perf_counter_ns
    for (provider, latency, status), rest in itertools.cycle(CHUNKS):
        t0 = perf()
        record(provider, latency, status)
        timings[seen["outage"]].append(perf() - t0)
        for provider, latency, status in rest:
            record(provider, latency, status)
        calls += 64
        now = time.monotonic()
        if now >= end:
            break
        if rate > 0 and (ahead := began + calls / rate - now) > 0:
            time.sleep(ahead)
    seconds = time.monotonic() - began
    closed = metrics.close(timeout=30)
    close_seconds = time.monotonic() - began - seconds
    done.set()
    watcher.join()
    del seen["outage"]
    stats = metrics.stats()
    for q in (50, 99):
        seen[f"run_p{q}"] = percentile(timings[False], q / 100)
        seen[f"outage_p{q}"] = percentile(timings[True], q / 100)
    seen.update(calls=calls, seconds=seconds, close_seconds=close_seconds, closed=closed)
    seen.update(written=written_of(stats), rss_end=resident_bytes(), max_buffer=settings.max_buffer)
    out.put(seen | stats | {"timed": [len(timings[False]), len(timings[True])]})

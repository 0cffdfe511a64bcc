"""A worker process of the torture run: ``python -m devtools.torture.workers CONFIG.json``.

It records its ledger's calls (``ledger.calls``) at a fixed rate through a real
``MetricsClient``, calls ``flush()`` now and then and logs each answer (and, when True, what
Redis holds for its providers right after), bumps two backend counters per accepted call, and
asks ``allow()`` ten times a second about its providers and every first worker's flaky one
(so workers compete for half-open trial permits), logging each answer.
Its file says how far it got and when; two memory-mapped counters (calls begun, calls
returned) survive a SIGKILL.

The machine's clock cannot be stepped, so the worker's is: ``time.time`` is replaced, before the
client is imported, by the real clock plus an offset the run sets through a control file
(``{"clock": {"target": s, "seconds": d}, "stop": bool}``, polled every 20 ms): a step when
``seconds`` is 0, else a slew from the current offset to ``target`` over ``seconds``. Every
change is logged with the real time it took effect. ``stop`` ends the recording: the worker
closes its client (flushing) and logs its end.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import random
import struct
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from devtools.torture.ledger import (
    CALLS_METRIC,
    COST_METRIC,
    FLAVORS,
    calls,
    merged,
    provider_name,
    shard_count,
)

_real_time = time.time
COUNTERS = struct.Struct("<qq")


class SkewedClock:
    """Real time plus an offset that steps or slews when the run says so."""

    def __init__(self) -> None:
        self.base = self.target = 0.0
        self.t0 = self.seconds = 0.0

    def offset(self, now: float) -> float:
        if self.seconds <= 0 or now >= self.t0 + self.seconds:
            return self.target
        return self.base + (self.target - self.base) * max(0.0, now - self.t0) / self.seconds

    def time(self) -> float:
        now = _real_time()
        return now + self.offset(now)

    def change(self, target: float, seconds: float) -> dict[str, float]:
        now = _real_time()
        self.base, self.t0 = self.offset(now), now
        self.target, self.seconds = float(target), max(0.0, float(seconds))
        return {"t": now, "base": self.base, "target": self.target, "seconds": self.seconds}


class Control:
    """The control file, polled in a thread: clock changes and the stop request."""

    def __init__(self, path: Path, clock: SkewedClock, log: Ledger) -> None:
        self.path, self.clock, self.log = path, clock, log
        self.stop = threading.Event()
        self._seen = -1

    def poll(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        if int(data.get("seq", 0)) == self._seen:
            return
        self._seen = int(data.get("seq", 0))
        wanted = data.get("clock")
        if wanted and (wanted["target"], wanted["seconds"]) != (
            self.clock.target,
            self.clock.seconds,
        ):
            self.log.write("clock", **self.clock.change(wanted["target"], wanted["seconds"]))
        if data.get("stop"):
            self.stop.set()

    def run(self) -> None:
        while not self.stop.is_set():
            self.poll()
            time.sleep(0.02)


class Ledger:
    """The worker's JSON-lines file, one line per write (kept by the kernel past a SIGKILL)."""

    def __init__(self, path: Path) -> None:
        self._file: IO[str] = path.open("a", buffering=1)
        self._lock = threading.Lock()

    def write(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"kind": kind, **fields}, default=str)
        with self._lock:
            self._file.write(line + "\n")


def _read_own(reader: Any, keys: Any, providers: list[str]) -> dict[str, dict[str, str]]:
    """Each provider's totals, its shards summed."""
    found = {}
    for provider in providers:
        hashes = []
        for shard in range(shard_count(provider)):
            raw = reader.hgetall(keys.totals(provider, shard))
            hashes.append({k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()})
        found[provider] = merged(hashes)
    return found


class Worker:
    def __init__(self, conf: dict[str, Any], clock: SkewedClock) -> None:
        from client import ClientSettings, MetricsClient
        from gatewayz_protocol.keys import Keys
        from gatewayz_transport.connection import connect

        self.conf, self.clock = conf, clock
        self.index, self.seed = int(conf["index"]), int(conf["seed"])
        settings = ClientSettings(
            conf["redis_url"],
            conf["namespace"],
            window_seconds=conf["window"],
            max_batch=conf["max_batch"],
            handle_sigterm=False,
            provider_shards=",".join(
                f"{p}:{shard_count(p)}"
                for p in (provider_name(self.index, f) for f in FLAVORS)
                if shard_count(p) > 1
            ),
        )
        self.metrics = MetricsClient(settings=settings)
        labels = ["provider"]
        self.calls_counter = self.metrics.counter(CALLS_METRIC, "torture calls", labels)
        self.cost_counter = self.metrics.counter(COST_METRIC, "torture cost", labels)
        self.keys = Keys(conf["namespace"])
        self.reader = connect(conf["direct_url"], 1.0)
        self.providers = [provider_name(self.index, f) for f in FLAVORS]
        self.log = Ledger(Path(conf["ledger"]))
        fd = os.open(conf["counters"], os.O_RDWR | os.O_CREAT)
        os.ftruncate(fd, COUNTERS.size)
        self.counters = mmap.mmap(fd, COUNTERS.size)
        os.close(fd)
        self.control = Control(Path(conf["control"]), clock, self.log)

    def record(self, i: int, call: Any) -> None:
        latency, status, tokens = call.latency_ms / 1000, call.status, call.tokens
        if call.invalid == "invalid_latency":
            latency = math.nan
        elif call.invalid == "invalid_status_code":
            status = 777
        elif call.invalid == "invalid_tokens":
            tokens = -1
        cost = call.cost_nusd / 1e9
        struct.pack_into("<q", self.counters, 0, i + 1)
        accepted = self.metrics.record(
            call.provider, latency, status_code=status, tokens=tokens, cost_usd=cost
        )
        if accepted:
            self.calls_counter.labels(call.provider).inc()
            self.cost_counter.labels(call.provider).inc(cost)
        struct.pack_into("<q", self.counters, 8, i + 1)
        if accepted != (call.invalid is None):
            self.log.write("unexpected", i=i, accepted=accepted, invalid=call.invalid)

    def flush(self, done: int) -> None:
        t0 = _real_time()
        result = self.metrics.flush(timeout=float(self.conf["flush_timeout"]))
        entry: dict[str, Any] = {"n": done, "t0": t0, "t1": _real_time(), "result": result}
        if result:
            try:
                entry["read"] = _read_own(self.reader, self.keys, self.providers)
                entry["t_read"] = _real_time()
            except Exception as exc:  # Redis down or moving: the read proves nothing
                entry["read_error"] = type(exc).__name__
        self.log.write("flush", **entry)

    def run(self) -> None:
        rng = random.Random(f"{self.seed}/{self.index}/flush")
        flush_every = rng.uniform(0.4, 1.2)
        rate, chunk = float(self.conf["rate"]), 4096
        threading.Thread(target=self.control.run, daemon=True).start()
        self.log.write(
            "start", index=self.index, slot=self.conf["slot"], seed=self.seed, t=_real_time()
        )
        began = time.monotonic()
        next_flush, next_progress, next_allow, done = began + flush_every, began, began, 0
        pending = calls(self.seed, self.index, 0, chunk)
        while not self.control.stop.is_set():
            now = time.monotonic()
            if now >= next_progress:
                self.log.write("progress", n=done, t=_real_time())
                next_progress = now + 0.1
            due = min(int((now - began) * rate), done + 40)
            while done < due:
                call = pending[done % chunk]
                self.record(done, call)
                done += 1
                if done % chunk == 0:
                    pending = calls(self.seed, self.index, done, done + chunk)
            if now >= next_allow:  # its own providers and every first worker's flaky one
                for provider in dict.fromkeys([*self.providers, *self.conf.get("peers", [])]):
                    allowed = self.metrics.allow(provider)
                    self.log.write("allow", p=provider, allowed=allowed, t=_real_time())
                next_allow = now + 0.1
            if now >= next_flush:
                self.flush(done)
                next_flush = time.monotonic() + flush_every
            time.sleep(0.01)
        self.log.write("progress", n=done, t=_real_time())
        closed = self.metrics.close(timeout=float(self.conf["close_timeout"]))
        stats = self.metrics.stats()
        self.log.write("end", calls=done, closed=closed, stats=stats, t=_real_time())


def main(argv: list[str]) -> int:
    conf = json.loads(Path(argv[0]).read_text())
    clock = SkewedClock()
    time.time = clock.time  # before the client is imported: every reader of the clock sees it
    Worker(conf, clock).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

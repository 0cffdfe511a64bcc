"""One torture run: start the processes, let the nemesis apply the schedule while the workers
record and the recorder watches, heal, quiesce, read the final state, stop everything.

``run_schedule(schedule, options)`` returns the ``History`` (the checker's input). Every child
is ended on every exit path (``Deployment.stop`` in a ``finally``)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from devtools.redis_server import answers
from devtools.torture.cpu_wait import WaitRecorder
from devtools.torture.deployment import Deployment, Options, http_get, wait_until
from devtools.torture.final import command_flags, exported, read_redis, read_replica
from devtools.torture.history import History
from devtools.torture.ledger import FLAVORS, provider_name, read_ledger
from devtools.torture.nemesis import Nemesis
from devtools.torture.recorder import Sampler, Scraper, parse_metrics
from devtools.torture.schedule import Schedule
from gatewayz_protocol.keys import Keys

Log = Callable[[str], None]


def _providers(dep: Deployment) -> list[str]:
    return [provider_name(w.index, f) for w in dep.all_workers() for f in FLAVORS]


def _incarnation(dep: Deployment) -> Callable[[], int]:
    return lambda: dep.redis.incarnation if dep.redis is not None else 0


def _roles(dep: Deployment) -> dict[str, list[int]]:
    """The pids of every process of the run, by role (``cpu_wait``)."""
    roles = {"harness": [os.getpid()]}
    for agg in dep.aggregators:
        if agg.process is not None:
            roles[agg.name] = [agg.process.pid]
    for worker in dep.all_workers():
        if worker.process is not None and worker.killed_at is None:
            roles[f"w{worker.index}"] = [worker.process.pid]
    if dep.redis is not None and dep.redis.process is not None:
        roles["redis"] = [dep.redis.process.pid]
    if dep.cluster is not None:
        roles["redis"] = [node.process.pid for node in dep.cluster.nodes]
    return roles


def _fresh(port: int, after: float) -> float | None:
    """The replica's snapshot cycle when it is ready and serves a snapshot taken after
    ``after``, else None."""
    if http_get(port, "/readyz")[0] != 200:
        return None
    counters, gauges = parse_metrics(http_get(port, "/metrics")[1])
    replica = {"counters": counters, "gauges": gauges}
    taken = exported(replica, "gatewayz_aggregator_snapshot_timestamp_seconds")
    if taken is None or taken < after:
        return None
    return exported(replica, "gatewayz_aggregator_snapshot_cycle")


def quiesce(dep: Deployment, nemesis: Nemesis, problems: list[str], log: Log) -> float:
    """Heal every fault, stop the workers (each closes its client), and wait until both
    replicas serve one snapshot taken after the last write. Returns when the writes ended."""
    dead = [a.name for a in dep.aggregators if not a.alive()]
    killed = {r.notes.get("target") for r in nemesis.records if r.kind == "kill_aggregator"}
    problems += [f"aggregator {name} died on its own" for name in dead if name not in killed]
    nemesis.heal_all()
    log(f"every fault healed at t={time.time() - nemesis.started:.1f}s")
    if dep.redis is not None and not wait_until(lambda: answers(dep.direct_url, 0.5), 30):
        problems.append("Redis did not answer after the faults healed")
    for worker in dep.workers.values():
        worker.send({"stop": True})
    for worker in dep.all_workers():
        if worker.killed_at is None and worker.process is not None:
            code = _wait_exit(worker.process, 60)
            if code is None:
                problems.append(f"worker {worker.index} did not stop within 60 s of being asked")
                worker.kill()
                worker.killed_at = None
            elif code != 0:
                problems.append(f"worker {worker.index} exited with {code}")
    written = time.time()
    log(f"workers stopped at t={written - nemesis.started:.1f}s")

    # Each replica's fresh cycles, as polled: they agree once both served one of them. Not at
    # the same instant: a follower serves what the leader published at its own cycle, so with
    # both on 1 s cycles it may stay one behind (seed 150022: for 45 s the phases never left
    # a poll's 0.2 s to see the same number in both).
    served: dict[str, set[float]] = {a.name: set() for a in dep.aggregators}

    def agreed() -> bool:
        for aggregator in dep.aggregators:
            cycle = _fresh(aggregator.port, written + 0.5)
            if cycle is not None:
                served[aggregator.name].add(cycle)
        return bool(set.intersection(*served.values()))

    # 75 s: a replica restarted by a fault at nice 19 beside a busy test suite may take a
    # minute to start (CI seed 2044004054: a0 alive, silent, no port for 55 s; it replays clean)
    if not wait_until(agreed, 75, 0.2):
        problems.append("the replicas did not serve one snapshot taken after the last write")
    log(f"replicas serve one fresh snapshot at t={time.time() - nemesis.started:.1f}s")
    return written


def _wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    try:
        return int(process.wait(timeout))
    except subprocess.TimeoutExpired:
        return None


def _incidents(dep: Deployment) -> dict[str, int]:
    found = {}
    for name, proxy in dep.proxies.items():
        found[name], found[f"{name}_exec"] = proxy.incidents, proxy.exec_incidents
    return found


def _tracebacks(dep: Deployment) -> list[str]:
    found = []
    for agg in dep.aggregators:
        text = agg.log.read_text(errors="replace") if agg.log.exists() else ""
        for match in re.finditer(r"Traceback \(most recent call last\):\n(?:[ \t].*\n)+(.*)", text):
            found.append(f"aggregator {agg.name}: uncaught {match.group(1)[:200]}")
    return found


def run_schedule(schedule: Schedule, options: Options, log: Log = print) -> History:
    dep = Deployment(options)
    sampler: Sampler | None = None
    scraper: Scraper | None = None
    waits: WaitRecorder | None = None
    try:
        dep.start()
        keys = Keys(dep.namespace)
        sampler = Sampler(dep.direct_url, keys, lambda: _providers(dep))
        scraper = Scraper(dep.aggregators, _incarnation(dep))
        waits = WaitRecorder(lambda: _roles(dep))
        sampler.thread.start()
        scraper.thread.start()
        waits.thread.start()
        nemesis = Nemesis(dep)
        t0 = nemesis.started = time.time()
        log(f"running {schedule.describe()}")
        nemesis.run(schedule, t0)
        problems: list[str] = []
        quiesced = time.time()
        written = quiesce(dep, nemesis, problems, log)
        redis_state = read_redis(dep.direct_url, keys, _providers(dep), options.window)
        log(f"final state read at t={time.time() - t0:.1f}s")
        replicas = [read_replica(agg) for agg in dep.aggregators]
        for running in (sampler, scraper, waits):
            running.stop.set()
            running.thread.join(5)
        names = {command[0] for run in nemesis.operator_runs for command in run.sent}
        port = dep.redis.port if dep.redis is not None else dep.cluster.nodes[0].port  # type: ignore[union-attr]
        workers = []
        for worker in dep.all_workers():
            try:
                workers.append(read_ledger(worker.ledger, worker.read_counters(), worker.killed_at))
            except (OSError, ValueError):
                if worker.killed_at is None:
                    raise
                # killed while it started (a slow machine): it writes its ledger's first line
                # before its first call, so it made none
                log(f"worker {worker.index} was killed before it made a call")
        return History(
            seed=schedule.seed,
            cluster=schedule.cluster,
            namespace=dep.namespace,
            window=options.window,
            max_batch=options.max_batch,
            t0=t0,
            schedule=schedule.to_json(),
            workers=workers,
            faults=[vars(record) for record in nemesis.records],
            operators=[vars(run) for run in nemesis.operator_runs],
            command_flags=command_flags(port, names - {"UNPARSED", "UNLOGGED"}),
            samples=sampler.samples,
            scrapes=scraper.scrapes,
            waits=waits.samples,
            incidents=_incidents(dep),
            redis=redis_state,
            replicas=replicas,
            quiesced_at=quiesced,
            written_at=written,
            problems=problems + _tracebacks(dep),
        )
    finally:
        for recorder in (sampler, scraper, waits):
            if recorder is not None:
                recorder.stop.set()
        began = time.time()
        dep.stop()
        log(f"every process stopped in {time.time() - began:.1f}s")


def save(history: History, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"history-{history.seed}.json"
    path.write_text(history.to_json())
    return path

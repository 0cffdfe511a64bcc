"""Breaks the torture harness found, each pinned by the smallest fixed schedule that shows it
(``devtools.torture``: real processes, the checker over their ledger). Each test is a strict
``xfail`` until its break is fixed: then it passes, fails as XPASS, and the marker (and the
entry in ``devtools/torture/known.py``) goes.

The pinned schedules of the tests selected run at the same time as the seeds of
``tests/test_torture.py``, each in a process of its own (``python -m devtools.torture
--schedule``, ``devtools/torture/ci.py``): a test checks its run's history."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from client import ClientSettings, MetricsClient
from client._batch import Batch, build_batch
from client._ledger import NO_NOTES
from client._transaction import Outcome as SlotOutcome
from client._writer import RedisWriter
from devtools.redis_cluster import LocalCluster
from devtools.torture import ci
from devtools.torture.checker import Verdict, check
from devtools.torture.schedule import Fault, Schedule
from gatewayz_protocol.breaker_state import OPEN, BreakerState, encode_breaker
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.partitions import SUCCESS
from gatewayz_transport.connection import connect
from tests.support.processes import HEAVY, need_redis_tools

pytestmark = HEAVY


def _steps() -> tuple[Fault, ...]:
    deltas = ((2.0, 600.0), (3.5, -600.0), (5.0, -600.0), (6.5, 600.0))
    return tuple(Fault(at, "clock_step", 0.0, {"slot": 0, "delta": d}) for at, d in deltas)


PINNED: dict[str, Schedule] = {  # by the name of the test that reads its verdict
    "test_clock_step_between_record_and_flush": Schedule(0, 8.0, False, _steps()),
    "test_backend_metrics_come_back_after_redis_restarts_empty": Schedule(
        0, 8.0, False, (Fault(2.5, "restart_empty", 1.0, {"signal": "KILL"}),)
    ),
    "test_aggregator_cycles_go_on_while_a_slot_migrates": Schedule(
        0, 12.0, True, (Fault(2.0, "reshard", 8.0, {"slot": 0, "flavor": "ok", "stall": True}),)
    ),
}


for _name, _pinned in PINNED.items():  # started with the seeds' runs (devtools/torture/ci.py)
    ci.BATCH.add(ci.CiRun(_name, _name, ("--workers", "2"), _pinned.to_json()))


@pytest.fixture(scope="module")
def _pinned_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ci.Batch]:
    need_redis_tools()
    ci.BATCH.start({item.name for item in request.session.items}, tmp_path_factory.getbasetemp())
    yield ci.BATCH
    ci.BATCH.stop(list(PINNED))


@pytest.fixture
def verdict(request: pytest.FixtureRequest, _pinned_runs: ci.Batch) -> Verdict:
    finished = _pinned_runs.result(request.node.name)
    if finished.history is None:
        pytest.fail(f"the run left no history:\n{finished.output[-4000:]}")
    found = check(finished.history)
    for invariant, messages in found.violations.items():
        print(f"{invariant}: {json.dumps(messages[:3])}")
    return found


def test_clock_step_between_record_and_flush(verdict: Verdict) -> None:
    assert "window_exact" not in verdict.violations


def test_backend_metrics_come_back_after_redis_restarts_empty(verdict: Verdict) -> None:
    missing = [m for m in verdict.violations.get("exported_match", []) if "torture_" in m]
    assert missing == []


def test_aggregator_cycles_go_on_while_a_slot_migrates(verdict: Verdict) -> None:
    # Was: every cycle failed with AskError for as long as a slot was half-moved (the read sent
    # again to the same node, never with ASKING). Now an ASK is followed to the importing node.
    assert "snapshots_advance" not in verdict.violations


def _cluster_totals(url: str, keys: Keys, provider: str) -> dict[str, int]:
    connection = connect(url, socket_timeout=2.0)
    try:
        raw = connection.hgetall(keys.totals(provider))
    finally:
        connection.close()
    return {k.decode(): int(v) for k, v in raw.items() if k.decode().startswith("n:")}


def test_a_leftover_resent_between_the_halves_of_a_split_batch_applies_nothing_twice(
    redis_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    import client._slots as slots

    keys = Keys(f"finding-{uuid.uuid4().hex[:8]}")
    providers = ("alpha", "delta")
    writer = RedisWriter(connect(redis_cluster.url, 2.0), keys, 360, 3600, writer_id="w1")
    full = key_slot(keys.totals("delta").encode())
    assert full != key_slot(keys.totals("alpha").encode())
    real = slots.run_slot_transactions

    def out_of_memory(cluster: Any, groups: dict[int, list[Any]]) -> dict[int, Any]:
        outcomes = real(cluster, {s: g for s, g in groups.items() if s != full})
        if full in groups:  # delta's node at maxmemory: the flusher splits the batch
            outcomes[full] = SlotOutcome(False, error=redis.OutOfMemoryError("OOM"))
        return outcomes

    calls = [
        (p, 1_800_000_000.0 + i, 0.2, SUCCESS, 10, 0, None) for i in range(20) for p in providers
    ]
    whole = build_batch(calls, 50_000, NO_NOTES)
    monkeypatch.setattr(slots, "run_slot_transactions", out_of_memory)
    with pytest.raises(redis.OutOfMemoryError):
        writer.write(whole)  # alpha's part applied, delta's refused
    monkeypatch.setattr(slots, "run_slot_transactions", real)
    half, lineage = len(calls) // 2, whole.lineage
    writer.write(build_batch(calls[:half], 50_000, NO_NOTES, split_from=lineage))
    # the first half's script calls did nothing (NOSCRIPT): _flush_pass resends its leftover,
    # a batch without events, before the second half
    writer.write(Batch({}, NO_NOTES))
    writer.write(build_batch(calls[half:], 50_000 + half, NO_NOTES, split_from=lineage))
    found = {p: _cluster_totals(redis_cluster.url, keys, p) for p in providers}
    assert found == {p: {"n:success": 20} for p in providers}


ALLOW_OOM_HSET = "#!lua flags=allow-oom\nreturn redis.call('HSET', KEYS[1], unpack(ARGV))"


def test_allow_follows_the_breaker_while_a_flush_is_retried(private_redis: redis.Redis) -> None:
    port = private_redis.connection_pool.connection_kwargs["port"]
    namespace = f"finding-{uuid.uuid4().hex[:8]}"
    settings = ClientSettings(redis_url=f"redis://127.0.0.1:{port}/0", namespace=namespace)
    client = MetricsClient(settings=settings)
    try:
        assert client.allow("openai")  # learned: closed
        private_redis.config_set("maxmemory", 1)  # writes refused for lack of memory, reads not
        client.record("openai", 0.2, 200)
        began = time.monotonic()
        while client.stats()["redis_ok"] and time.monotonic() < began + 10:
            time.sleep(0.05)  # until the flusher's pass is retrying the batch
        assert not client.stats()["redis_ok"]
        opened = BreakerState(OPEN, since=time.time(), epoch=1, open_until=time.time() + 600)
        fields = encode_breaker(opened, 5, 3.0)
        private_redis.eval(ALLOW_OOM_HSET, 1, Keys(namespace).breaker("openai"), *fields)  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + 3 * settings.breaker_refresh_seconds + 1.0
        while client.allow("openai") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not client.allow("openai")
    finally:
        private_redis.config_set("maxmemory", 0)
        client.close(timeout=2.0)


class _MastersChanging(RedisCluster):
    """A cluster whose masters change between the aggregator's INFO reads (a failover under way,
    as in torture seed 7002 on a cluster: a master killed right after a failover): the node that
    answered INFO memory is no longer asked for INFO stats."""

    def __init__(self) -> None:  # no I/O
        self.answering = {
            "memory": ["127.0.0.1:1", "127.0.0.1:2"],
            "stats": ["127.0.0.1:1"],
            "errorstats": ["127.0.0.1:1"],
        }

    def info(self, section: Any = None, *args: Any, **kwargs: Any) -> Any:
        sections: dict[str, dict[str, object]] = {
            "memory": {"used_memory": 1000, "maxmemory": 0, "maxmemory_policy": "noeviction"},
            "stats": {"evicted_keys": 0},
            "errorstats": {},
        }
        return {node: sections[section] for node in self.answering[section]}


def test_a_master_changing_between_the_info_reads_fails_the_cycle_by_name() -> None:
    # Was: a KeyError escaped the cycle (uncounted, a traceback in the log). Now the masters
    # that answered both reads are reported, and a cycle none answered fails by name.
    from aggregator.engine.reader import read_memory

    ops: Counter[str] = Counter()
    memory = read_memory(_MastersChanging(), ops)
    assert memory is not None and memory.used_bytes == 1000
    assert ops["info"] == 2 + 1 + 1
    changing = _MastersChanging()
    changing.answering["stats"] = ["127.0.0.1:3"]
    with pytest.raises(redis.ConnectionError, match="no cluster master answered both"):
        read_memory(changing, Counter())

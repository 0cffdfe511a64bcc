"""MetricWrites: the commands one batch's backend metric values become, checked command by
command (the values written out by hand, the key formats from the protocol's Keys). No Redis:
tests/client/test_instruments.py runs them against one."""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

from client._instruments import Drained
from client._metric_writes import MetricWrites
from client._slots import CommandList
from gatewayz_protocol.fields import (
    CONFLICTS_FIELD,
    SERIES_DROPPED_FIELD,
    TRUNCATED_FIELD,
    VALUES_REJECTED_FIELD,
)
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.specs import MetricSpec
from gatewayz_transport.scripts import FlaggedScript, ScriptCalls

KEYS = Keys("ns")
SCRIPT = cast(FlaggedScript, object())  # only passed through to the script calls
JOBS = MetricSpec("jobs", "counter", "Jobs", ("kind",))
DEPTH = MetricSpec("depth", "gauge", "Depth", (), combine="max")


class Scripts:
    """Stands in for ScriptCalls: keeps each queued call."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, list[str], list[Any]]] = []

    def queue(self, script: object, keys: list[str], args: list[Any]) -> int:
        self.calls.append((script, list(keys), list(args)))
        return -1


def drained(**values: Any) -> Drained:
    return Drained(
        deltas=values.get("deltas", []),
        gauges=values.get("gauges", []),
        specs=values.get("specs", []),
        dropped=values.get("dropped", {}),
        rejected=values.get("rejected", {}),
        exemplars=values.get("exemplars", []),
        truncated=values.get("truncated", {}),
        conflicts=values.get("conflicts", {}),
    )


def queue(what: Drained, offset: float = 0.0) -> tuple[list[Any], Scripts, Counter[str], Any]:
    writes = MetricWrites(KEYS, SCRIPT, retention=3600, max_series=50, gauge_ttl=30, writer_id="w1")
    plan, scripts, ops = CommandList(), Scripts(), Counter[str]()
    plan.execute_command("ZADD", "before")  # the provider events come first in a batch
    checks = writes.queue(plan, cast(ScriptCalls, scripts), what, offset, ops)
    return plan.commands[1:], scripts, ops, checks


def test_a_declaration_is_set_if_absent_then_read_back_to_compare() -> None:
    commands, scripts, ops, checks = queue(drained(specs=[JOBS, DEPTH]))
    jobs = (
        '{"buckets":[],"combine":"","help":"Jobs","kind":"counter","labelnames":["kind"],'
        '"name":"jobs"}'
    )
    depth = (
        '{"buckets":[],"combine":"max","help":"Depth","kind":"gauge","labelnames":[],'
        '"name":"depth"}'
    )
    assert commands == [
        ("HSETNX", "ns:{metrics}:schema", "jobs", jobs),
        ("HGET", "ns:{metrics}:schema", "jobs"),
        ("HSETNX", "ns:{metrics}:schema", "depth", depth),
        ("HGET", "ns:{metrics}:schema", "depth"),
        ("EXPIRE", "ns:{metrics}:schema", 3600),
    ]
    assert checks == [(2, "jobs", jobs), (4, "depth", depth)]  # the HGETs' reply indexes
    assert ops == {"hsetnx": 2, "hget": 2, "expire": 1}
    assert scripts.calls == []


def test_every_increment_goes_in_one_script_call_under_the_series_cap() -> None:
    deltas = [
        (JOBS, "s1", 2, [("i:s1", 3)]),
        (JOBS, "s2", 1, [("i:s2", 1), ("n:s2", 500)]),
        (MetricSpec("lat", "histogram", "Lat", (), (1.0,)), "s3", 1, [("b0:s3", 1)]),
    ]
    commands, scripts, ops, _ = queue(drained(deltas=deltas))
    assert commands == []
    assert scripts.calls == [
        (
            SCRIPT,
            [KEYS.metric_series("jobs"), KEYS.metric_data("jobs"),
             KEYS.metric_series("lat"), KEYS.metric_data("lat")],
            [50, 3600,
             2, "s1", 2, 1, "i:s1", 3, "s2", 1, 2, "i:s2", 1, "n:s2", 500,
             1, "s3", 1, 1, "b0:s3", 1],
        )
    ]  # fmt: skip
    assert ops == {"evalsha": 1}


def test_exemplars_and_the_updates_dropped_rejected_refused_or_truncated_are_written() -> None:
    # the exemplar's time on the client's (monotonic) clock, moved onto the shared one
    exemplar = ({"trace_id": "ab"}, 0.5, 1_000.25)
    commands, _, ops, _ = queue(
        drained(
            exemplars=[("lat", "s3", 2, exemplar), ("jobs", "s1", 0, exemplar)],
            dropped={"jobs": 4},
            rejected={"jobs": 1, "lat": 2},
            truncated={"calls": 3},
            conflicts={"lat": 5},
        ),
        offset=1_799_999_000.0,
    )
    assert commands == [
        ("HSET", KEYS.metric_exemplars("lat"), "2:s3",
         '{"l":{"trace_id":"ab"},"v":0.5,"t":1800000000.25}'),
        ("EXPIRE", KEYS.metric_exemplars("lat"), 3600),
        ("HSET", KEYS.metric_exemplars("jobs"), "0:s1",  # a counter's: bucket 0
         '{"l":{"trace_id":"ab"},"v":0.5,"t":1800000000.25}'),
        ("EXPIRE", KEYS.metric_exemplars("jobs"), 3600),
        ("HINCRBY", KEYS.metric_data("jobs"), SERIES_DROPPED_FIELD, 4),
        ("HINCRBY", KEYS.metric_data("jobs"), VALUES_REJECTED_FIELD, 1),
        ("HINCRBY", KEYS.metric_data("lat"), VALUES_REJECTED_FIELD, 2),
        ("HINCRBY", KEYS.metric_data("calls"), TRUNCATED_FIELD, 3),
        ("HINCRBY", KEYS.metric_data("lat"), CONFLICTS_FIELD, 5),
        # a metric only counted (never incremented) expires like one that is, and its admitted
        # series with its values: the set outliving them no longer, nor they the set
        ("EXPIRE", KEYS.metric_data("calls"), 3600),
        ("EXPIRE", KEYS.metric_series("calls"), 3600),
        ("EXPIRE", KEYS.metric_data("jobs"), 3600),
        ("EXPIRE", KEYS.metric_series("jobs"), 3600),
        ("EXPIRE", KEYS.metric_data("lat"), 3600),
        ("EXPIRE", KEYS.metric_series("lat"), 3600),
    ]  # fmt: skip
    assert ops == {"hset": 2, "expire": 8, "hincrby": 5}


def test_gauges_replace_this_writers_values_with_times_on_the_shared_clock() -> None:
    gauges = [("depth", "g1", 7.0, 1_800_000_000.0), ("depth", "g2", -1.5, 1_800_000_003.0)]
    commands, _, ops, _ = queue(drained(gauges=gauges), offset=2.5)
    values = KEYS.gauge_values("w1")
    assert commands == [
        ("DEL", values),
        (
            "HSET",
            values,
            "~max_series",
            50,  # the cap the aggregator applies across writers
            "depth|g1",
            "7.0|1800000002.5",
            "depth|g2",
            "-1.5|1800000005.5",
        ),
        ("EXPIRE", values, 30),
        ("ZADD", "ns:{metrics}:gauge_writers", 1_800_000_005.5, "w1"),
        ("EXPIRE", "ns:{metrics}:gauge_writers", 3600),
    ]
    assert ops == {"del": 1, "hset": 1, "expire": 2, "zadd": 1}

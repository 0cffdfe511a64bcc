"""The read of the workers' own metrics as a plan (aggregator/engine/backend_read.py): the
commands of both rounds and the reading hand-made replies make. Pure: no Redis."""

from __future__ import annotations

from aggregator.core.readings import BackendReading
from aggregator.engine.backend_read import BackendRead
from gatewayz_protocol.keys import Keys

KEYS = Keys("br")


def test_round_one_reads_specs_and_writers_and_prunes_only_when_asked() -> None:
    assert BackendRead(KEYS).first_round(None).commands == [
        ("HGETALL", KEYS.metric_schema),
        ("ZRANGE", KEYS.gauge_writers, 0, -1),
    ]
    assert BackendRead(KEYS).first_round(100.5).commands == [
        ("HGETALL", KEYS.metric_schema),
        ("ZREMRANGEBYSCORE", KEYS.gauge_writers, "-inf", "100.5"),
        ("ZRANGE", KEYS.gauge_writers, 0, -1),
    ]


def test_replies_become_the_reading_and_writers_without_values_expired() -> None:
    read = BackendRead(KEYS)
    read.first_round(None).decode(
        [[b"reqs", b'{"kind":"counter"}', b"inflight", b'{"kind":"gauge"}'], [b"w1", b"w2"]]
    )
    second = read.second_round()
    assert second.commands == [
        ("SMEMBERS", KEYS.metric_series("inflight")),
        ("HGETALL", KEYS.metric_data("inflight")),
        ("HGETALL", KEYS.metric_exemplars("inflight")),
        ("SMEMBERS", KEYS.metric_series("reqs")),
        ("HGETALL", KEYS.metric_data("reqs")),
        ("HGETALL", KEYS.metric_exemplars("reqs")),
        ("HGETALL", KEYS.gauge_values("w1")),
        ("HGETALL", KEYS.gauge_values("w2")),
    ]
    second.decode(
        [
            [],
            [],
            [],
            [b'["b"]', b'["a"]'],
            [b'i:["a"]', b"3"],
            [b'0:["a"]', b'{"l":{}}'],
            [b'inflight|["x"]', b"2.0|50.0"],
            [],  # w2's gauge hash expired: it is gone
        ]
    )
    assert read.reading() == BackendReading(
        schema={"reqs": '{"kind":"counter"}', "inflight": '{"kind":"gauge"}'},
        series={"inflight": [], "reqs": ['["a"]', '["b"]']},
        data={"inflight": {}, "reqs": {'i:["a"]': 3}},
        gauge_writers=[{'inflight|["x"]': "2.0|50.0"}],
        expired_writers=["w2"],
        exemplars={"inflight": {}, "reqs": {'0:["a"]': '{"l":{}}'}},
    )

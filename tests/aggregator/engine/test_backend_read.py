"""The read of the workers' own metrics as a plan (aggregator/engine/backend_read.py): the
commands of both rounds and the reading hand-made replies make. Pure: no Redis."""

from __future__ import annotations

from aggregator.core.readings import BackendReading, Skip
from aggregator.core.reuse import Reuse
from aggregator.engine.backend_read import MAX_GAUGE_WRITERS, BackendRead
from gatewayz_protocol.fields import encode_exemplar
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.specs import MetricSpec

KEYS = Keys("br")
REQS = MetricSpec("reqs", "counter", "Requests", ("route",)).to_json()
INFLIGHT = MetricSpec("inflight", "gauge", "In flight", combine="sum").to_json()
EXEMPLAR = encode_exemplar(({"trace_id": "ab"}, 0.5, 100.0))


def test_round_one_reads_specs_and_writers_and_prunes_only_when_asked() -> None:
    assert MAX_GAUGE_WRITERS == 10_000
    assert BackendRead(KEYS).first_round(None).commands == [
        ("HGETALL", KEYS.metric_schema),
        ("ZRANGE", KEYS.gauge_writers, 0, 9_999, "REV"),  # the latest to write gauges
        ("ZCARD", KEYS.gauge_writers),
    ]
    assert BackendRead(KEYS).first_round(100.5).commands == [
        ("HGETALL", KEYS.metric_schema),
        ("ZREMRANGEBYSCORE", KEYS.gauge_writers, "-inf", "100.5"),
        ("ZRANGE", KEYS.gauge_writers, 0, 9_999, "REV"),
        ("ZCARD", KEYS.gauge_writers),
    ]


def test_replies_become_the_reading_and_writers_without_values_expired() -> None:
    read = BackendRead(KEYS)
    read.first_round(None).decode(
        [[b"reqs", REQS.encode(), b"inflight", INFLIGHT.encode()], [b"w1", b"w2"], 2]
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
            [b'0:["a"]', EXEMPLAR.encode()],
            [b"inflight|[]", b"2.0|50.0"],
            [],  # w2's gauge hash expired: it is gone
        ]
    )
    assert read.reading() == BackendReading(
        schema={"reqs": REQS, "inflight": INFLIGHT},
        series={"inflight": [], "reqs": ['["a"]', '["b"]']},
        data={"inflight": {}, "reqs": {'i:["a"]': 3}},
        gauge_writers=[{"inflight|[]": "2.0|50.0"}],
        expired_writers=["w2"],
        exemplars={"inflight": {}, "reqs": {'0:["a"]': EXEMPLAR}},
    )
    assert read.skips.found == []


def test_declarations_series_and_exemplars_no_client_wrote_are_skipped_and_named() -> None:
    surrogate = '"\\ud800"'  # valid JSON, valid UTF-8 as stored: a text no encoder writes
    spoiled_help = REQS.replace('"Requests"', surrogate).replace('"reqs"', '"spoiled"')
    read = BackendRead(KEYS)
    read.first_round(None).decode(
        [
            [
                b"reqs", REQS.encode(),
                b"spoiled", spoiled_help.encode(),  # help text: a lone surrogate
                b"other", REQS.encode(),  # a declaration of reqs under another name
                b"broken", b'{"kind":"counter"}',
            ],
            [],
            0,
        ]
    )  # fmt: skip
    second = read.second_round()
    assert [c[1] for c in second.commands] == [
        KEYS.metric_series("reqs"),
        KEYS.metric_data("reqs"),
        KEYS.metric_exemplars("reqs"),
    ]
    lone = f"[{surrogate}]"
    second.decode(
        [
            [b'["a"]', lone.encode(), b'["a","b"]', b"["],
            [b'i:["a"]', b"3", f"i:{lone}".encode(), b"1000"],
            [
                b'0:["a"]', EXEMPLAR.encode(),
                b'1:["a"]', EXEMPLAR.replace('"ab"', surrogate).encode(),
                b'2:["a"]', b'{"l":{}}',
            ],
        ]
    )  # fmt: skip
    reading = read.reading()
    assert reading.schema == {"reqs": REQS}
    assert reading.series == {"reqs": ['["a"]']}
    assert reading.exemplars == {"reqs": {'0:["a"]': EXEMPLAR}}
    assert read.skips.found == [
        Skip("schema", KEYS.metric_schema, ("spoiled", "other", "broken")),
        Skip("metric series", KEYS.metric_series("reqs"), (lone, '["a","b"]', "[")),
        Skip("metric exemplars", KEYS.metric_exemplars("reqs"), ('1:["a"]', '2:["a"]')),
    ]


def test_a_gauge_hash_read_again_is_judged_again_under_a_changed_declaration() -> None:
    """A gauge hash whose reply is unchanged is reused only under the same schema: its series
    ids are judged by the declarations read with it."""
    labelled = MetricSpec("inflight", "gauge", "In flight", ("q",), combine="sum").to_json()
    decoded = Reuse()
    found = []
    for schema in (INFLIGHT, INFLIGHT, labelled):
        read = BackendRead(KEYS, decoded)
        read.first_round(None).decode([[b"inflight", schema.encode()], [b"w1"], 1])
        read.second_round().decode([[], [], [], [b"inflight|[]", b"2.0|50.0"]])
        found.append((read.reading().gauge_writers, read.skips.found))
        decoded.finish()
    skip = Skip("gauge values", KEYS.gauge_values("w1"), ("inflight|[]",))
    assert found == [
        ([{"inflight|[]": "2.0|50.0"}], []),
        ([{"inflight|[]": "2.0|50.0"}], []),
        ([], [skip]),
    ]


def test_at_most_max_families_metrics_and_the_latest_gauge_writers_are_read_the_rest_counted() -> (
    None
):
    # a metric named per model, a fleet recycling workers: any writer of {metrics} adds to both
    specs = {f"m{i:02}": MetricSpec(f"m{i:02}", "counter", "M").to_json() for i in range(12)}
    read = BackendRead(KEYS, max_families=10)
    flat = [part.encode() for pair in sorted(specs.items(), reverse=True) for part in pair]
    read.first_round(None).decode([flat, [b"w9", b"w8"], 10_003])
    second = read.second_round()
    names = [f"m{i:02}" for i in range(10)]  # the first by name: m10 and m11 are left out
    assert second.commands == [
        *[
            command
            for name in names
            for command in (
                ("SMEMBERS", KEYS.metric_series(name)),
                ("HGETALL", KEYS.metric_data(name)),
                ("HGETALL", KEYS.metric_exemplars(name)),
            )
        ],
        ("HGETALL", KEYS.gauge_values("w9")),
        ("HGETALL", KEYS.gauge_values("w8")),
    ]
    second.decode([*[[] for _ in range(30)], [], []])
    assert sorted(read.reading().schema) == names
    assert (read.families_over_cap, read.writers_over_cap) == (2, 10_001)
    assert read.skips.found == []  # left out, not malformed

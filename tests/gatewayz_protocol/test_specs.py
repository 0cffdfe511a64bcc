"""Backend metric declarations and series ids (gatewayz_protocol.specs): what a valid spec is,
its JSON as stored in ``{metrics}:schema``, and label values as one series id. Pure, no Redis."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayz_protocol.specs import (
    COMBINE_MODES,
    KINDS,
    MetricSpec,
    info_labels,
    info_series_id,
    process_series_problems,
    read_series,
    read_specs,
    series_id,
    series_labels,
)
from tests.support.strategies import increasing_bounds, property_settings


def test_the_kinds_and_combine_modes() -> None:
    assert KINDS == ("counter", "gauge", "histogram", "summary", "info")
    assert COMBINE_MODES == ("sum", "max", "min", "latest")


def test_valid_specs_of_each_kind() -> None:
    counter = MetricSpec("gatewayz_cache_hits_total", "counter", "Cache hits", ("provider",))
    assert (counter.buckets, counter.combine) == ((), "")
    gauge = MetricSpec("queue_depth", "gauge", "", combine="max")
    assert gauge.labelnames == ()
    histogram = MetricSpec("db_seconds", "histogram", "DB time", buckets=(0.01, 0.1, 1.0))
    assert histogram.buckets == (0.01, 0.1, 1.0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "1bad"}, "invalid metric name"),
        ({"name": "a-b"}, "invalid metric name"),
        ({"name": ""}, "invalid metric name"),
        ({"name": None}, "invalid metric name"),
        ({"kind": "timer"}, "unknown metric type"),
        ({"buckets": (1.0,)}, "only a histogram has buckets"),
        ({"kind": "summary", "buckets": (1.0,)}, "only a histogram has buckets"),
        ({"combine": "sum"}, "only a gauge has a combine mode"),
        ({"unit": "bytes"}, "invalid unit"),  # the name must end with it
        ({"name": "m_bytes", "unit": "by tes"}, "invalid unit"),
        ({"name": "m_bytes", "kind": "info", "unit": "bytes"}, "invalid unit"),
        ({"help": None}, "help must be a string"),
        ({"labelnames": ("le",)}, "invalid label name"),
        ({"labelnames": ("__name__",)}, "invalid label name"),
        ({"labelnames": ("a-b",)}, "invalid label name"),
        ({"labelnames": (5,)}, "invalid label name"),
        ({"labelnames": ("provider", "provider")}, "duplicate label names"),
    ],
)
def test_an_invalid_spec_is_a_value_error(fields: dict[str, object], message: str) -> None:
    spec: dict[str, object] = {"name": "m", "kind": "counter", "help": "h", **fields}
    with pytest.raises(ValueError, match=message):
        MetricSpec(**spec)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("buckets", "message"),
    [
        ((), "increasing and non-empty"),
        ((2.0, 1.0), "increasing and non-empty"),
        ((1.0, 1.0), "increasing and non-empty"),
        ((1.0, math.inf), "finite"),
        ((math.nan,), "finite"),
        ((-math.inf, 1.0), "finite"),
    ],
)
def test_histogram_buckets_must_be_finite_and_increasing(
    buckets: tuple[float, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        MetricSpec("h", "histogram", "", buckets=buckets)


@pytest.mark.parametrize("combine", ["", "avg", "SUM"])
def test_a_gauge_must_say_how_workers_values_combine(combine: str) -> None:
    with pytest.raises(ValueError, match="combine must be one of"):
        MetricSpec("g", "gauge", "", combine=combine)


def test_to_json_is_compact_with_sorted_keys() -> None:
    spec = MetricSpec(
        "gatewayz_db_seconds", "histogram", "DB time", ("provider", "model"), (0.1, 1.0)
    )
    assert spec.to_json() == (
        '{"buckets":[0.1,1.0],"combine":"","help":"DB time","kind":"histogram",'
        '"labelnames":["provider","model"],"name":"gatewayz_db_seconds"}'
    )


LABEL_NAMES = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_]{0,10}", fullmatch=True).filter(
    lambda name: name != "le"
)


@st.composite
def specs(draw: st.DrawFn) -> MetricSpec:
    kind = draw(st.sampled_from(KINDS))
    return MetricSpec(
        name=draw(st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,20}", fullmatch=True)),
        kind=kind,
        help=draw(st.text(max_size=30)),
        labelnames=tuple(draw(st.lists(LABEL_NAMES, max_size=4, unique=True))),
        buckets=draw(increasing_bounds()) if kind == "histogram" else (),
        combine=draw(st.sampled_from(COMBINE_MODES)) if kind == "gauge" else "",
    )


def test_a_unit_is_kept_in_json_only_when_there_is_one() -> None:
    spec = MetricSpec("sent_bytes", "counter", "Sent", unit="bytes")
    assert spec.to_json() == (
        '{"buckets":[],"combine":"","help":"Sent","kind":"counter","labelnames":[],'
        '"name":"sent_bytes","unit":"bytes"}'
    )
    assert MetricSpec.from_json(spec.to_json()) == spec
    assert "unit" not in MetricSpec("sent_bytes", "counter", "Sent").to_json()  # as before units


def test_compatible_declarations_differ_at_most_in_their_help() -> None:
    spec = MetricSpec("lat", "histogram", "Latency", ("route",), (1.0, 2.0))
    assert spec.compatible(MetricSpec("lat", "histogram", "Other help", ("route",), (1.0, 2.0)))
    for other in (
        MetricSpec("lat", "histogram", "Latency", ("route",), (1.0, 3.0)),
        MetricSpec("lat", "histogram", "Latency", ("path",), (1.0, 2.0)),
        MetricSpec("lat", "histogram", "Latency", (), (1.0, 2.0)),
        MetricSpec("lat", "summary", "Latency", ("route",)),
        MetricSpec("lat2", "histogram", "Latency", ("route",), (1.0, 2.0)),
    ):
        assert not spec.compatible(other) and not other.compatible(spec)
    gauge = MetricSpec("depth", "gauge", "", combine="max")
    assert not gauge.compatible(MetricSpec("depth", "gauge", "", combine="sum"))


def test_an_info_series_id_holds_its_labels_then_its_info_pairs() -> None:
    sid = info_series_id(["h1"], [("commit", "abc"), ("version", "1.2")])
    assert sid == '["h1","commit","abc","version","1.2"]'
    assert info_labels(sid, ("host",)) == (("h1",), {"commit": "abc", "version": "1.2"})
    assert info_labels(info_series_id([], [("v", "1")]), ()) == ((), {"v": "1"})


@pytest.mark.parametrize(
    ("sid", "labelnames"),
    [
        ('["h1","commit"]', ("host",)),  # an odd number of info items
        ('["h1"]', ("host", "zone")),
        ('["h1","host","x"]', ("host",)),  # an info label named like the metric's
        ('["a","1","a","2"]', ()),  # the same info label twice
        ('["bad-name","1"]', ()),
        ('["le","1"]', ()),
        ('["v",1]', ()),
        ('{"v":"1"}', ()),
        ("not json", ()),
        ('["\\ud800","1"]', ()),  # a lone surrogate, escaped: valid JSON, no encoder writes it
        ('["h1","v","\\udfff"]', ("host",)),
    ],
)
def test_an_info_series_id_no_client_wrote_is_none(sid: str, labelnames: tuple[str, ...]) -> None:
    assert info_labels(sid, labelnames) is None


@property_settings(300)
@given(spec=specs())
def test_a_spec_reads_back_from_its_json(spec: MetricSpec) -> None:
    assert MetricSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("not json", ValueError),
        ("[]", TypeError),
        ("null", TypeError),
        ("{}", KeyError),
        ('{"name":"m","kind":"counter","help":"h","labelnames":[],"buckets":[]}', KeyError),
        (
            '{"name":"m","kind":"counter","help":"h","labelnames":5,"buckets":[],"combine":""}',
            TypeError,
        ),
        (
            '{"name":"m","kind":"timer","help":"h","labelnames":[],"buckets":[],"combine":""}',
            ValueError,
        ),
        (
            '{"name":"m","kind":"gauge","help":"h","labelnames":[],"buckets":[],"combine":""}',
            ValueError,
        ),
    ],
)
def test_json_no_client_wrote_raises_one_of_the_documented_errors(
    text: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        MetricSpec.from_json(text)


def test_deeply_nested_json_raises_a_documented_error() -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        MetricSpec.from_json("[" * 100_000)


def test_a_series_id_is_its_label_values_as_a_json_array() -> None:
    assert series_id(["openrouter", "gpt 4o"]) == '["openrouter","gpt 4o"]'
    assert series_id(()) == "[]"
    assert series_id(["é", "日本"]) == '["é","日本"]'  # not escaped to \\u: shorter fields
    assert series_id(['say "hi"', "a\\b"]) == '["say \\"hi\\"","a\\\\b"]'


@property_settings(500)
@given(values=st.lists(st.text(), max_size=6))
def test_series_ids_read_back_to_their_label_values(values: list[str]) -> None:
    sid = series_id(values)
    assert json.loads(sid) == values  # by the JSON definition, independently
    assert series_labels(sid, len(values)) == tuple(values)
    assert series_labels(sid, len(values) + 1) is None


@pytest.mark.parametrize(
    ("sid", "expected"),
    [
        ('["a","b"]', 1),  # written under a declaration with another number of labels
        ('["a"]', 2),
        ("not json", 1),
        ("", 0),
        ('{"a":"b"}', 1),
        ('"a"', 1),
        ("1", 1),
        ("null", 0),
        ('["\\ud800"]', 1),  # a lone surrogate, escaped: valid JSON, no encoder writes it
        ('["a","x\\udc00"]', 2),
    ],
)
def test_a_series_id_no_client_wrote_is_none(sid: str, expected: int) -> None:
    assert series_labels(sid, expected) is None


def test_a_deeply_nested_series_id_is_none() -> None:
    assert series_labels("[" * 100_000, 1) is None


def test_a_help_text_no_encoder_writes_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="help must be a string"):
        MetricSpec("jobs", "counter", "Jobs \ud800")
    text = MetricSpec("jobs", "counter", "Jobs").to_json().replace('"Jobs"', '"Jobs\\ud800"')
    with pytest.raises(ValueError, match="help must be a string"):
        MetricSpec.from_json(text)


def test_declarations_no_client_wrote_are_named_and_the_rest_kept() -> None:
    jobs = MetricSpec("jobs", "counter", "Jobs", ("k",)).to_json()
    raw = {"jobs": jobs, "other": jobs, "broken": '{"kind":"counter"}', "nojson": "{"}
    assert read_specs(raw) == ({"jobs": jobs}, ["other", "broken", "nojson"])


def test_series_members_no_client_wrote_are_named_and_the_rest_sorted() -> None:
    counter = MetricSpec("jobs", "counter", "Jobs", ("k",))
    members = ['["b"]', '["\\ud800"]', '["a"]', '["a","b"]', "["]
    assert read_series(members, counter) == (['["a"]', '["b"]'], members[1:2] + members[3:])
    gauge = MetricSpec("depth", "gauge", "Depth", ("q",), combine="max")
    assert read_series(["x", '["a"]'], gauge) == (['["a"]', "x"], [])  # a gauge's set: unused


def test_process_series_problems_judge_each_field_by_its_declaration() -> None:
    gauge = MetricSpec("depth", "gauge", "Depth", ("q",), combine="sum").to_json()
    info = MetricSpec("build", "info", "Build", ("q",)).to_json()
    counter = MetricSpec("jobs_total", "counter", "Jobs", ("k",)).to_json()
    schema = {"depth": gauge, "build": info, "jobs_total": counter}
    fields = [
        'depth|["a"]',
        'depth|["a","b"]',
        "depth|x",
        'depth|["\\ud800"]',
        'build|["a","version","1"]',
        'build|["a","q","1"]',
        'build|["a","version"]',
        'jobs_total|["a","b"]',  # not a gauge or info: never served, not judged
        'undeclared|["a","b"]',
    ]
    assert process_series_problems(fields, schema) == [
        'depth|["a","b"]',
        "depth|x",
        'depth|["\\ud800"]',
        'build|["a","q","1"]',
        'build|["a","version"]',
    ]

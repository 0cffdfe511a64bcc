"""Hash fields and their codecs (gatewayz_protocol.fields): a provider's totals, the clients'
stats, writers' clock offsets, exemplars, backend metric values and gauges. Every expected value
is worked by hand. Pure, no Redis."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayz_protocol.fields import (
    BREAKER_REJECTED_FIELD,
    COST_FIELD,
    COUNT_FIELDS,
    HISTOGRAM_FIELDS,
    LATENCY_SUM_FIELD,
    NANO,
    SERIES_DROPPED_FIELD,
    TOKENS_FIELD,
    VALUES_REJECTED_FIELD,
    ProviderTotals,
    bucket_field,
    clock_offset_value,
    decode_client_stats,
    decode_clock_offsets,
    decode_exemplar,
    decode_gauges,
    decode_totals,
    dropped_field,
    encode_exemplar,
    encode_totals,
    exemplar_field,
    exemplar_labels_ok,
    gauge_field,
    gauge_value,
    histogram_bounds_ok,
    int_field,
    int_fields,
    join_amount,
    nano_field,
    read_clock_offsets,
    rejected_field,
    series_buckets,
    series_value,
    split_amount,
    text_fields,
)
from gatewayz_protocol.partitions import (
    CALLER_ERROR,
    CANCELLED,
    EXTRA_HISTOGRAM_BOUNDS,
    FAILURE,
    HISTOGRAM_BOUNDS,
    LATENCY_PARTITIONS,
    OUTCOMES,
    RATE_LIMITED,
    SUCCESS,
    USAGE,
    WINDOW_BOUNDS,
)
from gatewayz_protocol.scripts import INSTRUMENTS
from tests.support.strategies import property_settings

# -- a provider's totals -----------------------------------------------------------------------


def test_the_totals_field_names() -> None:
    assert COUNT_FIELDS == ("n:success", "n:failure", "n:rate_limited", "n:caller_error")
    assert HISTOGRAM_FIELDS == ("b:0.1", "b:0.5", "b:1", "b:2", "b:5", "b:10", "b:+Inf")
    assert (LATENCY_SUM_FIELD, COST_FIELD, TOKENS_FIELD, BREAKER_REJECTED_FIELD) == (
        "lat_us",
        "cost_nusd",
        "tokens",
        "breaker_rejected",
    )


def test_encode_totals_counts_each_outcome_and_its_histogram_bucket() -> None:
    # latency partition -> its window bound -> the first histogram bound at or above it:
    # 0 (0.05 s) -> b:0.1, 1 (0.1 s) -> b:0.1, 5 (1 s) -> b:1, 6 (1.5 s) -> b:2,
    # 12 (6 s) -> b:10, 20 (above 60 s) -> b:+Inf
    tally = {
        (SUCCESS, 0): 3,
        (SUCCESS, 5): 2,
        (SUCCESS, 6): 1,
        (FAILURE, 20): 4,
        (RATE_LIMITED, 1): 1,
        (CALLER_ERROR, 12): 2,
    }
    assert encode_totals(tally, latency_sum_s=1.2345674, tokens=1500, cost_nusd=2500) == {
        "n:success": 6,
        "n:failure": 4,
        "n:rate_limited": 1,
        "n:caller_error": 2,
        "b:0.1": 4,
        "b:1": 2,
        "b:2": 1,
        "b:10": 2,
        "b:+Inf": 4,
        "lat_us": 1_234_567,
        "tokens": 1500,
        "cost_nusd": 2500,
    }


def test_encode_totals_leaves_out_zero_tokens_and_cost_but_not_the_latency_sum() -> None:
    assert encode_totals({}, latency_sum_s=0.0, tokens=0, cost_nusd=0) == {"lat_us": 0}
    assert encode_totals({(SUCCESS, 3): 1}, 0.5, 0, 0) == {
        "n:success": 1,
        "b:0.5": 1,
        "lat_us": 500_000,
    }


def test_cancelled_calls_and_added_usage_count_outside_the_histogram() -> None:
    # a cancelled call: counted in "cancelled" only; usage added later: in no count at all; the
    # tokens and cost of both add up like any event's
    tally = {(SUCCESS, 3): 1, (CANCELLED, 0): 2, (USAGE, 0): 5}
    assert encode_totals(tally, 0.5, tokens=700, cost_nusd=90) == {
        "n:success": 1,
        "b:0.5": 1,
        "cancelled": 2,
        "lat_us": 500_000,
        "tokens": 700,
        "cost_nusd": 90,
    }
    decoded = decode_totals({"n:success": 1, "b:0.5": 1, "cancelled": 2})
    assert decoded.cancelled == 2
    assert sum(decoded.requests.values()) == decoded.histogram_cumulative[-1] == 1


def test_decode_totals_makes_the_histogram_cumulative() -> None:
    raw = {
        "n:success": 6,
        "n:failure": 4,
        "n:caller_error": 2,
        "b:0.1": 4,
        "b:1": 2,
        "b:2": 1,
        "b:10": 2,
        "b:+Inf": 4,
        "lat_us": 2_500_000,
        "cost_nusd": 1_500_000_000,
        "tokens": 77,
        "breaker_rejected": 9,
        "unknown": 1000,
    }
    assert decode_totals(raw) == ProviderTotals(
        requests={"success": 6, "failure": 4, "rate_limited": 0, "caller_error": 2},
        histogram_cumulative=(4, 4, 6, 7, 7, 9, 13),
        latency_sum_seconds=2.5,
        cost_usd=1.5,
        tokens=77,
        breaker_rejected=9,
    )


def test_decode_totals_of_an_empty_hash_is_all_zero() -> None:
    assert decode_totals({}) == ProviderTotals(
        requests={"success": 0, "failure": 0, "rate_limited": 0, "caller_error": 0},
        histogram_cumulative=(0, 0, 0, 0, 0, 0, 0),
        latency_sum_seconds=0.0,
        cost_usd=0.0,
        tokens=0,
        breaker_rejected=0,
    )


def test_calls_above_10_s_are_also_counted_in_their_band() -> None:
    tally = {
        (SUCCESS, WINDOW_BOUNDS.index(10.0)): 1,  # (9, 10]: b:10 only
        (SUCCESS, WINDOW_BOUNDS.index(15.0)): 2,  # (10, 15]
        (FAILURE, WINDOW_BOUNDS.index(30.0)): 3,  # (15, 30]
        (SUCCESS, WINDOW_BOUNDS.index(60.0)): 4,  # (30, 60]
        (SUCCESS, len(WINDOW_BOUNDS)): 5,  # above 60 s: b:+Inf only
    }
    assert encode_totals(tally, 0.0, 0, 0) == {
        "n:success": 12,
        "n:failure": 3,
        "b:10": 1,
        "b:+Inf": 14,
        "b:15": 2,
        "b:30": 3,
        "b:60": 4,
        "lat_us": 0,
    }


def test_decode_totals_counts_extra_bounds_from_the_bands() -> None:
    raw = {"b:0.1": 1, "b:10": 2, "b:+Inf": 14, "b:15": 2, "b:30": 3, "b:60": 4}
    # seed buckets as before (the bands are not read); 30: 3 + 2 + 3; 60: 8 + 4; +Inf: 1 + 2 + 14
    assert decode_totals(raw).histogram_cumulative == (1, 1, 1, 1, 1, 3, 17)
    every = (*HISTOGRAM_BOUNDS, 15.0, 30.0, 60.0)
    assert decode_totals(raw, every).histogram_cumulative == (1, 1, 1, 1, 1, 3, 5, 8, 12, 17)
    assert decode_totals(raw, (*HISTOGRAM_BOUNDS, 30.0)).histogram_cumulative == (
        1, 1, 1, 1, 1, 3, 8, 17,
    )  # fmt: skip


def test_calls_above_10_s_without_bands_count_above_60_s() -> None:
    """Counted before clients wrote bands: known only to be above 10 s, so in +Inf alone."""
    raw = {"b:10": 2, "b:+Inf": 5}
    assert decode_totals(raw, (*HISTOGRAM_BOUNDS, 15.0)).histogram_cumulative[-3:] == (2, 2, 7)


def test_bands_that_hold_more_than_b_inf_keep_the_histogram_cumulative() -> None:
    raw = {"b:10": 2, "b:+Inf": 1, "b:15": 5, "b:60": 9}  # not a client's: bands > b:+Inf
    assert decode_totals(raw, (*HISTOGRAM_BOUNDS, 15.0, 60.0)).histogram_cumulative[-4:] == (
        2, 3, 3, 3,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("bounds", "ok"),
    [
        (HISTOGRAM_BOUNDS, True),
        ((*HISTOGRAM_BOUNDS, 15.0, 60.0), True),
        ((*HISTOGRAM_BOUNDS, 60.0), True),
        ((*HISTOGRAM_BOUNDS, 20.0), False),  # not a window bound
        ((*HISTOGRAM_BOUNDS, 60.0, 15.0), False),
        ((*HISTOGRAM_BOUNDS, 15.0, 15.0), False),
        (HISTOGRAM_BOUNDS[1:], False),  # a seed bound left out
        ((0.05, *HISTOGRAM_BOUNDS), False),
        ((), False),
    ],
)
def test_histogram_bounds_ok(bounds: tuple[float, ...], ok: bool) -> None:
    assert histogram_bounds_ok(bounds) is ok


def _bucket_by_hand(partition: int, bounds: tuple[float, ...] = HISTOGRAM_BOUNDS) -> int:
    """The histogram bucket of a latency partition: the first histogram bound at or above its
    window bound, else +Inf (index ``len(bounds)``)."""
    if partition == len(WINDOW_BOUNDS):
        return len(bounds)
    bound = WINDOW_BOUNDS[partition]
    above = [i for i, upper in enumerate(bounds) if upper >= bound]
    return above[0] if above else len(bounds)


TALLIES = st.dictionaries(
    st.tuples(st.integers(0, len(OUTCOMES) - 1), st.integers(0, LATENCY_PARTITIONS - 1)),
    st.integers(1, 10**9),
    max_size=40,
)


@property_settings(300)
@given(
    tally=TALLIES,
    latency_us=st.integers(0, 10**12),
    extra=st.sets(st.sampled_from(EXTRA_HISTOGRAM_BOUNDS)).map(sorted),
)
def test_totals_decode_to_the_counts_encoded(
    tally: dict[tuple[int, int], int], latency_us: int, extra: list[float]
) -> None:
    bounds = (*HISTOGRAM_BOUNDS, *extra)
    encoded = encode_totals(tally, latency_us / 1e6, tokens=0, cost_nusd=0)
    totals = decode_totals(encoded, bounds)
    by_outcome = dict.fromkeys(OUTCOMES, 0)
    per_bucket = [0] * (len(bounds) + 1)
    for (outcome, partition), count in tally.items():
        by_outcome[OUTCOMES[outcome]] += count
        per_bucket[_bucket_by_hand(partition, bounds)] += count
    assert totals.requests == by_outcome
    assert totals.histogram_cumulative == tuple(
        sum(per_bucket[: i + 1]) for i in range(len(per_bucket))
    )
    assert totals.histogram_cumulative[-1] == sum(tally.values())
    assert totals.latency_sum_seconds == pytest.approx(latency_us / 1e6, abs=1e-6)


# -- the clients' stats ------------------------------------------------------------------------


def test_cause_fields() -> None:
    assert rejected_field("invalid_provider") == "rejected:invalid_provider"
    assert dropped_field("buffer_full") == "dropped:buffer_full"


def test_client_stats_split_into_rejected_and_dropped_by_cause() -> None:
    raw = {
        "rejected:invalid_provider": 3,
        "rejected:too_many_providers": 1,
        "dropped:buffer_full": 5,
        "dropped:redis_down": 2,
        "dropped": 7,  # an older client's drops: all buffer evictions
        "log_records_dropped": 9,
        "something_else": 4,
    }
    assert decode_client_stats(raw) == (
        {"invalid_provider": 3, "too_many_providers": 1},
        {"buffer_full": 12, "redis_down": 2},
    )
    assert decode_client_stats({"dropped": 7}) == ({}, {"buffer_full": 7})
    assert decode_client_stats({}) == ({}, {})


# -- writers' clocks ---------------------------------------------------------------------------


def test_a_clock_offset_value() -> None:
    assert clock_offset_value(-0.125, 1_800_000_000.5) == "-0.125|1800000000.5"


def test_clock_offsets_no_client_wrote_are_skipped() -> None:
    raw = {
        "host-a:12": "0.5|100.25",
        "host-b:7": "-2|3",
        "garbage": "x|1",
        "no-pipe": "1.5",
        "empty": "",
        "half": "1|",
    }
    assert decode_clock_offsets(raw) == {"host-a:12": (0.5, 100.25), "host-b:7": (-2.0, 3.0)}


FINITE = st.floats(allow_nan=False, allow_infinity=False)


@property_settings(300)
@given(offset=FINITE, measured_at=FINITE)
def test_clock_offsets_round_trip(offset: float, measured_at: float) -> None:
    raw = {"w": clock_offset_value(offset, measured_at)}
    assert decode_clock_offsets(raw) == {"w": (offset, measured_at)}


# -- exemplars ---------------------------------------------------------------------------------


def test_an_exemplar_is_compact_json() -> None:
    exemplar = ({"trace_id": "0af7651916cd43dd8448eb211c80319c"}, 0.25, 1_800_000_000.5)
    assert encode_exemplar(exemplar) == (
        '{"l":{"trace_id":"0af7651916cd43dd8448eb211c80319c"},"v":0.25,"t":1800000000.5}'
    )


LABEL_NAMES = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,15}", fullmatch=True)


@property_settings(300)
@given(
    labels=st.dictionaries(LABEL_NAMES, st.text(max_size=20), max_size=4),
    value=FINITE,
    at=FINITE,
)
def test_exemplars_round_trip(labels: dict[str, str], value: float, at: float) -> None:
    expected = (labels, value, at)
    # what OpenMetrics takes round-trips: 128 characters of names and values at most
    fits = sum(len(k) + len(v) for k, v in labels.items()) <= 128
    assert decode_exemplar(encode_exemplar(expected)) == (expected if fits else None)


@pytest.mark.parametrize(
    "labels",
    [{"trace id": "a"}, {"1trace": "a"}, {"": "a"}, {"t-id": "a"}, {"t": "x" * 128}, {"é": "a"}],
)
def test_an_exemplar_openmetrics_would_refuse_decodes_to_none(labels: dict[str, str]) -> None:
    assert not exemplar_labels_ok(labels)
    assert decode_exemplar(encode_exemplar((labels, 1.0, 2.0))) is None
    assert exemplar_labels_ok({"trace_id": "x" * 120})  # 8 + 120 = 128: the bound itself


def test_label_values_decode_as_text() -> None:
    assert decode_exemplar('{"l":{"a":1,"b":"x"},"v":2,"t":3}') == ({"a": "1", "b": "x"}, 2.0, 3.0)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not json",
        "[]",
        "{}",
        "null",
        '"text"',
        "17",
        '{"l":[],"v":1,"t":2}',
        '{"l":null,"v":1,"t":2}',
        '{"l":{},"v":"x","t":2}',
        '{"l":{},"v":null,"t":2}',
        '{"l":{},"v":1}',
        '{"v":1,"t":2}',
    ],
)
def test_an_exemplar_no_client_wrote_is_none(raw: str) -> None:
    assert decode_exemplar(raw) is None


def test_an_exemplar_whose_label_value_no_encoder_writes_is_none() -> None:
    # a lone surrogate, escaped: valid JSON and valid UTF-8 as Redis holds it
    assert decode_exemplar('{"l":{"trace_id":"\\ud800"},"v":0.5,"t":1.0}') is None
    assert not exemplar_labels_ok({"trace_id": "ab\udfff"})
    assert decode_exemplar('{"l":{"trace_id":"\\ud83d\\ude00"},"v":0.5,"t":1.0}') == (
        {"trace_id": "\U0001f600"},  # a pair is one character
        0.5,
        1.0,
    )


def test_a_deeply_nested_exemplar_is_none() -> None:
    assert decode_exemplar("[" * 100_000) is None


def test_exemplar_fields() -> None:
    assert exemplar_field(3) == "3"
    assert exemplar_field(0, "") == "0"
    assert exemplar_field(3, '["openrouter"]') == '3:["openrouter"]'


# -- backend metric values ---------------------------------------------------------------------


def test_value_fields() -> None:
    assert NANO == 1_000_000_000
    assert int_field('["a"]') == 'i:["a"]'
    assert nano_field('["a"]') == 'n:["a"]'
    assert bucket_field(2, '["a"]') == 'b2:["a"]'
    assert (SERIES_DROPPED_FIELD, VALUES_REJECTED_FIELD) == ("!dropped", "!rejected")


def test_the_instruments_script_relies_on_the_same_prefixes() -> None:
    assert nano_field("s")[:2] == "n:" and int_field("s") == "i:s"
    assert "string.sub(name, 1, 2) == 'n:'" in INSTRUMENTS  # nano-units carried ...
    assert "'i:' .. string.sub(name, 3)" in INSTRUMENTS  # ... into the integer part
    assert "1000000000" in INSTRUMENTS and NANO == 1000000000
    assert f"'{SERIES_DROPPED_FIELD}'" in INSTRUMENTS


@pytest.mark.parametrize(
    ("amount", "parts"),
    [
        (5, (5, 0)),
        (0, (0, 0)),
        (10**18, (10**18, 0)),
        (7.0, (7, 0)),
        (2.5, (2, 500_000_000)),
        (0.1, (0, 100_000_000)),
        (1e-9, (0, 1)),
        (1e-10, (0, 0)),
        (3.000000002, (3, 2)),
    ],
)
def test_split_amount_is_the_integer_part_and_nano_units(
    amount: float, parts: tuple[int, int]
) -> None:
    assert split_amount(amount) == parts
    assert all(type(part) is int for part in split_amount(amount))


@pytest.mark.parametrize(
    ("ints", "nanos", "value"),
    [(0, 0, 0.0), (2, 0, 2.0), (0, 999_999_999, 0.999999999), (3, 2_500_000_000, 5.5)],
)
def test_join_amount_carries_whole_units_out_of_the_nano_units(
    ints: int, nanos: int, value: float
) -> None:
    assert join_amount(ints, nanos) == value
    assert type(join_amount(ints, nanos)) is float


def test_nano_units_keep_sums_exact_where_floats_do_not() -> None:
    assert sum([0.1] * 10) != 1.0
    ints, nanos = split_amount(0.1)
    assert join_amount(10 * ints, 10 * nanos) == 1.0


@property_settings(500)
@given(amount=st.floats(0, 1e6))
def test_split_then_join_is_the_amount_to_a_nano_unit(amount: float) -> None:
    ints, nanos = split_amount(amount)
    assert ints == math.floor(amount)
    assert 0 <= nanos <= NANO
    assert abs(join_amount(ints, nanos) - amount) <= 1e-9


def test_series_value_joins_the_series_fields() -> None:
    data = {'i:["a"]': 3, 'n:["a"]': 1_250_000_000, 'i:["b"]': 9}
    assert series_value(data, '["a"]') == 4.25
    assert series_value(data, '["b"]') == 9.0
    assert series_value(data, '["c"]') == 0.0


def test_series_buckets_are_cumulative_over_the_bounds_then_inf() -> None:
    data = {'b0:["a"]': 1, 'b2:["a"]': 4, 'b3:["a"]': 2, 'b1:["x"]': 100}
    assert series_buckets(data, '["a"]', 3) == (1, 1, 5, 7)
    assert series_buckets(data, '["a"]', 0) == (1,)
    assert series_buckets(data, '["none"]', 2) == (0, 0, 0)


# -- gauges ------------------------------------------------------------------------------------


def test_gauge_field_and_value() -> None:
    assert gauge_field("queue_depth", '["a"]') == 'queue_depth|["a"]'
    assert gauge_value(2.5, 1_800_000_000.25) == "2.5|1800000000.25"


def test_decode_gauges_reads_one_metric_only() -> None:
    values = {
        'm|["a"]': "2.5|100.25",
        'm|["b"]': "-1.0|",
        'mm|["c"]': "9|9",  # another metric whose name starts with m
        'x|["d"]': "1|1",
    }
    assert sorted(decode_gauges(values, "m")) == [('["a"]', 2.5, 100.25), ('["b"]', -1.0, 0.0)]
    assert list(decode_gauges(values, "mm")) == [('["c"]', 9.0, 9.0)]
    assert list(decode_gauges({}, "m")) == []


@property_settings(300)
@given(value=FINITE, at=FINITE, labels=st.lists(st.text(), max_size=3))
def test_gauges_round_trip(value: float, at: float, labels: list[str]) -> None:
    sid = json.dumps(labels)
    decoded = list(decode_gauges({gauge_field("g", sid): gauge_value(value, at)}, "g"))
    assert decoded == [(sid, value, at)]


def test_integer_hashes_keep_what_is_one_and_name_the_rest() -> None:

    raw = {
        b"n:success": b"12",
        b"neg": b"-3",
        b"x": b"notanint",
        b"huge": str(2**63).encode(),
        b"\xff": b"1",
        b"f": b"1.5",
    }
    # a negative count: no writer decrements one, and an exposition refuses it
    assert int_fields(raw) == ({"n:success": 12}, ["neg", "x", "huge", "\ufffd", "f"])


def test_text_hashes_keep_utf8_and_name_the_rest() -> None:

    raw = {b"a": "é".encode(), b"b": b"\xff", b"\xfe": b"v"}
    assert text_fields(raw) == ({"a": "é"}, ["b", "\ufffd"])


def test_clock_offsets_that_are_not_two_finite_numbers_are_named() -> None:

    raw = {"a:1": "0.5|100.0", "b:2": "x|1", "c:3": "nan|1", "d:4": "1"}
    assert read_clock_offsets(raw) == ({"a:1": (0.5, 100.0)}, ["b:2", "c:3", "d:4"])

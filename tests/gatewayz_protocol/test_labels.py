"""Bounded label values (gatewayz_protocol/labels.py): a value within the bound is itself, a
longer one its start cut between characters, ``~`` and 16 hex digits of its hash, exactly at
most the bound in UTF-8 bytes, distinct values distinct. Pure."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayz_protocol.labels import (
    DEFAULT_MAX_LABEL_VALUE_BYTES,
    MIN_MAX_LABEL_VALUE_BYTES,
    bounded_label_value,
)
from gatewayz_protocol.options import MAX_LABEL_VALUE_BYTES
from tests.support.strategies import property_settings


def test_a_value_within_the_bound_is_itself() -> None:
    value = "a" * 256
    assert bounded_label_value(value, 256) is value
    accented = "é" * 128  # 256 bytes
    assert bounded_label_value(accented, 256) is accented


def test_a_longer_value_is_its_start_and_a_hash_of_the_whole() -> None:
    value = "anthropic/claude-" + "x" * 16_000
    digest = hashlib.blake2b(value.encode(), digest_size=8).hexdigest()
    assert bounded_label_value(value, 64) == value[:47] + "~" + digest
    # a character never cut in two: 'é' is two bytes, 47 bytes of them hold 23
    assert (
        bounded_label_value("é" * 100, 64)
        == "é" * 23 + "~" + hashlib.blake2b(("é" * 100).encode(), digest_size=8).hexdigest()
    )


@property_settings(200)
@given(st.text(min_size=1), st.text(min_size=1), st.integers(MIN_MAX_LABEL_VALUE_BYTES, 300))
def test_bounded_values_fit_and_stay_distinct(a: str, b: str, limit: int) -> None:
    a, b = a.encode("utf-8", "replace").decode(), b.encode("utf-8", "replace").decode()
    first, second = bounded_label_value(a * 50, limit), bounded_label_value(b * 50, limit)
    assert len(first.encode()) <= limit and len(second.encode()) <= limit
    assert (first == second) == (a * 50 == b * 50)


def test_the_bound_is_checked() -> None:
    assert DEFAULT_MAX_LABEL_VALUE_BYTES == 256
    bounds = MAX_LABEL_VALUE_BYTES.bounds  # held by both settings objects
    assert bounds is not None and bounds.low == 34 == MIN_MAX_LABEL_VALUE_BYTES
    bounds.check("max_label_value_bytes", 34)
    for bad in (33, 0, -1, 256.0, "256", True):
        with pytest.raises(ValueError, match="max_label_value_bytes"):
            bounds.check("max_label_value_bytes", bad)

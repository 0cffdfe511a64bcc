"""Text another writer left (gatewayz_protocol.text): what a decoder of foreign data takes as
text. Pure, no Redis."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayz_protocol.text import is_text
from tests.support.strategies import property_settings


@pytest.mark.parametrize("value", ["", "a", "é", "日本", "\U0001f600", "\x00", "\ufffd"])
def test_text_every_encoder_writes_is_text(value: str) -> None:
    assert is_text(value) is True


@pytest.mark.parametrize(
    "value",
    [
        json.loads('"\\ud800"'),  # a lone high surrogate, as JSON escapes it
        json.loads('"a\\udfff"'),  # a lone low one, after text
        json.loads('"\\udc00\\ud800"'),  # two, in the wrong order: no pair
        None,
        1,
        b"bytes",
        ["a"],
    ],
)
def test_a_lone_surrogate_or_what_is_no_str_is_not(value: object) -> None:
    assert is_text(value) is False


def test_a_surrogate_pair_escaped_in_json_is_one_character_and_text() -> None:
    assert is_text(json.loads('"\\ud83d\\ude00"')) is True


@property_settings(300)
@given(value=st.text(alphabet=st.sampled_from(["a", "é", "\ud800", "\udc00", "\U0001f600"])))
def test_is_text_says_whether_utf8_encodes_it(value: str) -> None:
    try:
        value.encode("utf-8")
        expected = True
    except UnicodeEncodeError:
        expected = False
    assert is_text(value) is expected

"""What may be a name (gatewayz_protocol.names): providers, namespaces, backend metrics and their
labels. Pure, no Redis."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayz_protocol.names import (
    METRIC_NAME_RE,
    check_namespace,
    is_valid_label_name,
    is_valid_provider,
)
from tests.support.strategies import property_settings


@pytest.mark.parametrize(
    "name",
    ["openrouter", "google-vertex", "fireworks.ai", "a", "A9_b", "7up", "a" * 64],
)
def test_valid_provider_names(name: str) -> None:
    assert is_valid_provider(name) is True


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a" * 65,
        "open}router",
        "open{router",
        "{openrouter}",
        "open:router",
        "open*",
        "open router",
        "openrouter\n",
        "\nopenrouter",
        "opénrouter",
        "-openrouter",
        ".openrouter",
        "_openrouter",
        5,
        None,
        b"x",
        ["openrouter"],
    ],
)
def test_invalid_provider_names(name: object) -> None:
    assert is_valid_provider(name) is False


_FIRST = string.ascii_letters + string.digits
_REST = _FIRST + "._-"


def _valid_by_hand(name: str) -> bool:
    """1-64 characters of ASCII letters, digits, ``.``, ``_``, ``-``, starting with a letter or
    a digit (the docstring's rule, character by character)."""
    return 1 <= len(name) <= 64 and name[0] in _FIRST and all(c in _REST for c in name)


NAMES = st.one_of(
    st.text(alphabet=_REST + ":{}* \n\té/", max_size=70),
    st.text(alphabet=_FIRST, min_size=60, max_size=68),
    st.text(max_size=10),
)


@property_settings(300)
@given(name=NAMES)
def test_provider_names_and_namespaces_follow_the_same_rule(name: str) -> None:
    valid = _valid_by_hand(name)
    assert is_valid_provider(name) is valid
    if valid:
        assert check_namespace(name) == name
    else:
        with pytest.raises(ValueError, match="invalid namespace"):
            check_namespace(name)


@pytest.mark.parametrize("namespace", [None, 5, b"gatewayz", ["gatewayz"]])
def test_a_namespace_that_is_not_text_is_refused(namespace: object) -> None:
    with pytest.raises(ValueError, match="invalid namespace"):
        check_namespace(namespace)


@pytest.mark.parametrize("name", ["a", "_", "_a", "a_1", "provider", "LE", "le_bound", "Le"])
def test_valid_label_names(name: str) -> None:
    assert is_valid_label_name(name) is True


@pytest.mark.parametrize(
    "name", ["", "1a", "a-b", "a.b", "a b", "a:b", "é", "a\n", "le", "__name__", "__x", "__"]
)
def test_invalid_label_names(name: str) -> None:
    # "le" is the histogram bucket label, names starting "__" are reserved by Prometheus
    assert is_valid_label_name(name) is False


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("gatewayz_requests_total", True),
        ("a", True),
        ("_x", True),
        (":x", True),
        ("a:b_c", True),
        ("A1", True),
        ("", False),
        ("1a", False),
        ("a-b", False),
        ("a b", False),
        ("a.b", False),
        ("a\n", False),
    ],
)
def test_metric_names(name: str, valid: bool) -> None:
    assert (METRIC_NAME_RE.fullmatch(name) is not None) is valid

"""The option type and how a value is read (gatewayz_protocol/options.py): one prefix, the old
names read for one release with a FutureWarning told once per process, the new name winning
over the old one, one-line errors naming the variable (tests/test_configuration.py holds every
table of the project to these rules). Pure: mappings stand in for the environment."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatewayz_protocol import options
from gatewayz_protocol.options import (
    CLIENT,
    SHARED,
    TELEMETRY,
    Option,
    boolean,
    forget_notices,
    integer,
    lookup,
    names,
    number,
    numbers,
    read,
    read_all,
    text,
)

ROOT = Path(__file__).resolve().parents[2]
WINDOW = options.WINDOW_SECONDS


@pytest.fixture(autouse=True)
def fresh_notices() -> Iterator[None]:
    forget_notices()
    yield
    forget_notices()


def _read_telling(option: Option[Any], env: dict[str, str]) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = read(option, env)
    return value, [f"{w.category.__name__}: {w.message}" for w in caught]


def test_the_new_name_is_read_without_a_word() -> None:
    assert _read_telling(WINDOW, {"GATEWAYZ_WINDOW_SECONDS": "120"}) == (120.0, [])


def test_an_old_name_alone_is_used_and_told_once_naming_the_new_one() -> None:
    value, told = _read_telling(WINDOW, {"WINDOW_SECONDS": "120"})
    assert value == 120.0
    assert told == [
        "FutureWarning: WINDOW_SECONDS is deprecated and no longer read from the next release: "
        "set GATEWAYZ_WINDOW_SECONDS instead (its value is used meanwhile)."
    ]
    assert _read_telling(WINDOW, {"WINDOW_SECONDS": "60"}) == (60.0, [])  # once per process


def test_with_both_names_set_the_new_one_wins_and_says_so_once() -> None:
    env = {"GATEWAYZ_WINDOW_SECONDS": "120", "WINDOW_SECONDS": "60"}
    value, told = _read_telling(WINDOW, env)
    assert value == 120.0
    assert told == [
        "FutureWarning: WINDOW_SECONDS is ignored: GATEWAYZ_WINDOW_SECONDS is set and wins. "
        "WINDOW_SECONDS is deprecated and no longer read from the next release: remove it."
    ]
    assert _read_telling(WINDOW, env) == (120.0, [])


def test_an_old_name_set_empty_is_unset_and_says_nothing() -> None:
    assert _read_telling(WINDOW, {"WINDOW_SECONDS": " ", "GATEWAYZ_WINDOW_SECONDS": ""}) == (
        None,
        [],
    )


def test_the_warning_is_shown_by_default_in_a_fresh_process() -> None:
    """A FutureWarning reaches stderr without any -W flag (a DeprecationWarning raised in a
    library would not), once although the settings are read twice."""
    code = (
        "from gatewayz_protocol.options import SHARED, read_all\n"
        "read_all(SHARED, {'METRICS_NAMESPACE': 'old'})\n"
        "read_all(SHARED, {'METRICS_NAMESPACE': 'old'})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stderr.count("FutureWarning: METRICS_NAMESPACE is deprecated") == 1
    assert "set GATEWAYZ_NAMESPACE instead" in done.stderr


def test_lookup_names_the_variable_the_value_came_from() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert lookup(WINDOW, {"WINDOW_SECONDS": " 7 "}) == ("WINDOW_SECONDS", "7")
    assert lookup(WINDOW, {"GATEWAYZ_WINDOW_SECONDS": "8"}) == ("GATEWAYZ_WINDOW_SECONDS", "8")
    assert lookup(WINDOW, {}) is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"GATEWAYZ_WINDOW_SECONDS": "x"},
            "GATEWAYZ_WINDOW_SECONDS: invalid value 'x' (expected a number)",
        ),
        ({"WINDOW_SECONDS": "x"}, "WINDOW_SECONDS: invalid value 'x' (expected a number)"),
    ],
)
def test_an_unreadable_value_is_one_line_naming_its_variable(
    env: dict[str, str], message: str
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError) as info:
            read(WINDOW, env)
    assert str(info.value) == message


def test_read_all_leaves_unset_options_out() -> None:
    env = {"GATEWAYZ_NAMESPACE": "prod", "GATEWAYZ_MAX_PROVIDERS": "20", "OTHER": "x"}
    assert read_all(SHARED, env) == {"namespace": "prod", "max_providers": 20}


@pytest.mark.parametrize(
    ("parse", "raw", "value"),
    [
        (text, "a b", "a b"),
        (number, "1.5", 1.5),
        (integer, "20", 20),
        (integer, "1e3", 1000),
        (integer, "200000.0", 200_000),
        (boolean, " Yes ", True),
        (boolean, "off", False),
        (names, " a ,, b ,", ("a", "b")),
        (numbers, "60, 15", (60.0, 15.0)),
    ],
)
def test_the_parsers(parse: Any, raw: str, value: Any) -> None:
    assert parse(raw) == value


@pytest.mark.parametrize(
    ("parse", "raw", "expected"),
    [
        (number, "x", "a number"),
        (integer, "1.5", "a whole number"),
        (integer, "lots", "a whole number"),
        (boolean, "maybe", "a boolean: 1/0, true/false, yes/no, on/off"),
        (numbers, "30s", "comma-separated numbers"),
    ],
)
def test_a_parser_says_what_it_expects(parse: Any, raw: str, expected: str) -> None:
    with pytest.raises(ValueError, match=f"^{expected}$"):
        parse(raw)


def test_a_variable_of_this_project_must_have_the_prefix() -> None:
    with pytest.raises(ValueError, match="must start with GATEWAYZ_"):
        Option("x", "METRICS_X", text, "", "", (CLIENT,))
    with pytest.raises(ValueError, match="cannot be one of its old names"):
        Option("x", "GATEWAYZ_X", text, "", "", (CLIENT,), deprecated=("GATEWAYZ_Y",))
    Option("x", "OTEL_SERVICE_NAME", text, "", "", (TELEMETRY,))  # a standard one keeps its name


@pytest.mark.parametrize(
    ("option", "shown"),
    [
        (WINDOW, "300"),
        (options.REDIS_URL, "redis://127.0.0.1:6379/0"),
        (Option("x", "GATEWAYZ_X", boolean, True, "", (CLIENT,)), "on"),
        (Option("x", "GATEWAYZ_X", names, (), "", (CLIENT,)), "none"),
        (Option("x", "GATEWAYZ_X", text, None, "", (CLIENT,), default_text="later"), "later"),
    ],
)
def test_the_default_as_shown(option: Option[Any], shown: str) -> None:
    assert option.shown_default() == shown

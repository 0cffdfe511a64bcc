"""Configuration crosses a trust boundary too: every option of the client and the aggregator set,
one at a time, to each of many values nobody documents (by a machine, not by hand). Each value is
either refused with one line naming what is wrong (the client: a ValueError; the aggregator: exit
status 2 and one ``aggregator: error:`` line), or taken, and then a client built with it starts
and closes without raising.

Found here: ``GATEWAYZ_WINDOW_SECONDS=inf`` (and the retention, the gauge TTL) passed the client's
"> 0" check, then failed building the client as an OverflowError naming nothing."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import pytest

from aggregator.option_table import AGGREGATOR_OPTIONS
from aggregator.options import parse_settings
from client import ClientSettings, MetricsClient
from client._settings import CLIENT_OPTIONS
from gatewayz_protocol.options import Option

ODD_VALUES = (
    "", " ", "x", "-1", "0", "-0", "1.5", "nan", "NaN", "inf", "-inf", "1e999", "1e-320",
    "9" * 30, "1" * 400, "0x10", "1_000", " 5 ", "5\n", "\x00", "\u2028", "١٢", "true",
    ",", "a,b", "openrouter:0", "a:99", ":::", "redis://", "rediss://[::1",
    "redis+cluster://", "redis+sentinel://h/",
)  # fmt: skip
"""Empty, blank, signs, specials, overflow, underflow, other numerals, separators, URLs
without a host: what a typo, a templating bug or a copied value puts in a variable."""


def _one_line(message: str) -> bool:
    return bool(message.strip()) and "\n" not in message.strip() and "Traceback" not in message


@pytest.mark.parametrize("option", CLIENT_OPTIONS, ids=lambda option: option.env)
def test_the_client_refuses_an_odd_value_in_one_line_or_runs_with_it(
    option: Option[Any], redis_url: str
) -> None:
    problems = []
    for value in ODD_VALUES:
        env = {option.env: value}
        if option.env != "GATEWAYZ_REDIS_URL":
            env["GATEWAYZ_REDIS_URL"] = redis_url
        try:
            settings = ClientSettings.from_env(env)
        except ValueError as refused:
            if not _one_line(str(refused)):
                problems.append(f"{value!r}: refused in more than one line: {refused}")
            continue
        except Exception as exc:  # what the test reports, whatever it is
            problems.append(f"{value!r}: raised {exc!r} while reading it")
            continue
        try:
            MetricsClient(settings=settings).close(timeout=0.2)
        except Exception as exc:
            problems.append(f"{value!r}: taken, then a client raised {exc!r}")
    assert problems == []


@pytest.mark.parametrize("option", AGGREGATOR_OPTIONS, ids=lambda option: option.env)
def test_the_aggregator_refuses_an_odd_value_in_one_line(option: Option[Any]) -> None:
    problems = []
    for value in ODD_VALUES:
        for argv, env in (
            ([], {option.env: value}),
            ([f"{option.flag}={value}"], {}),
        ):
            if argv and option.flag is None:
                continue
            stderr = io.StringIO()
            try:
                with contextlib.redirect_stderr(stderr):
                    parse_settings(argv, env)
            except SystemExit as refused:
                said = stderr.getvalue()
                if refused.code != 2 or not said.startswith("aggregator: error: "):
                    problems.append(f"{argv or env}: exit {refused.code}: {said!r}")
                elif not _one_line(said):
                    problems.append(f"{argv or env}: refused in more than one line: {said!r}")
            except Exception as exc:  # what the test reports, whatever it is
                problems.append(f"{argv or env}: raised {exc!r}")
    assert problems == []

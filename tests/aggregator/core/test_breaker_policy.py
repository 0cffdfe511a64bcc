"""Per-provider breaker settings (aggregator/core/breaker_policy.py), pure: both spellings read
to the same overrides, each setting as its type, every bad input a one-line error naming the
provider and the setting, and a provider judged by its own settings, the others by the global."""

from __future__ import annotations

import re

import pytest

from aggregator.core.breaker import BreakerCalls, BreakerConfig, evaluate
from aggregator.core.breaker_policy import BreakerPolicy, parse_overrides
from aggregator.settings import _check_breaker
from gatewayz_protocol.breaker_state import BreakerState

TEXT = "openrouter:min_calls=50,failure_rate=0.3;groq:open_seconds=60,rate_limited_is_failure=no"
JSON = (
    '{"openrouter": {"min_calls": 50, "failure_rate": 0.3},'
    ' "groq": {"open_seconds": 60, "rate_limited_is_failure": false}}'
)
EXPECTED = (
    ("groq", (("open_seconds", 60.0), ("rate_limited_is_failure", False))),
    ("openrouter", (("failure_rate", 0.3), ("min_calls", 50))),
)


def test_text_and_json_read_alike() -> None:
    assert parse_overrides(TEXT) == EXPECTED
    assert parse_overrides(JSON) == EXPECTED
    assert parse_overrides("") == () and parse_overrides("  ") == ()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("openrouter", "provider:setting=value"),
        ("openrouter:", "provider:setting=value"),
        ("openrouter:min_calls", "openrouter: setting=value, got 'min_calls'"),
        ("openrouter:min_call=3", "openrouter: 'min_call' is not a per-provider breaker setting"),
        ("openrouter:half_open_calls=3", "'half_open_calls' is not a per-provider"),
        ("openrouter:max_open_share=0.5", "'max_open_share' is not a per-provider"),
        ("openrouter:min_calls=2.5", "openrouter: min_calls must be an integer, got '2.5'"),
        ("openrouter:failure_rate=half", "openrouter: failure_rate must be a number"),
        ("openrouter:rate_limited_is_failure=maybe", "must be true or false"),
        ("open router:min_calls=3", "a valid provider name, got 'open router'"),
        ("a:min_calls=3;a:min_calls=4", "provider 'a' given twice"),
        ('{"a": 3}', "JSON: an object of objects"),
        ('{"a": {}}', "a: at least one setting"),
        ('{"a": {"min_calls": true}}', "a: min_calls must be an integer, got True"),
        ("{oops", "JSON: Expecting property name"),
        # deeper than the decoder recurses: a RecursionError's traceback, not this line
        ('{"a":' + "[" * 100_000, "JSON: nested too deeply"),
        ('{"a": {"min_calls": ' + "1" * 5000 + "}}", "JSON: a number too long to read"),
    ],
)
def test_bad_input_says_what_and_where(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_overrides(raw)


def test_a_setting_that_cannot_be_is_refused_naming_the_provider() -> None:
    overrides = parse_overrides("groq:failure_rate=1.5")
    with pytest.raises(ValueError, match=r"breaker providers: groq: breaker failure rate"):
        BreakerPolicy.of(BreakerConfig(), overrides, _check_breaker)
    # each provider's settings are held to the bounds of the global options
    for setting, said in [
        ("open_seconds=1e30", "groq: breaker open seconds must be from 0.1 to 31536000, got 1e+30"),
        ("window_seconds=nan", "groq: breaker window must be from 0.1 to 3600, got nan"),
        ("min_calls=99999999999", "groq: breaker min calls must be a whole number from 1 to"),
        ("recent_window_seconds=-1", "groq: breaker recent window must be from 0 to 3600"),
    ]:
        with pytest.raises(ValueError, match=f"^breaker providers: {re.escape(said)}"):
            BreakerPolicy.of(BreakerConfig(), parse_overrides(f"groq:{setting}"), _check_breaker)
    overrides = parse_overrides("groq:open_seconds=600")  # above the global cap of 300
    with pytest.raises(ValueError, match="open seconds <= breaker max open seconds"):
        BreakerPolicy.of(BreakerConfig(), overrides, _check_breaker)


def test_each_provider_judged_by_its_own_settings() -> None:
    default = BreakerConfig(min_calls=20, open_seconds=30.0)
    policy = BreakerPolicy.of(default, parse_overrides(TEXT), _check_breaker)
    assert policy.config("anthropic") is default
    assert policy.config("openrouter") == BreakerConfig(min_calls=50, failure_rate=0.3)
    assert policy.config("groq").open_seconds == 60.0
    assert policy.config("groq").min_calls == 20  # inherited
    calls = BreakerCalls(successes=26, failures=14)  # 40 calls, 35% failing
    closed = BreakerState()
    assert evaluate(closed, calls, 100.0, policy.config("anthropic")) is None  # 35% < 50%
    assert evaluate(closed, calls, 100.0, policy.config("openrouter")) is None  # 40 < 50 calls
    more = BreakerCalls(successes=33, failures=17)  # 50 calls, 34% >= 30%
    opened = evaluate(closed, more, 100.0, policy.config("openrouter"))
    assert opened is not None and opened.new.state == "open"

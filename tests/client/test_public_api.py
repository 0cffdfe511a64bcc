"""Every public method of the worker client with hostile arguments: what records never raises
and answers right (a call whose health event the README's rules accept is booked, each bad
auxiliary value in it left out and counted under its cause; a call whose health event they
reject is counted once under its cause and booked nowhere; a flush writes exactly what was
booked), what declares raises ValueError only. Against a real Redis, as a worker would run
it."""

from __future__ import annotations

import asyncio
import math
import string
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from client import GatewayMetrics, MetricsClient, MetricsMiddleware
from gatewayz_protocol.keys import Keys
from tests.support.clock import FakeClock

MakeClient = Callable[..., MetricsClient]


class Hostile:
    """An argument whose every conversion, comparison and attribute fails."""

    def __float__(self) -> float:
        raise RuntimeError("no float")

    def __int__(self) -> int:
        raise RuntimeError("no int")

    def __index__(self) -> int:
        raise RuntimeError("no index")

    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __hash__(self) -> int:
        raise RuntimeError("no hash")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no eq")

    def __lt__(self, other: object) -> bool:
        raise RuntimeError("no lt")

    def __le__(self, other: object) -> bool:
        raise RuntimeError("no le")

    def __bool__(self) -> bool:
        raise RuntimeError("no bool")

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no {name}")


ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    st.just(object()),
    st.builds(Hostile),
    st.sampled_from(["openrouter", "success", "failure", 200, 503, 0.25, 7]),
)


# -- what the sweeps draw -------------------------------------------------------------------


def sometimes_anything(
    valid: st.SearchStrategy[Any], anything: st.SearchStrategy[Any] = ANYTHING
) -> st.SearchStrategy[Any]:
    """A value of ``valid`` (bounds included, and some just outside them), or about one time in
    eight anything at all: most calls get past most checks, so each rule meets its bad value
    alone and every answer is tested, while about half the calls still carry a hostile value.
    (one_of() would pick ANYTHING's eleven kinds far more often than the one valid kind.)"""
    coins = st.tuples(st.booleans(), st.booleans(), st.booleans())
    return st.tuples(coins, valid, anything).map(
        lambda drawn: drawn[2] if all(drawn[0]) else drawn[1]
    )


PROVIDERS = sometimes_anything(
    st.one_of(
        st.sampled_from(["openrouter", "google-vertex", "fireworks.ai", "a" * 64, "a" * 65]),
        st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,12}", fullmatch=True),  # the README's rule
    )
)
LATENCIES = sometimes_anything(
    st.one_of(st.floats(0.0, 86_400.0), st.sampled_from([0, 86_400, 86_400.5, -1e-9, True]))
)
STATUS_CODES = st.one_of(st.integers(100, 599), st.sampled_from([99, 408, 429, 600]))
OUTCOME_NAMES_AND_NOT = st.sampled_from(
    ["success", "failure", "rate_limited", "caller_error", "cancelled", "SUCCESS"]
)
STATUS_OUTCOMES = sometimes_anything(  # (status_code, outcome): one, the other, neither, both
    st.one_of(
        st.tuples(STATUS_CODES, st.none()),
        st.tuples(st.none(), OUTCOME_NAMES_AND_NOT),
        st.tuples(st.none(), st.none()),
        st.tuples(st.sampled_from([200, 503]), st.sampled_from(["success", "failure"])),
    ),
    anything=st.tuples(ANYTHING, ANYTHING),
)
TOKEN_COUNTS = sometimes_anything(
    st.one_of(
        st.integers(-3, 10**6),
        st.sampled_from([0, 10**12, 10**12 + 1, False, "", 2.0, 2.5, 1e12, -1.0]),
    )
)
COSTS = sometimes_anything(
    st.one_of(st.floats(0.0, 1e6), st.sampled_from([0.0, 1e6, 1e6 + 1, -0.01, True, 7]))
)
CREDITS = sometimes_anything(st.one_of(st.floats(0.0, 1e6), st.sampled_from([0, 1e6, 1e6 + 1])))
SECONDS = sometimes_anything(
    st.one_of(st.none(), st.floats(0.0, 86_400.0), st.sampled_from([None, 86_400, 86_401]))
)
TEXT = sometimes_anything(st.text(max_size=6))
INFERENCE_TOKENS = sometimes_anything(
    st.one_of(st.integers(0, 10**6), st.sampled_from([0, 7, 7.0, 10**12, 10**12 + 1]))
)
RECORD_ARGS = st.tuples(PROVIDERS, LATENCIES, STATUS_OUTCOMES, TOKEN_COUNTS, COSTS)
INFERENCE_ARGS = st.tuples(
    PROVIDERS, TEXT, LATENCIES, STATUS_OUTCOMES, INFERENCE_TOKENS, INFERENCE_TOKENS, CREDITS,
    COSTS, TEXT, SECONDS, SECONDS,
)  # fmt: skip

# Every rule at its bounds and each cause, whatever the draws: (provider, latency,
# (status_code, outcome), tokens, cost) ...
RECORD_EXAMPLES: list[tuple[Any, ...]] = [
    ("openrouter", 0.5, (408, None), 10, 0.25),  # a failure
    ("openrouter", 0.5, (429, None), 0, 0.0),  # rate limited
    ("openrouter", 0.5, (404, None), 0, 0.0),  # a caller error
    ("openrouter", 0.5, (399, None), 0, 0.0),  # a success
    ("google-vertex", 0, (None, "rate_limited"), 10**12, 1e6),  # every bound, inclusive
    ("fireworks.ai", 86_400, (None, None), 0, 0.0),
    ("a" * 64, True, (None, "caller_error"), False, True),  # True is 1 (s, USD), False no token
    ("openrouter", 86_400.5, (None, None), 0, 0.0),
    ("openrouter", -1e-9, (None, None), 0, 0.0),
    ("openrouter", 0.5, (200, "success"), 0, 0.0),
    ("openrouter", 0.5, (99, None), 0, 0.0),
    ("openrouter", 0.5, (600, None), 0, 0.0),
    ("openrouter", 0.5, (None, "SUCCESS"), 0, 0.0),
    ("openrouter", 0.5, (None, None), 10**12 + 1, 0.0),
    ("openrouter", 0.5, (None, None), True, 0.0),
    ("openrouter", 0.5, (None, None), 0, 1e6 + 1),
    ("openrouter", 0.5, (None, None), 0, -0.01),
    ("openrouter", 0.5, (None, None), 0, "1"),
    ("openrouter", "0.5", (None, None), 0, 0.0),
    ("a" * 65, 0.5, (None, None), 0, 0.0),
    (Hostile(), 0.5, (None, None), 0, 0.0),
    ("openrouter", 0.5, (None, None), Hostile(), 0.0),
]
# ... and (provider, model, latency, (status_code, outcome), input and output tokens, credits,
# cost, endpoint, TTFB, TTFC)
INFERENCE_EXAMPLES: list[tuple[Any, ...]] = [
    ("openrouter", "gpt", 0.5, (408, None), 10**12, 0, 1e6, 1e6, "/v1", 86_400, 0.0),
    ("openrouter", "gpt", 0.5, (None, "failure"), 3, 4, 0, 0.0, "", None, None),
    ("openrouter", "gpt", 0.5, (None, None), 10**12, 1, 0, 0.0, "", None, None),  # total
    ("openrouter", "gpt", 0.5, (None, None), False, 0, 0, 0.0, "", None, None),
    ("openrouter", "gpt", 0.5, (None, None), 0, 0, True, 0.0, "", None, None),
    ("openrouter", "gpt", 0.5, (None, None), 0, 0, 1e6 + 1, 0.0, "", None, None),
    ("openrouter", "gpt", 0.5, (None, None), 0, 0, "1", 0.0, "", None, None),
    ("openrouter", "gpt", 0.5, (None, None), 0, 0, 0, 0.0, "", 86_401, None),
    ("openrouter", "gpt", 0.5, (None, None), 0, 0, 0, 0.0, "", None, -1),
    ("openrouter", 7, 0.5, (None, None), 0, 0, 0, 0.0, "", None, None),
    ("openrouter", "gpt", 0.5, (None, None), 0, 0, 0, 0.0, b"/v1", None, None),
    ("bad name", "gpt", 0.5, (None, None), 0, 0, 0, 0.0, "", None, None),
    ("openrouter", "gpt", 0.5, (None, None), 0, 0, 0, 1e6 + 1, "", None, None),
]


def record_examples(check: Callable[..., None]) -> Callable[..., None]:
    for args in RECORD_EXAMPLES:
        for kwargs in (False, True):
            check = example(args=args, kwargs=kwargs)(check)
    return check


def inference_examples(check: Callable[..., None]) -> Callable[..., None]:
    for args in INFERENCE_EXAMPLES:
        check = example(args=args)(check)
    return check


SWEEP = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- the README's rules, restated (not imported: the client is what is under test) -----------

_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "._-")
OUTCOME_NAMES = ("success", "failure", "rate_limited", "caller_error", "cancelled")
MAX_TOKENS = 10**12

Verdict = tuple[str | None, list[str]]
"""(the cause that rejects the call, None when it is booked; the causes of the values left out
of a booked call)"""


def readme_valid_provider(name: object) -> bool:
    """1-64 ASCII letters, digits, '.', '_' or '-', starting with a letter or a digit."""
    return (
        isinstance(name, str)
        and 1 <= len(name) <= 64
        and name[0] in string.ascii_letters + string.digits
        and all(c in _NAME_CHARS for c in name)
    )


def _number(value: object) -> bool:
    """A value the rules can compare with a bound (NaN included: it fails every bound)."""
    return type(value) in (int, float, bool)


def _truth(value: object) -> bool | None:
    """Whether ``value`` is given (truthy); None when asking fails (a hostile value)."""
    try:
        return bool(value)
    except Exception:
        return None


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except Exception:
        return False
    return True


def readme_tokens(value: object) -> int | None:
    """Tokens as booked: an int in [0, 1e12] or a float with an integral value there (12.0 is
    12); none given (0, None, False, empty) is 0; None when the value is left out."""
    if type(value) is int:
        return value if 0 <= value <= MAX_TOKENS else None
    given = _truth(value)
    if given is None:
        return None
    if not given:
        return 0
    if type(value) is float and 0 <= value <= MAX_TOKENS and value == int(value):
        return int(value)
    return None


def readme_cost(value: object) -> int | None:
    """A cost as booked, in nano-USD: a number in [0, 1e6] (True is 1); none given is 0; None
    when it is left out."""
    given = _truth(value)
    if given is None or (given and not _number(value)):
        return None
    if not given:
        return 0
    return round(value * 1_000_000_000) if 0 <= value <= 1e6 else None  # type: ignore[operator]


def event_verdict(provider: Any, latency: Any, status: Any, outcome: Any) -> str | None:
    """The cause that rejects a call (None: its health event is booked): the README's rules in
    order (provider, latency, status code or outcome), and invalid_argument for a value no rule
    can read (a hostile one, a string for a number)."""
    if not _hashable(provider):
        return "invalid_argument"
    if not readme_valid_provider(provider):
        return "invalid_provider"
    if not _number(latency):
        return "invalid_argument"
    if not 0 <= latency <= 86_400:
        return "invalid_latency"
    if status is not None:
        if outcome is not None:
            return "status_and_outcome"
        if not (type(status) is int and 100 <= status <= 599):
            return "invalid_status_code"
    elif outcome is not None and not (type(outcome) is str and outcome in OUTCOME_NAMES):
        return "invalid_outcome"
    return None


def record_verdict(
    provider: Any, latency: Any, status: Any, outcome: Any, tokens: Any, cost: Any
) -> Verdict:
    """What record() must do with a call: reject it, or book it leaving out what is bad."""
    cause = event_verdict(provider, latency, status, outcome)
    if cause is not None:
        return cause, []
    left_out = ["invalid_tokens"] if readme_tokens(tokens) is None else []
    return None, left_out + (["invalid_cost"] if readme_cost(cost) is None else [])


def outcome_name(status: int | None, outcome: str | None) -> str:
    """429 rate_limited; 408 and 5xx failure; other 4xx caller_error; the rest success."""
    if status is None:
        return outcome or "success"
    if status == 429:
        return "rate_limited"
    if status == 408 or status >= 500:
        return "failure"
    return "caller_error" if status >= 400 else "success"


class Model:
    """What Redis must hold once everything accepted is flushed: per provider, the calls by
    outcome (cancelled ones apart), tokens and cost in nano-USD; and what stats() must count."""

    def __init__(self) -> None:
        self.totals: dict[str, Counter[str]] = {}
        self.accepted = 0
        self.rejected: Counter[str] = Counter()

    def book(self, verdict: Verdict, provider: Any, status: Any, outcome: Any,
             tokens: Any, cost: Any) -> None:  # fmt: skip
        cause, left_out = verdict
        if cause is not None:
            self.rejected[cause] += 1
            return
        self.rejected.update(left_out)
        self.accepted += 1
        totals = self.totals.setdefault(provider, Counter())
        name = outcome_name(status, outcome)
        totals["cancelled" if name == "cancelled" else f"n:{name}"] += 1
        totals["tokens"] += readme_tokens(tokens) or 0
        totals["cost_nusd"] += readme_cost(cost) or 0

    def add_usage(self, provider: str, tokens: Any, cost: Any) -> None:
        """usage added to a call booked earlier: an event of its own when anything is left."""
        count, nano = readme_tokens(tokens), readme_cost(cost)
        self.rejected.update(
            cause
            for cause, bad in (("invalid_tokens", count), ("invalid_cost", nano))
            if bad is None
        )
        if count or nano:
            self.accepted += 1
            totals = self.totals.setdefault(provider, Counter())
            totals["tokens"] += count or 0
            totals["cost_nusd"] += nano or 0

    def check_stats(self, metrics: MetricsClient) -> None:
        stats = metrics.stats()
        assert stats["accepted"] == self.accepted
        assert stats["rejected"] == {cause: n for cause, n in self.rejected.items() if n}

    def check_redis(self, r: redis.Redis, keys: Keys) -> None:
        for provider, expected in self.totals.items():
            raw = r.hgetall(keys.totals(provider))
            stored = {k.decode(): int(v) for k, v in raw.items()}
            for field, value in expected.items():
                assert stored.get(field, 0) == value, (provider, field)


def test_the_two_reported_ones(make_client: MakeClient, clock: FakeClock) -> None:
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics)
    gateway.record_inference("openrouter", "gpt", 0.1, outcome=[])  # type: ignore[arg-type]
    metrics.gauge("depth", "Depth").dec("x")  # type: ignore[arg-type]
    assert metrics.flush(timeout=5)
    assert metrics.stats()["rejected"] == {"invalid_outcome": 1}


def test_recording_never_raises(
    make_client: MakeClient, clock: FakeClock, r: redis.Redis, keys: Keys
) -> None:
    metrics = make_client(clock=clock)
    counter = metrics.counter("c_total", "C", ["a"])
    gauge = metrics.gauge("g", "G", ["a"])
    histogram = metrics.histogram("h", "H", ["a"], buckets=[1.0])
    model = Model()

    @SWEEP
    @given(args=RECORD_ARGS, kwargs=st.booleans())
    @record_examples
    def check(args: tuple[Any, ...], kwargs: bool) -> None:
        provider, latency, (status, outcome), tokens, cost = args
        if kwargs:
            accepted = metrics.record(
                provider, latency, status_code=status, outcome=outcome, tokens=tokens,
                cost_usd=cost,
            )  # fmt: skip
        else:
            accepted = metrics.record(provider, latency, status, outcome, tokens, cost)
        verdict = record_verdict(provider, latency, status, outcome, tokens, cost)
        assert accepted is (verdict[0] is None), (args, verdict)
        model.book(verdict, provider, status, outcome, tokens, cost)
        # no breaker of this namespace ever opened: every call is let through
        assert metrics.allow(provider) is True
        assert asyncio.run(metrics.allow_async(provider)) is True
        assert metrics.breaker(provider).allowed and metrics.admit(provider).allowed
        with metrics.track("openrouter") as call:
            call.status_code, call.outcome = status, outcome
            call.tokens, call.cost_usd = tokens, cost
        verdict = record_verdict("openrouter", 0.0, status, outcome, tokens, cost)
        model.book(verdict, "openrouter", status, outcome, tokens, cost)
        assert call.booked_as == (None if verdict[0] is not None else outcome_name(status, outcome))
        assert call.add_usage(tokens=tokens, cost_usd=cost) is True
        model.add_usage("openrouter", tokens, cost)
        for child in (counter.labels(provider), gauge.labels(latency), histogram.labels(status)):
            for method in ("inc", "dec", "set", "observe"):
                if hasattr(child, method):
                    getattr(child, method)(tokens)
        # any timeout (not a number: none at all), though never more than 5 s here
        timeout = min(latency, 5.0) if _number(latency) else latency
        assert metrics.flush(timeout=timeout) in (True, False)
        model.check_stats(metrics)  # each call counted once, under the right cause

    check()
    assert metrics.flush(timeout=10)
    model.check_redis(r, keys)  # what was accepted is what was written


def inference_verdict(
    provider: Any, model: Any, latency: Any, status: Any, outcome: Any, tokens_in: Any,
    tokens_out: Any, credits: Any, cost: Any, endpoint: Any, ttfb: Any, ttfc: Any,
) -> Verdict:  # fmt: skip
    """What record_inference() must do with a call: record()'s rules for its health event, with
    the total of the token counts kept; then its own values, each left out alone (model and
    endpoint strings, token counts, credits, TTFB/TTFC)."""
    cause = event_verdict(provider, latency, status, outcome)
    if cause is not None:
        return cause, []
    left_out = []
    if type(model) is not str:
        left_out.append("invalid_model")
    if type(endpoint) is not str:
        left_out.append("invalid_endpoint")
    left_out += [
        "invalid_tokens" for count in (tokens_in, tokens_out) if readme_tokens(count) is None
    ]
    given = _truth(credits)
    if given is None or (given and not (type(credits) in (int, float) and 0 <= credits <= 1e6)):
        left_out.append("invalid_credits")
    for name, seconds in (("invalid_ttfb", ttfb), ("invalid_ttfc", ttfc)):
        if seconds is not None and not (type(seconds) in (int, float) and 0 <= seconds <= 86_400):
            left_out.append(name)
    if _total(tokens_in, tokens_out) > MAX_TOKENS:
        left_out.append("invalid_tokens")  # each count is one, their sum is not
    return None, left_out + (["invalid_cost"] if readme_cost(cost) is None else [])


def test_booking_inferences_never_raises(
    make_client: MakeClient, clock: FakeClock, r: redis.Redis, keys: Keys
) -> None:
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics)
    model = Model()

    @SWEEP
    @given(args=INFERENCE_ARGS)
    @inference_examples
    def check(args: tuple[Any, ...]) -> None:
        provider, name, latency, (status, outcome), tin, tout, credits, cost, end, ttfb, ttfc = args
        gateway.record_inference(
            provider, name, latency, status_code=status, outcome=outcome, input_tokens=tin,
            output_tokens=tout, credits=credits, cost_usd=cost, endpoint=end, ttfb_s=ttfb,
            ttfc_s=ttfc,
        )  # fmt: skip
        verdict = inference_verdict(
            provider, name, latency, status, outcome, tin, tout, credits, cost, end, ttfb, ttfc
        )
        model.book(verdict, provider, status, outcome, _booked_tokens(tin, tout), cost)
        with gateway.inference(provider, name, end) as call:
            call.first_byte()
            call.chunk()
            call.status_code, call.outcome = status, outcome
            call.input_tokens, call.output_tokens = tin, tout
            call.credits, call.cost_usd = credits, cost
        verdict = inference_verdict(
            provider, name, 0.0, status, outcome, tin, tout, credits, cost, end, 0.0, 0.0
        )
        model.book(verdict, provider, status, outcome, _booked_tokens(tin, tout), cost)
        model.check_stats(metrics)  # each call booked or rejected once, under the right cause

    check()
    assert metrics.flush(timeout=10)
    model.check_redis(r, keys)


def _total(tokens_in: Any, tokens_out: Any) -> int:
    """The provider's tokens of a call: its valid token counts added up."""
    return (readme_tokens(tokens_in) or 0) + (readme_tokens(tokens_out) or 0)


def _booked_tokens(tokens_in: Any, tokens_out: Any) -> int:
    """What the provider's totals get: the total, or nothing when it is past 1e12."""
    total = _total(tokens_in, tokens_out)
    return total if total <= MAX_TOKENS else 0


def test_an_exception_in_a_timed_block_is_the_callers_own(
    make_client: MakeClient, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics)
    for exc in (ValueError("mine"), _AttributeBomb()):
        with pytest.raises(type(exc)), metrics.track("openrouter"):
            raise exc
        with pytest.raises(type(exc)), gateway.inference("openrouter", "gpt"):
            raise exc
    assert metrics.flush(timeout=5)
    assert metrics.stats()["accepted"] == 4  # each block still recorded (a failure)


class _AttributeBomb(Exception):
    """An exception whose status attributes cannot be read."""

    @property
    def status_code(self) -> int:
        raise RuntimeError("boom")


def test_declaring_raises_value_error_only(make_client: MakeClient, clock: FakeClock) -> None:
    metrics = make_client(clock=clock)

    @SWEEP
    @given(
        kind=st.sampled_from(["counter", "gauge", "histogram"]),
        args=st.lists(ANYTHING, min_size=4, max_size=4),
    )
    def check(kind: str, args: list[Any]) -> None:
        name, documentation, labelnames, extra = args
        try:
            if kind == "gauge":
                metrics.gauge(name, documentation, labelnames, combine=extra)
            elif kind == "histogram":
                metrics.histogram(name, documentation, labelnames, buckets=extra)
            else:
                metrics.counter(name, documentation, labelnames)
        except ValueError:
            pass

    check()
    counter = metrics.counter("sized_total", "Sized", ["a", "b"])
    with pytest.raises(ValueError):
        counter.labels("only one")
    with pytest.raises(ValueError):
        counter.labels(a="x", c="y")
    counter.labels(Hostile(), math.nan).inc()  # the right count of any values: fine
    assert metrics.flush(timeout=5)


def test_the_middleware_counts_odd_responses_without_breaking_them(
    make_client: MakeClient, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics, app_name="odd")
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": "not a status"})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    middleware = MetricsMiddleware(app, gateway)
    scope = {"type": "http", "method": Hostile(), "route": Hostile(), "root_path": 5}
    asyncio.run(middleware(scope, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    asyncio.run(middleware({"type": "http", "method": "GET"}, receive, send))
    assert metrics.flush(timeout=5)

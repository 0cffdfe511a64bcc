"""Configuration crosses a trust boundary too: every option of the client and the aggregator set,
one at a time, to each of many values nobody documents (by a machine, not by hand). Each value is
either refused with one line naming what is wrong (the client: a ValueError; the aggregator: exit
status 2 and one ``aggregator: error:`` line), or taken, and then works: a client built with it
records, flushes (``flush()`` True) and closes without raising; an aggregator built with it runs
its cycles without a failure, is ready, and its scheduler starts and stops. The same holds for the
client's settings given as keyword arguments, for every query option of a Redis URL, and for the
ends of every declared range (``gatewayz_protocol.bounds``): each end is a value that works.

Found here: ``GATEWAYZ_WINDOW_SECONDS=inf`` (and the retention, the gauge TTL) passed the client's
"> 0" check, then failed building the client as an OverflowError naming nothing; ``1e19`` then
passed, and Redis refused every batch's TTL (``flush()`` False forever); ``--interval 1e30``
overflowed the scheduler at startup (a traceback), ``--interval 1e-9`` was never ready,
``--max-providers 1e30`` failed every cycle; ``ClientSettings(allow_timeout_seconds=1e30)`` made
``close()`` raise OverflowError; ``?socket_timeout=-1``, ``?protocol=9``, ``?client_name=a%20b``
were taken and no connection could be made."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from aggregator.engine.cycle import Aggregator
from aggregator.option_table import AGGREGATOR_OPTIONS
from aggregator.options import parse_settings
from aggregator.serve.process import start_scheduler
from aggregator.settings import AggregatorSettings
from client import ClientSettings, MetricsClient
from client._settings import BOUNDS, CLIENT_OPTIONS, FIELD_BOUNDS
from gatewayz_protocol.bounds import DAY, YEAR
from gatewayz_protocol.options import Option
from gatewayz_transport.connection import connect
from gatewayz_transport.url_values import CHECKS
from tests.support.backends import empty_namespace, open_redis

ODD_VALUES = (
    "", " ", "x", "-1", "0", "-0", "1.5", "nan", "NaN", "inf", "-inf", "1e999", "1e-320",
    "9" * 30, "1" * 400, "0x10", "1_000", " 5 ", "5\n", "\x00", "\u2028", "١٢", "true",
    ",", "a,b", "openrouter:0", "a:99", ":::", "redis://", "rediss://[::1",
    "redis+cluster://", "redis+sentinel://h/",
    "1e30", "1e19", "1e-9", "5e-324", "99999999999", "2.5", "0.5", "a\nb",
    "redis://127.0.0.1:1/0?socket_timeout=-1", '{"a":' + "[" * 5000,
)  # fmt: skip
"""Empty, blank, signs, specials, overflow, underflow, other numerals, separators, URLs
without a host: what a typo, a templating bug or a copied value puts in a variable; numbers
every parser reads but far beyond what anyone runs with (a unit mistake, ms for s), a newline,
a bad query option, JSON nested past the decoder's recursion."""

ODD_OBJECTS: tuple[object, ...] = (
    0,
    -1,
    0.5,
    2.5,
    1e30,
    10**30,
    1e-300,
    5e-324,
    float("nan"),
    float("inf"),
    True,
    "5",
    None,
)
"""What a gateway's code may pass as a keyword argument of ``ClientSettings``."""

ODD_QUERY_VALUES = (
    "-1", "0", "1", "2", "3", "4", "9", "nan", "inf", "1e30", "0.5", "99999999999", "a b",
    "gw", "true", "flase", "none", "bogus", "TimeoutError", "771",
)  # fmt: skip
"""Values of a Redis URL's query options."""


def _one_line(message: str) -> bool:
    return bool(message.strip()) and "\n" not in message.strip() and "Traceback" not in message


def _ends(bounds: Any) -> list[float]:
    """The two ends of ``bounds`` that a value can be (the low one only when included)."""
    low = bounds.low if not bounds.above_low else None
    ends = [end for end in (low, bounds.high) if end is not None]
    return [int(end) for end in ends] if bounds.whole else [float(end) for end in ends]


# ---------------------------------------------------------------------------------- the client


def _client_trouble(settings: ClientSettings) -> str | None:
    """What goes wrong with a client of ``settings`` that records, flushes and closes (None:
    nothing); an exception it raises is the caller's to report."""
    metrics = MetricsClient(settings=settings)
    try:
        metrics.gauge("fuzz_inflight", "In flight").set(1)
        metrics.record("openrouter", 0.2, status_code=200)
        metrics.allow("openrouter")
        flushed = metrics.flush(timeout=5.0)
    finally:
        closed = metrics.close(timeout=5.0)
    return None if flushed and closed else f"flush() {flushed}, close() {closed}"


@pytest.mark.parametrize("option", CLIENT_OPTIONS, ids=lambda option: option.env)
def test_the_client_refuses_an_odd_value_in_one_line_or_works_with_it(
    option: Option[Any], redis_url: str, namespace: str
) -> None:
    problems = []
    for value in ODD_VALUES:
        env = {
            "GATEWAYZ_REDIS_URL": redis_url,
            "GATEWAYZ_NAMESPACE": namespace,
            "GATEWAYZ_HANDLE_SIGTERM": "0",
            option.env: value,
        }
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
            if option.env == "GATEWAYZ_REDIS_URL":  # it may name the default Redis: built only
                MetricsClient(settings=settings).close(timeout=0.2)
                continue
            trouble = _client_trouble(settings)
            if trouble:
                problems.append(f"{value!r}: taken, then {trouble}")
        except Exception as exc:
            problems.append(f"{value!r}: taken, then a client raised {exc!r}")
        finally:
            if option.env == "GATEWAYZ_NAMESPACE" and settings.namespace != namespace:
                empty_namespace(redis_url, settings.namespace)
    assert problems == []


@pytest.mark.parametrize("name", sorted(FIELD_BOUNDS))
def test_a_keyword_only_setting_is_refused_in_one_line_or_works(
    name: str, redis_url: str, namespace: str
) -> None:
    problems = []
    for value in ODD_OBJECTS:
        given: dict[str, Any] = {name: value}
        try:
            settings = ClientSettings(
                redis_url=redis_url, namespace=namespace, handle_sigterm=False, **given
            )
        except ValueError as refused:
            if not _one_line(str(refused)) or not str(refused).startswith(name):
                problems.append(f"{value!r}: refused as {refused!r}")
            continue
        try:
            trouble = _client_trouble(settings)
            if trouble:
                problems.append(f"{value!r}: taken, then {trouble}")
        except Exception as exc:
            problems.append(f"{value!r}: taken, then a client raised {exc!r}")
    assert problems == []


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_each_end_of_a_client_settings_range_works(
    name: str, redis_url: str, namespace: str
) -> None:
    for end in _ends(BOUNDS[name]):
        given: dict[str, Any] = {name: end}
        settings = ClientSettings(
            redis_url=redis_url, namespace=namespace, handle_sigterm=False, **given
        )
        assert _client_trouble(settings) is None, (name, end)


# ------------------------------------------------------------------------------ the aggregator


def _aggregator_trouble(settings: AggregatorSettings) -> str | None:
    """What goes wrong with an aggregator of ``settings`` (None: nothing): a breaker cycle and
    a metrics cycle that fail, a replica not ready after them, a scheduler that cannot start."""
    connection = connect(
        settings.redis_url, socket_timeout=max(1.0, min(5.0, settings.interval_seconds))
    )
    aggregator = Aggregator(settings, connection)
    try:
        aggregator.run_breaker_cycle()
        aggregator.run_cycle()
        status, ready = aggregator.status, aggregator.ready()
        if status.cycles_failed or status.breaker_cycles_failed or ready != (True, "ok"):
            return (
                f"cycles: {status.last_error}, breaker cycles failed: "
                f"{status.breaker_cycles_failed}, ready: {ready}"
            )
        start_scheduler(aggregator, settings).shutdown(wait=True)
    finally:
        aggregator.release_lease()
        connection.close()
    return None


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """stderr captured, the aggregator's logs (a failed cycle's) off."""
    stderr = io.StringIO()
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stderr(stderr):
            yield stderr
    finally:
        logging.disable(logging.NOTSET)


@pytest.mark.parametrize("option", AGGREGATOR_OPTIONS, ids=lambda option: option.env)
def test_the_aggregator_refuses_an_odd_value_in_one_line_or_works_with_it(
    option: Option[Any], redis_url: str, namespace: str
) -> None:
    problems = []
    base = {"GATEWAYZ_REDIS_URL": redis_url, "GATEWAYZ_NAMESPACE": namespace}
    for value in ODD_VALUES:
        settings = None
        for argv, env in (([], {**base, option.env: value}), ([f"{option.flag}={value}"], base)):
            if argv and option.flag is None:
                continue
            try:
                with _quiet() as stderr:
                    settings = parse_settings(argv, env)
            except SystemExit as refused:
                said = stderr.getvalue()
                if refused.code != 2 or not said.startswith("aggregator: error: "):
                    problems.append(f"{argv or env}: exit {refused.code}: {said!r}")
                elif not _one_line(said):
                    problems.append(f"{argv or env}: refused in more than one line: {said!r}")
            except Exception as exc:  # what the test reports, whatever it is
                problems.append(f"{argv or env}: raised {exc!r}")
        if settings is None or option.name in ("redis_url", "redis_url_file"):
            continue  # refused; or a URL that may name the default Redis
        try:
            with _quiet():
                trouble = _aggregator_trouble(settings)
            if trouble:
                problems.append(f"{option.env}={value!r}: taken, then {trouble}")
        except Exception as exc:
            problems.append(f"{option.env}={value!r}: taken, then raised {exc!r}")
        finally:
            if settings.namespace != namespace:
                empty_namespace(redis_url, settings.namespace)
    assert problems == []


COMPANIONS: dict[tuple[str, str], tuple[str, ...]] = {
    # what another setting must be for this end to be possible at all (a rule of two)
    ("--window", "high"): (f"--export-horizon={DAY}",),
    ("--export-horizon", "low"): ("--window=1",),
    ("--export-horizon", "high"): (f"--retention={YEAR}",),
    ("--retention", "low"): ("--window=60", "--export-horizon=60"),
    ("--latency-target", "high"): (f"--latency-ceiling={DAY}",),
    ("--latency-ceiling", "low"): ("--latency-target=0.001",),
    ("--breaker-open-seconds", "high"): (f"--breaker-max-open-seconds={YEAR}",),
    ("--breaker-max-open-seconds", "low"): ("--breaker-open-seconds=0.1",),
}
_BOUNDED = [option for option in AGGREGATOR_OPTIONS if option.bounds is not None]


@pytest.mark.parametrize("option", _BOUNDED, ids=lambda option: option.env)
def test_each_end_of_an_aggregator_settings_range_works(
    option: Option[Any], redis_url: str, namespace: str
) -> None:
    assert option.bounds is not None and option.flag is not None
    base = [f"--redis-url={redis_url}", f"--namespace={namespace}"]
    for which, end in zip(("low", "high"), _ends(option.bounds), strict=False):
        if option.bounds.above_low:
            which = "high"
        argv = [*base, *COMPANIONS.get((option.flag, which), ()), f"{option.flag}={end}"]
        with _quiet():
            trouble = _aggregator_trouble(parse_settings(argv, {}))
        assert trouble is None, (option.flag, end, trouble)


# ------------------------------------------------------------------------- Redis URL options


def _databases(redis_url: str) -> int:
    """How many dbs the test's Redis has (its ``databases`` setting)."""
    connection = open_redis(redis_url)
    try:
        return int(str(connection.config_get("databases")["databases"]))
    finally:
        connection.close()


def _with_query(redis_url: str, name: str, value: str) -> str:
    return f"{redis_url}{'&' if '?' in redis_url else '?'}{name}={quote(value)}"


@pytest.mark.parametrize("name", sorted({*CHECKS, "db"}))
def test_a_query_option_is_refused_in_one_line_or_works_on_both_sides(
    name: str, redis_url: str, namespace: str
) -> None:
    problems = []
    databases = _databases(redis_url)
    for value in ODD_QUERY_VALUES:
        if name == "db" and value.isdigit() and databases <= int(value) < 2**31 - 1:
            continue  # a db a Redis may have (its databases setting), this one has not
        url = _with_query(redis_url, name, value)
        try:
            client = ClientSettings(redis_url=url, namespace=namespace, handle_sigterm=False)
        except ValueError as refused:
            with pytest.raises(ValueError) as also:  # the aggregator refuses it alike
                AggregatorSettings(redis_url=url, namespace=namespace)
            if not _one_line(str(refused)) or str(refused) != str(also.value):
                problems.append(f"?{name}={value}: refused as {refused!r} and {also.value!r}")
            continue
        try:
            trouble = _client_trouble(client)
            with _quiet():
                trouble = trouble or _aggregator_trouble(
                    AggregatorSettings(redis_url=url, namespace=namespace)
                )
            if trouble:
                problems.append(f"?{name}={value}: taken, then {trouble}")
        except Exception as exc:
            problems.append(f"?{name}={value}: taken, then raised {exc!r}")
        finally:
            if name == "db":
                empty_namespace(url, namespace)
    assert problems == []


def test_a_db_the_server_has_not_is_found_at_the_first_connection_logged_and_flush_fails(
    single_redis_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    # failure-behaviour.md: a db number below 2^31 - 1 is taken (a Redis may have that many);
    # one this server has not fails at the first connection, said in the log, nothing hidden
    missing = _databases(single_redis_url)  # the first db number this server has not
    base = single_redis_url.split("?")[0].rsplit("/", 1)[0]
    settings = ClientSettings(
        redis_url=f"{base}/{missing}",
        namespace=namespace,
        handle_sigterm=False,
        backoff_max_seconds=0.1,
    )
    client = MetricsClient(settings=settings)
    try:
        with caplog.at_level(logging.ERROR, logger="gatewayz.metrics.client"):
            assert client.record("openrouter", 0.1)
            assert client.flush(timeout=1.0) is False
        assert client.stats()["redis_ok"] is False
        assert any("DB index is out of range" in m for m in caplog.messages)
    finally:
        client.close(timeout=0.1)

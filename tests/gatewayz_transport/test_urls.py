"""Redis URLs (gatewayz_transport.urls): which Redis a URL names, parsed without I/O (no host in
these tests resolves or answers)."""

from __future__ import annotations

import pytest

from aggregator.settings import redact
from gatewayz_transport.connection import connect
from gatewayz_transport.urls import (
    CLUSTER_SCHEMES,
    CREDENTIALS_HINT,
    SCHEMES,
    SENTINEL_SCHEMES,
    SentinelUrl,
    check_credentials,
    check_url,
    cluster_seeds,
    parse_sentinel_url,
)


def test_the_schemes() -> None:
    assert CLUSTER_SCHEMES == {"redis+cluster": "redis", "rediss+cluster": "rediss"}
    assert SENTINEL_SCHEMES == {"redis+sentinel": False, "rediss+sentinel": True}
    assert SCHEMES == (
        "redis",
        "rediss",
        "unix",
        "redis+cluster",
        "rediss+cluster",
        "redis+sentinel",
        "rediss+sentinel",
    )


UNKNOWN_SCHEME = (
    "a Redis URL starts with one of redis://, rediss://, unix://, redis+cluster://, "
    "rediss+cluster://, redis+sentinel://, rediss+sentinel:// (redis://host:6379/0)"
)


@pytest.mark.parametrize(
    "url", ["127.0.0.1:6379", "localhost", "http://:secret@h/0", "REDIS://h/0", "redis:/h", ""]
)
def test_a_url_of_no_scheme_read_here_names_every_one_that_is(url: str) -> None:
    """Not redis-py's message, which names its three only (and never the URL: a password)."""
    with pytest.raises(ValueError) as checked:
        check_url(url)
    assert str(checked.value) == UNKNOWN_SCHEME
    with pytest.raises(ValueError) as connecting:
        connect(url, 1.0)
    assert str(connecting.value) == UNKNOWN_SCHEME


@pytest.mark.parametrize(
    "url",
    [
        "redis://h:6379/0",
        "rediss://h/0",
        "unix:///run/redis.sock",
        "redis+cluster://h:7000",
        "REDISS+CLUSTER://h:7000",
        "redis+sentinel://h:26379/mymaster",
        "rediss+sentinel://h/mymaster/1",
    ],
)
def test_every_scheme_read_here_passes_the_check(url: str) -> None:
    check_url(url)


@pytest.mark.parametrize(
    ("url", "plain", "seeds"),
    [
        ("redis+cluster://h1:7000", "redis://h1:7000", []),
        ("redis+cluster://h1:7000/0", "redis://h1:7000/0", []),
        (
            "rediss+cluster://user:p%40ss@h1:7000,h2:7001,[::1]:7002/0?ssl_cert_reqs=none",
            "rediss://user:p%40ss@h1:7000/0?ssl_cert_reqs=none",
            [("h2", 7001), ("::1", 7002)],
        ),
        (
            "redis+cluster://h1:7000,h2:7001?protocol=3",
            "redis://h1:7000?protocol=3",
            [("h2", 7001)],
        ),
        ("REDIS+CLUSTER://h1:7000,10.0.0.2:7001", "redis://h1:7000", [("10.0.0.2", 7001)]),
        ("redis+cluster://:secret@h1:7000", "redis://:secret@h1:7000", []),
    ],
)
def test_a_cluster_url_is_its_first_node_plus_the_other_seeds(
    url: str, plain: str, seeds: list[tuple[str, int]]
) -> None:
    assert cluster_seeds(url) == (plain, seeds)


@pytest.mark.parametrize(
    "url",
    ["redis+cluster://h1:7000,h2", "redis+cluster://h1:7000,:7001", "redis+cluster://h1:7000,h2:x"],
)
def test_a_seed_must_read_host_port(url: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        cluster_seeds(url)


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "redis://:secret@localhost",
        "rediss://h:6380/2",
        "unix:///tmp/redis.sock",
        "redis+cluster://h:7000",
        "redis+cluster://h:7000/0",
        "rediss+cluster://h:7000,h2:7001",
        "redis+sentinel://h:26379/mymaster",
        "rediss+sentinel://:secret@h,h2:26380/mymaster/3",
        "redis://h/0?client_name=gw&socket_keepalive=true&health_check_interval=30",
        "redis://h?protocol=3&max_connections=5&socket_timeout=2&retry_on_timeout=true",
        "redis://h?encoding=UTF-8&encoding_errors=strict",  # what every writer uses anyway
        "rediss://h?ssl_cert_reqs=none&ssl_ca_certs=/etc/ca.pem",
        "rediss+cluster://h:7000,h2:7001?ssl_cert_reqs=none",
    ],
)
def test_urls_connect_can_read(url: str) -> None:
    check_url(url)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        # replies decoded to text fail the aggregator's every cycle ("true", "false": both on)
        ("redis://h/0?decode_responses=false", "?decode_responses= is not supported: "),
        ("redis+cluster://h:1,h:2?decode_responses=1", "?decode_responses= is not supported"),
        ("redis://h?encoding=latin-1", "?encoding= is not supported: keys, members and labels"),
        ("redis://h?encoding_errors=replace", "?encoding_errors= is not supported"),
        # redis-py passes what it does not know to every new connection: a TypeError in the
        # flusher's thread, a traceback every backoff, nothing delivered
        ("redis://h/0?foo=bar", "?foo= is not an option of a Redis connection"),
        ("unix:///tmp/r.sock?db=2&socket_keepalive=1", "?socket_keepalive= is not an option"),
        ("redis://h?ssl_ca_certs=/ca.pem", "?ssl_ca_certs= is not an option of this kind"),
        ("redis://h?retry=3", "?retry= cannot be given in a URL (its value is not text)"),
    ],
)
def test_query_options_no_connection_can_take_are_refused_by_name(url: str, said: str) -> None:
    with pytest.raises(ValueError) as refused:
        check_url(url)
    assert str(refused.value).startswith(said), refused.value


@pytest.mark.parametrize(
    "url",
    [
        "http://h:1",
        "h:6379",
        "",
        "redis+cluster://h:7000/3",  # a cluster has only db 0
        "redis+cluster://h:7000,h2",
        "redis+sentinel://h:26379",
        "redis+sentinel://h:26379/m/x",
        "redis+sentinel://h:port/m",
        "redis://h:6379/abc",  # redis-py would read it as db 0, without a word
        "rediss://h/0/x",
        "redis+cluster://",
        "redis+cluster://:secret@/",
    ],
)
def test_urls_connect_cannot_read(url: str) -> None:
    with pytest.raises(ValueError):
        check_url(url)


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        (
            "redis+sentinel://h:26379/mymaster",
            SentinelUrl([("h", 26379)], "mymaster", 0, None, None),
        ),
        (
            "rediss+sentinel://:secret@h,h2:26380/mymaster/3",
            SentinelUrl([("h", 26379), ("h2", 26380)], "mymaster", 3, None, "secret"),
        ),
        (
            "redis+sentinel://us%3Aer:p%40ss@[::1]:26379,10.0.0.2:5000/my%20master/",
            SentinelUrl([("::1", 26379), ("10.0.0.2", 5000)], "my master", 0, "us:er", "p@ss"),
        ),
        ("redis+sentinel://user@h/m/15", SentinelUrl([("h", 26379)], "m", 15, "user", None)),
    ],
)
def test_a_sentinel_url(url: str, parsed: SentinelUrl) -> None:
    assert parse_sentinel_url(url) == parsed


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h:26379",
        "redis+sentinel://h:26379/",
        "redis+sentinel:///m",
        "redis+sentinel://h,/m",
        "redis+sentinel://h:x/m",
        "redis+sentinel://h/m/x",
        "redis+sentinel://h/m/1/2",
    ],
)
def test_a_sentinel_url_without_sentinels_or_master_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="redis\\+sentinel://host:port") as info:
        parse_sentinel_url(url)
    # the form shown survives the redaction of every message up to a URL's last "@"
    assert redact(str(info.value)) == str(info.value)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        # taken by name, then no connection could be made: flush() False for good, every cycle
        # of the aggregator failed (gatewayz_transport.url_values)
        ("redis://h/0?socket_timeout=-1", "?socket_timeout= must be a number from 0.01 to 300"),
        ("redis://h/0?socket_timeout=nan", "?socket_timeout= must be a number"),
        ("redis://h/0?socket_connect_timeout=-5", "?socket_connect_timeout= must be a number"),
        ("redis://h/0?client_name=a%20b", "?client_name= must be one word of visible ASCII"),
        ("redis://h/0?health_check_interval=-1", "?health_check_interval= must be a whole"),
        ("redis://h/0?protocol=9", "?protocol= must be 2 or 3 (RESP2, RESP3), got '9'"),
        ("redis://h/99999999999", "the path's db number must be a whole number from 0 to"),
        ("unix:///tmp/r.sock?db=99999999999", "?db= must be a whole number from 0 to"),
        ("rediss://h/0?ssl_cert_reqs=bogus", "?ssl_cert_reqs= must be one of none, optional"),
        ("redis+cluster://h:1,h:2?socket_timeout=0", "?socket_timeout= must be a number"),
        ("redis+sentinel://h/m/99999999999", "the path's db number must be a whole number"),
        ("redis+sentinel://h/m?socket_timeout=1", "a Sentinel URL takes no query options"),
    ],
)
def test_a_query_value_no_connection_can_use_is_refused_naming_the_option(
    url: str, said: str
) -> None:
    with pytest.raises(ValueError) as refused:
        check_url(url)
    assert str(refused.value).startswith(said), refused.value
    assert "\n" not in str(refused.value)


def test_a_refused_value_never_quotes_the_password() -> None:
    with pytest.raises(ValueError) as refused:
        check_url("redis://user:hunter2@h/0?socket_timeout=-1&password=hunter2")
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://:pa/ss@h:6379/0",  # the password's rest would be the path, "pa" the port
        "redis://:12?ss@h/0",  # taken: port 12 of localhost, the rest a query of no option
        "redis://u:p#ss@h/0",  # taken: port of no number, the rest a fragment
        "redis://:p@ss/w@h/0",
        "unix://:pa/ss@/run/redis.sock",  # taken: the socket /ss@/run/redis.sock
        "unix://:pass@/run/redis@main.sock",  # credentials, then a path's '@': as %40
        "redis+cluster://:pa,ss/x@h1:7000,h2:7001",
        "rediss+sentinel://:pa?ss@h:26379/mymaster",
        "redis://h/0?client_name=a@b",  # a query's '@': as %40
    ],
)
def test_an_at_after_the_host_part_is_refused_quoting_nothing(url: str) -> None:
    for reader in (check_url, check_credentials, lambda url: connect(url, 1.0)):
        with pytest.raises(ValueError) as refused:
            reader(url)
        assert str(refused.value) == CREDENTIALS_HINT
    assert "percent-encode" in CREDENTIALS_HINT and "://" not in CREDENTIALS_HINT  # no redact()


@pytest.mark.parametrize(
    "url",
    [
        "unix:///run/redis@main.sock",  # no host part: no credentials
        "unix://:pass@/run/redis%40main.sock",
        "redis://h/0?client_name=a%40b",
        "redis://:p%2Fa%3Fs%23s%40w%3A@h:6379/0",
        "redis://us:p:a@s@s@h:6379/0",  # ':' and '@' alone are read where they are
        "redis+cluster://:p@ss@h1:7000,h2:7001",
    ],
)
def test_an_at_within_the_host_part_or_encoded_is_read(url: str) -> None:
    check_credentials(url)
    check_url(url)

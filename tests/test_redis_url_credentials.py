"""A Redis URL whose user name or password holds an unencoded '/', '?', '#', ':' or '@', in every
scheme, as every reader of the URL takes it: the client's settings and ``from_env()``, the
aggregator's flag, variable and URL file, its commands, ``python -m aggregator``.

The audit's finding: a '/', '?' or '#' ends the host part early, and the errors quoted the rest
of the password (``Port could not be cast to integer value as 'Ab'``; a Sentinel URL's path
``'/SECRETtail@127.0.0.1:26379/mymaster'``), or a URL was taken whose host, port or socket path
was made of it. Now such a URL is refused in one line quoting nothing of it and saying what to
percent-encode; a URL one still reads (':' and '@' alone) is read with the whole password as the
password, so no host, port, path or connection error holds any of it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import redis
from redis.connection import parse_url

from aggregator.__main__ import main as aggregator_main
from aggregator.options import parse_settings
from client import ClientSettings, MetricsClient
from gatewayz_transport.connection import connect
from gatewayz_transport.urls import (
    CLUSTER_SCHEMES,
    CREDENTIALS_HINT,
    SCHEMES,
    SENTINEL_SCHEMES,
    check_url,
    cluster_seeds,
    parse_sentinel_url,
)

ROOT = Path(__file__).resolve().parents[1]

TAILS = {
    "redis": "127.0.0.1:6379/0",
    "rediss": "127.0.0.1:6380/2",
    "unix": "/tmp/gatewayz-test-redis.sock",
    "redis+cluster": "127.0.0.1:7000,127.0.0.1:7001",
    "rediss+cluster": "127.0.0.1:7000/0?ssl_cert_reqs=none",
    "redis+sentinel": "127.0.0.1:26379/mymaster",
    "rediss+sentinel": "127.0.0.1:26379,127.0.0.2:26380/mymaster/1",
}
"""What follows the credentials, per scheme."""

SPECIALS = ("/", "?", "#", ":", "@", "@/", "/@", ":?", "?/#", "#@:")
FORMS = ("{c}QXKVJW", "QX{c}KVJW", "QXKVJW{c}", "QX{c}KV{c}JW", "58{c}QXKV")
"""Passwords: distinctive letters (none in any message but a leak's), a special at the start,
inside, at the end, twice; digits before it (read as a port)."""
USERS = ("", "gwuser")


def _cases() -> Iterator[tuple[str, str, str]]:
    """(url, user, password) for every scheme, special, position and user."""
    for scheme in SCHEMES:
        for special in SPECIALS:
            for form in FORMS:
                for user in USERS:
                    password = form.format(c=special)
                    yield f"{scheme}://{user}:{password}@{TAILS[scheme]}", user, password


CASES = list(_cases())
SOME_CASES = CASES[::3]
FEWER_CASES = CASES[::7]
"""Every scheme's, most specials, positions and users: where each case builds a parser."""


def _refused(password: str) -> bool:
    """Whether the URL must be refused: a '/', '?' or '#' ends the host part within it."""
    return any(c in password for c in "/?#")


def _leaks(text: str, password: str) -> list[str]:
    """Every part of ``password`` of 2 characters or more that ``text`` holds."""
    return sorted(
        {
            password[start:end]
            for start in range(len(password))
            for end in range(start + 2, len(password) + 1)
            if password[start:end] in text
        }
    )


def _assert_told(text: str, password: str) -> None:
    """One line, nothing of the password, what to do."""
    assert _leaks(text, password) == [], text
    assert "\n" not in text.strip(), text
    assert "percent-encode" in text and "%2F" in text, text


def _credentials(url: str) -> tuple[str | None, str | None]:
    """The user name and password ``connect`` would send for ``url`` (the URL is read)."""
    scheme = url.partition("://")[0]
    if scheme in SENTINEL_SCHEMES:
        sentinel = parse_sentinel_url(url)
        return sentinel.username, sentinel.password
    if scheme in CLUSTER_SCHEMES:
        url = cluster_seeds(url)[0]
    options = parse_url(url)  # type: ignore[no-untyped-call]
    return options.get("username"), options.get("password")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_transport_refuses_quoting_nothing_or_reads_the_whole_password(scheme: str) -> None:
    for url, user, password in (case for case in CASES if case[0].startswith(f"{scheme}://")):
        if not _refused(password):
            check_url(url)
            assert _credentials(url) == (user or None, password), url
            continue
        for reader in (check_url, lambda url: connect(url, 1.0)):
            with pytest.raises(ValueError) as refused:
                reader(url)
            _assert_told(str(refused.value), password)
            assert str(refused.value) == CREDENTIALS_HINT, url


def test_the_client_refuses_quoting_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GATEWAYZ_REDIS_URL", "REDIS_URL", "METRICS_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    for url, _, password in CASES:
        if not _refused(password):
            assert ClientSettings(redis_url=url).redis_url == url
            continue
        with pytest.raises(ValueError) as built:
            ClientSettings(redis_url=url)
        env = {"GATEWAYZ_REDIS_URL": url, "GATEWAYZ_HANDLE_SIGTERM": "0"}
        with pytest.raises(ValueError) as from_env:
            ClientSettings.from_env(env)
        with pytest.raises(ValueError) as client:
            MetricsClient.from_env(env)
        for text in (str(built.value), str(from_env.value), str(client.value)):
            _assert_told(text, password)
        assert str(built.value) == f"invalid Redis URL: {CREDENTIALS_HINT}"
        said = f"GATEWAYZ_REDIS_URL: invalid Redis URL: {CREDENTIALS_HINT}"
        assert str(from_env.value) == str(client.value) == said


def _exit_said(capsys: pytest.CaptureFixture[str], call: Callable[[], object]) -> str:
    """What ``call()`` writes to stderr as it exits with code 2."""
    with pytest.raises(SystemExit) as exited:
        call()
    assert exited.value.code == 2
    return capsys.readouterr().err


def test_the_aggregator_refuses_quoting_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url_file = tmp_path / "redis.url"
    for url, _, password in SOME_CASES:
        if not _refused(password):
            assert parse_settings(["--redis-url", url], env={}).redis_url == url
            continue
        url_file.write_text(f"{url}\n")
        sources = {
            "--redis-url": partial(parse_settings, ["--redis-url", url], {}),
            "GATEWAYZ_REDIS_URL": partial(parse_settings, [], {"GATEWAYZ_REDIS_URL": url}),
            "--redis-url-file": partial(parse_settings, ["--redis-url-file", str(url_file)], {}),
        }
        for source, call in sources.items():
            said = _exit_said(capsys, call)
            _assert_told(said.replace(str(url_file), ""), password)
            assert said == f"aggregator: error: {source}: invalid Redis URL: {CREDENTIALS_HINT}\n"


def test_the_aggregator_commands_refuse_quoting_nothing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GATEWAYZ_REDIS_URL", raising=False)
    for url, _, password in (case for case in FEWER_CASES if _refused(case[2])):
        for command in (["breaker", "status"], ["breaker", "open", "openrouter"], ["inspect"]):
            said = _exit_said(capsys, partial(aggregator_main, [*command, "--redis-url", url]))
            _assert_told(said, password)
            prog = f"aggregator {command[0]}"
            assert said == f"{prog}: error: --redis-url: invalid Redis URL: {CREDENTIALS_HINT}\n"


@pytest.mark.parametrize(
    ("given", "password"),
    [
        (["--redis-url", "redis://:Ab/Cd3fQXKVtail@127.0.0.1:6379/0"], "Ab/Cd3fQXKVtail"),
        (["env", "redis+sentinel://:Ab/QXKVtail@127.0.0.1:26379/mymaster"], "Ab/QXKVtail"),
    ],
)
def test_python_m_aggregator_says_it_in_one_line(given: list[str], password: str) -> None:
    """The audit's two examples, as an operator runs them."""
    env = {name: value for name, value in os.environ.items() if "REDIS_URL" not in name}
    if given[0] == "env":
        env["GATEWAYZ_REDIS_URL"], given = given[1], []
    ran = subprocess.run(
        [sys.executable, "-m", "aggregator", *given],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert _leaks(ran.stderr + ran.stdout, password) == []
    assert ran.returncode == 2, ran.stderr
    source = given[0] if given else "GATEWAYZ_REDIS_URL"
    assert ran.stderr == f"aggregator: error: {source}: invalid Redis URL: {CREDENTIALS_HINT}\n"


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("redis://gwuser:QX:KV@JW@127.0.0.1:1/0", "127.0.0.1:1"),
        ("redis://:@QX@KV:JW@127.0.0.1:1/0", "127.0.0.1:1"),
        ("unix://:QX@KV:JW@/tmp/gatewayz-test-no-such.sock", "/tmp/gatewayz-test-no-such.sock"),
    ],
)
def test_a_url_still_read_fails_to_connect_naming_only_where(url: str, where: str) -> None:
    """':' and '@' need no encoding where they are: the connection error names the address."""
    connection = connect(url, 1.0)
    try:
        with pytest.raises(redis.ConnectionError) as failed:
            connection.ping()
    finally:
        connection.close()
    assert where in str(failed.value)
    password = url.partition("://")[2].rpartition("@")[0].partition(":")[2]
    assert _leaks(str(failed.value), password) == []


def test_a_query_password_cut_at_an_ampersand_and_the_settings_repr_quote_nothing_of_it() -> None:
    # Left by the fix above: '?password=QX&KV=JW' said "?KV= is not an option ...", a piece of
    # the password; and repr(ClientSettings) held the URL with its password (the aggregator's
    # settings never did: access.md says neither does)
    with pytest.raises(ValueError) as refused:
        ClientSettings(redis_url="redis://127.0.0.1:6379/0?password=QX&KVJW=1")
    assert str(refused.value) == (
        "invalid Redis URL: a query option is not one of a Redis connection (after ?password=: "
        "percent-encode '&' in a password as %26)"
    )
    assert ClientSettings(redis_url="redis://127.0.0.1:6379/0?password=QX%26KVJW").redis_url
    with pytest.raises(ValueError, match=r"^invalid Redis URL: \?nope= is not an option"):
        ClientSettings(redis_url="redis://127.0.0.1:6379/0?nope=1")  # no password: named
    settings = ClientSettings(redis_url="redis://gwuser:QXKVJW@127.0.0.1:6379/0")
    assert "QXKVJW" not in repr(settings) and "namespace=" in repr(settings)

"""Redis with a password (requirepass) and with TLS (rediss://): the client and the aggregator
work, and the password never shows in a log record, /readyz, /health/dashboard, /metrics or the
stderr of ``python -m aggregator`` (wrong password, server down)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from aggregator.engine.cycle import Aggregator
from aggregator.options import parse_settings
from aggregator.serve.app import create_app
from aggregator.settings import describe_error, redact
from client import ClientSettings, MetricsClient
from devtools.redis_server import RedisProcess, free_port, start_redis
from gatewayz_transport.connection import connect
from tests.support.backends import AUTH_HINT
from tests.support.clock import FakeClock
from tests.support.processes import wait_for

# Distinctive strings: any occurrence in output can only be a leak.
SECRET = "S3cr3t-Pw-q7Zk2LmX-9931"
WRONG = "Wr0ng-Pw-h4Tn8RvY-5517"
OTHER = "0th3r-Pw-c6Jd1WsE-2208"
SECRETS = (SECRET, WRONG, OTHER)
AUTH_FAILED = "invalid username-password pair or user is disabled."
REFUSED = f"AuthenticationError: {AUTH_FAILED.rstrip('.')} ({AUTH_HINT})"
"""The aggregator's error for a wrong password: Redis's, and where to put the credentials."""

MakeAggregator = Callable[..., Aggregator]


def _url(port: int, password: str, scheme: str = "redis", query: str = "") -> str:
    return f"{scheme}://:{password}@127.0.0.1:{port}/0{query}"


def _refused(port: int) -> str:
    return f"Error 111 connecting to 127.0.0.1:{port}. Connection refused."


def _assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(record) for record in caplog.records)


@pytest.fixture
def secured() -> Iterator[RedisProcess]:
    """A throw-away redis-server that requires SECRET."""
    server = start_redis(extra_args=("--requirepass", SECRET))
    try:
        yield server
    finally:
        server.stop()


def _client(url: str, namespace: str, clock: FakeClock) -> MetricsClient:
    settings = ClientSettings(
        redis_url=url,
        namespace=namespace,
        socket_timeout_seconds=0.5,
        backoff_initial_seconds=0.02,
        backoff_max_seconds=0.1,
    )
    return MetricsClient(settings=settings, clock=clock)


def _record_four(metrics: MetricsClient, provider: str) -> None:
    for _ in range(3):
        metrics.record(provider, 0.3, status_code=200)
    metrics.record(provider, 6.0, status_code=502)


def test_a_password_protected_redis_carries_events_to_metrics(
    secured: RedisProcess,
    namespace: str,
    make_aggregator: MakeAggregator,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = _url(secured.port, SECRET)
    with pytest.raises(redis.AuthenticationError):
        connect(f"redis://127.0.0.1:{secured.port}/0", 1.0).ping()  # it wants the password
    metrics = _client(url, namespace, clock)
    try:
        _record_four(metrics, "securedai")
        assert metrics.flush(timeout=5)
        assert metrics.allow("securedai") is True
    finally:
        metrics.close(timeout=2)
    aggregator = make_aggregator(url=url, providers=("idle",))
    snapshot = aggregator.run_cycle()
    assert snapshot is not None
    (health,) = [p for p in snapshot.providers if p.provider == "securedai"]
    assert (health.window_requests, health.error_rate) == (4, 0.25)
    assert health.window_by_outcome["success"] == 3
    http = TestClient(create_app(aggregator), base_url="http://127.0.0.1")
    assert http.get("/readyz").json() == {"ready": True, "reason": "ok"}
    body = http.get("/metrics").text
    assert 'gatewayz_provider_window_requests{provider="securedai"} 4.0' in body
    assert 'gatewayz_provider_requests_total{outcome="success",provider="securedai"} 3.0' in body
    _assert_no_secret(body)
    _assert_no_secret(http.get("/health/dashboard").text)
    _assert_no_secret(_log_text(caplog))


def test_a_wrong_password_and_a_dead_server_never_reveal_the_password(
    secured: RedisProcess,
    namespace: str,
    make_aggregator: MakeAggregator,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    port = secured.port

    # wrong password: the client keeps its events and logs the failure; the aggregator fails
    # its cycle, /readyz says why, the dashboard shows the error
    wrong = _client(_url(port, WRONG), namespace, clock)
    try:
        _record_four(wrong, "securedai")
        assert wrong.flush(timeout=0.5) is False
    finally:
        wrong.close(timeout=0.2)
    aggregator = make_aggregator(url=_url(port, WRONG))
    assert aggregator.run_cycle() is None
    expected = REFUSED
    assert aggregator.status.last_error == expected
    http = TestClient(create_app(aggregator), base_url="http://127.0.0.1")
    ready = http.get("/readyz")
    assert (ready.status_code, ready.json()) == (
        503,
        {"ready": False, "reason": f"redis authentication failed: {expected}"},
    )
    dashboard = http.get("/health/dashboard")
    assert dashboard.json()["status"]["last_error"] == expected
    assert dashboard.json()["status"]["cycles_failed"] == 1
    metrics_body = http.get("/metrics").text
    assert "gatewayz_aggregator_cycles_failed_total 1.0" in metrics_body
    for text in (ready.text, dashboard.text, metrics_body):
        _assert_no_secret(text)

    # the right password, then the server dies under a working client and aggregator
    good = _client(_url(port, SECRET), namespace, clock)
    try:
        good.record("securedai", 0.2, status_code=200)
        assert good.flush(timeout=5)
        healthy = make_aggregator(url=_url(port, SECRET))
        assert healthy.run_cycle() is not None
        secured.stop()
        good.record("securedai", 0.2, status_code=200)
        assert good.flush(timeout=0.5) is False
    finally:
        good.close(timeout=0.2)
    assert healthy.run_cycle() is None
    assert healthy.status.last_error == f"ConnectionError: {_refused(port)}"
    http = TestClient(create_app(healthy), base_url="http://127.0.0.1")
    ready = http.get("/readyz")
    assert (ready.status_code, ready.json()) == (
        503,
        {"ready": False, "reason": f"redis unreachable: ConnectionError: {_refused(port)}"},
    )
    dashboard = http.get("/health/dashboard")
    assert dashboard.json()["status"]["last_error"] == f"ConnectionError: {_refused(port)}"
    for text in (ready.text, dashboard.text, http.get("/metrics").text):
        _assert_no_secret(text)

    # every log record of both phases, the client's flusher included
    messages = [record.getMessage() for record in caplog.records]
    client_refused = (
        f"{AUTH_FAILED.rstrip('.')} (Redis wants other credentials: put them in the Redis URL as "
        "redis://user:password@host:port/db)"
    )
    assert f"metrics flush to Redis failed, retrying with backoff: {client_refused}" in messages
    assert f"aggregation cycle failed, serving no snapshot yet: {expected}" in messages
    assert (
        f"aggregation cycle failed, serving the last snapshot: ConnectionError: {_refused(port)}"
        in messages
    )
    assert len([m for m in messages if m.startswith("metrics flush to Redis failed")]) == 2
    _assert_no_secret(_log_text(caplog))


def _get(port: int, path: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


def test_python_m_aggregator_with_a_password_url_keeps_it_out_of_stderr(
    secured: RedisProcess, namespace: str, tmp_path: Path
) -> None:
    port = secured.port
    metrics = _client(_url(port, SECRET), namespace, FakeClock(time.time()))
    try:
        _record_four(metrics, "securedai")
        assert metrics.flush(timeout=5)
    finally:
        metrics.close(timeout=2)
    token_file = tmp_path / "scrape-token"
    token_file.write_text("scrape-tok-4410\n")
    http_port = free_port()
    stderr_path = tmp_path / "stderr.txt"
    command = [
        sys.executable, "-m", "aggregator",
        "--redis-url", _url(port, SECRET), "--namespace", namespace,
        "--port", str(http_port), "--interval", "0.5", "--breaker-interval", "0.5",
        "--log-level", "DEBUG", "--auth-token-file", str(token_file),
    ]  # fmt: skip
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(command, stdout=stderr, stderr=stderr)
    try:
        wait_for(lambda: _get(http_port, "/readyz")[0] == 200)
        status, body = _get(http_port, "/metrics", "scrape-tok-4410")
        assert status == 200
        assert 'gatewayz_provider_window_requests{provider="securedai"} 4.0' in body
        assert _get(http_port, "/metrics")[0] == 401
        _assert_no_secret(body)

        # the password changes under the running aggregator: its reconnects fail
        admin = redis.Redis(port=port, password=SECRET)
        assert admin.config_set("requirepass", OTHER)
        admin.close()
        killer = redis.Redis(port=port, password=OTHER)
        assert killer.client_kill_filter(_type="normal", skipme=True) >= 1
        killer.close()
        wait_for(lambda: "AuthenticationError" in _get(http_port, "/readyz")[1])
        status, ready = _get(http_port, "/readyz")
        assert (status, json.loads(ready)) == (
            503,
            {"ready": False, "reason": f"redis authentication failed: {REFUSED}"},
        )

        wait_for(
            lambda: (
                "AuthenticationError"
                in str(json.loads(_get(http_port, "/health/dashboard", "scrape-tok-4410")[1]))
            )
        )
        status, dashboard = _get(http_port, "/health/dashboard", "scrape-tok-4410")
        assert json.loads(dashboard)["status"]["last_error"] == REFUSED
        for text in (ready, dashboard, _get(http_port, "/metrics", "scrape-tok-4410")[1]):
            _assert_no_secret(text)

        # then the server is gone
        secured.stop()
        wait_for(lambda: "Connection refused" in _get(http_port, "/readyz")[1])
        status, ready = _get(http_port, "/readyz")
        reason = f"redis unreachable: ConnectionError: {_refused(port)}"
        assert (status, json.loads(ready)) == (503, {"ready": False, "reason": reason})
        wait_for(
            lambda: (
                "Connection refused"
                in str(json.loads(_get(http_port, "/health/dashboard", "scrape-tok-4410")[1]))
            )
        )
        status, dashboard = _get(http_port, "/health/dashboard", "scrape-tok-4410")
        assert json.loads(dashboard)["status"]["last_error"] == f"ConnectionError: {_refused(port)}"
        for text in (ready, dashboard, _get(http_port, "/metrics", "scrape-tok-4410")[1]):
            _assert_no_secret(text)
    finally:
        process.terminate()
        process.wait(timeout=10)
    output = stderr_path.read_text()
    assert "aggregator " in output and "serving http://127.0.0.1:" in output
    assert f"aggregation cycle failed, serving the last snapshot: {REFUSED}" in output
    assert (
        f"aggregation cycle failed, serving the last snapshot: ConnectionError: {_refused(port)}"
        in output
    )
    _assert_no_secret(output)


def test_a_bad_redis_url_is_a_one_line_error_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for url, reason in (
        (
            f"http://:{SECRET}@127.0.0.1:6379/0",
            "a Redis URL starts with one of redis://, rediss://, unix://, redis+cluster://, "
            "rediss+cluster://, redis+sentinel://, rediss+sentinel:// (redis://host:6379/0)",
        ),
        (
            f"redis://:{SECRET}@127.0.0.1:notaport/0",
            "Port could not be cast to integer value as 'notaport'",
        ),
    ):
        with pytest.raises(SystemExit) as exit_info:
            parse_settings(["--redis-url", url], env={})
        assert exit_info.value.code == 2
        said = capsys.readouterr().err
        assert said == f"aggregator: error: --redis-url: invalid Redis URL: {reason}\n"


def test_credentials_in_any_message_are_redacted() -> None:
    assert redact(f"bad redis://:{SECRET}@h:6379/0 x") == "bad redis://***@h:6379/0 x"
    assert redact(f"rediss://user:{SECRET}@h/0?a=1") == "rediss://***@h/0?a=1"
    assert redact(f"redis://:p@{SECRET}@h/0") == "redis://***@h/0"  # an unescaped '@'
    assert redact(f"redis://h/0?password={SECRET}&db=1") == "redis://h/0?password=***&db=1"
    assert (
        redact("Error 111 connecting to 127.0.0.1:6379.")
        == "Error 111 connecting to 127.0.0.1:6379."
    )
    assert (
        describe_error(ValueError(f"cannot use redis://:{SECRET}@h:1/0"))
        == "ValueError: cannot use redis://***@h:1/0"
    )


def _tls_unavailable() -> str | None:
    """Why TLS cannot be tested here, or None."""
    binary = shutil.which("redis-server")
    if binary is None:
        return "no redis-server on PATH"
    if shutil.which("openssl") is None:
        return "no openssl on PATH to make certificates"
    probe = subprocess.run(
        [binary, "--port", "0", "--tls-port", "0", "--tls-cert-file", "/nonexistent"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    output = probe.stdout + probe.stderr
    if "Bad directive" in output or "not supported" in output.lower():
        version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
        return f"this redis-server was built without TLS ({version.strip()})"
    return None


def _make_certificates(directory: Path) -> None:
    """A self-signed CA and a server certificate for 127.0.0.1 signed by it."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=gatewayz test CA")  # fmt: skip
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2",
            "-extfile", "san.ext")  # fmt: skip


@pytest.fixture
def tls_server() -> Iterator[tuple[RedisProcess, Path]]:
    """redis-server on a TLS port only (--port 0), requiring SECRET."""
    reason = _tls_unavailable()
    if reason is not None:
        pytest.skip(f"TLS not testable: {reason}")
    workdir = Path(tempfile.mkdtemp(prefix="gatewayz-redis-tls-"))
    _make_certificates(workdir)
    port = free_port()
    command = [
        "redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", "server.crt", "--tls-key-file", "server.key",
        "--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no",
        "--requirepass", SECRET, "--save", "", "--appendonly", "no",
        "--dir", str(workdir), "--logfile", "", "--loglevel", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=workdir, stdout=subprocess.DEVNULL, start_new_session=True
    )
    server = RedisProcess(process, port, "redis-server", str(workdir))
    try:
        ca = workdir / "ca.crt"

        def answers() -> bool:
            assert process.poll() is None, "redis-server with TLS exited"
            connection = redis.Redis.from_url(
                _url(port, SECRET, "rediss", f"?ssl_ca_certs={ca}"), socket_timeout=0.5
            )
            try:
                return bool(connection.ping())
            except redis.ConnectionError:
                return False
            finally:
                connection.close()

        wait_for(answers, timeout=10)
        yield server, ca
    finally:
        server.stop()


def test_client_and_aggregator_work_over_tls(
    tls_server: tuple[RedisProcess, Path],
    namespace: str,
    make_aggregator: MakeAggregator,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server, ca = tls_server
    url = _url(server.port, SECRET, "rediss", f"?ssl_ca_certs={ca}")
    # the port speaks TLS only, and the certificate is verified (unknown CA: refused)
    with pytest.raises(redis.ConnectionError):
        connect(_url(server.port, SECRET), 1.0).ping()
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        connect(_url(server.port, SECRET, "rediss"), 1.0).ping()
    metrics = _client(url, namespace, clock)
    try:
        _record_four(metrics, "tlsai")
        assert metrics.flush(timeout=5)
    finally:
        metrics.close(timeout=2)
    aggregator = make_aggregator(url=url)
    snapshot = aggregator.run_cycle()
    assert snapshot is not None
    (health,) = snapshot.providers
    assert (health.provider, health.window_requests, health.error_rate) == ("tlsai", 4, 0.25)
    http = TestClient(create_app(aggregator), base_url="http://127.0.0.1")
    assert http.get("/readyz").json() == {"ready": True, "reason": "ok"}
    body = http.get("/metrics").text
    assert 'gatewayz_provider_window_requests{provider="tlsai"} 4.0' in body
    # ssl_cert_reqs=none (no verification) connects too
    insecure = make_aggregator(url=_url(server.port, SECRET, "rediss", "?ssl_cert_reqs=none"))
    again = insecure.run_cycle()
    assert again is not None
    assert [p.window_requests for p in again.providers] == [4]
    _assert_no_secret(body)
    _assert_no_secret(_log_text(caplog))

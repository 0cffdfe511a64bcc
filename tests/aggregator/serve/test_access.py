"""Bearer token on /metrics and /health/dashboard (--auth-token-file); probes stay open; only
the operator token changes anything (--operator-token-file); token-file errors are one line and
exit 2."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import Route

from aggregator.engine.cycle import Aggregator
from aggregator.options import parse_settings
from aggregator.serve.app import create_app
from aggregator.settings import AggregatorSettings, read_token_file
from client import MetricsClient
from tests.support.clock import FakeClock

MakeClient = Callable[..., MetricsClient]
MakeAggregator = Callable[..., Aggregator]

TOKEN = "tok-7Qx2.v9_Lm~Zr+a/b="  # every b64token character class of RFC 6750
PROTECTED = ("/metrics", "/health/dashboard", "/health/history", "/admin/breakers")


def _token_file(directory: Path, content: str) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "token"
    path.write_text(content, encoding="utf-8")
    return str(path)


@pytest.fixture
def guarded(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock, tmp_path: Path
) -> TestClient:
    """An app whose token came through parse_settings from a file ending in a newline, as
    `echo token > file` (and Prometheus's credentials_file, which trims it) has it."""
    metrics = make_client(clock=clock)
    for _ in range(3):
        metrics.record("openrouter", 0.3, status_code=200)
    metrics.record("openrouter", 6.0, status_code=502)
    assert metrics.flush(timeout=5)
    parsed = parse_settings(["--auth-token-file", _token_file(tmp_path, f"  {TOKEN}\n")], env={})
    assert parsed.auth_token == TOKEN
    aggregator = make_aggregator(auth_token=parsed.auth_token)
    assert aggregator.run_cycle() is not None
    return TestClient(create_app(aggregator), base_url="http://127.0.0.1")


def test_without_a_token_file_every_endpoint_is_open(make_aggregator: MakeAggregator) -> None:
    aggregator = make_aggregator(providers=("idle",))
    assert aggregator.settings.auth_token is None
    aggregator.run_cycle()
    http = TestClient(create_app(aggregator), base_url="http://127.0.0.1")
    for path in ("/metrics", "/health/dashboard", "/healthz", "/readyz"):
        assert http.get(path).status_code == 200, path
    assert 'provider_availability{provider="idle"} 1.0' in http.get("/metrics").text


@pytest.mark.parametrize("path", PROTECTED)
def test_a_request_without_the_bearer_token_gets_401_with_a_challenge(
    guarded: TestClient, path: str
) -> None:
    for headers in (
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer   "},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ):
        response = guarded.get(path, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {"error": "token_required", "detail": "bearer token required"}
        assert "provider" not in response.text


@pytest.mark.parametrize("path", PROTECTED)
def test_a_wrong_token_gets_401_invalid_token(guarded: TestClient, path: str) -> None:
    for wrong in ("nope", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), f"{TOKEN} {TOKEN}"):
        response = guarded.get(path, headers={"Authorization": f"Bearer {wrong}"})
        assert response.status_code == 401, wrong
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert response.json() == {"error": "invalid_token", "detail": "invalid bearer token"}


def test_the_right_token_opens_metrics_and_the_dashboard(guarded: TestClient) -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        headers = {"Authorization": f"{scheme} {TOKEN}"}
        metrics = guarded.get("/metrics", headers=headers)
        assert metrics.status_code == 200
        assert 'provider_error_rate{provider="openrouter"} 0.25' in metrics.text
        assert 'gatewayz_provider_window_requests{provider="openrouter"} 4.0' in metrics.text
        dashboard = guarded.get("/health/dashboard", headers=headers)
        assert dashboard.status_code == 200
        (provider,) = dashboard.json()["snapshot"]["providers"]
        assert (provider["provider"], provider["window_requests"]) == ("openrouter", 4)


def test_probes_stay_open_with_a_token(guarded: TestClient) -> None:
    assert guarded.get("/healthz").json() == {"status": "ok"}
    ready = guarded.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"ready": True, "reason": "ok"})


def test_the_token_is_compared_in_constant_time(
    guarded: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    compare_digest = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare_digest(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert guarded.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    ok = guarded.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    assert calls == [(b"nope", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


def test_the_only_routes_that_change_anything_are_the_operators(guarded: TestClient) -> None:
    """Every route is a GET but the breaker commands' POST, which takes the operator token
    (tests/aggregator/serve/test_admin.py); nothing else answers a POST."""
    app = guarded.app
    assert isinstance(app, FastAPI)
    api = {
        (route.path, method)
        for route in app.routes
        if isinstance(route, Route) and route.include_in_schema
        for method in (route.methods or ())
    }
    assert api == {
        ("/metrics", "GET"),
        ("/healthz", "GET"),
        ("/readyz", "GET"),
        ("/health/dashboard", "GET"),
        ("/health/history", "GET"),
        ("/dashboard", "GET"),
        ("/admin/breakers", "GET"),
        ("/admin/breakers/{provider}", "GET"),
        ("/admin/breakers/{provider}/{action}", "POST"),
    }
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/breaker/openrouter/open", "/admin/breaker", "/breaker"):
        assert guarded.post(path, headers=headers).status_code == 404, path
    assert guarded.post("/metrics", headers=headers).status_code == 405
    assert guarded.post("/admin/breakers", headers=headers).status_code == 405
    # the scrape token is a reader's: it may not change a breaker
    assert guarded.post("/admin/breakers/openrouter/open", headers=headers).status_code == 403


def test_the_token_file_is_read_from_the_environment_too(tmp_path: Path) -> None:
    env = {"GATEWAYZ_AGGREGATOR_AUTH_TOKEN_FILE": _token_file(tmp_path, "from-env\n")}
    assert parse_settings([], env=env).auth_token == "from-env"
    flag = _token_file(tmp_path / "flag", "from-flag")
    assert parse_settings(["--auth-token-file", flag], env=env).auth_token == "from-flag"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read auth token file {path!r}: No such file or directory"),
        ("", "auth token file {path!r} is empty"),
        (" \n\t\n", "auth token file {path!r} is empty"),
        (
            "two words",
            "auth token in {path!r} must be one word of visible ASCII characters (no spaces)",
        ),
        (
            "caf\u00e9",
            "auth token in {path!r} must be one word of visible ASCII characters (no spaces)",
        ),
        (b"\xff\xfe", "cannot read auth token file {path!r}: UnicodeDecodeError"),
        ("dir", "cannot read auth token file {path!r}: Is a directory"),
    ],
)
def test_a_bad_token_file_is_a_one_line_error_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str | bytes | None,
    expected: str,
) -> None:
    path = tmp_path / "token"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    for argv, env, source in (
        (["--auth-token-file", str(path)], {}, "--auth-token-file"),
        (
            [],
            {"GATEWAYZ_AGGREGATOR_AUTH_TOKEN_FILE": str(path)},
            "GATEWAYZ_AGGREGATOR_AUTH_TOKEN_FILE",
        ),
    ):
        with pytest.raises(SystemExit) as exit_info:
            parse_settings(argv, env=env)
        assert exit_info.value.code == 2
        message = expected.format(path=str(path))
        assert capsys.readouterr().err == f"aggregator: error: {source}: {message}\n"
    with pytest.raises(ValueError) as error:
        read_token_file(str(path))
    assert str(error.value) == expected.format(path=str(path))


def test_the_token_never_appears_in_the_settings_repr() -> None:
    settings = AggregatorSettings(auth_token="tok-Repr-8841", redis_url="redis://:pw-Repr-5521@h/0")
    assert "tok-Repr-8841" not in repr(settings)
    assert "pw-Repr-5521" not in repr(settings)
    with pytest.raises(ValueError, match=r"^auth token must be one word of visible ASCII"):
        AggregatorSettings(auth_token="a b")
    with pytest.raises(ValueError, match=r"^auth token must be one word of visible ASCII"):
        AggregatorSettings(auth_token="")


def test_the_operator_token_file_like_the_auth_tokens(tmp_path: Path) -> None:
    path = _token_file(tmp_path, " op-Tok-1\n")
    for argv, env in (
        (["--operator-token-file", path], {}),
        ([], {"GATEWAYZ_AGGREGATOR_OPERATOR_TOKEN_FILE": path}),
    ):
        assert parse_settings(argv, env=env).operator_token == "op-Tok-1"
    assert parse_settings([], env={}).operator_token is None
    with pytest.raises(ValueError) as error:
        read_token_file(str(tmp_path / "missing"), "operator token")
    assert str(error.value) == (
        f"cannot read operator token file {str(tmp_path / 'missing')!r}: No such file or directory"
    )


def test_the_operator_token_is_its_own(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = AggregatorSettings(auth_token="tok-A-1", operator_token="tok-Op-Repr-77")
    assert "tok-Op-Repr-77" not in repr(settings)
    with pytest.raises(ValueError, match=r"^the operator token must differ from the auth token$"):
        AggregatorSettings(auth_token="same", operator_token="same")
    with pytest.raises(ValueError, match=r"^operator token must be one word of visible ASCII"):
        AggregatorSettings(operator_token="a b")
    same = _token_file(tmp_path, "same")
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(["--auth-token-file", same, "--operator-token-file", same], env={})
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "aggregator: error: the operator token must differ from the auth token\n"
    )


# -- the pages: CSP, no third-party scripts, Host ----------------------------------------------


def test_the_dashboard_page_runs_only_its_own_script_and_style(
    make_aggregator: MakeAggregator,
) -> None:
    http = TestClient(create_app(make_aggregator()), base_url="http://127.0.0.1")
    response = http.get("/dashboard")
    assert response.status_code == 200
    page = response.text
    script = re.search(r"<script>(.*?)</script>", page, re.S)
    style = re.search(r"<style>(.*?)</style>", page, re.S)
    assert script is not None and style is not None
    header = response.headers["content-security-policy"]
    policy = dict(part.strip().split(" ", 1) for part in header.split(";"))
    assert policy == {
        "default-src": "'none'",
        "script-src": f"'sha256-{_sha256(script.group(1))}'",
        "style-src": f"'sha256-{_sha256(style.group(1))}'",
        "connect-src": "'self'",
        "img-src": "'self' data:",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "<script src" not in page and "<link" not in page  # nothing from another origin


def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def test_api_docs_load_nothing_from_elsewhere_and_the_schema_needs_the_token(
    guarded: TestClient,
) -> None:
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert guarded.get(path).status_code == 404
    assert guarded.get("/openapi.json").status_code == 401
    schema = guarded.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert schema.status_code == 200 and "/health/dashboard" in schema.json()["paths"]


@pytest.mark.parametrize(
    ("host", "allowed", "served", "refused"),
    [
        # bound to loopback: only the loopback names (a rebinding page's name is refused)
        ("127.0.0.1", (), ["127.0.0.1", "localhost:9108", "[::1]:9108"], ["evil.example"]),
        ("0.0.0.0", (), ["aggregator-1:9108", "10.1.2.3"], []),
        ("127.0.0.1", ("*.internal",), ["a.internal", "b.internal:9108"], ["localhost"]),
    ],
)
def test_the_host_header_is_checked_where_a_browser_could_be_tricked(
    make_aggregator: MakeAggregator,
    host: str,
    allowed: tuple[str, ...],
    served: list[str],
    refused: list[str],
) -> None:
    http = TestClient(create_app(make_aggregator(host=host, allowed_hosts=allowed)))
    for name in served:
        assert http.get("/healthz", headers={"Host": name}).status_code == 200, name
    for name in refused:
        assert http.get("/metrics", headers={"Host": name}).status_code == 400, name
    assert parse_settings(["--allowed-hosts", "a.internal, *.b"], {}).allowed_hosts == (
        "a.internal",
        "*.b",
    )

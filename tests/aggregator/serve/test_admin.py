"""The breaker commands over HTTP (/admin/breakers): the CLI's answers and the same Redis state
after each call, the operator role (401 and 403 told apart), POST only, clear JSON errors, and
one audit line per change asked for. Real Redis."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from aggregator.cli import breaker as cli
from aggregator.engine.cycle import Aggregator
from aggregator.serve.access import OPERATOR_OFF
from aggregator.serve.app import create_app
from aggregator.settings import AggregatorSettings
from gatewayz_protocol.keys import Keys
from tests.support.backends import open_redis
from tests.support.clock import FakeClock
from tests.support.redis_state import breaker_hash, state_of

MakeAggregator = Callable[..., Aggregator]
READER = "reader-tok-5521"
OPERATOR = "operator-tok-8841"
AS_READER = {"Authorization": f"Bearer {READER}"}
AS_OPERATOR = {"Authorization": f"Bearer {OPERATOR}"}
NOW = 1_800_000_000.0


@pytest.fixture
def http(make_aggregator: MakeAggregator, r: redis.Redis, keys: Keys) -> TestClient:
    """An aggregator with both tokens, and ``acme`` registered (traffic seen)."""
    r.zadd(keys.providers, {"acme": NOW - 5})
    aggregator = make_aggregator(auth_token=READER, operator_token=OPERATOR)
    return TestClient(create_app(aggregator), base_url="http://127.0.0.1")


@pytest.fixture
def other_namespace(redis_url: str) -> Iterator[str]:
    """A second namespace (the CLI's, beside the HTTP API's), cleaned up afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    connection = open_redis(redis_url)
    for key in list(connection.scan_iter(match=Keys(name).pattern(), count=1000)):
        connection.delete(key)
    connection.close()


def _cli(
    capsys: pytest.CaptureFixture[str],
    settings: AggregatorSettings,
    clock: FakeClock,
    action: str,
    provider: str | None,
    create: bool = False,
) -> tuple[int, list[object], str]:
    code = cli.run(action, provider, settings, clock=clock, create=create)
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_the_cli_and_http_answer_alike_and_leave_the_same_redis_state(
    http: TestClient,
    r: redis.Redis,
    keys: Keys,
    clock: FakeClock,
    redis_url: str,
    other_namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli_keys = Keys(other_namespace)
    r.zadd(cli_keys.providers, {"acme": NOW - 5})
    settings = AggregatorSettings(redis_url=redis_url, namespace=other_namespace)
    steps = [
        ("open", "acme", False, 200),
        ("close", "acme", False, 200),
        ("reset", "acme", False, 200),
        ("reset", "acme", False, 200),  # nothing to reset: writes nothing
        ("open", "ghost", False, 404),  # not registered: refused
        ("open", "ghost", True, 200),
        ("close", "ghost", False, 200),  # registered by the forced open
    ]
    for action, provider, create, status in steps:
        clock.advance(7)
        code, lines, err = _cli(capsys, settings, clock, action, provider, create)
        query = "?create=true" if create else ""
        answer = http.post(f"/admin/breakers/{provider}/{action}{query}", headers=AS_OPERATOR)
        assert answer.status_code == status, (action, provider, answer.text)
        if status == 200:
            assert code == 0 and lines == [answer.json()], (action, provider)
        else:
            assert code == 1 and lines == [] and answer.json()["error"] == "not_registered"
            assert answer.json()["detail"].replace(keys.namespace, "NS") in err.replace(
                other_namespace, "NS"
            ).replace("pass --create to open it anyway", "add ?create=true to force it anyway")
        assert state_of(r, keys) == state_of(r, cli_keys), (action, provider)
    code, lines, _ = _cli(capsys, settings, clock, "status", None)
    listed = http.get("/admin/breakers", headers=AS_READER)
    every = {"namespace": keys.namespace, "breakers": lines, "registered": 2, "truncated": False}
    assert code == 0 and listed.json() == every
    one = http.get("/admin/breakers/ghost", headers=AS_OPERATOR).json()["breakers"]
    assert one == [line for line in lines if line["provider"] == "ghost"]  # type: ignore[index]
    assert state_of(r, keys)["{ghost}:breaker"] == (
        "hash",
        breaker_hash("closed", 2, True, NOW + 49),
        False,
    )


def test_every_breakers_status_reads_at_most_the_cap_and_says_how_many_are_registered(
    make_aggregator: MakeAggregator, r: redis.Redis, keys: Keys
) -> None:
    # 100,000 registered names (a week of churning provider names) were read per request:
    # 16 s, and a 503 under load. Now the max_providers most recently seen, the rest counted.
    r.zadd(keys.providers, {f"p{i:02d}": NOW - 100 + i for i in range(10)})
    http = TestClient(create_app(make_aggregator(max_providers=3)), base_url="http://127.0.0.1")
    listed = http.get("/admin/breakers").json()
    assert [row["provider"] for row in listed["breakers"]] == ["p07", "p08", "p09"]
    assert (listed["registered"], listed["truncated"]) == (10, True)
    one = http.get("/admin/breakers/p00").json()  # beyond the cap: asked for by name
    assert [row["provider"] for row in one["breakers"]] == ["p00"] and "registered" not in one


def test_a_change_needs_the_operator_token_401_and_403_told_apart(
    http: TestClient, r: redis.Redis, keys: Keys
) -> None:
    before = state_of(r, keys)
    path = "/admin/breakers/acme/open"
    for headers in ({}, {"Authorization": f"Basic {OPERATOR}"}, {"Authorization": "Bearer "}):
        response = http.post(path, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {"error": "token_required", "detail": "bearer token required"}
    for wrong in ("nope", OPERATOR + "x", READER[:-1]):
        response = http.post(path, headers={"Authorization": f"Bearer {wrong}"})
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert response.json() == {"error": "invalid_token", "detail": "invalid bearer token"}
    refused = http.post(path, headers=AS_READER)  # who it is is known: it may not
    assert refused.status_code == 403
    assert refused.headers["www-authenticate"] == 'Bearer error="insufficient_scope"'
    assert refused.json() == {
        "error": "insufficient_scope",
        "detail": "this token may read, not change: breaker commands need the operator token",
    }
    assert state_of(r, keys) == before
    assert http.post(path, headers=AS_OPERATOR).status_code == 200
    assert r.hget(keys.breaker("acme"), "state") == b"open"


def test_status_takes_either_token_and_reads_only(
    http: TestClient, r: redis.Redis, keys: Keys
) -> None:
    failures = keys.window_keys("acme")[len(keys.window_keys("acme")) - 3]
    r.zadd(failures, {f"old-{i}": NOW - 400 for i in range(10)})  # outside the window
    before = state_of(r, keys)
    assert http.get("/admin/breakers").status_code == 401
    for headers in (AS_READER, AS_OPERATOR):
        (row,) = http.get("/admin/breakers/acme", headers=headers).json()["breakers"]
        assert (row["provider"], row["state"], row["forced"]) == ("acme", "closed", False)
    assert state_of(r, keys) == before


def test_without_an_operator_token_nothing_changes_over_http(
    make_aggregator: MakeAggregator, r: redis.Redis, keys: Keys
) -> None:
    r.zadd(keys.providers, {"acme": NOW})
    for reader_token in (None, READER):
        aggregator = make_aggregator(auth_token=reader_token)
        http = TestClient(create_app(aggregator), base_url="http://127.0.0.1")
        for headers in ({}, AS_READER, AS_OPERATOR):
            response = http.post("/admin/breakers/acme/open?create=true", headers=headers)
            assert (response.status_code, response.json()) == (
                403,
                {"error": "commands_off", "detail": OPERATOR_OFF},
            )
            assert "www-authenticate" not in response.headers
        assert http.get("/admin/breakers", headers=AS_READER).status_code == 200  # reads stay
    assert r.exists(keys.breaker("acme")) == 0


def test_no_other_method_changes_anything(http: TestClient, r: redis.Redis, keys: Keys) -> None:
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        response = http.request(method, "/admin/breakers/acme/open", headers=AS_OPERATOR)
        assert response.status_code == 405, method
    assert http.post("/admin/breakers/acme", headers=AS_OPERATOR).status_code == 405
    assert r.exists(keys.breaker("acme")) == 0


ACTIONS_LISTED = "open, close, reset"
LONG = "x" * 65


@pytest.mark.parametrize(
    ("path", "error", "detail"),
    [
        ("acme/delete", "unknown_action", f"unknown action 'delete': {ACTIONS_LISTED}"),
        ("acme/status", "unknown_action", f"unknown action 'status': {ACTIONS_LISTED}"),
        ("a%20b/open", "invalid_provider", "invalid provider name 'a b'"),
        ("%7Bacme%7D/open", "invalid_provider", "invalid provider name '{acme}'"),
        ("acme%1B%5B2J/reset", "invalid_provider", "invalid provider name 'acme\\x1b[2J'"),
        (f"{LONG}/close", "invalid_provider", f"invalid provider name '{LONG}'"),
        ("acme/open?create=yes", "invalid_create", "create is true or false, not 'yes'"),
    ],
)
def test_bad_input_is_a_clear_json_error_and_writes_nothing(
    http: TestClient, r: redis.Redis, keys: Keys, path: str, error: str, detail: str
) -> None:
    before = state_of(r, keys)
    response = http.post(f"/admin/breakers/{path}", headers=AS_OPERATOR)
    assert (response.status_code, response.json()) == (400, {"error": error, "detail": detail})
    assert state_of(r, keys) == before


def test_what_is_not_found_and_what_redis_refuses(
    http: TestClient, make_aggregator: MakeAggregator, keys: Keys
) -> None:
    unknown = http.get("/admin/breakers/nobody", headers=AS_READER)
    assert unknown.status_code == 404
    assert unknown.json() == {
        "error": "no_data",
        "detail": f"no data for provider 'nobody' in namespace {keys.namespace!r}",
    }
    assert http.get("/admin/breakers/a%20b", headers=AS_READER).json()["error"] == (
        "invalid_provider"
    )
    typo = http.post("/admin/breakers/acmee/open", headers=AS_OPERATOR)
    assert typo.status_code == 404 and typo.json()["error"] == "not_registered"
    assert typo.json()["detail"].endswith("; add ?create=true to force it anyway")
    down = make_aggregator(url="redis://127.0.0.1:1/0", operator_token=OPERATOR)
    gone = TestClient(create_app(down), base_url="http://127.0.0.1")
    for response in (
        gone.post("/admin/breakers/acme/open", headers=AS_OPERATOR),
        gone.get("/admin/breakers"),
    ):
        assert response.status_code == 503
        assert response.json()["error"] == "redis_error"
        assert response.json()["detail"].startswith("redis: ConnectionError: ")


def _audit_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [
        (record.levelno, record.getMessage())
        for record in caplog.records
        if record.name == "gatewayz.aggregator.audit"
    ]


def test_every_change_asked_for_is_one_audit_line(
    http: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "gatewayz.aggregator.audit")
    calls: list[tuple[str, dict[str, str]]] = [
        ("/admin/breakers/acme/open", AS_OPERATOR),
        ("/admin/breakers/acme/reset", AS_READER),
        ("/admin/breakers/acme/reset", {}),
        ("/admin/breakers/acme%0Aforged=1/open", AS_OPERATOR),
        ("/admin/breakers/acme/reset", AS_OPERATOR),
        ("/admin/breakers/acme/reset", AS_OPERATOR),
    ]
    statuses = [http.post(path, headers=headers).status_code for path, headers in calls]
    assert statuses == [200, 403, 401, 400, 200, 200]
    where = "client=testclient:50000"
    head = "breaker command over HTTP:"
    assert _audit_lines(caplog) == [
        (logging.INFO, f"{head} role=operator action='open' provider='acme' {where} status=200 "
         "result=done state=open epoch=1 forced=True"),
        (logging.WARNING, f"{head} role=reader action='reset' provider='acme' {where} "
         "status=403 refused: not the operator role"),
        (logging.WARNING, f"{head} role=none action='reset' provider='acme' {where} "
         "status=401 refused: no operator token"),
        (logging.WARNING, f"{head} role=operator action='open' provider='acme\\nforged=1' "
         f"{where} status=400 refused: bad input"),
        (logging.INFO, f"{head} role=operator action='reset' provider='acme' {where} status=200 "
         "result=done state=closed epoch=2 forced=False"),
        (logging.INFO, f"{head} role=operator action='reset' provider='acme' {where} status=200 "
         "result=unchanged"),
    ]  # fmt: skip
    http.get("/admin/breakers", headers=AS_OPERATOR)  # reads are not audited
    assert len(_audit_lines(caplog)) == len(calls)

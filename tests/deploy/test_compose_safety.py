"""The compose stack is a demo that is safe to copy: nothing listens beyond loopback unless one
variable opens it, no shutdown endpoint, no password that works by default (each secret
defaults to empty and the services holding it refuse to start then: test_compose_guards.py),
no anonymous access unless asked for, a memory limit on every service, a Redis that requires a
password every service's URL carries, and a docs page (Production notes) that says what to
change before production.

Each check reads the file as Compose does (tests/deploy/composefile.py) and, where it is about
what Compose itself does with a variable, asks the real `docker-compose config`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import composefile
from tests.deploy.composefile import DEMO_ENV, OPTIONAL, REQUIRED
from tests.deploy.stack import memory_bytes
from tests.support.processes import need_tool

ROOT = Path(__file__).resolve().parents[2]
BIND = "${GATEWAYZ_BIND_ADDRESS:-127.0.0.1}"
PASSWORD = DEMO_ENV["REDIS_PASSWORD"]


def _services(env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    services = composefile.load(env)["services"]
    assert isinstance(services, dict)
    return services


def _published(services: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(service, host IP) of every published port."""
    return [
        (name, str(port).rsplit(":", 2)[0] if str(port).count(":") == 2 else "")
        for name, service in services.items()
        for port in service.get("ports", [])
    ]


def test_every_published_port_is_on_loopback_unless_one_variable_opens_it() -> None:
    for name, service in composefile.raw()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith(f"{BIND}:"), f"{name} publishes {port} on every interface"
    published = _published(_services())
    assert published and all(ip == "127.0.0.1" for _, ip in published), published
    opened = _published(_services({**DEMO_ENV, "GATEWAYZ_BIND_ADDRESS": "0.0.0.0"}))
    assert all(ip == "0.0.0.0" for _, ip in opened), opened


def test_compose_itself_binds_loopback_by_default() -> None:
    need_tool("docker-compose", "apt-get install docker-compose")
    services = composefile.docker_compose_services(DEMO_ENV)
    ports = [(name, port) for name, s in services.items() for port in s.get("ports", [])]
    assert ports
    for name, port in ports:
        host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
        assert host_ip == "127.0.0.1", f"{name}: {port}"


def test_prometheus_has_no_shutdown_or_admin_endpoint() -> None:
    command = _services()["prometheus"]["command"]
    assert "--web.enable-lifecycle" not in command  # POST /-/quit, /-/reload for anyone
    assert "--web.enable-admin-api" not in command  # delete series, snapshots
    # production-notes.md: "Retention is 2 days": a demo's disk stays small
    assert "--storage.tsdb.retention.time=2d" in command


def test_grafana_has_no_default_password_nor_anonymous_access_by_default() -> None:
    raw = composefile.raw()["services"]["grafana"]["environment"]
    # empty unless set, and then Grafana refuses to start (its guard: test_compose_guards.py)
    assert raw["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-}"
    env = _services()["grafana"]["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == DEMO_ENV["GRAFANA_ADMIN_PASSWORD"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env.get("GF_USERS_ALLOW_SIGN_UP", "false") == "false"
    asked = _services({**DEMO_ENV, "GRAFANA_ANONYMOUS_ENABLED": "true"})["grafana"]
    assert asked["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert asked["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


@pytest.mark.parametrize("variable", REQUIRED)
def test_no_required_secret_has_a_default_that_works(variable: str) -> None:
    """Unset or empty, a secret is an empty string wherever the file puts it (the guards then
    refuse to start: test_compose_guards.py), never a value of the file's own."""
    without = {k: v for k, v in DEMO_ENV.items() if k != variable}
    unset, empty = str(_services(without)), str(_services({**without, variable: ""}))
    marked = str(_services({**without, variable: "SECRET-MARK"}))
    assert unset == empty == marked.replace("SECRET-MARK", "") != marked


def test_every_service_has_a_memory_limit_compose_keeps() -> None:
    for name, service in _services().items():
        assert "mem_limit" in service, f"{name} has no memory limit"
        assert 32 * 2**20 <= memory_bytes(service["mem_limit"]) <= 4 * 2**30, name
    redis = _services()["redis"]
    maxmemory = memory_bytes(redis["command"][redis["command"].index("--maxmemory") + 1])
    assert memory_bytes(redis["mem_limit"]) > maxmemory  # room for the server beyond its data
    need_tool("docker-compose", "apt-get install docker-compose")
    kept = composefile.docker_compose_services(DEMO_ENV)
    assert {name: s.get("mem_limit") for name, s in kept.items()} == {
        name: s["mem_limit"] for name, s in _services().items()
    }


def test_redis_requires_the_password_every_service_uses() -> None:
    services = _services()
    redis = services["redis"]
    command = redis["command"]
    assert command[command.index("--requirepass") + 1] == PASSWORD
    # The health check (and `docker compose exec redis redis-cli`) authenticate via the env.
    assert redis["environment"]["REDISCLI_AUTH"] == PASSWORD
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"])
    urls = {}
    for name, service in services.items():
        env = service.get("environment") or {}
        text = " ".join([*map(str, service.get("command") or []), *map(str, env.values())])
        for url in re.findall(r"rediss?://\S+", text):
            urls[name] = url
    assert set(urls) >= {"aggregator-1", "aggregator-2", "gateway"}
    for name, url in urls.items():
        assert url == f"redis://:{PASSWORD}@redis:6379/0", f"{name}: {url}"


def test_every_variable_is_known_and_documented() -> None:
    assert composefile.variables() == set(REQUIRED) | set(OPTIONAL)
    notes = _section("Production notes")
    for variable in (*REQUIRED, *OPTIONAL):
        assert variable in notes, f"{variable} is not in the Production notes (docs)"


def test_the_compose_file_says_it_is_a_demo() -> None:
    head = composefile.COMPOSE.read_text().split("\nservices:", 1)[0]
    assert "DEMO" in head and "Production notes" in head


PAGES = {
    "Run the full stack": ROOT / "docs" / "getting-started" / "full-stack.md",
    "Production notes": ROOT / "docs" / "operations" / "production-notes.md",
}


def _section(title: str) -> str:
    page = PAGES[title].read_text()
    assert page.startswith(f"# {title}\n"), f"{PAGES[title]} is not the page {title!r}"
    return page


def test_production_notes_follow_run_the_full_stack_item_by_item() -> None:
    # the full stack's page sends its reader to the notes before anything else
    full_stack_intro = _section("Run the full stack").split("```", 1)[0]
    assert "(../operations/production-notes.md)" in full_stack_intro
    notes = _section("Production notes").lower()
    for item in (
        "demo",
        "127.0.0.1",
        "redis_password",
        "acl",
        "grafana_admin_password",
        "anonymous",
        "--web.enable-lifecycle",
        "alertmanager",
        "auth_enabled",
        "x-scope-orgid",
        "tempo",
        "mem_limit",
        "--auth-token-file",
        "tls",
        "retention",
        "fake_providers",
        "traffic",
    ):
        assert item in notes, f"Production notes say nothing about {item!r}"
    full_stack = _section("Run the full stack")
    for variable in REQUIRED:
        assert variable in full_stack, f"'Run the full stack' does not say to set {variable}"

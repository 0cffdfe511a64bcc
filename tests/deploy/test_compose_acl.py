"""deploy/redis/compose.acl.yml, the compose stack with a Redis user per role (docs: Access,
"Redis users by role"; Production notes, item 3): valid for the real `docker-compose config -q`
over docker-compose.yml, with every password and with none; refused at start without each
password it requires (its Redis and the services whose URL holds it exit 2 naming it); every
service on its own user, and its Redis (docker-compose.yml's guard, then deploy/redis/start.sh,
with the compose environment and flags, on a local port) lets each service's URL in as its
role, passes the compose health check and keeps every other door shut: no default user, a
worker that cannot touch a breaker."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry

from devtools.processes import stop_process
from devtools.redis_server import free_port
from tests.deploy import composefile
from tests.deploy.composefile import DEMO_ENV
from tests.deploy.stack import (
    command_of,
    entrypoint_of,
    environment_of,
    health_command,
    redis_image_env,
    run_guard,
)
from tests.support.processes import need_tool, wait_for

ROOT = Path(__file__).resolve().parents[2]
OVERRIDE = ROOT / "deploy" / "redis" / "compose.acl.yml"
ACL_ENV = {
    "REDIS_WORKER_PASSWORD": "5d2c8e1a7f3b9046c1e2d3f4a5b6c7d8e9f0a1b2c3d4e5f6",
    "REDIS_AGGREGATOR_PASSWORD": "9a8b7c6d5e4f30211f2e3d4c5b6a79880f1e2d3c4b5a6978",
    "REDIS_OPERATOR_PASSWORD": "0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7",
}
REQUIRED = ("REDIS_WORKER_PASSWORD", "REDIS_AGGREGATOR_PASSWORD")
OPTIONAL = ("REDIS_OPERATOR_PASSWORD", "REDIS_READER_PASSWORD")
ENV = {**DEMO_ENV, **ACL_ENV}
# the services whose GATEWAYZ_REDIS_URL is made of each required password
HOLDERS = {
    "REDIS_WORKER_PASSWORD": ("gateway",),
    "REDIS_AGGREGATOR_PASSWORD": ("aggregator-1", "aggregator-2"),
}


def _config(env: Mapping[str, str], *quiet: str) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f docker-compose.yml -f deploy/redis/compose.acl.yml config`` with
    exactly ``env`` (and an empty env file), as composefile.docker_compose_config does."""
    need_tool("docker-compose", "apt-get install docker-compose")
    base = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    files = ["-f", str(composefile.COMPOSE), "-f", str(OVERRIDE)]
    with tempfile.NamedTemporaryFile("w", suffix=".env") as empty:
        return subprocess.run(
            ["docker-compose", "--env-file", empty.name, *files, "config", *quiet],
            cwd=ROOT,
            env={**base, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def _services(env: Mapping[str, str]) -> dict[str, Any]:
    """The variant's services as `docker-compose config` prints them with ``env``, a shell's
    `$` (printed `$$`) interpolated back."""
    result = _config(env)
    assert result.returncode == 0, result.stderr
    found = composefile.interpolated(yaml.safe_load(result.stdout)["services"], {})
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return _services(ENV)


def test_compose_accepts_the_variant_with_every_password_and_with_none() -> None:
    for env in (ENV, {}):
        result = _config(env, "-q")
        assert (result.returncode, result.stderr) == (0, "")


def _without(variable: str, how: str) -> dict[str, str]:
    if how == "unset":
        return {k: v for k, v in ENV.items() if k != variable}
    return {**ENV, variable: ""}


@pytest.mark.parametrize("how", ["unset", "empty"])
@pytest.mark.parametrize("variable", REQUIRED)
def test_the_variants_services_refuse_to_start_without_each_required_password(
    variable: str, how: str, tmp_path: Path
) -> None:
    """Each service whose URL holds it: its guard (this file's entrypoint) exits 2 naming it,
    its command not run (stack.run_guard); with it, the command runs unchanged."""
    without, full = _services(_without(variable, how)), _services(ENV)
    for name in HOLDERS[variable]:
        assert entrypoint_of(full[name])[3:] == [variable]
        result = run_guard(without[name], tmp_path / name)
        assert (result.returncode, result.stdout) == (2, ""), result.stderr
        assert result.stderr == (
            f"{variable} is empty or unset: refusing to start with no password in "
            "GATEWAYZ_REDIS_URL\n"
        )
        started = run_guard(full[name], tmp_path / f"{name}-with")
        assert started.stdout.splitlines() == ["started", *command_of(full[name])]


def test_the_variants_guard_is_docker_compose_ymls() -> None:
    base = entrypoint_of(composefile.load()["services"]["gateway"])
    for name in ("gateway", "aggregator-1", "aggregator-2"):
        variant = composefile.interpolated(composefile.raw(OVERRIDE)["services"][name], {})
        assert entrypoint_of(variant)[:3] == base[:3], name


@pytest.mark.parametrize("variable", ["REDIS_PASSWORD", *REQUIRED])
def test_the_variants_redis_refuses_to_start_without_each_required_password(
    variable: str, tmp_path: Path
) -> None:
    """The admin's (docker-compose.yml's guard) and the services' users' (start.sh,
    REDIS_ACL_REQUIRED): Redis exits 2 with one line naming it."""
    need_tool("redis-server", "apt-get install redis-server")
    need_tool("sha256sum", "apt-get install coreutils")
    for how in ("unset", "empty"):
        directory = tmp_path / how
        process, _ = _start_variant_redis(_services(_without(variable, how))["redis"], directory)
        try:
            assert process.wait(timeout=15) == 2
        finally:
            stop_process(process)
        lines = (directory / "output.log").read_text().splitlines()
        assert len(lines) == 1 and f"{variable} is empty or unset: refusing to start" in lines[0]
        assert not (directory / "users.acl").exists()


def test_each_service_connects_as_its_own_user(services: dict[str, Any]) -> None:
    def url(name: str) -> str:
        return str(services[name]["environment"]["GATEWAYZ_REDIS_URL"])

    worker, aggregator = ACL_ENV["REDIS_WORKER_PASSWORD"], ACL_ENV["REDIS_AGGREGATOR_PASSWORD"]
    assert url("gateway") == f"redis://worker:{worker}@redis:6379/0"
    assert (
        url("aggregator-1")
        == url("aggregator-2")
        == f"redis://aggregator:{aggregator}@redis:6379/0"
    )
    admin = DEMO_ENV["REDIS_PASSWORD"]
    for name, service in services.items():
        text = str(service.get("environment")) + str(service.get("command"))
        if name != "redis":
            assert admin not in text, f"{name} holds the admin password"


def test_redis_runs_the_users_with_the_base_flags(services: dict[str, Any]) -> None:
    redis_service = services["redis"]
    command = command_of(redis_service)
    assert command[:2] == ["sh", "/etc/redis/start.sh"]
    base = command_of(composefile.load()["services"]["redis"])
    at = base.index("--requirepass")
    assert command[2:] == base[1:at] + base[at + 2 :]  # the same flags, no shared password
    assert (
        "./deploy/redis:/etc/redis:ro" in composefile.raw(OVERRIDE)["services"]["redis"]["volumes"]
    )
    assert "--user admin" in " ".join(health_command(redis_service) or [])
    env = environment_of(redis_service)
    assert env["REDISCLI_AUTH"] == env["REDIS_PASSWORD"] == DEMO_ENV["REDIS_PASSWORD"]
    assert env["REDIS_ACL_REQUIRED"].split() == ["REDIS_PASSWORD", *REQUIRED]
    # docker-compose.yml's guard still comes first (the variant sets no entrypoint for Redis)
    assert entrypoint_of(redis_service) == entrypoint_of(composefile.load()["services"]["redis"])


def test_every_variable_of_the_variant_is_documented() -> None:
    assert composefile.variables(OVERRIDE) == {"REDIS_PASSWORD", *REQUIRED, *OPTIONAL}
    notes = (ROOT / "docs" / "operations" / "production-notes.md").read_text()
    assert "deploy/redis/compose.acl.yml" in notes
    for variable in (*REQUIRED, *OPTIONAL):
        assert variable in notes, f"{variable} is not in the Production notes (docs)"


def _start_variant_redis(
    service: Mapping[str, Any], directory: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """The variant's redis service on a local port as its container starts it: its entrypoint
    (docker-compose.yml's guard), then its command (start.sh and its flags) with its
    environment, the committed deploy/redis/ standing for the /etc/redis mount and a stand-in
    for the image's docker-entrypoint.sh on PATH. Its stdout and stderr go to output.log."""
    command = command_of(service)
    assert command[:2] == ["sh", "/etc/redis/start.sh"]
    script = ROOT / "deploy" / "redis" / Path(command[1]).name
    port = free_port()
    directory.mkdir(parents=True)
    env = redis_image_env(service, directory / "image")
    env |= {
        "REDIS_ACL_TEMPLATE": str(ROOT / "deploy" / "redis" / "users.acl"),
        "REDIS_ACL_FILE": str(directory / "users.acl"),
    }
    flags = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    argv = [*entrypoint_of(service), "sh", str(script), *command[2:], *flags]
    with (directory / "output.log").open("wb") as output:
        process = subprocess.Popen(
            [*argv, "--logfile", str(directory / "redis.log")],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, port


@pytest.fixture
def variant_redis(services: dict[str, Any], tmp_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """The variant's redis service on a local port (_start_variant_redis)."""
    need_tool("redis-server", "apt-get install redis-server")
    need_tool("sha256sum", "apt-get install coreutils")
    service = services["redis"]
    env = environment_of(service)
    process, port = _start_variant_redis(service, tmp_path / "redis")
    admin = redis.Redis(port=port, username="admin", password=env["REDIS_PASSWORD"])

    def answers() -> bool:
        assert process.poll() is None, (tmp_path / "redis" / "output.log").read_text()
        try:
            return bool(admin.ping())
        except redis.ConnectionError:  # not listening yet
            return False

    try:
        wait_for(answers, timeout=15)
        yield port, env
    finally:
        admin.close()
        stop_process(process)


def test_the_variants_redis_lets_each_service_in_as_its_role(
    services: dict[str, Any], variant_redis: tuple[int, dict[str, str]]
) -> None:
    port, env = variant_redis
    health = health_command(services["redis"])
    assert health is not None
    check = subprocess.run(
        [*health[:-1], health[-1].replace("redis-cli", f"redis-cli -p {port}")],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    for name in ("gateway", "aggregator-1"):
        url = services[name]["environment"]["GATEWAYZ_REDIS_URL"].replace(
            "@redis:6379", f"@127.0.0.1:{port}"
        )
        client = redis.Redis.from_url(url)
        assert client.ping()
        if name == "gateway":
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.hset("gatewayz:{flakyai}:breaker", "state", "open")
        client.close()
    once = Retry(NoBackoff(), 0)  # an authentication error is not retried
    with pytest.raises(redis.AuthenticationError):  # the shared password opens nothing else
        redis.Redis(port=port, password=env["REDIS_PASSWORD"], retry=once).ping()
    with pytest.raises(redis.AuthenticationError):  # no password: the reader cannot log in
        redis.Redis(port=port, username="reader", password="", retry=once).ping()
    operator = redis.Redis(port=port, username="operator", password=env["REDIS_OPERATOR_PASSWORD"])
    assert operator.ping()
    operator.close()

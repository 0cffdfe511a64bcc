"""No secret has a default that works, and the file still validates: the real
`docker-compose config -q` accepts docker-compose.yml with no variable set (each secret defaults
to an empty string), and every service that holds a required secret refuses to start without it
instead. Its compose ``entrypoint`` is a guard (``sh -c SCRIPT VARIABLE``), run here by /bin/sh
with the environment Compose gives the container: it exits 2 with one line on stderr naming the
variable when the secret is empty or unset, nothing started; with the secret it execs what the
image would run (the image's entrypoint, or the command), the command unchanged. Redis is also
started for real through its guard; the image test (test_image.py) starts the project services
through theirs, and test_compose_acl.py the ACL variant's."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from devtools.processes import stop_process
from devtools.redis_server import free_port
from tests.deploy import composefile
from tests.deploy.composefile import DEMO_ENV, REQUIRED
from tests.deploy.stack import (
    REDIS_IMAGE_ENTRYPOINT,
    command_of,
    entrypoint_of,
    environment_of,
    local_redis_argv,
    redis_image_env,
    run_guard,
)
from tests.support.processes import need_tool, wait_for

# service -> the secret it holds, which its guard names ($0, the entrypoint's last word)
GUARDED = {
    "redis": "REDIS_PASSWORD",
    "aggregator-1": "REDIS_PASSWORD",
    "aggregator-2": "REDIS_PASSWORD",
    "gateway": "REDIS_PASSWORD",
    "grafana": "GRAFANA_ADMIN_PASSWORD",
}
# What a guard execs with its secret there, when not the command itself ("$@": the project's
# image has no ENTRYPOINT): the image's own entrypoint.
IMAGE_ENTRYPOINT = {"redis": REDIS_IMAGE_ENTRYPOINT, "grafana": "/run.sh"}


def _without(variable: str, how: str) -> dict[str, str]:
    if how == "unset":
        return {k: v for k, v in DEMO_ENV.items() if k != variable}
    return {**DEMO_ENV, variable: ""}


def test_docker_compose_validates_the_file_with_no_variable_set() -> None:
    need_tool("docker-compose", "apt-get install docker-compose")
    result = composefile.docker_compose_config({}, composefile.COMPOSE, "-q")
    assert (result.returncode, result.stderr) == (0, "")


def test_compose_gives_the_guards_what_this_module_runs() -> None:
    """The real `docker-compose config` with no variable: each guarded service's entrypoint,
    command and environment are composefile's (the secrets empty strings; Compose prints a
    shell's `$` as `$$`, interpolated back here)."""
    need_tool("docker-compose", "apt-get install docker-compose")
    real = composefile.interpolated(composefile.docker_compose_services({}), {})
    ours = composefile.load({})["services"]
    for name in GUARDED:
        assert entrypoint_of(real[name]) == entrypoint_of(ours[name]), name
        assert command_of(real[name]) == command_of(ours[name]), name
        assert environment_of(real[name]) == environment_of(ours[name]), name
    assert environment_of(ours["grafana"])["GF_SECURITY_ADMIN_PASSWORD"] == ""
    assert environment_of(ours["redis"])["REDISCLI_AUTH"] == ""


def test_every_service_holding_a_secret_has_its_guard() -> None:
    raw = composefile.raw()["services"]
    held = {name: composefile.variables_in(s) & set(REQUIRED) for name, s in raw.items()}
    assert {name: found for name, found in held.items() if found} == {
        name: {variable} for name, variable in GUARDED.items()
    }
    assert {name for name, service in raw.items() if "entrypoint" in service} == set(GUARDED)
    for name, variable in GUARDED.items():
        entrypoint = entrypoint_of(composefile.load()["services"][name])
        assert entrypoint[:2] == ["sh", "-c"] and entrypoint[3:] == [variable], name


def _run_guard(name: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The service's guard as its container starts it, the environment Compose gives it with
    ``env`` (stack.run_guard: a recorder stands for what the guard execs)."""
    service: dict[str, Any] = composefile.load(env)["services"][name]
    return run_guard(service, tmp_path, IMAGE_ENTRYPOINT.get(name))


@pytest.mark.parametrize("how", ["unset", "empty"])
@pytest.mark.parametrize("name", sorted(GUARDED))
def test_each_guard_refuses_to_start_without_its_secret(
    name: str, how: str, tmp_path: Path
) -> None:
    variable = GUARDED[name]
    result = _run_guard(name, _without(variable, how), tmp_path)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{variable} is empty or unset: refusing to start "), lines


@pytest.mark.parametrize("name", sorted(GUARDED))
def test_each_guard_runs_the_command_unchanged_with_its_secret(name: str, tmp_path: Path) -> None:
    result = _run_guard(name, DEMO_ENV, tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    command = command_of(composefile.load()["services"][name])
    assert result.stdout == "started\n" + "".join(f"{word}\n" for word in command)


def _start_redis(env: dict[str, str], tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    service = composefile.load(env)["services"]["redis"]
    port = free_port()
    (tmp_path / "data").mkdir()
    with (tmp_path / "redis.log").open("wb") as log:
        process = subprocess.Popen(
            local_redis_argv(service, port, tmp_path / "data"),
            env=redis_image_env(service, tmp_path / "image"),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, port


def test_redis_starts_through_its_guard_requiring_the_password(tmp_path: Path) -> None:
    need_tool("redis-server", "apt-get install redis-server")
    process, port = _start_redis(DEMO_ENV, tmp_path)
    client = redis.Redis(port=port, password=DEMO_ENV["REDIS_PASSWORD"])
    anonymous = redis.Redis(port=port, retry=Retry(NoBackoff(), 0))
    try:

        def answers() -> bool:
            assert process.poll() is None, (tmp_path / "redis.log").read_text()
            try:
                return bool(client.ping())
            except redis.ConnectionError:  # not listening yet
                return False

        wait_for(answers, timeout=15)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
    finally:
        client.close()
        anonymous.close()
        stop_process(process)


def test_redis_does_not_start_through_its_guard_without_the_password(tmp_path: Path) -> None:
    need_tool("redis-server", "apt-get install redis-server")
    process, port = _start_redis(_without("REDIS_PASSWORD", "unset"), tmp_path)
    try:
        assert process.wait(timeout=15) == 2
    finally:
        stop_process(process)
    output = (tmp_path / "redis.log").read_text()
    assert output.startswith("REDIS_PASSWORD is empty or unset: refusing to start"), output
    with pytest.raises(redis.ConnectionError):  # nothing listens
        redis.Redis(port=port, retry=Retry(NoBackoff(), 0)).ping()

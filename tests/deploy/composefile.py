"""docker-compose.yml as Compose reads it: YAML (anchors, merge keys), then variable
interpolation of every value: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``,
``${VAR-default}``, ``${VAR:?error}`` and ``${VAR?error}`` (the forms the Compose specification
defines; nested defaults are not used here).

``DEMO_ENV`` is what the tests give Compose for the required variables (Compose reads the file
without them, as empty strings; the services refuse to start then: test_compose_guards.py);
``docker_compose_config`` runs the real ``docker-compose config`` with an environment, for the
tests that check Compose itself agrees."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"

# The variables the stack requires to run (the README says how to set them): each defaults to
# empty, and the services that hold one refuse to start without it. URL-safe: the Redis
# password goes into redis:// URLs unescaped.
DEMO_ENV = {
    "REDIS_PASSWORD": "0f4e2a9c7b1d3e5f60718293a4b5c6d7e8f90123456789ab",
    "GRAFANA_ADMIN_PASSWORD": "grafana-test-password",
}
REQUIRED = tuple(DEMO_ENV)
# The variables a user may set; every other `${...}` in the file is a mistake.
OPTIONAL = ("GATEWAYZ_BIND_ADDRESS", "GRAFANA_ANONYMOUS_ENABLED")

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    rf"|\{{(?P<braced>{_NAME})(?:(?P<op>:?[-?])(?P<arg>[^}}]*))?\}}"
    rf"|(?P<named>{_NAME}))"
)


class MissingVariable(ValueError):
    """A ``${VAR:?error}`` (or ``${VAR?error}``) whose variable is unset (or empty)."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        value = env.get(name)
        op = match["op"]
        if op is None:
            return value or ""
        unset = value is None or (op.startswith(":") and value == "")
        if op.endswith("-"):
            return match["arg"] if unset else str(value)
        if unset:
            raise MissingVariable(f"{name}: {match['arg']}")
        return str(value)

    return _VARIABLE.sub(one, text)


def interpolated(node: Any, env: Mapping[str, str]) -> Any:
    """Every string value of ``node`` interpolated (keys are left as they are, as Compose does)."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: interpolated(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolated(value, env) for value in node]
    return node


def raw(path: Path = COMPOSE) -> dict[str, Any]:
    """The file as YAML: anchors and merge keys resolved, nothing interpolated."""
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


def load(env: Mapping[str, str] | None = None, path: Path = COMPOSE) -> dict[str, Any]:
    """The file as Compose sees it with ``env`` (default: ``DEMO_ENV`` alone)."""
    loaded = interpolated(raw(path), DEMO_ENV if env is None else env)
    assert isinstance(loaded, dict)
    return loaded


def variables_in(node: Any) -> set[str]:
    """The names of the variables the string values of ``node`` (uninterpolated) use."""
    if isinstance(node, str):
        return {m["braced"] or m["named"] for m in _VARIABLE.finditer(node) if not m["escaped"]}
    if isinstance(node, dict):
        return {name for value in node.values() for name in variables_in(value)}
    if isinstance(node, list):
        return {name for value in node for name in variables_in(value)}
    return set()


def variables(path: Path = COMPOSE) -> set[str]:
    """The names of every variable the file interpolates."""
    text = "\n".join(
        line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    return {m["braced"] or m["named"] for m in _VARIABLE.finditer(text) if not m["escaped"]}


def docker_compose_config(
    env: Mapping[str, str], path: Path = COMPOSE, *quiet: str
) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f PATH config [-q]`` with exactly ``env`` (plus PATH and HOME) and an
    empty env file: neither the caller's environment nor a developer's ``.env`` leaks in. The
    caller checks the tool is there (need_tool)."""
    base = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    with tempfile.NamedTemporaryFile("w", suffix=".env") as empty:
        return subprocess.run(
            ["docker-compose", "--env-file", empty.name, "-f", str(path), "config", *quiet],
            cwd=path.parent,
            env={**base, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def docker_compose_services(env: Mapping[str, str], path: Path = COMPOSE) -> dict[str, Any]:
    """The services as ``docker-compose config`` prints them (interpolated, normalized)."""
    result = docker_compose_config(env, path)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert isinstance(services, dict)
    return services

"""docker-compose.yml: valid for Compose (the real `docker-compose config -q`, with the variables
the stack requires; without them too: test_compose_guards.py), and what it promises holds:
every service of the stack, pinned images, mounts from deploy/ only, health-gated dependencies
that can turn healthy, the documented ports, the aggregator flags the docs give. The file is
read as Compose reads it (tests/deploy/composefile.py: interpolated with the required variables
set); what makes it safe to copy is checked in test_compose_safety.py and
test_compose_guards.py."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import composefile
from tests.support.processes import need_tool

ROOT = Path(__file__).resolve().parent.parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"

SERVICES = {
    "redis",
    "aggregator-1",
    "aggregator-2",
    "gateway",
    "traffic",
    "prometheus",
    "alertmanager",
    "grafana",
    "loki",
    "tempo",
}
# host port -> (service, container port): the table of docs/getting-started/full-stack.md.
PORTS = {
    3000: ("grafana", 3000),
    9090: ("prometheus", 9090),
    9093: ("alertmanager", 9093),
    9108: ("aggregator-1", 9108),
    9109: ("aggregator-2", 9108),
    8080: ("gateway", 8080),
    3100: ("loki", 3100),
    3200: ("tempo", 3200),
    4318: ("tempo", 4318),
}
APP_IMAGE = "gatewayz-metrics:local"  # built from the Dockerfile, not pulled


def _compose() -> dict[str, Any]:
    return composefile.load()


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _volumes(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume in short syntax (source:target[:mode])."""
    mounts = []
    for volume in service.get("volumes", []):
        assert isinstance(volume, str), f"long volume syntax not expected: {volume!r}"
        source, target = volume.split(":")[:2]
        mounts.append((source, target))
    return mounts


def _ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(published, target) of each port in short syntax ("[IP:]HOST:CONTAINER")."""
    pairs = []
    for port in service.get("ports", []):
        assert isinstance(port, str), f"ports are quoted [IP:]HOST:CONTAINER strings: {port!r}"
        published, target = port.split(":")[-2:]
        pairs.append((int(published), int(target)))
    return pairs


def test_compose_config_is_valid() -> None:
    need_tool("docker-compose", "apt-get install docker-compose")
    result = composefile.docker_compose_config(composefile.DEMO_ENV, COMPOSE, "-q")
    assert (result.returncode, result.stderr) == (0, "")


def test_every_service_of_the_stack_exists() -> None:
    assert set(_services()) == SERVICES


def test_images_are_pinned() -> None:
    for name, service in _services().items():
        image = service.get("image")
        assert isinstance(image, str), f"{name} has no image"
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image} is not pinned"
        if "build" in service:
            assert service["build"] == ".", f"{name} builds from elsewhere than the project root"
            assert image == APP_IMAGE, f"{name}: the built image is {APP_IMAGE}"
        else:
            assert any(c.isdigit() for c in tag), f"{name}: {image} names no version"


def test_app_services_share_the_one_image() -> None:
    built = {name for name, service in _services().items() if "build" in service}
    assert built == {"aggregator-1", "aggregator-2", "gateway", "traffic"}


def test_every_mounted_host_path_exists_under_deploy() -> None:
    named = set(_compose().get("volumes") or {})
    for name, service in _services().items():
        for source, _ in _volumes(service):
            if source in named:
                continue  # a named volume: Docker's, not a host path
            assert source.startswith("./deploy/"), f"{name} mounts {source} outside deploy/"
            path = (ROOT / source).resolve()
            assert path.is_relative_to(DEPLOY), f"{name}: {source} leaves deploy/"
            assert path.exists(), f"{name} mounts {source}, which does not exist"


def test_the_mounted_configs_are_the_ones_the_commands_read() -> None:
    services = _services()
    expected = {
        "prometheus": ("./deploy/prometheus", "/etc/prometheus", "/etc/prometheus/prometheus.yml"),
        "alertmanager": (
            "./deploy/alertmanager",
            "/etc/alertmanager",
            "/etc/alertmanager/alertmanager.yml",
        ),
        "loki": ("./deploy/loki/loki.yml", "/etc/loki/loki.yml", "/etc/loki/loki.yml"),
        "tempo": ("./deploy/tempo/tempo.yml", "/etc/tempo/tempo.yml", "/etc/tempo/tempo.yml"),
    }
    for name, (source, target, config) in expected.items():
        assert (source, target) in _volumes(services[name])
        assert any(arg.endswith(f"config.file={config}") for arg in services[name]["command"])


def test_health_gated_dependencies_have_health_checks() -> None:
    services = _services()
    gated = 0
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for dependency, spec in depends.items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            condition = spec["condition"]
            assert condition in ("service_healthy", "service_started")
            if condition == "service_healthy":
                gated += 1
                assert "test" in services[dependency].get("healthcheck", {}), (
                    f"{name} waits for {dependency} to be healthy, which has no health check"
                )
    assert gated >= 5  # redis, both aggregators, gateway, alertmanager, prometheus


def test_health_checks_probe_readiness() -> None:
    services = _services()

    def probe(name: str) -> str:
        return " ".join(services[name]["healthcheck"]["test"])

    assert "redis-cli ping" in probe("redis")
    for name in ("aggregator-1", "aggregator-2"):
        assert "http://127.0.0.1:9108/readyz" in probe(name)
    assert "http://127.0.0.1:8080/" in probe("gateway")
    assert "/-/ready" in probe("prometheus")
    assert "/-/ready" in probe("alertmanager")
    assert "/api/health" in probe("grafana")


def test_published_ports_are_the_documented_ones() -> None:
    published: dict[int, tuple[str, int]] = {}
    for name, service in _services().items():
        for host, container in _ports(service):
            assert host not in published, f"port {host} published twice"
            published[host] = (name, container)
    assert published == PORTS


def test_the_docs_document_every_published_port() -> None:
    section = (ROOT / "docs" / "getting-started" / "full-stack.md").read_text()
    for port in PORTS:
        assert f"| {port} |" in section, f"port {port} missing from the full stack page's table"


def test_redis_cannot_evict_the_projects_keys() -> None:
    redis = _services()["redis"]
    command = redis["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--maxmemory") + 1].rstrip("mb").isdigit()
    assert redis["image"].startswith("redis:7.")


@pytest.mark.parametrize("replica", ["aggregator-1", "aggregator-2"])
def test_aggregator_replicas(replica: str) -> None:
    command = _services()[replica]["command"]
    assert command[:3] == ["python", "-m", "aggregator"]

    def flag(name: str) -> str:
        value = command[command.index(name) + 1]
        assert isinstance(value, str)
        return value

    assert flag("--host") == "0.0.0.0"
    assert flag("--port") == "9108"
    assert flag("--instance") == replica
    # Redis from GATEWAYZ_REDIS_URL (the password is in it: no --redis-url flag to show it in
    # `ps`).
    assert "--redis-url" not in command
    password = composefile.DEMO_ENV["REDIS_PASSWORD"]
    env = _services()[replica]["environment"]
    assert env["GATEWAYZ_REDIS_URL"] == f"redis://:{password}@redis:6379/0"


def test_gateway_runs_under_gunicorn_with_four_workers() -> None:
    gateway = _services()["gateway"]
    assert gateway["command"] == [
        "gunicorn",
        "-c",
        "examples/gateway/gunicorn.conf.py",
        "examples.gateway.app:app",
    ]
    env = gateway["environment"]
    assert env["GATEWAY_BIND"] == "0.0.0.0:8080"
    assert env["GATEWAY_WORKERS"] == "4"
    password = composefile.DEMO_ENV["REDIS_PASSWORD"]
    assert env["GATEWAYZ_REDIS_URL"] == f"redis://:{password}@redis:6379/0"


EXAMPLE_OWN = {"GATEWAY_BIND", "GATEWAY_WORKERS", "FAKE_PROVIDERS"}
"""The example gateway's own variables (a gateway has its own; not the library's)."""


@pytest.mark.parametrize("name", ["aggregator-1", "aggregator-2", "gateway"])
def test_the_app_services_use_the_projects_variables_by_their_names(name: str) -> None:
    """GATEWAYZ_* (no old name, which would warn at every start), OTEL_* or the example
    gateway's own; each read without a warning by the settings that take it."""
    from aggregator.options import parse_settings
    from client import ClientSettings
    from gatewayz_telemetry import TelemetrySettings

    service = _services()[name]
    env = {key: str(value) for key, value in service["environment"].items()}
    assert {key for key in env if not key.startswith(("GATEWAYZ_", "OTEL_"))} <= EXAMPLE_OWN
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an old name would be a FutureWarning
        if name == "gateway":
            assert ClientSettings.from_env(env).namespace == "gatewayz"
        else:
            settings = parse_settings(list(service["command"][3:]), env)
            assert settings.providers == ("openrouter", "anthropic", "flakyai", "ratelimitai")
            assert (settings.interval_seconds, settings.breaker_interval_seconds) == (5.0, 2.0)
        assert TelemetrySettings.from_env(name, env).logs_enabled


def test_traffic_drives_every_fake_provider() -> None:
    from examples.gateway.providers import parse_providers

    services = _services()
    fake = parse_providers(services["gateway"]["environment"]["FAKE_PROVIDERS"])
    statuses = {provider.failure_status for provider in fake.values()}
    assert statuses == {503, 429}  # failing providers and a rate-limited one
    command = services["traffic"]["command"]
    assert command[:3] == ["python", "-m", "devtools.demo_traffic"]
    assert command[command.index("--url") + 1] == "http://gateway:8080"
    mix = command[command.index("--mix") + 1]
    assert {item.split(":")[0] for item in mix.split(",")} == set(fake)


def test_prometheus_keeps_exemplars() -> None:
    prometheus = _services()["prometheus"]
    assert "--enable-feature=exemplar-storage" in prometheus["command"]
    assert prometheus["image"].startswith("prom/prometheus:v2.")


def test_dockerfile_builds_every_app_service() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in dockerfile.splitlines()]
    assert lines[next(i for i, line in enumerate(lines) if line.startswith("FROM"))] == (
        "FROM python:3.11-slim"
    )
    assert "RUN pip install '.[aggregator,gateway]'" in lines
    assert "COPY examples/ examples/" in lines
    assert "COPY devtools/ devtools/" in lines
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    ignored = (ROOT / ".dockerignore").read_text().split()
    for needed in (
        "examples",
        "devtools",
        "client",
        "aggregator",
        "gatewayz_protocol",
        "gatewayz_transport",
        "gatewayz_telemetry",
        "pyproject.toml",
        "README.md",
    ):
        assert needed not in ignored

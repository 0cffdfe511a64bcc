"""The image holds what its entry points import, shown the way a container would show it.

The image is built from the build context as Docker sees it (``.dockerignore`` respected), with
only what the ``Dockerfile`` copies and its ``pip install`` run in a fresh environment
(tests/deploy/imagebuild.py). Then every service of docker-compose.yml built from that image
(aggregator-1, aggregator-2, gateway, traffic) starts with its compose entrypoint (where it has
one: the guard that refuses an empty Redis password, run by /bin/sh), command and environment,
from the image's working directory in that tree, never from the checkout
(tests/deploy/stack.py): Redis is a redis-server running the compose ``redis`` entrypoint and
command (so its guard, and its password), Loki and Tempo are the test receivers of
tests/support/. Each service must pass its compose health check; the gateway must answer a chat
completion; the traffic must reach both aggregators' /metrics (every fake provider), and logs
and spans the stand-ins; no service may use more memory than its compose ``mem_limit``. A
service whose entry point imports a module the image lacks fails the test with the module's
name.

Where a container engine answers (docker or podman: ``info`` succeeds), the same test builds
the image with it and runs the same services as containers instead. Where none does it runs the
simulation and says so: a ``NoContainerEngine`` warning in pytest's summary naming why each
engine was not used, and a line on stdout (``-s``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from examples.gateway.providers import parse_providers
from tests.deploy import composefile, imagebuild
from tests.deploy.stack import (
    NOBODY,
    Addresses,
    EngineStack,
    Simulation,
    entrypoint_of,
    environment_of,
    find_engine,
    health_command,
    http,
    memory_bytes,
    missing_module,
)
from tests.support import loki, otlp
from tests.support.processes import HEAVY, need_tool, wait_for

pytestmark = HEAVY

PROJECT_SERVICES = ["aggregator-1", "aggregator-2", "gateway", "traffic"]
AGGREGATOR_PORT, GATEWAY_PORT = 9108, 8080
CHAT = json.dumps({"provider": "openrouter", "model": "m1"}).encode()
DEADLINE_SECONDS = 40.0


class NoContainerEngine(UserWarning):
    """No docker or podman answered: the image test ran its simulation."""


def _fake_providers(compose: dict[str, Any]) -> set[str]:
    return set(parse_providers(environment_of(compose["services"]["gateway"])["FAKE_PROVIDERS"]))


def _providers_served(metrics: str) -> set[str]:
    return set(
        re.findall(r'^model_inference_requests_total\{[^}]*provider="([^"]+)"', metrics, re.M)
    )


TELEMETRY_COPY = "COPY gatewayz_telemetry/ gatewayz_telemetry/\n"


@pytest.fixture(scope="module")
def simulated_images() -> Iterator[dict[str, tuple[Path, imagebuild.Image]]]:
    """The two images the simulations start, built at the same time in a directory the image's
    user can enter (pytest's tmp_path is root's alone): the Dockerfile's, and the same without
    ``COPY gatewayz_telemetry/`` (issue #25's bug). Each build is mostly its pip
    install waiting on the package index, so the two take about as long as one. Name ->
    (a directory for the services' logs, the image)."""
    need_tool("redis-server", "apt-get install redis-server")
    root = Path(tempfile.mkdtemp(prefix="gatewayz-image-"))
    root.chmod(0o755)
    original = (imagebuild.ROOT / "Dockerfile").read_text()
    assert TELEMETRY_COPY in original
    lacking = root / "Dockerfile.without-telemetry"
    lacking.write_text(original.replace(TELEMETRY_COPY, ""))
    started = time.monotonic()
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            builds = {
                "full": pool.submit(_build, root / "full"),
                "without-telemetry": pool.submit(_build, root / "lacking", lacking),
            }
            images = {name: build.result() for name, build in builds.items()}
        print(f"both images built in {time.monotonic() - started:.1f}s")
        made = {}
        for name, image in images.items():
            logs = root / f"logs-{name}"
            logs.mkdir()
            made[name] = (logs, image)
        yield made
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _build(directory: Path, dockerfile: Path | None = None) -> imagebuild.Image:
    python = imagebuild.base_python((dockerfile or imagebuild.ROOT / "Dockerfile").read_text())
    if imagebuild.interpreter_for(python) is None:
        need_tool(f"python{python}", f"apt-get install python{python} python{python}-venv")
    image = imagebuild.build(directory, dockerfile=dockerfile)
    home = image.path(image.home)
    home.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:  # the services run as another user: their home is theirs
        os.chown(home, NOBODY, NOBODY)
    return image


@contextlib.contextmanager
def _simulation(image: imagebuild.Image, compose: dict[str, Any], logs: Path) -> Iterator[Any]:
    with loki.receiver() as log_sink, otlp.receiver() as span_sink:
        simulation = Simulation(image, compose, logs)
        simulation.addresses.ports[("loki", 3100)] = int(log_sink.endpoint.rsplit(":", 1)[1])
        simulation.addresses.ports[("tempo", 4318)] = int(span_sink.endpoint.rsplit(":", 1)[1])
        try:
            yield simulation, log_sink, span_sink
        finally:
            simulation.stop()


def _start_redis(simulation: Simulation) -> None:
    """The compose redis service's entrypoint (its guard) and command; it answers with the
    compose GATEWAYZ_REDIS_URL's password and refuses a client without it."""
    simulation.start_redis()
    url = simulation.addresses.rewrite(
        environment_of(simulation.services["gateway"])["GATEWAYZ_REDIS_URL"], "gateway"
    )
    client = redis.Redis.from_url(url, socket_timeout=2)

    def answers() -> bool:
        exited = simulation.redis_exited()
        assert exited is None, exited
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_for(answers, timeout=10)
    finally:
        client.close()
    anonymous = redis.Redis.from_url(re.sub(r"//[^@]*@", "//", url), socket_timeout=2)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    anonymous.close()


def _start_in_order(simulation: Simulation) -> None:
    """Each service once its health-gated dependencies are healthy; then every health check."""
    healthy: set[str] = set()
    for name in simulation.project_services():
        for dependency, spec in (simulation.services[name].get("depends_on") or {}).items():
            gated = spec.get("condition") == "service_healthy"
            if gated and dependency in simulation.running and dependency not in healthy:
                simulation.wait_healthy(dependency)
                healthy.add(dependency)
        simulation.start(name)
    for name in simulation.running:
        if name not in healthy:
            simulation.wait_healthy(name)


def _check_the_stack_runs(simulation: Simulation, log_sink: Any, span_sink: Any) -> None:
    chat = simulation.local_url("gateway", GATEWAY_PORT, "/v1/chat/completions")
    for _ in range(5):  # the compose file's fake openrouter fails 1% of calls, by design
        status, body = http(chat, CHAT)
        if status == 200:
            break
    assert status == 200, f"the gateway answered {status}: {body[:500]}"
    providers = _fake_providers(simulation.compose)
    served: dict[str, set[str]] = {}

    def traffic_reached_both_aggregators() -> bool:
        simulation.sample()  # fails at once if a service has exited; keeps the peak RSS
        for name in ("aggregator-1", "aggregator-2"):
            url = simulation.local_url(name, AGGREGATOR_PORT, "/metrics")
            served[name] = _providers_served(http(url)[1])
        return all(found >= providers for found in served.values())

    try:
        wait_for(traffic_reached_both_aggregators, timeout=DEADLINE_SECONDS, poll=1.0)
    except AssertionError:
        pytest.fail(f"the traffic's providers {sorted(providers)} not served: {served}")

    def telemetry_arrived() -> bool:
        simulation.sample()
        apps = {line.labels.get("app") for line in log_sink.lines()}
        services = {span.resource.get("service.name") for span in span_sink.spans()}
        wanted = {"gatewayz-aggregator", "gatewayz-api"}
        return wanted <= apps and wanted <= services

    wait_for(telemetry_arrived, timeout=DEADLINE_SECONDS, poll=0.5)


def _check_memory(simulation: Simulation) -> list[str]:
    report = []
    for name, running in simulation.running.items():
        limit = memory_bytes(simulation.services[name]["mem_limit"])
        report.append(f"{name} {running.peak_rss / 2**20:.0f} MiB of {limit / 2**20:.0f} MiB")
        assert running.peak_rss < limit, f"{name} used {running.peak_rss} bytes > {limit}"
    return report


def _stop_traffic(simulation: Simulation) -> None:
    """SIGTERM: the traffic generator stops sending, prints its summary and exits 0."""
    traffic = simulation.running["traffic"]
    os.killpg(traffic.process.pid, signal.SIGTERM)
    assert traffic.process.wait(timeout=15) == 0, traffic.output()[-2000:]
    answered = re.search(r"demo traffic: (\d+) requests .*\b200=(\d+)", traffic.output())
    assert answered and int(answered[2]) > 0, traffic.output()[-2000:]


def _simulated(logs: Path, image: imagebuild.Image, why: str) -> None:
    message = f"no container engine answers ({why}): the image test ran its simulation"
    print(message)
    warnings.warn(message, NoContainerEngine, stacklevel=2)
    started = time.monotonic()
    compose = composefile.load()
    with _simulation(image, compose, logs) as (simulation, log_sink, span_sink):
        _start_redis(simulation)
        _start_in_order(simulation)
        healthy = time.monotonic() - started
        assert sorted(simulation.running) == sorted(PROJECT_SERVICES)
        _check_the_stack_runs(simulation, log_sink, span_sink)
        memory = _check_memory(simulation)
        _stop_traffic(simulation)
        user = "nobody" if simulation.run_as() else "the test's user"
    print(
        f"every service healthy at {healthy:.1f}s from the start (run as {user}), stack checked "
        f"at {time.monotonic() - started:.1f}s; peak RSS: {', '.join(memory)}"
    )


def _engine(engine: str) -> None:
    compose = composefile.load()
    stack = EngineStack(engine, compose)
    try:
        stack.build()
        for name in ["redis", *PROJECT_SERVICES]:
            stack.start(name)
            if name in ("redis", "gateway"):
                stack.wait_healthy(name)
        for name in ("aggregator-1", "aggregator-2"):
            stack.wait_healthy(name)
        post = (
            "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:8080"
            f"/v1/chat/completions', data={CHAT!r}, headers={{'content-type': "
            "'application/json'}), timeout=10)"
        )
        assert stack.exec("gateway", ["python", "-c", post]) == 0, stack.failure("gateway", "POST")
        providers = _fake_providers(compose)
        check = (
            "import re, sys, urllib.request as u; m = u.urlopen('http://127.0.0.1:9108/metrics')"
            ".read().decode(); found = set(re.findall(r'^model_inference_requests_total\\{[^}]*"
            f'provider="([^"]+)"\', m, re.M)); sys.exit(0 if found >= {providers!r} else 1)'
        )

        def traffic_served() -> bool:
            for name in PROJECT_SERVICES:
                assert stack.running(name), stack.failure(name, "exited")
            return all(stack.exec(n, ["python", "-c", check]) == 0 for n in PROJECT_SERVICES[:2])

        wait_for(traffic_served, timeout=DEADLINE_SECONDS, poll=2.0)
    finally:
        stack.stop()


def test_every_app_service_runs_from_the_image(request: pytest.FixtureRequest) -> None:
    assert {n for n, s in composefile.load()["services"].items() if "build" in s} == set(
        PROJECT_SERVICES
    )
    engine, why = find_engine()
    if engine:
        _engine(engine)
    else:
        logs, image = request.getfixturevalue("simulated_images")["full"]
        _simulated(logs, image, why)


def test_a_service_whose_import_is_missing_from_the_image_fails_by_its_name(
    simulated_images: dict[str, tuple[Path, imagebuild.Image]],
) -> None:
    """The bug of issue #25, replayed: the Dockerfile without ``COPY gatewayz_telemetry/``
    builds (pip installs the rest), and the aggregator dies importing it: the failure names the
    module, not a health check timeout."""
    logs, image = simulated_images["without-telemetry"]
    assert not image.path(f"{image.workdir}/gatewayz_telemetry").exists()
    with _simulation(image, composefile.load(), logs) as (simulation, _, _):
        _start_redis(simulation)
        simulation.start("aggregator-1")
        with pytest.raises(AssertionError) as failure:
            simulation.wait_healthy("aggregator-1")
    assert "aggregator-1: the image lacks the module 'gatewayz_telemetry'" in str(failure.value)


# --- the parts, without building anything ------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        (".venv/bin/python", True),
        ("client/__pycache__/x.cpython-311.pyc", True),
        ("aggregator/serve/__pycache__/x.pyc", True),  # ** spans directories
        ("gatewayz_metrics.egg-info/PKG-INFO", True),
        ("tests/deploy/test_image.py", True),
        ("deploy/loki/loki.yml", True),
        (".env", True),
        ("client/_buffer.py", False),
        ("examples/gateway/app.py", False),
        ("README.md", False),
        ("pyproject.toml", False),
    ],
)
def test_dockerignore_as_docker_reads_it(path: str, excluded: bool) -> None:
    patterns = imagebuild.read_dockerignore((imagebuild.ROOT / ".dockerignore").read_text())
    assert imagebuild.ignored(path, patterns) is excluded


def test_dockerignore_rules() -> None:
    patterns = imagebuild.read_dockerignore("# c\n/docs\n*.md\n!KEEP.md\nx/**/y\n")
    assert imagebuild.ignored("docs/a.png", patterns)
    assert imagebuild.ignored("README.md", patterns)
    assert not imagebuild.ignored("KEEP.md", patterns)
    assert not imagebuild.ignored("sub/README.md", patterns)  # anchored at the root
    assert imagebuild.ignored("x/y", patterns) and imagebuild.ignored("x/a/b/y/z", patterns)


def test_a_copy_of_something_the_context_lacks_fails_the_build(tmp_path: Path) -> None:
    context = imagebuild.Context(tmp_path, ["a/b.py"])
    image = imagebuild.Image(root=tmp_path / "root", python="3.11", prefix=tmp_path / "p")
    builder = imagebuild.Builder(context, image, "python3.11")
    with pytest.raises(imagebuild.BuildError, match="COPY tests/: not found in the build context"):
        builder.build("WORKDIR /app\nCOPY tests/ tests/\n")
    with pytest.raises(imagebuild.BuildError, match="RUN apt-get install -y x: the simulation"):
        builder.build("RUN apt-get install -y x\n")


def test_the_dockerfile_is_read_as_docker_reads_it() -> None:
    text = (
        '# c\nFROM python:3.11-slim\nENV A=1 \\\n    B=\'two words\'\nRUN ["pip", "install", "."]\n'
    )
    found = list(imagebuild.instructions(text))
    assert [(i.keyword, i.line) for i in found] == [("FROM", 2), ("ENV", 3), ("RUN", 5)]
    assert found[1].words() == ["A=1", "B=two words"]
    assert found[2].words() == ["pip", "install", "."]
    assert imagebuild.base_python(text) == "3.11"


def test_compose_addresses_become_local_ones() -> None:
    compose = composefile.load()
    addresses = Addresses(compose["services"])
    gateway = addresses.ports[("gateway", 8080)]
    redis_port = addresses.port("redis", 6379)
    assert addresses.rewrite("redis://:pw@redis:6379/0", "gateway") == (
        f"redis://:pw@127.0.0.1:{redis_port}/0"
    )
    assert addresses.rewrite("0.0.0.0:8080", "gateway") == f"127.0.0.1:{gateway}"
    assert addresses.rewrite_argv(["--url", "http://gateway:8080"], "traffic") == [
        "--url",
        f"http://127.0.0.1:{gateway}",
    ]
    aggregator = addresses.ports[("aggregator-2", 9108)]
    check = health_command(compose["services"]["aggregator-2"])
    assert check is not None
    assert (
        f"http://127.0.0.1:{aggregator}/readyz" in addresses.rewrite_argv(check, "aggregator-2")[-1]
    )
    argv = ["python", "-m", "aggregator", "--host", "0.0.0.0", "--port", "9108"]
    assert addresses.rewrite_argv(argv, "aggregator-2")[-3:] == [
        "127.0.0.1",
        "--port",
        str(aggregator),
    ]


def test_with_an_engine_each_service_is_a_container_of_the_built_image(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The engine path's commands (this machine may have no engine to run them)."""
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(EngineStack, "run", lambda self, *args, **_: calls.append(args) or "")
    stack = EngineStack("docker", composefile.load(), network="net")
    stack.start("aggregator-1")
    stack.start("redis")
    aggregator, redis_run = calls
    assert aggregator[:5] == ("run", "-d", "--name", "net-aggregator-1", "--network")
    assert aggregator[6:8] == ("--network-alias", "aggregator-1")
    assert "--init" in aggregator and aggregator[aggregator.index("--memory") + 1] == "256m"
    password = composefile.DEMO_ENV["REDIS_PASSWORD"]
    assert f"GATEWAYZ_REDIS_URL=redis://:{password}@redis:6379/0" in aggregator
    # the compose entrypoint: its program as --entrypoint, its arguments after the image
    guard = entrypoint_of(composefile.load()["services"]["aggregator-1"])
    assert guard[:2] == ["sh", "-c"] and aggregator[aggregator.index("--entrypoint") + 1] == "sh"
    tail = aggregator[aggregator.index(stack.tag) :]
    assert tail == (stack.tag, *guard[1:], "python", "-m", "aggregator", "--host", "0.0.0.0",
                    "--port", "9108", "--instance", "aggregator-1")  # fmt: skip
    assert "redis:7.2.5" in redis_run and "--requirepass" in redis_run
    assert redis_run[redis_run.index("redis:7.2.5") + 1 : redis_run.index("redis:7.2.5") + 4] == (
        "-c", entrypoint_of(composefile.load()["services"]["redis"])[2], "REDIS_PASSWORD"
    )  # fmt: skip
    assert stack.created == ["net-aggregator-1", "net-redis"]


def test_a_missing_module_is_named() -> None:
    output = "Traceback ...\nModuleNotFoundError: No module named 'gatewayz_telemetry'\n"
    assert missing_module(output) == "gatewayz_telemetry"
    assert missing_module("fine") is None

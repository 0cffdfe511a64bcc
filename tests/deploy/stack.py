"""The compose stack's project services run from a built image, with or without an engine.

Without one (``Simulation``): each service built from the image (``build:`` in compose) runs its
compose ``entrypoint`` (a ``sh -c`` guard, run for real: /bin/sh is the host's) then its compose
``command`` (else the image's ``CMD``) with the image's ``ENV`` and its compose
``environment``, in the image's working directory inside the tree imagebuild.py made, with the
fresh environment's Python first on PATH, as a user other than root when the test runs as root
(the image's ``USER``; HOME its home in the tree), in a process group of its own. Compose's
network is replaced by loopback: each (service, container port) a test process listens on, or
that nothing listens on, gets a local port (``Addresses``), and every ``service:port``,
``0.0.0.0`` and ``127.0.0.1:port`` in a command, an environment value or a health check is
rewritten to it. Health checks (``CMD``, ``CMD-SHELL``) run the same way, as compose would run
them in the container, until they pass. The compose ``redis`` service runs the same way (its
guard, then the host's redis-server), a stand-in for the redis image's ``docker-entrypoint.sh``
first on PATH.

With an engine (``EngineStack``: docker or podman that answers): the image is built by the
engine, each service runs as a container on a network of its own with its compose name as
alias, and the health checks run with ``exec`` inside it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.redis_server import free_port
from tests.deploy.imagebuild import ROOT, Image, reachable_by_anyone

NOBODY = 65534
MODULE = re.compile(r"No module named '([\w.]+)'")
HEALTH_CAP_SECONDS = 60.0


def duration(text: str | None, default: float) -> float:
    """A compose duration (``5s``, ``1m30s``, ``500ms``) in seconds."""
    if not text:
        return default
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(text))
    return sum(float(number) * units[unit] for number, unit in parts) or default


def memory_bytes(text: str | int) -> int:
    """A compose memory size (``256m``, ``1g``, ``384mb``, bytes) in bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmg]?)b?", str(text).strip().lower())
    assert match, f"not a memory size: {text!r}"
    scale = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match[2]]
    return int(float(match[1]) * scale)


def container_ports(service: Mapping[str, Any]) -> list[int]:
    """The ports a service listens on in its container: its published targets and ``expose``."""
    found: list[int] = []
    for port in service.get("ports", []):
        target = port["target"] if isinstance(port, dict) else str(port).split(":")[-1]
        found.append(int(str(target).split("/")[0]))
    found += [int(str(port).split("/")[0]) for port in service.get("expose", [])]
    return found


def _words(value: str | list[Any]) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(w) for w in value]


def command_of(service: Mapping[str, Any], image: Image | None = None) -> list[str]:
    command = service.get("command")
    if command is None:
        return list(image.cmd) if image else []
    return _words(command)


def entrypoint_of(service: Mapping[str, Any]) -> list[str]:
    """The compose ``entrypoint`` (it replaces the image's), ``[]`` when the service sets none."""
    entrypoint = service.get("entrypoint")
    return [] if entrypoint is None else _words(entrypoint)


def container_argv(service: Mapping[str, Any], image: Image | None = None) -> list[str]:
    """What the container runs: the compose entrypoint, then the command. As Compose does, an
    entrypoint set in compose drops the image's ``CMD`` when no ``command`` is given."""
    entrypoint = entrypoint_of(service)
    return [*entrypoint, *command_of(service, None if entrypoint else image)]


REDIS_IMAGE_ENTRYPOINT = "docker-entrypoint.sh"
_ENTRYPOINT_STAND_IN = """#!/bin/sh
# Stands for the redis image's docker-entrypoint.sh, which drops root for the redis user and
# then runs its arguments: here, only the running.
exec "$@"
"""


def _executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def redis_image_env(service: Mapping[str, Any], directory: Path) -> dict[str, str]:
    """The environment the compose ``redis`` service runs with on this host: its compose
    ``environment``, and PATH: ``directory`` with a stand-in for the image's
    ``docker-entrypoint.sh`` (the guard execs it), then the test's (redis-server)."""
    _executable(directory / REDIS_IMAGE_ENTRYPOINT, _ENTRYPOINT_STAND_IN)
    path = f"{directory}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    return {**environment_of(service), "PATH": path}


# Stands for what a guard execs: says it started, then its arguments one per line.
_RECORDER = '#!/bin/sh\necho started\nfor word; do printf "%s\\n" "$word"; done\n'


def run_guard(
    service: Mapping[str, Any], directory: Path, image_entrypoint: str | None = None
) -> subprocess.CompletedProcess[str]:
    """A service's guard (its compose ``entrypoint``, ``sh -c SCRIPT VARIABLE``) run by /bin/sh
    with its command and its compose environment, as its container starts it, a recorder
    standing for what the guard execs: ``image_entrypoint`` (the image's, on PATH or an
    absolute path in the script), else the command itself. The recorder prints ``started`` and
    its arguments, one per line."""
    entrypoint, command = entrypoint_of(service), command_of(service)
    assert entrypoint[:2] == ["sh", "-c"], f"not a guard: {entrypoint}"
    on_path = image_entrypoint if image_entrypoint and "/" not in image_entrypoint else None
    recorder = _executable(directory / "bin" / (on_path or "recorder"), _RECORDER)
    script = entrypoint[2]
    if image_entrypoint is None:
        command = [str(recorder), *command]
    elif on_path is None:  # a path in the script: the recorder's instead
        assert script.count(f'exec {image_entrypoint} "$@"') == 1, script
        script = script.replace(image_entrypoint, str(recorder))
    return subprocess.run(
        ["/bin/sh", "-c", script, *entrypoint[3:], *command],
        env={**environment_of(service), "PATH": f"{recorder.parent}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def local_redis_argv(service: Mapping[str, Any], port: int, workdir: Path) -> list[str]:
    """The compose ``redis`` service's entrypoint and command (its password, maxmemory,
    policy) listening on ``127.0.0.1:port`` with its files in ``workdir``."""
    command = command_of(service)
    assert command[0] == "redis-server", f"the redis service runs {command[0]}"
    local = ("--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir))
    return [*container_argv(service), *local]


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def health_command(service: Mapping[str, Any]) -> list[str] | None:
    test = (service.get("healthcheck") or {}).get("test")
    if test is None or service["healthcheck"].get("disable"):
        return None
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    kind, *rest = test
    if kind == "NONE":
        return None
    if kind == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(rest)]
    assert kind == "CMD", f"unknown health check form {kind!r}"
    return list(rest)


def health_deadline(service: Mapping[str, Any]) -> float:
    """How long compose would wait for the first healthy answer (capped for a test)."""
    check = service.get("healthcheck") or {}
    waited = duration(check.get("start_period"), 0.0) + duration(check.get("interval"), 30.0) * int(
        check.get("retries", 3)
    )
    return min(waited, HEALTH_CAP_SECONDS)


def missing_module(output: str) -> str | None:
    match = MODULE.search(output)
    return match[1] if match else None


def start_order(services: Mapping[str, Mapping[str, Any]], names: list[str]) -> list[str]:
    """``names`` with every dependency (among ``names``) before its dependents."""
    ordered: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {(*path, name)}"
        if name in ordered:
            return
        for dependency in services[name].get("depends_on") or {}:
            if dependency in names:
                visit(dependency, (*path, name))
        ordered.append(name)

    for name in names:
        visit(name, ())
    return ordered


class Addresses:
    """Compose's network on loopback: (service, container port) -> a local port."""

    def __init__(self, services: Mapping[str, Any]) -> None:
        self.services = set(services)
        self.ports: dict[tuple[str, int], int] = {}
        for name, service in services.items():
            for port in container_ports(service):
                self.port(name, port)

    def port(self, service: str, container_port: int) -> int:
        """The local port standing for ``service:container_port`` (a free one, nothing
        listening, until a test process listens on it)."""
        key = (service, container_port)
        if key not in self.ports:
            self.ports[key] = free_port()
        return self.ports[key]

    def rewrite(self, text: str, own: str) -> str:
        def address(match: re.Match[str]) -> str:
            host, port = match["host"], int(match["port"])
            if host in self.services:
                return f"{match['pre']}127.0.0.1:{self.port(host, port)}"
            if host in ("127.0.0.1", "localhost", "0.0.0.0") and (own, port) in self.ports:
                return f"{match['pre']}127.0.0.1:{self.ports[(own, port)]}"
            return match[0]

        text = re.sub(
            r"(?P<pre>^|[/@\s'\"(=])(?P<host>[A-Za-z0-9_.-]+):(?P<port>\d+)\b", address, text
        )
        return text.replace("0.0.0.0", "127.0.0.1")

    def rewrite_argv(self, argv: list[str], own: str) -> list[str]:
        own_ports = {str(port): local for (name, port), local in self.ports.items() if name == own}
        return [str(own_ports[w]) if w in own_ports else self.rewrite(w, own) for w in argv]


def group_rss(pgid: int) -> int:
    """Resident memory of every process in the process group ``pgid``, in bytes."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            found = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{entry}/status").read_text())
        except (OSError, ValueError, IndexError):
            continue
        total += int(found[1]) * 1024 if found else 0
    return total


def stop_group(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM to the process group this test started (the service and its children, e.g.
    Gunicorn's workers), SIGKILL to what is left after ``timeout``; the leader is reaped."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    while time.monotonic() < deadline and (process.poll() is None or group_rss(process.pid)):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@dataclass
class Running:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    health: list[str] | None
    env: dict[str, str]
    cwd: Path
    peak_rss: int = 0

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, group_rss(self.process.pid))


@dataclass
class Simulation:
    """The project services of ``compose`` started from ``image`` (see the module docstring)."""

    image: Image
    compose: dict[str, Any]
    logs: Path
    addresses: Addresses = field(init=False)
    running: dict[str, Running] = field(default_factory=dict)
    others: list[subprocess.Popen[bytes]] = field(default_factory=list)
    redis: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.addresses = Addresses(self.compose["services"])
        self.services: dict[str, dict[str, Any]] = self.compose["services"]

    def project_services(self) -> list[str]:
        return start_order(self.services, [n for n, s in self.services.items() if "build" in s])

    def local_url(self, service: str, container_port: int, path: str = "") -> str:
        return f"http://127.0.0.1:{self.addresses.port(service, container_port)}{path}"

    def run_as(self) -> dict[str, Any]:
        """Run as another user than root (``nobody``) when the image has a ``USER`` and the
        test runs as root, provided that user can start the image's Python at all."""
        if os.geteuid() != 0 or self.image.user in (None, "root", "0"):
            return {}
        if not reachable_by_anyone(self.image.interpreter):
            return {}
        return {"user": NOBODY, "group": NOBODY, "extra_groups": []}

    def start_redis(self) -> str:
        """The compose ``redis`` service (its guard, then redis-server with its password,
        maxmemory, policy) on a local port; returns the port."""
        service = self.services["redis"]
        port = self.addresses.port("redis", 6379)
        workdir = self.logs / "redis"
        workdir.mkdir(exist_ok=True)
        argv = local_redis_argv(service, port, workdir)
        env = redis_image_env(service, self.logs / "redis-image")
        with (self.logs / "redis.log").open("wb") as log:
            process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.others.append(process)
        self.redis = process
        return str(port)

    def redis_exited(self) -> str | None:
        """Why the redis service is gone (its exit code and output), None while it runs."""
        assert self.redis is not None, "redis was not started"
        code = self.redis.poll()
        if code is None:
            return None
        return f"redis exited with {code}: {(self.logs / 'redis.log').read_text()[-2000:]}"

    def start(self, name: str) -> Running:
        service = self.services[name]
        cwd = self.image.path(self.image.workdir)
        env = {**self.image.process_env()}
        env |= {k: self.addresses.rewrite(v, name) for k, v in environment_of(service).items()}
        argv = self.addresses.rewrite_argv(container_argv(service, self.image), name)
        health = health_command(service)
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self.run_as(),
            )
        running = Running(
            name, process, log, health and self.addresses.rewrite_argv(health, name), env, cwd
        )
        self.running[name] = running
        return running

    def failure(self, running: Running, what: str, extra: str = "") -> str:
        output = running.output() + extra
        module = missing_module(output)
        if module:
            return f"{running.name}: the image lacks the module {module!r} ({what})"
        return f"{running.name}: {what}\n--- its output (end) ---\n{output[-3000:]}"

    def wait_healthy(self, name: str) -> None:
        running = self.running[name]
        if running.health is None:
            return
        deadline = time.monotonic() + health_deadline(self.services[name])
        timeout = duration(self.services[name]["healthcheck"].get("timeout"), 30.0)
        last = ""
        while True:
            code = running.process.poll()
            assert code is None, self.failure(running, f"exited with {code} before healthy")
            try:
                check = subprocess.run(
                    running.health,
                    cwd=running.cwd,
                    env=running.env,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    check=False,
                    **self.run_as(),
                )
                if check.returncode == 0:
                    return
                last = check.stdout + check.stderr
            except subprocess.TimeoutExpired:
                last = "the health check timed out"
            running.sample()
            if time.monotonic() > deadline:
                raise AssertionError(
                    self.failure(running, "health check never passed", "\n" + last)
                )
            time.sleep(0.5)

    def sample(self) -> None:
        for running in self.running.values():
            running.sample()
            code = running.process.poll()
            assert code is None, self.failure(running, f"exited with {code}")

    def stop(self) -> None:
        for running in reversed(list(self.running.values())):
            stop_group(running.process)
        for process in reversed(self.others):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def http(url: str, body: bytes | None = None, timeout: float = 5.0) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method="POST" if body else "GET")
    if body:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


# --- with a container engine --------------------------------------------------------------


def find_engine() -> tuple[str | None, str]:
    """The first of docker, podman that answers (``info``), and why none did otherwise."""
    reasons = []
    for name in ("docker", "podman"):
        if shutil.which(name) is None:
            reasons.append(f"{name}: not installed")
            continue
        try:
            result = subprocess.run(
                [name, "info"], capture_output=True, text=True, timeout=15, check=False
            )
        except subprocess.TimeoutExpired:
            reasons.append(f"{name}: `{name} info` did not answer in 15 s")
            continue
        if result.returncode == 0:
            return name, ""
        first = (result.stderr.strip().splitlines() or ["no answer"])[-1]
        reasons.append(f"{name}: {first}")
    return None, "; ".join(reasons)


@dataclass
class EngineStack:
    """The same services as containers of a real engine (see the module docstring)."""

    engine: str
    compose: dict[str, Any]
    tag: str = field(default_factory=lambda: f"gatewayz-metrics:image-test-{uuid.uuid4().hex[:8]}")
    created: list[str] = field(default_factory=list)
    network: str = ""

    def run(self, *args: str, timeout: float = 120.0, check: bool = True) -> str:
        result = subprocess.run(
            [self.engine, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{self.engine} {' '.join(args[:3])}: {result.stderr[-2000:]}")
        return result.stdout

    def build(self) -> None:
        self.run("build", "-t", self.tag, "-f", str(ROOT / "Dockerfile"), str(ROOT), timeout=600)
        self.network = f"gatewayz-image-test-{uuid.uuid4().hex[:8]}"
        self.run("network", "create", self.network)

    def container(self, name: str) -> str:
        return f"{self.network}-{name}"

    def start(self, name: str) -> None:
        service = self.compose["services"][name]
        args = ["run", "-d", "--name", self.container(name), "--network", self.network]
        args += ["--network-alias", name]
        if service.get("init"):
            args.append("--init")
        if service.get("mem_limit"):
            args += ["--memory", str(service["mem_limit"])]
        for key, value in environment_of(service).items():
            args += ["-e", f"{key}={value}"]
        entrypoint = entrypoint_of(service)
        if entrypoint:  # --entrypoint takes the program; its arguments follow the image
            args += ["--entrypoint", entrypoint[0]]
        image = self.tag if "build" in service else service["image"]
        self.created.append(self.container(name))
        self.run(*args, image, *entrypoint[1:], *command_of(service))

    def logs(self, name: str) -> str:
        result = subprocess.run(
            [self.engine, "logs", self.container(name)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return result.stdout + result.stderr

    def running(self, name: str) -> bool:
        state = self.run("inspect", "-f", "{{.State.Running}}", self.container(name), check=False)
        return state.strip() == "true"

    def failure(self, name: str, what: str) -> str:
        output = self.logs(name)
        module = missing_module(output)
        if module:
            return f"{name}: the image lacks the module {module!r} ({what})"
        return f"{name}: {what}\n{output[-3000:]}"

    def exec(self, name: str, argv: list[str], timeout: float = 30.0) -> int:
        result = subprocess.run(
            [self.engine, "exec", self.container(name), *argv],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        return result.returncode

    def wait_healthy(self, name: str) -> None:
        service = self.compose["services"][name]
        check = health_command(service)
        if check is None:
            return
        deadline = time.monotonic() + health_deadline(service)
        while self.exec(name, check) != 0:
            assert self.running(name), self.failure(name, "exited before healthy")
            assert time.monotonic() < deadline, self.failure(name, "health check never passed")
            time.sleep(1)

    def stop(self) -> None:
        for container in reversed(self.created):
            self.run("rm", "-f", container, check=False)
        if self.network:
            self.run("network", "rm", self.network, check=False)
        self.run("rmi", "-f", self.tag, check=False)

"""What gets installed where: the wheel holds the four packages only, a worker's install pulls
Redis and nothing server-side, and the aggregator never loads the worker stack."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import redis

from gatewayz_protocol.keys import Keys

ROOT = Path(__file__).resolve().parent.parent
SERVER_SIDE = (
    "fastapi",
    "starlette",
    "uvicorn",
    "apscheduler",
    "prometheus_client",
    "opentelemetry",
    "logging_loki",
    "fakeredis",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy: setuptools leaves build/ and *.egg-info in the tree it builds.
    source = tmp_path_factory.mktemp("source") / "gatewayz-metrics"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__"),
    )
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("gatewayz_metrics-*.whl")
    return built


def test_the_wheel_holds_the_packages_and_a_worker_requires_only_redis(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}
        (metadata_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
    assert {name for name in top if not name.endswith(".dist-info")} == {
        "aggregator",
        "client",
        "gatewayz_protocol",
        "gatewayz_telemetry",
        "gatewayz_transport",
    }
    requires = metadata.get_all("Requires-Dist") or []
    # redis-py from 5.0.1 (a gateway's pin), hiredis from 3.0 (its RESP3 parser): both tested
    assert [r for r in requires if "extra ==" not in r] == ["redis[hiredis]>=5.0.1", "hiredis>=3.0"]
    assert set(metadata.get_all("Provides-Extra") or []) == {
        "aggregator",
        "gateway",
        "demo",
        "telemetry",
        "docs",
        "test-tools",
        "test",
    }
    # Loki's client comes with the telemetry extra, which the aggregator and the gateway pull.
    assert 'python-logging-loki>=0.3.1; extra == "telemetry"' in requires
    for extra in ("aggregator", "gateway"):
        assert f'gatewayz-metrics[telemetry]; extra == "{extra}"' in requires


def test_a_worker_installs_records_and_flushes_without_server_side_libraries(
    wheel: Path, tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    env_dir = tmp_path / "worker-venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True
    )
    namespace = f"test-pkg-{uuid.uuid4().hex[:8]}"
    script = f"""
import importlib.util, sys
from client import MetricsClient
metrics = MetricsClient(redis_url={redis_url!r}, namespace={namespace!r})
assert metrics.record("openrouter", 0.2, status_code=200)
assert metrics.flush(timeout=10)
missing = [m for m in {SERVER_SIDE!r} if importlib.util.find_spec(m) is not None]
assert not missing, missing
"""
    try:
        done = subprocess.run(
            [str(python), "-c", script], cwd=tmp_path, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert r.hget(Keys(namespace).totals("openrouter"), "n:success") == b"1"
    finally:
        for key in r.scan_iter(Keys(namespace).pattern()):
            r.delete(key)


@pytest.mark.parametrize(
    ("imports", "forbidden"),
    [
        ("import aggregator.__main__, aggregator.serve.app, aggregator.cli.breaker", ("client",)),
        # (not opentelemetry: redis-py itself imports it when it is installed)
        ("import client", ("aggregator", *(m for m in SERVER_SIDE if m != "opentelemetry"))),
        # the contract loads no Redis client: it can be read and tested without a transport
        (
            "import gatewayz_protocol.keys, gatewayz_protocol.scripts, gatewayz_protocol.fields",
            ("client", "aggregator", "gatewayz_transport", "redis", "hiredis"),
        ),
        ("import gatewayz_transport.connection", ("client", "aggregator")),
        # telemetry loads Loki's client only once setup() finds GATEWAYZ_LOKI_URL
        (
            "import gatewayz_telemetry",
            ("client", "aggregator", "gatewayz_transport", "logging_loki", "requests"),
        ),
    ],
)
def test_what_each_side_loads(imports: str, forbidden: tuple[str, ...]) -> None:
    script = (
        f"import sys\n{imports}\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(forbidden)!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"

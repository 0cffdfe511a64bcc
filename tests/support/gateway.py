"""The example gateway under Gunicorn (``examples/gateway``), started for a test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from devtools.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def example_gateway(
    redis_url: str,
    namespace: str,
    env: Mapping[str, str] | None = None,
    *,
    unset: tuple[str, ...] = (),
    stderr: IO[bytes] | int = subprocess.DEVNULL,
    graceful: bool = True,
) -> Iterator[str]:
    """Start Gunicorn with the example gateway on a free port (4 workers and one fake provider
    unless ``env`` says otherwise; ``unset``: variables of this environment it must not
    inherit); yield its base URL once a worker answers. At the end: SIGTERM and a clean exit
    (``graceful``), or the whole process group killed."""
    port = free_port()
    full = {
        **os.environ,
        "GATEWAYZ_REDIS_URL": redis_url,
        "GATEWAYZ_NAMESPACE": namespace,
        "GATEWAY_BIND": f"127.0.0.1:{port}",
        "GATEWAY_WORKERS": "4",
        "FAKE_PROVIDERS": "openrouter:0.02:0.0",
        **(env or {}),
    }
    for name in unset:
        full.pop(name, None)
    command = [
        sys.executable, "-m", "gunicorn",
        "-c", str(ROOT / "examples/gateway/gunicorn.conf.py"),
        "examples.gateway.app:app",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, env=full, stderr=stderr, start_new_session=not graceful
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/worker-metrics", timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, "gunicorn exited"
                assert time.monotonic() < deadline, "gunicorn did not answer"
                time.sleep(0.1)
        yield base
    finally:
        if graceful:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        else:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

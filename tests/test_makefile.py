"""The Makefile's front door: ``make run`` and ``make demo`` read the product's GATEWAYZ_*
variables only, whatever the shell exports (REDIS_URL, the test harness's variable, which the
product still reads as the old name of GATEWAYZ_REDIS_URL). Run with the venv of this process,
its installation taken as done (``-o``: a test never installs anything)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def make(target: str, args: str) -> subprocess.CompletedProcess[str]:
    """``make -s TARGET ARGS=...`` with REDIS_URL exported (to a Redis nobody runs), no
    GATEWAYZ_* variable set."""
    if shutil.which("make") is None:
        pytest.skip("no make on PATH")
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAYZ_")}
    env["REDIS_URL"] = "redis://127.0.0.1:1/0"
    venv = sys.prefix
    stamps = [f"-o{venv}/bin/.installed", f"-o{venv}/bin/.demo-installed"]
    return subprocess.run(
        ["make", "-s", "--no-print-directory", *stamps, f"VENV={venv}", target, f"ARGS={args}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_make_run_does_not_hand_the_shells_redis_url_to_the_aggregator() -> None:
    done = make("run", "--port notaport")
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == (
        "aggregator: error: --port: invalid value 'notaport' (expected a whole number)"
    )  # and nothing about REDIS_URL


def test_make_demo_does_not_hand_the_shells_redis_url_to_the_demo() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = make("demo", f"--port {port}")  # stops at once: the port is taken
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines()[0] == (
        f"error: port {port} is in use: nothing started; pick another with --port N (make demo "
        'ARGS="--port N")'
    )  # and nothing about REDIS_URL


def test_make_run_on_a_port_in_use_says_how_to_move_it() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = make("run", f"--port {port}")
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == (
        f"aggregator: error: cannot listen on 127.0.0.1:{port}: address already in use; pick "
        'another port with --port N or GATEWAYZ_AGGREGATOR_PORT (make run ARGS="--port N")'
    )

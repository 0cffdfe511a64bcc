"""The demo's own refusals (devtools/demo.py), before it starts anything: a port in use is one
line saying how to move it, flag and ``make demo`` form alike, and nothing claims to stop what
never started. (The whole demo runs in tests/test_demo.py.)"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("flag", ["--port", "--gateway-port"])
def test_a_port_in_use_is_one_line_naming_the_flag_and_nothing_is_said_stopped(flag: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as occupant:
        port = occupant.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "devtools.demo", flag, str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        f"error: port {port} is in use: nothing started; pick another with {flag} N "
        f'(make demo ARGS="{flag} N")\n',
    )

"""How a renamed variable is told (gatewayz_protocol/deprecations.py): a FutureWarning naming the
line of the code outside this project that read the settings, never a line of this project's own;
one plain line on stderr in this project's commands; once per process either way."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayz_protocol.deprecations import forget_notices, notices_as_lines
from gatewayz_protocol.options import SHARED, read_all

ROOT = Path(__file__).resolve().parents[2]
TOLD = (
    "REDIS_URL is deprecated and no longer read from the next release: set GATEWAYZ_REDIS_URL "
    "instead (its value is used meanwhile)."
)


@pytest.fixture(autouse=True)
def fresh_notices() -> Iterator[None]:
    forget_notices()
    yield
    forget_notices()


def test_a_gateways_warning_names_its_own_line_not_this_projects(tmp_path: Path) -> None:
    """Shown by default (no -W flag), once although the settings are read twice, attributed to
    the script's line: no file or source line of this project's packages."""
    script = tmp_path / "gateway_app.py"
    script.write_text(
        "from gatewayz_protocol.options import SHARED, read_all\n"
        "\n"
        "settings = read_all(SHARED, {'REDIS_URL': 'redis://old:6379/0'})\n"
        "again = read_all(SHARED, {'REDIS_URL': 'redis://old:6379/0'})\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert done.stderr == (
        f"{script}:3: FutureWarning: {TOLD}\n"
        "  settings = read_all(SHARED, {'REDIS_URL': 'redis://old:6379/0'})\n"
    )


def test_a_command_of_this_project_says_it_in_one_line_and_no_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with warnings.catch_warnings(record=True) as caught, notices_as_lines("aggregator"):
        warnings.simplefilter("always")
        read_all(SHARED, {"REDIS_URL": "redis://old:6379/0"})
        read_all(SHARED, {"REDIS_URL": "redis://old:6379/0"})
    assert caught == []
    assert capsys.readouterr().err == f"aggregator: warning: {TOLD}\n"
    forget_notices()
    with pytest.warns(FutureWarning, match="^REDIS_URL is deprecated"):  # outside: a warning
        read_all(SHARED, {"REDIS_URL": "redis://old:6379/0"})
    assert capsys.readouterr().err == ""

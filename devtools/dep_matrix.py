"""Test what pyproject.toml declares: the client's and the aggregator's tests on the OLDEST and
on the NEWEST versions of their dependencies the extras allow (``make test-deps``, run by CI
after ``make test``).

``python -m devtools.dep_matrix [--only oldest] [-- PYTEST ARGS]`` builds one virtualenv per
constraints file in ``devtools/constraints/`` (``oldest.txt``: each lower bound of
pyproject.toml, ``redis==5.0.1`` the first of them; ``newest.txt``: the newest releases, pinned
so a run is reproducible) under ``.venv-matrix/<name>``, installs the project with its test
extras under those constraints (again only when the file or pyproject.toml changed), checks that
what got installed is what the file says, and runs ``pytest`` on the client's, the aggregator's,
the transport's and the contract's tests against a Redis (``devtools.redis_server``: the one on
REDIS_URL, else one started for the run). Prints each environment's versions, result and wall
time; exits non-zero when any environment failed.

``--refresh-newest`` rewrites ``newest.txt`` with the newest release of each package it names,
as the package index reports it (then run the matrix, and commit the file when it passes).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "devtools" / "constraints"
VENVS = ROOT / ".venv-matrix"
ENVIRONMENTS = ("oldest", "newest")
TEST_PATHS = (
    "tests/client",
    "tests/aggregator",
    "tests/gatewayz_transport",
    "tests/gatewayz_protocol",
)
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)")


@dataclass(frozen=True)
class Outcome:
    name: str
    versions: dict[str, str]
    returncode: int
    install_seconds: float
    test_seconds: float


def pins(constraints: Path) -> dict[str, str]:
    """The ``name==version`` lines of a constraints file (names as written)."""
    found = {}
    for line in constraints.read_text().splitlines():
        match = _PIN.match(line.strip())
        if match:
            found[match.group(1)] = match.group(2)
    return found


def _stamp(constraints: Path) -> str:
    digest = hashlib.sha256(constraints.read_bytes())
    digest.update((ROOT / "pyproject.toml").read_bytes())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def _run(command: Sequence[str | Path]) -> None:
    subprocess.run([str(part) for part in command], cwd=ROOT, check=True)


def install(name: str) -> float:
    """The environment ``name``, made or brought up to date; the seconds it took."""
    started = time.monotonic()
    constraints = CONSTRAINTS / f"{name}.txt"
    venv = VENVS / name
    stamp_file = venv / ".installed"
    stamp = _stamp(constraints)
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        return 0.0
    print(f"[{name}] creating {venv.relative_to(ROOT)} under {constraints.relative_to(ROOT)}")
    _run([sys.executable, "-m", "venv", "--clear", venv])
    pip: list[str | Path] = [
        venv / "bin" / "python",
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]
    _run([*pip, "--upgrade", "pip"])
    _run([*pip, "-c", constraints, "-e", ".[test]"])
    stamp_file.write_text(stamp)
    return time.monotonic() - started


def installed_versions(name: str) -> dict[str, str]:
    """What the environment holds of each package its constraints file pins."""
    wanted = pins(CONSTRAINTS / f"{name}.txt")
    script = "import sys, importlib.metadata as m\nfor n in sys.argv[1:]: print(n, m.version(n))\n"
    python = VENVS / name / "bin" / "python"
    out = subprocess.run(
        [str(python), "-c", script, *wanted], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def run_tests(name: str, pytest_args: Sequence[str]) -> int:
    python = str(VENVS / name / "bin" / "python")
    command = [
        python, "-m", "devtools.redis_server", "--", python, "-m", "pytest", "-q",
        "-p", "no:cacheprovider", *TEST_PATHS, *pytest_args,
    ]  # fmt: skip
    print(f"[{name}] {' '.join(command[3:])}", flush=True)
    return subprocess.run(command, cwd=ROOT, check=False).returncode


def check(name: str) -> dict[str, str]:
    """The installed versions; SystemExit when one is not what the constraints file pins."""
    versions = installed_versions(name)
    wanted = pins(CONSTRAINTS / f"{name}.txt")
    wrong = {n: v for n, v in versions.items() if v != wanted[n]}
    if wrong:
        raise SystemExit(f"[{name}] installed {wrong}, constraints say {wanted}")
    return versions


def refresh_newest() -> None:
    """Rewrite newest.txt's pins with each package's newest release on the index."""
    path = CONSTRAINTS / "newest.txt"
    text = path.read_text()
    for package in pins(path):
        out = subprocess.run(
            [sys.executable, "-m", "pip", "index", "versions", package],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        newest = re.search(r"\(([^)]+)\)", out)
        if newest:
            text = re.sub(rf"(?m)^{re.escape(package)}==\S+", f"{package}=={newest.group(1)}", text)
    path.write_text(text)
    print(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.dep_matrix", description=__doc__)
    parser.add_argument("--only", choices=ENVIRONMENTS, action="append", help="one environment")
    parser.add_argument("--install-only", action="store_true", help="build, run no test")
    parser.add_argument("--refresh-newest", action="store_true", help="rewrite newest.txt")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = parser.parse_args(argv)
    if args.refresh_newest:
        refresh_newest()
        return 0
    started = time.monotonic()
    outcomes = []
    for name in args.only or ENVIRONMENTS:
        install_seconds = install(name)
        versions = check(name)
        test_started = time.monotonic()
        code = 0 if args.install_only else run_tests(name, args.pytest_args)
        outcomes.append(
            Outcome(name, versions, code, install_seconds, time.monotonic() - test_started)
        )
    print(f"\ndependency matrix ({time.monotonic() - started:.0f} s in all):")
    for outcome in outcomes:
        pinned = ", ".join(f"{n} {v}" for n, v in outcome.versions.items())
        status = "passed" if outcome.returncode == 0 else f"FAILED ({outcome.returncode})"
        print(
            f"  {outcome.name}: {status}; install {outcome.install_seconds:.0f} s, tests"
            f" {outcome.test_seconds:.0f} s; {pinned}"
        )
    return 0 if all(outcome.returncode == 0 for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Test what pyproject.toml declares: the tests of each side on the OLDEST versions of its
dependencies the extras allow, and everything on the NEWEST (``make test-deps``, run by CI after
``make test``).

Three environments (``ENVIRONMENTS``), one virtualenv each under ``.venv-matrix/<name>``, each
pinned by ``devtools/constraints/<name>.txt``:

- ``oldest-gateway``: what a gateway installs (the core and ``[gateway]``, with its
  ``[telemetry]``) at its lower bounds, ``redis==5.0.1`` and ``uvicorn==0.24.0`` among them (the
  origin gateway's pins); the client's, the contract's, the transport's, telemetry's and the
  example gateway's tests;
- ``oldest-aggregator``: the aggregator's own environment (``[aggregator]``) at its lower
  bounds; the aggregator's, the contract's and the transport's tests;
- ``newest``: every extra at the newest releases (pinned, so a run is reproducible); all of the
  above.

``python -m devtools.dep_matrix [--only NAME] [-- PYTEST ARGS]`` makes each virtualenv (again
only when its constraints file, its extras or pyproject.toml changed), installs the project with
the environment's extras under its constraints, checks that what got installed is what the file
pins, and runs ``pytest`` on the environment's tests, one at a time, against a Redis
(``devtools.redis_server``: the one on REDIS_URL, else one started for the run). Prints each
environment's versions, result and wall time; exits non-zero when any environment failed.

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


@dataclass(frozen=True)
class Environment:
    """One virtualenv: the extras installed (under ``constraints/<name>.txt``), the tests run."""

    name: str
    extras: str
    tests: tuple[str, ...]


SHARED_TESTS = ("tests/gatewayz_protocol", "tests/gatewayz_transport")
GATEWAY_TESTS = (
    "tests/client",
    "tests/gatewayz_telemetry",
    "tests/test_gateway_gunicorn.py",
    "tests/test_gateway_telemetry.py",
    "tests/test_gateway_traces.py",
)
AGGREGATOR_TESTS = ("tests/aggregator",)
ENVIRONMENTS = (
    Environment("oldest-gateway", "gateway,test-tools", (*GATEWAY_TESTS, *SHARED_TESTS)),
    Environment("oldest-aggregator", "aggregator,test-tools", (*AGGREGATOR_TESTS, *SHARED_TESTS)),
    Environment("newest", "test", (*GATEWAY_TESTS, *AGGREGATOR_TESTS, *SHARED_TESTS)),
)
BY_NAME = {environment.name: environment for environment in ENVIRONMENTS}
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


def _stamp(environment: Environment) -> str:
    digest = hashlib.sha256((CONSTRAINTS / f"{environment.name}.txt").read_bytes())
    digest.update((ROOT / "pyproject.toml").read_bytes())
    digest.update(environment.extras.encode())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def _run(command: Sequence[str | Path]) -> None:
    subprocess.run([str(part) for part in command], cwd=ROOT, check=True)


def install(environment: Environment) -> float:
    """The environment's virtualenv, made or brought up to date; the seconds it took."""
    started = time.monotonic()
    name = environment.name
    constraints = CONSTRAINTS / f"{name}.txt"
    venv = VENVS / name
    stamp_file = venv / ".installed"
    stamp = _stamp(environment)
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        return 0.0
    print(f"[{name}] creating {venv.relative_to(ROOT)}: .[{environment.extras}] under", end=" ")
    print(constraints.relative_to(ROOT), flush=True)
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
    _run([*pip, "-c", constraints, "-e", f".[{environment.extras}]"])
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


def run_tests(environment: Environment, pytest_args: Sequence[str]) -> int:
    python = str(VENVS / environment.name / "bin" / "python")
    command = [
        python, "-m", "devtools.redis_server", "--", python, "-m", "pytest", "-q",
        "-p", "no:cacheprovider", *environment.tests, *pytest_args,
    ]  # fmt: skip
    print(f"[{environment.name}] {' '.join(command[3:])}", flush=True)
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
    parser = argparse.ArgumentParser(
        prog="python -m devtools.dep_matrix",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", choices=list(BY_NAME), action="append", help="one environment")
    parser.add_argument("--install-only", action="store_true", help="build, run no test")
    parser.add_argument("--refresh-newest", action="store_true", help="rewrite newest.txt")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = parser.parse_args(argv)
    if args.refresh_newest:
        refresh_newest()
        return 0
    started = time.monotonic()
    outcomes = []
    for environment in [BY_NAME[name] for name in args.only] if args.only else ENVIRONMENTS:
        install_seconds = install(environment)
        versions = check(environment.name)
        test_started = time.monotonic()
        code = 0 if args.install_only else run_tests(environment, args.pytest_args)
        outcomes.append(
            Outcome(
                environment.name,
                versions,
                code,
                install_seconds,
                time.monotonic() - test_started,
            )
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

"""The origin gateway's ``HealthDashboardResponse`` as a JSON Schema: the fixture
``tests/aggregator/serve/test_dashboard_models.py`` validates ``/health/dashboard`` against.

    python -m devtools.origin_schema --git-dir PATH/gatewayz-backend/.git [--commit REV]

reads ``src/models/health_models.py`` of the origin backend (github.com/Alpaca-Network/
gatewayz-backend) at that commit with ``git show``, imports it as a module of its own (it
imports only pydantic and the standard library: this runs the origin's file, so point it at a
checkout you trust), asks pydantic for the model's JSON Schema in validation mode (what the
origin accepts: it builds its answer with ``HealthDashboardResponse(**cached)``), leaves out the
descriptions (prose, not contract) and writes it with a ``$comment`` naming the repository, the
path, the commit and the pydantic version. The project carries the schema, not the origin's
code (the origin publishes no licence).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydantic

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "Alpaca-Network/gatewayz-backend"
MODELS_PATH = "src/models/health_models.py"
MODEL = "HealthDashboardResponse"
FIXTURE = ROOT / "tests" / "fixtures" / "origin_health_dashboard_response.schema.json"


def origin_source(git_dir: str, commit: str) -> tuple[str, str]:
    """(the full commit id, the models file's text at it) from the origin's repository."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", f"--git-dir={git_dir}", *args], check=True, capture_output=True, text=True
        )
        return done.stdout

    sha = git("rev-parse", "--verify", f"{commit}^{{commit}}").strip()
    return sha, git("show", f"{sha}:{MODELS_PATH}")


def schema_of(source: str, model: str = MODEL) -> dict[str, Any]:
    """``model``'s validation-mode JSON Schema from the models file's text, descriptions left
    out."""
    name = "origin_health_models"
    module = types.ModuleType(name)
    sys.modules[name] = module  # pydantic resolves the models' annotations through it
    try:
        exec(compile(source, MODELS_PATH, "exec"), module.__dict__)
        found: type[pydantic.BaseModel] = module.__dict__[model]
        schema: dict[str, Any] = without_descriptions(found.model_json_schema(mode="validation"))
        return schema
    finally:
        del sys.modules[name]


def without_descriptions(node: Any) -> Any:
    """A JSON Schema without its ``description`` keywords (a property of that name stays)."""
    if isinstance(node, list):
        return [without_descriptions(item) for item in node]
    if not isinstance(node, dict):
        return node
    kept: dict[str, Any] = {}
    for key, value in node.items():
        if key == "description" and isinstance(value, str):
            continue
        if key in ("properties", "$defs") and isinstance(value, dict):
            kept[key] = {name: without_descriptions(sub) for name, sub in value.items()}
        else:
            kept[key] = without_descriptions(value)
    return kept


def fixture(sha: str, schema: dict[str, Any]) -> str:
    """The fixture's text: the schema under a ``$comment`` that says where it came from."""
    note = (
        f"{MODEL} of github.com/{ORIGIN} at commit {sha}, {MODELS_PATH}, as pydantic "
        f"{pydantic.VERSION} renders it (validation mode, descriptions left out); "
        "regenerate with python -m devtools.origin_schema"
    )
    return json.dumps({"$comment": note, **schema}, indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devtools.origin_schema", description=__doc__)
    parser.add_argument("--git-dir", required=True, help="the origin backend's git directory")
    parser.add_argument("--commit", default="HEAD", help="revision to read (default HEAD)")
    parser.add_argument("--output", default=str(FIXTURE), help=f"default {FIXTURE}")
    args = parser.parse_args(argv)
    sha, source = origin_source(args.git_dir, args.commit)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(fixture(sha, schema_of(source)))
    print(f"wrote {args.output} ({MODEL} at {sha})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The layout the code promises (README "Layout"), checked on the source itself: in the packages
users import, no class over 250 lines, no function over 60 and no module over 400 unless its
docstring says why ("Why this size:"); and every module with code has its tests at the mirror
path (``pkg/sub/_name.py`` -> ``tests/pkg/sub/test_name.py``)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("client", "aggregator", "gatewayz_protocol", "gatewayz_transport", "gatewayz_telemetry")
MAX_CLASS, MAX_FUNCTION, MAX_MODULE = 250, 60, 400
JUSTIFIED = "Why this size:"


def _modules() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def _oversized(path: Path) -> Iterator[str]:
    source = path.read_text()
    tree = ast.parse(source)
    where = path.relative_to(ROOT)
    if source.count("\n") > MAX_MODULE and JUSTIFIED not in (ast.get_docstring(tree) or ""):
        yield f"{where}: module of {source.count(chr(10))} lines"
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            lines = node.end_lineno - node.lineno + 1
            limit = MAX_CLASS if isinstance(node, ast.ClassDef) else MAX_FUNCTION
            if lines > limit and JUSTIFIED not in (ast.get_docstring(node) or ""):
                yield f"{where}: {node.name} of {lines} lines"


def test_classes_functions_and_modules_stay_within_their_size() -> None:
    assert [found for path in _modules() for found in _oversized(path)] == []


def _has_code(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    kinds = ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
    return any(isinstance(node, kinds) for node in tree.body)


def _mirror(path: Path) -> Path:
    relative = path.relative_to(ROOT)
    return ROOT / "tests" / relative.parent / f"test_{relative.stem.lstrip('_')}.py"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_with_code_has_its_tests_at_the_mirror_path(package: str) -> None:
    modules = sorted((ROOT / package).rglob("*.py"))
    missing = [
        str(_mirror(path).relative_to(ROOT))
        for path in modules
        if path.stem not in ("__init__", "__main__") and _has_code(path)
        if not _mirror(path).exists()
    ]
    assert missing == []


def test_the_checks_see_what_they_check() -> None:
    # A module the size check must flag, and a mirror it must find: the checks can fail.
    assert _mirror(ROOT / "client" / "_buffer.py") == ROOT / "tests/client/test_buffer.py"
    assert _has_code(ROOT / "aggregator" / "engine" / "plan.py")
    assert not _has_code(ROOT / "gatewayz_protocol" / "scripts.py")
    big = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION + 1))
    probe = ROOT / "tests" / ".layout-probe.py"
    probe.write_text(f"def f():\n{big}\n")
    try:
        assert list(_oversized(probe)) == [f"tests/.layout-probe.py: f of {MAX_FUNCTION + 2} lines"]
    finally:
        probe.unlink()

"""The installed packages use redis-py's and uvicorn's public APIs only, so every release the
extras allow works (``make test-deps`` runs the tests on the oldest and the newest): no import
of a private module (``redis._parsers``, ``uvicorn._types``, ``uvicorn.protocols``), and no
private attribute of a redis-py or uvicorn object (an underscore name our own code never
defines, or a public-looking internal such as ``nodes_manager``). Shown able to fail."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("client", "aggregator", "gatewayz_protocol", "gatewayz_transport", "gatewayz_telemetry")
LIBRARIES = ("redis", "uvicorn")
PRIVATE_MODULES = ("uvicorn.protocols", "uvicorn.lifespan", "uvicorn.loops")
INTERNALS = frozenset({"nodes_manager", "slots_cache", "nodes_cache", "commands_parser"})
"""redis-py attributes without an underscore that its documentation does not show."""
NAMED_PRIVATES = frozenset({"_parser", "_reader", "_sock", "_buffer"})
"""redis-py's private attributes, as ``getattr`` would name them."""
NAMEDTUPLE = frozenset({"_replace", "_asdict", "_fields", "_make"})
"""Public despite the underscore: named tuples' methods (``urlsplit(...)._replace``)."""


def _sources() -> Iterator[tuple[Path, str]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, path.read_text()


def _is_private_module(name: str) -> bool:
    parts = name.split(".")
    if parts[0] not in LIBRARIES:
        return False
    return any(p.startswith("_") for p in parts[1:]) or name.startswith(PRIVATE_MODULES)


def private_imports(source: str) -> list[str]:
    """The private modules of redis-py or uvicorn that ``source`` imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if _is_private_module(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if _is_private_module(node.module):
                found.append(node.module)
            elif node.module.split(".")[0] in LIBRARIES:
                found += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    return found


def own_names(sources: list[str]) -> set[str]:
    """Every name our own code defines: functions, classes, attributes it assigns, keywords."""
    names: set[str] = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return names


def foreign_private_attributes(source: str, own: set[str]) -> list[str]:
    """Attributes ``source`` reads that are private and not ours (``x._parser``), or a known
    redis-py internal (``cluster.nodes_manager``), also when named in a string (getattr)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            name = node.attr
            dunder = name.startswith("__") and name.endswith("__")
            private = name.startswith("_") and not dunder and name not in own | NAMEDTUPLE
            if private or name in INTERNALS:
                found.append(f"line {node.lineno}: .{name}")
        elif isinstance(node, ast.Constant) and node.value in INTERNALS | NAMED_PRIVATES:
            found.append(f"line {node.lineno}: {node.value!r}")
    return found


def test_no_private_module_of_redis_py_or_uvicorn_is_imported() -> None:
    offenders = {
        str(path.relative_to(ROOT)): bad
        for path, source in _sources()
        if (bad := private_imports(source))
    }
    assert offenders == {}


def test_no_private_attribute_of_a_library_object_is_read() -> None:
    sources = list(_sources())
    own = own_names([source for _, source in sources])
    offenders = {
        str(path.relative_to(ROOT)): bad
        for path, source in sources
        if (bad := foreign_private_attributes(source, own))
    }
    assert offenders == {}


@pytest.mark.parametrize(
    "source",
    [
        "from redis._parsers.hiredis import NOT_ENOUGH_DATA",
        "from redis._parsers import Encoder",
        "import uvicorn.protocols.http.httptools_impl",
        "from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol",
        "from uvicorn._types import ASGI3Application",
        "from uvicorn.server import _ServerState",
    ],
)
def test_the_import_check_can_fail(source: str) -> None:
    assert private_imports(source)


@pytest.mark.parametrize(
    "source",
    [
        "reader = connection._parser._reader",
        "node = cluster.nodes_manager.get_node_from_slot(slot)",
        "reader = getattr(parser, '_reader', None)",
        "if 'nodes_manager' in self.__dict__: pass",
    ],
)
def test_the_attribute_check_can_fail(source: str) -> None:
    assert foreign_private_attributes(source, own_names(["class A:\n    _mine = 1\n"]))


def test_public_use_passes_the_checks() -> None:
    source = (
        "import redis\nfrom redis.cluster import RedisCluster\n"
        "node = cluster.get_node_from_key(key)\nreply = connection.read_response()\n"
        "self._mine = 1\nprint(self._mine, type(x).__name__)\n"
    )
    assert not private_imports(source)
    assert not foreign_private_attributes(source, own_names([source]))

"""The diffs docs/migration/origin-gateway.md shows, made from this example's files (a test checks
the page holds them as printed here): ``python -m examples.origin_style.handler_diff``.

- the representative handler: ``before/app.py`` -> ``app.py``, their imports and the functions
  of a chat completion (``HANDLER``);
- the metrics module: ``before/metrics.py`` -> ``metrics.py``, whole.
"""

from __future__ import annotations

import ast
import difflib
from pathlib import Path

HERE = Path(__file__).resolve().parent
HANDLER = ("_call_provider", "chat_completions", "_unavailable", "_chunks")
"""The functions of the handler's diff, in this order."""


def handler_source(path: Path) -> str:
    """The imports of the module at ``path`` and its ``HANDLER`` functions, as written."""
    source = path.read_text()
    tree = ast.parse(source)
    imports = [
        ast.get_source_segment(source, node)
        for node in tree.body
        if isinstance(node, ast.Import)
        or (isinstance(node, ast.ImportFrom) and node.module != "__future__")
    ]
    functions = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    parts = ["\n".join(text for text in imports if text)]
    for name in HANDLER:
        node = functions[name]
        start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
        assert node.end_lineno is not None
        parts.append("\n".join(source.splitlines()[start - 1 : node.end_lineno]))
    return "\n\n\n".join(parts) + "\n"


def _diff(before: str, after: str, before_name: str, after_name: str) -> str:
    lines = difflib.unified_diff(
        before.splitlines(), after.splitlines(), before_name, after_name, lineterm=""
    )
    return "\n".join(lines) + "\n"


def handler_diff() -> str:
    """The handler's diff, before -> after."""
    before, after = handler_source(HERE / "before" / "app.py"), handler_source(HERE / "app.py")
    return _diff(before, after, "before/app.py", "app.py")


def metrics_diff() -> str:
    """The metrics module's diff, before -> after."""
    before, after = (HERE / "before" / "metrics.py").read_text(), (HERE / "metrics.py").read_text()
    return _diff(before, after, "before/metrics.py", "metrics.py")


def main() -> None:
    print("```diff\n" + handler_diff() + "```\n")
    print("```diff\n" + metrics_diff() + "```")


if __name__ == "__main__":
    main()

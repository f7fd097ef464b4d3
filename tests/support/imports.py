"""What a Python file imports, read from its source: the one reader behind the tests that hold the
package's floors (tests/unit/test_layers.py) and the tests' own layout (tests/unit/test_test_tree.py).
Every `import` and `from ... import`, at any depth (lazy ones inside functions too), relative ones
resolved against the file's place under `root`."""

from __future__ import annotations

import ast
from pathlib import Path


def dotted(path: Path, root: Path) -> str:
    """The module name of `path` under `root` (a package's __init__ keeps its own last part)."""
    return ".".join(path.relative_to(root).with_suffix("").parts)


def imported_names(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute dotted name) for every module the file imports and, for `from X import a`,
    also X.a (which names a module when `a` is a submodule, as in `from hpo_operator import planner`)."""
    package = dotted(path, root).split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found.extend((node.lineno, f"{module}.{a.name}" if module else a.name) for a in node.names)
    return found

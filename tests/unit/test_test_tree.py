"""The tests' own layout: no module under tests/ imports a test module (test_*.py).

A helper that several test files use lives in tests/conftest.py (fixtures) or in a helper module
beside it (tests/kube.py, tests/experiments.py, ...). Importing it from another test module instead
runs that module's import-time code, hides where the helper lives, and, for a fixture, registers it
once per importing module. Read from the source, like tests/unit/test_layers.py: every `import` and
`from ... import`, at any depth, lazy and relative ones included."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.imports import dotted, imported_names

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent


def module_names_of_tests(root: Path = ROOT) -> set[str]:
    """Dotted names of the test modules, and their bare names (`import test_x` would find one
    when pytest puts its folder on sys.path)."""
    files = (root / "tests").rglob("test_*.py")
    return {name for p in files for name in (dotted(p, root), p.stem)}


MODULES = sorted(TESTS.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(TESTS)))
def test_no_module_imports_a_test_module(path: Path):
    tests = module_names_of_tests()
    imports = [f"line {line}: {name}" for line, name in imported_names(path, ROOT) if name in tests]
    assert not imports, (
        f"{path.name} imports test modules ({'; '.join(imports)}): move what is shared "
        "into tests/conftest.py (fixtures) or a helper module beside it, and import it from there"
    )


def test_the_rule_sees_every_way_to_import_a_test_module(tmp_path: Path):
    # A check that misses a spelling would pass a tree that still imports test modules.
    (tmp_path / "tests" / "unit").mkdir(parents=True)
    (tmp_path / "tests" / "unit" / "test_a.py").write_text("")
    probe = tmp_path / "tests" / "unit" / "test_b.py"
    probe.write_text(
        "from tests.unit.test_a import x\n"
        "from tests.unit import test_a\n"
        "from .test_a import y\n"
        "from . import test_a\n"
        "def f():\n    import tests.unit.test_a\n"
        "import test_a\n"
        "from tests import kube\n"
    )
    tests = module_names_of_tests(tmp_path)
    hits = sorted({line for line, name in imported_names(probe, tmp_path) if name in tests})
    assert hits == [1, 2, 3, 4, 6, 7]

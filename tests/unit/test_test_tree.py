"""The tests' own layout: no module under tests/ imports a test module (test_*.py), and the tests
and the benchmarks share code only through tests/support/.

A helper that several test files use lives in tests/conftest.py (fixtures) or in tests/support/
(kube.py, experiments.py, ...). Importing it from another test module instead runs that module's
import-time code, hides where the helper lives, and, for a fixture, registers it once per importing
module. bench/ imports tests.support.* and nothing else of tests/; nothing in tests/ imports bench/,
so the benchmarks can change without a test noticing and the support has one home. Read from the
source, like tests/unit/test_layers.py: every `import` and `from ... import`, at any depth, lazy
and relative ones included."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.imports import dotted, imported_names

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
        "from tests.support import kube\n"
    )
    tests = module_names_of_tests(tmp_path)
    hits = sorted({line for line, name in imported_names(probe, tmp_path) if name in tests})
    assert hits == [1, 2, 3, 4, 6, 7]


def crossings(path: Path, root: Path = ROOT) -> list[str]:
    """The imports of `path` that cross between tests/ and bench/ other than through tests.support."""
    side = path.relative_to(root).parts[0]
    found = []
    for line, name in imported_names(path, root):
        top = name.split(".")
        if side == "tests" and top[0] == "bench":
            found.append(f"line {line}: {name}")
        # A bare `tests` is the empty package above the support (`from tests import support`).
        if side == "bench" and top[0] == "tests" and len(top) > 1 and top[1] != "support":
            found.append(f"line {line}: {name}")
    return found


SHARED = sorted([*TESTS.rglob("*.py"), *(ROOT / "bench").rglob("*.py")])


@pytest.mark.parametrize("path", SHARED, ids=lambda p: str(p.relative_to(ROOT)))
def test_tests_and_benchmarks_share_code_only_through_tests_support(path: Path):
    found = crossings(path)
    assert not found, (
        f"{path.relative_to(ROOT)} imports across tests/ and bench/ ({'; '.join(found)}): move what both "
        "need into tests/support/ and import it from there"
    )


def test_the_crossing_rule_sees_every_way_to_cross(tmp_path: Path):
    # A check that misses a spelling would pass a tree whose tests and benchmarks import each other.
    for folder in ("tests/unit", "tests/support", "bench"):
        (tmp_path / folder).mkdir(parents=True)
    test = tmp_path / "tests" / "unit" / "test_x.py"
    test.write_text(
        "from bench import tabular\n"
        "import bench.driver\n"
        "def f():\n    from bench.driver import run\n"
        "from tests.support import kube\n"
    )
    bench = tmp_path / "bench" / "b.py"
    bench.write_text(
        "from tests import conftest\n"
        "from tests.unit.test_x import y\n"
        "from tests import support, kube\n"
        "from tests.support import kube\n"
        "from tests.support.kube import Cluster\n"
        "from . import other\n"
    )
    assert [c.split(":")[0] for c in crossings(test, tmp_path)] == ["line 1", "line 1", "line 2", "line 4", "line 4"]
    assert [c.split(":")[0] for c in crossings(bench, tmp_path)] == ["line 1", "line 2", "line 2", "line 3"]

"""The package's floors: each subpackage imports only the floors README's layout section puts below
it, so a reader can follow a finished pod down to the next pod's creation without climbing back up.

The rule is read from the source (every `import` and `from ... import`, at any depth, lazy ones
included), so a new upward import fails here before a reviewer has to spot it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "hpo_operator"

# Which floors each floor may import (besides itself). The operator side climbs
# api → core → search/workloads → planner → controller, with kube beside them; the user side
# (client, dashboard, cli) stands on api, core and kube. The dashboard also imports search: its
# plots are Optuna's own, over a study rebuilt from the Trials.
ALLOWED: dict[str, set[str]] = {
    "api": set(),
    "core": {"api"},
    "search": {"api", "core"},
    "workloads": {"api", "core"},
    "planner": {"api", "core", "search", "workloads"},
    "kube": {"api"},
    "controller": {"api", "core", "search", "workloads", "planner", "kube"},
    "client": {"api", "core", "kube"},
    "dashboard": {"api", "core", "kube", "client", "search"},
    "cli": {"api", "core", "kube", "client", "dashboard"},
    # python -m hpo_operator: the operator's entry point, above everything it starts.
    "__main__": {"controller", "kube", "api", "core"},
}

# Only these floors may import these third-party packages.
THIRD_PARTY_HOMES = {
    "optuna": {"search", "dashboard"},
    "kopf": {"controller", "__main__"},
}


def floor_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_modules(path: Path, root: Path = PACKAGE.parent) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in the file, relative ones resolved."""
    rel = path.relative_to(root).with_suffix("")
    package = list(rel.parts[:-1])  # the importing module's package
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
            # `from hpo_operator import planner` names a floor in its imported names.
            if module == "hpo_operator":
                found.extend((node.lineno, f"hpo_operator.{a.name}") for a in node.names)
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


def test_every_module_lives_on_a_known_floor():
    loose = [str(p.relative_to(PACKAGE)) for p in MODULES if floor_of(p) not in ALLOWED and p.name != "__init__.py"]
    assert loose == [], "modules outside every floor (put them in a subpackage and into ALLOWED)"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_floors_below_its_own(path: Path):
    floor = floor_of(path)
    allowed = ALLOWED.get(floor, set()) | {floor}
    upward = []
    for line, module in imported_modules(path):
        parts = module.split(".")
        if parts[0] == "hpo_operator" and len(parts) > 1 and parts[1] in ALLOWED and parts[1] not in allowed:
            upward.append(f"line {line}: {module}")
        if parts[0] in THIRD_PARTY_HOMES and floor not in THIRD_PARTY_HOMES[parts[0]]:
            upward.append(f"line {line}: {module} (only {sorted(THIRD_PARTY_HOMES[parts[0]])} may)")
    assert upward == [], f"{floor}/ may import only {sorted(allowed)}"


def test_the_rule_sees_relative_and_lazy_imports(tmp_path: Path):
    # The checker must resolve `from ..planner import x` and imports inside functions, or an
    # upward import written either way would pass unseen.
    src = tmp_path / "hpo_operator" / "core" / "probe.py"
    src.parent.mkdir(parents=True)
    src.write_text("def f():\n    from ..planner import plan\n    import optuna\n")
    assert (2, "hpo_operator.planner") in imported_modules(src, tmp_path)
    assert (3, "optuna") in imported_modules(src, tmp_path)

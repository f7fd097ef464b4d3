"""The package's floors: each subpackage imports only the floors docs/architecture.md puts below
it, so a reader can follow a finished pod down to the next pod's creation without climbing back up.

The rule is read from the source (every `import` and `from ... import`, at any depth, lazy ones
included), so a new upward import fails here before a reviewer has to spot it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.imports import imported_names

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "hpo_operator"

# Which floors each floor may import (besides itself). The operator side climbs
# api → core → search/workloads → planner → controller, with kube beside them; the user side
# (client, dashboard, cli) stands on api, core and kube. The dashboard also imports search: its
# plots are Optuna's own, over a study rebuilt from the Trials. convert/ (Katib manifests to ours)
# stands on api alone; the client and the plugin offer it.
ALLOWED: dict[str, set[str]] = {
    "api": set(),
    "core": {"api"},
    "search": {"api", "core"},
    "workloads": {"api", "core"},
    "planner": {"api", "core", "search", "workloads"},
    "kube": {"api"},
    "controller": {"api", "core", "search", "workloads", "planner", "kube"},
    # Conversions from other tools' manifests: pure, over the API's models.
    "convert": {"api"},
    "client": {"api", "core", "kube", "convert"},
    "dashboard": {"api", "core", "kube", "client", "search"},
    "cli": {"api", "core", "kube", "client", "dashboard", "convert"},
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


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


def test_every_module_lives_on_a_known_floor():
    loose = [str(p.relative_to(PACKAGE)) for p in MODULES if floor_of(p) not in ALLOWED and p.name != "__init__.py"]
    assert loose == [], "modules outside every floor (put them in a subpackage and into ALLOWED)"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_floors_below_its_own(path: Path):
    floor = floor_of(path)
    allowed = ALLOWED.get(floor, set()) | {floor}
    upward = []
    for line, module in imported_names(path, PACKAGE.parent):
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
    assert (2, "hpo_operator.planner") in imported_names(src, tmp_path)
    assert (3, "optuna") in imported_names(src, tmp_path)

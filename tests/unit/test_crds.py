"""The committed CRDs are generated from the models (one source of truth)."""

import ast
from pathlib import Path

import yaml

from hpo_operator.api import crd as crdgen
from hpo_operator.api.vocabulary import EXPERIMENT_PHASES, TRIAL_PHASES, ExperimentPhase, FailureClass, TrialPhase

REPO = Path(__file__).resolve().parents[2]


def test_committed_crds_match_the_models():
    for name in crdgen.CRDS:
        committed = (REPO / "crds" / name).read_text()
        assert committed == crdgen.render(name), f"crds/{name} is stale: run `make crds`"


def _walk(node, path=""):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def test_schemas_are_structural_openapi_v3():
    for name in crdgen.CRDS:
        schema = crdgen.CRDS[name]()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            for forbidden in ("$ref", "anyOf", "allOf", "oneOf", "$defs", "title"):
                assert forbidden not in node, f"{name}{path} has {forbidden}"
            if "exclusiveMinimum" in node:
                assert isinstance(node["exclusiveMinimum"], bool), f"{name}{path}"


def test_only_what_trials_run_keeps_unknown_fields():
    """The pod template, the Job template and a resource's manifest are other APIs' objects; every
    other field of ours is declared (a typo is refused at apply)."""
    schema = yaml.safe_load((REPO / "crds/experiments.yaml").read_text())
    root = schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    keeping = [p for p, node in _walk(root) if node.get("x-kubernetes-preserve-unknown-fields")]
    kinds = (
        "/trialTemplate/properties/template",
        "/trialTemplate/properties/job",
        "/trialTemplate/properties/resource/properties/manifest",
    )
    for kind in kinds:
        assert any(kind in p for p in keeping), f"{kind} must keep the object's fields"
    assert all(any(kind in p for kind in kinds) for p in keeping), keeping


ENUMS = {"ExperimentPhase": ExperimentPhase, "TrialPhase": TrialPhase, "FailureClass": FailureClass}
OPERATOR_SOURCES = sorted(p for p in (REPO / "operator" / "hpo_operator").rglob("*.py") if p.parent.name != "api")


def _strings(node):
    """The string constants an expression can evaluate to (a literal, a member of one of the
    vocabulary's phase enums, or either side of an `if`)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) in ENUMS:
        return {ENUMS[node.value.id][node.attr].value}
    if isinstance(node, ast.IfExp):
        return _strings(node.body) | _strings(node.orelse)
    return set()


def _written(keyword: str, positional: dict[str, int], variables: tuple[str, ...] = ()) -> set[str]:
    """Literal strings the operator's code writes into a field: as a keyword argument, as the
    positional argument of the named calls, or assigned to the named local variables."""
    found = set()
    for path in OPERATOR_SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg == keyword:
                        found |= _strings(kw.value)
                name = getattr(node.func, "id", getattr(node.func, "attr", None))
                if name in positional and len(node.args) > positional[name]:
                    found |= _strings(node.args[positional[name]])
            elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) in variables for t in node.targets):
                found |= _strings(node.value)
    return found


def test_the_crds_take_every_failure_class_the_operator_writes():
    """status.failureClass is an enum in the Trial CRD: a class the code writes but the enum lacks
    would make the API server refuse the status write."""
    classes = _written("failure_class", {"PodObservation": 3}, ("cls",))
    assert {"Infrastructure", "Startup"} <= classes, "the scan no longer finds the classes the code writes"
    assert classes <= {c.value for c in FailureClass}
    schema = crdgen.trial_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert schema["properties"]["status"]["properties"]["failureClass"]["enum"] == [c.value for c in FailureClass]


def test_the_crds_take_every_phase_the_operator_writes():
    """status.phase (and statusHistory's) are enums in both CRDs; trial phases are written as
    phase=..., experiment phases as Decision(phase, ...)."""
    trial = _written("phase", {})
    experiment = _written("", {"Decision": 0})
    assert "Killed" in trial and "Suspended" in experiment, "the scan no longer finds the phases the code writes"
    assert trial <= set(TRIAL_PHASES) | set(EXPERIMENT_PHASES)
    assert experiment <= set(EXPERIMENT_PHASES)
    status = crdgen.experiment_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["properties"]["phase"]["enum"] == list(EXPERIMENT_PHASES)
    assert status["properties"]["statusHistory"]["items"]["properties"]["phase"]["enum"] == list(EXPERIMENT_PHASES)

"""The committed CRDs are generated from the models (one source of truth)."""

from pathlib import Path

import yaml

from hpo_operator.api import crd as crdgen

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
    kinds = ("/trialTemplate/properties/template", "/trialTemplate/properties/job",
             "/trialTemplate/properties/resource/properties/manifest")
    for kind in kinds:
        assert any(kind in p for p in keeping), f"{kind} must keep the object's fields"
    assert all(any(kind in p for kind in kinds) for p in keeping), keeping

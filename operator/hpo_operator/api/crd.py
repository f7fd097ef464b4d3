"""Generate the CustomResourceDefinitions in crds/ from the pydantic models.

pydantic emits JSON Schema 2020-12; Kubernetes wants a structural OpenAPI v3.0 schema. The
translation inlines $refs, drops nullability wrappers and titles, spells exclusive bounds the 3.0
way and keeps the x-kubernetes-* extensions the models carry.

    python -m hpo_operator.api.crd            # write crds/*.yaml
    python -m hpo_operator.api.crd --check    # fail if the committed files are out of date
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from hpo_operator.api.base import Model, cel
from hpo_operator.api.external import JOB_TEMPLATE_SCHEMA, POD_TEMPLATE_SCHEMA
from hpo_operator.api.spec import EXPERIMENT_NAME_MAX_LENGTH, TRIAL_NAME_MAX_LENGTH
from hpo_operator.api.status import ExperimentBody, TrialBody
from hpo_operator.api.vocabulary import GROUP, VERSION

_DROP = {"title", "$defs"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**_resolve(target, defs), **{k: v for k, v in node.items()}}
    if "anyOf" in node:
        # Optional[X] is anyOf [X, null]: the field is optional by not being required.
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"union types are not structural: {options}")
        node = {**_resolve(options[0], defs), **node}
    if "allOf" in node and len(node["allOf"]) == 1:
        node = {**_resolve(node.pop("allOf")[0], defs), **node}
    if node.pop("x-hpo-pod-template", False):
        return copy.deepcopy(POD_TEMPLATE_SCHEMA)
    if node.pop("x-hpo-job-template", False):
        return copy.deepcopy(JOB_TEMPLATE_SCHEMA)
    if node.get("default", "") is None:
        del node["default"]
    if "exclusiveMinimum" in node and not isinstance(node["exclusiveMinimum"], bool):
        node["minimum"], node["exclusiveMinimum"] = node["exclusiveMinimum"], True
    if "exclusiveMaximum" in node and not isinstance(node["exclusiveMaximum"], bool):
        node["maximum"], node["exclusiveMaximum"] = node["exclusiveMaximum"], True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("type") == "integer":
        node.setdefault("format", "int64")
    if isinstance(node.get("description"), str):  # a docstring's line breaks mean nothing in kubectl explain
        node["description"] = " ".join(node["description"].split())
    if node.get("additionalProperties") is True:  # dict[str, Any]: another API's object
        del node["additionalProperties"]
    if node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node:
        node["x-kubernetes-preserve-unknown-fields"] = True
    for key in _DROP:
        node.pop(key, None)
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {k: _resolve(v, defs) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _resolve(value, defs)
        else:
            out[key] = value
    return out


class _NoAliases(yaml.SafeDumper):
    """Shared schema parts are written out in full: a CRD with YAML anchors is harder to read and
    some tools refuse them."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def openapi_schema(model: type[Model]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    # A model's schema is an object, so what _resolve (typed for any node) returns is one.
    schema: dict[str, Any] = _resolve(raw, raw.get("$defs", {}))
    return schema


def _column(name: str, path: str, type_: str = "string", priority: int = 0, description: str = "") -> dict[str, Any]:
    col: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path}
    if priority:
        col["priority"] = priority
    if description:
        col["description"] = description
    return col


def _crd(
    kind: str,
    plural: str,
    short: list[str],
    body: type[Model],
    description: str,
    columns: list[dict[str, Any]],
    validations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    schema = openapi_schema(body)
    schema["description"] = description
    schema["properties"] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        **schema["properties"],
    }
    if validations:
        # Root-level CEL rules: the only place a rule can read metadata.name.
        schema["x-kubernetes-validations"] = validations
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "hpo-operator", "app.kubernetes.io/part-of": "hpo-operator"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short,
                "categories": ["hpo"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def _name_length_rule(what: str, limit: int, why: str) -> dict[str, Any]:
    return cel(
        f"size(self.metadata.name) <= {limit}",
        f"the name of {what} must be at most {limit} characters long, because {why}",
    )


def experiment_crd() -> dict[str, Any]:
    return _crd(
        "Experiment",
        "experiments",
        ["exp", "exps"],
        ExperimentBody,
        "A hyperparameter search: a search space, an objective, an algorithm, budgets and the pod "
        "each trial runs. Failed trials are re-run while their configuration has not succeeded.",
        [
            _column("Status", ".status.phase"),
            _column("Objective", ".spec.objective.metricName", priority=1),
            _column(
                "Best",
                ".status.currentOptimalTrial.objectiveValue",
                "number",
                description="Best objective value so far",
            ),
            _column("Best-Trial", ".status.currentOptimalTrial.trialName", priority=1),
            # Columns that only some experiments fill are for -o wide (priority 1): a newcomer's first
            # `kubectl get` shows no empty ones.
            _column(
                "Front",
                ".status.paretoFrontSize",
                "integer",
                priority=1,
                description="Several objectives: trials on the Pareto front",
            ),
            _column("Hypervolume", ".status.hypervolume", "number", priority=1),
            _column("Succeeded", ".status.trialsSucceeded", "integer"),
            _column("Running", ".status.trialsRunning", "integer"),
            _column("Queued", ".status.trialsQueued", "integer", description="Waiting for admission by their queue"),
            _column("Failed", ".status.trialsFailed", "integer"),
            _column(
                "Configs",
                ".status.configurations",
                "integer",
                priority=1,
                description="Configurations launched (of maxTrialCount)",
            ),
            _column("Max", ".spec.maxTrialCount", "integer", priority=1),
            _column("Algorithm", ".spec.algorithm.name", priority=1),
            _column(
                "Run-Seconds",
                ".status.spent.durationSeconds",
                "number",
                priority=1,
                description="Running time spent (suspended time not counted), as of status.spent.time",
            ),
            _column(
                "Compute",
                ".status.spent.summary",
                priority=1,
                description="Resource-seconds the trials spent, per resource, as of status.spent.time",
            ),
            _column("Age", ".metadata.creationTimestamp", "date"),
        ],
        validations=[
            _name_length_rule(
                "an Experiment",
                EXPERIMENT_NAME_MAX_LENGTH,
                "the names of its trials and pods add suffixes to it and must fit in 63 characters",
            )
        ],
    )


def trial_crd() -> dict[str, Any]:
    return _crd(
        "Trial",
        "trials",
        ["trial", "tr"],
        TrialBody,
        "One run of one configuration of an Experiment, as one pod.",
        [
            _column("Experiment", ".spec.experimentName"),
            _column("Status", ".status.phase"),
            _column("Objective", ".status.objectiveValue", "number"),
            _column("Attempt", ".spec.attempt", "integer"),
            _column("Parameters", ".status.parameterSummary"),
            # Filled for some experiments only (checkpoints, several objectives, constraints): -o wide.
            _column(
                "Resumed",
                ".status.resumedFrom.step",
                "integer",
                priority=1,
                description="The step a resumed attempt continued from (checkpoint)",
            ),
            _column(
                "Objectives", ".status.objectiveSummary", priority=1, description="Several objectives: their values"
            ),
            _column(
                "Feasible",
                ".status.feasible",
                "boolean",
                priority=1,
                description="With constraints: whether they are met",
            ),
            _column("Reason", ".status.reason", priority=1),
            _column("Retried-By", ".status.retriedBy", priority=1),
            _column("Member", ".spec.segment.member", "integer", priority=1, description="pbt: the member it trains"),
            _column("Generation", ".spec.segment.generation", "integer", priority=1, description="pbt: its generation"),
            _column(
                "Parent",
                ".spec.segment.parent",
                priority=1,
                description="pbt: the segment whose checkpoint it starts from",
            ),
            _column("Age", ".metadata.creationTimestamp", "date"),
        ],
        validations=[
            _name_length_rule(
                "a Trial",
                TRIAL_NAME_MAX_LENGTH,
                "the names of its retries add a suffix to it and must fit in 63 characters",
            )
        ],
    )


CRDS = {"experiments.yaml": experiment_crd, "trials.yaml": trial_crd}
HEADER = (
    "# Generated by `python -m hpo_operator.api.crd` from hpo_operator/api/ "
    "(spec.py, parameters.py, template.py, status.py, external.py). Do not edit.\n"
)


def render(name: str) -> str:
    return HEADER + yaml.dump(CRDS[name](), Dumper=_NoAliases, sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[3] / "crds")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for name in CRDS:
        path = args.out / name
        text = render(name)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("out of date (run python -m hpo_operator.api.crd):", *stale, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

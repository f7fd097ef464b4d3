"""Experiment bodies the integration tests create, and readers of what the operator writes back.

The API group and version are spelled out here rather than imported from the package, so a change
to them in the operator shows up as failing tests instead of passing unnoticed."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

GROUP, VERSION = "hpo.dev", "v1alpha1"
# The example whose pod template runs on the real node (hack/real-node.sh), in the local image.
REAL_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "real-sklearn.yaml"


def x_space(high: float = 1) -> list[dict]:
    """The search space most integration tests use, where the search itself is not what they check:
    one double `x` from 0 to `high` (the trial's --x=${params.x}), a fresh list each call."""
    return [{"name": "x", "type": "double", "min": 0, "max": high}]


def experiment(
    name: str,
    parameters: list[dict],
    *,
    annotations: dict,
    max_trials: int,
    parallel: int = 1,
    algorithm: dict | None = None,
    **spec: object,
) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Experiment",
        "metadata": {"name": name},
        "spec": {
            "objective": {"type": "minimize", "metricName": "loss"},
            "algorithm": algorithm or {"name": "random", "seed": 1},
            "parameters": parameters,
            "parallelTrialCount": parallel,
            "maxTrialCount": max_trials,
            "trialTemplate": {
                "template": {
                    "metadata": {"annotations": {"sim.hpo.dev/duration": "500ms", **annotations}},
                    "spec": {
                        "containers": [
                            {
                                "name": "train",
                                "image": "trainer:1",
                                "args": ["--x=${params.x}"] if any(p["name"] == "x" for p in parameters) else [],
                            }
                        ]
                    },
                }
            },
            **spec,
        },
    }


def as_job(body: dict, **job_spec: object) -> dict:
    """The experiment with its pod template moved into a batch/v1 Job template."""
    body = copy.deepcopy(body)
    tt = body["spec"]["trialTemplate"]
    tt["job"] = {"metadata": {"labels": {"team": "ml"}}, "spec": {"template": tt.pop("template"), **job_spec}}
    return body


def real_experiment(
    name: str,
    *,
    parameters: list[dict],
    command: list[str] | None = None,
    args: list[str] | None = None,
    memory: str = "256Mi",
    **spec: object,
) -> dict:
    """The example's experiment (its pod template: real node, local image, stdout metrics),
    renamed, with the given search space, and optionally another program."""
    body = yaml.safe_load(REAL_EXAMPLE.read_text())
    body["metadata"] = {"name": name}
    body["spec"].update({"parameters": parameters, "parallelTrialCount": 1, "maxTrialCount": 1, **spec})
    container = body["spec"]["trialTemplate"]["template"]["spec"]["containers"][0]
    container["resources"] = {"requests": {"cpu": "250m", "memory": memory}, "limits": {"cpu": "1", "memory": memory}}
    if command is not None:
        container["command"] = command
        container["args"] = args or []
    return body


def condition(obj: dict, type_: str) -> dict:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def by_config(trials: dict[str, dict], param: str) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for t in trials.values():
        values = {p["name"]: p["value"] for p in t["spec"].get("parameters") or []}
        assert param in values, f"trial without {param}: {t}"
        value = values[param]
        groups.setdefault(value, []).append(t)
    for group in groups.values():
        group.sort(key=lambda t: t["spec"]["attempt"])
    return groups

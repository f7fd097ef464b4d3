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


def x_values(*values: str) -> list[dict]:
    """One discrete `x` with these values: with one value, an experiment of a single configuration."""
    return [{"name": "x", "type": "discrete", "values": list(values)}]


def fails_space(high: int, step: int = 1) -> list[dict]:
    """One int `fails` from 0 to `high` by `step`, for a grid: with the annotation
    sim.hpo.dev/fail-attempts: ${params.fails}, configuration fails=N fails its first N attempts."""
    return [{"name": "fails", "type": "int", "min": 0, "max": high, "step": step}]


def loss_is_x(duration: str | None = None) -> dict[str, str]:
    """The simulated trial's annotations when it reports loss = x (its termination message), and runs
    for `duration` if given (else the template's); a fresh dict each call."""
    annotations = {"sim.hpo.dev/message": '{"loss": ${params.x}}'}
    if duration is not None:
        annotations["sim.hpo.dev/duration"] = duration
    return annotations


def oom_killed_first(attempts: str) -> dict[str, str]:
    """The simulated trial's annotations when its first `attempts` attempts (a number, or a parameter
    such as "${params.fails}") are OOMKilled (exit code 137, a class retried by default) and the next
    one runs to its end."""
    return {"sim.hpo.dev/fail-attempts": attempts, "sim.hpo.dev/exit-code": "137", "sim.hpo.dev/reason": "OOMKilled"}


def manifest(name: str, spec: dict) -> dict:
    """An Experiment named `name` with this spec, as `kubectl apply` sends it."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Experiment", "metadata": {"name": name}, "spec": spec}


def sim_pod(annotations: dict, args: list[str] | None = None) -> dict:
    """A trial's pod template for the simulated (KWOK) nodes: the simulator's annotations
    (sim.hpo.dev/..., hack/kwok/stages.yaml) and one container `train` of trainer:1, with `args` if given."""
    container: dict = {"name": "train", "image": "trainer:1"}
    if args is not None:
        container["args"] = args
    return {"metadata": {"annotations": annotations}, "spec": {"containers": [container]}}


def experiment(
    name: str,
    parameters: list[dict],
    *,
    max_trials: int,
    annotations: dict | None = None,
    parallel: int = 1,
    algorithm: dict | None = None,
    args: list[str] | None = None,
    **spec: object,
) -> dict:
    """An experiment that minimises loss over `parameters`, its trials simulated pods (sim_pod) that
    run 500 ms unless `annotations` say otherwise, their container given --x=${params.x} when there
    is an x (or `args`). Any other spec field is given in camelCase, and replaces the one built here
    (an `objective`, a whole `trialTemplate`)."""
    if args is None:
        args = ["--x=${params.x}"] if any(p["name"] == "x" for p in parameters) else []
    return manifest(
        name,
        {
            "objective": {"type": "minimize", "metricName": "loss"},
            "algorithm": algorithm or {"name": "random", "seed": 1},
            "parameters": parameters,
            "parallelTrialCount": parallel,
            "maxTrialCount": max_trials,
            "trialTemplate": {"template": sim_pod({"sim.hpo.dev/duration": "500ms", **(annotations or {})}, args)},
            **spec,
        },
    )


def restartable(name: str) -> dict:
    """Two configurations on a grid, two at a time: fails=0 succeeds, fails=9 fails every attempt
    (exit code 1, class Error) and is not retried; what the tests of restart requests re-run."""
    return experiment(
        name,
        fails_space(9, step=9),
        annotations={"sim.hpo.dev/fail-attempts": "${params.fails}", "sim.hpo.dev/message": '{"loss": 1}'},
        algorithm={"name": "grid", "seed": 0},
        max_trials=2,
        parallel=2,
        retryPolicy={"maxRetries": 0, "retryOn": ["Error"]},
    )


def as_job(body: dict, **job_spec: object) -> dict:
    """The experiment with its pod template moved into a batch/v1 Job template."""
    body = copy.deepcopy(body)
    tt = body["spec"]["trialTemplate"]
    tt["job"] = {"metadata": {"labels": {"team": "ml"}}, "spec": {"template": tt.pop("template"), **job_spec}}
    return body


def sklearn_space(features: str) -> list[dict]:
    """examples/real-sklearn.yaml's search space, narrowed: one feature count, small ranges of the rest."""
    return [
        {"name": "features", "type": "discrete", "values": [features]},
        {"name": "gamma", "type": "double", "min": 0.02, "max": 0.05},
        {"name": "alpha", "type": "double", "min": 0.0001, "max": 0.0002},
    ]


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

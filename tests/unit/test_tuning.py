"""tune()'s pure parts (hpo_operator.client.tuning): which functions can be sent to a trial, the
ConfigMap's files, and the trial's pod, which the operator's own build_pod then fills in for one
trial; the runner run over that pod's arguments closes the loop without a cluster."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.client import InvalidInput, categorical, double, experiment_manifest, experiment_spec, integer
from hpo_operator.client.tuning import (
    LABELS,
    MOUNT_PATH,
    check_signature,
    configmap_body,
    function_source,
    name_prefix,
    objective_files,
    owned,
    tune_template,
)
from hpo_operator.core import metrics
from hpo_operator.workloads.pod import build_pod

PYTHON = shutil.which("python3") or sys.executable


def self_contained(lr, layers=2, report=None):
    import math

    return {"loss": math.log(lr) * layers}


def uses_json_from_outside(lr):
    return json.dumps({"lr": lr})


DEFAULT_FROM_OUTSIDE = 3


def default_from_outside(lr, n=DEFAULT_FROM_OUTSIDE):
    return lr * n


def decorator(fn):
    return fn


@decorator
def decorated(lr):
    return lr


def test_a_self_contained_functions_source_is_sent_as_it_is_written():
    source = function_source(self_contained)
    assert source.startswith("def self_contained(lr, layers=2, report=None):\n")
    assert "import math" in source


def test_a_nested_functions_source_is_dedented():
    def inner(lr):
        return lr * 2

    assert function_source(inner) == "def inner(lr):\n    return lr * 2\n"


@pytest.mark.parametrize(
    ("fn", "says"),
    [
        (lambda lr: lr, "a lambda's source cannot be sent"),
        (len, "not builtin_function_or_method"),
        (functools.partial(self_contained, layers=3), "not partial"),
        ("objective", "not str"),
        (uses_json_from_outside, "uses json from outside its body"),
        (default_from_outside, "cannot be defined from its source alone: NameError"),
        (decorated, "is decorated"),
    ],
    ids=["lambda", "builtin", "partial", "string", "global", "default", "decorated"],
)
def test_a_function_that_cannot_run_alone_is_refused_with_the_reason(fn, says):
    with pytest.raises(InvalidInput, match=says.replace("(", r"\(")):
        function_source(fn)


def test_a_closure_is_refused_naming_what_it_uses():
    factor = 3

    def scaled(lr):
        return lr * factor

    with pytest.raises(InvalidInput, match="scaled uses factor from outside its body"):
        function_source(scaled)


def test_an_async_function_is_refused():
    async def objective(lr):
        return lr

    with pytest.raises(InvalidInput, match="not async"):
        function_source(objective)


def test_the_signature_takes_every_parameter_and_needs_no_other():
    check_signature(self_contained, ["lr", "layers"])
    check_signature(self_contained, ["lr"])  # layers has a default; report is the runner's

    def anything(**params):
        return 0.0

    check_signature(anything, ["lr", "momentum"])
    with pytest.raises(InvalidInput, match="self_contained takes no argument momentum"):
        check_signature(self_contained, ["lr", "momentum"])
    with pytest.raises(InvalidInput, match="needs lr, which the search space does not give"):
        check_signature(self_contained, ["layers"])
    with pytest.raises(InvalidInput, match="'report' names the function's reporting argument"):
        check_signature(self_contained, ["lr", "report"])


def test_a_positional_only_argument_is_refused():
    def objective(lr, /):
        return lr

    with pytest.raises(InvalidInput, match="takes lr by position only"):
        check_signature(objective, ["lr"])


def test_an_experiment_name_prefix_comes_from_the_functions_name():
    assert name_prefix("train_MNIST_model") == "train-mnist-model-"
    assert name_prefix("_") == "tune-"
    assert len(name_prefix("x" * 80)) <= 34


def test_the_configmap_is_labelled_and_given_to_its_experiment():
    body = configmap_body("digits-objective-", {"a": "b"})
    assert body["metadata"]["generateName"] == "digits-objective-"
    assert body["metadata"]["labels"] == LABELS
    assert all(k.startswith("app.kubernetes.io/") for k in LABELS)
    patch = owned({"metadata": {"name": "digits", "uid": "u-1"}})
    assert patch["metadata"]["ownerReferences"] == [
        {"apiVersion": "hpo.dev/v1alpha1", "kind": "Experiment", "name": "digits", "uid": "u-1"}
    ]
    assert patch["metadata"]["labels"]["app.kubernetes.io/instance"] == "digits"


SPACE = {"lr": double(0.001, 1.0, log=True), "layers": integer(1, 4), "act": categorical(["relu", "tanh"])}


def tune_spec() -> ExperimentSpec:
    template = tune_template(
        "digits-objective-x1y2z",
        "hpo.local/trial:1",
        list(SPACE),
        resources={"cpu": "500m", "memory": "256Mi"},
        image_pull_policy="Never",
        node_selector={"hpo.dev/node": "real"},
    )
    return experiment_spec(SPACE, objective="loss", trial_template=template, metrics_source="StdoutLog")


def test_the_function_travels_in_a_volume_not_on_the_command_line():
    pod = tune_spec().trial_template.template["spec"]
    box = pod["containers"][0]
    assert box["command"] == [
        "python3",
        f"{MOUNT_PATH}/runner.py",
        MOUNT_PATH,
        "lr=${params.lr}",
        "layers=${params.layers}",
        "act=${params.act}",
    ]
    assert "args" not in box
    assert pod["volumes"] == [{"name": "hpo-objective", "configMap": {"name": "digits-objective-x1y2z"}}]
    assert box["volumeMounts"] == [{"name": "hpo-objective", "mountPath": MOUNT_PATH, "readOnly": True}]
    assert box["resources"] == {
        "requests": {"cpu": "500m", "memory": "256Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }
    assert {"name": "PYTHONUNBUFFERED", "value": "1"} in box["env"]
    assert pod["nodeSelector"] == {"hpo.dev/node": "real"}


RESTRICTED_POD = {
    "runAsNonRoot": True,
    "runAsUser": 65534,
    "runAsGroup": 65534,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def test_the_trial_pod_meets_the_restricted_pod_security_level_and_mounts_no_token():
    """What Pod Security's `restricted` level asks (tests/integration/test_tune.py runs these pods
    in a namespace that enforces it); the same for experiment_spec(image=...)'s pod."""
    for spec in (tune_spec(), experiment_spec(SPACE, objective="loss", image="trainer:1")):
        pod = spec.trial_template.template["spec"]
        assert pod["securityContext"] == RESTRICTED_POD
        assert pod["containers"][0]["securityContext"] == RESTRICTED_CONTAINER
        assert pod["automountServiceAccountToken"] is False


def test_the_pods_own_security_context_changes_fields_of_the_restricted_one():
    pod = tune_template(
        "cm", "python:3.12", ["lr"], pod={"securityContext": {"runAsUser": 1000}, "automountServiceAccountToken": True}
    ).template["spec"]
    assert pod["securityContext"] == {**RESTRICTED_POD, "runAsUser": 1000}
    assert pod["automountServiceAccountToken"] is True
    # The module's defaults are not changed by one template.
    assert tune_template("cm", "python:3.12", ["lr"]).template["spec"]["securityContext"] == RESTRICTED_POD


def test_the_pod_the_operator_builds_runs_the_function_with_its_trials_values(tmp_path: Path):
    spec = tune_spec()
    manifest = experiment_manifest("digits", spec)
    assert ExperimentSpec.model_validate(manifest["spec"]) == spec
    trial = {
        "apiVersion": "hpo.dev/v1alpha1",
        "metadata": {"name": "digits-0000", "namespace": "ns", "uid": "t-1"},
        "spec": {
            "parameters": [
                {"name": "lr", "value": "0.5"},
                {"name": "layers", "value": "3"},
                {"name": "act", "value": "tanh"},
            ]
        },
    }
    command = build_pod(spec, "digits", trial)["spec"]["containers"][0]["command"]
    # The ConfigMap's files where the pod mounts them (here: a temporary directory).
    source = "def objective(lr, layers, act):\n    return {'loss': lr * layers + (act == 'tanh')}\n"
    directory = tmp_path / "mount"
    directory.mkdir()
    for name, text in objective_files("objective", source, "loss", SPACE).items():
        (directory / name).write_text(text)
    local = [c.replace(MOUNT_PATH, str(directory)) for c in command]
    done = subprocess.run([PYTHON, "-I", *local[1:]], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert metrics.latest(metrics.parse_log(done.stdout, ["loss"]))["loss"].value == 0.5 * 3 + 1

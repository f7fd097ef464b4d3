"""Bad Experiments and Trials are refused by the real API server at `kubectl apply` time.

Every invalid manifest below is the valid base manifest with one thing wrong. Each case checks
that kubectl fails, that the object was not created, and that the error names the field and says
what is wrong in words (the CRD's schema bounds, enums and CEL rules, generated from
the models in hpo_operator.api). No operator runs here: this is the API server alone.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from hpo_operator.api.spec import EXPERIMENT_NAME_MAX_LENGTH, TRIAL_NAME_MAX_LENGTH
from tests.support.experiments import GROUP, VERSION

API_VERSION = f"{GROUP}/{VERSION}"

# Signs of a CEL rule that failed to evaluate rather than a rule that said no: the user would see
# an internal error instead of the rule's message.
CEL_RUNTIME_ERRORS = ("no such key", "evaluating rule", "no such overload", "evaluation error")


def valid_experiment(name: str = "valid") -> dict[str, Any]:
    """An Experiment the API server accepts; every invalid case is a copy with one change."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Experiment",
        "metadata": {"name": name},
        "spec": {
            "objective": {
                "type": "minimize",
                "metricName": "val_loss",
                "goal": 0.05,
                "additionalMetricNames": ["accuracy", "epoch_time"],
            },
            "algorithm": {"name": "random", "seed": 7},
            "parameters": [
                {"name": "lr", "type": "double", "min": 0.0001, "max": 0.1, "log": True},
                {"name": "layers", "type": "int", "min": 1, "max": 8, "step": 1},
                {"name": "optimizer", "type": "categorical", "values": ["adam", "sgd", "rmsprop"]},
                {"name": "batch_size", "type": "discrete", "values": ["16", "32", "64"]},
            ],
            "parallelTrialCount": 2,
            "maxTrialCount": 12,
            "maxFailedTrialCount": 3,
            "retryPolicy": {"retryOn": ["Infrastructure", "OOMKilled"], "backoffSeconds": 10},
            "maxTrialDurationSeconds": 600,
            "startupTimeoutSeconds": 120,
            "suspend": False,
            "metricsCollector": {"source": "StdoutLog"},
            "trialTemplate": {
                "primaryContainerName": "train",
                "podRetention": "Delete",
                "template": {
                    "metadata": {"labels": {"app": "trainer"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "train",
                                "image": "trainer:1",
                                "args": [
                                    "--lr=${params.lr}",
                                    "--layers=${params.layers}",
                                    "--optimizer=${params.optimizer}",
                                    "--batch-size=${params.batch_size}",
                                ],
                            }
                        ]
                    },
                },
            },
        },
    }


OBJECTIVES = [
    {"metricName": "val_acc", "type": "maximize", "referenceValue": 0.5},
    {"metricName": "latency_ms", "type": "minimize", "referenceValue": 200},
]


def several(spec: dict[str, Any], metrics=None, **objective: Any) -> None:
    """The case's spec made multi-objective (valid so far), then changed by `objective`."""
    spec["objective"] = {
        "metrics": copy.deepcopy(OBJECTIVES if metrics is None else metrics),
        "constraints": [{"metricName": "memory_gb", "max": 16}],
        "additionalMetricNames": ["epoch_time"],
        **objective,
    }


def valid_trial(name: str = "valid-trial", experiment: str = "valid") -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Trial",
        "metadata": {"name": name},
        "spec": {
            "experimentName": experiment,
            "parameters": [{"name": "lr", "value": "0.01"}, {"name": "layers", "value": "3"}],
            "attempt": 1,
        },
    }


def param(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in spec["parameters"] if p["name"] == name)


def container(spec: dict[str, Any]) -> dict[str, Any]:
    return spec["trialTemplate"]["template"]["spec"]["containers"][0]


# (id, change to the base spec, the field the error names, what the error says)
Edit = Callable[[dict[str, Any]], Any]
CASES: list[tuple[str, Edit, str, str]] = [
    # -- parameters --------------------------------------------------------------------------
    (
        "min-equals-max",
        lambda s: param(s, "layers").update(min=4, max=4),
        "spec.parameters[1]",
        "min must be less than max",
    ),
    (
        "min-above-max",
        lambda s: param(s, "lr").update(min=0.1, max=0.001),
        "spec.parameters[0]",
        "min must be less than max",
    ),
    (
        "categorical-empty-values",
        lambda s: param(s, "optimizer").update(values=[]),
        "spec.parameters[2]",
        "categorical and discrete parameters need a non-empty list of values",
    ),
    (
        "discrete-without-values",
        lambda s: param(s, "batch_size").pop("values"),
        "spec.parameters[3]",
        "categorical and discrete parameters need a non-empty list of values",
    ),
    (
        "categorical-with-min",
        lambda s: param(s, "optimizer").update(min=0),
        "spec.parameters[2]",
        "categorical and discrete take values",
    ),
    (
        "categorical-with-log",
        lambda s: param(s, "optimizer").update(log=True),
        "spec.parameters[2]",
        "categorical and discrete take values",
    ),
    (
        "int-with-values",
        lambda s: param(s, "layers").update(values=["1", "2"]),
        "spec.parameters[1]",
        "int and double parameters take min, max, step and log",
    ),
    (
        "double-without-max",
        lambda s: param(s, "lr").pop("max"),
        "spec.parameters[0]",
        "int and double parameters need min and max",
    ),
    (
        "int-without-min",
        lambda s: param(s, "layers").pop("min"),
        "spec.parameters[1]",
        "int and double parameters need min and max",
    ),
    (
        "duplicate-parameter-names",
        lambda s: s["parameters"].append({"name": "layers", "type": "double", "min": 0, "max": 1}),
        "spec.parameters[4]",
        "Duplicate value",
    ),
    (
        "duplicate-categorical-values",
        lambda s: param(s, "optimizer").update(values=["adam", "sgd", "adam"]),
        "spec.parameters[2].values[2]",
        'Duplicate value: "adam"',
    ),
    (
        "discrete-value-not-a-number",
        lambda s: param(s, "batch_size").update(values=["16", "32", "lots"]),
        "spec.parameters[3]",
        "the values of a discrete parameter must be numbers",
    ),
    (
        "discrete-value-two-points",
        lambda s: param(s, "batch_size").update(values=["1.2.3"]),
        "spec.parameters[3]",
        "the values of a discrete parameter must be numbers",
    ),
    (
        "log-with-zero-min",
        lambda s: param(s, "lr").update(min=0),
        "spec.parameters[0]",
        "a log-scale parameter needs min > 0",
    ),
    (
        "log-with-negative-min",
        lambda s: param(s, "lr").update(min=-1),
        "spec.parameters[0]",
        "a log-scale parameter needs min > 0",
    ),
    (
        "log-with-step",
        lambda s: param(s, "lr").update(step=0.001),
        "spec.parameters[0]",
        "a log-scale parameter cannot have a step",
    ),
    (
        "int-with-fractional-bounds",
        lambda s: param(s, "layers").update(min=1.5, max=8),
        "spec.parameters[1]",
        "an int parameter needs whole-number min, max and step",
    ),
    (
        "int-with-fractional-step",
        lambda s: param(s, "layers").update(step=0.5),
        "spec.parameters[1]",
        "an int parameter needs whole-number min, max and step",
    ),
    ("step-zero", lambda s: param(s, "layers").update(step=0), "spec.parameters[1].step", "should be greater than 0"),
    (
        "step-negative",
        lambda s: param(s, "layers").update(step=-1),
        "spec.parameters[1].step",
        "should be greater than 0",
    ),
    (
        "unknown-parameter-type",
        lambda s: param(s, "lr").update(type="float"),
        "spec.parameters[0].type",
        'Unsupported value: "float"',
    ),
    (
        "parameter-name-with-dash",
        lambda s: param(s, "batch_size").update(name="batch-size"),
        "spec.parameters[3].name",
        "should match '^[A-Za-z_][A-Za-z0-9_]*$'",
    ),
    (
        "parameter-name-starting-with-digit",
        lambda s: param(s, "lr").update(name="2lr"),
        "spec.parameters[0].name",
        "should match '^[A-Za-z_][A-Za-z0-9_]*$'",
    ),
    ("no-parameters", lambda s: s.update(parameters=[]), "spec.parameters", "should have at least 1 items"),
    (
        "too-many-parameters",
        lambda s: s.update(parameters=[{"name": f"p{i}", "type": "int", "min": 0, "max": 1} for i in range(65)]),
        "spec.parameters",
        "must have at most 64 items",
    ),
    (
        "categorical-value-too-long",
        lambda s: param(s, "optimizer").update(values=["x" * 129]),
        "spec.parameters[2].values[0]",
        "Too long: may not be more than 128",
    ),
    # -- budgets -------------------------------------------------------------------------------
    (
        "parallel-exceeds-max",
        lambda s: s.update(parallelTrialCount=20, maxTrialCount=10),
        "spec",
        "parallelTrialCount must not exceed maxTrialCount",
    ),
    (
        "max-trial-count-zero",
        lambda s: s.update(maxTrialCount=0),
        "spec.maxTrialCount",
        "should be greater than or equal to 1",
    ),
    ("max-trial-count-missing", lambda s: s.pop("maxTrialCount"), "spec.maxTrialCount", "Required value"),
    (
        "parallel-trial-count-zero",
        lambda s: s.update(parallelTrialCount=0),
        "spec.parallelTrialCount",
        "should be greater than or equal to 1",
    ),
    (
        "negative-max-failed-trial-count",
        lambda s: s.update(maxFailedTrialCount=-1),
        "spec.maxFailedTrialCount",
        "should be greater than or equal to 0",
    ),
    (
        "max-trial-duration-zero",
        lambda s: s.update(maxTrialDurationSeconds=0),
        "spec.maxTrialDurationSeconds",
        "should be greater than or equal to 1",
    ),
    (
        "startup-timeout-over-a-day",
        lambda s: s.update(startupTimeoutSeconds=86401),
        "spec.startupTimeoutSeconds",
        "should be less than or equal to 86400",
    ),
    ("suspend-not-a-boolean", lambda s: s.update(suspend="yes"), "spec.suspend", "must be of type boolean"),
    # -- objective -----------------------------------------------------------------------------
    (
        "unknown-objective-type",
        lambda s: s["objective"].update(type="minimise"),
        "spec.objective.type",
        'Unsupported value: "minimise"',
    ),
    (
        "metric-name-starting-with-a-dash",
        lambda s: s["objective"].update(metricName="-loss"),
        "spec.objective.metricName",
        "should match '^[A-Za-z_][A-Za-z0-9_./-]*$'",
    ),
    (
        "metric-name-with-space",
        lambda s: s["objective"].update(metricName="val loss"),
        "spec.objective.metricName",
        "should match '^[A-Za-z_][A-Za-z0-9_./-]*$'",
    ),
    (
        "additional-metrics-repeat-objective",
        lambda s: s["objective"].update(additionalMetricNames=["accuracy", "val_loss"]),
        "spec.objective",
        "additionalMetricNames must not repeat metricName",
    ),
    ("goal-not-a-number", lambda s: s["objective"].update(goal="low"), "spec.objective.goal", "must be of type number"),
    ("objective-missing", lambda s: s.pop("objective"), "spec.objective", "Required value"),
    # -- several objectives and constraints ----------------------------------------------------
    (
        "several-objectives-and-a-metric-name",
        lambda s: s["objective"].update(metrics=OBJECTIVES),
        "spec.objective",
        "give type and metricName (one objective) or metrics (several objectives), not both",
    ),
    (
        "objective-without-a-metric-name",
        lambda s: s["objective"].pop("metricName"),
        "spec.objective",
        "give type and metricName (one objective) or metrics (several objectives), not both",
    ),
    (
        "several-objectives-of-one",
        lambda s: several(s, metrics=OBJECTIVES[:1]),
        "spec.objective.metrics",
        "should have at least 2 items",
    ),
    (
        "several-objectives-repeat-a-metric",
        lambda s: several(s, metrics=[OBJECTIVES[0], {**OBJECTIVES[1], "metricName": "val_acc"}]),
        "spec.objective.metrics[1]",
        "Duplicate value",
    ),
    (
        "several-objectives-unknown-direction",
        lambda s: several(s, metrics=[OBJECTIVES[0], {**OBJECTIVES[1], "type": "minimise"}]),
        "spec.objective.metrics[1].type",
        'Unsupported value: "minimise"',
    ),
    (
        "an-objective-also-a-constraint",
        lambda s: several(s, constraints=[{"metricName": "latency_ms", "max": 100}]),
        "spec.objective",
        "a metric cannot be both an objective and a constraint",
    ),
    (
        "the-single-objective-also-a-constraint",
        lambda s: s["objective"].update(constraints=[{"metricName": "val_loss", "max": 1}]),
        "spec.objective",
        "a metric cannot be both an objective and a constraint",
    ),
    (
        "a-constraint-repeated",
        lambda s: several(
            s, constraints=[{"metricName": "memory_gb", "max": 16}, {"metricName": "memory_gb", "min": 1}]
        ),
        "spec.objective.constraints[1]",
        "Duplicate value",
    ),
    (
        "additional-metrics-repeat-one-of-several-objectives",
        lambda s: several(s, additionalMetricNames=["latency_ms"]),
        "spec.objective",
        "additionalMetricNames must not repeat an objective of metrics",
    ),
    (
        "additional-metrics-repeat-a-constraint",
        lambda s: several(s, additionalMetricNames=["memory_gb"]),
        "spec.objective",
        "additionalMetricNames must not repeat a constraint's metric",
    ),
    (
        "goal-with-several-objectives",
        lambda s: several(s, goal=0.9),
        "spec.objective",
        "goal needs a single objective: a Pareto front has no single goal",
    ),
    (
        "a-partial-reference-point",
        lambda s: several(s, metrics=[OBJECTIVES[0], {"metricName": "latency_ms", "type": "minimize"}]),
        "spec.objective",
        "give referenceValue for every objective or for none",
    ),
    (
        "a-constraint-without-bounds",
        lambda s: several(s, constraints=[{"metricName": "memory_gb"}]),
        "spec.objective.constraints[0]",
        "a constraint needs min, max or both",
    ),
    (
        "a-constraint-whose-min-exceeds-its-max",
        lambda s: several(s, constraints=[{"metricName": "memory_gb", "min": 20, "max": 16}]),
        "spec.objective.constraints[0]",
        "a constraint's min must not exceed its max",
    ),
    (
        "median-early-stopping-with-several-objectives",
        lambda s: (several(s), s.update(earlyStopping={"algorithm": "median"})),
        "spec",
        "with several objectives earlyStopping takes asha only",
    ),
    (
        "hyperband-with-several-objectives",
        lambda s: (several(s), s.update(earlyStopping={"algorithm": "hyperband"})),
        "spec",
        "hyperband's brackets are not implemented for them",
    ),
    # -- budgets -------------------------------------------------------------------------------
    (
        "a-zero-duration-budget",
        lambda s: s.update(budget={"maxDurationSeconds": 0}),
        "spec.budget.maxDurationSeconds",
        "should be greater than or equal to 1",
    ),
    (
        "a-compute-budget-of-no-resource",
        lambda s: s.update(budget={"maxResourceSeconds": {"not a resource!": 10}}),
        "spec.budget.maxResourceSeconds",
        "maxResourceSeconds' keys are resource names",
    ),
    (
        "a-compute-budget-of-nothing",
        lambda s: s.update(budget={"maxResourceSeconds": {"nvidia.com/gpu": 0}}),
        "spec.budget.maxResourceSeconds.nvidia.com/gpu",
        "should be greater than 0",
    ),
    (
        "a-compute-budget-of-too-many-resources",
        lambda s: s.update(budget={"maxResourceSeconds": {f"example.com/r{i}": 1 for i in range(17)}}),
        "spec.budget.maxResourceSeconds",
        "must have at most 16 items",
    ),
    (
        "an-unknown-budget-action",
        lambda s: s.update(budget={"maxDurationSeconds": 60, "runningTrials": "Pause"}),
        "spec.budget.runningTrials",
        "Unsupported value",
    ),
    (
        "cmaes-with-several-objectives",
        lambda s: (several(s), s["algorithm"].update(name="cmaes")),
        "spec",
        "cmaes supports a single objective only",
    ),
    (
        "nsga2-with-a-setting-of-nsga3",
        lambda s: (
            several(s),
            s["algorithm"].update(name="nsga2", settings=[{"name": "dividingParameter", "value": "3"}]),
        ),
        "spec.algorithm",
        "unknown setting for this algorithm",
    ),
    # -- algorithm -----------------------------------------------------------------------------
    (
        "unknown-algorithm",
        lambda s: s["algorithm"].update(name="bayesian"),
        "spec.algorithm.name",
        'Unsupported value: "bayesian"',
    ),
    (
        "grid-with-double-without-step",
        lambda s: s["algorithm"].update(name="grid"),
        "spec",
        "grid search needs a step for every double parameter",
    ),
    (
        "negative-seed",
        lambda s: s["algorithm"].update(seed=-1),
        "spec.algorithm.seed",
        "should be greater than or equal to 0",
    ),
    (
        "random-with-settings",
        lambda s: s["algorithm"].update(settings=[{"name": "multivariate", "value": "true"}]),
        "spec.algorithm",
        "unknown setting for this algorithm",
    ),
    (
        "tpe-with-unknown-setting",
        lambda s: s["algorithm"].update(name="tpe", settings=[{"name": "popsize", "value": "8"}]),
        "spec.algorithm",
        "unknown setting for this algorithm",
    ),
    # -- retries -------------------------------------------------------------------------------
    (
        "retry-on-unknown-class",
        lambda s: s["retryPolicy"].update(retryOn=["Infrastructure", "Timeout"]),
        "spec.retryPolicy.retryOn[1]",
        'Unsupported value: "Timeout"',
    ),
    (
        "retry-on-repeated-class",
        lambda s: s["retryPolicy"].update(retryOn=["OOMKilled", "OOMKilled"]),
        "spec.retryPolicy.retryOn[1]",
        'Duplicate value: "OOMKilled"',
    ),
    (
        "too-many-retries",
        lambda s: s["retryPolicy"].update(maxRetries=21),
        "spec.retryPolicy.maxRetries",
        "should be less than or equal to 20",
    ),
    (
        "negative-backoff",
        lambda s: s["retryPolicy"].update(backoffSeconds=-5),
        "spec.retryPolicy.backoffSeconds",
        "should be greater than or equal to 0",
    ),
    # -- metrics and early stopping ------------------------------------------------------------
    (
        "unknown-metrics-source",
        lambda s: s["metricsCollector"].update(source="Prometheus"),
        "spec.metricsCollector.source",
        'Unsupported value: "Prometheus"',
    ),
    (
        "metrics-interval-zero",
        lambda s: s["metricsCollector"].update(intervalSeconds=0),
        "spec.metricsCollector.intervalSeconds",
        "should be greater than or equal to 1",
    ),
    (
        "early-stopping-unknown-algorithm",
        lambda s: s.update(earlyStopping={"algorithm": "pbt"}),
        "spec.earlyStopping.algorithm",
        'Unsupported value: "pbt"',
    ),
    (
        "early-stopping-median-with-a-rung-setting",
        lambda s: s.update(earlyStopping={"algorithm": "median", "reductionFactor": 3}),
        "spec.earlyStopping",
        "minResource and reductionFactor are settings of asha and hyperband, not of the median rule",
    ),
    (
        "early-stopping-asha-with-a-median-setting",
        lambda s: s.update(earlyStopping={"algorithm": "asha", "warmupSteps": 2}),
        "spec.earlyStopping",
        "minTrialsRequired and warmupSteps are settings of the median rule only",
    ),
    (
        "early-stopping-hyperband-with-a-median-setting",
        lambda s: s.update(earlyStopping={"algorithm": "hyperband", "minTrialsRequired": 2}),
        "spec.earlyStopping",
        "minTrialsRequired and warmupSteps are settings of the median rule only",
    ),
    (
        "early-stopping-asha-with-max-resource",
        lambda s: s.update(earlyStopping={"algorithm": "asha", "maxResource": 20}),
        "spec.earlyStopping",
        "maxResource is a setting of hyperband only",
    ),
    (
        "early-stopping-hyperband-max-resource-not-above-min-resource",
        lambda s: s.update(earlyStopping={"algorithm": "hyperband", "minResource": 10, "maxResource": 10}),
        "spec.earlyStopping",
        "hyperband: maxResource must be greater than minResource (default 1)",
    ),
    (
        "early-stopping-hyperband-max-resource-one",
        lambda s: s.update(earlyStopping={"algorithm": "hyperband", "maxResource": 1}),
        "spec.earlyStopping.maxResource",
        "should be greater than or equal to 2",
    ),
    (
        "early-stopping-reduction-factor-one",
        lambda s: s.update(earlyStopping={"algorithm": "asha", "reductionFactor": 1}),
        "spec.earlyStopping.reductionFactor",
        "should be greater than or equal to 2",
    ),
    # -- trial template ------------------------------------------------------------------------
    ("trial-template-missing", lambda s: s.pop("trialTemplate"), "spec.trialTemplate", "Required value"),
    (
        "template-without-spec",
        lambda s: s["trialTemplate"]["template"].pop("spec"),
        "spec.trialTemplate.template.spec",
        "Required value",
    ),
    (
        "template-without-containers",
        lambda s: s["trialTemplate"]["template"]["spec"].pop("containers"),
        "spec.trialTemplate.template.spec.containers",
        "Required value",
    ),
    (
        "template-with-empty-containers",
        lambda s: s["trialTemplate"]["template"]["spec"].update(containers=[]),
        "spec.trialTemplate.template.spec.containers",
        "should have at least 1 items",
    ),
    (
        "container-without-name",
        lambda s: container(s).pop("name"),
        "spec.trialTemplate.template.spec.containers[0].name",
        "Required value",
    ),
    (
        "unknown-pod-retention",
        lambda s: s["trialTemplate"].update(podRetention="Never"),
        "spec.trialTemplate.podRetention",
        'Unsupported value: "Never"',
    ),
    # -- misspelt fields -----------------------------------------------------------------------
    ("unknown-spec-field", lambda s: s.update(maxTrials=5), "", 'unknown field "spec.maxTrials"'),
    (
        "unknown-parameter-field",
        lambda s: param(s, "lr").update(maximum=1),
        "",
        'unknown field "spec.parameters[0].maximum"',
    ),
]


@pytest.fixture(scope="module")
def scratch(kubectl, crds):
    """One namespace for all the invalid cases: none of them may create anything."""
    name = f"hpo-validation-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", name)
    kubectl.run("label", "namespace", name, "app.kubernetes.io/part-of=hpo-operator-tests")
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


def assert_refused(kubectl, manifest: dict[str, Any], namespace: str, *fragments: str) -> str:
    """kubectl apply fails, says each fragment, and nothing of that name exists afterwards."""
    out = kubectl.apply(manifest, namespace, check=False)
    assert out.returncode != 0, f"accepted:\n{out.stdout}"
    for fragment in fragments:
        assert fragment in out.stderr, f"{fragment!r} is not in the error:\n{out.stderr}"
    for sign in CEL_RUNTIME_ERRORS:
        assert sign not in out.stderr, f"a CEL rule failed to evaluate:\n{out.stderr}"
    kind, name = manifest["kind"].lower(), manifest["metadata"]["name"]
    assert kubectl.run("get", kind, name, "-n", namespace, check=False).returncode != 0, (
        f"{kind} {name} was created although kubectl reported an error"
    )
    return out.stderr


def test_there_are_enough_cases():
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 25


@pytest.mark.parametrize("edit,field,message", [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_invalid_experiment_is_refused(kubectl, scratch, edit, field, message):
    manifest = valid_experiment(f"bad-{uuid.uuid4().hex[:10]}")
    edit(manifest["spec"])
    assert manifest != valid_experiment(manifest["metadata"]["name"]), "the case changes nothing"
    stderr = assert_refused(kubectl, manifest, scratch, message)
    if field:
        # The error names the offending field, as `path: Invalid value: ...` or similar.
        assert f"{field}:" in stderr, f"the error does not name {field}:\n{stderr}"


def test_valid_experiment_is_accepted_with_server_side_defaults(kubectl, namespace, crds):
    manifest = valid_experiment("valid")
    out = kubectl.apply(manifest, namespace)
    assert "experiment.hpo.dev/valid created" in out.stdout
    stored = kubectl.get("experiment", "valid", namespace)["spec"]
    # What the manifest said comes back unchanged...
    sent = manifest["spec"]
    for key in (
        "objective",
        "parallelTrialCount",
        "maxTrialCount",
        "maxFailedTrialCount",
        "maxTrialDurationSeconds",
        "startupTimeoutSeconds",
        "suspend",
    ):
        assert stored[key] == sent[key], key
    assert [p["name"] for p in stored["parameters"]] == ["lr", "layers", "optimizer", "batch_size"]
    assert stored["algorithm"] == {"name": "random", "seed": 7}
    # ... and what it left out is filled in by the API server from the schema's defaults.
    assert stored["retryPolicy"] == {
        "retryOn": ["Infrastructure", "OOMKilled"],
        "backoffSeconds": 10,
        "maxRetries": 2,
        "maxBackoffSeconds": 300,
    }
    assert stored["metricsCollector"] == {"source": "StdoutLog", "intervalSeconds": 10}
    assert [p["log"] for p in stored["parameters"]] == [True, False, False, False]
    assert stored["trialTemplate"]["podRetention"] == "Delete"


@pytest.mark.parametrize("name", ["Validation-accuracy", "loss/train", "top-5.acc"])
def test_a_metric_name_as_katib_and_frameworks_write_them_is_accepted(kubectl, namespace, current_crds, name):
    manifest = valid_experiment("named")
    manifest["spec"]["objective"]["metricName"] = name
    kubectl.apply(manifest, namespace)
    assert kubectl.get("experiment", "named", namespace)["spec"]["objective"]["metricName"] == name


@pytest.mark.parametrize("algorithm", ["tpe", "nsga2", "nsga3", "random", "grid", "qmc"])
def test_an_experiment_with_several_objectives_and_constraints_is_accepted_as_given(
    kubectl, namespace, crds, algorithm
):
    manifest = valid_experiment(f"several-{algorithm}")
    several(manifest["spec"])
    if algorithm.startswith("nsga"):
        manifest["spec"]["algorithm"]["settings"] = [
            {"name": "populationSize", "value": "8"},
            {"name": "crossoverProb", "value": "0.8"},
        ]
    if algorithm == "grid":
        for p in manifest["spec"]["parameters"]:
            if p["type"] == "double":
                p.update(step=0.01, log=False)
    manifest["spec"]["algorithm"]["name"] = algorithm
    kubectl.apply(manifest, namespace)
    stored = kubectl.get("experiment", manifest["metadata"]["name"], namespace)["spec"]
    assert stored["objective"] == manifest["spec"]["objective"]
    assert stored["algorithm"] == manifest["spec"]["algorithm"]


@pytest.mark.parametrize(
    "stopping",
    [
        {"algorithm": "hyperband", "minResource": 2, "maxResource": 50, "reductionFactor": 4},
        {"algorithm": "hyperband"},
        {"algorithm": "asha", "minResource": 1, "reductionFactor": 2},
        {"algorithm": "median", "minTrialsRequired": 0, "warmupSteps": 5},
    ],
    ids=lambda s: "-".join(map(str, s.values())),
)
def test_early_stopping_settings_of_their_own_rule_are_accepted_as_given(kubectl, namespace, crds, stopping):
    # No defaults are filled in: they would be settings of every rule, which the rules refuse.
    manifest = valid_experiment("stopping")
    manifest["spec"]["earlyStopping"] = stopping
    kubectl.apply(manifest, namespace)
    assert kubectl.get("experiment", "stopping", namespace)["spec"]["earlyStopping"] == stopping
    kubectl.run("delete", "experiment", "stopping", "-n", namespace)


def test_minimal_experiment_gets_the_default_algorithm_and_can_be_suspended(kubectl, namespace, crds):
    """Leaving out optional sections must not trip the CEL rules that read them (on create, and on
    update where the immutability rules compare old and new)."""
    manifest = valid_experiment("minimal")
    spec = manifest["spec"]
    for key in (
        "algorithm",
        "retryPolicy",
        "metricsCollector",
        "maxFailedTrialCount",
        "maxTrialDurationSeconds",
        "startupTimeoutSeconds",
        "suspend",
        "parallelTrialCount",
    ):
        spec.pop(key)
    del spec["trialTemplate"]["primaryContainerName"], spec["trialTemplate"]["podRetention"]
    kubectl.apply(manifest, namespace)
    stored = kubectl.get("experiment", "minimal", namespace)["spec"]
    assert stored["algorithm"] == {"name": "random"}
    assert stored["parallelTrialCount"] == 1 and stored["startupTimeoutSeconds"] == 300
    assert stored["suspend"] is False and stored["trialTemplate"]["podRetention"] == "Keep"

    spec["suspend"] = True
    kubectl.apply(manifest, namespace)
    assert kubectl.get("experiment", "minimal", namespace)["spec"]["suspend"] is True


@pytest.mark.parametrize(
    "edit,message",
    [
        pytest.param(lambda s: param(s, "layers").update(max=16), "parameters are immutable", id="parameter-bound"),
        pytest.param(lambda s: s["parameters"].pop(), "parameters are immutable", id="parameter-removed"),
        pytest.param(
            lambda s: param(s, "optimizer")["values"].append("adagrad"),
            "parameters are immutable",
            id="categorical-value-added",
        ),
        pytest.param(lambda s: s["objective"].update(type="maximize"), "objective is immutable", id="objective-type"),
        pytest.param(
            lambda s: s["objective"].update(metricName="loss"), "objective is immutable", id="objective-metric"
        ),
        pytest.param(lambda s: s["algorithm"].update(seed=8), "algorithm is immutable", id="algorithm-seed"),
    ],
)
def test_search_definition_is_immutable(kubectl, namespace, crds, edit, message):
    manifest = valid_experiment("fixed")
    kubectl.apply(manifest, namespace)
    before = kubectl.get("experiment", "fixed", namespace)
    edit(manifest["spec"])
    out = kubectl.apply(manifest, namespace, check=False)
    assert out.returncode != 0, f"accepted:\n{out.stdout}"
    assert message in out.stderr and "immutable" in out.stderr, out.stderr
    after = kubectl.get("experiment", "fixed", namespace)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"]


def test_several_objectives_take_asha_and_a_budget(kubectl, namespace, crds):
    manifest = valid_experiment("mo-asha")
    several(manifest["spec"])
    manifest["spec"]["earlyStopping"] = {"algorithm": "asha", "minResource": 1, "reductionFactor": 3}
    manifest["spec"]["budget"] = {
        "maxDurationSeconds": 3600,
        "maxResourceSeconds": {"nvidia.com/gpu": 36000, "cpu": 1e6},
        "runningTrials": "Finish",
    }
    kubectl.apply(manifest, namespace)
    stored = kubectl.get("experiment", "mo-asha", namespace)["spec"]
    assert stored["earlyStopping"]["algorithm"] == "asha"
    assert stored["budget"]["maxResourceSeconds"] == {"nvidia.com/gpu": 36000, "cpu": 1e6}


def test_the_goal_can_change_and_the_rest_of_the_objective_cannot(kubectl, namespace, crds):
    manifest = valid_experiment("goal")
    kubectl.apply(manifest, namespace)
    manifest["spec"]["objective"]["goal"] = 0.01
    kubectl.apply(manifest, namespace)
    assert kubectl.get("experiment", "goal", namespace)["spec"]["objective"]["goal"] == 0.01
    del manifest["spec"]["objective"]["goal"]
    kubectl.apply(manifest, namespace)
    assert "goal" not in kubectl.get("experiment", "goal", namespace)["spec"]["objective"]
    manifest["spec"]["objective"]["additionalMetricNames"] = ["accuracy"]
    out = kubectl.apply(manifest, namespace, check=False)
    assert out.returncode != 0 and "objective is immutable, but for its goal" in out.stderr, out.stderr


def test_budgets_and_suspend_can_change(kubectl, namespace, crds):
    manifest = valid_experiment("tunable")
    kubectl.apply(manifest, namespace)
    manifest["spec"]["maxTrialCount"] = 30
    out = kubectl.apply(manifest, namespace)
    assert "configured" in out.stdout
    assert kubectl.get("experiment", "tunable", namespace)["spec"]["maxTrialCount"] == 30
    manifest["spec"]["suspend"] = True
    kubectl.apply(manifest, namespace)
    manifest["spec"]["parallelTrialCount"] = 4
    manifest["spec"]["retryPolicy"]["maxRetries"] = 5
    kubectl.apply(manifest, namespace)
    spec = kubectl.get("experiment", "tunable", namespace)["spec"]
    assert (spec["suspend"], spec["parallelTrialCount"], spec["retryPolicy"]["maxRetries"]) == (True, 4, 5)
    # An update is validated like a create: the budgets must still be consistent.
    manifest["spec"]["maxTrialCount"] = 3
    out = kubectl.apply(manifest, namespace, check=False)
    assert out.returncode != 0 and "parallelTrialCount must not exceed maxTrialCount" in out.stderr, out.stderr
    assert kubectl.get("experiment", "tunable", namespace)["spec"]["maxTrialCount"] == 30


def test_experiment_name_length(kubectl, namespace, crds):
    longest = "e" * EXPERIMENT_NAME_MAX_LENGTH
    assert EXPERIMENT_NAME_MAX_LENGTH == 40
    kubectl.apply(valid_experiment(longest), namespace)
    kubectl.get("experiment", longest, namespace)
    assert_refused(
        kubectl,
        valid_experiment(longest + "x"),
        namespace,
        "the name of an Experiment must be at most 40 characters long",
    )


def test_trial_name_length(kubectl, namespace, crds):
    longest = "t" * TRIAL_NAME_MAX_LENGTH
    assert TRIAL_NAME_MAX_LENGTH == 56
    kubectl.apply(valid_trial(longest), namespace)
    kubectl.get("trial", longest, namespace)
    assert_refused(
        kubectl, valid_trial(longest + "x"), namespace, "the name of a Trial must be at most 56 characters long"
    )


def test_trial_parameters_and_experiment_are_immutable(kubectl, namespace, crds):
    manifest = valid_trial("run-1")
    kubectl.apply(manifest, namespace)
    stored = kubectl.get("trial", "run-1", namespace)
    assert stored["spec"]["attempt"] == 1

    changed = copy.deepcopy(manifest)
    changed["spec"]["parameters"][0]["value"] = "0.02"
    out = kubectl.apply(changed, namespace, check=False)
    assert out.returncode != 0 and "parameters are immutable" in out.stderr, out.stderr

    changed = copy.deepcopy(manifest)
    changed["spec"]["experimentName"] = "other"
    out = kubectl.apply(changed, namespace, check=False)
    assert out.returncode != 0 and "experimentName is immutable" in out.stderr, out.stderr

    assert kubectl.get("trial", "run-1", namespace)["spec"] == stored["spec"]


@pytest.mark.parametrize(
    "edit,field,message",
    [
        pytest.param(
            lambda s: s.update(attempt=0), "spec.attempt", "should be greater than or equal to 1", id="attempt-zero"
        ),
        pytest.param(
            lambda s: s["parameters"].append({"name": "lr", "value": "0.5"}),
            "spec.parameters[2]",
            "Duplicate value",
            id="duplicate-parameter",
        ),
        pytest.param(
            lambda s: s.pop("experimentName"), "spec.experimentName", "Required value", id="experiment-missing"
        ),
        pytest.param(
            lambda s: s["parameters"][0].pop("value"),
            "spec.parameters[0].value",
            "Required value",
            id="parameter-without-value",
        ),
    ],
)
def test_invalid_trial_is_refused(kubectl, scratch, edit, field, message):
    manifest = valid_trial(f"bad-{uuid.uuid4().hex[:10]}")
    edit(manifest["spec"])
    stderr = assert_refused(kubectl, manifest, scratch, message)
    assert f"{field}:" in stderr, stderr

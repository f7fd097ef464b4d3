"""The notebook SDK's pure parts: typed search spaces and experiment specs (hpo_operator.client.space, .build),
the progress bar's counts and the trials' table (hpo_operator.client.notebook)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import pandas
import pytest

from hpo_operator.api.parameters import Parameter
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.client import (
    HpoError,
    InvalidInput,
    categorical,
    discrete,
    double,
    experiment_manifest,
    experiment_spec,
    integer,
)
from hpo_operator.client.notebook import frame, progress_counts, progress_text, trial_rows, trials_frame
from hpo_operator.client.space import python_type
from hpo_operator.client.views import experiment_summary, trial_summary


def spec(**kw) -> ExperimentSpec:
    args = dict(objective="loss", image="trainer:1", command=["python3", "train.py", "--lr=${params.lr}"])
    return experiment_spec({"lr": double(1e-4, 1e-1, log=True)}, **{**args, **kw})


def test_typed_parameters_become_the_apis_parameters():
    built = experiment_spec(
        {
            "lr": double(1e-4, 1e-1, log=True),
            "momentum": double(0.0, 0.9, step=0.1),
            "layers": integer(1, 8),
            "act": categorical(["relu", "tanh"]),
            "batch": discrete([16, 32, 64]),
        },
        objective="accuracy",
        direction="maximize",
        image="trainer:1",
    )
    assert [p.dump() for p in built.parameters] == [
        {"name": "lr", "type": "double", "min": 1e-4, "max": 1e-1, "log": True},
        {"name": "momentum", "type": "double", "min": 0.0, "max": 0.9, "step": 0.1, "log": False},
        {"name": "layers", "type": "int", "min": 1.0, "max": 8.0, "log": False},
        {"name": "act", "type": "categorical", "values": ["relu", "tanh"], "log": False},
        {"name": "batch", "type": "discrete", "values": ["16", "32", "64"], "log": False},
    ]
    assert (built.objective.type, built.objective.metric_name) == ("maximize", "accuracy")


def test_the_spec_carries_budgets_retries_algorithm_and_the_trial_container():
    built = spec(
        max_trials=20,
        parallel=4,
        retries=1,
        retry_on=["Error"],
        algorithm="tpe",
        seed=7,
        algorithm_settings={"nStartupTrials": 5, "multivariate": True},
        goal=0.01,
        additional_metrics=["accuracy"],
        resources={"cpu": "1", "memory": "1Gi", "gpu": 1},
        env={"EPOCHS": "3"},
    )
    assert (built.max_trial_count, built.parallel_trial_count) == (20, 4)
    assert (built.retry_policy.max_retries, built.retry_policy.retry_on) == (1, ["Error"])
    assert built.algorithm.name == "tpe" and built.algorithm.seed == 7
    assert [(s.name, s.value) for s in built.algorithm.settings] == [("nStartupTrials", "5"), ("multivariate", "true")]
    assert built.objective.goal == 0.01 and built.objective.additional_metric_names == ["accuracy"]
    box = built.trial_template.template["spec"]["containers"][0]
    assert box["resources"]["limits"] == {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1"}
    assert box["resources"]["requests"] == box["resources"]["limits"]
    assert box["env"] == [{"name": "EPOCHS", "value": "3"}]


def test_default_retries_are_the_apis_own():
    assert spec().retry_policy == ExperimentSpec.model_fields["retry_policy"].default_factory()


def test_the_manifest_is_an_experiment_the_models_read_back():
    built = spec()
    manifest = experiment_manifest("mnist", built, labels={"team": "ml"})
    assert manifest["apiVersion"] == "hpo.dev/v1alpha1" and manifest["kind"] == "Experiment"
    assert manifest["metadata"] == {"name": "mnist", "labels": {"team": "ml"}}
    assert ExperimentSpec.model_validate(manifest["spec"]) == built
    assert experiment_manifest("mnist-", built)["metadata"] == {"generateName": "mnist-"}


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: double(1, 1), r"double\(1, 1\): min must be less than max"),
        (lambda: double(0, 1, log=True), "a log scale needs min > 0"),
        (lambda: double(0.1, 1, step=0.1, log=True), "a log-scale parameter cannot have a step"),
        (lambda: double(0, float("inf")), "max must be a finite number"),
        (lambda: double(0, 1, step=0), "step must be positive"),
        (lambda: integer(1.5, 3), "min must be an int, not 1.5"),
        (lambda: categorical("relu"), "give a list of strings, not one string"),
        (lambda: categorical([1, 2]), r"1 is not a string \(numbers go in discrete\(\)\)"),
        (lambda: categorical([]), "give at least one value"),
        (lambda: discrete([1, 2, 1]), "1 is given twice"),
        (lambda: discrete([True]), "must be a finite number, not True"),
        (lambda: experiment_spec({"learning-rate": double(0, 1)}, objective="loss", image="x"), "invalid parameter"),
        (lambda: experiment_spec({"lr": (0, 1)}, objective="loss", image="x"), "give double"),
        (lambda: experiment_spec({}, objective="loss", image="x"), "give at least one parameter"),
        (lambda: spec(parallel=5, max_trials=4), r"parallel \(5\) must not exceed max_trials \(4\)"),
        (lambda: spec(max_trials=0), "max_trials must be a whole number of at least 1"),
        (lambda: spec(direction="down"), "invalid direction 'down': use one of minimize, maximize"),
        (lambda: spec(algorithm="bayes"), "invalid algorithm 'bayes'"),
        (lambda: spec(retry_on=["Crash"]), "invalid retry_on class 'Crash'"),
        (lambda: spec(retries=50), "the retry policy: max_retries: Input should be less than or equal to 20"),
        (lambda: spec(objective="val loss"), "the objective: metric_name"),
        (lambda: spec(image=None, command=None), "give the trial's image"),
        (lambda: experiment_manifest("MNIST", spec()), "invalid experiment name 'MNIST'"),
        (lambda: experiment_manifest("x" * 41, spec()), "at most 40 characters"),
    ],
)
def test_bad_input_is_refused_before_anything_is_created(make, says):
    with pytest.raises(InvalidInput, match=says):
        make()


@pytest.mark.parametrize(
    ("parameter", "kind"),
    [
        (Parameter(name="n", type="int", min=1, max=3), "int"),
        (Parameter(name="x", type="double", min=0, max=1), "float"),
        (Parameter(name="b", type="discrete", values=["16", "32"]), "int"),
        (Parameter(name="d", type="discrete", values=["0.1", "1"]), "float"),
        (Parameter(name="a", type="categorical", values=["relu"]), "str"),
    ],
)
def test_each_parameter_type_has_its_python_type(parameter, kind):
    assert python_type(parameter) == kind


def experiment(phase="Running", **status) -> dict:
    return {
        "metadata": {"name": "mnist", "namespace": "ns"},
        "spec": {"maxTrialCount": 10, "objective": {"type": "minimize", "metricName": "loss"}},
        "status": {"phase": phase, **status},
    }


def test_progress_counts_finished_configurations_not_attempts():
    # 3 succeeded, 2 failed attempts of which one was retried (its retry is running).
    running = experiment_summary(experiment(trialsSucceeded=3, trialsFailed=2, trialsRetried=1, trialsRunning=2))
    assert progress_counts(running) == (4, 10)
    assert progress_text(running) == "Running · 2 running"


def test_a_finished_experiment_fills_the_bar_and_says_its_best_value():
    best = {"trialName": "mnist-0003", "objectiveValue": 0.125}
    done = experiment_summary(experiment("Succeeded", trialsSucceeded=4, currentOptimalTrial=best))
    assert progress_counts(done) == (10, 10)
    assert progress_text(done) == "Succeeded · best minimize loss 0.125"


def trial(name: str, phase: str, params: dict, metrics: dict, **status) -> dict:
    return {
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": "2025-01-01T00:00:00Z"},
        "spec": {"experimentName": "mnist", "parameters": [{"name": k, "value": v} for k, v in params.items()]},
        "status": {
            "phase": phase,
            "metrics": [{"name": k, "value": v} for k, v in metrics.items()],
            "startTime": "2025-01-01T00:00:01Z",
            **status,
        },
    }


PARAMETERS = [
    Parameter(name="lr", type="double", min=0.001, max=1),
    Parameter(name="layers", type="int", min=1, max=4),
    Parameter(name="act", type="categorical", values=["relu", "tanh"]),
]
TRIALS = [
    trial("mnist-0000", "Succeeded", {"lr": "0.5", "layers": "2", "act": "relu"}, {"loss": 0.3}, objectiveValue=0.3),
    trial(
        "mnist-0001",
        "Failed",
        {"lr": "0.9", "layers": "1", "act": "tanh"},
        {},
        reason="Error",
        message="the container exited with code 1 (Error): ValueError: too large",
    ),
    trial(
        "mnist-0002",
        "Succeeded",
        {"lr": "0.01", "layers": "4", "act": "tanh"},
        {"loss": 0.1, "acc": 0.9},
        objectiveValue=0.1,
    ),
]


def test_trial_rows_type_parameters_and_give_every_row_every_metric():
    rows = trial_rows([trial_summary(t) for t in TRIALS], PARAMETERS)
    assert [r["trial"] for r in rows] == ["mnist-0000", "mnist-0001", "mnist-0002"]
    assert rows[0] == {
        "trial": "mnist-0000",
        "phase": "Succeeded",
        "objective": 0.3,
        "params.lr": 0.5,
        "params.layers": 2,
        "params.act": "relu",
        "metrics.acc": None,
        "metrics.loss": 0.3,
        "attempt": 1,
        "reason": None,
        "message": None,
        "started": datetime(2025, 1, 1, 0, 0, 1, tzinfo=UTC),
        "completed": None,
    }
    assert rows[1]["message"].endswith("ValueError: too large")
    assert type(rows[1]["params.layers"]) is int


def test_the_frame_has_a_row_per_trial_to_sort_and_filter():
    df = frame(trial_rows([trial_summary(t) for t in TRIALS], PARAMETERS))
    assert isinstance(df, pandas.DataFrame)
    assert len(df) == 3
    best = df[df.phase == "Succeeded"].sort_values("objective").iloc[0]
    assert (best.trial, best["params.lr"], best["params.layers"]) == ("mnist-0002", 0.01, 4)
    assert str(df["params.layers"].dtype) == "int64"


def test_an_empty_experiment_gives_an_empty_frame_with_its_columns():
    df = frame([])
    assert len(df) == 0 and list(df.columns) == ["trial", "phase", "objective"]


def test_without_pandas_the_frame_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # what an environment without pandas looks like
    with pytest.raises(HpoError, match=r"trials_frame\(\) needs pandas: pip install pandas"):
        frame([])
    # ... before it asks the API server anything (there is no session here to ask).
    with pytest.raises(HpoError, match="needs pandas"):
        trials_frame(None, "mnist")

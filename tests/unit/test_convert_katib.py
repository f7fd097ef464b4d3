"""Katib Experiments converted to ours (hpo_operator.convert.katib): every mapping, every note
where the meaning changes, and every refusal with its message. The fixtures are in
tests/fixtures/katib/ (Katib's style, written for these tests)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from hpo_operator import client as hpo
from hpo_operator.api.spec import ExperimentSpec, MetricsCollector
from hpo_operator.convert.katib import KatibConversionError, convert, convert_yaml, to_yaml

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "katib"
CONVERTIBLE = sorted(FIXTURES.glob("*.yaml"))
REFUSED = sorted((FIXTURES / "refused").glob("*.yaml"))


def katib(name: str) -> dict:
    return yaml.safe_load((FIXTURES / name).read_text())


def converted(doc: dict):
    [result] = convert([doc])
    return result


def spec_of(doc: dict) -> dict:
    return converted(doc).manifest["spec"]


def notes_of(doc: dict) -> dict[str, str]:
    return {n.path: n.text for n in converted(doc).notes}


def refusal(doc: dict) -> str:
    with pytest.raises(KatibConversionError) as e:
        convert([doc])
    return str(e.value)


# --- every fixture ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CONVERTIBLE, ids=lambda p: p.stem)
def test_every_fixture_converts_to_yaml_that_reads_back_as_the_manifest_our_models_accept(path: Path):
    [result] = convert_yaml(path.read_text())
    text = result.to_yaml()
    assert yaml.safe_load(text) == result.manifest
    assert result.manifest["apiVersion"] == "hpo.dev/v1alpha1" and result.manifest["kind"] == "Experiment"
    ExperimentSpec.model_validate(result.manifest["spec"])
    assert "${trialParameters." not in text


@pytest.mark.parametrize("path", CONVERTIBLE, ids=lambda p: p.stem)
def test_every_note_is_a_comment_above_its_field(path: Path):
    [result] = convert_yaml(path.read_text())
    lines = result.to_yaml().splitlines()
    for n in result.notes:
        at = next(i for i, line in enumerate(lines) if line.lstrip().startswith(f"# note: {n.text[:30]}"))
        key = n.path.split(".")[1] if "." in n.path else n.path
        following = next(line for line in lines[at:] if not line.lstrip().startswith("#"))
        assert following.strip().startswith(f"{key}:"), (n, following)


def test_several_documents_convert_in_order_and_print_as_one_stream():
    text = (FIXTURES / "random.yaml").read_text() + (FIXTURES / "sobol.yaml").read_text()
    results = convert_yaml(text)
    assert [r.name for r in results] == ["random", "sobol"]
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(to_yaml(results))] == ["random", "sobol"]


def test_a_v1_list_is_read_item_by_item():
    results = convert([{"apiVersion": "v1", "kind": "List", "items": [katib("random.yaml"), katib("grid.yaml")]}])
    assert [r.name for r in results] == ["random", "grid"]


def test_an_error_in_the_second_document_names_the_experiment():
    bad = katib("sobol.yaml")
    bad["spec"]["parameters"][1]["feasibleSpace"]["distribution"] = "cauchy"
    with pytest.raises(KatibConversionError) as e:
        convert([katib("random.yaml"), bad])
    assert str(e.value).startswith("experiment sobol: spec.parameters[1].feasibleSpace.distribution: 'cauchy' is not")


def test_a_document_that_is_not_a_katib_experiment_is_refused():
    message = refusal({"apiVersion": "hpo.dev/v1alpha1", "kind": "Experiment", "metadata": {"name": "x"}})
    assert "apiVersion/kind: hpo.dev/v1alpha1/Experiment is not a Katib Experiment" in message


def test_no_document_at_all_is_refused():
    with pytest.raises(KatibConversionError, match="holds no Katib Experiment"):
        convert_yaml("---\n")


# --- metadata ----------------------------------------------------------------------------------------


def test_metadata_keeps_name_namespace_labels_and_annotations_but_not_what_the_server_set():
    doc = katib("random.yaml")
    doc["metadata"].update(
        labels={"team": "vision"},
        annotations={"owner": "ana", "kubectl.kubernetes.io/last-applied-configuration": "{}"},
        uid="1234",
        resourceVersion="99",
    )
    doc["status"] = {"trials": 3}
    assert converted(doc).manifest["metadata"] == {
        "name": "random",
        "namespace": "kubeflow",
        "labels": {"team": "vision"},
        "annotations": {"owner": "ana"},
    }


def test_a_namespace_given_replaces_the_katib_one_in_the_manifest_and_the_yaml():
    text = (FIXTURES / "random.yaml").read_text()
    [moved] = hpo.convert_katib(text, namespace="team-a")
    assert moved.manifest["metadata"]["namespace"] == "team-a"
    assert yaml.safe_load(moved.to_yaml())["metadata"]["namespace"] == "team-a"
    [kept] = hpo.convert_katib(text)
    assert kept.manifest["metadata"]["namespace"] == "kubeflow"


def test_a_name_longer_than_ours_is_refused_with_the_limit():
    doc = katib("random.yaml")
    doc["metadata"]["name"] = name = "a-rather-long-experiment-name-from-katibs"
    assert len(name) == 41
    assert f"metadata.name: {name} has 41 characters; ours have at most 40" in refusal(doc)


# --- parameters ---------------------------------------------------------------------------------------


def test_parameters_of_every_type_map_with_their_feasible_space():
    assert spec_of(katib("grid.yaml"))["parameters"] == [
        {"name": "lr", "type": "double", "min": 0.01, "max": 0.03, "step": 0.01},
        {"name": "layers", "type": "int", "min": 1, "max": 2},
        {"name": "optimizer", "type": "categorical", "values": ["sgd", "adam"]},
    ]
    assert spec_of(katib("mnist-tpe.yaml"))["parameters"][1] == {
        "name": "batch_size",
        "type": "discrete",
        "values": ["32", "64", "128"],
    }


def test_log_uniform_becomes_log_true():
    assert spec_of(katib("median-stop.yaml"))["parameters"][0] == {
        "name": "lr",
        "type": "double",
        "min": 0.001,
        "max": 0.1,
        "log": True,
    }


def test_a_parameter_name_that_is_not_an_identifier_is_renamed_with_a_note_and_its_references_follow():
    result = converted(katib("metadata-substitution.yaml"))
    assert [p["name"] for p in result.manifest["spec"]["parameters"]] == ["lr", "num_epochs"]
    assert (
        "Katib's parameter num-epochs is named num_epochs here"
        in notes_of(katib("metadata-substitution.yaml"))["spec.parameters"]
    )
    command = result.manifest["spec"]["trialTemplate"]["job"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[-1] == "--epochs=${params.num_epochs}"


@pytest.mark.parametrize(
    "change, path, reason",
    [
        ({"distribution": "cauchy"}, "feasibleSpace.distribution", "'cauchy' is not one of uniform, logUniform"),
        ({"distribution": "logNormal", "step": "0.01"}, "feasibleSpace.step", "a log-scale parameter takes no step"),
        ({"distribution": "logNormal", "min": "0"}, "feasibleSpace.min", "a logNormal parameter needs min > 0"),
        ({"min": "0.05", "max": "0.01"}, "feasibleSpace.max", "must be greater than min"),
        ({"min": "low"}, "feasibleSpace.min", "'low' is not a number"),
        ({"max": None}, "feasibleSpace.max", "missing (an double parameter needs min and max)"),
        ({"distribution": "logUniform", "step": "0.01"}, "feasibleSpace.step", "a log-scale parameter takes no step"),
        ({"distribution": "logUniform", "min": "0"}, "feasibleSpace.min", "a logUniform parameter needs min > 0"),
        ({"list": ["1"]}, "feasibleSpace.list", "an double parameter takes min and max, not a list"),
        ({"shape": "bell"}, "feasibleSpace.shape", "unknown field"),
    ],
)
def test_a_double_parameter_that_cannot_map_is_refused_naming_its_field(change, path, reason):
    doc = katib("random.yaml")
    doc["spec"]["parameters"][1]["feasibleSpace"].update(change)
    assert f"spec.parameters[1].{path}: {reason}" in refusal(doc)


@pytest.mark.parametrize(
    "parameter, path, reason",
    [
        (
            {"parameterType": "int", "feasibleSpace": {"min": "1", "max": "2.5"}},
            "feasibleSpace.max",
            "an int parameter needs whole",
        ),
        (
            {"parameterType": "discrete", "feasibleSpace": {"list": ["1", "x"]}},
            "feasibleSpace.list[1]",
            "'x' is not a number",
        ),
        ({"parameterType": "categorical", "feasibleSpace": {}}, "feasibleSpace.list", "a categorical parameter needs"),
        ({"parameterType": "categorical", "feasibleSpace": {"list": ["a", "a"]}}, "feasibleSpace.list", "repeats"),
        (
            {"parameterType": "categorical", "feasibleSpace": {"list": ["a"], "min": "1"}},
            "feasibleSpace.min",
            "a categorical parameter takes a list, not min",
        ),
        (
            {"parameterType": "discrete", "feasibleSpace": {"list": ["1"], "distribution": "logUniform"}},
            "feasibleSpace.distribution",
            "logUniform applies to int and double parameters, not discrete",
        ),
        ({"parameterType": "unknown", "feasibleSpace": {}}, "parameterType", "'unknown' is not one of double, int"),
    ],
)
def test_other_parameters_that_cannot_map_are_refused_naming_their_field(parameter, path, reason):
    doc = katib("random.yaml")
    doc["spec"]["parameters"][0] = {"name": "p", **parameter}
    assert f"spec.parameters[0].{path}: {reason}" in refusal(doc)


@pytest.mark.parametrize("katib_name, log", [("normal", False), ("logNormal", True)])
def test_normal_distributions_become_the_same_bounds_sampled_uniformly_with_a_note(katib_name, log):
    doc = katib("random.yaml")
    doc["spec"]["parameters"][1]["feasibleSpace"]["distribution"] = katib_name
    result = converted(doc)
    name = doc["spec"]["parameters"][1]["name"]
    parameter = result.manifest["spec"]["parameters"][1]
    space = doc["spec"]["parameters"][1]["feasibleSpace"]
    assert (parameter["min"], parameter["max"]) == (float(space["min"]), float(space["max"]))
    assert parameter.get("log", False) is log
    said = notes_of(doc)["spec.parameters"]
    assert f"Katib drew {name} from a {katib_name} distribution" in said
    assert ("uniformly on a log scale" in said) is log


def test_katibs_distribution_example_converts_its_normal_step_and_log_normal_int():
    doc = katib("random.yaml")
    doc["spec"]["parameters"] = [
        {
            "name": "lr",
            "parameterType": "double",
            "feasibleSpace": {"min": "0.01", "max": "0.05", "step": "0.01", "distribution": "normal"},
        },
        {
            "name": "batch_size",
            "parameterType": "int",
            "feasibleSpace": {"min": "32", "max": "64", "distribution": "logNormal"},
        },
    ]
    doc["spec"]["trialTemplate"]["trialParameters"] = [
        {"name": "learningRate", "reference": "lr"},
        {"name": "momentum", "reference": "batch_size"},
    ]
    params = spec_of(doc)["parameters"]
    assert params == [
        {"name": "lr", "type": "double", "min": 0.01, "max": 0.05, "step": 0.01},
        {"name": "batch_size", "type": "int", "min": 32, "max": 64, "log": True},
    ]


def test_grid_needs_a_step_for_double_parameters():
    doc = katib("grid.yaml")
    del doc["spec"]["parameters"][0]["feasibleSpace"]["step"]
    assert "spec.parameters[0].feasibleSpace.step: grid search needs a step" in refusal(doc)


def test_two_parameters_that_become_one_name_are_refused():
    doc = katib("metadata-substitution.yaml")
    doc["spec"]["parameters"][0]["name"] = "num_epochs"
    assert "spec.parameters[1].name: num-epochs is given twice (or twice once renamed to num_epochs)" in refusal(doc)


# --- objective ----------------------------------------------------------------------------------------


def test_objective_maps_type_goal_and_metric_names():
    assert spec_of(katib("mnist-tpe.yaml"))["objective"] == {
        "type": "minimize",
        "metricName": "loss",
        "goal": 0.05,
        "additionalMetricNames": ["accuracy"],
    }


def test_katib_default_metric_strategies_are_said_in_a_note_as_what_they_were_and_what_we_keep():
    note = notes_of(katib("mnist-tpe.yaml"))["spec.objective"]
    assert "Katib kept the min of loss (its default) and the min of accuracy (its default)" in note
    assert "a trial keeps the last value it reports of each metric" in note


def test_explicit_strategies_are_named_and_latest_needs_no_note():
    doc = katib("mnist-tpe.yaml")
    doc["spec"]["objective"]["metricStrategies"] = [
        {"name": "loss", "value": "latest"},
        {"name": "accuracy", "value": "max"},
    ]
    assert "Katib kept the max of accuracy;" in notes_of(doc)["spec.objective"]
    assert "spec.objective" not in notes_of(katib("metrics-format.yaml"))  # every strategy latest


@pytest.mark.parametrize(
    "objective, path, reason",
    [
        ({"type": "minimise"}, "type", "'minimise' is not minimize or maximize"),
        ({"objectiveMetricName": "Validation accuracy"}, "objectiveMetricName", "Validation accuracy is not a metric"),
        ({"objectiveMetricName": "-loss"}, "objectiveMetricName", "-loss is not a metric name we read"),
        ({"additionalMetricNames": ["loss"]}, "additionalMetricNames", "repeats the objective metric loss"),
        ({"metricStrategies": [{"name": "f1", "value": "max"}]}, "metricStrategies[0].name", "'f1' is neither"),
        ({"metricStrategies": [{"name": "loss", "value": "mean"}]}, "metricStrategies[0].value", "'mean' is not min"),
    ],
)
def test_an_objective_that_cannot_map_is_refused_naming_its_field(objective, path, reason):
    doc = katib("random.yaml")
    doc["spec"]["objective"].update(objective)
    assert f"spec.objective.{path}: {reason}" in refusal(doc)


def test_a_metric_name_with_a_hyphen_is_kept_as_katib_and_the_trial_name_it():
    doc = katib("random.yaml")
    doc["spec"]["objective"]["objectiveMetricName"] = "Validation-accuracy"
    doc["spec"]["objective"]["additionalMetricNames"] = ["Train-accuracy", "loss/train"]
    objective = spec_of(doc)["objective"]
    assert objective["metricName"] == "Validation-accuracy"
    assert objective["additionalMetricNames"] == ["Train-accuracy", "loss/train"]


# --- algorithms ---------------------------------------------------------------------------------------


def settings(*pairs: tuple[str, str]) -> list[dict]:
    return [{"name": n, "value": v} for n, v in pairs]


@pytest.mark.parametrize(
    "fixture, algorithm",
    [
        ("random.yaml", {"name": "random", "seed": 10}),
        ("grid.yaml", {"name": "grid", "seed": 3}),
        (
            "tpe.yaml",
            {
                "name": "tpe",
                "seed": 4,
                "settings": settings(("nStartupTrials", "2"), ("nEICandidates", "12"), ("priorWeight", "1.5")),
            },
        ),
        (
            "multivariate-tpe.yaml",
            {
                "name": "tpe",
                "seed": 5,
                "settings": settings(("multivariate", "true"), ("nStartupTrials", "2"), ("nEICandidates", "16")),
            },
        ),
        ("cmaes.yaml", {"name": "cmaes", "seed": 6, "settings": settings(("sigma0", "0.3"))}),
        ("sobol.yaml", {"name": "qmc", "settings": settings(("qmcType", "sobol"))}),
        ("bayesian-optimization.yaml", {"name": "gp", "seed": 10, "settings": settings(("nStartupTrials", "3"))}),
    ],
)
def test_each_katib_algorithm_maps_with_its_settings(fixture, algorithm):
    assert spec_of(katib(fixture))["algorithm"] == algorithm


@pytest.mark.parametrize(
    "fixture, said",
    [
        ("tpe.yaml", "Katib's tpe settings not carried over: gamma=0.25 has no counterpart"),
        ("cmaes.yaml", "restart_strategy=ipop has no counterpart (our CMA-ES does not restart"),
        ("bayesian-optimization.yaml", "Katib's bayesianoptimization (scikit-optimize's Gaussian process) becomes gp"),
        ("bayesian-optimization.yaml", "It needs the operator's gp image flavour"),
        ("bayesian-optimization.yaml", "acq_func=gp_hedge has no counterpart (gp chooses by log expected improvement"),
    ],
)
def test_what_an_algorithm_mapping_loses_is_said_in_a_note(fixture, said):
    assert said in " ".join(n.text for n in converted(katib(fixture)).notes if n.path == "spec.algorithm")


def test_without_gp_bayesian_optimization_becomes_tpe_with_its_note():
    [result] = convert([katib("bayesian-optimization.yaml")], gp=False)
    assert result.manifest["spec"]["algorithm"] == {
        "name": "tpe",
        "seed": 10,
        "settings": settings(("nStartupTrials", "3")),
    }
    said = " ".join(n.text for n in result.notes if n.path == "spec.algorithm")
    assert "becomes tpe" in said and "--no-gp" in said and "acq_func=gp_hedge has no counterpart (TPE" in said


def test_a_gaussian_process_estimator_is_what_gp_does_and_a_forest_is_noted():
    doc = katib("bayesian-optimization.yaml")
    doc["spec"]["algorithm"]["algorithmSettings"] = [{"name": "base_estimator", "value": "GP"}]
    assert "base_estimator" not in " ".join(n.text for n in converted(doc).notes)
    doc["spec"]["algorithm"]["algorithmSettings"] = [{"name": "base_estimator", "value": "RF"}]
    assert "base_estimator=RF has no counterpart" in " ".join(n.text for n in converted(doc).notes)


def test_exact_algorithm_mappings_carry_no_note():
    for fixture in ("random.yaml", "grid.yaml", "multivariate-tpe.yaml", "sobol.yaml"):
        assert "spec.algorithm" not in notes_of(katib(fixture)), fixture


def test_cmaes_restart_strategy_none_is_katibs_default_and_needs_no_note():
    doc = katib("cmaes.yaml")
    doc["spec"]["algorithm"]["algorithmSettings"][1]["value"] = "none"
    assert "spec.algorithm" not in notes_of(doc)


@pytest.mark.parametrize(
    "fixture, reason",
    [
        ("hyperband.yaml", "spec.algorithm.algorithmName: hyperband has no equivalent here: Katib's hyperband sets"),
        ("darts.yaml", "spec.algorithm.algorithmName: darts has no equivalent here: neural architecture search"),
        ("enas.yaml", "spec.nasConfig: neural architecture search is not offered here"),
        ("file.yaml", "spec.metricsCollectorSpec.collector.kind: File has no equivalent here: the operator reads"),
        ("tensorflow-event.yaml", "collector.kind: TensorFlowEvent has no equivalent here: the operator runs no"),
        ("prometheus.yaml", "collector.kind: PrometheusMetric has no equivalent here: the operator does not scrape"),
        ("push.yaml", "collector.kind: Push has no equivalent here: there is no metrics service to push to"),
        ("custom-collector.yaml", "collector.kind: Custom has no equivalent here: the operator runs no sidecar"),
    ],
)
def test_each_refused_fixture_is_refused_with_its_reason(fixture, reason):
    with pytest.raises(KatibConversionError) as e:
        convert_yaml((FIXTURES / "refused" / fixture).read_text())
    assert reason in str(e.value)


def test_every_refused_fixture_has_its_reason_tested():
    tested = {
        "hyperband.yaml",
        "darts.yaml",
        "enas.yaml",
        "file.yaml",
        "tensorflow-event.yaml",
        "prometheus.yaml",
        "push.yaml",
        "custom-collector.yaml",
    }
    assert {p.name for p in REFUSED} == tested


@pytest.mark.parametrize(
    "algorithm, path, reason",
    [
        ({"algorithmName": "anneal"}, "algorithmName", "'anneal' is not a Katib algorithm"),
        (
            {"algorithmName": "tpe", "algorithmSettings": settings(("n_startup", "2"))},
            "algorithmSettings[0].name",
            "Katib's tpe takes no setting n_startup",
        ),
        (
            {"algorithmName": "tpe", "algorithmSettings": settings(("n_ei_candidates", "0"))},
            "algorithmSettings[0].value",
            "'0': algorithm tpe, setting nEICandidates",
        ),
        (
            {"algorithmName": "random", "algorithmSettings": settings(("random_state", "-1"))},
            "algorithmSettings[0].value",
            "a seed is a whole number from 0",
        ),
        (
            {"algorithmName": "tpe", "algorithmSettings": settings(("n_ei_candidates", "2"), ("n_EI_candidates", "3"))},
            "algorithmSettings[1].name",
            "n_EI_candidates sets nEICandidates a second time",
        ),
    ],
)
def test_algorithm_settings_that_cannot_map_are_refused_naming_the_setting(algorithm, path, reason):
    doc = katib("random.yaml")
    doc["spec"]["algorithm"] = algorithm
    assert f"spec.algorithm.{path}: {reason}" in refusal(doc)


# --- early stopping -------------------------------------------------------------------------------------


def test_medianstop_maps_to_median_with_its_settings_and_says_how_the_rules_differ():
    doc = katib("median-stop.yaml")
    assert spec_of(doc)["earlyStopping"] == {"algorithm": "median", "minTrialsRequired": 2, "warmupSteps": 3}
    note = notes_of(doc)["spec.earlyStopping"]
    assert "after start_step (3) reports" in note and "a trial that prints none is never stopped" in note


def test_medianstop_without_settings_takes_katibs_defaults():
    doc = katib("median-stop.yaml")
    del doc["spec"]["earlyStopping"]["algorithmSettings"]
    assert spec_of(doc)["earlyStopping"] == {"algorithm": "median", "minTrialsRequired": 3, "warmupSteps": 4}


@pytest.mark.parametrize(
    "stopping, reason",
    [
        ({"algorithmName": "asha"}, "algorithmName: 'asha' is not Katib's early stopping algorithm"),
        (
            {"algorithmName": "medianstop", "algorithmSettings": settings(("patience", "2"))},
            "algorithmSettings[0].name: medianstop takes no setting patience",
        ),
        (
            {"algorithmName": "medianstop", "algorithmSettings": settings(("start_step", "0"))},
            "algorithmSettings[0].value: start_step is a whole number of at least 1",
        ),
    ],
)
def test_early_stopping_that_cannot_map_is_refused(stopping, reason):
    doc = katib("random.yaml")
    doc["spec"]["earlyStopping"] = stopping
    assert f"spec.earlyStopping.{reason}" in refusal(doc)


# --- budgets ---------------------------------------------------------------------------------------------


def test_budgets_map_with_katibs_default_parallelism_and_failure_count_said_our_way():
    doc = katib("random.yaml")
    del doc["spec"]["parallelTrialCount"]
    spec = spec_of(doc)
    assert (spec["parallelTrialCount"], spec["maxTrialCount"], spec["maxFailedTrialCount"]) == (3, 4, 1)
    assert "Katib failed the experiment once 2 trials had failed" in notes_of(doc)["spec.maxFailedTrialCount"]


def test_parallelism_beyond_the_trial_budget_is_the_budget_as_katib_runs_it():
    doc = katib("random.yaml")
    doc["spec"].update(parallelTrialCount=10, maxTrialCount=4)
    assert spec_of(doc)["parallelTrialCount"] == 4


def test_max_failed_trial_count_zero_stays_zero():
    doc = katib("random.yaml")
    doc["spec"]["maxFailedTrialCount"] = 0
    assert spec_of(doc)["maxFailedTrialCount"] == 0


def test_a_missing_trial_budget_is_refused():
    doc = katib("random.yaml")
    del doc["spec"]["maxTrialCount"]
    assert "spec.maxTrialCount: missing (or 0): our experiments need a budget" in refusal(doc)


def test_a_resume_policy_other_than_never_is_said_in_a_note_above_spec():
    [result] = convert([katib("metadata-substitution.yaml")])
    assert (
        "resumePolicy LongRunning: here any experiment that ended at maxTrialCount (or a budget) goes on"
        in notes_of(katib("metadata-substitution.yaml"))["spec"]
    )
    text = result.to_yaml()
    assert text.index("# note: resumePolicy") < text.index("\nspec:")
    assert "spec" not in notes_of(katib("random.yaml"))
    doc = katib("random.yaml")
    doc["spec"]["resumePolicy"] = "Sometimes"
    assert "spec.resumePolicy: 'Sometimes' is not Never, LongRunning or FromVolume" in refusal(doc)


def test_a_value_beyond_our_bounds_is_refused_in_our_terms():
    doc = katib("random.yaml")
    doc["spec"]["maxTrialCount"] = 200000
    assert "spec.maxTrialCount: our API refuses the converted value" in refusal(doc)


# --- the trial template ------------------------------------------------------------------------------------


def test_a_job_becomes_our_job_with_its_placeholders_and_primary_container():
    tt = spec_of(katib("random.yaml"))["trialTemplate"]
    assert tt["primaryContainerName"] == "training-container"
    pod = tt["job"]["spec"]["template"]
    assert pod["spec"]["containers"][0]["command"][2:] == [
        "--learningRate=${params.lr}",
        "--momentum=${params.momentum}",
    ]
    assert pod["metadata"]["annotations"]["sim.hpo.dev/message"] == (
        '{"loss": ${params.lr}, "accuracy": ${params.momentum}}'
    )


def test_a_job_without_backoff_limit_gets_a_note_and_one_with_it_none():
    doc = katib("random.yaml")
    assert "under Katib it re-ran a failed pod up to 6 times" in notes_of(doc)["spec.trialTemplate"]
    doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["backoffLimit"] = 2
    assert "spec.trialTemplate" not in notes_of(doc)


def test_retain_maps_to_pod_retention():
    assert spec_of(katib("median-stop.yaml"))["trialTemplate"]["podRetention"] == "Keep"
    assert spec_of(katib("random.yaml"))["trialTemplate"]["podRetention"] == "Delete"


def test_trial_metadata_references_become_our_placeholders_or_the_templates_own_values():
    tt = spec_of(katib("metadata-substitution.yaml"))["trialTemplate"]
    assert tt["job"]["metadata"] == {"labels": {"team": "vision"}}
    env = {e["name"]: e["value"] for e in tt["job"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env == {"TRIAL_NAME": "${trial.name}", "TRIAL_KIND": "Job/batch/v1", "TEAM": "vision"}


def test_a_trainjob_becomes_a_resource_with_katibs_default_conditions_and_primary_pod():
    tt = spec_of(katib("trainjob.yaml"))["trialTemplate"]
    assert tt["primaryPod"] == {
        "labels": {"jobset.sigs.k8s.io/replicatedjob-name": "node", "batch.kubernetes.io/job-completion-index": "0"}
    }
    resource = tt["resource"]
    assert (resource["apiVersion"], resource["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert resource["successCondition"] == {"type": "Complete", "status": "True"}
    assert resource["failureCondition"] == {"type": "Failed", "status": "True"}
    assert resource["manifest"]["spec"]["trainer"]["command"][-1] == "--lr=${params.lr}"
    assert "allowed to create, watch and delete TrainJob" in notes_of(katib("trainjob.yaml"))["spec.trialTemplate"]


def test_a_pytorchjob_reads_its_gjson_conditions_and_takes_katibs_master_label():
    tt = spec_of(katib("pytorchjob.yaml"))["trialTemplate"]
    assert tt["primaryPod"] == {"labels": {"training.kubeflow.org/job-role": "master"}}
    assert tt["resource"]["successCondition"] == {"type": "Succeeded", "status": "True"}
    assert tt["resource"]["failureCondition"] == {"type": "Failed", "status": "True"}


def test_any_other_kind_takes_its_given_conditions_and_primary_pod_labels():
    tt = spec_of(katib("jobset.yaml"))["trialTemplate"]
    assert tt["primaryPod"] == {"labels": {"jobset.sigs.k8s.io/replicatedjob-name": "leader"}}
    assert tt["resource"]["kind"] == "JobSet"
    assert tt["resource"]["successCondition"] == {"type": "Completed", "status": "True"}


def test_a_job_with_conditions_of_its_own_becomes_a_job_resource():
    doc = katib("random.yaml")
    doc["spec"]["trialTemplate"]["successCondition"] = (
        'status.conditions.#(type=="SuccessCriteriaMet")#|#(status=="True")#'
    )
    tt = spec_of(doc)["trialTemplate"]
    assert "job" not in tt
    assert (tt["resource"]["apiVersion"], tt["resource"]["kind"]) == ("batch/v1", "Job")
    assert tt["resource"]["successCondition"] == {"type": "SuccessCriteriaMet", "status": "True"}


@pytest.mark.parametrize(
    "change, path, reason",
    [
        ({"retain": "yes"}, "retain", "'yes' is not true or false"),
        (
            {"configMap": {"configMapName": "templates", "templatePath": "job.yaml"}},
            "configMap",
            "a trial template kept in a ConfigMap is not taken here",
        ),
        (
            {"successCondition": "status.phase == 'Succeeded'"},
            "successCondition",
            "\"status.phase == 'Succeeded'\" is not a condition test this converter reads",
        ),
        (
            {"trialParameters": [{"name": "learningRate", "reference": "${trialSpec.Namespace}"}]},
            "trialParameters[0].reference",
            "${trialSpec.Namespace} has no placeholder here",
        ),
        (
            {"trialParameters": [{"name": "learningRate", "reference": "rate"}]},
            "trialParameters[0].reference",
            "'rate' names no parameter of spec.parameters",
        ),
        (
            {"trialParameters": [{"name": "learningRate", "reference": "${trialSpec.Labels[team]}"}]},
            "trialParameters[0].reference",
            "the trialSpec's metadata.labels has no team",
        ),
        ({"trialSpec": None}, "trialSpec", "missing (the trial's manifest)"),
        ({"sidecar": True}, "sidecar", "unknown field"),
    ],
)
def test_a_trial_template_that_cannot_map_is_refused_naming_its_field(change, path, reason):
    doc = katib("random.yaml")
    doc["spec"]["trialTemplate"].update(change)
    assert f"spec.trialTemplate.{path}: {reason}" in refusal(doc)


def test_a_placeholder_naming_no_trial_parameter_is_refused_where_it_is_used():
    doc = katib("random.yaml")
    del doc["spec"]["trialTemplate"]["trialParameters"][1]
    assert (
        'spec.trialTemplate.trialSpec.spec.template.metadata.annotations["sim.hpo.dev/message"]: '
        "uses ${trialParameters.momentum}, not a trialParameter" in refusal(doc)
    )


def test_another_kind_without_conditions_is_refused():
    doc = katib("jobset.yaml")
    del doc["spec"]["trialTemplate"]["successCondition"]
    assert "spec.trialTemplate.successCondition: missing: Katib has no default for kind JobSet" in refusal(doc)


# --- metrics collectors -------------------------------------------------------------------------------------


def test_stdout_metrics_format_regexes_are_kept():
    assert spec_of(katib("metrics-format.yaml"))["metricsCollector"] == {
        "metricsFormat": [r"{metricName: ([\w|-]+), metricValue: ((-?\d+)(\.\d+)?)}"]
    }


def test_the_default_stdout_collector_is_our_default_source():
    assert "metricsCollector" not in spec_of(katib("random.yaml"))


def test_a_file_collector_on_the_termination_log_reads_the_termination_message():
    assert spec_of(katib("file-termination-log.yaml"))["metricsCollector"] == {"source": "TerminationMessage"}


def test_a_metrics_format_regex_we_cannot_use_is_refused_naming_it():
    doc = katib("metrics-format.yaml")
    doc["spec"]["metricsCollectorSpec"]["source"]["filter"]["metricsFormat"] = ["loss=([0-9.]+)"]
    assert "spec.metricsCollectorSpec.source.filter.metricsFormat[0]: 'loss=([0-9.]+)' has 1 group; it needs two" in (
        refusal(doc)
    )


# --- our MetricsCollector model -------------------------------------------------------------------------------


def test_the_metrics_collector_model_takes_regexes_with_two_groups():
    assert MetricsCollector.model_validate({"metricsFormat": [r"(\w+): ([0-9.]+)"]}).metrics_format == [
        r"(\w+): ([0-9.]+)"
    ]


@pytest.mark.parametrize(
    "pattern, said", [(r"(\w+: [0-9.]+", "not a regular expression"), (r"loss: ([0-9.]+)", "has 1 group")]
)
def test_the_metrics_collector_model_refuses_a_regex_it_cannot_use(pattern, said):
    with pytest.raises(ValidationError, match=said):
        MetricsCollector.model_validate({"metricsFormat": ["(a)(b)", pattern]})


# --- population-based training ---------------------------------------------------------------------------


def test_katibs_simple_pbt_example_converts_to_a_population_the_trial_budget_holds():
    result = converted(katib("simple-pbt.yaml"))
    spec = result.manifest["spec"]
    assert spec["algorithm"] == {
        "name": "pbt",
        "settings": settings(("populationSize", "2"), ("truncationQuantile", "0.2"), ("resampleProbability", "0")),
    }
    assert (spec["maxTrialCount"], spec["parallelTrialCount"]) == (2, 2)
    assert spec["objective"]["metricName"] == "Validation-accuracy"
    assert spec["trialTemplate"]["checkpoint"] == {
        "volumeClaimTemplate": {"size": "1Gi"},
        "mountPath": "/var/log/katib/checkpoints",
    }
    command = spec["trialTemplate"]["job"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[-2:] == ["--lr=${params.lr}", "--checkpoint=/var/log/katib/checkpoints/"]
    said = notes_of(katib("simple-pbt.yaml"))
    assert "Katib's population of 40 never ran whole within maxTrialCount 2" in said["spec.maxTrialCount"]
    assert "resampleProbability 0 does the same here" in said["spec.algorithm"]
    assert "a claim of its own" in said["spec.trialTemplate"]
    assert "pbt's checkpoints are the segments' claims" in said["spec"]


def test_a_pbt_budget_counts_whole_generations_and_says_what_katib_ran_beyond():
    spec = spec_of(katib("pbt.yaml"))
    assert (spec["maxTrialCount"], spec["algorithm"]["settings"][0]) == (12, {"name": "populationSize", "value": "4"})
    assert {"name": "resampleProbability", "value": "0.2"} in spec["algorithm"]["settings"]
    said = notes_of(katib("pbt.yaml"))
    assert "14 becomes 12 (3 generations of 4); Katib ran 2 segments" in said["spec.maxTrialCount"]
    assert "Katib kept a value it did not resample, here it is perturbed" in said["spec.algorithm"]


@pytest.mark.parametrize(
    "change, path, reason",
    [
        ({"truncation_threshold": "0.7"}, "algorithmSettings[2].value", "0.7 has no equivalent here: the worst"),
        ({"truncation_threshold": "0"}, "algorithmSettings[2].value", "0 has no equivalent here"),
        ({"n_population": "1"}, "algorithmSettings[1].value", "a population is a whole number from 2"),
        ({"resample_probability": "2"}, "algorithmSettings[3].value", "2 is not a probability"),
        ({"suggestion_trial_dir": "ckpt"}, "algorithmSettings[0].value", "'ckpt' is not an absolute path"),
        ({"n_population": None}, "algorithmSettings", "Katib's pbt needs the setting n_population"),
        ({"burn_in": "3"}, "algorithmSettings[4].name", "Katib's pbt takes no setting burn_in"),
    ],
)
def test_pbt_settings_that_cannot_map_are_refused_naming_the_setting(change, path, reason):
    doc = katib("pbt.yaml")
    items = {s["name"]: s["value"] for s in doc["spec"]["algorithm"]["algorithmSettings"]}
    items.update(change)
    doc["spec"]["algorithm"]["algorithmSettings"] = [{"name": k, "value": v} for k, v in items.items() if v is not None]
    assert f"spec.algorithm.{path}: {reason}" in refusal(doc)


def test_pbt_refuses_a_trial_kind_without_a_pod_of_its_own_and_early_stopping():
    doc = katib("pbt.yaml")
    doc["spec"]["trialTemplate"]["trialSpec"] = katib("pytorchjob.yaml")["spec"]["trialTemplate"]["trialSpec"]
    doc["spec"]["trialTemplate"]["trialParameters"] = katib("pytorchjob.yaml")["spec"]["trialTemplate"][
        "trialParameters"
    ]
    doc["spec"]["parameters"] = katib("pytorchjob.yaml")["spec"]["parameters"]
    assert "spec.trialTemplate.trialSpec: pbt runs Job (or pod) trials here" in refusal(doc)
    doc = katib("pbt.yaml")
    doc["spec"]["earlyStopping"] = {"algorithmName": "medianstop"}
    assert "spec.earlyStopping: pbt itself decides" in refusal(doc)
    doc = katib("pbt.yaml")
    doc["spec"]["maxTrialCount"] = 1
    assert "spec.maxTrialCount: 1 trials cannot hold a population of at least 2" in refusal(doc)


def test_katibs_hyperband_example_is_refused_for_hyperband_before_its_fixed_resource_parameter():
    # The fixture fixes num-epochs with min == max, as Katib's example does.
    doc = yaml.safe_load((FIXTURES / "refused" / "hyperband.yaml").read_text())
    assert doc["spec"]["parameters"][-1]["feasibleSpace"] == {"min": "1", "max": "1"}
    message = refusal(doc)
    assert "spec.algorithm.algorithmName: hyperband has no equivalent here" in message
    assert "must be greater than min" not in message


# --- the client's function ------------------------------------------------------------------------------------


def test_the_client_converts_text_or_documents_and_refuses_with_invalid_input():
    text = (FIXTURES / "sobol.yaml").read_text()
    assert hpo.convert_katib(text)[0].manifest == hpo.convert_katib([yaml.safe_load(text)])[0].manifest
    bad = copy.deepcopy(yaml.safe_load(text))
    bad["spec"]["algorithm"]["algorithmName"] = "hyperband"
    with pytest.raises(hpo.InvalidInput, match=r"^exp.yaml: experiment sobol: spec.algorithm.algorithmName: hyperband"):
        hpo.convert_katib([bad], origin="exp.yaml")
    assert hpo.katib_yaml(hpo.convert_katib(text)).startswith("# Converted from the Katib Experiment kubeflow/sobol.")


# --- the docs' example ----------------------------------------------------------------------------------------


def test_the_katib_page_shows_a_fixture_and_exactly_what_the_converter_prints_for_it():
    page = (Path(__file__).resolve().parents[2] / "docs" / "katib.md").read_text()
    blocks = [block.split("```", 1)[0] for block in page.split("```yaml\n")[1:]]
    assert len(blocks) == 2, "the section shows a Katib Experiment, then its conversion"
    katib_text, shown = blocks
    assert katib_text == (FIXTURES / "mnist-tpe.yaml").read_text()
    assert shown == to_yaml(convert_yaml(katib_text))

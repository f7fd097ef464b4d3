"""Several objectives and constraints, without a cluster: the spec's forms, the search (Optuna's
multi-objective samplers driven by the planner, reproducible and rebuilt after a restart, warm
started), the trials' results and the Experiment's front, hypervolume and best trial."""

from __future__ import annotations

import json

import optuna
import pydantic
import pytest
from optuna.trial import TrialState

from hpo_operator import planner
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.core.pareto import front, hypervolume
from hpo_operator.core.space import format_value
from hpo_operator.search.samplers import make_sampler
from hpo_operator.search.suggest import Outcome, Recorded, Suggester
from tests.support.simulate import InMemoryExperiment

pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]

PLANE = [
    {"name": "x", "type": "double", "min": 0.0, "max": 1.0},
    {"name": "y", "type": "double", "min": 0.0, "max": 1.0},
]
OBJECTIVES = [
    {"metricName": "acc", "type": "maximize", "referenceValue": 0.0},
    {"metricName": "latency", "type": "minimize", "referenceValue": 2.0},
]
TEMPLATE = {"primaryContainerName": "train", "template": {"spec": {"containers": [{"name": "train", "image": "t:1"}]}}}


def make_spec(algorithm="tpe", seed=3, objective=None, settings=None, max_trials=16, parallel=1, params=None):
    algo: dict = {"name": algorithm, "seed": seed}
    if settings:
        algo["settings"] = [{"name": k, "value": v} for k, v in settings.items()]
    return ExperimentSpec.model_validate(
        {
            "objective": objective
            if objective is not None
            else {"metrics": OBJECTIVES, "constraints": [{"metricName": "memory", "max": 1.5}]},
            "algorithm": algo,
            "parameters": params or PLANE,
            "parallelTrialCount": parallel,
            "maxTrialCount": max_trials,
            "trialTemplate": TEMPLATE,
        }
    )


def metrics(values: dict[str, str]) -> dict[str, float]:
    """A trade-off: accuracy grows with x, latency with x and y; memory with y (above 1.5: infeasible)."""
    x, y = float(values["x"]), float(values["y"])
    return {"acc": x, "latency": x * x + y, "memory": 2 * y}


CASES = [
    ("tpe", {"nStartupTrials": "4"}),
    ("nsga2", {"populationSize": "4"}),
    ("nsga3", {"populationSize": "4", "dividingParameter": "2"}),
    ("random", None),
    ("qmc", None),
]


def constraint_of(ft) -> list[float]:
    return [metrics({"x": ft.params["x"], "y": ft.params["y"]})["memory"] - 1.5]


def optuna_directly(spec: ExperimentSpec, n: int) -> list[dict]:
    """Optuna's own loop with the same sampler, objectives and constraint values."""
    study = optuna.create_study(directions=spec.objective.directions, sampler=make_sampler(spec))

    def objective(trial):
        params = {p.name: trial.suggest_float(p.name, p.min, p.max) for p in spec.parameters}  # PLANE: doubles
        found = metrics({k: str(v) for k, v in params.items()})
        trial.set_constraint("memory", found["memory"] - 1.5)
        return found["acc"], found["latency"]

    study.optimize(objective, n_trials=n)
    return [t.params for t in study.trials]


def launched_texts(spec, direct):
    return [{p.name: format_value(p, d[p.name]) for p in spec.parameters} for d in direct]


# --- the spec ------------------------------------------------------------------------------------


def test_the_objectives_names_and_directions_come_from_either_form():
    multi = make_spec().objective
    assert multi.multi and multi.names == ["acc", "latency"] and multi.directions == ["maximize", "minimize"]
    assert multi.reference_point == [0.0, 2.0]
    assert multi.required_names == ["acc", "latency", "memory"]
    single = make_spec(objective={"type": "minimize", "metricName": "loss", "additionalMetricNames": ["a"]}).objective
    assert not single.multi and single.names == ["loss"] and single.reference_point is None
    assert single.recorded_names == ["loss", "a"]


@pytest.mark.parametrize(
    "objective",
    [{"metrics": OBJECTIVES, "type": "minimize", "metricName": "loss"}, {"type": "minimize"}, {}],
    ids=["both", "half", "neither"],
)
def test_a_spec_with_both_forms_or_neither_does_not_parse(objective):
    with pytest.raises(pydantic.ValidationError, match="type and metricName"):
        make_spec(objective=objective)


# --- the search ----------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm, settings", CASES, ids=[c[0] for c in CASES])
def test_through_the_planner_a_seeded_search_is_optuna_used_directly(algorithm, settings):
    s = make_spec(algorithm, settings=settings)
    cluster = InMemoryExperiment(s, metrics).run()
    assert cluster.status["phase"] == "Succeeded"
    assert cluster.launched == launched_texts(s, optuna_directly(s, 16))


@pytest.mark.parametrize("algorithm, settings", CASES, ids=[c[0] for c in CASES])
def test_through_the_planner_a_restart_replays_the_same_search(algorithm, settings):
    s = make_spec(algorithm, settings=settings)
    uninterrupted = InMemoryExperiment(s, metrics).run()
    restarted = InMemoryExperiment(s, metrics)
    restarted.run(rounds=7)
    restarted.restart()
    assert restarted.run().launched == uninterrupted.launched
    assert restarted.status["paretoFront"] == uninterrupted.status["paretoFront"]


@pytest.mark.parametrize("algorithm", ["tpe", "nsga2"])
def test_the_samplers_are_told_the_values_and_constraints(algorithm):
    s = make_spec(algorithm, settings={"populationSize": "4"} if algorithm == "nsga2" else None)
    cluster = InMemoryExperiment(s, metrics).run()
    trials = cluster.suggester.study.get_trials(deepcopy=False)
    assert len(trials) == 16 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        found = metrics({k: str(v) for k, v in t.params.items()})
        assert t.values == pytest.approx([found["acc"], found["latency"]])
        assert t.constraints == {"memory": pytest.approx(found["memory"] - 1.5)}


def test_past_the_replay_limit_a_multi_objective_study_is_rebuilt_with_values_and_constraints(monkeypatch):
    import hpo_operator.search.suggest as suggest_module

    s = make_spec("tpe", settings={"nStartupTrials": "3"})
    first = Suggester(s)
    recorded, results = {}, {}
    for i in range(10):
        values = first.suggest(i)
        recorded[i] = Recorded(values)
        if i < 8:  # the last two still run at the restart
            found = metrics(values)
            results[i] = Outcome(values=(found["acc"], found["latency"]), constraints={"memory": found["memory"] - 1.5})
            first.tell(i, results[i])
    monkeypatch.setattr(suggest_module, "REPLAY_LIMIT", 5)
    restarted = Suggester(s)
    restarted.replay(recorded, count=10)
    for i, outcome in results.items():
        restarted.tell(i, outcome)
    assert [restarted.suggest(i) for i in range(10)] == [dict(recorded[i].values) for i in range(10)]
    trials = restarted.study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 8 and all(t.constraints for t in done)
    assert sorted(tuple(t.values) for t in done) == sorted(r.values for r in results.values())
    restarted.tell(9, Outcome(values=(0.5, 0.5), constraints={"memory": -1.0}))
    trials = restarted.study.get_trials(deepcopy=False)
    assert (trials[9].state, trials[9].values, trials[9].constraints) == (
        TrialState.COMPLETE,
        [0.5, 0.5],
        {"memory": -1.0},
    )
    assert restarted.suggest(10) is not None  # and it goes on


def test_warm_start_reads_each_objective_from_the_metrics_by_name():
    s = make_spec("tpe")

    def body(phase, found, **status):
        return {
            "spec": {"parameters": [{"name": "x", "value": "0.5"}, {"name": "y", "value": "0.25"}]},
            "status": {"phase": phase, "metrics": [{"name": k, "value": v} for k, v in found.items()], **status},
        }

    bodies = [
        body("Succeeded", {"latency": 0.6, "memory": 2.0, "acc": 0.9}),  # another order: read by name
        body("Succeeded", {"acc": 0.9, "memory": 0.1}),  # no latency: not a result of these objectives
        body("Succeeded", {"acc": 0.9, "latency": 0.6}),  # no memory: its feasibility is unknown
        body("Failed", {"acc": 0.9, "latency": 0.6, "memory": 0.1}),
    ]
    assert planner.warm_results(s, bodies) == [({"x": "0.5", "y": "0.25"}, [0.9, 0.6], {"memory": pytest.approx(0.5)})]
    sug = planner.restore_suggester(s, [], {}, bodies)
    [warm] = sug.study.trials
    assert warm.values == [0.9, 0.6] and warm.constraints == {"memory": pytest.approx(0.5)}
    # A single-objective experiment takes its one value, from objectiveValue as before.
    single = make_spec("tpe", objective={"type": "maximize", "metricName": "acc"})
    assert planner.warm_results(single, [body("Succeeded", {}, objectiveValue=0.7)]) == [
        ({"x": "0.5", "y": "0.25"}, 0.7, None)
    ]


# --- results and the front -----------------------------------------------------------------------


def test_the_status_holds_the_feasible_front_its_size_and_hypervolume_and_no_best_trial():
    s = make_spec("random", max_trials=24, parallel=3)
    cluster = InMemoryExperiment(s, metrics).run()
    status = cluster.status
    assert "currentOptimalTrial" not in status
    trials = {name: body["status"] for name, body in cluster.trials.items()}
    for st in trials.values():
        assert st["phase"] == "Succeeded" and "objectiveValue" not in st
        found = {m["name"]: m["value"] for m in st["metrics"]}
        assert st["objectiveValues"] == [found["acc"], found["latency"]]
        assert st["objectiveSummary"] == f"acc={found['acc']:g}, latency={found['latency']:g}"
        assert st["feasible"] is (found["memory"] <= 1.5)
    feasible = {n: st["objectiveValues"] for n, st in trials.items() if st["feasible"]}
    assert 0 < len(feasible) < len(trials)  # the case has both kinds
    expected = front(feasible, ["maximize", "minimize"])
    assert [p["trialName"] for p in status["paretoFront"]] == expected
    assert status["paretoFrontSize"] == len(expected)
    assert all(p["values"] == trials[p["trialName"]]["objectiveValues"] for p in status["paretoFront"])
    assert {p["trialName"] for p in status["paretoFront"]} <= set(feasible)
    assert status["hypervolume"] == pytest.approx(
        hypervolume([feasible[n] for n in expected], ["maximize", "minimize"], [0.0, 2.0])
    )
    assert status["paretoFront"][0]["parameters"] == cluster.trials[expected[0]]["spec"]["parameters"]
    succeeded = [e for e in cluster.events if e.reason == "TrialSucceeded"]
    assert any("infeasible" in e.message for e in succeeded) and any("acc=" in e.message for e in succeeded)


def test_without_a_reference_point_there_is_no_hypervolume():
    objectives = [{k: v for k, v in o.items() if k != "referenceValue"} for o in OBJECTIVES]
    cluster = InMemoryExperiment(make_spec("random", objective={"metrics": objectives}), metrics).run()
    assert cluster.status["paretoFrontSize"] > 0 and "hypervolume" not in cluster.status


def test_a_front_too_large_for_an_exact_hypervolume_gets_none(monkeypatch):
    import hpo_operator.core.pareto as pareto

    monkeypatch.setitem(pareto.HYPERVOLUME_MAX_FRONT, 2, 3)
    # acc and latency both grow with x alone: every trial is on the front.
    spec = make_spec("random", objective={"metrics": OBJECTIVES}, max_trials=4)
    cluster = InMemoryExperiment(spec, lambda v: {"acc": float(v["x"]), "latency": float(v["x"])})
    cluster.run(rounds=4)  # three trials: a hypervolume
    assert cluster.status["paretoFrontSize"] == 3 and cluster.status["hypervolume"] > 0
    cluster.run()  # four: none
    assert cluster.status["paretoFrontSize"] == 4 and "hypervolume" not in cluster.status


def test_the_front_in_the_status_is_bounded_and_its_size_counts_all(monkeypatch):
    import hpo_operator.planner.experiment as experiment

    monkeypatch.setattr(experiment, "PARETO_FRONT_LIMIT", 3)
    # acc and latency both grow with x alone: every trial is on the front.
    spec = make_spec("random", objective={"metrics": OBJECTIVES}, max_trials=10)
    cluster = InMemoryExperiment(spec, lambda v: {"acc": float(v["x"]), "latency": float(v["x"])}).run()
    assert cluster.status["paretoFrontSize"] == 10 and len(cluster.status["paretoFront"]) == 3
    best_acc = sorted(cluster.trials, key=lambda n: -cluster.trials[n]["status"]["objectiveValues"][0])
    assert [p["trialName"] for p in cluster.status["paretoFront"]] == best_acc[:3]


def test_a_round_that_changed_no_result_reuses_the_front_and_writes_the_same_status(monkeypatch):
    import hpo_operator.planner.experiment as experiment
    from hpo_operator.core.pareto import SummaryCache

    cluster = InMemoryExperiment(make_spec("random", max_trials=24, parallel=3), metrics).run()
    front_of = {k: cluster.status.get(k) for k in ("paretoFront", "paretoFrontSize", "hypervolume")}
    monkeypatch.setattr(experiment, "FRONTS", SummaryCache())
    cluster.round()  # the operator restarted: nothing to reuse
    assert (experiment.FRONTS.hits, experiment.FRONTS.misses) == (0, 1)
    assert {k: cluster.status.get(k) for k in front_of} == front_of
    cluster.round()  # nothing changed
    assert (experiment.FRONTS.hits, experiment.FRONTS.misses) == (1, 1)
    assert {k: cluster.status.get(k) for k in front_of} == front_of


def test_a_single_objectives_best_trial_is_the_best_feasible_one():
    spec = make_spec(
        "random",
        objective={"type": "maximize", "metricName": "acc", "constraints": [{"metricName": "memory", "max": 1.5}]},
        max_trials=20,
    )
    # Accuracy grows with y, and so does memory: the most accurate trials are infeasible.
    cluster = InMemoryExperiment(spec, lambda v: {"acc": float(v["x"]) + float(v["y"]), "memory": 2 * float(v["y"])})
    cluster.run()
    statuses = {n: b["status"] for n, b in cluster.trials.items()}
    best_overall = max(statuses, key=lambda n: statuses[n]["objectiveValue"])
    feasible = [n for n, st in statuses.items() if st["feasible"]]
    best_feasible = max(feasible, key=lambda n: statuses[n]["objectiveValue"])
    assert best_overall != best_feasible  # the case needs an infeasible winner
    assert cluster.status["currentOptimalTrial"]["trialName"] == best_feasible
    assert "paretoFront" not in cluster.status


def succeeded_pod(name: str, message: dict) -> dict:
    return {
        "metadata": {"name": name},
        "status": {
            "phase": "Succeeded",
            "startTime": "2024-05-01T10:00:00Z",
            "conditions": [],
            "containerStatuses": [
                {
                    "name": "train",
                    "state": {
                        "terminated": {
                            "exitCode": 0,
                            "reason": "Completed",
                            "message": json.dumps(message),
                            "finishedAt": "2024-05-01T10:00:05Z",
                        }
                    },
                }
            ],
        },
    }


@pytest.mark.parametrize(
    "reported, missing",
    [({"acc": 0.9, "memory": 1.0}, "latency"), ({"acc": 0.9, "latency": 0.1}, "memory")],
    ids=["an-objective", "a-constraint"],
)
def test_a_trial_that_succeeds_without_a_required_metric_fails_as_metrics_unavailable(reported, missing):
    spec = make_spec("random", max_trials=1)
    spec.metrics_collector.source = "TerminationMessage"
    cluster = InMemoryExperiment(spec, metrics)
    cluster.round()  # the trial and its pod are made
    [name] = cluster.trials
    cluster.pods[name] = succeeded_pod(name, reported)
    cluster.round()
    st = cluster.trials[name]["status"]
    assert (st["phase"], st["reason"], st["failureClass"]) == ("Failed", "MetricsUnavailable", "MetricsUnavailable")
    assert f"reported no {missing} metric" in st["message"]
    assert "objectiveValues" not in st


# --- what the client reads -------------------------------------------------------------------------


def test_the_clients_front_computed_from_the_trials_is_the_one_in_the_status():
    from hpo_operator.client.pareto import pareto_front_view
    from hpo_operator.client.views import objective_text, trial_summary

    spec = make_spec("random", max_trials=24, parallel=3)
    cluster = InMemoryExperiment(spec, metrics).run()
    obj = {"metadata": {"name": "exp", "namespace": "ns"}, "spec": spec.dump(), "status": cluster.status}
    from_status = pareto_front_view(obj)
    assert from_status.size == cluster.status["paretoFrontSize"] and not from_status.truncated
    assert from_status == pareto_front_view(obj, list(cluster.trials.values()))
    first = from_status.trials[0]
    assert set(first.values) == {"acc", "latency"} and set(first.parameters) == {"x", "y"}
    assert objective_text(obj["spec"]["objective"]) == "maximize acc, minimize latency"
    run = trial_summary(cluster.trials[first.trial])
    assert run.objective_values == first.values and run.feasible is True and run.objective_value is None

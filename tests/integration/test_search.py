"""Search algorithms through the running operator."""

from __future__ import annotations

from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.search.suggest import Outcome, Suggester
from tests.support.experiments import condition, experiment, loss_is_x, x_space
from tests.support.kube import Cluster, PodConcurrency, wait_until


def test_tpe_with_parallel_trials_uses_every_slot_and_learns(api, namespace, operator, kwok_nodes):
    cluster = Cluster(api, namespace)
    watcher = PodConcurrency(api, namespace)
    cluster.create(
        experiment(
            "tpe",
            [{"name": "x", "type": "double", "min": -10, "max": 10}],
            annotations=loss_is_x("300ms"),
            algorithm={
                "name": "tpe",
                "seed": 5,
                "settings": [{"name": "nStartupTrials", "value": "4"}, {"name": "multivariate", "value": "true"}],
            },
            max_trials=16,
            parallel=4,
        )
    )
    exp = cluster.wait_finished("tpe", timeout=120)
    most = watcher.stop()
    assert exp["status"]["phase"] == "Succeeded" and condition(exp, "Succeeded")["reason"] == "MaxTrialsReached"
    assert 3 <= most <= 4
    trials = cluster.trials()
    xs = [float(trials[f"tpe-{i:04d}"]["spec"]["parameters"][0]["value"]) for i in range(16)]
    assert len(set(xs)) == 16  # parallel asks got distinct suggestions
    # After its startup trials TPE concentrates on the low end (the objective is x itself).
    assert sum(xs[8:]) / 8 < sum(xs[:4]) / 4
    assert exp["status"]["currentOptimalTrial"]["objectiveValue"] == min(xs)


def test_grid_search_ends_when_the_grid_is_exhausted(api, namespace, operator, kwok_nodes):
    cluster = Cluster(api, namespace)
    cluster.create(
        experiment(
            "grid",
            [
                {"name": "x", "type": "int", "min": 1, "max": 3},
                {"name": "opt", "type": "categorical", "values": ["sgd", "adam"]},
            ],
            annotations=loss_is_x("200ms"),
            algorithm={"name": "grid", "seed": 2},
            max_trials=20,
            parallel=3,
        )
    )
    exp = cluster.wait_finished("grid")
    assert exp["status"]["phase"] == "Succeeded"
    assert condition(exp, "Succeeded")["reason"] == "SearchSpaceExhausted"
    configs = {tuple(p["value"] for p in t["spec"]["parameters"]) for t in cluster.trials().values()}
    assert configs == {(x, o) for x in ("1", "2", "3") for o in ("sgd", "adam")}
    assert exp["status"]["configurations"] == 6 and len(cluster.trials()) == 6


def test_unknown_algorithm_settings_are_refused_at_apply_time(namespace, crds, kubectl):
    body = experiment(
        "bad",
        x_space(),
        annotations={},
        max_trials=1,
        algorithm={"name": "tpe", "settings": [{"name": "sigma0", "value": "1"}]},
    )
    out = kubectl.apply(body, namespace, check=False)
    assert out.returncode != 0 and "unknown setting for this algorithm" in out.stderr


def test_bad_setting_values_become_a_condition(api, namespace, operator, kwok_nodes):
    cluster = Cluster(api, namespace)
    cluster.create(
        experiment(
            "badvalue",
            x_space(),
            annotations={},
            max_trials=1,
            algorithm={"name": "cmaes", "settings": [{"name": "sigma0", "value": "-2"}]},
        )
    )
    exp = wait_until(
        lambda: (e := cluster.get("badvalue")).get("status", {}).get("conditions") and e, what="a condition"
    )
    failed = condition(exp, "Failed")
    assert failed["reason"] == "InvalidSpec" and "sigma0" in failed["message"]
    assert not cluster.trials()


def test_a_multi_objective_search_goes_on_after_an_operator_restart_as_if_uninterrupted(
    api, namespace, operator, kwok_nodes
):
    # Seeded TPE at parallelism 1 learns from each result (values and constraint values): after a
    # kill, the restarted operator replays the study from the Trials and suggests what an
    # uninterrupted one would have.
    cluster = Cluster(api, namespace)
    body = experiment(
        "mo-restart",
        [{"name": "x", "type": "double", "min": 0, "max": 1}, {"name": "y", "type": "double", "min": 0, "max": 1}],
        annotations={
            "sim.hpo.dev/message": '{"acc": ${params.x}, "cost": ${params.y}, "memory": ${params.x}}',
            "sim.hpo.dev/duration": "300ms",
        },
        algorithm={"name": "tpe", "seed": 4, "settings": [{"name": "nStartupTrials", "value": "3"}]},
        max_trials=8,
        objective={
            "metrics": [{"metricName": "acc", "type": "maximize"}, {"metricName": "cost", "type": "minimize"}],
            "constraints": [{"metricName": "memory", "max": 0.8}],
        },
    )
    cluster.create(body)
    wait_until(
        lambda: sum((t.get("status") or {}).get("phase") == "Succeeded" for t in cluster.trials().values()) >= 4,
        timeout=60,
        what="four trials to succeed",
    )
    operator.kill()
    operator.start()
    exp = cluster.wait_finished("mo-restart", timeout=120)
    assert exp["status"]["phase"] == "Succeeded" and exp["status"]["paretoFrontSize"] >= 1
    trials = cluster.trials()
    assert sorted(trials) == [f"mo-restart-{i:04d}" for i in range(8)]
    reference = Suggester(ExperimentSpec.model_validate(body["spec"]))
    for i in range(8):
        values = {p["name"]: p["value"] for p in trials[f"mo-restart-{i:04d}"]["spec"]["parameters"]}
        assert values == reference.suggest(i), i
        x, y = float(values["x"]), float(values["y"])
        reference.tell(i, Outcome(values=(x, y), constraints={"memory": x - 0.8}))
        assert trials[f"mo-restart-{i:04d}"]["status"]["feasible"] is (x <= 0.8)

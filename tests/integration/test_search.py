"""Search algorithms through the running operator."""

from __future__ import annotations

from tests.experiments import condition, experiment
from tests.kube import Cluster, PodConcurrency, wait_until


def test_tpe_with_parallel_trials_uses_every_slot_and_learns(api, namespace, operator, kwok_nodes):
    cluster = Cluster(api, namespace)
    watcher = PodConcurrency(api, namespace)
    cluster.create(
        experiment(
            "tpe",
            [{"name": "x", "type": "double", "min": -10, "max": 10}],
            annotations={"sim.hpo.dev/message": '{"loss": ${params.x}}', "sim.hpo.dev/duration": "300ms"},
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
            annotations={"sim.hpo.dev/message": '{"loss": ${params.x}}', "sim.hpo.dev/duration": "200ms"},
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
        [{"name": "x", "type": "double", "min": 0, "max": 1}],
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
            [{"name": "x", "type": "double", "min": 0, "max": 1}],
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

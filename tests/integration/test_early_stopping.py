"""Metrics read from trial pods' logs, and early stopping on intermediate values.

KWOK serves a pod's log from a file named by a Logs object, through the API server as a kubelet
would, so the operator reads these logs with the same call it uses on a real cluster.
"""

from __future__ import annotations

from tests.experiments import condition, experiment
from tests.kube import Cluster, serve_log, wait_until, write_log


def test_metrics_come_from_stdout_lines(api, namespace, operator, kwok_nodes, tmp_path):
    cluster = Cluster(api, namespace)
    curves = {0: [0.9, 0.6, 0.4], 1: [0.8, 0.7, 0.65]}
    for index, losses in curves.items():
        path = tmp_path / f"{index}.log"
        write_log(
            path,
            ["starting"]
            + [f"epoch {s}: step={s} loss={v}, accuracy={1 - v:.2f}" for s, v in enumerate(losses, start=1)]
            + ['{"done": true}'],
        )
        serve_log(api, namespace, f"stdout-{index:04d}", path)
    body = experiment(
        "stdout",
        [{"name": "x", "type": "double", "min": 0, "max": 1}],
        annotations={},
        max_trials=2,
        parallel=2,
        metricsCollector={"source": "StdoutLog"},
    )
    body["spec"]["objective"]["additionalMetricNames"] = ["accuracy"]
    cluster.create(body)
    exp = cluster.wait_finished("stdout")
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    trials = cluster.trials()
    for index, losses in curves.items():
        st = trials[f"stdout-{index:04d}"]["status"]
        assert st["phase"] == "Succeeded"
        assert st["objectiveValue"] == losses[-1]
        latest = {m["name"]: m["value"] for m in st["metrics"]}
        assert latest == {"loss": losses[-1], "accuracy": round(1 - losses[-1], 2)}
        loss_history = [(m["step"], m["value"]) for m in st["metricHistory"] if m["name"] == "loss"]
        assert loss_history == list(enumerate(losses, start=1))
    assert exp["status"]["currentOptimalTrial"]["objectiveValue"] == 0.4


def test_median_rule_stops_an_unpromising_trial(api, namespace, operator, kwok_nodes, tmp_path):
    cluster = Cluster(api, namespace)
    good = [1.0, 0.8, 0.6, 0.5]
    bad = [5.0, 4.9, 4.8, 4.7]
    for index, losses in enumerate([good, good, bad]):
        path = tmp_path / f"{index}.log"
        write_log(path, [f"step={s} loss={v}" for s, v in enumerate(losses, start=1)])
        serve_log(api, namespace, f"median-{index:04d}", path)
    cluster.create(
        experiment(
            "median",
            [{"name": "x", "type": "double", "min": 0, "max": 1}],
            annotations={"sim.hpo.dev/duration": "5s"},
            max_trials=3,
            parallel=1,
            metricsCollector={"source": "StdoutLog", "intervalSeconds": 1},
            earlyStopping={"algorithm": "median", "minTrialsRequired": 2},
        )
    )
    exp = cluster.wait_finished("median", timeout=90)
    trials = cluster.trials()
    assert [trials[f"median-{i:04d}"]["status"]["phase"] for i in range(3)] == [
        "Succeeded",
        "Succeeded",
        "EarlyStopped",
    ]
    stopped = trials["median-0002"]["status"]
    # Stopped while running (its pod would have run 5 s), with its last value recorded, not retried.
    assert stopped["reason"] == "EarlyStopped" and stopped["objectiveValue"] in bad
    assert "retriedBy" not in stopped and len(trials) == 3
    assert exp["status"]["phase"] == "Succeeded"
    assert exp["status"]["trialsEarlyStopped"] == 1 and exp["status"]["failedConfigurations"] == 0
    assert condition(exp, "Succeeded")["reason"] == "MaxTrialsReached"
    wait_until(lambda: "median-0002" not in cluster.pods(), what="the stopped trial's pod to be deleted")

"""Metrics read from trial pods' logs, and early stopping on intermediate values.

KWOK serves a pod's log from a file named by a Logs object, through the API server as a kubelet
would, so the operator reads these logs with the same call it uses on a real cluster.
"""

from __future__ import annotations

from tests.support.experiments import condition, experiment, x_space
from tests.support.kube import Cluster, serve_log, this_checkouts_crds, wait_until, write_log


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
        x_space(),
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
            x_space(),
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


def test_hyperband_stops_the_unpromising_trials(api, namespace, operator, kwok_nodes, tmp_path):
    cluster = Cluster(api, namespace)
    good = [1.0, 0.8, 0.6, 0.5]
    bad = [5.0, 4.9, 4.8, 4.7]
    curves = [good, good, good, good, bad, bad]
    for index, losses in enumerate(curves):
        path = tmp_path / f"{index}.log"
        write_log(path, [f"step={s} loss={v}" for s, v in enumerate(losses, start=1)])
        serve_log(api, namespace, f"hyperband-{index:04d}", path)
    cluster.create(
        experiment(
            "hyperband",
            x_space(),
            annotations={"sim.hpo.dev/duration": "4s"},
            max_trials=len(curves),
            parallel=1,
            metricsCollector={"source": "StdoutLog", "intervalSeconds": 1},
            earlyStopping={"algorithm": "hyperband", "minResource": 1, "maxResource": 4, "reductionFactor": 3},
        )
    )
    exp = cluster.wait_finished("hyperband", timeout=120)
    trials = cluster.trials()
    phases = [trials[f"hyperband-{i:04d}"]["status"]["phase"] for i in range(len(curves))]
    # Which bad trial is stopped depends on the bracket Hyperband puts it in (and what that bracket
    # has seen); a good one never is.
    assert phases[:4] == ["Succeeded"] * 4 and "EarlyStopped" in phases[4:], phases
    assert exp["status"]["trialsEarlyStopped"] == phases.count("EarlyStopped")


def test_the_median_rule_judges_by_the_steps_no_running_read_saw(api, namespace, operator, kwok_nodes, tmp_path):
    """The scenario seen on real pods: trials that finished between two log reads had late steps
    the pruner never heard of, so the median at those steps came from the few trials a read caught.
    Here the two worst trials' logs show two steps at their first read and all twelve only later
    (no running read sees them again: the read interval is longer than a trial), so only their final
    read has their late steps."""
    cluster = Cluster(api, namespace)
    scales = [6.0, 7.0, 1.0, 2.0, 3.0]  # the last is better than the median of the first four at every step
    paths = {}
    for index, scale in enumerate(scales):
        paths[index] = tmp_path / f"{index}.log"
        steps = 2 if index < 2 else 12
        write_log(paths[index], [f"step={s} loss={scale * 0.9**s:.6f}" for s in range(1, steps + 1)])
        serve_log(api, namespace, f"late-{index:04d}", paths[index])
    cluster.create(
        experiment(
            "late",
            x_space(),
            annotations={"sim.hpo.dev/duration": "6s"},
            max_trials=len(scales),
            parallel=1,
            metricsCollector={"source": "StdoutLog", "intervalSeconds": 60},
            earlyStopping={"algorithm": "median", "minTrialsRequired": 3, "warmupSteps": 2},
        )
    )
    for index in (0, 1):
        # Once the first read has recorded its two steps, the rest of the curve appears.
        name = f"late-{index:04d}"
        wait_until(
            lambda name=name: cluster.trials().get(name, {}).get("status", {}).get("metricHistory"),
            what=f"the first read of {name}",
            timeout=60,
        )
        write_log(paths[index], [f"step={s} loss={scales[index] * 0.9**s:.6f}" for s in range(1, 13)])
    exp = cluster.wait_finished("late", timeout=120)
    trials = cluster.trials()
    phases = [trials[f"late-{i:04d}"]["status"]["phase"] for i in range(len(scales))]
    assert phases == ["Succeeded"] * 5, [trials[f"late-{i:04d}"]["status"].get("message") for i in range(5)]
    for index in (0, 1):  # the final read has the whole curve
        history = [m["step"] for m in trials[f"late-{index:04d}"]["status"]["metricHistory"] if m["name"] == "loss"]
        assert history == list(range(1, 13))
    assert exp["status"]["trialsEarlyStopped"] == 0


def test_asha_on_several_objectives_stops_the_dominated_trials(api, kubectl, namespace, operator, kwok_nodes, tmp_path):
    """Successive halving on the non-dominated rank (minResource 1, reductionFactor 2): the first two
    trials trade accuracy for latency, neither beats the other; the two after them are worse in both
    from their first step, and each is stopped there."""
    cluster = Cluster(api, namespace)
    curves = [
        [(0.80, 2.0), (0.85, 2.0), (0.90, 2.0)],
        [(0.60, 1.0), (0.65, 1.0), (0.70, 1.0)],
        [(0.10, 9.0), (0.15, 9.0), (0.20, 9.0)],
        [(0.10, 9.0), (0.15, 9.0), (0.20, 9.0)],
    ]

    def serve(indexes: range) -> None:
        for index in indexes:
            path = tmp_path / f"{index}.log"
            points = curves[index]
            write_log(path, [f"step={s} acc={a} latency={lat}" for s, (a, lat) in enumerate(points, start=1)])
            serve_log(api, namespace, f"mo-asha-{index:04d}", path)

    # A log line's time is when the file was written (KWOK serves it so): the dominated trials' lines
    # are written once they run, after the first two finished, as a program would print them.
    serve(range(2))
    body = experiment(
        "mo-asha",
        x_space(),
        annotations={"sim.hpo.dev/duration": "5s"},
        max_trials=len(curves),
        parallel=1,
        metricsCollector={"source": "StdoutLog", "intervalSeconds": 1},
        earlyStopping={"algorithm": "asha", "minResource": 1, "reductionFactor": 2},
    )
    body["spec"]["objective"] = {
        "metrics": [{"metricName": "acc", "type": "maximize"}, {"metricName": "latency", "type": "minimize"}]
    }
    # This checkout's CRD takes asha with several objectives (another checkout's may refuse it).
    this_checkouts_crds(kubectl, ("experiments.status.spent", "durationSeconds"))
    cluster.create(body)
    wait_until(lambda: "mo-asha-0002" in cluster.trials(), timeout=60, what="the third trial")
    serve(range(2, 4))
    exp = cluster.wait_finished("mo-asha", timeout=120)
    trials = cluster.trials()
    phases = [trials[f"mo-asha-{i:04d}"]["status"]["phase"] for i in range(len(curves))]
    assert phases == ["Succeeded", "Succeeded", "EarlyStopped", "EarlyStopped"], phases
    for i in (2, 3):
        st = trials[f"mo-asha-{i:04d}"]["status"]
        # Stopped at its first rung, with the latest values the read saw (all three steps may come at once).
        assert tuple(st["objectiveValues"]) in curves[i] and "at rung 1 (step 1)" in st["message"], st
        assert "retriedBy" not in st
    assert exp["status"]["phase"] == "Succeeded" and exp["status"]["trialsEarlyStopped"] == 2
    assert exp["status"]["paretoFrontSize"] == 2

"""Trials as Kubeflow TrainJobs, run by the real Trainer and JobSet controllers (hack/training.sh) on
a torch-style ClusterTrainingRuntime whose pods run on KWOK nodes. The trial template names only
apiVersion, kind and the TrainJob: its conditions (Complete/Failed) and primary pod (node 0) are the
known kind's defaults. Skipped, with the reason, when the controllers are not running.

KWOK plays each pod from its annotations (hack/kwok/stages.yaml); a TrainJob's pods get per-trial
annotations through a runtimePatches entry of the trial's own, where placeholders work."""

from __future__ import annotations

import pytest

from tests.support.experiments import experiment, x_space
from tests.support.kube import Cluster
from tests.support.outcome import assert_each_oom_killed_once_then_retried
from tests.support.training import JOBSET, TRAINER, torch_runtime

pytestmark = pytest.mark.usefixtures("training_controllers", "kwok_nodes")

X = x_space(10)
# Node 0 reports the trial's loss; every other node a loss better than any trial's, which the
# objective must never show.
NODE_0_LOSS = {"sim.hpo.dev/message": '{"loss": -1}', "sim.hpo.dev/message-index-0": '{"loss": ${params.x}}'}


@pytest.fixture
def runtime(api):
    with torch_runtime(api) as name:
        yield name


def trainjob_trials(name: str, runtime: str, annotations: dict, nodes: int = 2, **spec: object) -> dict:
    """An experiment whose trials are TrainJobs of `nodes` nodes on the runtime; the trainer's args
    and env carry placeholders."""
    body = experiment(name, X, annotations={}, **spec)
    body["spec"]["trialTemplate"] = {
        "resource": {
            "apiVersion": "/".join(TRAINER),
            "kind": "TrainJob",
            "manifest": {
                "metadata": {"labels": {"team": "ml"}},
                "spec": {
                    "runtimeRef": {"name": runtime},
                    "trainer": {
                        "numNodes": nodes,
                        "args": ["--x=${params.x}", "--run=${trial.name}"],
                        "env": [{"name": "HPO_X", "value": "${params.x}"}],
                    },
                    "runtimePatches": [
                        {
                            "manager": "example.org/sim",
                            "trainingRuntimeSpec": {
                                "template": {
                                    "spec": {
                                        "replicatedJobs": [
                                            {
                                                "name": "node",
                                                "template": {
                                                    "spec": {"template": {"metadata": {"annotations": annotations}}}
                                                },
                                            }
                                        ]
                                    }
                                }
                            },
                        }
                    ],
                },
            },
        }
    }
    return body


def trainjobs(cluster: Cluster) -> dict[str, dict]:
    items = cluster.custom.list_namespaced_custom_object(*TRAINER, cluster.ns, "trainjobs")["items"]
    return {t["metadata"]["name"]: t for t in items}


def test_trainjob_trials_succeed_with_exact_counts_and_every_pod_carries_its_trials_labels(
    api, namespace, operator, runtime
):
    cluster = Cluster(api, namespace)
    cluster.create(trainjob_trials("tj", runtime, NODE_0_LOSS, max_trials=4, parallel=2))
    exp = cluster.wait_finished("tj", timeout=180)
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    assert (exp["status"]["trialsSucceeded"], exp["status"].get("trialsFailed", 0)) == (4, 0)
    trials = cluster.trials()
    assert sorted(trials) == [f"tj-{i:04d}" for i in range(4)]
    assert all(t["status"]["phase"] == "Succeeded" for t in trials.values())
    found = trainjobs(cluster)
    assert sorted(found) == sorted(trials)
    for name, tj in found.items():
        assert tj["metadata"]["labels"]["team"] == "ml"
        (owner,) = tj["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("Trial", name, trials[name]["metadata"]["uid"])
    # Every pod of every TrainJob (two nodes each) carries its trial's labels, and runs its
    # trial's substituted args and env.
    pods = list(cluster.pods().values())
    assert len(pods) == 8
    for p in pods:
        trial = trials[p.metadata.labels["hpo.dev/trial"]]
        assert p.metadata.labels["jobset.sigs.k8s.io/jobset-name"] == trial["metadata"]["name"]
        assert p.metadata.labels["hpo.dev/experiment"] == "tj"
        x = trial["spec"]["parameters"][0]["value"]
        container = p.spec.containers[0]
        assert container.args == [f"--x={x}", f"--run={trial['metadata']['name']}"]
        assert {e.name: e.value for e in container.env or []}["HPO_X"] == x
    by_trial = sorted(p.metadata.labels["hpo.dev/trial"] for p in pods)
    assert by_trial == sorted([*trials, *trials])


def test_a_trainjob_trials_metrics_come_from_node_0_only(api, namespace, operator, runtime):
    cluster = Cluster(api, namespace)
    cluster.create(trainjob_trials("metrics", runtime, NODE_0_LOSS, nodes=3, max_trials=2, parallel=2))
    exp = cluster.wait_finished("metrics", timeout=180)
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    trials = cluster.trials()
    assert len(trials) == 2
    for t in trials.values():
        # Nodes 1 and 2 said -1; node 0 said x.
        assert t["status"]["objectiveValue"] == float(t["spec"]["parameters"][0]["value"]), t["status"]
    assert -1.0 not in [t["status"]["objectiveValue"] for t in trials.values()]


def test_an_oom_killed_node_0_is_a_trainjob_trial_retried_once_with_exact_counts(api, namespace, operator, runtime):
    cluster = Cluster(api, namespace)
    # Node 0 of each configuration's first attempt is OOMKilled; node 1 succeeds every time.
    oom = {**NODE_0_LOSS, "sim.hpo.dev/exit-code-attempt-1-index-0": "137", "sim.hpo.dev/reason": "OOMKilled"}
    cluster.create(
        trainjob_trials(
            "oom", runtime, oom, max_trials=3, parallel=3, retryPolicy={"maxRetries": 2, "backoffSeconds": 1}
        )
    )
    exp = cluster.wait_finished("oom", timeout=180)
    trials = cluster.trials()
    assert_each_oom_killed_once_then_retried(exp, trials, "x", configs=3)
    found = trainjobs(cluster)
    assert sorted(found) == sorted(trials)
    failed = [
        n
        for n, tj in found.items()
        if any(c["type"] == "Failed" and c["status"] == "True" for c in tj["status"]["conditions"])
    ]
    assert sorted(failed) == sorted(n for n, t in trials.items() if t["spec"]["attempt"] == 1)
    # The JobSets under them are Trainer's, named after the trials.
    jobsets = cluster.custom.list_namespaced_custom_object(*JOBSET[:2], namespace, JOBSET[2])["items"]
    assert sorted(j["metadata"]["name"] for j in jobsets) == sorted(trials)
    # The OOMKilled pods were node 0 of the first attempts, and only those.
    oom_pods = [
        p
        for p in cluster.pods().values()
        if p.status.container_statuses
        and p.status.container_statuses[0].state.terminated
        and p.status.container_statuses[0].state.terminated.reason == "OOMKilled"
    ]
    assert sorted(p.metadata.labels["hpo.dev/trial"] for p in oom_pods) == sorted(failed)
    assert {p.metadata.labels["batch.kubernetes.io/job-completion-index"] for p in oom_pods} == {"0"}


def test_an_evicted_trainjob_node_is_an_infrastructure_failure_retried_within_the_budget(
    api, namespace, operator, runtime
):
    cluster = Cluster(api, namespace)
    # Every node is evicted at every attempt (KWOK's pod-failure cannot pick one node).
    evicted = {**NODE_0_LOSS, "sim.hpo.dev/pod-failure": "Evicted"}
    body = trainjob_trials(
        "evicted", runtime, evicted, max_trials=1, retryPolicy={"maxRetries": 1, "backoffSeconds": 1}
    )
    cluster.create(body)
    cluster.wait_finished("evicted", timeout=180)
    trials = cluster.trials()
    assert len(trials) == 2  # the trial and its one retry
    for t in trials.values():
        assert (t["status"]["phase"], t["status"]["failureClass"]) == ("Failed", "Infrastructure"), t["status"]


def test_a_trainjobs_active_deadline_fails_its_trial_as_a_timeout_not_retried(api, namespace, operator, runtime):
    cluster = Cluster(api, namespace)
    body = trainjob_trials(
        "deadline",
        runtime,
        {"sim.hpo.dev/hang": "true"},
        max_trials=1,
        retryPolicy={"maxRetries": 2, "backoffSeconds": 1},
    )
    body["spec"]["trialTemplate"]["resource"]["manifest"]["spec"]["activeDeadlineSeconds"] = 2
    cluster.create(body)
    cluster.wait_finished("deadline", timeout=120)
    trials = cluster.trials()
    assert list(trials) == ["deadline-0000"]
    st = trials["deadline-0000"]["status"]
    assert (st["phase"], st["failureClass"]) == ("Failed", "Timeout"), st

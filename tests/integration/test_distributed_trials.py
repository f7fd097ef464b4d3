"""Trials against the real distributed-training controllers (hack/training.sh), their pods on KWOK
nodes: JobSet trials run by the JobSet controller (with the kind's default conditions and primary
pod, and with given ones), and Job trials queued by Kueue; TrainJob trials are in
test_trainjob_trials.py. Skipped, with the reason, when the controllers are not running.

What Kueue-queued trials do today: a trial whose Job waits for admission is Pending (reason
PodPending: its Job is suspended and has no pod), takes a parallelTrialCount slot, and is not
failed by startupTimeoutSeconds however long it waits, since that timeout counts only pods that
cannot start."""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.experiments import as_job, by_config, experiment
from tests.kube import Cluster, PodConcurrency
from tests.training import JOBSET, QUEUE_LABEL, local_queue, pod_spec

pytestmark = pytest.mark.usefixtures("training_controllers", "kwok_nodes")

X = [{"name": "x", "type": "double", "min": 0, "max": 10}]
LOSS = {"sim.hpo.dev/message": '{"loss": ${params.x}}'}


def jobset_trials(name: str, leader_annotations: dict, given: bool, **spec: object) -> dict:
    """An experiment whose trials are JobSets of one leader and two workers; metrics come from the
    leader's termination message. given: the template names the conditions and the primary pod
    (the leader) itself; else they are JobSet's defaults (its first replicated job is the leader)."""
    body = experiment(name, X, annotations={}, **spec)
    replicated = [
        ("leader", 1, pod_spec("1s", annotations={**LOSS, **leader_annotations})),
        ("workers", 2, pod_spec("1s")),
    ]
    for _, _, template in replicated:
        template["spec"]["containers"][0]["args"] = ["--x=${params.x}", "--run=${trial.name}"]
    body["spec"]["trialTemplate"] = {
        "resource": {
            "apiVersion": "/".join(JOBSET[:2]),
            "kind": "JobSet",
            "manifest": {
                "metadata": {"labels": {"team": "ml"}},
                "spec": {
                    "failurePolicy": {"maxRestarts": 0},
                    "replicatedJobs": [
                        {"name": rj, "replicas": n, "template": {"spec": {"backoffLimit": 0, "template": t}}}
                        for rj, n, t in replicated
                    ],
                },
            },
        },
    }
    if given:
        body["spec"]["trialTemplate"]["primaryPod"] = {"labels": {"jobset.sigs.k8s.io/replicatedjob-name": "leader"}}
        body["spec"]["trialTemplate"]["resource"].update(
            successCondition={"type": "Completed", "status": "True"}, failureCondition={"type": "Failed"}
        )
    return body


@pytest.mark.parametrize("given", [False, True], ids=["defaults", "given-conditions-and-primary-pod"])
def test_jobset_trials_take_metrics_from_the_leader_and_retry_an_oom_killed_leader(api, namespace, operator, given):
    cluster = Cluster(api, namespace)
    oom_first = {"sim.hpo.dev/exit-code-attempt-1": "137", "sim.hpo.dev/reason": "OOMKilled"}
    cluster.create(
        jobset_trials(
            "js", oom_first, given, max_trials=3, parallel=3, retryPolicy={"maxRetries": 2, "backoffSeconds": 1}
        )
    )
    exp = cluster.wait_finished("js", timeout=180)
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    trials = cluster.trials()
    groups = by_config(trials, "x")
    assert len(groups) == 3 and len(trials) == 6  # each configuration OOMKilled once, then retried
    for first, retry in groups.values():
        assert (first["status"]["phase"], first["status"]["failureClass"]) == ("Failed", "OOMKilled")
        assert retry["status"]["phase"] == "Succeeded"
        assert retry["status"]["objectiveValue"] == float(retry["spec"]["parameters"][0]["value"])
    jobsets = cluster.custom.list_namespaced_custom_object(*JOBSET[:2], namespace, JOBSET[2])["items"]
    assert sorted(j["metadata"]["name"] for j in jobsets) == sorted(trials)
    for j in jobsets:
        assert j["metadata"]["labels"]["team"] == "ml"
        (owner,) = j["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"]) == ("Trial", j["metadata"]["name"])
    # Every pod of every replicated job carries its trial's labels; a successful trial ran all three.
    # (A failed trial's workers may have been stopped before they ran: not counted.)
    pods = list(cluster.pods().values())
    assert all(p.metadata.labels["hpo.dev/trial"] == p.metadata.labels["jobset.sigs.k8s.io/jobset-name"] for p in pods)
    for _, retry in groups.values():
        ran = [p for p in pods if p.metadata.labels["hpo.dev/trial"] == retry["metadata"]["name"]]
        assert sorted(p.metadata.labels["jobset.sigs.k8s.io/replicatedjob-name"] for p in ran) == [
            "leader",
            "workers",
            "workers",
        ]


def test_kueue_admits_two_job_trials_at_a_time_and_the_queued_ones_do_not_time_out(api, namespace, operator):
    cluster = Cluster(api, namespace)
    with local_queue(api, namespace, cpu="2") as queue:
        body = as_job(
            experiment(
                "queued",
                X,
                annotations={**LOSS, "sim.hpo.dev/duration": "4s"},
                max_trials=8,
                parallel=5,
                startupTimeoutSeconds=3,
            )
        )
        job = body["spec"]["trialTemplate"]["job"]
        job["metadata"]["labels"][QUEUE_LABEL] = queue
        job["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "1"}}
        job["spec"]["template"]["spec"]["nodeSelector"] = {"type": "kwok"}
        pods_at_once = PodConcurrency(api, namespace)
        cluster.create(body)
        exp = cluster.wait_finished("queued", timeout=180)
        most = pods_at_once.stop()
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    trials = cluster.trials()
    assert len(trials) == 8 and all(t["status"]["phase"] == "Succeeded" for t in trials.values())
    assert (exp["status"]["trialsSucceeded"], exp["status"].get("trialsFailed", 0)) == (8, 0)
    # The quota (2 CPUs, 1 per trial), not parallelTrialCount (5), held the pods back ...
    assert most == 2
    # ... and trials waited in the queue longer than startupTimeoutSeconds without failing for it.
    jobs = {j.metadata.name: j for j in client.BatchV1Api(api).list_namespaced_job(namespace).items}
    pods = {p.metadata.labels["hpo.dev/trial"]: p for p in cluster.pods().values()}
    waits = [
        (pods[name].metadata.creation_timestamp - jobs[name].metadata.creation_timestamp).total_seconds()
        for name in trials
    ]
    assert max(waits) > 3, waits

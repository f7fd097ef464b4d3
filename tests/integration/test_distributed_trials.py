"""Trials against the real distributed-training controllers (hack/training.sh), their pods on KWOK
nodes: JobSet trials run by the JobSet controller (with the kind's default conditions and primary
pod, and with given ones), and Job trials queued by Kueue; TrainJob trials are in
test_trainjob_trials.py. Skipped, with the reason, when the controllers are not running.

Kueue-queued trials (trialTemplate.queueName): a trial whose workload waits for admission is
Queued, holds one of the parallelTrialCount slots, and no timeout counts its wait; a trial Kueue
preempts after it started fails as Infrastructure and is retried."""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from tests.support.experiments import as_job, by_config, experiment, loss_is_x, x_space
from tests.support.kube import Cluster, PodConcurrency, TrialPhaseCounts, wait_until
from tests.support.outcome import assert_each_oom_killed_once_then_retried
from tests.support.training import (
    JOBSET,
    KUEUE,
    PRIORITY_LABEL,
    QUEUE_LABEL,
    local_queue,
    pod_spec,
    set_quota,
    workload_priority_class,
)

pytestmark = pytest.mark.usefixtures("training_controllers", "kwok_nodes")

X = x_space(10)


def jobset_trials(name: str, leader_annotations: dict, given: bool, **spec: object) -> dict:
    """An experiment whose trials are JobSets of one leader and two workers; metrics come from the
    leader's termination message. given: the template names the conditions and the primary pod
    (the leader) itself; else they are JobSet's defaults (its first replicated job is the leader)."""
    body = experiment(name, X, annotations={}, **spec)
    replicated = [
        ("leader", 1, pod_spec("1s", annotations={**loss_is_x(), **leader_annotations})),
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
    trials = cluster.trials()
    assert_each_oom_killed_once_then_retried(exp, trials, "x", configs=3)
    groups = by_config(trials, "x")
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


def queued_jobs(name: str, queue: str, **spec: object) -> dict:
    """An experiment of Job trials in the queue, one CPU each, on KWOK nodes."""
    body = as_job(experiment(name, X, annotations=loss_is_x("3s"), **spec))
    body["spec"]["trialTemplate"]["queueName"] = queue
    template = body["spec"]["trialTemplate"]["job"]["spec"]["template"]["spec"]
    template["containers"][0]["resources"] = {"requests": {"cpu": "1"}}
    template["nodeSelector"] = {"type": "kwok"}
    return body


def test_kueue_admits_two_job_trials_at_a_time_and_the_others_are_queued_without_timing_out(api, namespace, operator):
    cluster = Cluster(api, namespace)
    # No quota at first: every trial waits in the queue for longer than either timeout allows a
    # trial to start or to run; then 2 CPUs, 1 per trial.
    with local_queue(api, namespace, cpu="0") as queue:
        body = queued_jobs("queued", queue, max_trials=8, parallel=5, startupTimeoutSeconds=3)
        body["spec"]["maxTrialDurationSeconds"] = 10
        pods_at_once, phases = PodConcurrency(api, namespace), TrialPhaseCounts(api, namespace)
        cluster.create(body)
        wait_until(lambda: phases.most.get("Queued") == 5, 60, what="5 queued trials")
        time.sleep(12)
        status = cluster.get("queued")["status"]
        assert (status["trialsQueued"], status.get("trialsFailed", 0), status["trials"]) == (5, 0, 5), status
        set_quota(api, namespace, queue, "2")
        exp = cluster.wait_finished("queued", timeout=180)
        most, most_in_phase = pods_at_once.stop(), phases.stop()
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    trials = cluster.trials()
    outcomes = {
        n: (t["status"]["phase"], t["status"].get("reason"), t["status"].get("message")) for n, t in trials.items()
    }
    assert len(trials) == 8 and all(t["status"]["phase"] == "Succeeded" for t in trials.values()), outcomes
    assert (exp["status"]["trialsSucceeded"], exp["status"].get("trialsFailed", 0)) == (8, 0)
    assert exp["status"]["trialsQueued"] == 0
    # The quota (2 CPUs, 1 per trial), not parallelTrialCount (5), held the pods back; the trials
    # beyond it were Queued, each holding one of the 5 slots.
    assert most == 2
    assert most_in_phase.get("Running", 0) <= 2, most_in_phase
    for name, seen in phases.seen.items():
        if "Queued" in seen:
            (admitted,) = [c for c in trials[name]["status"]["conditions"] if c["type"] == "Queued"]
            assert (admitted["status"], admitted["reason"]) == ("False", "Admitted")
    # The first five waited longer than startupTimeoutSeconds and maxTrialDurationSeconds, and
    # neither failed them.
    jobs = {j.metadata.name: j for j in client.BatchV1Api(api).list_namespaced_job(namespace).items}
    pods = {p.metadata.labels["hpo.dev/trial"]: p for p in cluster.pods().values()}
    waits = [
        (pods[name].metadata.creation_timestamp - jobs[name].metadata.creation_timestamp).total_seconds()
        for name in trials
    ]
    assert sorted(waits)[-5] > 10, waits


def test_pod_trials_wait_in_their_queue_gated_one_at_a_time(api, namespace, operator):
    cluster = Cluster(api, namespace)
    with local_queue(api, namespace, cpu="1") as queue:
        body = experiment("pods", X, annotations=loss_is_x("2s"), max_trials=4, parallel=3)
        body["spec"]["trialTemplate"]["queueName"] = queue
        body["spec"]["trialTemplate"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "1"}}
        phases = TrialPhaseCounts(api, namespace)
        cluster.create(body)
        exp = cluster.wait_finished("pods", timeout=120)
        most_in_phase = phases.stop()
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    trials = cluster.trials()
    assert len(trials) == 4 and all(t["status"]["phase"] == "Succeeded" for t in trials.values())
    # Kueue's pod integration gated them: one ran at a time, the others Queued.
    assert most_in_phase.get("Running", 0) <= 1 and most_in_phase.get("Queued", 0) >= 2, most_in_phase
    assert all(p.metadata.labels["kueue.x-k8s.io/queue-name"] == queue for p in cluster.pods().values())


def test_a_trial_kueue_preempts_for_a_higher_priority_job_is_retried_and_counted_once(api, namespace, operator):
    cluster = Cluster(api, namespace)
    batch = client.BatchV1Api(api)
    with (
        local_queue(api, namespace, cpu="2", preempt_lower_priority=True) as queue,
        workload_priority_class(api, 1000) as high,
    ):
        body = queued_jobs(
            "preempted", queue, max_trials=2, parallel=2, retryPolicy={"maxRetries": 1, "backoffSeconds": 1}
        )
        body["spec"]["trialTemplate"]["job"]["spec"]["template"]["metadata"]["annotations"]["sim.hpo.dev/duration"] = (
            "15s"
        )
        cluster.create(body)
        wait_until(
            lambda: cluster.get("preempted").get("status", {}).get("trialsRunning") == 2, 60, what="both trials to run"
        )
        urgent = pod_spec("3s", cpu="1")
        batch.create_namespaced_job(
            namespace,
            {
                "metadata": {"name": "urgent", "labels": {QUEUE_LABEL: queue, PRIORITY_LABEL: high}},
                "spec": {"backoffLimit": 0, "template": urgent},
            },
        )
        exp = cluster.wait_finished("preempted", timeout=180)
        urgent_job = batch.read_namespaced_job("urgent", namespace)
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    assert any(c.type == "Complete" and c.status == "True" for c in urgent_job.status.conditions or [])
    trials = cluster.trials()
    preempted = [t for t in trials.values() if t["status"].get("reason") == "Preempted"]
    assert len(preempted) == 1, {n: t["status"].get("reason") for n, t in trials.items()}
    (lost,) = preempted
    assert (lost["status"]["phase"], lost["status"]["failureClass"]) == ("Failed", "Infrastructure")
    retry = trials[lost["status"]["retriedBy"]]
    assert retry["status"]["phase"] == "Succeeded"
    assert len(trials) == 3 and exp["status"]["configurations"] == 2  # the preempted run is counted once
    assert (exp["status"]["trialsSucceeded"], exp["status"]["trialsFailed"], exp["status"]["trialsRetried"]) == (
        2,
        1,
        1,
    )


def test_suspending_holds_the_trials_in_their_queue_and_resuming_runs_them_without_re_runs(api, namespace, operator):
    cluster = Cluster(api, namespace)
    custom = client.CustomObjectsApi(api)
    with local_queue(api, namespace, cpu="1") as queue:
        body = queued_jobs("held", queue, max_trials=3, parallel=2)
        template = body["spec"]["trialTemplate"]["job"]["spec"]["template"]
        template["metadata"]["annotations"]["sim.hpo.dev/duration"] = "6s"
        cluster.create(body)
        wait_until(
            lambda: (
                (s := cluster.get("held").get("status", {})).get("trialsRunning") == 1 and s.get("trialsQueued") == 1
            ),
            60,
            what="one trial running, one queued",
        )
        cluster.patch("held", {"spec": {"suspend": True}})

        def held() -> bool:
            trials = cluster.trials().values()
            workloads = custom.list_namespaced_custom_object(*KUEUE, namespace, "workloads")["items"]
            return (
                len(trials) == 2
                and all((t["status"]["phase"], t["status"]["reason"]) == ("Queued", "Suspended") for t in trials)
                and len(workloads) == 2
                and all(w["spec"].get("active") is False for w in workloads)
                and not any(p.status.phase == "Running" for p in cluster.pods().values())
            )

        wait_until(held, 60, what="both trials held in their queue, no pod running")
        time.sleep(3)
        assert held(), "a held trial ran again while the experiment was suspended"
        assert cluster.get("held")["status"]["phase"] == "Suspended"
        cluster.patch("held", {"spec": {"suspend": False}})
        exp = cluster.wait_finished("held", timeout=120)
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    trials = cluster.trials()
    # The held trials ran on resume, as themselves: no trial killed, none re-run, none failed.
    assert len(trials) == 3 and all(t["status"]["phase"] == "Succeeded" for t in trials.values())
    assert (
        exp["status"]["configurations"],
        exp["status"].get("trialsKilled", 0),
        exp["status"].get("trialsFailed", 0),
    ) == (3, 0, 0)

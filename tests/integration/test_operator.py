"""The operator against the real API server, with KWOK choosing each trial pod's fate."""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.search.suggest import Suggester
from tests.support.experiments import (
    GROUP,
    VERSION,
    as_job,
    by_config,
    condition,
    experiment,
    fails_space,
    loss_is_x,
    oom_killed_first,
    restartable,
    x_space,
)
from tests.support.kube import Cluster, PodConcurrency, wait_until


def as_kind(body: dict, kind: str) -> dict:
    return as_job(body) if kind == "job" else body


# The recovery tests run for pod trials and for Job trials: the same exact counts.
KINDS = pytest.mark.parametrize("kind", ["pod", "job"])


def test_experiment_completes_within_its_parallelism(api, namespace, operator, kwok_nodes, kubectl):
    cluster = Cluster(api, namespace)
    watcher = PodConcurrency(api, namespace)
    cluster.create(
        experiment(
            "eight",
            x_space(10),
            annotations=loss_is_x(),
            max_trials=8,
            parallel=3,
        )
    )
    exp = cluster.wait_finished("eight")
    most = watcher.stop()

    assert exp["status"]["phase"] == "Succeeded"
    assert condition(exp, "Succeeded")["reason"] == "MaxTrialsReached"
    assert 2 <= most <= 3, f"{most} trial pods ran at once"
    trials = cluster.trials()
    assert len(trials) == 8
    assert all(t["status"]["phase"] == "Succeeded" for t in trials.values())
    best = min(trials.values(), key=lambda t: t["status"]["objectiveValue"])
    optimal = exp["status"]["currentOptimalTrial"]
    assert optimal["trialName"] == best["metadata"]["name"]
    assert (
        optimal["objectiveValue"] == best["status"]["objectiveValue"] == float(best["spec"]["parameters"][0]["value"])
    )
    st = exp["status"]
    assert (st["trials"], st["trialsSucceeded"], st["trialsFailed"], st["configurations"]) == (8, 8, 0, 8)
    # Each trial owns exactly one pod, named after it; the pod got the trial's parameters.
    pods = cluster.pods()
    assert set(pods) == set(trials)
    for name, pod in pods.items():
        assert pod.metadata.owner_references[0].uid == trials[name]["metadata"]["uid"]
        assert pod.spec.containers[0].args == [f"--x={trials[name]['spec']['parameters'][0]['value']}"]

    table = kubectl.run("get", "experiments", "-n", namespace).stdout
    assert "eight" in table and "Succeeded" in table and str(optimal["objectiveValue"])[:6] in table
    trial_table = kubectl.run("get", "trials", "-n", namespace).stdout.splitlines()
    assert trial_table[0].split()[:5] == ["NAME", "EXPERIMENT", "STATUS", "OBJECTIVE", "ATTEMPT"]
    assert len(trial_table) == 9 and all("x=" in line for line in trial_table[1:])


# Several objectives recover the same way: loss against speed, both the number of failures.
SEVERAL = {"metrics": [{"metricName": "loss", "type": "minimize"}, {"metricName": "speed", "type": "maximize"}]}


@pytest.mark.parametrize("kind, objectives", [("pod", "one"), ("job", "one"), ("pod", "several")])
def test_failed_configurations_are_retried_within_their_budget(api, namespace, operator, kwok_nodes, kind, objectives):
    cluster = Cluster(api, namespace)
    # Grid over fails = 0..3: the configuration with fails=N is OOMKilled on its first N attempts.
    cluster.create(
        as_kind(
            experiment(
                "retries",
                fails_space(3),
                annotations={
                    **oom_killed_first("${params.fails}"),
                    "sim.hpo.dev/message": '{"loss": ${params.fails}, "speed": ${params.fails}}',
                },
                **({"objective": SEVERAL} if objectives == "several" else {}),
                algorithm={"name": "grid", "seed": 3},
                max_trials=4,
                parallel=4,
                maxFailedTrialCount=1,
                retryPolicy={"maxRetries": 2, "backoffSeconds": 0},
            ),
            kind,
        )
    )
    exp = cluster.wait_finished("retries")
    groups = by_config(cluster.trials(), "fails")

    phases = {fails: [t["status"]["phase"] for t in trials] for fails, trials in groups.items()}
    assert phases == {
        "0": ["Succeeded"],  # succeeded: never retried
        "1": ["Failed", "Succeeded"],  # OOMKilled once, recovered
        "2": ["Failed", "Failed", "Succeeded"],  # recovered on its last retry
        "3": ["Failed", "Failed", "Failed"],  # budget spent: 1 run + maxRetries 2
    }
    for trials in groups.values():
        lineage = trials[0]["metadata"]["name"]
        for attempt, t in enumerate(trials, start=1):
            assert t["spec"]["attempt"] == attempt
            if attempt > 1:
                assert t["metadata"]["name"] == f"{lineage}-a{attempt}"
                assert t["spec"]["retryOf"] == trials[attempt - 2]["metadata"]["name"]
                assert trials[attempt - 2]["status"]["retriedBy"] == t["metadata"]["name"]
        for t in trials:
            if t["status"]["phase"] == "Failed":
                assert (t["status"]["reason"], t["status"]["failureClass"], t["status"]["exitCode"]) == (
                    "OOMKilled",
                    "OOMKilled",
                    137,
                )
    st = exp["status"]
    # Budgets count configurations: 4 launched, 1 finally failed (not more than maxFailedTrialCount=1).
    assert st["phase"] == "Succeeded", st
    assert (st["configurations"], st["failedConfigurations"]) == (4, 1)
    assert (st["trials"], st["trialsSucceeded"], st["trialsFailed"], st["trialsRetried"]) == (9, 3, 6, 5)
    if objectives == "one":
        assert st["currentOptimalTrial"]["objectiveValue"] == 0
    else:
        # The three configurations that succeeded trade loss against speed: all on the front.
        assert "currentOptimalTrial" not in st
        assert sorted(p["values"] for p in st["paretoFront"]) == [[0, 0], [1, 1], [2, 2]]
        assert st["paretoFrontSize"] == 3
    assert len(cluster.wait_events("TrialRetried", 5)) == 5
    assert cluster.workloads(kind) == set(cluster.trials())


def test_too_many_failed_configurations_fail_the_experiment(api, namespace, operator, kwok_nodes):
    cluster = Cluster(api, namespace)
    cluster.create(
        experiment(
            "failing",
            x_space(),
            annotations={"sim.hpo.dev/exit-code": "1"},
            max_trials=6,
            parallel=1,
            maxFailedTrialCount=1,
            retryPolicy={"maxRetries": 3, "backoffSeconds": 0},
        )
    )
    exp = cluster.wait_finished("failing")
    assert exp["status"]["phase"] == "Failed"
    assert condition(exp, "Failed")["reason"] == "TooManyFailures"
    trials = cluster.trials()
    # A program error (class Error) is not in the default retryOn: no retries, and the experiment
    # stops at the second failed configuration.
    assert len(trials) == 2
    assert all(t["status"]["failureClass"] == "Error" and "retriedBy" not in t["status"] for t in trials.values())
    assert exp["status"]["failedConfigurations"] == 2


def test_restart_requests_and_user_configurations(api, namespace, operator, kwok_nodes, kubectl):
    cluster = Cluster(api, namespace)
    cluster.create(restartable("restarts"))
    exp = cluster.wait_finished("restarts")
    assert exp["status"]["phase"] == "Succeeded"
    groups = by_config(cluster.trials(), "fails")
    failed, succeeded = groups["9"][0]["metadata"]["name"], groups["0"][0]["metadata"]["name"]

    # Restarting a trial whose configuration succeeded is refused, with the reason.
    kubectl.run("annotate", "trial", succeeded, "-n", namespace, "hpo.dev/restart=yes")
    t = wait_until(
        lambda: (
            "hpo.dev/restart" not in (x := cluster.get(succeeded, "trials"))["metadata"].get("annotations", {}) and x
        ),
        what="the restart request to be answered",
    )
    refused = condition(t, "RestartAccepted")
    assert (refused["status"], refused["reason"]) == ("False", "ConfigurationAlreadySucceeded")
    # Events go out through kopf's poster, after the status: give it a moment.
    wait_until(lambda: cluster.events("RestartRefused"), timeout=15, what="the RestartRefused Event")

    # Restarting the failed one runs its configuration again, as attempt 2.
    kubectl.run("annotate", "trial", failed, "-n", namespace, "hpo.dev/restart=yes")
    again = cluster.wait_trial(f"{failed}-a2", ("Failed",))
    assert again["spec"]["retryOf"] == failed and again["spec"]["attempt"] == 2
    assert again["metadata"]["labels"]["hpo.dev/launch-reason"] == "Restart"
    assert condition(cluster.get(failed, "trials"), "RestartAccepted")["status"] == "True"

    # A user asks to run a configuration: refused when it already succeeded ...
    user_trial = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Trial",
        "metadata": {"name": "mine-0"},
        "spec": {"experimentName": "restarts", "parameters": [{"name": "fails", "value": "0"}]},
    }
    cluster.create(user_trial, "trials")
    t = cluster.wait_trial("mine-0", ("Refused",))
    assert t["status"]["reason"] == "ConfigurationAlreadySucceeded"
    assert succeeded in t["status"]["message"]
    # ... refused when it is outside the search space ...
    user_trial["metadata"]["name"], user_trial["spec"]["parameters"][0]["value"] = "mine-1", "12"
    cluster.create(user_trial, "trials")
    assert cluster.wait_trial("mine-1", ("Refused",))["status"]["reason"] == "InvalidParameters"
    # ... refused between the grid's steps ...
    user_trial["metadata"]["name"], user_trial["spec"]["parameters"][0]["value"] = "mine-2", "4"
    cluster.create(user_trial, "trials")
    assert cluster.wait_trial("mine-2", ("Refused",))["status"]["reason"] == "InvalidParameters"
    # ... and adopted and run when no trial of it succeeded (written differently, but the same).
    user_trial["metadata"]["name"], user_trial["spec"]["parameters"][0]["value"] = "mine-3", "9.0"
    cluster.create(user_trial, "trials")
    t = cluster.wait_trial("mine-3", ("Failed", "Succeeded"))
    assert t["metadata"]["ownerReferences"][0]["uid"] == exp["metadata"]["uid"]
    assert t["metadata"]["labels"]["hpo.dev/launch-reason"] == "User"
    assert t["metadata"]["labels"]["hpo.dev/config"] == groups["9"][0]["metadata"]["labels"]["hpo.dev/config"]
    assert "mine-3" in cluster.pods()
    assert cluster.get("restarts")["status"]["configurations"] == 2


@KINDS
def test_operator_killed_mid_experiment_duplicates_nothing(api, namespace, operator, kwok_nodes, kind):
    cluster = Cluster(api, namespace)
    body = experiment(
        "sigkill",
        [
            {"name": "x", "type": "double", "min": -5, "max": 5},
            {"name": "c", "type": "categorical", "values": ["a", "b", "c"]},
        ],
        annotations=loss_is_x("1500ms"),
        max_trials=10,
        parallel=3,
        algorithm={"name": "random", "seed": 11},
    )
    cluster.create(as_kind(body, kind))
    wait_until(lambda: len(cluster.trials()) >= 4, timeout=60, what="a few trials")
    operator.kill()
    # The pods finish while no operator watches: the restarted one finds them done.
    wait_until(
        lambda: (pods := cluster.pods()) and all(p.status.phase in ("Succeeded", "Failed") for p in pods.values()),
        what="the trial pods to finish with the operator down",
    )
    operator.start()
    exp = cluster.wait_finished("sigkill")

    assert exp["status"]["phase"] == "Succeeded"
    trials = cluster.trials()
    assert sorted(trials) == [f"sigkill-{i:04d}" for i in range(10)]
    assert cluster.workloads(kind) == set(trials)
    if kind == "job":
        assert len(cluster.pods()) == len(trials)  # one pod per Job: none started twice
    # The restarted operator rebuilt the seeded sampler: the same configurations, in the same
    # order, as one that never stopped.
    reference = Suggester(ExperimentSpec.model_validate(body["spec"]))
    for i in range(10):
        values = {p["name"]: p["value"] for p in trials[f"sigkill-{i:04d}"]["spec"]["parameters"]}
        assert values == reference.suggest(i)
    # The Event is posted just after the status that finishes the experiment.
    wait_until(lambda: cluster.events("ExperimentSucceeded"), timeout=10, what="the ExperimentSucceeded Event")
    # Later rounds of the finished experiment post no second one. (kopf posts Events a moment
    # after the round that made them: two rounds leave it time.)
    operator.wait_for_rounds(lambda: cluster.poke("sigkill"), rounds=2)
    assert len(cluster.wait_events("ExperimentSucceeded")) == 1


def test_deleting_an_experiment_deletes_its_trials_and_pods(api, namespace, operator, kwok_nodes):
    cluster = Cluster(api, namespace)
    cluster.create(
        experiment(
            "doomed",
            x_space(),
            annotations={"sim.hpo.dev/hang": "true"},
            max_trials=3,
            parallel=2,
        )
    )
    wait_until(lambda: len(cluster.pods()) == 2, what="two running trial pods")
    cluster.custom.delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "experiments", "doomed", propagation_policy="Background"
    )
    wait_until(
        lambda: not cluster.trials() and not cluster.pods(),
        timeout=90,
        what="the garbage collector to delete trials and pods",
    )


@KINDS
def test_suspend_stops_trials_and_resume_reruns_them(api, namespace, operator, kwok_nodes, kind):
    cluster = Cluster(api, namespace)
    cluster.create(
        as_kind(
            experiment(
                "pausable",
                x_space(),
                annotations={"sim.hpo.dev/hang": "true"},
                max_trials=2,
                parallel=2,
                retryPolicy={"maxRetries": 0},
            ),
            kind,
        )
    )
    wait_until(
        lambda: len([p for p in cluster.pods().values() if p.status.phase == "Running"]) == 2,
        what="two running trial pods",
    )
    cluster.patch("pausable", {"spec": {"suspend": True}})
    exp = wait_until(
        lambda: (e := cluster.get("pausable"))["status"].get("phase") == "Suspended" and e,
        what="the experiment to be suspended",
    )
    assert condition(exp, "Suspended")["status"] == "True"
    wait_until(lambda: not cluster.pods() and not cluster.workloads(kind), what="the running pods to be deleted")
    trials = cluster.trials()
    assert [(t["status"]["phase"], t["status"]["reason"]) for t in trials.values()] == [("Killed", "Suspended")] * 2

    cluster.patch("pausable", {"spec": {"suspend": False}})
    resumed = {f"{name}-a2" for name in trials}
    wait_until(lambda: resumed <= cluster.workloads(kind), what="the stopped configurations to run again")
    again = cluster.trials()
    assert all(again[n]["metadata"]["labels"]["hpo.dev/launch-reason"] == "Resume" for n in resumed)
    # The round writes the experiment's status after its pods (executor.py), so it may land just after.
    wait_until(
        lambda: cluster.get("pausable")["status"]["phase"] == "Running",
        timeout=10,
        what="the experiment to be Running again",
    )


def test_stuck_trials_end_with_a_reason(api, namespace, operator, kwok_nodes):
    cluster = Cluster(api, namespace)
    # A trial that runs too long is killed; one whose image cannot be used fails at once; neither
    # is retried, since it would end the same way.
    cluster.create(
        experiment(
            "slow",
            x_space(),
            annotations={"sim.hpo.dev/hang": "true"},
            max_trials=1,
            maxTrialDurationSeconds=2,
        )
    )
    cluster.create(
        experiment(
            "badimage",
            x_space(),
            annotations={"sim.hpo.dev/waiting-reason": "InvalidImageName"},
            max_trials=1,
            retryPolicy={"retryOn": ["Infrastructure", "OOMKilled", "Error"]},
        )
    )
    slow, bad = cluster.wait_finished("slow"), cluster.wait_finished("badimage")
    trials = cluster.trials()
    assert (trials["slow-0000"]["status"]["phase"], trials["slow-0000"]["status"]["reason"]) == ("Killed", "Timeout")
    assert (
        trials["badimage-0000"]["status"]["phase"],
        trials["badimage-0000"]["status"]["reason"],
        trials["badimage-0000"]["status"]["failureClass"],
    ) == ("Failed", "InvalidImageName", "Startup")
    assert len(trials) == 2
    assert slow["status"]["failedConfigurations"] == bad["status"]["failedConfigurations"] == 1


def test_spec_errors_cel_cannot_see_become_a_condition(api, namespace, operator, kwok_nodes):
    cluster = Cluster(api, namespace)
    cluster.create(
        experiment(
            "typo",
            x_space(),
            annotations={"sim.hpo.dev/message": '{"loss": ${params.y}}'},
            max_trials=1,
        )
    )
    exp = wait_until(lambda: (e := cluster.get("typo")).get("status", {}).get("conditions") and e, what="a condition")
    failed = condition(exp, "Failed")
    assert failed["reason"] == "InvalidSpec" and "${params.y}" in failed["message"]
    assert cluster.wait_events("InvalidSpec")
    assert not cluster.trials()
    assert "Traceback" not in operator.log()


def test_prometheus_metrics_count_trials_by_reason_and_outcome(api, namespace, operator, kwok_nodes):
    cluster = Cluster(api, namespace)
    # Two configurations; each is OOMKilled on its first attempt and succeeds on the retry.
    cluster.create(
        experiment(
            "metered",
            x_space(),
            annotations={**loss_is_x(), **oom_killed_first("1")},
            max_trials=2,
            parallel=2,
            retryPolicy={"backoffSeconds": 0},
        )
    )
    cluster.wait_finished("metered")
    # The operator fixture serves its metrics on a port of its own (tests/support/kube.py).
    samples = wait_until(
        lambda: (m := operator.metrics()).get('hpo_experiments{phase="Succeeded"}') == 1 and m,
        what="the experiment gauge",
    )
    assert samples['hpo_trials_created_total{reason="Suggestion"}'] == 2
    assert samples['hpo_trials_created_total{reason="Retry"}'] == 2
    assert samples['hpo_trials_finished_total{failure_class="OOMKilled",phase="Failed"}'] == 2
    assert samples['hpo_trials_finished_total{failure_class="",phase="Succeeded"}'] == 2
    assert samples['hpo_reconcile_total{result="success"}'] > 0
    assert samples.get('hpo_reconcile_total{result="error"}', 0) == 0


def test_a_pod_the_api_server_refuses_fails_its_trial_and_the_rest_go_on(api, namespace, operator, kwok_nodes):
    cluster = Cluster(api, namespace)
    body = experiment(
        "refused",
        [{"name": "tag", "type": "categorical", "values": ["ok", "not a label!"]}],
        annotations={"sim.hpo.dev/message": '{"loss": 1}'},
        max_trials=2,
        parallel=1,
        algorithm={"name": "grid", "seed": 0},
    )
    body["spec"]["trialTemplate"]["template"]["metadata"]["labels"] = {"tag": "${params.tag}"}
    cluster.create(body)
    exp = cluster.wait_finished("refused")
    trials = {t["spec"]["parameters"][0]["value"]: t for t in cluster.trials().values()}
    bad = trials["not a label!"]["status"]
    assert (bad["phase"], bad["reason"], bad["failureClass"]) == ("Failed", "InvalidPod", "Startup")
    assert "label" in bad["message"]
    assert trials["ok"]["status"]["phase"] == "Succeeded"
    assert exp["status"]["phase"] == "Succeeded" and exp["status"]["failedConfigurations"] == 1
    assert cluster.wait_events("PodCreateFailed")


def node(name: str, labels: dict[str, str], kwok: bool) -> client.V1Node:
    annotations = {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"} if kwok else {}
    return client.V1Node(
        metadata=client.V1ObjectMeta(
            name=name, annotations=annotations, labels={"kubernetes.io/hostname": name, **labels}
        )
    )


# Alone: its node is Ready for a moment with no kubelet behind it, so another test's pod scheduled
# there then would be lost with it.
@pytest.mark.alone
def test_a_trial_on_a_lost_node_is_retried_elsewhere(api, namespace, operator, kwok_nodes):
    """A node with no kubelet behind it (as after a crash): the taint manager deletes the trial's pod
    but nobody finishes the deletion, so the pod stays Terminating. The trial must not hold its
    slot forever: it fails as NodeLost and its retry runs on a healthy node."""
    cluster = Cluster(api, namespace)
    pool = {"hpo-test/pool": namespace}
    lost, healthy = f"{namespace}-lost", f"{namespace}-healthy"
    cluster.core.create_node(node(lost, pool, kwok=False))
    try:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        resources = {"cpu": "8", "memory": "16Gi", "pods": "110"}
        cluster.core.patch_node_status(
            lost,
            {
                "status": {
                    "capacity": resources,
                    "allocatable": resources,
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "",
                            "lastHeartbeatTime": now,
                            "lastTransitionTime": now,
                        }
                    ],
                }
            },
        )
        body = experiment(
            "lost",
            [{"name": "x", "type": "int", "min": 0, "max": 9}],
            annotations={"sim.hpo.dev/message": '{"loss": 1}'},
            max_trials=1,
        )
        pod_spec = body["spec"]["trialTemplate"]["template"]["spec"]
        pod_spec.update(nodeSelector=pool, terminationGracePeriodSeconds=1)
        cluster.create(body)
        first = wait_until(
            lambda: (p := cluster.pods().get("lost-0000")) and p.spec.node_name and p,
            timeout=60,
            what="the first trial's pod to be scheduled",
        )
        assert first.spec.node_name == lost
        cluster.core.patch_node(
            lost, {"spec": {"taints": [{"key": "hpo-test/gone", "value": "true", "effect": "NoExecute"}]}}
        )
        cluster.core.create_node(node(healthy, pool, kwok=True))

        failed = cluster.wait_trial("lost-0000", ("Failed",), timeout=90)["status"]
        assert (failed["reason"], failed["failureClass"]) == ("NodeLost", "Infrastructure")
        assert lost in failed["message"] and "DeletionByTaintManager" in failed["message"]
        assert cluster.pods()["lost-0000"].metadata.deletion_timestamp is not None  # still stranded
        exp = cluster.wait_finished("lost", timeout=120)
        assert exp["status"]["phase"] == "Succeeded"
        retry = cluster.get("lost-0000-a2", "trials")
        assert retry["status"]["phase"] == "Succeeded"
        assert cluster.core.read_namespaced_pod("lost-0000-a2", namespace).spec.node_name == healthy
    finally:
        for p in cluster.core.list_namespaced_pod(namespace, field_selector=f"spec.nodeName={lost}").items:
            cluster.core.delete_namespaced_pod(p.metadata.name, namespace, grace_period_seconds=0)
        for name in (lost, healthy):
            try:
                cluster.core.delete_node(name)
            except client.ApiException:
                pass

"""Trials that run as batch/v1 Jobs (the local control plane's kube-controller-manager runs the real
job controller; KWOK plays the Jobs' pods), and as any resource with typed success and failure
conditions (a test CRD whose controller this test plays). The recovery rules must give the same
exact trial counts as for pod trials."""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client

from tests.experiments import as_job, by_config, experiment
from tests.kube import Cluster, wait_until

X = [{"name": "x", "type": "double", "min": 0, "max": 10}]
LOSS = {"sim.hpo.dev/message": '{"loss": ${params.x}}'}


def jobs(api, namespace: str) -> dict[str, client.V1Job]:
    return {j.metadata.name: j for j in client.BatchV1Api(api).list_namespaced_job(namespace).items}


def test_job_trials_succeed_with_metrics_and_are_owned_by_their_trials(api, namespace, operator, kwok_nodes):
    cluster = Cluster(api, namespace)
    cluster.create(as_job(experiment("jobs", X, annotations=LOSS, max_trials=4, parallel=2)))
    exp = cluster.wait_finished("jobs", timeout=120)
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    trials = cluster.trials()
    assert sorted(trials) == [f"jobs-{i:04d}" for i in range(4)]
    found = jobs(api, namespace)
    assert sorted(found) == sorted(trials)
    for name, t in trials.items():
        assert t["status"]["phase"] == "Succeeded"
        assert t["status"]["objectiveValue"] == float(t["spec"]["parameters"][0]["value"])
        (owner,) = found[name].metadata.owner_references
        assert (owner.kind, owner.name, owner.uid) == ("Trial", name, t["metadata"]["uid"])
        assert found[name].metadata.labels["team"] == "ml"
        assert found[name].spec.backoff_limit == 0
    pods = cluster.pods()
    assert len(pods) == 4 and all(p.metadata.labels["hpo.dev/trial"] in trials for p in pods.values())
    assert all(p.metadata.owner_references[0].kind == "Job" for p in pods.values())


def test_an_oom_killed_job_trial_is_retried_with_exact_counts(api, namespace, operator, kwok_nodes):
    cluster = Cluster(api, namespace)
    cluster.create(
        as_job(
            experiment(
                "oom",
                X,
                annotations={**LOSS, "sim.hpo.dev/exit-code-attempt-1": "137", "sim.hpo.dev/reason": "OOMKilled"},
                max_trials=3,
                parallel=3,
                retryPolicy={"maxRetries": 2, "backoffSeconds": 1},
            )
        )
    )
    exp = cluster.wait_finished("oom", timeout=120)
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    trials = cluster.trials()
    groups = by_config(trials, "x")
    assert len(groups) == 3 and len(trials) == 6
    for attempts in groups.values():
        first, retry = attempts
        assert (first["status"]["phase"], first["status"]["failureClass"]) == ("Failed", "OOMKilled")
        assert retry["status"]["phase"] == "Succeeded" and retry["spec"]["attempt"] == 2
    assert exp["status"]["trialsFailed"] == 3 and exp["status"]["trialsSucceeded"] == 3
    assert sorted(jobs(api, namespace)) == sorted(trials)


def test_an_indexed_job_is_one_trial_whose_metrics_come_from_index_0(api, namespace, operator, kwok_nodes):
    cluster = Cluster(api, namespace)
    cluster.create(
        as_job(
            experiment("indexed", X, annotations=LOSS, max_trials=2, parallel=2),
            completionMode="Indexed",
            completions=2,
            parallelism=2,
        )
    )
    exp = cluster.wait_finished("indexed", timeout=120)
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    trials = cluster.trials()
    assert len(trials) == 2
    pods = cluster.pods()
    assert len(pods) == 4  # two pods per trial, still one trial each
    for name, t in trials.items():
        indexes = sorted(
            p.metadata.labels["batch.kubernetes.io/job-completion-index"]
            for p in pods.values()
            if p.metadata.labels["hpo.dev/trial"] == name
        )
        assert indexes == ["0", "1"]
        assert t["status"]["objectiveValue"] == float(t["spec"]["parameters"][0]["value"])


def test_a_jobs_active_deadline_fails_its_trial_as_a_timeout_not_retried(api, namespace, operator, kwok_nodes):
    cluster = Cluster(api, namespace)
    cluster.create(
        as_job(
            experiment(
                "deadline",
                X,
                annotations={**LOSS, "sim.hpo.dev/duration": "60s"},
                max_trials=1,
                retryPolicy={"maxRetries": 2, "backoffSeconds": 1},
            ),
            activeDeadlineSeconds=2,
        )
    )
    exp = cluster.wait_finished("deadline", timeout=120)
    trials = cluster.trials()
    assert list(trials) == ["deadline-0000"]
    st = trials["deadline-0000"]["status"]
    assert (st["phase"], st["failureClass"]) == ("Failed", "Timeout"), st
    assert exp["status"]["phase"] in ("Succeeded", "Failed")


def test_deleting_the_experiment_removes_its_jobs_and_their_pods(api, namespace, operator, kwok_nodes):
    cluster = Cluster(api, namespace)
    cluster.create(
        as_job(experiment("gone", X, annotations={**LOSS, "sim.hpo.dev/hang": "true"}, max_trials=2, parallel=2))
    )
    wait_until(lambda: len(cluster.pods()) == 2, timeout=60, what="two running Job pods")
    cluster.custom.delete_namespaced_custom_object(
        "hpo.dev", "v1alpha1", namespace, "experiments", "gone", propagation_policy="Foreground"
    )
    wait_until(
        lambda: not jobs(api, namespace) and not cluster.pods(),
        timeout=90,
        what="the garbage collector to remove the Jobs and their pods",
    )


# --- any resource: a test CRD whose controller the test plays -------------------------------------

FAKE_GROUP = "test.hpo.dev"
FAKE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"trainruns.{FAKE_GROUP}"},
    "spec": {
        "group": FAKE_GROUP,
        "scope": "Namespaced",
        "names": {"plural": "trainruns", "singular": "trainrun", "kind": "TrainRun"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            }
        ],
    },
}


@pytest.fixture(scope="module")
def trainrun_crd(api, crds):
    ext = client.ApiextensionsV1Api(api)
    try:
        ext.create_custom_resource_definition(FAKE_CRD)
    except client.ApiException as e:
        if e.status != 409:
            raise
    custom = client.CustomObjectsApi(api)
    wait_until(lambda: _served(custom), timeout=30, what="the TrainRun kind to be served")


def _served(custom: client.CustomObjectsApi) -> bool:
    try:
        custom.list_cluster_custom_object(FAKE_GROUP, "v1", "trainruns")
        return True
    except client.ApiException:
        return False


class TrainRunController:
    """Plays the resource's controller: for each TrainRun, a pod from its embedded template (which
    the operator labelled), then a Done or Broken condition once the pod ends."""

    def __init__(self, api, namespace: str):
        self.custom, self.core, self.ns = client.CustomObjectsApi(api), client.CoreV1Api(api), namespace
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.step()
            except client.ApiException:
                pass
            time.sleep(0.3)

    def step(self) -> None:
        for run in self.custom.list_namespaced_custom_object(FAKE_GROUP, "v1", self.ns, "trainruns")["items"]:
            name = run["metadata"]["name"]
            if run.get("status", {}).get("conditions"):
                continue
            template = run["spec"]["worker"]
            try:
                pod = self.core.read_namespaced_pod(f"{name}-worker", self.ns)
            except client.ApiException as e:
                if e.status != 404:
                    raise
                self.core.create_namespaced_pod(
                    self.ns,
                    {
                        "metadata": {
                            **template["metadata"],
                            "name": f"{name}-worker",
                            "ownerReferences": [
                                {
                                    "apiVersion": f"{FAKE_GROUP}/v1",
                                    "kind": "TrainRun",
                                    "name": name,
                                    "uid": run["metadata"]["uid"],
                                }
                            ],
                        },
                        "spec": {**template["spec"], "restartPolicy": "Never"},
                    },
                )
                continue
            if pod.status.phase in ("Succeeded", "Failed"):
                type_ = "Done" if pod.status.phase == "Succeeded" else "Broken"
                self.custom.patch_namespaced_custom_object_status(
                    FAKE_GROUP,
                    "v1",
                    self.ns,
                    "trainruns",
                    name,
                    {
                        "status": {
                            "conditions": [{"type": type_, "status": "True", "reason": f"Worker{pod.status.phase}"}]
                        }
                    },
                )

    def stop(self) -> None:
        self.stopped.set()


def test_any_resource_with_typed_conditions_runs_trials_with_retries(
    api, namespace, operator, kwok_nodes, trainrun_crd
):
    controller = TrainRunController(api, namespace)
    try:
        cluster = Cluster(api, namespace)
        pod_template = experiment(
            "x",
            X,
            annotations={**LOSS, "sim.hpo.dev/exit-code-attempt-1": "137", "sim.hpo.dev/reason": "OOMKilled"},
            max_trials=1,
        )["spec"]["trialTemplate"]["template"]
        body = experiment(
            "runs", X, annotations={}, max_trials=3, parallel=3, retryPolicy={"maxRetries": 2, "backoffSeconds": 1}
        )
        body["spec"]["trialTemplate"] = {
            "resource": {
                "apiVersion": f"{FAKE_GROUP}/v1",
                "kind": "TrainRun",
                "manifest": {"metadata": {"labels": {"team": "ml"}}, "spec": {"worker": pod_template}},
                "successCondition": {"type": "Done"},
                "failureCondition": {"type": "Broken"},
            }
        }
        cluster.create(body)
        exp = cluster.wait_finished("runs", timeout=120)
    finally:
        controller.stop()
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    trials = cluster.trials()
    groups = by_config(trials, "x")
    assert len(groups) == 3 and len(trials) == 6  # each configuration OOMKilled once, then retried
    for first, retry in groups.values():
        assert (first["status"]["phase"], first["status"]["failureClass"]) == ("Failed", "OOMKilled")
        assert retry["status"]["phase"] == "Succeeded"
        assert retry["status"]["objectiveValue"] == float(retry["spec"]["parameters"][0]["value"])
    runs = cluster.custom.list_namespaced_custom_object(FAKE_GROUP, "v1", namespace, "trainruns")["items"]
    assert sorted(r["metadata"]["name"] for r in runs) == sorted(trials)
    assert all(
        r["metadata"]["labels"]["team"] == "ml" and r["metadata"]["ownerReferences"][0]["kind"] == "Trial" for r in runs
    )


def test_the_schema_refuses_a_template_of_two_kinds_or_none(kubectl, namespace, crds):
    body = as_job(experiment("two", X, annotations=LOSS, max_trials=1))
    body["spec"]["trialTemplate"]["template"] = body["spec"]["trialTemplate"]["job"]["spec"]["template"]
    out = kubectl.apply(body, namespace, check=False)
    assert out.returncode != 0 and "exactly one of template (a pod), job (a batch/v1 Job) or resource" in out.stderr
    del body["spec"]["trialTemplate"]["template"], body["spec"]["trialTemplate"]["job"]
    out = kubectl.apply(body, namespace, check=False)
    assert out.returncode != 0 and "exactly one of" in out.stderr
    bad = experiment("bad", X, annotations=LOSS, max_trials=1)
    bad["spec"]["trialTemplate"] = {
        "resource": {
            "apiVersion": "not a version",
            "kind": "x",
            "manifest": {},
            "successCondition": {"type": "Done"},
            "failureCondition": {},
        }
    }
    out = kubectl.apply(bad, namespace, check=False)
    assert out.returncode != 0
    for field in ("apiVersion", "kind", "failureCondition.type"):
        assert field in out.stderr, out.stderr


def test_kubectl_explain_describes_the_three_kinds(kubectl, crds):
    out = kubectl.run("explain", "experiment.spec.trialTemplate").stdout
    assert "exactly one of template (a pod), job (a batch/v1 Job) or resource" in " ".join(out.split())
    for field in ("template", "job", "resource", "primaryPod"):
        assert f"  {field}\t<Object>" in out, out
    out = kubectl.run("explain", "experiment.spec.trialTemplate.resource").stdout
    assert "successCondition" in out and "failureCondition" in out and "trialKinds" in out

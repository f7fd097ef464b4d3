"""Trials that run as batch/v1 Jobs (the local control plane's kube-controller-manager runs the real
job controller; KWOK plays the Jobs' pods): the recovery rules must give the same exact trial counts
as for pod trials. And the schema of the three kinds of trial template. Trials of other resources
run against their real controllers: JobSets in test_distributed_trials.py, TrainJobs in
test_trainjob_trials.py."""

from __future__ import annotations

from kubernetes import client

from tests.support.experiments import GROUP, VERSION, as_job, experiment, loss_is_x, x_space
from tests.support.kube import Cluster, wait_until
from tests.support.outcome import assert_each_oom_killed_once_then_retried

X = x_space(10)


def jobs(api, namespace: str) -> dict[str, client.V1Job]:
    return {j.metadata.name: j for j in client.BatchV1Api(api).list_namespaced_job(namespace).items}


def test_job_trials_succeed_with_metrics_and_are_owned_by_their_trials(api, namespace, operator, kwok_nodes):
    cluster = Cluster(api, namespace)
    cluster.create(as_job(experiment("jobs", X, annotations=loss_is_x(), max_trials=4, parallel=2)))
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
                annotations={
                    **loss_is_x(),
                    "sim.hpo.dev/exit-code-attempt-1": "137",
                    "sim.hpo.dev/reason": "OOMKilled",
                },
                max_trials=3,
                parallel=3,
                retryPolicy={"maxRetries": 2, "backoffSeconds": 1},
            )
        )
    )
    exp = cluster.wait_finished("oom", timeout=120)
    trials = cluster.trials()
    assert_each_oom_killed_once_then_retried(exp, trials, "x", configs=3)
    assert sorted(jobs(api, namespace)) == sorted(trials)


def test_an_indexed_job_is_one_trial_whose_metrics_come_from_index_0(api, namespace, operator, kwok_nodes):
    cluster = Cluster(api, namespace)
    cluster.create(
        as_job(
            experiment("indexed", X, annotations=loss_is_x(), max_trials=2, parallel=2),
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
                annotations=loss_is_x("60s"),
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
        as_job(experiment("gone", X, annotations={**loss_is_x(), "sim.hpo.dev/hang": "true"}, max_trials=2, parallel=2))
    )
    wait_until(lambda: len(cluster.pods()) == 2, timeout=60, what="two running Job pods")
    cluster.custom.delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "experiments", "gone", propagation_policy="Foreground"
    )
    wait_until(
        lambda: not jobs(api, namespace) and not cluster.pods(),
        timeout=90,
        what="the garbage collector to remove the Jobs and their pods",
    )


def test_the_schema_refuses_a_template_of_two_kinds_or_none(kubectl, namespace, crds):
    body = as_job(experiment("two", X, annotations=loss_is_x(), max_trials=1))
    body["spec"]["trialTemplate"]["template"] = body["spec"]["trialTemplate"]["job"]["spec"]["template"]
    out = kubectl.apply(body, namespace, check=False)
    assert out.returncode != 0 and "exactly one of template (a pod), job (a batch/v1 Job) or resource" in out.stderr
    del body["spec"]["trialTemplate"]["template"], body["spec"]["trialTemplate"]["job"]
    out = kubectl.apply(body, namespace, check=False)
    assert out.returncode != 0 and "exactly one of" in out.stderr
    bad = experiment("bad", X, annotations=loss_is_x(), max_trials=1)
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


def test_the_schema_requires_conditions_of_a_kind_it_does_not_know_only(kubectl, namespace, crds):
    body = experiment("unknown", X, annotations=loss_is_x(), max_trials=1)
    body["spec"]["trialTemplate"] = {
        "resource": {"apiVersion": "test.hpo.dev/v1", "kind": "TrainRun", "manifest": {"spec": {}}}
    }
    out = kubectl.apply(body, namespace, check=False)
    assert out.returncode != 0
    assert "successCondition and failureCondition are required for a kind other than TrainJob, JobSet" in out.stderr
    body["spec"]["trialTemplate"]["resource"].update(successCondition={"type": "Done"})
    assert kubectl.apply(body, namespace, check=False).returncode != 0  # both, not one
    body["spec"]["trialTemplate"]["resource"].update(failureCondition={"type": "Broken"})
    assert kubectl.apply(body, namespace, check=False).returncode == 0
    # The known kinds need neither (whatever their version).
    for api_version, kind in (("trainer.kubeflow.org/v1alpha1", "TrainJob"), ("jobset.x-k8s.io/v1", "JobSet")):
        known = experiment(kind.lower(), X, annotations=loss_is_x(), max_trials=1)
        known["spec"]["trialTemplate"] = {"resource": {"apiVersion": api_version, "kind": kind, "manifest": {}}}
        out = kubectl.apply(known, namespace, check=False)
        assert out.returncode == 0, out.stderr


def test_kubectl_explain_describes_the_three_kinds(kubectl, crds):
    out = kubectl.run("explain", "experiment.spec.trialTemplate").stdout
    assert "exactly one of template (a pod), job (a batch/v1 Job) or resource" in " ".join(out.split())
    for field in ("template", "job", "resource", "primaryPod"):
        assert f"  {field}\t<Object>" in out, out
    out = kubectl.run("explain", "experiment.spec.trialTemplate.resource").stdout
    assert "successCondition" in out and "failureCondition" in out and "trialKinds" in out
    # The known kinds' defaults are described where they apply.
    out = " ".join(kubectl.run("explain", "experiment.spec.trialTemplate.resource.successCondition").stdout.split())
    assert "TrainJob (trainer.kubeflow.org): Complete/Failed, primary pod index 0 of replicated job node" in out, out
    assert "JobSet (jobset.x-k8s.io): Completed/Failed, primary pod index 0 of the first replicated job" in out, out

"""Trials as Jobs or any resource (hpo_operator.workloads.kinds): the objects built, and the pod-shaped view
the planner judges them by, checked through podstate.observe (what the planner calls)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.controller.namespace import WorkloadObservations
from hpo_operator.core.podstate import observe
from hpo_operator.workloads.kinds import (
    JOB,
    POD,
    Kind,
    build_workload,
    kind_of,
    label_pod_templates,
    primary_labels,
    primary_pod,
    runtime_replicated_jobs,
    trainjob_runtime,
    trial_pod_view,
)

REPO = Path(__file__).resolve().parents[2]

CONTAINERS = [{"name": "train", "image": "trainer:1", "args": ["--lr=${params.lr}", "--run=${trial.name}"]}]
JOB_TEMPLATE = {
    "metadata": {"labels": {"team": "ml"}},
    "spec": {
        "activeDeadlineSeconds": 600,
        "template": {"metadata": {"annotations": {"lr": "${params.lr}"}}, "spec": {"containers": CONTAINERS}},
    },
}
JOBSET = {
    "apiVersion": "jobset.x-k8s.io/v1alpha2",
    "kind": "JobSet",
    "manifest": {
        "spec": {
            "replicatedJobs": [
                {"name": "leader", "template": {"spec": {"template": {"spec": {"containers": CONTAINERS}}}}},
                {
                    "name": "workers",
                    "replicas": 2,
                    "template": {
                        "spec": {
                            "template": {"metadata": {"labels": {"role": "worker"}}, "spec": {"containers": CONTAINERS}}
                        }
                    },
                },
            ]
        }
    },
    "successCondition": {"type": "Completed"},
    "failureCondition": {"type": "Failed"},
}


def spec(**trial_template) -> ExperimentSpec:
    return ExperimentSpec.model_validate(
        {
            "objective": {"type": "minimize", "metricName": "loss"},
            "parameters": [{"name": "lr", "type": "double", "min": 0.001, "max": 1}],
            "maxTrialCount": 4,
            "trialTemplate": trial_template,
        }
    )


TRIAL = {
    "apiVersion": "hpo.dev/v1alpha1",
    "kind": "Trial",
    "metadata": {
        "name": "exp-0003",
        "namespace": "ns",
        "uid": "u-3",
        "labels": {"hpo.dev/experiment": "exp", "hpo.dev/config": "c1"},
    },
    "spec": {"experimentName": "exp", "attempt": 2, "parameters": [{"name": "lr", "value": "0.01"}]},
}


def test_a_job_trial_is_named_owned_and_labelled_like_a_pod_trial():
    kind, job = build_workload(spec(job=JOB_TEMPLATE), "exp", TRIAL)
    assert kind == JOB and job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["name"] == "exp-0003" and job["metadata"]["namespace"] == "ns"
    assert job["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "hpo.dev/v1alpha1",
            "kind": "Trial",
            "name": "exp-0003",
            "uid": "u-3",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert job["metadata"]["labels"]["team"] == "ml"
    pod = job["spec"]["template"]
    for labels in (job["metadata"]["labels"], pod["metadata"]["labels"]):
        assert labels["hpo.dev/experiment"] == "exp" and labels["hpo.dev/trial"] == "exp-0003"
    assert pod["metadata"]["annotations"] == {"lr": "0.01"}
    assert pod["spec"]["containers"][0]["args"] == ["--lr=0.01", "--run=exp-0003"]
    # The operator retries by failure class; the Job retries pods only when told to.
    assert job["spec"]["backoffLimit"] == 0 and pod["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["activeDeadlineSeconds"] == 600
    mine = {**JOB_TEMPLATE, "spec": {**JOB_TEMPLATE["spec"], "backoffLimit": 3}}
    assert build_workload(spec(job=mine), "exp", TRIAL)[1]["spec"]["backoffLimit"] == 3
    assert JOB_TEMPLATE["spec"].get("backoffLimit") is None  # the experiment's spec is not changed


def test_a_resource_trial_labels_every_embedded_pod_template():
    s = spec(resource=JOBSET)
    kind, body = build_workload(s, "exp", TRIAL)
    assert kind == kind_of(s) == Kind("jobset.x-k8s.io", "v1alpha2", "JobSet", None)
    assert (body["apiVersion"], body["kind"], body["metadata"]["name"]) == (
        "jobset.x-k8s.io/v1alpha2",
        "JobSet",
        "exp-0003",
    )
    templates = [rj["template"]["spec"]["template"] for rj in body["spec"]["replicatedJobs"]]
    assert [t["metadata"]["labels"]["hpo.dev/trial"] for t in templates] == ["exp-0003", "exp-0003"]
    assert templates[1]["metadata"]["labels"]["role"] == "worker"
    assert templates[0]["spec"]["containers"][0]["args"][0] == "--lr=0.01"
    assert label_pod_templates({"a": [{"b": {"spec": {"containers": []}}}]}, {"x": "y"}) == 1


def test_job_and_resource_pod_templates_get_no_service_account_token_unless_they_set_it():
    _, job = build_workload(spec(job=JOB_TEMPLATE), "exp", TRIAL)
    assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    _, jobset = build_workload(spec(resource=JOBSET), "exp", TRIAL)
    pods = [rj["template"]["spec"]["template"]["spec"] for rj in jobset["spec"]["replicatedJobs"]]
    assert [p["automountServiceAccountToken"] for p in pods] == [False, False]
    # A template that sets it, either way, keeps its value.
    for asked in (True, False):
        mine = {**JOB_TEMPLATE, "spec": {**JOB_TEMPLATE["spec"], "template": {"spec": {"containers": CONTAINERS}}}}
        mine["spec"]["template"]["spec"]["automountServiceAccountToken"] = asked
        _, job = build_workload(spec(job=mine), "exp", TRIAL)
        assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is asked
        leader = {"name": "leader", "template": {"spec": {"template": {"spec": {"containers": CONTAINERS}}}}}
        leader["template"]["spec"]["template"]["spec"]["automountServiceAccountToken"] = asked
        own = {
            **JOBSET,
            "manifest": {"spec": {"replicatedJobs": [leader, JOBSET["manifest"]["spec"]["replicatedJobs"][1]]}},
        }
        _, jobset = build_workload(spec(resource=own), "exp", TRIAL)
        pods = [rj["template"]["spec"]["template"]["spec"] for rj in jobset["spec"]["replicatedJobs"]]
        assert [p["automountServiceAccountToken"] for p in pods] == [asked, False]
    assert "automountServiceAccountToken" not in str(JOBSET) + str(JOB_TEMPLATE)  # the experiment's spec is not changed


def test_the_kind_is_the_one_the_template_gives():
    assert kind_of(spec(template={"spec": {"containers": CONTAINERS}})) == POD
    assert kind_of(spec(job=JOB_TEMPLATE)) == JOB


def _kinds_rule() -> Callable[[dict], bool]:
    """The committed CRD's rule that a trialTemplate gives exactly one kind, as a predicate on a
    trialTemplate. The API server evaluates that CEL rule (tests/integration/test_trial_kinds.py
    applies such Experiments to a real one); here it is read in the one shape it has,
    `[has(self.a), has(self.b), ...].filter(x, x).size() == n`, and a rule of any other shape fails
    this test rather than being half understood."""
    crd = yaml.safe_load((REPO / "crds" / "experiments.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    trial_template = schema["properties"]["spec"]["properties"]["trialTemplate"]
    rules = [v["rule"] for v in trial_template["x-kubernetes-validations"] if "exactly one of" in v["message"]]
    assert len(rules) == 1, trial_template["x-kubernetes-validations"]
    rule = " ".join(rules[0].split())
    shape = re.fullmatch(r"\[(?P<terms>[^\]]*)\]\.filter\((?P<x>\w+), (?P=x)\)\.size\(\) == (?P<n>\d+)", rule)
    assert shape, f"a rule of another shape: {rule}"
    fields = [re.fullmatch(r"has\(self\.(\w+)\)", term) for term in shape["terms"].split(", ")]
    assert all(fields), f"a rule of another shape: {rule}"
    present = [f[1] for f in fields if f]
    return lambda body: sum(field in body for field in present) == int(shape["n"])


def test_the_schema_takes_exactly_one_kind():
    allowed = _kinds_rule()
    kinds = {"template": {"spec": {"containers": CONTAINERS}}, "job": JOB_TEMPLATE, "resource": JOBSET}
    other = {"primaryContainerName": "train", "podRetention": "Keep"}  # not kinds: never counted
    for n in range(len(kinds) + 1):
        for chosen in itertools.combinations(kinds, n):
            body = {**other, **{k: kinds[k] for k in chosen}}
            assert allowed(body) == (n == 1), f"{sorted(chosen)} {'refused' if n == 1 else 'taken'}"


def pod(
    name: str,
    phase: str,
    *,
    created: str = "2026-01-01T00:00:00Z",
    index: str | None = None,
    terminated: dict | None = None,
    reason: str | None = None,
    labels: dict | None = None,
) -> dict:
    lab = {"hpo.dev/trial": "exp-0003", **(labels or {})}
    if index is not None:
        lab["batch.kubernetes.io/job-completion-index"] = index
    status = {"phase": phase, "startTime": created}
    if terminated is not None:
        status["containerStatuses"] = [{"name": "train", "state": {"terminated": terminated}}]
    elif phase == "Running":
        status["containerStatuses"] = [{"name": "train", "state": {"running": {"startedAt": created}}}]
    if reason:
        status["reason"] = reason
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "labels": lab,
            "creationTimestamp": created,
        },
        "spec": {"containers": [{"name": "train"}]},
        "status": status,
    }


def job(*conditions: tuple[str, str]) -> dict:
    return {
        "metadata": {
            "name": "exp-0003",
            "namespace": "ns",
            "uid": "job-uid",
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "status": {
            "conditions": [{"type": t, "status": "True", "reason": r, "message": f"{t}: {r}"} for t, r in conditions]
        },
    }


def seen(workload: dict | None, pods: list[dict], kind: Kind = JOB, **kw):
    view = trial_pod_view(kind, "exp-0003", workload, pods, **kw)
    return view, (observe(view) if view is not None else None)


def test_a_complete_job_succeeds_with_its_primary_pods_exit_and_message():
    done = pod(
        "exp-0003-abc", "Succeeded", terminated={"exitCode": 0, "reason": "Completed", "message": '{"loss": 0.3}'}
    )
    view, obs = seen(job(("Complete", "")), [done])
    assert (obs.phase, obs.failure_class, obs.termination_message) == ("Succeeded", None, '{"loss": 0.3}')
    assert view["metadata"]["name"] == "exp-0003-abc"  # its log is read by the pod's own name


@pytest.mark.parametrize(
    "pods, reason, expected",
    [
        (
            [pod("p1", "Failed", terminated={"exitCode": 137, "reason": "OOMKilled"})],
            "BackoffLimitExceeded",
            "OOMKilled",
        ),
        ([pod("p1", "Failed", reason="Evicted")], "BackoffLimitExceeded", "Infrastructure"),
        ([pod("p1", "Failed", terminated={"exitCode": 2, "reason": "Error"})], "BackoffLimitExceeded", "Error"),
        ([pod("p1", "Running")], "DeadlineExceeded", "Timeout"),
        ([], "DeadlineExceeded", "Timeout"),
        ([], "BackoffLimitExceeded", "Error"),
    ],
)
def test_a_failed_jobs_class_comes_from_its_pods(pods, reason, expected):
    _, obs = seen(job(("Failed", reason)), pods)
    assert (obs.phase, obs.failure_class) == ("Failed", expected)


def test_the_newest_failed_pod_explains_a_job_that_retried_its_pods():
    pods = [
        pod("p1", "Failed", created="2026-01-01T00:00:00Z", terminated={"exitCode": 2, "reason": "Error"}),
        pod("p2", "Failed", created="2026-01-01T00:01:00Z", terminated={"exitCode": 137, "reason": "OOMKilled"}),
    ]
    assert seen(job(("Failed", "BackoffLimitExceeded")), pods)[1].failure_class == "OOMKilled"


def test_an_unfinished_job_is_its_primary_pod_or_pending():
    _, obs = seen(job(), [pod("p1", "Running")])
    assert obs.phase == "Running"
    view, obs = seen(job(), [])
    assert obs.phase == "Pending" and view["metadata"]["name"] == "exp-0003"
    # A pod that ended while the Job goes on (it retries, or waits for other indexes): still running.
    _, obs = seen(job(), [pod("p1", "Failed", terminated={"exitCode": 1, "reason": "Error"})])
    assert obs.phase == "Running"
    assert seen(None, [pod("p1", "Running")]) == (None, None)


def test_an_observation_is_made_again_only_for_a_trial_whose_job_or_pods_changed():
    s = spec(job=JOB_TEMPLATE)
    jobs = {"exp-0003": job(), "exp-0004": {**job(), "metadata": {**job()["metadata"], "name": "exp-0004"}}}
    running = pod("p3", "Running")
    waiting = pod("p4", "Pending", labels={"hpo.dev/trial": "exp-0004"})
    cache = WorkloadObservations()
    first = cache.observe(JOB, s, jobs, [running, waiting])
    assert observe(first["exp-0003"]).phase == "Running" and observe(first["exp-0004"]).phase == "Pending"

    # The informers store a new dict for each change: exp-0004's pod started, exp-0003 is as it was.
    started = pod("p4", "Running", labels={"hpo.dev/trial": "exp-0004"})
    second = cache.observe(JOB, s, dict(jobs), [running, started])
    assert second["exp-0003"] is first["exp-0003"]
    assert observe(second["exp-0004"]).phase == "Running"

    # exp-0003's Job completed.
    jobs["exp-0003"] = job(("Complete", ""))
    third = cache.observe(JOB, s, jobs, [running, started])
    assert observe(third["exp-0003"]).phase == "Succeeded" and third["exp-0004"] is second["exp-0004"]

    # Another primary pod in the template: every trial is observed again.
    edited = spec(job=JOB_TEMPLATE, primaryPod={"labels": {"role": "leader"}})
    fourth = cache.observe(JOB, edited, jobs, [running, started])
    assert fourth["exp-0003"] is not third["exp-0003"] and fourth["exp-0004"] is not third["exp-0004"]

    # A trial whose Job is gone is forgotten.
    del jobs["exp-0004"]
    assert list(cache.observe(JOB, edited, jobs, [running])) == ["exp-0003"] and list(cache.kept) == ["exp-0003"]


def test_the_primary_pod_is_index_0_of_an_indexed_job_or_the_newest_or_the_labelled_one():
    i0 = pod("a-0", "Running", index="0", created="2026-01-01T00:00:00Z")
    i1 = pod("a-1", "Running", index="1", created="2026-01-01T00:00:05Z")
    assert primary_pod([i1, i0], None) is i0
    old, new = (
        pod("b-old", "Failed", created="2026-01-01T00:00:00Z"),
        pod("b-new", "Running", created="2026-01-01T00:00:09Z"),
    )
    assert primary_pod([new, old], None) is new
    leader = pod("c-l", "Running", labels={"role": "leader"}, created="2026-01-01T00:00:00Z")
    assert primary_pod([i1, leader], {"role": "leader"}) is leader
    assert primary_pod([i1], {"role": "leader"}) is None


def test_a_resource_follows_its_own_success_and_failure_conditions():
    s = spec(resource=JOBSET)
    kind, resource = kind_of(s), s.trial_template.resource
    running = {
        "metadata": {"name": "exp-0003", "namespace": "ns", "uid": "r"},
        "status": {"conditions": [{"type": "Completed", "status": "False"}]},
    }
    assert seen(running, [pod("w", "Running")], kind, resource=resource)[1].phase == "Running"
    completed = {**running, "status": {"conditions": [{"type": "Completed", "status": "True"}]}}
    assert seen(completed, [], kind, resource=resource)[1].phase == "Succeeded"
    failed = {**running, "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "FailedJobs"}]}}
    oom = pod("w", "Failed", terminated={"exitCode": 137, "reason": "OOMKilled"})
    assert seen(failed, [oom], kind, resource=resource)[1].failure_class == "OOMKilled"
    assert seen(failed, [], kind, resource=resource)[1].failure_class == "Error"


TRAINJOB = {
    "apiVersion": "trainer.kubeflow.org/v1alpha1",
    "kind": "TrainJob",
    "manifest": {
        "spec": {
            "runtimeRef": {"name": "torch"},
            "trainer": {
                "numNodes": 2,
                "args": ["--lr=${params.lr}", "--run=${trial.name}"],
                "env": [{"name": "LR", "value": "${params.lr}"}],
            },
            "runtimePatches": [{"manager": "example.org/mine", "trainingRuntimeSpec": {}}],
        }
    },
}


def test_the_known_kinds_default_their_conditions_and_primary_pod():
    trainjob = spec(resource=TRAINJOB)
    resource = trainjob.trial_template.resource
    assert (resource.success().type, resource.failure().type) == ("Complete", "Failed")
    assert resource.success().status == "True"
    assert primary_labels(trainjob) == {
        "jobset.sigs.k8s.io/replicatedjob-name": "node",
        "jobset.sigs.k8s.io/job-index": "0",
    }
    # A JobSet's primary pod is of its first replicated job; its conditions are its own.
    jobset = spec(resource={k: v for k, v in JOBSET.items() if not k.endswith("Condition")})
    assert (jobset.trial_template.resource.success().type, jobset.trial_template.resource.failure().type) == (
        "Completed",
        "Failed",
    )
    assert primary_labels(jobset)["jobset.sigs.k8s.io/replicatedjob-name"] == "leader"
    # Given ones win.
    mine = spec(resource={**TRAINJOB, "successCondition": {"type": "Done"}}, primaryPod={"labels": {"r": "x"}})
    assert (mine.trial_template.resource.success().type, primary_labels(mine)) == ("Done", {"r": "x"})
    assert primary_labels(spec(template={"spec": {"containers": CONTAINERS}})) is None


def test_another_kind_without_conditions_is_refused():
    with pytest.raises(ValueError, match="required for TrainRun"):
        spec(resource={"apiVersion": "test.hpo.dev/v1", "kind": "TrainRun", "manifest": {}})


def test_a_trainjob_trial_is_substituted_and_labels_its_runtimes_every_replicated_job():
    s = spec(resource=TRAINJOB)
    runtime = {"spec": {"template": {"spec": {"replicatedJobs": [{"name": "dataset-initializer"}, {"name": "node"}]}}}}
    jobs = runtime_replicated_jobs(runtime)
    assert jobs == ["dataset-initializer", "node"]
    _, body = build_workload(s, "exp", TRIAL, jobs)
    trainer = body["spec"]["trainer"]
    assert trainer["args"] == ["--lr=0.01", "--run=exp-0003"] and trainer["env"] == [{"name": "LR", "value": "0.01"}]
    mine, ours = body["spec"]["runtimePatches"]
    assert mine["manager"] == "example.org/mine"  # the user's own patches are kept
    patched = ours["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert [j["name"] for j in patched] == jobs
    for j in patched:
        labels = j["template"]["spec"]["template"]["metadata"]["labels"]
        assert labels["hpo.dev/trial"] == "exp-0003" and labels["hpo.dev/experiment"] == "exp"
    assert body["metadata"]["name"] == "exp-0003" and body["metadata"]["labels"]["hpo.dev/trial"] == "exp-0003"
    # Its pods are its runtime's: the operator's patch carries labels only, nothing of their spec.
    assert "automountServiceAccountToken" not in str(body)


def test_a_trainjob_names_its_runtime():
    kind, namespace, name = trainjob_runtime(spec(resource=TRAINJOB), "ns")
    assert (kind.plural, namespace, name) == ("clustertrainingruntimes", None, "torch")
    local = {**TRAINJOB, "manifest": {"spec": {"runtimeRef": {"name": "t", "kind": "TrainingRuntime"}}}}
    kind, namespace, name = trainjob_runtime(spec(resource=local), "ns")
    assert (kind.plural, namespace, name) == ("trainingruntimes", "ns", "t")
    assert trainjob_runtime(spec(resource=JOBSET), "ns") is None


def test_the_primary_pod_among_labelled_ones_is_completion_index_0():
    node = {"jobset.sigs.k8s.io/replicatedjob-name": "node", "jobset.sigs.k8s.io/job-index": "0"}
    n0 = pod("n-0", "Running", index="0", labels=node, created="2026-01-01T00:00:00Z")
    n1 = pod("n-1", "Running", index="1", labels=node, created="2026-01-01T00:00:05Z")
    other = pod("i-0", "Running", index="0", labels={"jobset.sigs.k8s.io/replicatedjob-name": "init"})
    assert primary_pod([n1, other, n0], node) is n0


def test_a_suspended_job_or_resource_is_waiting_for_admission_whatever_its_pods_do():
    suspended = {**job(), "spec": {"suspend": True}}
    view, obs = seen(suspended, [])
    assert (obs.phase, obs.queued, obs.failure_class) == ("Pending", True, None)
    assert "Job is suspended" in obs.message
    # Preempted: its pods are still terminating, but the Job is held again.
    _, obs = seen(suspended, [pod("p1", "Running")])
    assert obs.queued
    # Admitted (Kueue sets suspend false): the pod speaks again.
    _, obs = seen({**job(), "spec": {"suspend": False}}, [pod("p1", "Running")])
    assert (obs.phase, obs.queued) == ("Running", False)
    # A finished workload is finished, suspended or not (a JobSet may be suspended after it ends).
    _, obs = seen({**job(("Complete", "")), "spec": {"suspend": True}}, [])
    assert obs.phase == "Succeeded"
    resource = spec(resource=JOBSET).trial_template.resource
    jobset_kind = kind_of(spec(resource=JOBSET))
    _, obs = seen({**job(), "spec": {"suspend": True}}, [], kind=jobset_kind, resource=resource)
    assert obs.queued and "JobSet is suspended" in obs.message


def test_a_trial_names_its_queue_on_what_kueue_admits_the_pod_or_the_workload():
    pod_trial = spec(template={"spec": {"containers": CONTAINERS}}, queueName="team-a")
    _, body = build_workload(pod_trial, "exp", TRIAL)
    assert body["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    _, body = build_workload(spec(job=JOB_TEMPLATE, queueName="team-a"), "exp", TRIAL)
    assert body["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    # The Job's pods belong to the Job Kueue admits: they do not name the queue themselves.
    assert "kueue.x-k8s.io/queue-name" not in body["spec"]["template"]["metadata"]["labels"]
    _, body = build_workload(spec(resource=JOBSET, queueName="team-a"), "exp", TRIAL)
    assert body["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    _, body = build_workload(spec(job=JOB_TEMPLATE), "exp", TRIAL)
    assert "kueue.x-k8s.io/queue-name" not in body["metadata"]["labels"]
    with pytest.raises(ValueError, match="queue_name|queueName"):
        spec(job=JOB_TEMPLATE, queueName="Not A Name")

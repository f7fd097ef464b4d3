"""Trials as Jobs or any resource (hpo_operator.workloads.kinds): the objects built. What they say
once they run is test_workload_observe.py's."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from hpo_operator.workloads.kinds import (
    JOB,
    POD,
    Kind,
    build_workload,
    kind_of,
    label_pod_templates,
    primary_labels,
    runtime_replicated_jobs,
    trainjob_runtime,
)
from tests.support.rounds import workload_spec as spec

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

"""The real distributed-training controllers on the local cluster (hack/training.sh): a JobSet runs
to completion, Kueue holds a queued Job until its ClusterQueue has quota, and a Kubeflow TrainJob
of a torch-style runtime completes. Their pods run on KWOK nodes (hack/kwok/stages.yaml: they
succeed after their sim.hpo.dev/duration). These prove the controllers and their webhooks work
here before trials depend on them; skipped, with the reason, when they are not running."""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.support import training
from tests.support.kube import wait_until
from tests.support.training import JOBSET, KUEUE, QUEUE_LABEL, TRAINER, condition, local_queue, pod_spec

pytestmark = pytest.mark.usefixtures("training_controllers", "kwok_nodes")


def test_a_jobset_runs_to_completion_on_kwok_nodes(api, namespace):
    custom = client.CustomObjectsApi(api)
    replicated = [
        {"name": "leader", "replicas": 1, "template": {"spec": {"backoffLimit": 0, "template": pod_spec()}}},
        {"name": "workers", "replicas": 2, "template": {"spec": {"backoffLimit": 0, "template": pod_spec("2s")}}},
    ]
    body = {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"name": "smoke"},
        "spec": {"replicatedJobs": replicated},
    }
    created = custom.create_namespaced_custom_object(*JOBSET[:2], namespace, JOBSET[2], body)
    # JobSet's defaulting webhook ran: the success policy it fills in is what its controller reads.
    assert created["spec"]["successPolicy"]["operator"] == "All", created["spec"]

    done = wait_until(
        lambda: (
            condition(
                js := custom.get_namespaced_custom_object(*JOBSET[:2], namespace, JOBSET[2], "smoke"), "Completed"
            )
            == "True"
            and js
        ),
        timeout=90,
        what="the JobSet to complete",
    )
    assert condition(done, "Failed") != "True"
    statuses = {s["name"]: s for s in done["status"]["replicatedJobsStatus"]}
    assert statuses["leader"]["succeeded"] == 1 and statuses["workers"]["succeeded"] == 2, statuses
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace).items
    assert sorted(p.metadata.labels["jobset.sigs.k8s.io/replicatedjob-name"] for p in pods) == [
        "leader",
        "workers",
        "workers",
    ]
    assert all(p.status.phase == "Succeeded" for p in pods)


@pytest.fixture
def cluster_queue(api, namespace):
    """A LocalQueue in the test's namespace whose ClusterQueue has 1 CPU of quota."""
    with local_queue(api, namespace, cpu="1") as name:
        yield name


def test_kueue_holds_a_queued_job_suspended_until_its_cluster_queue_has_quota(api, namespace, cluster_queue):
    batch = client.BatchV1Api(api)
    custom = client.CustomObjectsApi(api)

    def job(name: str, duration: str) -> dict:
        return {
            "metadata": {"name": name, "labels": {QUEUE_LABEL: cluster_queue}},
            "spec": {"backoffLimit": 0, "template": pod_spec(duration, cpu="1")},
        }

    # Each needs the whole quota (1 CPU): the second waits for the first to finish.
    first = batch.create_namespaced_job(namespace, job("first", "4s"))
    second = batch.create_namespaced_job(namespace, job("second", "1s"))
    # Kueue's webhook suspended them at creation, before any pod could start.
    assert first.spec.suspend is True and second.spec.suspend is True
    unqueued = batch.create_namespaced_job(
        namespace, {"metadata": {"name": "unqueued"}, "spec": {"template": pod_spec()}}
    )
    assert not unqueued.spec.suspend  # a Job naming no queue is not Kueue's

    def admitted() -> dict[str, bool]:
        workloads = custom.list_namespaced_custom_object(*KUEUE, namespace, "workloads")["items"]
        return {w["metadata"]["ownerReferences"][0]["name"]: condition(w, "Admitted") == "True" for w in workloads}

    wait_until(lambda: admitted().get("first"), timeout=60, what="Kueue to admit the first Job")
    wait_until(
        lambda: batch.read_namespaced_job("first", namespace).spec.suspend is False,
        timeout=30,
        what="the first Job to be unsuspended",
    )
    # While the first runs, the second stays queued and suspended, and has no pod.
    assert admitted().get("second") is False
    assert batch.read_namespaced_job("second", namespace).spec.suspend is True
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector="job-name=second").items
    assert pods == []

    def complete(name: str) -> bool:
        conditions = batch.read_namespaced_job(name, namespace).status.conditions or []
        return any(c.type == "Complete" and c.status == "True" for c in conditions)

    wait_until(lambda: complete("first"), timeout=60, what="the first Job to complete")
    wait_until(
        lambda: complete("second"), timeout=60, what="the second Job, admitted once the first released its quota"
    )
    assert batch.read_namespaced_job("second", namespace).spec.suspend is False


@pytest.fixture
def torch_runtime(api):
    """A ClusterTrainingRuntime for a plain torch-style job, its pods on KWOK nodes."""
    with training.torch_runtime(api) as name:
        yield name


def test_a_trainjob_of_a_torch_runtime_completes_on_kwok_nodes(api, namespace, torch_runtime):
    custom = client.CustomObjectsApi(api)
    body = {
        "apiVersion": "/".join(TRAINER),
        "kind": "TrainJob",
        "metadata": {"name": "smoke"},
        "spec": {
            "runtimeRef": {"name": torch_runtime, "kind": "ClusterTrainingRuntime"},
            "trainer": {"numNodes": 2, "args": ["--lr=0.01"]},
        },
    }
    custom.create_namespaced_custom_object(*TRAINER, namespace, "trainjobs", body)
    done = wait_until(
        lambda: (
            condition(tj := custom.get_namespaced_custom_object(*TRAINER, namespace, "trainjobs", "smoke"), "Complete")
            == "True"
            and tj
        ),
        timeout=120,
        what="the TrainJob to complete",
    )
    assert condition(done, "Failed") != "True"
    # Trainer ran it as a JobSet of the runtime's `node` job, one pod per node, and its torch
    # plugin configured each for torchrun.
    jobset = custom.get_namespaced_custom_object(*JOBSET[:2], namespace, JOBSET[2], "smoke")
    assert condition(jobset, "Completed") == "True"
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace).items
    assert len(pods) == 2 and all(p.status.phase == "Succeeded" for p in pods)
    assert {p.metadata.labels["jobset.sigs.k8s.io/replicatedjob-name"] for p in pods} == {"node"}
    assert sorted(p.metadata.labels["batch.kubernetes.io/job-completion-index"] for p in pods) == ["0", "1"]
    for p in pods:
        env = {e.name: e.value for e in p.spec.containers[0].env or []}
        assert env.get("PET_NNODES") == "2", env
        assert p.spec.containers[0].args == ["--lr=0.01"]

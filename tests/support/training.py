"""Helpers for tests against the distributed-training controllers (hack/training.sh): their API
coordinates, KWOK pod templates, conditions, a torch-style ClusterTrainingRuntime, and a Kueue
ClusterQueue with a CPU quota."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from kubernetes import client

JOBSET = ("jobset.x-k8s.io", "v1alpha2", "jobsets")
KUEUE = ("kueue.x-k8s.io", "v1beta2")
TRAINER = ("trainer.kubeflow.org", "v1alpha1")
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"


def pod_spec(duration: str = "1s", cpu: str | None = None, annotations: dict | None = None) -> dict:
    """A pod template for a KWOK node: it succeeds after `duration` (hack/kwok/stages.yaml)."""
    container: dict = {"name": "train", "image": "example.org/train:1.0"}
    if cpu:
        container["resources"] = {"requests": {"cpu": cpu}}
    return {
        "metadata": {"annotations": {"sim.hpo.dev/duration": duration, **(annotations or {})}},
        "spec": {"restartPolicy": "Never", "nodeSelector": {"type": "kwok"}, "containers": [container]},
    }


def condition(obj: dict, kind: str) -> str | None:
    """The status ("True", "False", ...) of the object's condition of this type, or None."""
    for c in obj.get("status", {}).get("conditions") or []:
        if c["type"] == kind:
            return c["status"]
    return None


@contextlib.contextmanager
def local_queue(api: client.ApiClient, namespace: str, cpu: str, preempt_lower_priority: bool = False) -> Iterator[str]:
    """A ResourceFlavor and a ClusterQueue with `cpu` of quota for the namespace alone (set_quota
    changes it), and a LocalQueue there pointing at it; yields the LocalQueue's name. The
    cluster-scoped ones are deleted on exit (the LocalQueue goes with the namespace)."""
    custom = client.CustomObjectsApi(api)
    name = f"hpo-test-{uuid.uuid4().hex[:6]}"
    api_version = "/".join(KUEUE)
    custom.create_cluster_custom_object(
        *KUEUE, "resourceflavors", {"apiVersion": api_version, "kind": "ResourceFlavor", "metadata": {"name": name}}
    )
    custom.create_cluster_custom_object(
        *KUEUE,
        "clusterqueues",
        {
            "apiVersion": api_version,
            "kind": "ClusterQueue",
            "metadata": {"name": name},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                **({"preemption": {"withinClusterQueue": "LowerPriority"}} if preempt_lower_priority else {}),
                "resourceGroups": [
                    {
                        "coveredResources": ["cpu"],
                        "flavors": [{"name": name, "resources": [{"name": "cpu", "nominalQuota": cpu}]}],
                    }
                ],
            },
        },
    )
    custom.create_namespaced_custom_object(
        *KUEUE,
        namespace,
        "localqueues",
        {
            "apiVersion": api_version,
            "kind": "LocalQueue",
            "metadata": {"name": "queue"},
            "spec": {"clusterQueue": name},
        },
    )
    try:
        yield "queue"
    finally:
        for plural in ("clusterqueues", "resourceflavors"):
            with contextlib.suppress(client.ApiException):
                custom.delete_cluster_custom_object(*KUEUE, plural, name)


def torch_runtime_body(name: str, node: dict) -> dict:
    """A ClusterTrainingRuntime for a plain torch-style job: one replicated job `node` of pod
    template `node` (its container must be named node: Trainer's torch plugin configures that one),
    whose Job does not retry its pods."""
    return {
        "apiVersion": "/".join(TRAINER),
        "kind": "ClusterTrainingRuntime",
        "metadata": {"name": name, "labels": {"trainer.kubeflow.org/framework": "torch"}},
        "spec": {
            "mlPolicy": {"numNodes": 1, "torch": {}},
            "template": {
                "spec": {
                    "replicatedJobs": [
                        {
                            "name": "node",
                            "template": {
                                "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                                # One failed pod fails the node's Job at once: the trial's retries
                                # are the operator's, by failure class.
                                "spec": {"backoffLimit": 0, "template": node},
                            },
                        }
                    ]
                }
            },
        },
    }


@contextlib.contextmanager
def torch_runtime(api: client.ApiClient, node: dict | None = None) -> Iterator[str]:
    """A torch-style ClusterTrainingRuntime (torch_runtime_body) whose pods run on KWOK nodes (node:
    a pod_spec, by default one that succeeds after 1s); yields its name, deletes it on exit."""
    custom = client.CustomObjectsApi(api)
    name = f"hpo-test-torch-{uuid.uuid4().hex[:6]}"
    node = node or pod_spec()
    node["spec"]["containers"][0]["name"] = "node"
    custom.create_cluster_custom_object(*TRAINER, "clustertrainingruntimes", torch_runtime_body(name, node))
    try:
        yield name
    finally:
        with contextlib.suppress(client.ApiException):
            custom.delete_cluster_custom_object(*TRAINER, "clustertrainingruntimes", name)


def set_quota(api: client.ApiClient, namespace: str, queue: str, cpu: str) -> None:
    """Gives the ClusterQueue behind the namespace's LocalQueue `cpu` of quota."""
    custom = client.CustomObjectsApi(api)
    name = custom.get_namespaced_custom_object(*KUEUE, namespace, "localqueues", queue)["spec"]["clusterQueue"]
    groups = [
        {"coveredResources": ["cpu"], "flavors": [{"name": name, "resources": [{"name": "cpu", "nominalQuota": cpu}]}]}
    ]
    custom.patch_cluster_custom_object(*KUEUE, "clusterqueues", name, {"spec": {"resourceGroups": groups}})


@contextlib.contextmanager
def workload_priority_class(api: client.ApiClient, value: int) -> Iterator[str]:
    """A Kueue WorkloadPriorityClass of this value (a workload names it with PRIORITY_LABEL);
    yields its name and deletes it on exit."""
    custom = client.CustomObjectsApi(api)
    name = f"hpo-test-{uuid.uuid4().hex[:6]}"
    body = {"apiVersion": "/".join(KUEUE), "kind": "WorkloadPriorityClass", "metadata": {"name": name}, "value": value}
    custom.create_cluster_custom_object(*KUEUE, "workloadpriorityclasses", body)
    try:
        yield name
    finally:
        with contextlib.suppress(client.ApiException):
            custom.delete_cluster_custom_object(*KUEUE, "workloadpriorityclasses", name)

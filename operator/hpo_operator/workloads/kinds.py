"""What a trial runs — a pod, a batch/v1 Job, or any resource with success and failure conditions —
built from the trial template (pure functions). How a Job or resource trial is seen, from its
conditions and its primary pod (primary_labels names it), is observe.py's.

Every kind is named after its Trial (a SIGKILLed operator finds what it created), owned by it (the
garbage collector removes it with the Trial), and its pods carry the trial's labels: the builder
adds them to every pod template embedded in the manifest, so the operator's pod informer, which
selects pods by label on the API server, sees them. Those pod templates also get
automountServiceAccountToken: false unless they set it (pod.no_token_unless_asked). A TrainJob
embeds none: its pods are its training runtime's, whose templates decide (the platform's, for a
ClusterTrainingRuntime).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from hpo_operator.api.external import L_JOBSET_JOB_INDEX, L_REPLICATED_JOB, TRAINJOB
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.api.vocabulary import API_VERSION, L_EXPERIMENT, L_TRIAL

from .pod import build_pod, mount_checkpoint, no_token_unless_asked, queue_label, substitute, trial_values

# The runtimePatches entry through which a TrainJob's pods get the trial's labels (a TrainJob has no
# pod template of its own: its runtime has them).
RUNTIME_PATCH_MANAGER = "hpo.dev/trial-labels"


@dataclass(frozen=True)
class Kind:
    """The API resource a trial runs as."""

    group: str
    version: str
    kind: str
    plural: str | None  # None: found by discovery (any resource)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def is_pod(self) -> bool:
        return self.group == "" and self.kind == "Pod"


POD = Kind("", "v1", "Pod", "pods")
JOB = Kind("batch", "v1", "Job", "jobs")


def kind_of(spec: ExperimentSpec) -> Kind:
    tt = spec.trial_template
    if tt.job is not None:
        return JOB
    if tt.resource is not None:
        group, _, version = tt.resource.api_version.rpartition("/")
        return Kind(group, version, tt.resource.kind, None)
    return POD


# --- building -----------------------------------------------------------------------------------


def _owner(trial: dict[str, Any]) -> list[dict[str, Any]]:
    meta = trial["metadata"]
    return [
        {
            "apiVersion": trial.get("apiVersion", API_VERSION),
            "kind": "Trial",
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def _labels(trial: dict[str, Any], experiment: str) -> dict[str, str]:
    meta = trial["metadata"]
    return {
        **(meta.get("labels") or {}),
        L_EXPERIMENT: experiment,
        L_TRIAL: meta["name"],
        "app.kubernetes.io/name": "hpo-trial",
        "app.kubernetes.io/instance": experiment,
        "app.kubernetes.io/component": "trial",
    }


def pod_templates(node: Any) -> list[dict[str, Any]]:
    """Every pod template (an object whose spec has containers) inside node."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        spec = node.get("spec")
        if isinstance(spec, dict) and isinstance(spec.get("containers"), list):
            found.append(node)
        for value in node.values():
            found += pod_templates(value)
    elif isinstance(node, list):
        for item in node:
            found += pod_templates(item)
    return found


def label_pod_templates(node: Any, labels: dict[str, str]) -> int:
    """Adds labels to every pod template inside node; returns how many it found."""
    templates = pod_templates(node)
    for template in templates:
        meta = template.setdefault("metadata", {})
        meta["labels"] = {**(meta.get("labels") or {}), **labels}
    return len(templates)


def harden_pod_templates(node: Any) -> None:
    """What the operator sets by default in every pod template inside node (see build_pod)."""
    for template in pod_templates(node):
        no_token_unless_asked(template["spec"])


def trainjob_runtime(spec: ExperimentSpec, namespace: str) -> tuple[Kind, str | None, str] | None:
    """The training runtime a TrainJob trial names: its kind, its namespace (None: cluster-scoped)
    and name; None for any other trial."""
    resource = spec.trial_template.resource
    if resource is None or resource.known() is not TRAINJOB:
        return None
    ref = (resource.manifest.get("spec") or {}).get("runtimeRef") or {}
    group = ref.get("apiGroup") or TRAINJOB.group
    version = resource.api_version.rpartition("/")[2]
    if ref.get("kind") == "TrainingRuntime":
        return Kind(group, version, "TrainingRuntime", "trainingruntimes"), namespace, ref.get("name") or ""
    return Kind(group, version, "ClusterTrainingRuntime", "clustertrainingruntimes"), None, ref.get("name") or ""


def runtime_replicated_jobs(runtime: dict[str, Any]) -> list[str]:
    """The names of a training runtime's replicated jobs."""
    jobs = (((runtime.get("spec") or {}).get("template") or {}).get("spec") or {}).get("replicatedJobs") or []
    return [j["name"] for j in jobs if j.get("name")]


def label_trainjob_pods(manifest: dict[str, Any], replicated_jobs: list[str], labels: dict[str, str]) -> None:
    """Adds, to a TrainJob's manifest, the runtimePatches entry that puts labels on the pods of each
    of its runtime's replicated jobs (Trainer refuses an entry for a job the runtime lacks)."""
    pod_labels = {"spec": {"template": {"metadata": {"labels": labels}}}}
    patch = {
        "manager": RUNTIME_PATCH_MANAGER,
        "trainingRuntimeSpec": {
            "template": {
                "metadata": {"labels": labels},
                "spec": {"replicatedJobs": [{"name": name, "template": pod_labels} for name in replicated_jobs]},
            }
        },
    }
    spec = manifest.setdefault("spec", {})
    others = [p for p in spec.get("runtimePatches") or [] if p.get("manager") != RUNTIME_PATCH_MANAGER]
    spec["runtimePatches"] = [*others, patch]


def primary_labels(spec: ExperimentSpec) -> dict[str, str] | None:
    """The labels of a trial's primary pod: trialTemplate.primaryPod's, else a known kind's default
    (job 0 of its replicated job; observe.primary_pod then prefers completion index 0), else None."""
    tt = spec.trial_template
    if tt.primary_pod is not None:
        return tt.primary_pod.labels
    resource = tt.resource
    known = resource.known() if resource is not None else None
    if resource is None or known is None:
        return None
    job = known.replicated_job
    if job is None:  # the manifest's first replicated job
        jobs = (resource.manifest.get("spec") or {}).get("replicatedJobs") or [{}]
        job = jobs[0].get("name")
    return {L_REPLICATED_JOB: job, L_JOBSET_JOB_INDEX: "0"} if job else None


def build_workload(
    spec: ExperimentSpec, experiment: str, trial: dict[str, Any], replicated_jobs: list[str] | None = None
) -> tuple[Kind, dict[str, Any]]:
    """The object a trial runs, ready to create. replicated_jobs: a TrainJob's runtime's (see
    trainjob_runtime), whose pods get the trial's labels."""
    tt = spec.trial_template
    kind = kind_of(spec)
    if kind.is_pod:
        return kind, build_pod(spec, experiment, trial)
    values = trial_values(experiment, trial, spec)
    labels = _labels(trial, experiment)
    meta = trial["metadata"]
    if tt.job is not None:
        job = substitute(copy.deepcopy(tt.job), values)
        job_meta = job.get("metadata") or {}
        job_spec = job["spec"]
        # The trial's retries are the operator's (by failure class, within the budget): a Job
        # retries a failed pod itself only when its manifest asks for it.
        job_spec.setdefault("backoffLimit", 0)
        pod_template = job_spec["template"]
        pod_template.setdefault("spec", {}).setdefault("restartPolicy", "Never")
        # Every pod of the Job mounts the configuration's volume (an Indexed Job's index 0 is
        # usually the one that writes); ReadWriteOnce keeps them on one node.
        mount_checkpoint(spec, experiment, trial, pod_template["spec"])
        label_pod_templates(job_spec, labels)
        harden_pod_templates(job_spec)
        body = {"apiVersion": "batch/v1", "kind": "Job", "spec": job_spec}
    else:
        resource = tt.resource
        assert resource is not None  # kind_of: neither a pod nor a Job
        manifest = substitute(copy.deepcopy(resource.manifest), values)
        job_meta = manifest.pop("metadata", None) or {}
        label_pod_templates(manifest, labels)
        harden_pod_templates(manifest)
        if resource.known() is TRAINJOB:
            label_trainjob_pods(manifest, replicated_jobs or [], labels)
        body = {**manifest, "apiVersion": resource.api_version, "kind": resource.kind}
    body["metadata"] = {
        "name": meta["name"],
        "namespace": meta["namespace"],
        "labels": {**(job_meta.get("labels") or {}), **labels, **queue_label(spec)},
        "annotations": job_meta.get("annotations") or {},
        "ownerReferences": _owner(trial),
    }
    return kind, body

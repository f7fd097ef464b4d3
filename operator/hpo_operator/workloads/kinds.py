"""What a trial runs — a pod, a batch/v1 Job, or any resource with success and failure conditions —
and how the planner sees it: always as one pod-shaped observation per trial (pure functions).

The planner decides from pods (podstate.observe): phase, the primary container's exit, the pod's
reason, its start. A Job or another resource is turned into that shape here, from its conditions
and from its primary pod, so that retries, budgets, timeouts, early stopping and suspension work
the same for every kind:
- success: the resource's success condition (a Job's Complete); metrics from the primary pod;
- failure: the failure condition (a Job's Failed). Its class comes from the pods, as for a pod
  trial: an OOMKilled container is OOMKilled, an evicted or disrupted pod Infrastructure; a Job's
  DeadlineExceeded is Timeout; anything else Error;
- suspended (spec.suspend, as Kueue holds a Job, JobSet or TrainJob until it admits it): a pod
  waiting for admission, whatever pods are still terminating; the planner tells a queued trial
  from one whose workload was suspended again after it started (preempted);
- otherwise the primary pod's state (Pending with its waiting reason, Running), or Pending.
The primary pod is the one whose labels match trialTemplate.primaryPod.labels; by default, for an
Indexed Job, completion index 0; else the newest pod (a Job's last attempt).

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

from hpo_operator.api.external import (
    L_COMPLETION_INDEX,
    L_JOBSET_JOB_INDEX,
    L_REPLICATED_JOB,
    TRAINJOB,
    TrialResource,
)
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.api.vocabulary import API_VERSION, L_EXPERIMENT, L_TRIAL
from hpo_operator.core.podstate import FINISHED_POD_PHASES, SCHEDULING_GATED

from .pod import build_pod, mount_checkpoint, no_token_unless_asked, queue_label, substitute, trial_values

# Set by the job controller on an Indexed Job's pods.
L_JOB_INDEX = L_COMPLETION_INDEX
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
    (job 0 of its replicated job; primary_pod then prefers completion index 0), else None."""
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


# --- observing ----------------------------------------------------------------------------------


def _condition(obj: dict[str, Any], type_: str, status: str = "True") -> dict[str, Any] | None:
    conditions: list[dict[str, Any]] = (obj.get("status") or {}).get("conditions") or []
    for c in conditions:
        if c.get("type") == type_ and c.get("status") == status:
            return c
    return None


def primary_pod(pods: list[dict[str, Any]], labels: dict[str, str] | None) -> dict[str, Any] | None:
    """The pod whose log and exit speak for the trial (see the module's docstring)."""
    if not pods:
        return None
    candidates = pods
    if labels:
        candidates = [
            p for p in pods if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())
        ]
    # Of an Indexed Job's pods (a JobSet's or TrainJob's too), index 0.
    indexed = [p for p in candidates if (p["metadata"].get("labels") or {}).get(L_JOB_INDEX) == "0"]
    candidates = indexed or candidates
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))


def _terminated(pod: dict[str, Any] | None) -> dict[str, Any] | None:
    statuses: list[dict[str, Any]] = ((pod or {}).get("status") or {}).get("containerStatuses") or []
    for c in statuses:
        if (c.get("state") or {}).get("terminated"):
            return c
    return None


def _failed_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The pod that explains a failure: the newest failed one."""
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    if not failed:
        return None
    return max(failed, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))


def _shape(
    name: str, workload: dict[str, Any], pod: dict[str, Any] | None, phase: str, status: dict[str, Any]
) -> dict[str, Any]:
    """A pod-shaped dict for podstate.observe: the primary pod's identity (its log is read by its
    name) with the status given."""
    base = pod or {
        "metadata": {
            "name": name,
            "namespace": workload["metadata"].get("namespace"),
            "uid": workload["metadata"].get("uid", ""),
            "creationTimestamp": workload["metadata"].get("creationTimestamp"),
        },
        "spec": {"containers": []},
    }
    meta = dict(base["metadata"])
    if workload["metadata"].get("deletionTimestamp"):
        meta["deletionTimestamp"] = workload["metadata"]["deletionTimestamp"]
    elif "deletionTimestamp" in meta:
        del meta["deletionTimestamp"]  # a Job replaces a pod it lost; the trial goes on
    return {"metadata": meta, "spec": base.get("spec") or {}, "status": {"phase": phase, **status}}


def _failure_status(
    workload_reason: str, message: str, pods: list[dict[str, Any]], pod: dict[str, Any] | None
) -> dict[str, Any]:
    """A Failed pod status that makes podstate classify the failure as the pods say."""
    if workload_reason == "DeadlineExceeded":
        return {"reason": "DeadlineExceeded", "message": message}
    culprit = _failed_pod(pods) or pod
    cstatus = (culprit or {}).get("status") or {}
    if cstatus.get("reason"):  # Evicted, Preempting, ...: the pod was stopped from outside
        return {"reason": cstatus["reason"], "message": cstatus.get("message") or message}
    container = _terminated(culprit)
    if container is not None:
        result = {"containerStatuses": [container]}
        if cstatus.get("conditions"):
            result["conditions"] = cstatus["conditions"]  # a DisruptionTarget marks Infrastructure
        return result
    if cstatus.get("initContainerStatuses"):
        # It failed before its containers started (e.g. a pbt segment's checkpoint copy step).
        return {"initContainerStatuses": cstatus["initContainerStatuses"], "message": message}
    return {"reason": workload_reason or "Failed", "message": message}


def trial_pod_view(
    kind: Kind,
    name: str,
    workload: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    resource: TrialResource | None = None,
    primary_labels: dict[str, str] | None = None,
) -> dict[str, Any] | None:
    """The pod-shaped observation of a trial that runs as a Job or another resource, or None while
    that does not exist."""
    if workload is None:
        return None
    pod = primary_pod(pods, primary_labels)
    if kind == JOB:
        success, failure = _condition(workload, "Complete"), _condition(workload, "Failed")
    else:
        assert resource is not None
        success_rule, failure_rule = resource.success(), resource.failure()
        success = _condition(workload, success_rule.type, success_rule.status)
        failure = _condition(workload, failure_rule.type, failure_rule.status)
    if success is not None:
        container = _terminated(pod) or {
            "name": "main",
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
        }
        return _shape(name, workload, pod, "Succeeded", {"containerStatuses": [container]})
    if failure is not None:
        status = _failure_status(failure.get("reason") or "", failure.get("message") or "", pods, pod)
        return _shape(name, workload, pod, "Failed", status)
    if (workload.get("spec") or {}).get("suspend") is True:
        gate = {
            "type": "PodScheduled",
            "status": "False",
            "reason": SCHEDULING_GATED,
            "message": f"waiting for admission: the {kind.kind} is suspended",
        }
        return _shape(name, workload, pod, "Pending", {"conditions": [gate]})
    if pod is not None:
        status = dict(pod.get("status") or {})
        phase = status.pop("phase", None) or "Pending"
        if phase in FINISHED_POD_PHASES:
            # The pod ended but the resource has not decided yet (a Job may start another pod):
            # the trial is still running.
            phase, status = "Running", {"startTime": status.get("startTime")}
        return _shape(name, workload, pod, phase, status)
    return _shape(name, workload, None, "Pending", {})

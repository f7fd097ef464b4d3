"""What a trial that runs as a Job or another resource says (pure functions): an observation made
from the resource's conditions and its pods, by podstate's rules, as a pod trial's is made from its
pod, so that retries, budgets, timeouts, early stopping and suspension work the same for every kind:
- success: the resource's success condition (a Job's Complete); the exit and termination message
  are the primary pod's (what the planner reads metrics from);
- failure: the failure condition (a Job's Failed). Its class comes from the pods, as for a pod
  trial: an OOMKilled container is OOMKilled, an evicted or disrupted pod Infrastructure; a Job's
  DeadlineExceeded is Timeout; anything else Error;
- suspended (spec.suspend, as Kueue holds a Job, JobSet or TrainJob until it admits it): waiting
  for admission, whatever pods are still terminating; the planner tells a queued trial from one
  whose workload was suspended again after it started (preempted);
- otherwise the primary pod's state (Pending with its waiting reason, Running), or Pending. A pod
  that ended while the resource has not decided (a Job may start another) is still Running.
The primary pod is the one whose labels match trialTemplate.primaryPod.labels; by default, for an
Indexed Job, completion index 0; else the newest pod (a Job's last attempt). Its log is read by its
name. Only the workload's deletion counts: a Job replaces a pod it lost, and the trial goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hpo_operator.api.external import L_COMPLETION_INDEX, TrialResource
from hpo_operator.core import podstate
from hpo_operator.core.podstate import FINISHED_POD_PHASES, STRANDED_AFTER_SECONDS, PodObservation

from .population import copy_failure, mounted


@dataclass(frozen=True)
class Observed:
    """A Job or resource trial as the planner reads it: its observation, and the answers it would
    otherwise read from a pod's status."""

    observation: PodObservation
    # The primary pod as the informer holds it (its name, uid and containers: its log is read by
    # them), or the workload's name, namespace and uid while it has none.
    pod: dict[str, Any]
    deleting: bool  # the workload is being deleted
    finished: bool  # nothing of the trial runs any more (as podstate.finished says of a pod)
    mounted: bool  # the primary pod mounted its volumes (population.mounted)
    # Neither succeeded nor failed, and not deleted past its grace period with its pod never
    # finished (a pod stranded on a lost node, podstate.stranded): it takes a trial slot.
    holds_slot: bool


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
    indexed = [p for p in candidates if (p["metadata"].get("labels") or {}).get(L_COMPLETION_INDEX) == "0"]
    candidates = indexed or candidates
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))


def observe_workload(
    kind: str,
    workload: dict[str, Any],
    pods: list[dict[str, Any]],
    resource: TrialResource | None = None,
    primary_labels: dict[str, str] | None = None,
    primary_container: str | None = None,
    now: datetime | None = None,
) -> Observed:
    """What a trial's Job (resource None: a batch/v1 Job, `kind` "Job") or resource (its success and
    failure rules in `resource`) says, with the trial's pods. `now` judges a workload being deleted
    (the only case that depends on it)."""
    meta = workload["metadata"]
    pod = primary_pod(pods, primary_labels)
    deletion = meta.get("deletionTimestamp")
    identity = pod or {"metadata": {k: meta.get(k) for k in ("name", "namespace", "uid")}, "spec": {}}
    if resource is None:
        success, failure = _condition(workload, "Complete"), _condition(workload, "Failed")
    else:
        success_rule, failure_rule = resource.success(), resource.failure()
        success = _condition(workload, success_rule.type, success_rule.status)
        failure = _condition(workload, failure_rule.type, failure_rule.status)
    if success is not None or failure is not None:
        if success is not None:
            container = _terminated(pod)
            done = container["state"]["terminated"] if container else {"exitCode": 0, "reason": "Completed"}
            obs = podstate.exited(done, None, False)
        else:
            assert failure is not None
            obs = _failure(failure.get("reason") or "", failure.get("message") or "", pods, pod)
        return Observed(obs, identity, bool(deletion), finished=True, mounted=True, holds_slot=False)

    status: dict[str, Any] = (pod or {}).get("status") or {}
    pod_spec: dict[str, Any] = (pod or {}).get("spec") or {}
    suspended = (workload.get("spec") or {}).get("suspend") is True
    primary = podstate.primary_status(status.get("containerStatuses") or [], primary_container) or {}
    # Ended: the pod, or its primary container a moment before the kubelet sets the pod's phase (read
    # then as the trial's end, the trial was Succeeded while its Job still ran, and the Job deleted).
    ended = not suspended and (
        status.get("phase") in FINISHED_POD_PHASES or bool((primary.get("state") or {}).get("terminated"))
    )
    # Where the trial runs: a suspended workload's pods no longer count as started.
    start = status.get("startTime") if not suspended else None
    late = podstate.seconds_late(deletion, bool(start or pod_spec.get("nodeName")), now)
    stranded = late is not None and late >= STRANDED_AFTER_SECONDS

    def observed(obs: PodObservation, finished: bool, mounted: bool) -> Observed:
        return Observed(obs, identity, bool(deletion), finished, mounted, holds_slot=not stranded)

    if suspended:
        why = podstate.gates(pod_spec) or f"waiting for admission: the {kind} is suspended"
        obs = PodObservation("Pending", "WaitingForAdmission", why, queued=True)
        return observed(_or_lost(obs, late, pod_spec, None), finished=False, mounted=False)
    if pod is None:
        obs = PodObservation("Pending", "PodPending", stuck_since=meta.get("creationTimestamp"))
        return observed(obs, finished=False, mounted=False)
    if ended:
        # The pod ended but the resource has not decided yet (a Job may start another pod, or count
        # this one): the trial is still running.
        obs = PodObservation("Running", "Running", start_time=start)
        return observed(_or_lost(obs, late, pod_spec, start), finished=False, mounted=True)
    # The primary pod speaks for the trial, deleted when (and only when) its workload is: a Job
    # replaces a pod it lost, and the trial goes on.
    # (A pbt segment's checkpoint copy step, an init container, may be what failed.)
    obs = copy_failure(pod, podstate.judge(pod, primary_container, late))
    return observed(obs, finished=podstate.finished(pod), mounted=mounted(pod))


def _or_lost(obs: PodObservation, late: float | None, pod_spec: dict[str, Any], start: str | None) -> PodObservation:
    """obs, unless the workload's deletion stands past its grace period (NodeLost, as a pod's)."""
    if late is not None and late >= STRANDED_AFTER_SECONDS:
        return podstate.node_lost(late, None, pod_spec.get("nodeName"), start)
    obs.recheck_in = podstate.recheck_in(late)
    return obs


def _failure(reason: str, message: str, pods: list[dict[str, Any]], pod: dict[str, Any] | None) -> PodObservation:
    """A failed workload's observation, classed as its pods say."""
    if reason == "DeadlineExceeded":
        return podstate.stopped(reason, message)
    culprit = _failed_pod(pods) or pod
    status = (culprit or {}).get("status") or {}
    if status.get("reason"):  # Evicted, Preempting, ...: the pod was stopped from outside
        return podstate.stopped(status["reason"], status.get("message") or message)
    container = _terminated(culprit)
    if container is not None:
        # A DisruptionTarget condition on the pod marks an Infrastructure failure.
        return podstate.exited(container["state"]["terminated"], None, podstate.disruption(status) is not None)
    if status.get("initContainerStatuses"):
        # It failed before its containers started (e.g. a pbt segment's checkpoint copy step).
        assert culprit is not None
        return copy_failure(culprit, PodObservation("Failed", "PodFailed", message, "Error"))
    return podstate.stopped(reason or "Failed", message)


def _condition(obj: dict[str, Any], type_: str, status: str = "True") -> dict[str, Any] | None:
    conditions: list[dict[str, Any]] = (obj.get("status") or {}).get("conditions") or []
    for c in conditions:
        if c.get("type") == type_ and c.get("status") == status:
            return c
    return None


def _terminated(pod: dict[str, Any] | None) -> dict[str, Any] | None:
    """The first container of the pod that terminated."""
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

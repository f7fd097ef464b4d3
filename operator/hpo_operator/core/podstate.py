"""What a trial's pod says about the trial: phase, reason, exit code, failure class.

Failure classes decide recovery (see api.spec.RetryPolicy):
- Infrastructure: the pod was stopped from outside (evicted, preempted, node lost, shut down),
  including a pod left terminating past its grace period: no kubelet is there to finish it, so
  it would otherwise hold its trial slot forever;
- OOMKilled: the container exceeded its memory limit;
- Error: the program exited non-zero on its own;
- Startup: the container never started (image or config problems, unschedulable) - not retried;
- Timeout: the trial ran past maxTrialDurationSeconds - not retried.

A pod held back by scheduling gates (Kubernetes' PodScheduled=False, reason SchedulingGated) is
queued: something outside the scheduler, such as Kueue, admits it when its quota allows. It is
neither starting nor stuck, so no startup timeout runs while it waits (workloads.observe sees a
suspended Job or resource the same way).

The rules are public functions (stopped, exited, node_lost, seconds_late, gates, disruption,
failure_message), so that workloads.observe judges a Job or resource trial by the same rules
without a pod of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hpo_operator.core import times

# Pod phases (Kubernetes' words) after which no container of the pod runs again.
FINISHED_POD_PHASES = ("Succeeded", "Failed")

INFRASTRUCTURE_POD_REASONS = frozenset(
    {
        "Evicted",
        "Preempting",
        "Preempted",
        "NodeLost",
        "NodeShutdown",
        "Shutdown",
        "Terminated",
        "UnexpectedAdmissionError",
        "NodeAffinity",
        "OutOfcpu",
        "OutOfmemory",
    }
)
# Waiting reasons that will not heal by waiting: fail at once.
FATAL_WAITING_REASONS = frozenset(
    {
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
# Waiting reasons that may heal (a registry comes back): fail after startupTimeoutSeconds.
SLOW_WAITING_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "ContainerCreating", "PodInitializing"})
# How long past its deletion deadline a pod may still look alive before its node counts as lost;
# a live kubelet reports the containers' end within seconds of the deadline.
STRANDED_AFTER_SECONDS = 15.0


@dataclass
class PodObservation:
    phase: str  # Pending, Running, Succeeded, Failed
    reason: str
    message: str = ""
    failure_class: str | None = None
    exit_code: int | None = None
    termination_message: str | None = None
    start_time: str | None = None
    finish_time: str | None = None
    stuck_since: str | None = None  # when a not-yet-started pod's trouble began (for timeouts)
    fatal: bool = False  # a Pending pod that can never start
    queued: bool = False  # a Pending pod waiting for admission (scheduling gates, a suspended workload)
    recheck_in: float | None = None  # seconds until this observation may change without a pod event


def primary_status(statuses: list[dict[str, Any]], name: str | None) -> dict[str, Any] | None:
    """The status of the container that speaks for the trial: the one named, else the first."""
    if not statuses:
        return None
    if name:
        for status in statuses:
            if status.get("name") == name:
                return status
    return statuses[0]


def observe(pod: dict[str, Any], primary_container: str | None = None, now: datetime | None = None) -> PodObservation:
    return judge(pod, primary_container, seconds_past_deletion(pod, now))


def judge(pod: dict[str, Any], primary_container: str | None, late: float | None) -> PodObservation:
    """observe(), given how long past its deletion's deadline the pod still stands (None: it is
    not being deleted, or that is not judged): a Job's pod is deleted when its Job is."""
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    container = primary_status(status.get("containerStatuses") or [], primary_container)
    state = (container or {}).get("state") or {}
    terminated = state.get("terminated")
    waiting = state.get("waiting")
    created = pod.get("metadata", {}).get("creationTimestamp")

    if phase == "Failed" and status.get("reason"):
        return stopped(status["reason"], status.get("message", ""), terminated, status.get("startTime"))

    if terminated and phase in ("Succeeded", "Failed", "Running"):
        # The primary container's exit decides the trial, whatever sidecars do (a sidecar that
        # never exits keeps the pod Running; one that fails makes it Failed).
        return exited(terminated, status.get("startTime"), disruption(status) is not None)

    if phase == "Failed":
        cls = "Infrastructure" if disruption(status) is not None else "Error"
        return PodObservation("Failed", "PodFailed", status.get("message", "the pod failed"), cls)

    if late is not None and late >= STRANDED_AFTER_SECONDS:
        return node_lost(late, disruption(status), pod.get("spec", {}).get("nodeName"), status.get("startTime"))

    why = gated(pod) if phase == "Pending" else None
    if why is not None:
        obs = PodObservation("Pending", "WaitingForAdmission", why, queued=True)
    else:
        obs = _not_finished(phase, status, waiting, created)
    obs.recheck_in = recheck_in(late)
    return obs


def stopped(
    reason: str, message: str, terminated: dict[str, Any] | None = None, start_time: str | None = None
) -> PodObservation:
    """A pod (or a workload) that failed with a reason of its own: stopped from outside
    (Infrastructure), past its deadline (Timeout), or anything else (Error)."""
    cls = "Infrastructure" if reason in INFRASTRUCTURE_POD_REASONS else "Error"
    if reason == "DeadlineExceeded":
        cls = "Timeout"
    return PodObservation(
        "Failed",
        reason,
        message,
        cls,
        exit_code=(terminated or {}).get("exitCode"),
        start_time=start_time,
        finish_time=(terminated or {}).get("finishedAt"),
    )


def exited(terminated: dict[str, Any], start_time: str | None, disrupted: bool) -> PodObservation:
    """What a terminated container's exit says (its state.terminated): Succeeded on code 0, else
    Failed as OOMKilled, Infrastructure (its pod was disrupted) or Error. start_time: the pod's,
    when the container does not say when it started."""
    code = terminated.get("exitCode")
    reason = terminated.get("reason") or ("Completed" if code == 0 else "Error")
    cls: str | None
    if code == 0:
        cls = None
    elif reason == "OOMKilled":
        cls = "OOMKilled"
    elif disrupted:
        cls = "Infrastructure"
    else:
        cls = "Error"
    message = terminated.get("message") or ""
    return PodObservation(
        "Succeeded" if code == 0 else "Failed",
        reason,
        failure_message(code, reason, message) if cls else "",
        cls,
        exit_code=code,
        termination_message=message or None,
        start_time=terminated.get("startedAt") or start_time,
        finish_time=terminated.get("finishedAt"),
    )


def node_lost(late: float, why: str | None, node: str | None, start_time: str | None) -> PodObservation:
    """A pod deleted `late` seconds past its grace period (at least STRANDED_AFTER_SECONDS) that no
    kubelet finished: its node is lost. why: its disruption's reason, if any."""
    message = (
        f"the pod was deleted{f' ({why})' if why else ''} but {node or 'its node'} never finished it "
        f"({int(late)}s past its grace period): the node is lost"
    )
    return PodObservation("Failed", "NodeLost", message, "Infrastructure", start_time=start_time)


def recheck_in(late: float | None) -> float | None:
    """When a pod being deleted, not yet stranded, is to be looked at again (None: not deleted)."""
    return None if late is None else STRANDED_AFTER_SECONDS - late


def seconds_past_deletion(pod: dict[str, Any], now: datetime | None) -> float | None:
    """How long ago a pod on a node should have finished terminating (negative: not yet due);
    None when it is not being deleted, has no node, or there is no clock to judge by."""
    placed = (pod.get("status") or {}).get("startTime") or pod.get("spec", {}).get("nodeName")
    return seconds_late(pod.get("metadata", {}).get("deletionTimestamp"), bool(placed), now)


def seconds_late(deletion: str | None, placed: bool, now: datetime | None) -> float | None:
    """How long past `deletion` (a deletionTimestamp: the end of the grace period) something that
    was `placed` on a node (started, or given a node) still stands; None when it is not being
    deleted, was never placed, or there is no clock to judge by."""
    deadline = times.parse(deletion)
    if deadline is None or now is None or not placed:
        return None
    return (now - deadline).total_seconds()


def finished(pod: dict[str, Any]) -> bool:
    """Whether the pod's containers are all done (what runs on is not the trial's)."""
    status = pod.get("status") or {}
    if status.get("phase") in FINISHED_POD_PHASES:
        return True
    # A kubelet reports the containers terminated a moment before it sets the pod's phase.
    containers = status.get("containerStatuses") or []
    return bool(containers) and all((c.get("state") or {}).get("terminated") for c in containers)


def stranded(pod: dict[str, Any], now: datetime) -> bool:
    """A pod whose deletion no kubelet will ever finish: it no longer takes a trial slot."""
    late = seconds_past_deletion(pod, now)
    phase = (pod.get("status") or {}).get("phase")
    return late is not None and late >= STRANDED_AFTER_SECONDS and phase not in FINISHED_POD_PHASES


# The PodScheduled reason of a pod whose scheduling gates are not all removed (Kubernetes' word).
SCHEDULING_GATED = "SchedulingGated"


def gated(pod: dict[str, Any]) -> str | None:
    """Why a pod waits for admission, or None: its scheduling gates (spec.schedulingGates, as soon
    as the pod exists) or the scheduler's SchedulingGated condition (Kubernetes' words)."""
    why = gates(pod.get("spec") or {})
    if why is not None:
        return why
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == SCHEDULING_GATED
        ):
            return cond.get("message") or "waiting for admission"
    return None


def gates(pod_spec: dict[str, Any]) -> str | None:
    """Why a pod's spec holds it back from scheduling (spec.schedulingGates), or None."""
    names = [g.get("name", "") for g in pod_spec.get("schedulingGates") or []]
    return f"waiting for admission (scheduling gates: {', '.join(names)})" if names else None


def _not_finished(
    phase: str, status: dict[str, Any], waiting: dict[str, Any] | None, created: str | None
) -> PodObservation:
    if phase == "Running":
        return PodObservation("Running", "Running", start_time=status.get("startTime"))
    if waiting and waiting.get("reason") in FATAL_WAITING_REASONS | SLOW_WAITING_REASONS:
        reason = waiting["reason"]
        return PodObservation(
            "Pending",
            reason,
            waiting.get("message", ""),
            "Startup",
            stuck_since=created,
            fatal=reason in FATAL_WAITING_REASONS,
        )
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return PodObservation(
                "Pending",
                cond.get("reason") or "Unschedulable",
                cond.get("message", ""),
                "Startup",
                stuck_since=created,
            )
    return PodObservation("Pending", "PodPending", stuck_since=created)


def disruption(status: dict[str, Any]) -> str | None:
    """The reason of a DisruptionTarget condition (e.g. DeletionByTaintManager), if there is one."""
    for c in status.get("conditions") or []:
        if c.get("type") == "DisruptionTarget" and c.get("status") == "True":
            return c.get("reason") or "DisruptionTarget"
    return None


def _exit_message(code: int | None, reason: str) -> str:
    if reason == "OOMKilled":
        return f"the container exceeded its memory limit (exit code {code})"
    return f"the container exited with code {code} ({reason})"


# How much of what a failed container said the trial's message keeps: its end, where a traceback
# names the error (the kubelet keeps at most 4096 bytes of it anyway).
FAILURE_WORDS_MAX = 2048


def failure_message(code: int | None, reason: str, termination_message: str) -> str:
    """Why a container failed: its exit, then what it wrote to its termination message (a program's
    own explanation, such as a traceback's last lines, or its log's tail under
    terminationMessagePolicy FallbackToLogsOnError). A JSON object there is metrics, not words."""
    base = _exit_message(code, reason)
    said = termination_message.strip()
    if not said or _json_object(said):
        return base
    if len(said) > FAILURE_WORDS_MAX:
        said = "…" + said[-FAILURE_WORDS_MAX:]
    return f"{base}: {said}"


def _json_object(text: str) -> bool:
    if not text.startswith("{"):
        return False
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False

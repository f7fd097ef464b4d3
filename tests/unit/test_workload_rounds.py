"""Rounds of Job trials as the operator's loop plans them: each Job and its pods observed
(workloads.observe) and given to plan() as RoundInput.workloads, whose answers the planner reads
instead of a pod's status (a slot held, a workload finished or being deleted)."""

from __future__ import annotations

from datetime import datetime

from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.workloads.observe import Observed, observe_workload
from tests.support.rounds import NOW, ago, failed, make_spec, pod_running, run, succeeded, suggested, trial_statuses


def job_spec(**overrides) -> ExperimentSpec:
    """make_spec's experiment, its trials run as Jobs."""
    body = make_spec(**overrides).model_dump(by_alias=True, exclude_none=True)
    tt = body["trialTemplate"]
    tt["job"] = {"spec": {"template": tt.pop("template")}}
    return ExperimentSpec.model_validate(body)


def job(name: str, condition: str | None = None, deleted: str | None = None) -> dict:
    meta = {"name": name, "namespace": "team-a", "uid": f"job-{name}", "creationTimestamp": ago(600)}
    if deleted is not None:
        meta["deletionTimestamp"] = deleted
    conditions = [{"type": condition, "status": "True"}] if condition else []
    return {"metadata": meta, "status": {"conditions": conditions}}


def ran(name: str, phase: str) -> dict:
    """The Job's pod, on node-a, in `phase`."""
    pod = pod_running(f"{name}-x7k2p")
    pod["metadata"]["labels"] = {"hpo.dev/trial": name}
    pod["spec"]["nodeName"] = "node-a"
    if phase != "Running":
        pod["status"]["phase"] = phase
        code = 0 if phase == "Succeeded" else 1
        pod["status"]["containerStatuses"][0]["state"] = {"terminated": {"exitCode": code}}
    return pod


def observed(seen: dict[str, tuple[dict, list[dict]]], now: datetime = NOW) -> dict[str, Observed]:
    return {name: observe_workload("Job", body, pods, now=now) for name, (body, pods) in seen.items()}


def round_of(spec: ExperimentSpec, trials: list, seen: dict[str, tuple[dict, list[dict]]]):
    workloads = observed(seen)
    return run(spec, trials, {n: s.pod for n, s in workloads.items()}, workloads=workloads)


def test_a_jobs_slot_is_held_until_the_job_decides_or_its_pods_are_stranded():
    spec = job_spec(parallelTrialCount=1, maxTrialCount=1)
    trials = [
        failed(0, "Infrastructure", retriedBy="exp-0000-a2"),
        suggested(0, "Pending", attempt=2, reason="Backoff"),
    ]
    # Its pod ended, but the Job has not decided (it may start another): the slot stays taken.
    assert round_of(spec, trials, {"exp-0000": (job("exp-0000"), [ran("exp-0000", "Failed")])}).start_workloads == []
    decided = {"exp-0000": (job("exp-0000", "Failed"), [ran("exp-0000", "Failed")])}
    assert round_of(spec, trials, decided).start_workloads == ["exp-0000-a2"]
    # Deleted, its pod still running: the slot is held through the grace period, not past it.
    shutting_down = {"exp-0000": (job("exp-0000", deleted=ago(5)), [ran("exp-0000", "Running")])}
    assert round_of(spec, trials, shutting_down).start_workloads == []
    stranded = {"exp-0000": (job("exp-0000", deleted=ago(60)), [ran("exp-0000", "Running")])}
    assert round_of(spec, trials, stranded).start_workloads == ["exp-0000-a2"]


def test_a_recorded_trials_job_is_deleted_only_while_it_runs_and_is_not_being_deleted():
    spec = job_spec(parallelTrialCount=1, maxTrialCount=1)
    # Complete, its pods gone (a Job's ttl, a user): nothing runs, nothing to stop.
    plan = round_of(spec, [succeeded(0, 0.5)], {"exp-0000": (job("exp-0000", "Complete"), [])})
    assert plan.delete_workloads == []
    # Killed while its pod runs: stopped...
    killed = suggested(0, "Killed", reason="Timeout")
    plan = round_of(spec, [killed], {"exp-0000": (job("exp-0000"), [ran("exp-0000", "Running")])})
    assert plan.delete_workloads == ["exp-0000"]
    # ...once: its Job being deleted, it is not deleted again.
    deleting = {"exp-0000": (job("exp-0000", deleted=ago(-20)), [ran("exp-0000", "Running")])}
    assert round_of(spec, [killed], deleting).delete_workloads == []


def test_a_job_trial_is_decided_by_its_jobs_observation_and_named_after_its_pod():
    spec = job_spec(parallelTrialCount=1, maxTrialCount=1)
    trials = [suggested(0, "Running", startTime=ago(30))]
    plan = round_of(spec, trials, {"exp-0000": (job("exp-0000", "Failed"), [ran("exp-0000", "Failed")])})
    st = trial_statuses(plan)["exp-0000"]
    assert (st["phase"], st["reason"], st["failureClass"]) == ("Failed", "Error", "Error")
    assert st["podName"] == "exp-0000-x7k2p"  # its log is read by that name

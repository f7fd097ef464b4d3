"""Trials queued by Kueue (trialTemplate.queueName; planner/queue.py): held for admission, admitted,
preempted, and held in their queue while the experiment is suspended."""

from __future__ import annotations

import pytest

from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.workloads.observe import observe_workload
from tests.support.rounds import (
    NOW,
    NS,
    ago,
    cond,
    created_names,
    exp_status,
    make_spec,
    pod,
    pod_running,
    run,
    suggested,
    trial_statuses,
)

GATED = [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated", "message": "held by its queue"}]


def test_a_trial_waiting_for_admission_is_queued_holds_its_slot_and_never_times_out():
    spec = make_spec(parallelTrialCount=1, maxTrialCount=3, startupTimeoutSeconds=120, maxTrialDurationSeconds=60)
    waiting = pod("exp-0000", "Pending", created=ago(86400), started=None, conditions=GATED)
    plan = run(spec, [suggested(0, "Pending", reason="PodCreated")], {"exp-0000": waiting})
    st = trial_statuses(plan)["exp-0000"]
    assert (st["phase"], st["reason"]) == ("Queued", "WaitingForAdmission")
    assert cond(st["conditions"], "Queued")["status"] == "True"
    assert plan.delete_workloads == [] and created_names(plan) == []  # the slot is its
    assert exp_status(plan)["trialsQueued"] == 1 and exp_status(plan)["trialsPending"] == 0


def test_the_startup_timeout_counts_from_admission_not_from_the_pods_creation():
    spec = make_spec(parallelTrialCount=1, startupTimeoutSeconds=120)
    queued_status = {
        "reason": "WaitingForAdmission",
        "conditions": [
            {"type": "Queued", "status": "True", "reason": "WaitingForAdmission", "lastTransitionTime": ago(3600)}
        ],
    }
    unschedulable = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/2 nodes"}]
    stuck = pod("exp-0000", "Pending", created=ago(3600), started=None, conditions=unschedulable)
    # Admitted this round, an hour after its pod was made: the pod's age is not startup trouble.
    plan = run(spec, [suggested(0, "Queued", **queued_status)], {"exp-0000": stuck})
    st = trial_statuses(plan)["exp-0000"]
    assert (st["phase"], st["reason"]) == ("Pending", "Unschedulable")
    queued_cond = cond(st["conditions"], "Queued")
    assert (queued_cond["status"], queued_cond["reason"]) == ("False", "Admitted")
    assert plan.requeue_after == pytest.approx(120)
    # 121 s after its admission, still unschedulable: now it fails.
    admitted = {"reason": "Unschedulable", "conditions": [{**queued_cond, "lastTransitionTime": ago(121)}]}
    plan = run(spec, [suggested(0, "Pending", **admitted)], {"exp-0000": stuck})
    st = trial_statuses(plan)["exp-0000"]
    assert (st["phase"], st["failureClass"]) == ("Failed", "Startup")


def test_a_trial_its_queue_preempts_after_it_started_fails_as_infrastructure_and_is_retried():
    spec = make_spec(parallelTrialCount=1, maxTrialCount=1, retryPolicy={"backoffSeconds": 0})
    held_again = pod("exp-0000", "Pending", started=None, conditions=GATED)
    plan = run(spec, [suggested(0, "Running", startTime=ago(30))], {"exp-0000": held_again})
    st = trial_statuses(plan)["exp-0000"]
    assert (st["phase"], st["reason"], st["failureClass"]) == ("Failed", "Preempted", "Infrastructure")
    assert plan.delete_workloads == ["exp-0000"]  # not left for its queue to run again beside the retry
    assert created_names(plan) == ["exp-0000-a2"]
    assert exp_status(plan)["configurations"] == 1  # counted once


def queued_job_spec(**overrides) -> ExperimentSpec:
    """make_spec's experiment with Job trials that name a Kueue queue."""
    body = make_spec(**overrides).model_dump(by_alias=True, exclude_none=True)
    tt = body["trialTemplate"]
    tt["job"] = {"spec": {"template": tt.pop("template")}}
    tt["queueName"] = "team-queue"
    return ExperimentSpec.model_validate(body)


def job_round(spec: ExperimentSpec, trials: list, jobs: dict[str, tuple[bool, list[dict]]], **kw):
    """One round of Job trials, each Job (suspended or not, with its pods) observed as the loop
    observes it (workloads.observe)."""
    workloads = {
        name: observe_workload(
            "Job", {"metadata": {"name": name, "namespace": NS, "uid": name}, "spec": {"suspend": held}}, pods, now=NOW
        )
        for name, (held, pods) in jobs.items()
    }
    return run(spec, trials, {n: s.pod for n, s in workloads.items()}, workloads=workloads, **kw)


def test_suspending_holds_queued_job_trials_in_their_queue_and_resuming_gives_them_back():
    spec = queued_job_spec(parallelTrialCount=2, suspend=True)
    running = (False, [pod_running("exp-0000")])
    waiting = (True, [])
    trials = [
        suggested(0, "Running", startTime=ago(30)),
        suggested(1, "Queued", reason="WaitingForAdmission"),
    ]
    plan = job_round(spec, trials, {"exp-0000": running, "exp-0001": waiting})
    assert plan.queue_activations == {"exp-0000": False, "exp-0001": False}
    assert plan.delete_workloads == [] and created_names(plan) == []  # nothing killed, nothing re-run
    for name, st in trial_statuses(plan).items():
        assert (st["phase"], st["reason"]) == ("Queued", "Suspended"), name
        assert "startTime" not in st  # its restart on resume is no preemption
    held = [
        suggested(i, "Queued", reason="Suspended", conditions=trial_statuses(plan)[f"exp-000{i}"]["conditions"])
        for i in (0, 1)
    ]
    # Kueue has not stopped exp-0000 yet: asked again, and looked at again soon; exp-0001 is held.
    plan = job_round(spec, held, {"exp-0000": running, "exp-0001": waiting})
    assert plan.queue_activations == {"exp-0000": False} and plan.requeue_after == pytest.approx(2)
    assert "exp-0000" not in trial_statuses(plan) or trial_statuses(plan)["exp-0000"]["phase"] == "Queued"
    # Kueue suspended it: its pod still terminating, it waits for admission again.
    stopped = (True, [pod_running("exp-0000")])
    plan = job_round(spec, held, {"exp-0000": stopped, "exp-0001": waiting})
    assert plan.queue_activations == {}
    # Resumed: both go back to their queue, and wait there as any queued trial.
    resumed = queued_job_spec(parallelTrialCount=2, suspend=False)
    plan = job_round(resumed, held, {"exp-0000": stopped, "exp-0001": waiting}, status={"phase": "Suspended"})
    assert plan.queue_activations == {"exp-0000": True, "exp-0001": True}
    for st in trial_statuses(plan).values():
        assert (st["phase"], st["reason"]) == ("Queued", "WaitingForAdmission")
    assert created_names(plan) == []


def test_suspending_stops_queued_pod_trials_as_any_pod_trial():
    spec = make_spec(parallelTrialCount=1, suspend=True)
    spec.trial_template.queue_name = "team-queue"
    plan = run(spec, [suggested(0, "Running", startTime=ago(30))], {"exp-0000": pod_running("exp-0000")})
    assert plan.queue_activations == {} and plan.delete_workloads == ["exp-0000"]
    assert trial_statuses(plan)["exp-0000"]["phase"] == "Killed"

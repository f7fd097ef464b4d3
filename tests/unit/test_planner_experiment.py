"""The experiment (planner/experiment.py): its best trial, its end (too many failures, its goal,
maxTrialCount, a search space used up), suspension, and the finished pods it keeps or deletes; on
rounds built by hand (tests/support/rounds.py), some over several rounds (rounds.Cluster)."""

from __future__ import annotations

from datetime import timedelta

from hpo_operator.api.vocabulary import A_NOT_BEFORE, L_LAUNCH
from hpo_operator.planner import goal_reached, is_better
from tests.support.rounds import (
    EARLIER,
    NOW,
    Cluster,
    cond,
    created_names,
    event_reasons,
    exhausted_after,
    exp_status,
    experiment_outcome,
    failed,
    iso,
    make_spec,
    pod_failed,
    pod_pending,
    pod_running,
    pod_succeeded,
    run,
    succeeded,
    suggested,
    trial_statuses,
)

# =============================================================================================
# the best trial
# =============================================================================================


def test_best_trial_when_maximising():
    spec = make_spec(objective={"type": "maximize", "metricName": "loss"})
    plan = run(spec, [succeeded(0, 0.3), succeeded(1, 0.9), succeeded(2, 0.5)])
    assert exp_status(plan)["currentOptimalTrial"]["trialName"] == "exp-0001"
    plan = run(make_spec(), [succeeded(0, 0.3), succeeded(1, 0.9), succeeded(2, 0.5)])
    assert exp_status(plan)["currentOptimalTrial"]["trialName"] == "exp-0000"


def test_is_better_and_goal_reached():
    minimise = make_spec(objective={"goal": 0.1})
    maximise = make_spec(objective={"type": "maximize", "goal": 0.9})
    assert is_better(minimise, 0.1, 0.2) and not is_better(minimise, 0.2, 0.1)
    assert is_better(maximise, 0.2, 0.1) and not is_better(maximise, 0.1, 0.2)
    assert goal_reached(minimise, 0.1) and goal_reached(minimise, 0.05) and not goal_reached(minimise, 0.11)
    assert goal_reached(maximise, 0.9) and not goal_reached(maximise, 0.89)
    assert not goal_reached(make_spec(), -1e9)


# =============================================================================================
# the experiment's end
# =============================================================================================


def test_too_many_failures_fails_the_experiment():
    spec = make_spec(parallelTrialCount=2, maxFailedTrialCount=1)
    trials = [failed(0, "Error"), suggested(1, "Running"), suggested(2, "Running")]
    pods = {"exp-0001": pod_failed("exp-0001", 2), "exp-0002": pod_running("exp-0002")}
    plan = run(spec, trials, pods)
    st = exp_status(plan)
    assert experiment_outcome(plan) == ("Failed", "TooManyFailures")
    assert st["failedConfigurations"] == 2
    assert cond(st["conditions"], "Failed")["status"] == "True"
    assert "maxFailedTrialCount (1)" in cond(st["conditions"], "Failed")["message"]
    assert cond(st["conditions"], "Running")["status"] == "False"
    assert cond(st["conditions"], "Succeeded")["status"] == "False"
    assert st["completionTime"] == iso(NOW)
    assert plan.create_trials == []
    # What still runs is stopped.
    assert plan.delete_workloads == ["exp-0002"]
    assert (trial_statuses(plan)["exp-0002"]["phase"], trial_statuses(plan)["exp-0002"]["reason"]) == (
        "Killed",
        "ExperimentFinished",
    )
    assert "ExperimentFailed" in event_reasons(plan, None)


def test_failures_up_to_the_limit_are_tolerated():
    spec = make_spec(parallelTrialCount=2, maxFailedTrialCount=1)
    plan = run(spec, [failed(0, "Error"), suggested(1, "Running")], {"exp-0001": pod_running("exp-0001")})
    assert experiment_outcome(plan) == ("Running", "Running")
    assert exp_status(plan)["failedConfigurations"] == 1


def test_max_failed_trial_count_zero_fails_at_the_first_final_failure():
    plan = run(make_spec(maxFailedTrialCount=0), [suggested(0, "Running")], {"exp-0000": pod_failed("exp-0000", 1)})
    assert experiment_outcome(plan) == ("Failed", "TooManyFailures")


def test_a_failure_being_retried_does_not_count():
    spec = make_spec(maxFailedTrialCount=0)
    plan = run(spec, [suggested(0, "Running")], {"exp-0000": pod_failed("exp-0000", 137, "OOMKilled")})
    assert experiment_outcome(plan) == ("Running", "Running")
    assert exp_status(plan)["failedConfigurations"] == 0


def test_goal_reached_succeeds_and_stops_active_trials():
    spec = make_spec(parallelTrialCount=3, objective={"goal": 0.1})
    queued = suggested(
        5, "Pending", attempt=2, reason="Backoff", annotations={A_NOT_BEFORE: iso(NOW + timedelta(seconds=30))}
    )
    trials = [suggested(0, "Running"), suggested(1, "Running"), failed(5, retriedBy="exp-0005-a2"), queued]
    pods = {"exp-0000": pod_succeeded("exp-0000", '{"loss": 0.05}'), "exp-0001": pod_running("exp-0001")}
    plan = run(spec, trials, pods)
    assert experiment_outcome(plan) == ("Succeeded", "GoalReached")
    st = exp_status(plan)
    assert "exp-0000" in cond(st["conditions"], "Succeeded")["message"]
    assert st["currentOptimalTrial"]["trialName"] == "exp-0000"
    assert st["completionTime"] == iso(NOW)
    assert plan.delete_workloads == ["exp-0001"]  # the queued retry has no pod to delete
    for name in ("exp-0001", "exp-0005-a2"):
        assert (trial_statuses(plan)[name]["phase"], trial_statuses(plan)[name]["reason"]) == (
            "Killed",
            "ExperimentFinished",
        )
    assert plan.create_trials == [] and plan.start_workloads == []
    assert "ExperimentSucceeded" in event_reasons(plan, None)


def test_goal_not_reached_keeps_going():
    spec = make_spec(objective={"goal": 0.1})
    plan = run(spec, [suggested(0, "Running")], {"exp-0000": pod_succeeded("exp-0000", '{"loss": 0.2}')})
    assert experiment_outcome(plan) == ("Running", "Running")


def test_all_configurations_done_succeeds_with_max_trials_reached():
    spec = make_spec(parallelTrialCount=2, maxTrialCount=3)
    trials = [succeeded(0, 0.3), failed(1, "Error"), suggested(2, "Running")]
    plan = run(spec, trials, {"exp-0002": pod_succeeded("exp-0002", '{"loss": 0.2}')})
    assert experiment_outcome(plan) == ("Succeeded", "MaxTrialsReached")
    st = exp_status(plan)
    assert (st["configurations"], st["failedConfigurations"], st["trialsSucceeded"], st["trialsFailed"]) == (3, 1, 2, 1)
    assert st["currentOptimalTrial"]["trialName"] == "exp-0002"
    assert plan.create_trials == []


def test_the_last_configuration_still_running_keeps_the_experiment_running():
    spec = make_spec(parallelTrialCount=2, maxTrialCount=2)
    plan = run(spec, [succeeded(0, 0.3), suggested(1, "Running")], {"exp-0001": pod_running("exp-0001")})
    assert experiment_outcome(plan) == ("Running", "Running")
    assert plan.create_trials == []


def test_a_retry_waiting_for_its_backoff_keeps_the_experiment_running():
    spec = make_spec(parallelTrialCount=1, maxTrialCount=1)
    plan = run(spec, [suggested(0, "Running")], {"exp-0000": pod_failed("exp-0000", 137, "OOMKilled")})
    assert experiment_outcome(plan) == ("Running", "Running")
    assert created_names(plan) == ["exp-0000-a2"]


def test_suggest_returning_none_exhausts_the_search_space():
    spec = make_spec(parallelTrialCount=2, maxTrialCount=10)
    plan = run(spec, [succeeded(0, 0.5), succeeded(1, 0.4)], suggest=exhausted_after(2))
    assert experiment_outcome(plan) == ("Succeeded", "SearchSpaceExhausted")
    assert "2 configurations" in cond(exp_status(plan)["conditions"], "Succeeded")["message"]
    assert plan.create_trials == []


def test_exhaustion_waits_for_the_trials_still_running():
    spec = make_spec(parallelTrialCount=3, maxTrialCount=10)
    plan = run(
        spec,
        [succeeded(0, 0.5), suggested(1, "Running")],
        {"exp-0001": pod_running("exp-0001")},
        suggest=exhausted_after(2),
    )
    assert experiment_outcome(plan) == ("Running", "Running")


def test_an_empty_search_space_finishes_at_once():
    plan = run(make_spec(), suggest=lambda i: None)
    assert experiment_outcome(plan) == ("Succeeded", "SearchSpaceExhausted")


def test_a_sampler_that_only_repeats_itself_is_exhausted():
    spec = make_spec(parallelTrialCount=1, maxTrialCount=2)
    plan = run(spec, [succeeded(0, 0.5)], suggest=lambda i: {"x": "0"}, status={"suggestionCount": 19})
    assert experiment_outcome(plan) == ("Succeeded", "SearchSpaceExhausted")


def test_a_finished_experiment_does_nothing_more():
    status = {
        "phase": "Succeeded",
        "suggestionCount": 2,
        "conditions": [
            {
                "type": "Succeeded",
                "status": "True",
                "reason": "MaxTrialsReached",
                "message": "",
                "lastTransitionTime": EARLIER,
            }
        ],
    }
    trials = [succeeded(0, 0.5), failed(1, "OOMKilled")]
    # (maxTrialCount as it ended: a larger one continues it, see test_budgets.py)
    plan = run(make_spec(maxTrialCount=2, parallelTrialCount=1), trials, status=status)
    assert plan.create_trials == [] and plan.start_workloads == []
    assert exp_status(plan)["phase"] == "Succeeded"
    assert exp_status(plan)["conditions"] == status["conditions"]
    assert plan.events == []


def test_failed_configurations_is_stable_after_the_experiment_finishes():
    spec = make_spec(parallelTrialCount=1, maxTrialCount=1, maxTrialDurationSeconds=60)
    cluster = Cluster(spec)
    cluster.round()
    cluster.pods["exp-0000"] = pod_running("exp-0000", started=iso(cluster.now))
    cluster.tick(61)
    cluster.round()
    assert cluster.phase("exp-0000") == "Killed"
    assert cluster.status["phase"] == "Succeeded"
    counted = cluster.status["failedConfigurations"]
    cluster.tick()
    cluster.round()
    assert cluster.status["failedConfigurations"] == counted


# =============================================================================================
# suspend and resume
# =============================================================================================


def test_suspend_stops_running_trials_and_launches_nothing():
    spec = make_spec(parallelTrialCount=3, suspend=True)
    trials = [suggested(0, "Running"), suggested(1, "Pending", reason="PodCreated"), failed(2, "OOMKilled")]
    pods = {"exp-0000": pod_running("exp-0000"), "exp-0001": pod_pending("exp-0001")}
    plan = run(spec, trials, pods, status={"phase": "Running"})
    assert experiment_outcome(plan) == ("Suspended", "Suspended")
    assert sorted(plan.delete_workloads) == ["exp-0000", "exp-0001"]
    for name in ("exp-0000", "exp-0001"):
        st = trial_statuses(plan)[name]
        assert (st["phase"], st["reason"]) == ("Killed", "Suspended")
    assert plan.create_trials == [] and plan.start_workloads == []  # not even the OOMKilled trial's retry
    assert exp_status(plan)["failedConfigurations"] == 0
    assert "Suspended" in event_reasons(plan, None)
    assert cond(exp_status(plan)["conditions"], "Suspended")["status"] == "True"


def test_while_suspended_stopped_trials_stay_stopped():
    spec = make_spec(suspend=True)
    plan = run(spec, [suggested(0, "Killed", reason="Suspended")], status={"phase": "Suspended"})
    assert plan.create_trials == [] and plan.delete_workloads == []
    assert experiment_outcome(plan) == ("Suspended", "Suspended")
    assert "Suspended" not in event_reasons(plan, None)  # only announced once


def test_cluster_suspend_and_resume():
    spec = make_spec(parallelTrialCount=2, maxTrialCount=2)
    cluster = Cluster(spec)
    cluster.round()
    cluster.tick()
    for name in list(cluster.pods):
        cluster.pods[name] = pod_running(name, started=iso(cluster.now))
    cluster.round()
    assert cluster.phase("exp-0000") == "Running"

    cluster.spec = make_spec(parallelTrialCount=2, maxTrialCount=2, suspend=True)
    cluster.round()
    assert cluster.status["phase"] == "Suspended"
    assert cluster.pods == {}
    assert [cluster.phase(n) for n in ("exp-0000", "exp-0001")] == ["Killed", "Killed"]
    cluster.tick()
    p = cluster.round()
    assert p.create_trials == [] and p.start_workloads == []

    cluster.spec = make_spec(parallelTrialCount=2, maxTrialCount=2, suspend=False)
    cluster.round()
    assert cluster.status["phase"] == "Running"
    assert sorted(cluster.pods) == ["exp-0000-a2", "exp-0001-a2"]
    assert {cluster.trials[n]["metadata"]["labels"][L_LAUNCH] for n in cluster.pods} == {"Resume"}
    assert cluster.status["configurations"] == 2
    for name in list(cluster.pods):
        cluster.pods[name] = pod_succeeded(name, '{"loss": 0.5}')
    cluster.round()
    assert (cluster.status["phase"], cluster.status["trialsSucceeded"], cluster.status["trialsKilled"]) == (
        "Succeeded",
        2,
        2,
    )


# =============================================================================================
# pod retention
# =============================================================================================


def test_pod_retention_delete_removes_finished_pods_of_recorded_trials():
    spec = make_spec(
        parallelTrialCount=1,
        maxTrialCount=1,
        trialTemplate={
            "podRetention": "Delete",
            "template": {"spec": {"containers": [{"name": "train", "image": "i"}]}},
        },
    )
    plan = run(spec, [succeeded(0, 0.5)], {"exp-0000": pod_succeeded("exp-0000", '{"loss": 0.5}')})
    assert plan.delete_workloads == ["exp-0000"]
    plan = run(
        make_spec(parallelTrialCount=1, maxTrialCount=1),
        [succeeded(0, 0.5)],
        {"exp-0000": pod_succeeded("exp-0000", '{"loss": 0.5}')},
    )
    assert plan.delete_workloads == []

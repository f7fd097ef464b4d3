"""Launching (planner/launch.py): trials started within parallelTrialCount, suggestions asked and
counted, queued trials and retries started once a slot is free and their backoff has passed, and
what the search algorithm is told. Rounds are built by hand with tests/support/rounds.py (its
Cluster carries plans out over many rounds)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from hpo_operator.api.vocabulary import A_NOT_BEFORE, A_RESTART, L_CONFIG, L_LAUNCH
from tests.support.rounds import (
    NOW,
    Cluster,
    ago,
    cond,
    created,
    created_names,
    exp_status,
    experiment_outcome,
    failed,
    iso,
    make_spec,
    pod_evicted,
    pod_failed,
    pod_running,
    pod_succeeded,
    run,
    succeeded,
    suggested,
    told,
    trial_statuses,
)

# =============================================================================================
# launching
# =============================================================================================


def test_first_round_creates_parallel_trial_count_trials_and_starts_their_pods():
    plan = run(make_spec(parallelTrialCount=3, maxTrialCount=10))
    assert created_names(plan) == ["exp-0000", "exp-0001", "exp-0002"]
    assert plan.start_workloads == ["exp-0000", "exp-0001", "exp-0002"]
    assert plan.delete_workloads == []
    st = exp_status(plan)
    assert experiment_outcome(plan) == ("Running", "Running")
    assert (st["suggestionCount"], st["configurations"], st["failedConfigurations"]) == (3, 3, 0)
    assert (st["trials"], st["trialsPending"], st["trialsRunning"]) == (3, 3, 0)
    assert st["startTime"] == iso(NOW)
    assert st["observedGeneration"] == 3
    assert cond(st["conditions"], "Running")["status"] == "True"
    assert cond(st["conditions"], "Succeeded")["status"] == "False"


def test_first_round_stops_at_max_trial_count():
    plan = run(make_spec(parallelTrialCount=5, maxTrialCount=2))
    assert created_names(plan) == ["exp-0000", "exp-0001"]
    assert exp_status(plan)["configurations"] == 2


def test_no_new_trials_while_all_slots_are_busy():
    trials = [suggested(0, "Running"), suggested(1, "Running")]
    pods = {"exp-0000": pod_running("exp-0000"), "exp-0001": pod_running("exp-0001")}
    plan = run(make_spec(parallelTrialCount=2), trials, pods)
    assert plan.create_trials == [] and plan.start_workloads == []
    assert plan.trial_status == {}  # nothing changed about the running trials
    assert exp_status(plan)["suggestionCount"] == 2


def test_a_finished_trial_frees_one_slot():
    trials = [suggested(0, "Running"), suggested(1, "Running")]
    pods = {"exp-0000": pod_succeeded("exp-0000", '{"loss": 1.5}'), "exp-0001": pod_running("exp-0001")}
    plan = run(make_spec(parallelTrialCount=2), trials, pods)
    assert created_names(plan) == ["exp-0002"]
    assert plan.start_workloads == ["exp-0002"]


def test_suggestion_count_continues_from_the_trials_and_the_status():
    trials = [succeeded(0, 1.0), succeeded(4, 2.0)]
    # Suggestions 1-3 and 5-8 repeated configurations the experiment has: nothing to launch for them.
    repeats = lambda i: {"x": "0" if i % 2 else "4"} if i not in (5, 9) else {"x": str(i)}  # noqa: E731
    assert created_names(run(make_spec(parallelTrialCount=1), trials, suggest=repeats)) == ["exp-0005"]
    plan = run(
        make_spec(parallelTrialCount=1),
        trials,
        status={"suggestionCount": 9},
        suggest=lambda i: {"x": str(i)} if i == 9 else {"x": "0"},
    )
    assert created_names(plan) == ["exp-0009"]


def test_suggestions_lost_in_a_round_cut_short_are_launched_first():
    """Suggestions 1 and 2 were asked, and 3's Trial made, when the round was cut short (the
    operator killed, the API server gone between two creates): 1 and 2 run under their own
    numbers before anything new is asked; a grid would otherwise run out with them unused."""
    trials = [succeeded(0, 1.0), suggested(3, "Running")]
    pods = {"exp-0003": pod_running("exp-0003")}
    plan = run(make_spec(parallelTrialCount=3), trials, pods, status={"suggestionCount": 4})
    assert created_names(plan) == ["exp-0001", "exp-0002"]
    assert created(plan, "exp-0001")["spec"]["parameters"] == [{"name": "x", "value": "1"}]
    assert created(plan, "exp-0002")["spec"]["suggestionIndex"] == 2
    assert exp_status(plan)["suggestionCount"] == 4
    assert exp_status(plan)["configurations"] == 4


def test_a_suggestion_of_an_existing_configuration_is_skipped_and_told():
    trials = [succeeded(0, 0.7), suggested(1, "Running")]
    pods = {"exp-0001": pod_running("exp-0001")}
    answers = {2: {"x": "0"}, 3: {"x": "1"}, 4: {"x": "44"}}
    plan = run(make_spec(parallelTrialCount=2), trials, pods, suggest=lambda i: answers[i])
    assert created_names(plan) == ["exp-0004"]
    assert created(plan, "exp-0004")["spec"]["parameters"] == [{"name": "x", "value": "44"}]
    assert told(plan)[2] == (0.7, False)  # the sampler hears the known result of the duplicate
    assert 3 not in told(plan)  # still running: nothing to tell
    assert exp_status(plan)["suggestionCount"] == 5


def test_queued_trials_start_before_new_suggestions():
    queued = suggested(3, "Pending", attempt=2, reason="WaitingForSlot")
    plan = run(make_spec(parallelTrialCount=1), [failed(3, "OOMKilled", retriedBy="exp-0003-a2"), queued])
    assert plan.start_workloads == ["exp-0003-a2"]
    assert plan.create_trials == []


# =============================================================================================
# the slots pods hold, and retries waiting for their backoff
# =============================================================================================


def test_a_stranded_pod_does_not_hold_a_slot_but_one_shutting_down_does():
    def plan_with(deleted_ago: float):
        old_pod = pod_running("exp-0000")
        old_pod["metadata"]["deletionTimestamp"] = ago(deleted_ago)
        old_pod["spec"]["nodeName"] = "node-a"
        trials = [
            failed(0, "Infrastructure", retriedBy="exp-0000-a2"),
            suggested(0, "Pending", attempt=2, reason="Backoff"),
        ]
        return run(make_spec(parallelTrialCount=1, maxTrialCount=1), trials, {"exp-0000": old_pod})

    assert plan_with(60).start_workloads == ["exp-0000-a2"]
    assert plan_with(-20).start_workloads == []


def test_a_terminating_pod_of_a_killed_trial_still_holds_its_slot():
    terminating = pod_running("exp-0000", started=ago(700))
    terminating["metadata"]["deletionTimestamp"] = ago(1)
    terminating["metadata"]["deletionGracePeriodSeconds"] = 30
    trials = [suggested(0, "Killed", reason="Timeout", failureClass="Timeout", completionTime=ago(1))]
    plan = run(
        make_spec(parallelTrialCount=1, maxTrialCount=5, maxTrialDurationSeconds=600), trials, {"exp-0000": terminating}
    )
    assert plan.start_workloads == []


def test_a_retry_starts_once_its_backoff_has_passed():
    retry = suggested(
        0, "Pending", attempt=2, reason="Backoff", annotations={A_NOT_BEFORE: iso(NOW + timedelta(seconds=3))}
    )
    trials = [failed(0, retriedBy="exp-0000-a2", completed=ago(2)), retry]
    plan = run(make_spec(parallelTrialCount=1, maxTrialCount=1), trials)
    assert plan.start_workloads == []
    assert plan.requeue_after == pytest.approx(3)
    plan = run(make_spec(parallelTrialCount=1, maxTrialCount=1), trials, now=NOW + timedelta(seconds=3))
    assert plan.start_workloads == ["exp-0000-a2"]
    assert trial_statuses(plan)["exp-0000-a2"]["reason"] == "PodCreated"


# =============================================================================================
# what the search algorithm is told
# =============================================================================================


def test_suspended_configurations_are_not_told_as_failed():
    spec = make_spec(suspend=True)
    trials = [suggested(0, "Killed", reason="Suspended"), failed(1, "Error")]
    plan = run(spec, trials, status={"phase": "Suspended"})
    assert exp_status(plan)["failedConfigurations"] == 1
    assert told(plan)[1] == (None, True)
    assert 0 not in told(plan)


# =============================================================================================
# several rounds: the cluster carries the plans out
# =============================================================================================


def test_cluster_never_runs_more_pods_than_parallel_trial_count():
    """Many rounds with every kind of fate; the bound holds after every round, and the experiment ends."""
    spec = make_spec(parallelTrialCount=3, maxTrialCount=12, retryPolicy={"maxRetries": 1, "backoffSeconds": 5})
    cluster = Cluster(spec)
    fates = {0: "oom", 1: "error", 2: "ok", 3: "evicted"}
    user_added = restart_asked = False
    for _ in range(200):
        cluster.round()
        assert len(cluster.unfinished_pods()) <= 3, cluster.unfinished_pods()
        if cluster.status.get("phase") in ("Succeeded", "Failed"):
            break
        cluster.tick()
        for name, p in list(cluster.pods.items()):
            phase = p["status"]["phase"]
            if phase == "Pending":
                cluster.pods[name] = pod_running(name, started=iso(cluster.now))
            elif phase == "Running":
                x = int(dict((q["name"], q["value"]) for q in cluster.trials[name]["spec"]["parameters"])["x"])
                fate = fates[x % 4]
                if fate == "oom" and cluster.trials[name]["spec"]["attempt"] > 1:
                    fate = "ok"  # recovered by its retry
                cluster.pods[name] = {
                    "ok": lambda name=name, x=x: pod_succeeded(name, json.dumps({"loss": x / 100})),
                    "oom": lambda name=name: pod_failed(name, 137, "OOMKilled"),
                    "error": lambda name=name: pod_failed(name, 1),
                    "evicted": lambda name=name: pod_evicted(name),
                }[fate]()
        if not user_added and len(cluster.trials) >= 4:
            cluster.add_user_trial("my-run", {"x": "502"})  # 502 % 4 == 2: it succeeds
            user_added = True
        if not restart_asked and cluster.phase("exp-0001") == "Failed":
            cluster.annotate("exp-0001", A_RESTART, "1")
            restart_asked = True
    else:
        pytest.fail("the experiment did not finish")

    assert user_added and restart_asked
    st = cluster.status
    assert (st["phase"], cond(st["conditions"], "Succeeded")["reason"]) == ("Succeeded", "MaxTrialsReached")
    assert st["configurations"] == 12
    assert all(cluster.phase(n) in ("Succeeded", "Failed", "Killed") for n in cluster.trials)
    assert cluster.phase("my-run") == "Succeeded"
    assert cluster.trials["exp-0001-a2"]["metadata"]["labels"][L_LAUNCH] == "Restart"
    assert A_RESTART not in cluster.trials["exp-0001"]["metadata"]["annotations"]
    # x % 4 == 0: OOMKilled once, then recovered by a retry.
    assert cluster.phase("exp-0000") == "Failed" and cluster.phase("exp-0000-a2") == "Succeeded"
    assert cluster.trials["exp-0000-a2"]["metadata"]["labels"][L_LAUNCH] == "Retry"
    # Evicted (x % 4 == 3) every time: retried once, then the configuration failed.
    assert cluster.phase("exp-0003-a2") == "Failed" and "exp-0003-a3" not in cluster.trials
    assert st["currentOptimalTrial"]["objectiveValue"] == 0.0
    # Every configuration is one suggestion index (or the user's run) and its trials share its config label.
    by_config: dict[str, set] = {}
    for body in cluster.trials.values():
        by_config.setdefault(body["metadata"]["labels"][L_CONFIG], set()).add(
            tuple((q["name"], q["value"]) for q in body["spec"]["parameters"])
        )
    assert len(by_config) == 12 and all(len(v) == 1 for v in by_config.values())

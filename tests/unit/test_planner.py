"""The experiment's decisions (hpo_operator.planner.plan), on hand-made Trials and pods.

Each test builds what the cluster would hold (Trial bodies, pods keyed by trial name; the builders
are in tests/support/rounds.py) and checks the plan. The `Cluster` helper at the end carries plans out
round after round, the way the handlers do, for rules that only show over several rounds.
"""

from __future__ import annotations

import copy
import json
from datetime import timedelta

import pytest

from hpo_operator import planner
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.api.vocabulary import (
    A_AUTHOR,
    A_AUTHOR_SIGNATURE,
    A_NOT_BEFORE,
    A_RESTART,
    A_RESTART_AUTHOR,
    A_RESTART_AUTHOR_SIGNATURE,
    A_RESTART_REQUEST,
    L_ATTEMPT,
    L_CONFIG,
    L_EXPERIMENT,
    L_LAUNCH,
    L_LINEAGE,
    L_TRIAL,
)
from hpo_operator.controller.loop import settle_refusals
from hpo_operator.core import metrics
from hpo_operator.core.podstate import PodObservation
from hpo_operator.core.space import config_hash
from hpo_operator.planner import ExperimentView, backoff_seconds, goal_reached, is_better, needs_log, validate_spec
from hpo_operator.workloads.observe import observe_workload
from tests.support.rounds import (
    EARLIER,
    EXP,
    EXP_UID,
    NOW,
    NS,
    ago,
    cond,
    counting,
    created,
    created_names,
    event_reasons,
    exhausted_after,
    exp_status,
    experiment_outcome,
    failed,
    iso,
    make_spec,
    owner_refs,
    pod,
    pod_evicted,
    pod_failed,
    pod_pending,
    pod_running,
    pod_succeeded,
    pod_waiting,
    run,
    succeeded,
    suggested,
    told,
    trial,
    trial_statuses,
    user_trial,
)
from tests.support.simulate import MemoryCluster

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


def test_a_new_trial_body():
    body = created(run(make_spec(parallelTrialCount=1)), "exp-0000")
    assert body["apiVersion"] == "hpo.dev/v1alpha1" and body["kind"] == "Trial"
    meta = body["metadata"]
    assert (meta["name"], meta["namespace"]) == ("exp-0000", NS)
    assert meta["ownerReferences"] == owner_refs()
    assert meta["labels"][L_EXPERIMENT] == EXP
    assert meta["labels"][L_CONFIG] == config_hash({"x": "0"})
    assert meta["labels"][L_ATTEMPT] == "1"
    assert meta["labels"][L_LINEAGE] == "exp-0000"
    assert meta["labels"][L_LAUNCH] == "Suggestion"
    assert meta["labels"][L_TRIAL] == "exp-0000"
    assert A_NOT_BEFORE not in meta["annotations"]
    assert body["spec"] == {
        "experimentName": EXP,
        "attempt": 1,
        "suggestionIndex": 0,
        "parameters": [{"name": "x", "value": "0"}],
    }
    assert body["status"]["phase"] == "Pending"
    assert body["status"]["reason"] == "PodCreated"
    assert body["status"]["parameterSummary"] == "x=0"


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
# results
# =============================================================================================


def test_succeeded_pod_with_termination_message_succeeds_the_trial():
    plan = run(
        make_spec(parallelTrialCount=1, maxTrialCount=5),
        [suggested(0, "Running")],
        {"exp-0000": pod_succeeded("exp-0000", '{"loss": 0.5, "other": 3}')},
    )
    st = trial_statuses(plan)["exp-0000"]
    assert st["phase"] == "Succeeded"
    assert st["reason"] == "Completed"
    assert st["objectiveValue"] == 0.5
    assert st["exitCode"] == 0
    assert st["completionTime"] == iso(NOW)
    assert [(m["name"], m["value"]) for m in st["metrics"]] == [("loss", 0.5)]
    assert cond(st["conditions"], "Succeeded")["status"] == "True"
    assert "TrialSucceeded" in event_reasons(plan, "exp-0000")
    best = exp_status(plan)["currentOptimalTrial"]
    assert best["trialName"] == "exp-0000" and best["objectiveValue"] == 0.5
    assert best["parameters"] == [{"name": "x", "value": "0"}]
    assert exp_status(plan)["trialsSucceeded"] == 1
    assert told(plan)[0] == (0.5, False)
    assert created_names(plan) == ["exp-0001"]  # its slot is reused at once


def test_additional_metrics_are_recorded():
    spec = make_spec(objective={"additionalMetricNames": ["accuracy"]})
    plan = run(
        spec,
        [suggested(0, "Running")],
        {"exp-0000": pod_succeeded("exp-0000", '{"step": 9, "loss": 0.5, "accuracy": 0.9}')},
    )
    metrics = {m["name"]: (m["value"], m.get("step")) for m in trial_statuses(plan)["exp-0000"]["metrics"]}
    assert metrics == {"loss": (0.5, 9), "accuracy": (0.9, 9)}


def test_succeeded_without_the_objective_fails_with_metrics_unavailable():
    spec = make_spec(parallelTrialCount=1, maxTrialCount=5)
    plan = run(spec, [suggested(0, "Running")], {"exp-0000": pod_succeeded("exp-0000", '{"accuracy": 0.9}')})
    st = trial_statuses(plan)["exp-0000"]
    assert st["phase"] == "Failed"
    assert st["reason"] == "MetricsUnavailable"
    assert st["failureClass"] == "MetricsUnavailable"
    assert "loss" in st["message"]
    assert cond(st["conditions"], "Succeeded")["status"] == "False"
    # MetricsUnavailable is not retried by default: the configuration has failed.
    assert all(b["metadata"]["labels"][L_LAUNCH] != "Retry" for b in plan.create_trials)
    assert exp_status(plan)["failedConfigurations"] == 1


def test_metrics_unavailable_is_retried_when_listed_in_retry_on():
    spec = make_spec(retryPolicy={"retryOn": ["MetricsUnavailable"]})
    plan = run(spec, [suggested(0, "Running")], {"exp-0000": pod_succeeded("exp-0000")})
    assert created(plan, "exp-0000-a2")["metadata"]["labels"][L_LAUNCH] == "Retry"


def test_auto_reads_the_log_when_the_termination_message_lacks_the_objective():
    logs = {"exp-0000": "epoch 1 loss=0.9\nepoch 2 loss=0.25 step=2\n"}
    plan = run(make_spec(), [suggested(0, "Running")], {"exp-0000": pod_succeeded("exp-0000")}, logs)
    st = trial_statuses(plan)["exp-0000"]
    assert (st["phase"], st["objectiveValue"]) == ("Succeeded", 0.25)


def test_stdout_log_source_ignores_the_termination_message():
    spec = make_spec(metricsCollector={"source": "StdoutLog"})
    pods = {"exp-0000": pod_succeeded("exp-0000", '{"loss": 0.1}')}
    plan = run(spec, [suggested(0, "Running")], pods, {"exp-0000": "loss=0.7"})
    assert trial_statuses(plan)["exp-0000"]["objectiveValue"] == 0.7
    plan = run(spec, [suggested(0, "Running")], pods, {})
    assert trial_statuses(plan)["exp-0000"]["reason"] == "MetricsUnavailable"


def test_a_number_that_cannot_be_read_fails_the_trial_saying_so_and_not_the_round():
    """A 5,000-digit loss in the termination message: Python's json cannot make it an int (its
    ValueError failed every round of the experiment); now it is no sample, and the trial says why."""
    pods = {"exp-0000": pod_succeeded("exp-0000", '{"loss": ' + "1" * 5000 + "}")}
    plan = run(make_spec(), [suggested(0, "Running")], pods)
    st = trial_statuses(plan)["exp-0000"]
    assert (st["phase"], st["reason"]) == ("Failed", "MetricsUnavailable")
    assert st["message"] == (
        "the trial succeeded but reported no loss metric (Auto); the value of loss could not be read as a "
        "number: '111111111111111111111111'… (5000 characters)"
    )


def test_a_line_that_was_not_read_is_said_in_the_trials_message():
    logs = {"exp-0000": "x" * 200_000 + "\nloss=0.25\n"}
    plan = run(make_spec(), [suggested(0, "Running")], {"exp-0000": pod_succeeded("exp-0000")}, logs)
    st = trial_statuses(plan)["exp-0000"]
    assert (st["phase"], st["objectiveValue"]) == ("Succeeded", 0.25)
    assert st["message"] == "not read: 1 line longer than 16384 bytes (the longest 200000)"


def test_a_finished_trial_waits_for_its_output_to_be_read_whole():
    """The loop parses within a budget per round: a succeeded pod whose output is not read whole
    yet is decided in a later round, not failed for lack of metrics."""
    trials = [suggested(0, "Running")]
    pods = {"exp-0000": pod_succeeded("exp-0000")}
    plan = run(make_spec(), trials, pods, outputs={"exp-0000": metrics.Output(complete=False)})
    assert "exp-0000" not in trial_statuses(plan) and plan.requeue_after is not None
    whole = metrics.read_final("Auto", "loss", None, "loss=0.5", ["loss"])
    plan = run(make_spec(), trials, pods, outputs={"exp-0000": whole})
    assert trial_statuses(plan)["exp-0000"]["objectiveValue"] == 0.5


def test_termination_message_source_ignores_the_log():
    spec = make_spec(metricsCollector={"source": "TerminationMessage"})
    plan = run(spec, [suggested(0, "Running")], {"exp-0000": pod_succeeded("exp-0000")}, {"exp-0000": "loss=0.7"})
    assert trial_statuses(plan)["exp-0000"]["reason"] == "MetricsUnavailable"


def wants_log(spec, t, pod, now=NOW):
    """needs_log() on the pod as the loop observes it."""
    return needs_log(spec, t, planner.observe_pods(spec, [t], {t.name: pod} if pod else {}, now).get(t.name))


def test_needs_log():
    t = suggested(0, "Running")
    with_objective = pod_succeeded("exp-0000", '{"loss": 1}')
    without = pod_succeeded("exp-0000", '{"acc": 1}')
    # "final": read the log once, because the pod succeeded and the planner will want its metrics.
    assert wants_log(make_spec(), t, without) == "final"
    assert wants_log(make_spec(), t, with_objective) is None
    assert wants_log(make_spec(), t, None) is None
    assert wants_log(make_spec(), t, pod_running("exp-0000")) is None
    assert wants_log(make_spec(), t, pod_failed("exp-0000")) is None
    assert wants_log(make_spec(), succeeded(0, 1.0), without) is None  # already recorded
    assert wants_log(make_spec(metricsCollector={"source": "StdoutLog"}), t, with_objective) == "final"
    assert wants_log(make_spec(metricsCollector={"source": "TerminationMessage"}), t, without) is None


def test_the_planner_decides_on_the_observations_it_is_given():
    """The loop observes each pod once (observe_pods) and hands the observations to the planner:
    the pod's body is not observed a second time. Here the pod still looks Running, but the round's
    observation says its container failed, and the trial fails by that."""
    spec = make_spec()
    t = suggested(0, "Running")
    seen = PodObservation("Failed", "Error", "the container exited with code 3 (Error)", "Error", exit_code=3)
    plan = run(spec, [t], {"exp-0000": pod_running("exp-0000")}, observations={"exp-0000": seen})
    st = trial_statuses(plan)["exp-0000"]
    assert (st["phase"], st["reason"], st["failureClass"], st["exitCode"]) == ("Failed", "Error", "Error", 3)


def test_pods_are_observed_with_the_rounds_clock():
    """A pod left terminating on a lost node is Failed only by the round's clock: the observations
    the loop chooses logs by are the planner's, taken with `now`."""
    spec = make_spec(trialTemplate={"checkpoint": {"volumeClaimTemplate": {"size": "1Gi"}, "mountPath": "/ckpt"}})
    t = suggested(0, "Running")
    stuck = pod_running("exp-0000")
    stuck["metadata"]["deletionTimestamp"] = ago(60)
    stuck["spec"]["nodeName"] = "node-1"
    obs = planner.observe_pods(spec, [t], {"exp-0000": stuck}, NOW)["exp-0000"]
    assert (obs.phase, obs.reason) == ("Failed", "NodeLost")
    assert needs_log(spec, t, obs) == "final"  # what the lost attempt reported, for its resumption
    assert trial_statuses(run(spec, [t], {"exp-0000": stuck}))["exp-0000"]["reason"] == "NodeLost"


REFUSAL = planner.Refusal("InvalidPod", 'Pod "exp-0000" is invalid: metadata.labels: Invalid value: "not a label!"')


def test_a_create_the_api_server_refused_fails_the_trial_next_round():
    """The executor reports the refused create; the next round fails the trial (not started again)
    with the reason, failure class, message, condition and Event the operator has always written."""
    pending = suggested(0, "Pending", reason="PodCreated")
    plan = run(make_spec(parallelTrialCount=1), [pending], refused={"exp-0000": REFUSAL})
    st = trial_statuses(plan)["exp-0000"]
    message = f"the API server refused the trial's Pod: {REFUSAL.message}"
    assert (st["phase"], st["reason"], st["failureClass"], st["message"]) == (
        "Failed",
        "InvalidPod",
        "Startup",
        message,
    )
    assert st["completionTime"] == iso(NOW)
    assert [(c["type"], c["status"], c["reason"], c["message"]) for c in st["conditions"]] == [
        ("Succeeded", "False", "InvalidPod", message)
    ]
    assert [(e.target, e.type, e.reason, e.message) for e in plan.events if e.target == "exp-0000"] == [
        ("exp-0000", "Warning", "PodCreateFailed", REFUSAL.message)
    ]
    assert "exp-0000" not in plan.start_workloads
    assert created_names(plan) == ["exp-0001"]  # its one slot goes to the next suggestion


def test_a_refused_job_says_what_was_refused():
    spec = make_spec(
        trialTemplate={
            "template": None,
            "job": {"spec": {"template": {"spec": {"containers": [{"name": "train", "image": "trainer:1"}]}}}},
        }
    )
    plan = run(spec, [suggested(0, "Pending", reason="PodCreated")], refused={"exp-0000": REFUSAL})
    assert trial_statuses(plan)["exp-0000"]["message"] == f"the API server refused the trial's Job: {REFUSAL.message}"


def test_without_the_refusal_the_trial_is_started_again():
    """An operator that restarted has lost the report: the create is tried again (and the API server
    refuses it again, which is reported again), the trial neither lost nor duplicated."""
    plan = run(make_spec(parallelTrialCount=1), [suggested(0, "Pending", reason="PodCreated")])
    assert plan.start_workloads == ["exp-0000"] and plan.create_trials == []
    assert "exp-0000" not in plan.trial_status or plan.trial_status["exp-0000"].phase == "Pending"


def test_a_refusal_of_a_finished_trial_or_of_a_trial_with_a_pod_changes_nothing():
    done = failed(0, "Startup")
    running = suggested(1, "Running")
    plan = run(
        make_spec(maxTrialCount=2),
        [done, running],
        {"exp-0001": pod_running("exp-0001")},
        refused={"exp-0000": REFUSAL, "exp-0001": REFUSAL},
    )
    assert "exp-0000" not in plan.trial_status
    assert "exp-0001" not in plan.trial_status
    assert "PodCreateFailed" not in event_reasons(plan)


def test_running_pod_marks_the_trial_running():
    plan = run(make_spec(), [suggested(0, "Pending", reason="PodCreated")], {"exp-0000": pod_running("exp-0000")})
    st = trial_statuses(plan)["exp-0000"]
    assert (st["phase"], st["startTime"]) == ("Running", EARLIER)
    assert cond(st["conditions"], "Succeeded")["status"] == "Unknown"


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
# failures and retries
# =============================================================================================


def test_oom_killed_trial_is_retried_after_the_backoff():
    plan = run(
        make_spec(parallelTrialCount=1),
        [suggested(0, "Running")],
        {"exp-0000": pod_failed("exp-0000", 137, "OOMKilled")},
    )
    st = trial_statuses(plan)["exp-0000"]
    assert (st["phase"], st["reason"], st["failureClass"], st["exitCode"]) == ("Failed", "OOMKilled", "OOMKilled", 137)
    assert st["retriedBy"] == "exp-0000-a2"
    retry = created(plan, "exp-0000-a2")
    assert retry["spec"]["retryOf"] == "exp-0000"
    assert retry["spec"]["attempt"] == 2
    assert retry["spec"]["suggestionIndex"] == 0
    assert retry["spec"]["parameters"] == [{"name": "x", "value": "0"}]
    labels = retry["metadata"]["labels"]
    assert labels[L_LAUNCH] == "Retry"
    assert labels[L_ATTEMPT] == "2"
    assert labels[L_LINEAGE] == "exp-0000"
    assert labels[L_CONFIG] == config_hash({"x": "0"})
    assert retry["metadata"]["ownerReferences"] == owner_refs()
    # Default backoff: 5 s after the failure was recorded.
    assert retry["metadata"]["annotations"][A_NOT_BEFORE] == iso(NOW + timedelta(seconds=5))
    assert (retry["status"]["phase"], retry["status"]["reason"]) == ("Pending", "Backoff")
    # It waits for its backoff without a pod, so the free slot goes to the next suggestion.
    assert plan.start_workloads == ["exp-0001"]
    assert plan.requeue_after == pytest.approx(5)
    assert "TrialRetried" in event_reasons(plan, None)
    # Retries do not count as configurations.
    assert exp_status(plan)["configurations"] == 2
    assert exp_status(plan)["failedConfigurations"] == 0


def test_a_retry_named_in_retried_by_but_never_created_is_created():
    # The operator wrote the failed trial's status (retriedBy) and was killed before the retry's
    # create landed: the next one, which lists every Trial first, makes it under the same name.
    failed = suggested(
        0,
        "Failed",
        reason="OOMKilled",
        failureClass="OOMKilled",
        retriedBy="exp-0000-a2",
        completionTime=iso(NOW - timedelta(seconds=60)),
    )
    plan = run(make_spec(maxTrialCount=1), [failed], {})
    retry = created(plan, "exp-0000-a2")
    assert (retry["spec"]["retryOf"], retry["spec"]["attempt"]) == ("exp-0000", 2)
    assert exp_status(plan)["phase"] == "Running"


def test_a_trial_whose_node_is_lost_is_retried_and_frees_its_slot():
    stranded = pod_running("exp-0000")
    stranded["metadata"]["deletionTimestamp"] = ago(60)
    stranded["spec"]["nodeName"] = "node-a"
    plan = run(make_spec(parallelTrialCount=1, maxTrialCount=3), [suggested(0, "Running")], {"exp-0000": stranded})
    st = trial_statuses(plan)["exp-0000"]
    assert (st["phase"], st["reason"], st["failureClass"]) == ("Failed", "NodeLost", "Infrastructure")
    assert st["retriedBy"] == "exp-0000-a2"
    assert "exp-0000" not in plan.delete_workloads  # already being deleted


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


def test_a_trial_whose_pod_is_still_within_its_grace_period_is_rechecked_then():
    terminating = pod_running("exp-0000")
    terminating["metadata"]["deletionTimestamp"] = ago(-10)
    terminating["spec"]["nodeName"] = "node-a"
    plan = run(make_spec(parallelTrialCount=1, maxTrialCount=3), [suggested(0, "Running")], {"exp-0000": terminating})
    assert trial_statuses(plan).get("exp-0000", {}).get("phase", "Running") == "Running"
    assert plan.create_trials == [] and plan.start_workloads == []
    assert plan.requeue_after == pytest.approx(25)


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


@pytest.mark.parametrize(
    "make_pod, cls",
    [
        (lambda n: pod_evicted(n), "Infrastructure"),
        (lambda n: pod_failed(n, 137, "OOMKilled"), "OOMKilled"),
    ],
)
def test_default_retry_on_classes_are_retried(make_pod, cls):
    plan = run(make_spec(), [suggested(0, "Running")], {"exp-0000": make_pod("exp-0000")})
    assert trial_statuses(plan)["exp-0000"]["failureClass"] == cls
    assert "exp-0000-a2" in created_names(plan)


def test_error_is_not_retried_by_default_and_counts_as_a_failed_configuration():
    plan = run(make_spec(parallelTrialCount=1), [suggested(0, "Running")], {"exp-0000": pod_failed("exp-0000", 3)})
    st = trial_statuses(plan)["exp-0000"]
    assert (st["phase"], st["failureClass"], st["exitCode"]) == ("Failed", "Error", 3)
    assert "retriedBy" not in st
    assert created_names(plan) == ["exp-0001"]  # the next suggestion, no retry
    assert exp_status(plan)["failedConfigurations"] == 1
    assert exp_status(plan)["trialsFailed"] == 1
    assert told(plan)[0] == (None, True)


def test_error_is_retried_when_listed_in_retry_on():
    spec = make_spec(retryPolicy={"retryOn": ["Error"]})
    plan = run(spec, [suggested(0, "Running")], {"exp-0000": pod_failed("exp-0000", 3)})
    assert created(plan, "exp-0000-a2")["metadata"]["labels"][L_LAUNCH] == "Retry"
    assert exp_status(plan)["failedConfigurations"] == 0


def test_retries_stop_at_max_retries():
    spec = make_spec(retryPolicy={"maxRetries": 1})
    trials = [failed(0, retriedBy="exp-0000-a2"), failed(0, attempt=2)]
    plan = run(spec, trials)
    assert not any(n.startswith("exp-0000-a") for n in created_names(plan))
    assert exp_status(plan)["failedConfigurations"] == 1
    assert exp_status(plan)["trialsRetried"] == 1


def test_second_retry_waits_twice_as_long():
    spec = make_spec(retryPolicy={"maxRetries": 2, "backoffSeconds": 5})
    trials = [failed(0, retriedBy="exp-0000-a2", completed=ago(100)), failed(0, attempt=2, completed=ago(1))]
    retry = created(run(spec, trials), "exp-0000-a3")
    assert retry["spec"]["retryOf"] == "exp-0000-a2"
    assert retry["spec"]["attempt"] == 3
    assert retry["metadata"]["labels"][L_LINEAGE] == "exp-0000"
    assert retry["metadata"]["annotations"][A_NOT_BEFORE] == iso(NOW + timedelta(seconds=10 - 1))


def test_max_retries_zero_never_retries():
    plan = run(
        make_spec(retryPolicy={"maxRetries": 0}),
        [suggested(0, "Running")],
        {"exp-0000": pod_failed("exp-0000", 137, "OOMKilled")},
    )
    assert "exp-0000-a2" not in created_names(plan)
    assert exp_status(plan)["failedConfigurations"] == 1


def test_backoff_is_doubled_and_capped():
    spec = make_spec(retryPolicy={"backoffSeconds": 4, "maxBackoffSeconds": 20})
    assert [backoff_seconds(spec, n) for n in range(5)] == [4, 8, 16, 20, 20]


def test_retry_without_backoff_starts_at_once():
    spec = make_spec(parallelTrialCount=1, maxTrialCount=1, retryPolicy={"backoffSeconds": 0})
    plan = run(spec, [suggested(0, "Running")], {"exp-0000": pod_failed("exp-0000", 137, "OOMKilled")})
    assert plan.start_workloads == ["exp-0000-a2"]
    assert created(plan, "exp-0000-a2")["status"]["reason"] == "PodCreated"


def test_a_configuration_that_succeeded_is_never_retried():
    # Two runs of one configuration (e.g. after a restart): one succeeded, one was OOMKilled later.
    trials = [succeeded(0, 0.4), failed(0, "OOMKilled", attempt=2, launch="Restart")]
    plan = run(make_spec(maxTrialCount=1), trials)
    assert plan.create_trials == []
    assert exp_status(plan)["failedConfigurations"] == 0
    assert experiment_outcome(plan) == ("Succeeded", "MaxTrialsReached")


def test_failed_trial_whose_retry_is_in_view_is_not_retried_again():
    plan = run(
        make_spec(maxTrialCount=1),
        [failed(0, retriedBy="exp-0000-a2"), suggested(0, "Running", attempt=2)],
        {"exp-0000-a2": pod_running("exp-0000-a2")},
    )
    assert plan.create_trials == []


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


def test_resume_reruns_suspended_trials_without_spending_retries():
    spec = make_spec(parallelTrialCount=3, retryPolicy={"maxRetries": 1})
    trials = [
        suggested(0, "Killed", reason="Suspended"),
        failed(1, "OOMKilled", retriedBy="exp-0001-a2"),
        suggested(1, "Killed", attempt=2, reason="Suspended"),  # its one retry was stopped by suspend
        failed(2, "OOMKilled"),  # waited for the resume to be retried
    ]
    plan = run(spec, trials, status={"phase": "Suspended"})
    assert experiment_outcome(plan) == ("Running", "Running")
    assert "Resumed" in event_reasons(plan, None)
    resumed = created(plan, "exp-0000-a2")
    assert resumed["metadata"]["labels"][L_LAUNCH] == "Resume"
    assert resumed["spec"]["retryOf"] == "exp-0000"
    assert A_NOT_BEFORE not in resumed["metadata"]["annotations"]
    resumed = created(plan, "exp-0001-a3")
    assert resumed["metadata"]["labels"][L_LAUNCH] == "Resume"
    assert resumed["spec"]["attempt"] == 3
    assert created(plan, "exp-0002-a2")["metadata"]["labels"][L_LAUNCH] == "Retry"
    # The retry's backoff (5 s after a failure 60 s ago) has passed: all three start.
    assert sorted(plan.start_workloads) == ["exp-0000-a2", "exp-0001-a3", "exp-0002-a2"]
    assert exp_status(plan)["configurations"] == 3


def test_a_resumed_run_that_fails_still_has_its_retries():
    spec = make_spec(retryPolicy={"maxRetries": 1})
    trials = [
        suggested(0, "Killed", reason="Suspended", retriedBy="exp-0000-a2"),
        suggested(0, "Running", attempt=2, launch="Resume"),
    ]
    plan = run(spec, trials, {"exp-0000-a2": pod_failed("exp-0000-a2", 137, "OOMKilled")})
    retry = created(plan, "exp-0000-a3")
    assert retry["metadata"]["labels"][L_LAUNCH] == "Retry"
    assert retry["spec"]["retryOf"] == "exp-0000-a2"


def test_while_suspended_stopped_trials_stay_stopped():
    spec = make_spec(suspend=True)
    plan = run(spec, [suggested(0, "Killed", reason="Suspended")], status={"phase": "Suspended"})
    assert plan.create_trials == [] and plan.delete_workloads == []
    assert experiment_outcome(plan) == ("Suspended", "Suspended")
    assert "Suspended" not in event_reasons(plan, None)  # only announced once


# =============================================================================================
# restarts requested by a user
# =============================================================================================

# A restart request, once answered: it goes, with whoever asked for it.
ANSWERED = {A_RESTART: None, A_RESTART_AUTHOR: None, A_RESTART_AUTHOR_SIGNATURE: None}


def test_restart_annotation_reruns_a_failed_trial():
    t = failed(0, "Error", annotations={A_RESTART: "please"})
    plan = run(make_spec(parallelTrialCount=1, maxTrialCount=1), [t])
    assert plan.trial_metadata["exp-0000"] == {"annotations": ANSWERED}
    new = created(plan, "exp-0000-a2")
    assert new["metadata"]["labels"][L_LAUNCH] == "Restart"
    assert new["spec"]["retryOf"] == "exp-0000"
    assert new["spec"]["attempt"] == 2
    assert plan.start_workloads == ["exp-0000-a2"]
    st = trial_statuses(plan)["exp-0000"]
    assert st["retriedBy"] == "exp-0000-a2"
    accepted = cond(st["conditions"], "RestartAccepted")
    assert (accepted["status"], accepted["reason"]) == ("True", "Restarted")
    assert "RestartAccepted" in event_reasons(plan, "exp-0000")
    # A restart is not a new configuration, and the configuration no longer counts as failed.
    assert exp_status(plan)["configurations"] == 1
    assert exp_status(plan)["failedConfigurations"] == 0
    assert experiment_outcome(plan) == ("Running", "Running")


def test_a_restart_rerun_records_its_request_and_its_requester_as_its_author():
    """The requester's identity, as the admission webhook recorded it on the request, becomes the
    re-run's author (whose rights its workload is checked against), in place of the restarted
    trial's own."""
    plan = run(make_spec(parallelTrialCount=1, maxTrialCount=1), [failed(0, "Error", annotations={A_RESTART: "r-1"})])
    assert created(plan, "exp-0000-a2")["metadata"]["annotations"] == {A_RESTART_REQUEST: "r-1"}
    asked = {A_RESTART: "r-2", A_RESTART_AUTHOR: '{"username":"bob"}', A_RESTART_AUTHOR_SIGNATURE: "sig"}
    own = {A_AUTHOR: '{"username":"alice"}', A_AUTHOR_SIGNATURE: "alice-sig"}
    plan = run(make_spec(parallelTrialCount=1, maxTrialCount=1), [failed(0, "Error", annotations={**asked, **own})])
    assert created(plan, "exp-0000-a2")["metadata"]["annotations"] == {
        A_RESTART_REQUEST: "r-2",
        A_AUTHOR: '{"username":"bob"}',
        A_AUTHOR_SIGNATURE: "sig",
    }


def test_a_retry_keeps_the_author_of_the_trial_it_retries():
    own = {A_AUTHOR: '{"username":"alice"}', A_AUTHOR_SIGNATURE: "alice-sig"}
    spec = make_spec(parallelTrialCount=1, maxTrialCount=1, retryPolicy={"maxRetries": 1, "retryOn": ["OOMKilled"]})
    plan = run(spec, [failed(0, "OOMKilled", annotations=own)])
    retry = created(plan, "exp-0000-a2")
    assert {k: v for k, v in retry["metadata"]["annotations"].items() if k in own} == own


def restarted_then_crashed(rerun_phase: str, request_seen_again: str) -> list:
    """exp-0000 was restarted as exp-0000-a2 for request "r-1", but the operator stopped before it
    removed the annotation; the annotation now holds `request_seen_again`."""
    return [
        failed(0, "Error", annotations={A_RESTART: request_seen_again}),
        suggested(
            0,
            rerun_phase,
            attempt=2,
            launch="Restart",
            annotations={A_RESTART_REQUEST: "r-1"},
            **(
                {"reason": "Error", "failureClass": "Error", "completionTime": ago(30)}
                if rerun_phase == "Failed"
                else {}
            ),
        ),
    ]


@pytest.mark.parametrize("rerun_phase", ["Running", "Failed"])
def test_a_restart_request_seen_again_after_a_crash_is_not_run_twice(rerun_phase):
    pods = {"exp-0000-a2": pod_running("exp-0000-a2")} if rerun_phase == "Running" else {}
    plan = run(make_spec(parallelTrialCount=1, maxTrialCount=1), restarted_then_crashed(rerun_phase, "r-1"), pods)
    assert plan.create_trials == []
    assert plan.trial_metadata["exp-0000"] == {"annotations": ANSWERED}
    accepted = cond(trial_statuses(plan)["exp-0000"]["conditions"], "RestartAccepted")
    assert (accepted["status"], accepted["reason"]) == ("True", "Restarted")
    assert "exp-0000-a2" in accepted["message"] and "'r-1'" in accepted["message"]
    assert "RestartAccepted" not in event_reasons(plan, "exp-0000")


def test_a_new_restart_request_after_a_failed_rerun_runs_again():
    plan = run(make_spec(parallelTrialCount=1, maxTrialCount=1), restarted_then_crashed("Failed", "r-2"))
    assert created_names(plan) == ["exp-0000-a3"]
    assert created(plan, "exp-0000-a3")["metadata"]["annotations"] == {A_RESTART_REQUEST: "r-2"}


def test_restart_of_a_configuration_that_succeeded_is_refused():
    trials = [
        failed(0, "OOMKilled", retriedBy="exp-0000-a2", annotations={A_RESTART: ""}),
        succeeded(0, 0.3, attempt=2),
    ]
    plan = run(make_spec(maxTrialCount=1), trials)
    assert plan.trial_metadata["exp-0000"] == {"annotations": ANSWERED}
    assert plan.create_trials == []
    refused = cond(trial_statuses(plan)["exp-0000"]["conditions"], "RestartAccepted")
    assert (refused["status"], refused["reason"]) == ("False", "ConfigurationAlreadySucceeded")
    assert "exp-0000-a2" in refused["message"]
    assert "RestartRefused" in event_reasons(plan, "exp-0000")


def test_restart_of_a_succeeded_trial_is_refused():
    plan = run(make_spec(maxTrialCount=1), [succeeded(0, 0.3, annotations={A_RESTART: "1"})])
    assert plan.create_trials == []
    assert (
        cond(trial_statuses(plan)["exp-0000"]["conditions"], "RestartAccepted")["reason"]
        == "ConfigurationAlreadySucceeded"
    )


def test_restart_of_a_running_trial_is_refused():
    t = suggested(0, "Running", annotations={A_RESTART: "1"})
    plan = run(make_spec(parallelTrialCount=1), [t], {"exp-0000": pod_running("exp-0000")})
    assert plan.create_trials == []
    assert cond(trial_statuses(plan)["exp-0000"]["conditions"], "RestartAccepted")["reason"] == "TrialActive"
    assert plan.trial_metadata["exp-0000"] == {"annotations": ANSWERED}


def test_restart_while_the_configuration_runs_again_is_refused():
    trials = [
        failed(0, "OOMKilled", retriedBy="exp-0000-a2", annotations={A_RESTART: "1"}),
        suggested(0, "Running", attempt=2),
    ]
    plan = run(make_spec(parallelTrialCount=1), trials, {"exp-0000-a2": pod_running("exp-0000-a2")})
    assert cond(trial_statuses(plan)["exp-0000"]["conditions"], "RestartAccepted")["reason"] == "ConfigurationActive"
    assert plan.create_trials == []


FAILED_STATUS = {
    "phase": "Failed",
    "suggestionCount": 2,
    "conditions": [
        {"type": "Failed", "status": "True", "reason": "TooManyFailures", "message": "", "lastTransitionTime": EARLIER}
    ],
}


def test_restart_in_a_finished_experiment_runs_but_suggests_and_retries_nothing():
    trials = [failed(0, "Error", annotations={A_RESTART: "1"}), failed(1, "OOMKilled")]
    plan = run(make_spec(parallelTrialCount=3), trials, status=FAILED_STATUS)
    assert cond(trial_statuses(plan)["exp-0000"]["conditions"], "RestartAccepted")["reason"] == "Restarted"
    assert created_names(plan) == ["exp-0000-a2"]  # no retry of exp-0001, no new suggestion
    assert plan.start_workloads == ["exp-0000-a2"]
    st = exp_status(plan)
    assert (st["phase"], st["suggestionCount"]) == ("Failed", 2)
    assert st["conditions"] == FAILED_STATUS["conditions"]


def test_restart_waits_for_a_free_slot():
    trials = [failed(0, "Error", annotations={A_RESTART: "1"}), suggested(1, "Running")]
    plan = run(make_spec(parallelTrialCount=1), trials, {"exp-0001": pod_running("exp-0001")})
    assert created_names(plan) == ["exp-0000-a2"]
    assert plan.start_workloads == []
    assert created(plan, "exp-0000-a2")["status"]["reason"] == "WaitingForSlot"


# =============================================================================================
# Trials created by users
# =============================================================================================


def test_user_trial_with_valid_parameters_is_adopted_and_started():
    mine = user_trial("my-run", {"x": "0042.0"})
    plan = run(make_spec(parallelTrialCount=2, maxTrialCount=10), [mine])
    meta = plan.trial_metadata["my-run"]
    assert meta["ownerReferences"] == owner_refs()
    labels = meta["labels"]
    assert labels[L_CONFIG] == config_hash({"x": "42"})  # the canonical configuration
    assert labels[L_LAUNCH] == "User"
    assert labels[L_LINEAGE] == "my-run"
    assert labels[L_TRIAL] == "my-run"
    assert labels[L_EXPERIMENT] == EXP
    assert labels[L_ATTEMPT] == "1"
    st = trial_statuses(plan)["my-run"]
    assert st["phase"] == "Pending" and st["parameterSummary"] == "x=42"
    assert "ConfigurationAccepted" in event_reasons(plan, None)
    # It runs now and takes one slot; it counts as a configuration.
    assert plan.start_workloads[0] == "my-run"
    assert created_names(plan) == ["exp-0000"]
    assert exp_status(plan)["configurations"] == 2


def test_user_trial_of_a_configuration_that_succeeded_is_refused():
    mine = user_trial("my-run", {"x": "7.0"})
    plan = run(make_spec(maxTrialCount=1), [succeeded(7, 0.1), mine])
    st = trial_statuses(plan)["my-run"]
    assert (st["phase"], st["reason"]) == ("Refused", "ConfigurationAlreadySucceeded")
    assert "exp-0007" in st["message"]
    assert cond(st["conditions"], "Succeeded")["status"] == "False"
    # Not adopted: only labelled with its experiment, so selectors find it.
    assert plan.trial_metadata["my-run"] == {"labels": {"hpo.dev/experiment": "exp"}}
    assert "my-run" not in plan.start_workloads
    assert "ConfigurationRefused" in event_reasons(plan, None)
    assert exp_status(plan)["configurations"] == 1


def test_user_trial_of_a_running_configuration_is_refused():
    plan = run(
        make_spec(), [suggested(3, "Running"), user_trial("my-run", {"x": "3"})], {"exp-0003": pod_running("exp-0003")}
    )
    assert trial_statuses(plan)["my-run"]["reason"] == "ConfigurationActive"


@pytest.mark.parametrize("values", [{"x": "10001"}, {"x": "-1"}, {"x": "1.5"}, {"x": "big"}, {}, {"x": "1", "y": "2"}])
def test_user_trial_with_invalid_parameters_is_refused(values):
    plan = run(make_spec(), [user_trial("my-run", values)])
    st = trial_statuses(plan)["my-run"]
    assert (st["phase"], st["reason"]) == ("Refused", "InvalidParameters")
    assert "ownerReferences" not in plan.trial_metadata["my-run"] and "my-run" not in plan.start_workloads


def test_user_trial_in_a_finished_experiment_still_runs():
    status = {
        "phase": "Succeeded",
        "conditions": [
            {
                "type": "Succeeded",
                "status": "True",
                "reason": "GoalReached",
                "message": "",
                "lastTransitionTime": EARLIER,
            }
        ],
    }
    spec = make_spec(objective={"goal": 0.05})  # (without its goal, a GoalReached experiment goes on)
    plan = run(spec, [succeeded(0, 0.01), user_trial("my-run", {"x": "5"})], status=status)
    assert plan.trial_metadata["my-run"]["ownerReferences"] == owner_refs()
    assert plan.start_workloads == ["my-run"]
    assert plan.create_trials == []
    assert exp_status(plan)["phase"] == "Succeeded"
    assert exp_status(plan)["configurations"] == 2


def test_user_trial_in_a_finished_and_suspended_experiment_waits():
    status = {
        "phase": "Succeeded",
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
    plan = run(make_spec(suspend=True), [user_trial("my-run", {"x": "5"})], status=status)
    assert trial_statuses(plan)["my-run"]["phase"] == "Pending"
    assert plan.start_workloads == []


def test_refused_user_trial_is_left_alone_afterwards():
    first = run(make_spec(parallelTrialCount=1), [user_trial("my-run", {"x": "-5"})])
    mine = user_trial("my-run", {"x": "-5"})
    mine.body = {**mine.body, "status": trial_statuses(first)["my-run"]}
    plan = run(make_spec(parallelTrialCount=1), [mine])
    assert "my-run" not in plan.trial_status
    assert exp_status(plan)["configurations"] == 1  # just exp-0000


def test_user_trial_waits_for_a_free_slot():
    trials = [suggested(0, "Running"), user_trial("my-run", {"x": "50"}, created="2024-05-01T11:30:00Z")]
    plan = run(make_spec(parallelTrialCount=1), trials, {"exp-0000": pod_running("exp-0000")})
    assert trial_statuses(plan)["my-run"]["phase"] == "Pending"
    assert plan.start_workloads == []
    assert "my-run" in plan.trial_metadata


# =============================================================================================
# timeouts and pods that do not start
# =============================================================================================


def test_trial_running_past_its_max_duration_is_killed_with_timeout():
    spec = make_spec(parallelTrialCount=1, maxTrialCount=2, maxTrialDurationSeconds=600)
    trials = [suggested(0, "Running")]
    plan = run(spec, trials, {"exp-0000": pod_running("exp-0000", started=ago(601))})
    st = trial_statuses(plan)["exp-0000"]
    assert (st["phase"], st["reason"], st["failureClass"]) == ("Killed", "Timeout", "Timeout")
    assert "600" in st["message"]
    assert plan.delete_workloads == ["exp-0000"]
    assert "exp-0000-a2" not in created_names(plan)  # timeouts are not retried
    assert created_names(plan) == []  # its pod holds the slot until it is gone
    assert exp_status(plan)["trialsKilled"] == 1


def test_trial_within_its_max_duration_runs_on_and_is_woken_at_the_deadline():
    spec = make_spec(parallelTrialCount=1, maxTrialDurationSeconds=600)
    plan = run(spec, [suggested(0, "Running")], {"exp-0000": pod_running("exp-0000", started=ago(590))})
    assert plan.delete_workloads == [] and plan.trial_status == {}
    assert plan.requeue_after == pytest.approx(10)


def test_invalid_image_name_fails_at_once_and_is_not_retried():
    spec = make_spec(parallelTrialCount=1, maxTrialCount=1)
    plan = run(
        spec,
        [suggested(0, "Pending", reason="PodCreated")],
        {"exp-0000": pod_waiting("exp-0000", "InvalidImageName", created=ago(2))},
    )
    st = trial_statuses(plan)["exp-0000"]
    assert (st["phase"], st["reason"], st["failureClass"]) == ("Failed", "InvalidImageName", "Startup")
    assert plan.delete_workloads == ["exp-0000"]
    assert plan.create_trials == []
    assert exp_status(plan)["failedConfigurations"] == 1
    assert experiment_outcome(plan) == ("Succeeded", "MaxTrialsReached")


def test_startup_failure_is_not_retried_even_when_every_class_is():
    spec = make_spec(retryPolicy={"retryOn": ["Infrastructure", "OOMKilled", "Error", "MetricsUnavailable"]})
    plan = run(spec, [suggested(0, "Pending")], {"exp-0000": pod_waiting("exp-0000", "CreateContainerConfigError")})
    assert trial_statuses(plan)["exp-0000"]["failureClass"] == "Startup"
    assert "exp-0000-a2" not in created_names(plan)


def test_image_pull_back_off_waits_for_the_startup_timeout():
    spec = make_spec(parallelTrialCount=1, startupTimeoutSeconds=120)
    trials = [suggested(0, "Pending", reason="PodCreated")]
    plan = run(spec, trials, {"exp-0000": pod_waiting("exp-0000", "ImagePullBackOff", created=ago(100))})
    st = trial_statuses(plan)["exp-0000"]
    assert (st["phase"], st["reason"]) == ("Pending", "ImagePullBackOff")
    assert plan.delete_workloads == [] and plan.create_trials == []
    assert plan.requeue_after == pytest.approx(20)


def test_image_pull_back_off_past_the_startup_timeout_fails():
    spec = make_spec(parallelTrialCount=1, startupTimeoutSeconds=120)
    trials = [suggested(0, "Pending", reason="ImagePullBackOff")]
    plan = run(spec, trials, {"exp-0000": pod_waiting("exp-0000", "ImagePullBackOff", created=ago(121))})
    st = trial_statuses(plan)["exp-0000"]
    assert (st["phase"], st["reason"], st["failureClass"]) == ("Failed", "ImagePullBackOff", "Startup")
    assert "120" in st["message"]
    assert plan.delete_workloads == ["exp-0000"]
    assert "exp-0000-a2" not in created_names(plan)
    assert created_names(plan) == []  # its pod holds the slot until it is gone


def test_unschedulable_past_the_startup_timeout_fails():
    unschedulable = pod(
        "exp-0000",
        "Pending",
        created=ago(400),
        started=None,
        conditions=[
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/2 nodes are available"}
        ],
    )
    plan = run(make_spec(), [suggested(0, "Pending")], {"exp-0000": unschedulable})
    st = trial_statuses(plan)["exp-0000"]
    assert (st["phase"], st["reason"], st["failureClass"]) == ("Failed", "Unschedulable", "Startup")


def test_running_trial_whose_pod_disappeared_fails_and_is_retried():
    plan = run(make_spec(parallelTrialCount=1, maxTrialCount=1), [suggested(0, "Running")], {})
    st = trial_statuses(plan)["exp-0000"]
    assert (st["phase"], st["reason"], st["failureClass"]) == ("Failed", "PodDeleted", "Infrastructure")
    assert created(plan, "exp-0000-a2")["metadata"]["labels"][L_LAUNCH] == "Retry"


def test_pending_trial_without_its_pod_gets_the_pod_again():
    plan = run(make_spec(parallelTrialCount=1, maxTrialCount=1), [suggested(0, "Pending", reason="PodCreated")], {})
    assert plan.start_workloads == ["exp-0000"]
    assert plan.create_trials == []


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


# =============================================================================================
# the spec
# =============================================================================================


def test_validate_spec_reports_unknown_placeholders_and_primary_container():
    spec = make_spec(
        trialTemplate={
            "primaryContainerName": "trainer",
            "template": {
                "metadata": {"annotations": {"${experiment.uid}": "v"}},
                "spec": {
                    "containers": [
                        {
                            "name": "train",
                            "image": "i",
                            "args": ["--a=${params.nope}", "${params.x}", "${trial.uid}", "${trial.attempt}"],
                        },
                        {"name": "sidecar", "image": "j"},
                    ]
                },
            },
        }
    )
    errors = validate_spec(spec)
    assert len(errors) == 4
    joined = "\n".join(errors)
    assert "${params.nope}" in joined
    assert "${trial.uid}" in joined
    assert "${experiment.uid}" in joined
    assert "primaryContainerName trainer" in joined and "train, sidecar" in joined
    assert "${params.x}" not in joined and "${trial.attempt}" not in joined


def test_validate_spec_accepts_a_good_template():
    assert validate_spec(make_spec()) == []


def test_invalid_spec_fails_the_experiment_and_launches_nothing():
    spec = make_spec(
        trialTemplate={
            "template": {"spec": {"containers": [{"name": "train", "image": "i", "args": ["${params.nope}"]}]}}
        }
    )
    plan = run(spec)
    assert plan.create_trials == [] and plan.start_workloads == []
    assert experiment_outcome(plan) == ("Failed", "InvalidSpec")
    assert "params.nope" in cond(exp_status(plan)["conditions"], "Failed")["message"]
    assert "InvalidSpec" in event_reasons(plan, None)


RUNNING_STATUS = {
    "phase": "Running",
    "startTime": EARLIER,
    "trials": 2,
    "trialsRunning": 2,
    "suggestionCount": 2,
    "observedGeneration": 2,
    "conditions": [
        {"type": "Running", "status": "True", "reason": "Running", "message": "2 of 10", "lastTransitionTime": EARLIER}
    ],
}


def test_an_invalid_spec_the_planner_cannot_be_given_changes_only_the_phase_and_its_condition():
    """The loop's specs that do not parse (or whose space is refused) get the planner's rule: the
    status read, with only the phase and the condition Failed changed, and the Event once."""
    plan = planner.plan_invalid_spec(RUNNING_STATUS, 3, "spec.maxTrialCount: must be >= 1", NOW)
    st = exp_status(plan)
    assert {k: v for k, v in st.items() if k not in ("phase", "conditions")} == {
        k: v for k, v in RUNNING_STATUS.items() if k not in ("phase", "conditions")
    }
    assert st["phase"] == "Failed"
    assert st["conditions"] == [
        RUNNING_STATUS["conditions"][0],
        {
            "type": "Failed",
            "status": "True",
            "reason": "InvalidSpec",
            "message": "spec.maxTrialCount: must be >= 1",
            "lastTransitionTime": iso(NOW),
            "observedGeneration": 3,
        },
    ]
    assert [(e.target, e.type, e.reason, e.message) for e in plan.events] == [
        (None, "Warning", "InvalidSpec", "spec.maxTrialCount: must be >= 1")
    ]
    assert not (plan.create_trials or plan.start_workloads or plan.delete_workloads or plan.trial_status)
    # Found again: the same status, and no second Event.
    again = planner.plan_invalid_spec(st, 3, "spec.maxTrialCount: must be >= 1", NOW + timedelta(seconds=5))
    assert exp_status(again) == st and again.events == []


def test_the_planners_invalid_spec_is_the_same_rule():
    """reject_spec() (a spec validate_spec() refuses) decides as plan_invalid_spec(), adding only what
    every round records: the history, and the other phases' conditions."""
    spec = make_spec(
        trialTemplate={
            "template": {"spec": {"containers": [{"name": "train", "image": "i", "args": ["${params.nope}"]}]}}
        }
    )
    plan = run(spec, status=RUNNING_STATUS)
    message = "; ".join(validate_spec(spec))
    alone = planner.plan_invalid_spec(RUNNING_STATUS, 3, message, NOW)
    st = exp_status(plan)
    assert st["phase"] == exp_status(alone)["phase"] == "Failed"
    assert cond(st["conditions"], "Failed") == cond(exp_status(alone)["conditions"], "Failed")
    assert [e for e in plan.events if e.reason == "InvalidSpec"] == alone.events
    assert cond(st["conditions"], "Running")["status"] == "False"
    assert [(h["phase"], h["reason"]) for h in st["statusHistory"]] == [("Failed", "InvalidSpec")]


# =============================================================================================
# several rounds: the cluster carries the plans out
# =============================================================================================


class Cluster(MemoryCluster):
    """Trials and pods on which plans are carried out as the operator does (apply.stages);
    tests decide the pods' fates."""

    def __init__(self, spec: ExperimentSpec, suggest=counting):
        super().__init__(lambda name: pod_pending(name, created=iso(self.now)))
        self.spec, self.suggest = spec, suggest
        self.now = NOW
        self.logs: dict[str, str] = {}
        self.plans: list = []
        self.invalid: set[str] = set()  # trials whose pod the API server refuses as invalid
        self.refused: dict[str, planner.Refusal] = {}  # the executor's reports, kept by the loop between rounds
        self.starts: list[str] = []

    def round(self):
        exp = ExperimentView(EXP, NS, EXP_UID, 1, self.spec, copy.deepcopy(self.status))
        views = self.views()
        settle_refusals(self.refused, views)  # as the loop does before each round
        p = planner.plan(
            planner.RoundInput(
                experiment=exp,
                trials=views,
                pods=copy.deepcopy(self.pods),
                now=self.now,
                suggest=self.suggest,
                logs=dict(self.logs),
                refused=dict(self.refused),
            )
        )
        self.apply(p)
        self.plans.append(p)
        return p

    async def start(self, name: str) -> None:
        self.starts.append(name)
        if name in self.invalid:
            self.refused[name] = planner.Refusal(
                "InvalidPod", "metadata.labels: Invalid value"
            )  # what the executor reports
            return
        await super().start(name)

    def tick(self, seconds: float = 10) -> None:
        self.now += timedelta(seconds=seconds)

    def add_user_trial(self, name: str, values: dict[str, str]) -> None:
        body = user_trial(name, values, created=iso(self.now)).body
        self.trials[name] = body

    def annotate(self, name: str, key: str, value: str) -> None:
        self.trials[name]["metadata"].setdefault("annotations", {})[key] = value

    def unfinished_pods(self) -> list[str]:
        return [n for n, p in self.pods.items() if p["status"]["phase"] not in ("Succeeded", "Failed")]

    def phase(self, name: str) -> str | None:
        return (self.trials[name].get("status") or {}).get("phase")


@pytest.mark.parametrize("restarted", [False, True], ids=["reported", "operator-restarted"])
def test_a_refused_create_fails_its_trial_once_without_starting_it_again(restarted):
    """Round 1 creates exp-0000 and the API server refuses its pod; round 2 fails the trial and its
    slot goes on. An operator restarted in between has lost the report: round 2 tries the create
    again, is refused again, and round 3 fails the trial. No trial is lost or made twice."""
    cluster = Cluster(make_spec(parallelTrialCount=1, maxTrialCount=2))
    cluster.invalid = {"exp-0000"}
    cluster.round()
    assert cluster.refused == {"exp-0000": planner.Refusal("InvalidPod", "metadata.labels: Invalid value")}
    assert cluster.phase("exp-0000") == "Pending"
    if restarted:
        cluster.refused.clear()
        cluster.round()
        assert cluster.starts == ["exp-0000", "exp-0000"] and cluster.phase("exp-0000") == "Pending"
    cluster.round()
    status = cluster.trials["exp-0000"]["status"]
    assert (status["phase"], status["reason"], status["failureClass"]) == ("Failed", "InvalidPod", "Startup")
    assert cluster.starts == ["exp-0000"] * (2 if restarted else 1) + ["exp-0001"]
    assert "exp-0000" not in cluster.pods
    assert [e.reason for e in cluster.events if e.target == "exp-0000"] == ["PodCreateFailed"]  # with the verdict
    cluster.round()
    assert cluster.refused == {}  # the verdict is written: the report is dropped
    assert cluster.created == ["exp-0000", "exp-0001"]


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
# regressions: bugs found by these tests and fixed
# =============================================================================================


def test_retry_of_a_user_trial_keeps_its_configuration():
    spec = make_spec(parallelTrialCount=1, maxTrialCount=1)
    cluster = Cluster(spec)
    cluster.add_user_trial("my-run", {"x": "07"})
    cluster.round()
    assert cluster.phase("my-run") == "Pending" and "my-run" in cluster.pods
    cluster.pods["my-run"] = pod_failed("my-run", 137, "OOMKilled")
    cluster.round()
    retry = cluster.trials["my-run-a2"]
    assert retry["metadata"]["labels"][L_CONFIG] == cluster.trials["my-run"]["metadata"]["labels"][L_CONFIG]
    assert cluster.status["configurations"] == 1
    # Once the retry succeeds, the configuration has succeeded, however its values are written.
    cluster.tick()
    cluster.round()  # the retry's backoff has passed: it starts
    cluster.pods["my-run-a2"] = pod_succeeded("my-run-a2", '{"loss": 0.2}')
    cluster.round()
    assert cluster.phase("my-run-a2") == "Succeeded"
    cluster.add_user_trial("again", {"x": "7"})
    cluster.round()
    assert cluster.trials["again"]["status"]["reason"] == "ConfigurationAlreadySucceeded"


def test_suspended_configurations_are_not_told_as_failed():
    spec = make_spec(suspend=True)
    trials = [suggested(0, "Killed", reason="Suspended"), failed(1, "Error")]
    plan = run(spec, trials, status={"phase": "Suspended"})
    assert exp_status(plan)["failedConfigurations"] == 1
    assert told(plan)[1] == (None, True)
    assert 0 not in told(plan)


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


def test_user_trial_of_a_failed_configuration_is_retried_while_retries_are_left():
    # exp-0003 was OOMKilled, its retry exited with an Error (not retried): one of two retries spent.
    # A user then ran the configuration again, and that run was OOMKilled: it has a retry left.
    mine = trial(
        "my-run",
        {"x": "3"},
        phase="Running",
        status={"podName": "my-run"},
        launch="User",
        created="2024-05-01T11:30:00Z",
    )
    trials = [failed(3, "OOMKilled", retriedBy="exp-0003-a2"), failed(3, "Error", attempt=2), mine]
    plan = run(
        make_spec(parallelTrialCount=1, maxTrialCount=1), trials, {"my-run": pod_failed("my-run", 137, "OOMKilled")}
    )
    assert trial_statuses(plan)["my-run"]["failureClass"] == "OOMKilled"
    retries = [b for b in plan.create_trials if b["spec"].get("retryOf") == "my-run"]
    assert len(retries) == 1
    assert retries[0]["metadata"]["labels"][L_LAUNCH] == "Retry"
    assert exp_status(plan)["failedConfigurations"] == 0


def test_a_terminating_pod_of_a_killed_trial_still_holds_its_slot():
    terminating = pod_running("exp-0000", started=ago(700))
    terminating["metadata"]["deletionTimestamp"] = ago(1)
    terminating["metadata"]["deletionGracePeriodSeconds"] = 30
    trials = [suggested(0, "Killed", reason="Timeout", failureClass="Timeout", completionTime=ago(1))]
    plan = run(
        make_spec(parallelTrialCount=1, maxTrialCount=5, maxTrialDurationSeconds=600), trials, {"exp-0000": terminating}
    )
    assert plan.start_workloads == []


def test_a_round_leaves_the_statuses_it_read_as_they_were():
    """The planner copies a trial's status shallowly before changing it, so no step may change a
    status's lists or conditions in place: the views are the watch's objects, and next round's."""
    trials = [
        suggested(
            0,
            "Running",
            conditions=[
                {
                    "type": "Succeeded",
                    "status": "Unknown",
                    "reason": "Running",
                    "message": "",
                    "lastTransitionTime": EARLIER,
                }
            ],
        ),
        failed(1, "OOMKilled"),
        failed(2, "Error", annotations={A_RESTART: "again"}),
        succeeded(3, 0.5),
        suggested(4, "Pending", reason="PodCreated"),
    ]
    pods = {"exp-0000": pod_succeeded("exp-0000", json.dumps({"loss": 0.25})), "exp-0004": pod_running("exp-0004")}
    before = [(copy.deepcopy(t.body), t.typed_status.model_dump()) for t in trials]
    plan = run(make_spec(parallelTrialCount=3, maxTrialCount=5), trials, pods)
    assert {"exp-0000", "exp-0002"} <= set(plan.trial_status)  # the round did change them
    assert trial_statuses(plan)["exp-0000"]["conditions"][0]["status"] == "True"
    assert [(t.body, t.typed_status.model_dump()) for t in trials] == before


# =============================================================================================
# trials queued by Kueue (trialTemplate.queueName)
# =============================================================================================

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

"""A trial's lifecycle (planner/lifecycle.py): what its pod says becomes its status (results and
metrics, from the termination message or the log; failures, lost nodes, timeouts, pods that do not
start), and so does a create the API server refused. Rounds are built by hand with
tests/support/rounds.py."""

from __future__ import annotations

import pytest

from hpo_operator import planner
from hpo_operator.api.vocabulary import L_LAUNCH
from hpo_operator.core import metrics
from hpo_operator.core.podstate import PodObservation
from hpo_operator.planner import needs_log
from tests.support.rounds import (
    EARLIER,
    NOW,
    Cluster,
    ago,
    cond,
    created,
    created_names,
    event_reasons,
    exp_status,
    experiment_outcome,
    failed,
    iso,
    make_spec,
    pod,
    pod_failed,
    pod_running,
    pod_succeeded,
    pod_waiting,
    run,
    succeeded,
    suggested,
    told,
    trial_statuses,
)

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


def test_running_pod_marks_the_trial_running():
    plan = run(make_spec(), [suggested(0, "Pending", reason="PodCreated")], {"exp-0000": pod_running("exp-0000")})
    st = trial_statuses(plan)["exp-0000"]
    assert (st["phase"], st["startTime"]) == ("Running", EARLIER)
    assert cond(st["conditions"], "Succeeded")["status"] == "Unknown"


# =============================================================================================
# creates the API server refused
# =============================================================================================


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


# =============================================================================================
# lost nodes, timeouts and pods that do not start
# =============================================================================================


def test_a_trial_whose_node_is_lost_is_retried_and_frees_its_slot():
    stranded = pod_running("exp-0000")
    stranded["metadata"]["deletionTimestamp"] = ago(60)
    stranded["spec"]["nodeName"] = "node-a"
    plan = run(make_spec(parallelTrialCount=1, maxTrialCount=3), [suggested(0, "Running")], {"exp-0000": stranded})
    st = trial_statuses(plan)["exp-0000"]
    assert (st["phase"], st["reason"], st["failureClass"]) == ("Failed", "NodeLost", "Infrastructure")
    assert st["retriedBy"] == "exp-0000-a2"
    assert "exp-0000" not in plan.delete_workloads  # already being deleted


def test_a_trial_whose_pod_is_still_within_its_grace_period_is_rechecked_then():
    terminating = pod_running("exp-0000")
    terminating["metadata"]["deletionTimestamp"] = ago(-10)
    terminating["spec"]["nodeName"] = "node-a"
    plan = run(make_spec(parallelTrialCount=1, maxTrialCount=3), [suggested(0, "Running")], {"exp-0000": terminating})
    assert trial_statuses(plan).get("exp-0000", {}).get("phase", "Running") == "Running"
    assert plan.create_trials == [] and plan.start_workloads == []
    assert plan.requeue_after == pytest.approx(25)


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

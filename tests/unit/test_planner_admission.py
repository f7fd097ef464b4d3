"""Admission (planner/admission.py): retries of failed configurations (retryPolicy, backoff),
re-runs of the trials a suspension stopped, restarts users request, and Trials users create, each
checked on the plan of a round built by hand (tests/support/rounds.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

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
from hpo_operator.core.space import config_hash
from hpo_operator.planner import backoff_seconds
from tests.support.rounds import (
    EARLIER,
    EXP,
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
    owner_refs,
    pod_evicted,
    pod_failed,
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


def test_metrics_unavailable_is_retried_when_listed_in_retry_on():
    spec = make_spec(retryPolicy={"retryOn": ["MetricsUnavailable"]})
    plan = run(spec, [suggested(0, "Running")], {"exp-0000": pod_succeeded("exp-0000")})
    assert created(plan, "exp-0000-a2")["metadata"]["labels"][L_LAUNCH] == "Retry"


def test_startup_failure_is_not_retried_even_when_every_class_is():
    spec = make_spec(retryPolicy={"retryOn": ["Infrastructure", "OOMKilled", "Error", "MetricsUnavailable"]})
    plan = run(spec, [suggested(0, "Pending")], {"exp-0000": pod_waiting("exp-0000", "CreateContainerConfigError")})
    assert trial_statuses(plan)["exp-0000"]["failureClass"] == "Startup"
    assert "exp-0000-a2" not in created_names(plan)


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
# resumed runs
# =============================================================================================


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

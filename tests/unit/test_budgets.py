"""Budgets in time and compute, and experiments that go on when a limit is raised: the pure rules
(core/quantity.py, core/spend.py, workloads/requests.py, planner/budget.py and experiment.py's
reopen), one planner round at a time."""

from __future__ import annotations

from datetime import timedelta

import pytest

from hpo_operator.core import spend, times
from hpo_operator.core.quantity import QuantityError, parse
from hpo_operator.workloads.requests import requested
from tests.support.rounds import (
    EARLIER,
    NOW,
    ago,
    cond,
    event_reasons,
    exp_status,
    experiment_outcome,
    make_spec,
    pod_running,
    pod_succeeded,
    run,
    succeeded,
    suggested,
    trial_statuses,
)
from tests.support.simulate import InMemoryExperiment

GPU = "nvidia.com/gpu"


def gpu_template(gpus: str = "1", cpu: str = "500m") -> dict:
    return {
        "primaryContainerName": "train",
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "train",
                        "image": "trainer:1",
                        "resources": {"requests": {"cpu": cpu}, "limits": {GPU: gpus}},
                    }
                ]
            }
        },
    }


def budget_spec(**budget):
    return make_spec(trialTemplate=gpu_template(), budget=budget)


def spent_at(duration: float, seconds_ago: float) -> dict:
    return {"durationSeconds": duration, "time": times.micro(NOW - timedelta(seconds=seconds_ago))}


# =============================================================================================
# quantities and requests
# =============================================================================================


@pytest.mark.parametrize(
    "text, value",
    [("500m", 0.5), ("2", 2.0), ("4Gi", 4 * 2**30), ("1e3", 1000.0), ("1.5k", 1500.0), (3, 3.0), ("12E", 12e18)],
)
def test_quantities_are_read_in_their_base_unit(text, value):
    assert parse(text) == value


@pytest.mark.parametrize("text", ["", "two", "1x", "--1", "1e999999999", "9" * 80, True])
def test_what_is_no_quantity_is_refused(text):
    with pytest.raises(QuantityError):
        parse(text)


def trial_body(values: dict[str, str]) -> dict:
    return {
        "metadata": {"name": "exp-0001"},
        "spec": {"parameters": [{"name": k, "value": v} for k, v in values.items()], "attempt": 1},
    }


def test_a_pod_requests_its_containers_sum_limits_standing_in_for_requests():
    spec = make_spec(
        trialTemplate={
            "template": {
                "spec": {
                    "containers": [
                        {"name": "a", "image": "i", "resources": {"requests": {"cpu": "1"}, "limits": {GPU: "2"}}},
                        {"name": "b", "image": "i", "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}}},
                    ],
                    "initContainers": [{"name": "i", "image": "i", "resources": {"requests": {"cpu": "3"}}}],
                    "overhead": {"cpu": "100m"},
                }
            }
        }
    )
    # cpu: max(1 + 0.25, init's 3) + overhead 0.1; the GPU given as a limit alone counts.
    assert requested(spec, "exp", trial_body({"x": "1"})) == {"cpu": 3.1, "memory": 2**30, GPU: 2.0}


def test_a_request_naming_a_parameter_counts_the_trials_value():
    spec = make_spec(trialTemplate=gpu_template(gpus="${params.x}"))
    assert requested(spec, "exp", trial_body({"x": "4"}))[GPU] == 4.0


def test_a_job_requests_its_parallel_pods_and_a_jobset_its_replicas():
    container = {"name": "t", "image": "i", "resources": {"limits": {GPU: "1"}}}
    job = make_spec(
        trialTemplate={
            "template": None,
            "job": {"spec": {"parallelism": 4, "completions": 2, "template": {"spec": {"containers": [container]}}}},
        }
    )
    assert requested(job, "exp", trial_body({"x": "1"})) == {GPU: 2.0}  # min(parallelism, completions)
    jobset = make_spec(
        trialTemplate={
            "template": None,
            "resource": {
                "apiVersion": "jobset.x-k8s.io/v1alpha2",
                "kind": "JobSet",
                "manifest": {
                    "spec": {
                        "replicatedJobs": [
                            {
                                "name": "workers",
                                "replicas": 3,
                                "template": {
                                    "spec": {"parallelism": 2, "template": {"spec": {"containers": [container]}}}
                                },
                            }
                        ]
                    }
                },
            },
        }
    )
    assert requested(jobset, "exp", trial_body({"x": "1"})) == {GPU: 6.0}


def test_a_trainjob_requests_its_resources_per_node_times_its_nodes():
    spec = make_spec(
        trialTemplate={
            "template": None,
            "resource": {
                "apiVersion": "trainer.kubeflow.org/v1alpha1",
                "kind": "TrainJob",
                "manifest": {
                    "spec": {
                        "runtimeRef": {"name": "torch"},
                        "trainer": {"numNodes": 2, "resourcesPerNode": {"limits": {GPU: "8", "cpu": "16"}}},
                    }
                },
            },
        }
    )
    assert requested(spec, "exp", trial_body({"x": "1"})) == {"cpu": 32.0, GPU: 16.0}


# =============================================================================================
# what was spent
# =============================================================================================


def test_a_trials_time_runs_from_its_start_to_its_recorded_end_or_now():
    started = ago(100)
    assert spend.Run("Running", started, None, None, {}).seconds(NOW) == 100
    assert spend.Run("Succeeded", started, 42.0, ago(10), {}).seconds(NOW) == 42  # runSeconds wins
    assert spend.Run("Failed", started, None, ago(30), {}).seconds(NOW) == 70  # recorded before runSeconds
    assert spend.Run("Pending", None, None, None, {}).seconds(NOW) == 0  # not started: waiting is free
    assert spend.Run("Queued", started, None, None, {}).seconds(NOW) == 0


def test_compute_sums_requests_times_run_time_and_the_running_rate():
    runs = [
        spend.Run("Succeeded", ago(200), 50.0, ago(150), {GPU: 2.0, "cpu": 1.0}),
        spend.Run("Running", ago(30), None, None, {GPU: 1.0}),
        spend.Run("Killed", ago(500), 10.0, ago(490), {GPU: 1.0}),
    ]
    spent, rate = spend.compute(runs, NOW)
    assert spent == {GPU: 2 * 50 + 30 + 10, "cpu": 50.0}
    assert rate == {GPU: 1.0}


def test_running_time_counts_only_while_the_recorded_phase_is_running():
    as_of = times.micro(NOW - timedelta(seconds=40))
    assert spend.duration(100.0, as_of, "Running", NOW) == 140
    assert spend.duration(100.0, as_of, "Suspended", NOW) == 100
    assert spend.duration(100.0, as_of, "Succeeded", NOW) == 100
    assert spend.duration(None, None, None, NOW) == 0


# =============================================================================================
# the planner: what trials record
# =============================================================================================


def test_a_started_trial_records_what_its_workload_requests():
    plan = run(budget_spec(maxDurationSeconds=3600), status={"phase": "Running"})
    statuses = {b["metadata"]["name"]: b["status"] for b in plan.create_trials}
    assert statuses["exp-0000"]["requests"] == {"cpu": 0.5, GPU: 1.0}


def test_a_finished_trial_records_its_run_until_its_container_finished_not_until_seen():
    # The pod finished 5 s before this round (an operator away meanwhile would see it much later).
    t = suggested(0, "Running", startTime=EARLIER, requests={GPU: 1.0})
    plan = run(budget_spec(), [t], {"exp-0000": pod_succeeded("exp-0000", '{"loss": 0.5}')})
    st = trial_statuses(plan)["exp-0000"]
    assert st["phase"] == "Succeeded"
    assert st["runSeconds"] == (NOW - timedelta(seconds=5) - times.parse(EARLIER)).total_seconds()


def test_a_trial_the_operator_stops_records_its_run_until_then():
    spec = make_spec(trialTemplate=gpu_template(), maxTrialDurationSeconds=60)
    t = suggested(0, "Running", startTime=ago(61), requests={GPU: 1.0})
    plan = run(spec, [t], {"exp-0000": pod_running("exp-0000", started=ago(61))})
    st = trial_statuses(plan)["exp-0000"]
    assert (st["phase"], st["reason"], st["runSeconds"]) == ("Killed", "Timeout", 61.0)


# =============================================================================================
# the planner: limits
# =============================================================================================


def running_gpu(i: int, seconds: float) -> tuple:
    t = suggested(i, "Running", startTime=ago(seconds), requests={GPU: 1.0})
    return t, pod_running(t.name, started=ago(seconds))


def test_the_running_time_limit_ends_the_experiment_and_stops_its_trials():
    t, p = running_gpu(0, 30)
    status = {"phase": "Running", "spent": spent_at(70, 30)}
    plan = run(budget_spec(maxDurationSeconds=100), [t], {t.name: p}, status=status)
    assert experiment_outcome(plan) == ("Succeeded", "MaxDurationReached")
    assert plan.create_trials == [] and plan.delete_workloads == [t.name]
    st = trial_statuses(plan)[t.name]
    assert (st["phase"], st["reason"], st["runSeconds"]) == ("Killed", "ExperimentFinished", 30.0)
    assert exp_status(plan)["spent"]["durationSeconds"] == 100
    assert exp_status(plan)["completionTime"] == times.iso(NOW)


def test_before_its_limit_the_experiment_wakes_when_the_limit_is_due():
    t, p = running_gpu(0, 30)
    status = {"phase": "Running", "spent": spent_at(70, 10)}
    plan = run(budget_spec(maxDurationSeconds=100), [t], {t.name: p}, status=status)
    assert experiment_outcome(plan)[0] == "Running"
    assert plan.requeue_after == pytest.approx(20)


def test_suspended_time_does_not_count():
    # Suspended for 1,000 s since its running time was last recorded: resuming does not end it.
    status = {"phase": "Suspended", "spent": spent_at(90, 1000)}
    plan = run(budget_spec(maxDurationSeconds=100), [], status=status)
    assert experiment_outcome(plan) == ("Running", "Running")
    assert exp_status(plan)["spent"] == {"durationSeconds": 90, "time": times.micro(NOW)}
    assert len(plan.create_trials) == 2


def test_a_compute_limit_counts_every_trial_retries_included():
    first = suggested(0, "Failed", reason="Evicted", failureClass="Infrastructure", requests={GPU: 1.0})
    first.body["status"].update(startTime=ago(500), runSeconds=40.0, retriedBy="exp-0000-a2")
    retry, p = running_gpu(0, 20)
    retry.body["metadata"]["name"] = retry.name = "exp-0000-a2"
    retry.body["spec"]["attempt"] = 2
    plan = run(budget_spec(maxResourceSeconds={GPU: 60}), [first, retry], {retry.name: p}, status={"phase": "Running"})
    assert experiment_outcome(plan) == ("Succeeded", "ComputeBudgetReached")
    assert {r["resource"]: r["seconds"] for r in exp_status(plan)["spent"]["resources"]} == {GPU: 60.0}
    assert exp_status(plan)["spent"]["summary"] == f"{GPU}=60s"


def test_a_compute_limit_wakes_the_experiment_when_the_running_trials_reach_it():
    a, pa = running_gpu(0, 10)
    b, pb = running_gpu(1, 10)
    spec = budget_spec(maxResourceSeconds={GPU: 100})
    plan = run(spec, [a, b], {a.name: pa, b.name: pb}, status={"phase": "Running"})
    assert experiment_outcome(plan)[0] == "Running"
    assert plan.requeue_after == pytest.approx((100 - 20) / 2)


def test_finish_lets_running_trials_end_and_starts_nothing_new():
    t, p = running_gpu(0, 30)
    status = {"phase": "Running", "spent": spent_at(100, 0)}
    spec = budget_spec(maxDurationSeconds=100, runningTrials="Finish")
    plan = run(spec, [t], {t.name: p}, status=status)
    assert experiment_outcome(plan) == ("Running", "BudgetSpent")
    assert plan.create_trials == [] and plan.delete_workloads == [] and t.name not in plan.trial_status
    done = suggested(0, "Succeeded", startTime=ago(60), objectiveValue=0.5, requests={GPU: 1.0})
    plan = run(spec, [done], status=status)
    assert experiment_outcome(plan) == ("Succeeded", "MaxDurationReached")


def test_the_spent_values_are_not_written_on_their_own_more_than_once_a_minute():
    t, p = running_gpu(0, 30)
    t.body["status"]["reason"] = "Running"
    recorded = {"durationSeconds": 70, "time": times.micro(NOW - timedelta(seconds=30))}
    # Nothing else changes this round: the status keeps its spent as it was (no write).
    first = run(budget_spec(maxDurationSeconds=1000), [t], {t.name: p}, status={"phase": "Running"})
    status = {**exp_status(first), "spent": recorded}
    again = run(budget_spec(maxDurationSeconds=1000), [t], {t.name: p}, status=status)
    assert exp_status(again) == status
    later = run(budget_spec(maxDurationSeconds=1000), [t], {t.name: p}, status=status, now=NOW + timedelta(seconds=31))
    assert exp_status(later)["spent"]["durationSeconds"] == 70 + 61


def test_a_change_of_phase_writes_the_running_time_with_it():
    status = {"phase": "Running", "spent": spent_at(10, 5)}
    plan = run(budget_spec(maxDurationSeconds=1000), [], status=status)
    assert exp_status(plan)["spent"]["time"] == times.micro(NOW)  # (new trials: the status changed)
    suspended = make_spec(trialTemplate=gpu_template(), budget={"maxDurationSeconds": 1000}, suspend=True)
    plan = run(suspended, [], status=status)
    assert experiment_outcome(plan)[0] == "Suspended"
    assert exp_status(plan)["spent"] == {"durationSeconds": 15, "time": times.micro(NOW)}


def test_the_same_status_and_trials_give_the_same_spending_in_any_process():
    # What a restarted operator decides from: nothing but the status and the Trials.
    t, p = running_gpu(0, 50)
    status = {"phase": "Running", "spent": spent_at(40, 50)}
    spec = budget_spec(maxDurationSeconds=90, maxResourceSeconds={GPU: 1000})
    plans = [run(spec, [t], {t.name: p}, status=status) for _ in range(2)]
    assert exp_status(plans[0]) == exp_status(plans[1])
    assert experiment_outcome(plans[0]) == ("Succeeded", "MaxDurationReached")


# =============================================================================================
# extending a finished experiment
# =============================================================================================


def finished(reason: str, suggestion_count: int = 2, **extra) -> dict:
    return {
        "phase": "Succeeded",
        "suggestionCount": suggestion_count,
        "completionTime": EARLIER,
        "conditions": [
            {"type": "Succeeded", "status": "True", "reason": reason, "message": "", "lastTransitionTime": EARLIER}
        ],
        **extra,
    }


def test_raising_max_trial_count_continues_the_search_after_its_last_suggestion():
    trials = [succeeded(0, 0.5), succeeded(1, 0.4)]
    spec = make_spec(maxTrialCount=4, parallelTrialCount=2)
    plan = run(spec, trials, status=finished("MaxTrialsReached"))
    assert experiment_outcome(plan) == ("Running", "Running")
    assert [b["metadata"]["name"] for b in plan.create_trials] == ["exp-0002", "exp-0003"]
    assert "ExperimentExtended" in event_reasons(plan)
    assert "completionTime" not in exp_status(plan)


def test_an_experiment_at_its_limit_stays_finished():
    trials = [succeeded(0, 0.5), succeeded(1, 0.4)]
    plan = run(make_spec(maxTrialCount=2, parallelTrialCount=2), trials, status=finished("MaxTrialsReached"))
    assert experiment_outcome(plan) == ("Succeeded", "MaxTrialsReached")
    assert plan.create_trials == [] and plan.events == []


def test_the_trials_its_end_stopped_run_again_when_it_goes_on():
    stopped = suggested(1, "Killed", reason="ExperimentFinished", startTime=ago(90), completionTime=ago(60))
    status = finished("MaxDurationReached", spent=spent_at(100, 60))
    spec = budget_spec(maxDurationSeconds=200)
    plan = run(spec, [succeeded(0, 0.5), stopped], status=status)
    assert experiment_outcome(plan)[0] == "Running"
    resumed = [b for b in plan.create_trials if b["spec"].get("retryOf") == "exp-0001"]
    assert [(b["metadata"]["name"], b["metadata"]["labels"]["hpo.dev/launch-reason"]) for b in resumed] == [
        ("exp-0001-a2", "Resume")
    ]
    # The time it stood finished does not count: 100 s spent, as when it ended.
    assert exp_status(plan)["spent"]["durationSeconds"] == 100


def test_a_raised_limit_does_not_continue_an_experiment_another_limit_holds():
    status = finished("MaxDurationReached", spent=spent_at(100, 60))
    spec = make_spec(trialTemplate=gpu_template(), maxTrialCount=2, budget={"maxDurationSeconds": 200})
    plan = run(spec, [succeeded(0, 0.5), succeeded(1, 0.4)], status=status)
    assert experiment_outcome(plan) == ("Succeeded", "MaxDurationReached")


def test_a_goal_reached_experiment_stays_finished_unless_its_goal_changes():
    trials = [succeeded(0, 0.01), succeeded(1, 0.4)]
    reached = make_spec(maxTrialCount=10, objective={"goal": 0.05})
    plan = run(reached, trials, status=finished("GoalReached"))
    assert experiment_outcome(plan) == ("Succeeded", "GoalReached") and plan.create_trials == []
    assert plan.events == [] and exp_status(plan)["completionTime"] == EARLIER  # not even for a round
    harder = make_spec(maxTrialCount=10, objective={"goal": 0.001})
    plan = run(harder, trials, status=finished("GoalReached"))
    assert experiment_outcome(plan) == ("Running", "Running") and len(plan.create_trials) == 2


@pytest.mark.parametrize("reason", ["SearchSpaceExhausted"])
def test_a_finished_grid_stays_finished(reason):
    plan = run(make_spec(maxTrialCount=10), [succeeded(0, 0.5)], status=finished(reason))
    assert experiment_outcome(plan) == ("Succeeded", reason) and plan.create_trials == []


def test_an_extended_experiment_in_memory_runs_to_its_new_limit_with_the_same_study():
    spec = make_spec(maxTrialCount=3, parallelTrialCount=1)
    exp = InMemoryExperiment(spec, lambda values: float(values["x"]) / 1000).run()
    assert cond_reason(exp.status) == "MaxTrialsReached" and len(exp.created) == 3
    exp.spec = spec.model_copy(update={"max_trial_count": 5})
    exp.round()  # (run() returns at once while the status says Succeeded)
    exp.run()
    assert cond_reason(exp.status) == "MaxTrialsReached"
    assert exp.created == [f"exp-{i:04d}" for i in range(5)]
    assert exp.status["suggestionCount"] == 5


def cond_reason(status: dict) -> str:
    return cond(status.get("conditions"), "Succeeded")["reason"]


# =============================================================================================
# the plugin's view and extend
# =============================================================================================


def experiment_obj(spec: dict, status: dict) -> dict:
    return {"metadata": {"name": "exp", "namespace": "team-a", "resourceVersion": "42"}, "spec": spec, "status": status}


def trial_obj(status: dict) -> dict:
    return {"metadata": {"name": "t"}, "spec": {"experimentName": "exp"}, "status": status}


def test_describe_shows_what_was_spent_now_per_resource_with_its_limit():
    from hpo_operator.client.spending import spending, spending_lines

    obj = experiment_obj(
        {"budget": {"maxDurationSeconds": 7200, "maxResourceSeconds": {GPU: 36000}}},
        {"phase": "Running", "spent": spent_at(600, 60)},
    )
    trials = [
        trial_obj({"phase": "Succeeded", "startTime": ago(1000), "runSeconds": 900.0, "requests": {GPU: 2.0}}),
        trial_obj({"phase": "Running", "startTime": ago(100), "requests": {GPU: 1.0, "cpu": 4.0}}),
    ]
    spent = spending(obj, trials, NOW)
    assert spent.duration_seconds == 660
    assert [(r.resource, r.seconds, r.limit) for r in spent.resources] == [("cpu", 400.0, None), (GPU, 1900.0, 36000)]
    lines = spending_lines(spent)
    assert lines[0] == "running time 11m00s of 2h00m (suspended time not counted)"
    assert lines[2] == f"{GPU} 0.528 h (1,900 resource-seconds of 36,000)"


def test_extend_adds_configurations_past_those_launched_and_pins_the_version_read():
    from hpo_operator.client.extend import extension

    obj = experiment_obj(
        {"maxTrialCount": 20},
        {
            "phase": "Succeeded",
            "configurations": 21,
            "conditions": [{"type": "Succeeded", "status": "True", "reason": "MaxTrialsReached"}],
        },
    )
    patch, result = extension(obj, more_trials=10)
    assert patch == {"metadata": {"resourceVersion": "42"}, "spec": {"maxTrialCount": 31}}
    assert result.changes == {"maxTrialCount": (20, 31)} and result.goes_on


def test_extend_adds_time_and_compute_past_what_was_spent():
    from hpo_operator.client.extend import extension

    obj = experiment_obj(
        {"maxTrialCount": 20, "budget": {"maxDurationSeconds": 100, "maxResourceSeconds": {GPU: 50}}},
        {
            "phase": "Succeeded",
            "spent": spent_at(100.4, 0),
            "conditions": [{"type": "Succeeded", "status": "True", "reason": "ComputeBudgetReached"}],
        },
    )
    trials = [trial_obj({"phase": "Killed", "startTime": ago(100), "runSeconds": 52.0, "requests": {GPU: 1.0}})]
    patch, _ = extension(obj, trials, more_seconds=60, more_resource_seconds={GPU: 3600}, now=NOW)
    assert patch["spec"]["budget"] == {"maxDurationSeconds": 161, "maxResourceSeconds": {GPU: 3652.0}}


@pytest.mark.parametrize(
    "reason, options, refusal",
    [
        ("GoalReached", {"more_trials": 5}, "reached its goal"),
        ("SearchSpaceExhausted", {"more_trials": 5}, "grid is done"),
        ("MaxTrialsReached", {}, "give --trials"),
    ],
)
def test_extend_refuses_what_would_not_continue_the_experiment(reason, options, refusal):
    from hpo_operator.client.errors import InvalidInput
    from hpo_operator.client.extend import extension

    obj = experiment_obj(
        {"maxTrialCount": 5},
        {"phase": "Succeeded", "conditions": [{"type": "Succeeded", "status": "True", "reason": reason}]},
    )
    with pytest.raises(InvalidInput, match=refusal):
        extension(obj, **options)

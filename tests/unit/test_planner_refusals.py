"""Specs no round can run (planner/refusals.py): what validate_spec() finds in a trial template,
and the one rule for an invalid spec, within a round (experiment.reject_spec) or without one
(plan_invalid_spec)."""

from __future__ import annotations

from datetime import timedelta

from hpo_operator import planner
from hpo_operator.planner import validate_spec
from tests.support.rounds import EARLIER, NOW, cond, event_reasons, exp_status, experiment_outcome, iso, make_spec, run


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

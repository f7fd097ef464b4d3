"""Inputs that must not wedge an experiment: found in review, kept as regressions."""

from __future__ import annotations

import pytest

from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.core import metrics
from hpo_operator.core.conditions import MAX_MESSAGE, set_condition
from hpo_operator.planner import TrialView
from hpo_operator.search.samplers import SearchSpaceError
from hpo_operator.search.suggest import Outcome, Recorded, Suggester
from tests.support.rounds import NOW, created_names, exp_status, make_spec, pod_running, run, suggested, user_trial


def test_a_grid_too_large_to_hold_is_refused():
    spec = make_spec(
        algorithm={"name": "grid"},
        parameters=[
            {"name": "a", "type": "int", "min": 0, "max": 2999},
            {"name": "b", "type": "int", "min": 0, "max": 2999},
        ],
    )
    with pytest.raises(SearchSpaceError, match="9000000 combinations"):
        Suggester(spec)


def test_trials_of_another_experiment_with_the_same_name_are_left_alone():
    body = suggested(0, "Running").body
    body["metadata"]["ownerReferences"][0]["uid"] = "uid-of-a-deleted-experiment"
    foreign = TrialView("exp-0000", body["metadata"].get("uid", ""), body)  # a view of the body as it now is
    plan = run(make_spec(parallelTrialCount=1), [foreign], {"exp-0000": pod_running("exp-0000")})
    assert "exp-0000" not in plan.trial_status and "exp-0000" not in plan.trial_metadata
    assert exp_status(plan)["trials"] == 0


def test_a_hand_edited_not_before_annotation_does_not_stop_the_round():
    queued = suggested(1, "Pending", annotations={"hpo.dev/not-before": "tomorrow"})
    plan = run(make_spec(parallelTrialCount=1), [queued])
    assert plan.start_workloads == ["exp-0001"]


def test_a_suggestion_index_written_by_a_user_is_ignored():
    mine = user_trial("mine", {"x": "3"})
    mine.body["spec"]["suggestionIndex"] = 1_000_000
    plan = run(make_spec(parallelTrialCount=2, maxTrialCount=5), [mine])
    assert exp_status(plan)["suggestionCount"] < 10
    assert created_names(plan) == ["exp-0000"]


def test_steps_beyond_what_json_holds_exactly_are_dropped():
    samples = metrics.parse_log("step=99999999999999999999 loss=0.5\nstep=3 loss=0.4", ["loss"])
    assert [(s.step, s.value) for s in samples] == [(None, 0.5), (3, 0.4)]


def test_condition_messages_are_cut_to_the_api_limit():
    conditions = set_condition([], "RestartAccepted", False, "X", "m" * 40000, NOW)
    assert len(conditions[0].message) == MAX_MESSAGE


def test_an_unseeded_rebuild_tells_results_to_the_values_that_ran():
    spec = ExperimentSpec.model_validate(
        {
            "objective": {"type": "minimize", "metricName": "loss"},
            "parameters": [{"name": "x", "type": "int", "min": 0, "max": 100000}],
            "maxTrialCount": 10,
            "trialTemplate": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
        }
    )
    rebuilt = Suggester(spec)
    rebuilt.replay({0: Recorded({"x": "42"}, "2026-01-01T00:00:00Z")}, 1)
    rebuilt.tell(0, Outcome(value=0.1, at="2026-01-01T00:01:00Z"))
    rebuilt.suggest(1)
    finished = [t for t in rebuilt.study.trials if t.value is not None]
    assert [(t.params, t.value) for t in finished] == [({"x": 42}, 0.1)]

"""The platform's trial kinds (api/trial_kinds.py): which kind a template runs as, the kinds the
operator is told, the refusal's words, and the planner's rules for a refused spec and a refused
watch. The chart's policy gives the same words: tests/integration/test_helm.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hpo_operator import planner
from hpo_operator.api import trial_kinds
from hpo_operator.api.template import TrialTemplate

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
CONTAINERS = {"spec": {"containers": [{"name": "train", "image": "trainer:1"}]}}


def resource(api_version: str, kind: str) -> TrialTemplate:
    return TrialTemplate.model_validate(
        {
            "resource": {
                "apiVersion": api_version,
                "kind": kind,
                "manifest": {"spec": {}},
                "successCondition": {"type": "Done"},
                "failureCondition": {"type": "Failed"},
            }
        }
    )


POD = TrialTemplate.model_validate({"template": CONTAINERS})
JOB = TrialTemplate.model_validate({"job": {"spec": {"template": CONTAINERS}}})
JOBSET = resource("jobset.x-k8s.io/v1alpha2", "JobSet")
TRAINJOB = resource("trainer.kubeflow.org/v1alpha1", "TrainJob")
TRAINRUN = resource("example.org/v1", "TrainRun")


def test_the_kind_of_a_template_comes_from_its_spec_alone():
    assert trial_kinds.template_kind(POD) == ("", "Pod")
    assert trial_kinds.template_kind(JOB) == ("batch", "Job")
    assert trial_kinds.template_kind(JOBSET) == ("jobset.x-k8s.io", "JobSet")
    assert trial_kinds.template_kind(TRAINRUN) == ("example.org", "TrainRun")
    assert trial_kinds.template_kind(resource("v1", "Pod")) == ("", "Pod")  # a pod, written as a resource


def test_unset_allows_every_kind_and_pods_are_always_allowed():
    assert trial_kinds.parse_allowed(None) is None
    for template in (POD, JOB, JOBSET, TRAINRUN):
        assert trial_kinds.refusal(template, None) is None
    pods_only = trial_kinds.parse_allowed("[]")
    assert pods_only == {("", "Pod")}
    assert trial_kinds.refusal(POD, pods_only) is None
    assert trial_kinds.refusal(resource("v1", "Pod"), pods_only) is None


def test_the_charts_list_allows_exactly_its_kinds():
    allowed = trial_kinds.parse_allowed(
        '[{"apiGroup": "batch", "kind": "Job", "resource": "jobs"},'
        ' {"apiGroup": "example.org", "kind": "TrainRun", "resource": "trainruns"}]'
    )
    assert allowed == {("", "Pod"), ("batch", "Job"), ("example.org", "TrainRun")}
    assert trial_kinds.refusal(JOB, allowed) is None
    assert trial_kinds.refusal(TRAINRUN, allowed) is None
    assert trial_kinds.refusal(JOBSET, allowed) is not None
    # The same Kind in another group is another kind.
    assert trial_kinds.refusal(resource("other.org/v1", "TrainRun"), allowed) is not None


@pytest.mark.parametrize(
    "template, message",
    [
        (
            JOB,
            "trial kind Job (batch) is not enabled by the platform: "
            "add {apiGroup: batch, resource: jobs} to the hpo-operator chart's trialKinds",
        ),
        (
            JOBSET,
            "trial kind JobSet (jobset.x-k8s.io) is not enabled by the platform: "
            "add {apiGroup: jobset.x-k8s.io, resource: jobsets} to the hpo-operator chart's trialKinds",
        ),
        (
            TRAINJOB,
            "trial kind TrainJob (trainer.kubeflow.org) is not enabled by the platform: "
            "add {apiGroup: trainer.kubeflow.org, resource: trainjobs} to the hpo-operator chart's trialKinds",
        ),
        (
            TRAINRUN,
            "trial kind TrainRun (example.org) is not enabled by the platform: add {apiGroup: example.org, "
            "resource: <plural of TrainRun>, kind: TrainRun} to the hpo-operator chart's trialKinds",
        ),
        (
            resource("v1", "Service"),
            'trial kind Service (core) is not enabled by the platform: add {apiGroup: "", '
            "resource: <plural of Service>, kind: Service} to the hpo-operator chart's trialKinds",
        ),
    ],
)
def test_a_refusal_names_the_kind_and_the_chart_value_to_set(template, message):
    assert trial_kinds.refusal(template, trial_kinds.parse_allowed("[]")) == message


@pytest.mark.parametrize(
    "text", ["", "jobs.batch", '{"apiGroup": "batch"}', '[{"apiGroup": "batch", "resource": "jobs"}]', "[1]"]
)
def test_a_value_that_is_not_the_charts_list_is_an_error_not_a_guess(text):
    with pytest.raises(ValueError, match="HPO_TRIAL_KINDS"):
        trial_kinds.parse_allowed(text)


def test_a_refused_watch_names_the_resource_the_namespace_and_what_to_grant():
    message = trial_kinds.watch_forbidden(
        "jobs.batch", "team-a", 403, trial_kinds.chart_entry(("batch", "Job"), "jobs")
    )
    assert message == (
        "the operator may not watch jobs.batch in namespace team-a (403): grant its ServiceAccount get, "
        "list, watch, create and delete on jobs.batch there (the hpo-operator chart's trialKinds: add "
        "{apiGroup: batch, resource: jobs}); the experiment waits and goes on by itself once the watch is allowed"
    )
    # A kind the chart does not know: its resource, found by discovery, and its kind.
    assert trial_kinds.chart_entry(("example.org", "TrainRun"), "trainruns") == (
        "{apiGroup: example.org, resource: trainruns, kind: TrainRun}"
    )
    claims = trial_kinds.watch_forbidden("persistentvolumeclaims", "team-a", 403, None)
    assert "on persistentvolumeclaims there;" in claims and "trialKinds" not in claims


def test_a_refused_watch_sets_its_condition_and_says_so_once_per_refusal():
    message = trial_kinds.watch_forbidden("jobs.batch", "ns", 403, None)
    plan = planner.plan_watch_forbidden({}, 3, message, NOW)
    st = plan.experiment_status
    assert st.phase == "Created"  # a new experiment: no status at all before
    [cond] = st.conditions
    assert (cond.type, cond.status, cond.reason, cond.message, cond.observed_generation) == (
        "WorkloadsWatched",
        "False",
        "WatchForbidden",
        message,
        3,
    )
    assert [(e.type, e.reason, e.message) for e in plan.events] == [("Warning", "WatchForbidden", message)]
    # Seen again, the same refusal says nothing more; a running experiment keeps its phase.
    written = {**st.dump(), "phase": "Running"}
    again = planner.plan_watch_forbidden(written, 3, message, NOW)
    assert again.events == [] and again.experiment_status.phase == "Running"
    assert planner.plan_watch_forbidden(written, 3, message + " (401)", NOW).events  # another refusal


def test_once_the_watch_lists_the_condition_is_true_again():
    untouched = {
        "phase": "Running",
        "conditions": [{"type": "Running", "status": "True", "reason": "R", "message": "", "lastTransitionTime": "t"}],
    }
    assert planner.watched_again(untouched, 1, NOW) is untouched
    refused = planner.plan_watch_forbidden(untouched, 1, "refused", NOW).experiment_status.dump()
    mended = planner.watched_again(refused, 2, NOW)
    cond = next(c for c in mended["conditions"] if c["type"] == "WorkloadsWatched")
    assert (cond["status"], cond["reason"], cond["observedGeneration"]) == ("True", "Watched", 2)
    assert [c for c in mended["conditions"] if c["type"] == "Running"] == untouched["conditions"]

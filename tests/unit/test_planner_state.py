"""What every planner step shares (planner/state.py): the body of a new Trial, and a round that
leaves the statuses it read as they were. Rounds are built by hand with tests/support/rounds.py."""

from __future__ import annotations

import copy
import json

from hpo_operator.api.vocabulary import (
    A_NOT_BEFORE,
    A_RESTART,
    L_ATTEMPT,
    L_CONFIG,
    L_EXPERIMENT,
    L_LAUNCH,
    L_LINEAGE,
    L_TRIAL,
)
from hpo_operator.core.space import config_hash
from tests.support.rounds import (
    EARLIER,
    EXP,
    NS,
    created,
    failed,
    make_spec,
    owner_refs,
    pod_running,
    pod_succeeded,
    run,
    succeeded,
    suggested,
    trial_statuses,
)


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

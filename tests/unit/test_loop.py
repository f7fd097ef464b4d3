"""The experiment loop's own part of a round, without a cluster: the logs it reads for the planner, a
spec the planner cannot be given, and the refused creates it keeps between rounds."""

from __future__ import annotations

import asyncio
import json

from hpo_operator import planner
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.controller.logs import PodLogs
from hpo_operator.controller.loop import RECONCILE_INTERVAL, ExperimentLoop, settle_refusals
from hpo_operator.core.metrics import Sample
from hpo_operator.core.podstate import PodObservation


class FakeApi:
    def __init__(self) -> None:
        self.patches: list[tuple[str, str, dict]] = []

    async def patch_status(self, plural: str, namespace: str, name: str, status: dict) -> dict:
        self.patches.append((plural, name, json.loads(json.dumps(status))))
        return {}


class FakeRuntime:
    def __init__(self) -> None:
        self.api = FakeApi()
        self.events: list[tuple] = []

    def post_event(self, obj: dict, *rest: str) -> None:
        self.events.append((obj["metadata"]["name"], *rest))

    def namespace(self, name: str):
        raise AssertionError("a round whose spec does not parse reads nothing more")


def test_a_spec_that_does_not_parse_is_failed_by_the_planners_rule_and_written_once():
    rt = FakeRuntime()
    body = {
        "apiVersion": "hpo.dev/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": "exp", "namespace": "ns", "uid": "uid-exp", "generation": 2},
        "spec": {"maxTrialCount": "many"},
        "status": {
            "phase": "Running",
            "trials": 1,
            "conditions": [
                {"type": "Running", "status": "True", "reason": "Running", "message": "", "lastTransitionTime": "t0"}
            ],
        },
    }
    loop = ExperimentLoop(rt, ("ns", "exp"), "uid-exp", body)
    assert asyncio.run(loop.reconcile()) == RECONCILE_INTERVAL
    [(plural, name, patch)] = rt.api.patches
    assert (plural, name) == ("experiments", "exp")
    assert set(patch) == {"phase", "conditions"} and patch["phase"] == "Failed"
    failed = patch["conditions"][-1]
    assert (failed["type"], failed["status"], failed["reason"], failed["observedGeneration"]) == (
        "Failed",
        "True",
        "InvalidSpec",
        2,
    )
    assert "maxTrialCount" in failed["message"]
    assert rt.events == [("exp", "Warning", "InvalidSpec", failed["message"])]
    # The write is remembered like any plan's (PendingWrites): the next round, before the watch
    # shows it, writes and says nothing again.
    assert loop.written.experiment_status["phase"] == "Failed"
    asyncio.run(loop.reconcile())
    assert len(rt.api.patches) == 1 and len(rt.events) == 1


def view(name: str, phase: str | None) -> planner.TrialView:
    return planner.TrialView(name, f"uid-{name}", {"metadata": {"name": name}, "status": {"phase": phase}})


def test_a_refusal_is_kept_until_the_trial_is_final_or_gone():
    refused = {"pending": "no", "failed": "no", "killed": "no", "gone": "no"}
    settle_refusals(refused, [view("pending", "Pending"), view("failed", "Failed"), view("killed", "Killed")])
    assert refused == {"pending": "no"}


class LogApi:
    def __init__(self) -> None:
        self.read: list[str] = []

    async def pod_log(self, namespace: str, pod: str, **kw) -> str:
        self.read.append(pod)
        return "loss=0.5"


def test_logs_are_chosen_by_the_rounds_observations():
    """The loop observes each pod once (planner.observe_pods) and reads the logs the planner will
    want by those observations: here the pod's body still looks Running, but the round observed it
    succeeded without the objective in its termination message, so its log is read."""
    spec = ExperimentSpec.model_validate(
        {
            "objective": {"type": "minimize", "metricName": "loss"},
            "algorithm": {"name": "random"},
            "maxTrialCount": 1,
            "parameters": [{"name": "x", "type": "double", "min": 0, "max": 1}],
            "trialTemplate": {"template": {"spec": {"containers": [{"name": "train", "image": "t:1"}]}}},
        }
    )
    trial = view("exp-0000", "Running")
    pod = {
        "metadata": {"name": "exp-0000", "namespace": "ns", "uid": "pod-uid"},
        "spec": {"containers": [{"name": "train"}]},
        "status": {"phase": "Running"},
    }
    api = LogApi()
    observed = {"exp-0000": PodObservation("Succeeded", "Completed", termination_message='{"acc": 1}')}
    outputs = asyncio.run(PodLogs(api).wanted(spec, [trial], {"exp-0000": pod}, observed))
    output = outputs["exp-0000"]
    assert output.complete and output.latest == {"loss": Sample("loss", 0.5)} and api.read == ["exp-0000"]

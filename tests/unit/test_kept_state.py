"""What a round keeps from the rounds before it gives exactly the plan a round made from scratch gives.

The operator's loop keeps, per experiment, the TrialView of every Trial whose body has not changed
(planner.kept_views: with what each view worked out of its body) and tells the search only the
results it does not hold yet (RoundInput.told). Here two operators watch one in-memory cluster whose
pods start, succeed, fail, vanish or are replaced by equal copies at random, whose Trials are
replaced by equal copies now and then (an informer's resync), and to which users add Trials. One
keeps its views and passes `told`, the other parses every Trial afresh and tells every result, each
with its own search. Every round, both must plan the same writes."""

from __future__ import annotations

import copy
import json
import random
from datetime import timedelta
from typing import Any

import pytest

from hpo_operator import planner
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.core import times
from hpo_operator.search.suggest import Suggester
from tests.support.simulate import MemoryCluster, exited

ROUNDS = 80


def spec_of(algorithm: dict[str, Any]) -> ExperimentSpec:
    return ExperimentSpec.model_validate(
        {
            "objective": {"type": "minimize", "metricName": "loss"},
            "algorithm": algorithm,
            "parameters": [
                {"name": "x", "type": "double", "min": -5, "max": 5},
                {"name": "k", "type": "categorical", "values": ["a", "b", "c"]},
            ],
            "parallelTrialCount": 6,
            "maxTrialCount": 40,
            "retryPolicy": {"maxRetries": 1, "retryOn": ["Error", "Infrastructure"], "backoffSeconds": 5},
            "trialTemplate": {
                "primaryContainerName": "train",
                "template": {"spec": {"containers": [{"name": "train", "image": "trainer:1"}]}},
            },
        }
    )


class InformedCluster(MemoryCluster):
    """The in-memory cluster, its objects replaced on each change as an informer delivers them
    (never changed in place: what a kept view relies on)."""

    async def update_trial(self, name: str, status: dict[str, Any] | None, metadata: dict[str, Any] | None) -> None:
        self.trials[name] = copy.deepcopy(self.trials[name])
        await super().update_trial(name, status, metadata)


def pod_status(cluster: MemoryCluster, phase: str, exit_code: int | None = None, loss: float | None = None) -> dict:
    now = times.iso(cluster.now)
    status: dict[str, Any] = {"phase": phase, "startTime": now, "conditions": []}
    if exit_code is not None:
        container = exited(now, now, json.dumps({"loss": loss}) if loss is not None else None)
        container["state"]["terminated"].update(exitCode=exit_code, reason="Completed" if exit_code == 0 else "Error")
        status["containerStatuses"] = [container]
    return status


def change(cluster: MemoryCluster, rng: random.Random) -> None:
    """A random step of the cluster: pods move on, vanish or are copied; Trials are copied."""
    for name, pod in list(cluster.pods.items()):
        phase = pod["status"]["phase"]
        if phase in ("Succeeded", "Failed"):
            continue
        roll = rng.random()
        if roll < 0.3:
            continue
        new = copy.deepcopy(pod)
        if roll < 0.5:
            new["status"] = pod_status(cluster, "Running")
        elif roll < 0.75:
            new["status"] = pod_status(cluster, "Succeeded", 0, round(rng.uniform(0, 10), 3))
        elif roll < 0.87:
            new["status"] = pod_status(cluster, "Failed", 1)
        elif roll < 0.92:
            del cluster.pods[name]  # deleted under it (evicted, a node lost)
            continue
        cluster.pods[name] = new  # (else: an equal copy, a resync)
    for name in list(cluster.trials):
        if rng.random() < 0.05:
            cluster.trials[name] = copy.deepcopy(cluster.trials[name])
    if rng.random() < 0.1:  # a user's Trial, applied with kubectl: adopted (or refused) by the next round
        name = f"mine-{len(cluster.trials)}"
        x = str(rng.choice([0.5, 1.5, round(rng.uniform(-5, 5), 2)]))
        cluster.trials[name] = {
            "apiVersion": "hpo.dev/v1alpha1",
            "kind": "Trial",
            "metadata": {
                "name": name,
                "namespace": "default",
                "uid": f"uid-{name}",
                "creationTimestamp": times.iso(cluster.now),
            },
            "spec": {"experimentName": "exp", "parameters": [{"name": "x", "value": x}, {"name": "k", "value": "a"}]},
            "status": {},
        }
    cluster.now += timedelta(seconds=rng.choice([1, 2, 5, 15]))


def comparable(plan: planner.Plan) -> dict[str, Any]:
    """The plan's writes (tells apart)."""
    return {
        "trial_status": {n: st.model_dump(mode="json") for n, st in plan.trial_status.items()},
        "trial_metadata": plan.trial_metadata,
        "create_trials": plan.create_trials,
        "start_workloads": plan.start_workloads,
        "delete_workloads": plan.delete_workloads,
        "queue_activations": plan.queue_activations,
        "delete_volumes": plan.delete_volumes,
        "experiment_status": plan.experiment_status.model_dump(mode="json"),
        "events": plan.events,
        "requeue_after": plan.requeue_after,
    }


def round_input(
    cluster: MemoryCluster, spec: ExperimentSpec, trials: list[planner.TrialView], suggester: Suggester, told: bool
) -> planner.RoundInput:
    return planner.RoundInput(
        experiment=planner.ExperimentView("exp", "default", "uid-exp", 1, spec, copy.deepcopy(cluster.status)),
        trials=trials,
        pods=copy.deepcopy(cluster.pods),
        now=cluster.now,
        suggest=suggester.suggest,
        should_stop=suggester.should_stop,
        tell=suggester.tell,
        told=suggester.told() if told else None,
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("algorithm", ["random", "tpe"])
def test_rounds_with_kept_views_and_told_results_plan_what_rounds_from_scratch_plan(seed, algorithm):
    rng = random.Random(seed)
    settings = [{"name": "nStartupTrials", "value": "4"}] if algorithm == "tpe" else []
    spec = spec_of({"name": algorithm, "seed": seed, "settings": settings})
    cluster = InformedCluster(lambda name: cluster.pod_of(name, pod_status(cluster, "Pending")))
    kept_search, fresh_search = Suggester(spec), Suggester(spec)
    kept: dict[str, planner.TrialView] = {}
    rounds = 0
    while rounds < ROUNDS and cluster.status.get("phase") not in ("Succeeded", "Failed"):
        kept = planner.kept_views(list(cluster.trials.values()), kept)
        known = kept_search.told()
        mine = planner.plan(round_input(cluster, spec, list(kept.values()), kept_search, told=True))
        afresh = [planner.TrialView(n, b["metadata"]["uid"], copy.deepcopy(b)) for n, b in cluster.trials.items()]
        theirs = planner.plan(round_input(cluster, spec, afresh, fresh_search, told=False))
        assert comparable(mine) == comparable(theirs), f"round {rounds}"
        # The same results reach both searches: a tell left out was of a result the search held.
        assert all(t in theirs.tells for t in mine.tells)
        assert all(i in known for i, t in theirs.tells if (i, t) not in mine.tells)
        cluster.apply(mine)
        change(cluster, rng)
        rounds += 1
    assert cluster.status.get("trialsSucceeded", 0) > 5, "the sequence tried little"
    assert cluster.status.get("trialsFailed", 0) > 0 and cluster.status.get("trialsRetried", 0) > 0
    adopted = [n for n, b in cluster.trials.items() if n.startswith("mine-") and b["metadata"].get("ownerReferences")]
    assert adopted, "no user's Trial was adopted"

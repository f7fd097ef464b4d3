"""Budgets in running time and compute on the local cluster: an experiment ends on each, with its
own reason, exactly where the Trials' and the status's timestamps say, although the operator was
SIGKILLed and started again on the way (what was spent is derived from the cluster, never kept in
memory); raising a limit then continues the same search.

KWOK's nodes do not advertise GPUs, so the compute test makes a KWOK node of its own that does
(nvidia.com/gpu: 4, tainted for this test's namespace only) and removes it afterwards."""

from __future__ import annotations

import math
import time
from datetime import datetime

import pytest
from kubernetes import client

from hpo_operator import client as hpo
from hpo_operator.core import times
from tests.support.experiments import condition, experiment, loss_is_x, x_space
from tests.support.kube import Cluster, this_checkouts_crds, wait_until

GPU = "nvidia.com/gpu"
X = x_space()


def t(value: str | None) -> datetime:
    parsed = times.parse(value)
    assert parsed is not None
    return parsed


def history(exp: dict) -> list[tuple[str, str | None, datetime]]:
    return [(h["phase"], h.get("reason"), t(h["time"])) for h in exp["status"]["statusHistory"]]


def running_seconds(exp: dict) -> float:
    """The time the experiment's phase was Running, by its status history (whole seconds)."""
    changes = history(exp)
    total = 0.0
    for (phase, _, since), (_, _, until) in zip(changes, changes[1:], strict=False):
        if phase == "Running":
            total += (until - since).total_seconds()
    return total


@pytest.fixture
def budget_crds(kubectl, crds):
    this_checkouts_crds(kubectl, ("trials.status", "runSeconds"), ("experiments.spec.budget", "maxResourceSeconds"))


def ours(cluster: Cluster, name: str) -> dict:
    """The experiment, as long as the API server still serves this checkout's CRD (another checkout
    sharing the cluster may apply its own, without budgets: the test then says so)."""
    exp = cluster.get(name)
    assert "budget" in exp["spec"], "another checkout replaced the Experiment CRD with one without spec.budget"
    return exp


def wait_phase(cluster: Cluster, name: str, phase: str, timeout: float = 60) -> dict:
    wait_until(lambda: ours(cluster, name).get("status", {}).get("phase") == phase, timeout=timeout, what=phase)
    return cluster.get(name)


def wait_finished(cluster: Cluster, name: str, timeout: float) -> dict:
    return wait_until(
        lambda: (e := ours(cluster, name)).get("status", {}).get("phase") in ("Succeeded", "Failed") and e,
        timeout=timeout,
        what=f"experiment {name} to finish",
    )


def test_a_running_time_budget_ends_the_experiment_exactly_across_a_suspension_and_a_sigkill(
    api, namespace, budget_crds, operator, kwok_nodes, session
):
    cluster = Cluster(api, namespace)
    limit = 20
    body = experiment(
        "duration",
        X,
        annotations=loss_is_x("3s"),
        max_trials=1000,
        parallel=2,
        budget={"maxDurationSeconds": limit},
    )
    cluster.create(body)
    wait_phase(cluster, "duration", "Running")
    time.sleep(4)
    # Suspended for a while: that time does not count.
    cluster.patch("duration", {"spec": {"suspend": True}})
    wait_phase(cluster, "duration", "Suspended")
    time.sleep(6)
    cluster.patch("duration", {"spec": {"suspend": False}})
    wait_phase(cluster, "duration", "Running")
    time.sleep(4)
    # The operator dies mid-run and comes back before the budget is spent: it must go on counting
    # from what the status says, not from its own start.
    operator.kill()
    time.sleep(4)
    operator.start()
    exp = wait_finished(cluster, "duration", timeout=90)

    assert exp["status"]["phase"] == "Succeeded"
    assert condition(exp, "Succeeded")["reason"] == "MaxDurationReached"
    spent = exp["status"]["spent"]["durationSeconds"]
    # Exactly the limit, give or take the round that noticed it (the operator wakes at the moment it
    # is due), and what the status history says, to its whole seconds.
    assert limit <= spent <= limit + 1.5, exp["status"]["spent"]
    assert abs(running_seconds(exp) - spent) <= 2, history(exp)
    phases = [p for p, _, _ in history(exp)]
    assert phases == ["Running", "Suspended", "Running", "Succeeded"], phases
    suspended = (history(exp)[2][2] - history(exp)[1][2]).total_seconds()
    started, ended = t(exp["status"]["startTime"]), t(exp["status"]["completionTime"])
    # The suspension did not count, and the restart did not start the count again.
    assert limit + suspended - 2 <= (ended - started).total_seconds() <= limit + suspended + 2.5
    trials = cluster.trials()
    assert all(t(tr["metadata"]["creationTimestamp"]) <= ended for tr in trials.values())
    stopped = [tr for tr in trials.values() if tr["status"].get("reason") == "ExperimentFinished"]
    assert stopped, "trials running at the limit are stopped (runningTrials: Stop, the default)"
    for tr in stopped:
        assert tr["status"]["phase"] == "Killed" and tr["status"]["runSeconds"] > 0

    # Raising the budget continues the same search: the stopped trials run again, new suggestions
    # follow the last, and it ends again at its new limit.
    before = exp["status"]["suggestionCount"]
    extension = hpo.extend_experiment(session, "duration", namespace, more_seconds=8)
    new_limit = extension.changes["budget.maxDurationSeconds"][1]
    assert extension.goes_on and new_limit == math.ceil(spent) + 8
    again = wait_until(
        lambda: (
            (e := ours(cluster, "duration"))["status"].get("phase") == "Succeeded"
            and e["status"]["spent"]["durationSeconds"] >= new_limit
            and e
        ),
        timeout=90,
        what="the extended experiment to end again",
    )
    assert condition(again, "Succeeded")["reason"] == "MaxDurationReached"
    assert again["status"]["spent"]["durationSeconds"] <= new_limit + 1.5
    assert again["status"]["suggestionCount"] >= before
    trials = cluster.trials()
    resumed = {
        tr["spec"]["retryOf"] for tr in trials.values() if tr["metadata"]["labels"]["hpo.dev/launch-reason"] == "Resume"
    }
    assert {tr["metadata"]["name"] for tr in stopped} <= resumed, resumed
    assert cluster.wait_events("ExperimentExtended")


@pytest.fixture
def gpu_node(api, namespace):
    """A KWOK node with 4 GPUs that only this test's pods tolerate."""
    core = client.CoreV1Api(api)
    name = f"kwok-gpu-{namespace[-8:]}"
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110", GPU: "4"}
    core.create_node(
        client.V1Node(
            metadata=client.V1ObjectMeta(
                name=name,
                annotations={"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                labels={"type": "kwok-gpu", "kubernetes.io/hostname": name, "hpo.dev/test-namespace": namespace},
            ),
            spec=client.V1NodeSpec(
                taints=[client.V1Taint(key="hpo.dev/test-gpu", value=namespace, effect="NoSchedule")]
            ),
            status=client.V1NodeStatus(allocatable=capacity, capacity=capacity),
        )
    )
    try:
        wait_until(
            lambda: any(c.type == "Ready" and c.status == "True" for c in core.read_node(name).status.conditions or []),
            timeout=60,
            what="the GPU node to be Ready",
        )
        yield name
    finally:
        core.delete_node(name)


def test_a_gpu_seconds_budget_ends_the_experiment_exactly_across_a_sigkill(
    api, namespace, budget_crds, operator, kwok_nodes, gpu_node
):
    cluster = Cluster(api, namespace)
    limit = 24.0
    body = experiment(
        "gpus",
        X,
        annotations=loss_is_x("4s"),
        max_trials=100,
        parallel=2,
        budget={"maxResourceSeconds": {GPU: limit}},
    )
    pod = body["spec"]["trialTemplate"]["template"]["spec"]
    pod["containers"][0]["resources"] = {"requests": {"cpu": "100m"}, "limits": {GPU: "1"}}
    pod["nodeSelector"] = {"kubernetes.io/hostname": gpu_node}
    pod["tolerations"] = [{"key": "hpo.dev/test-gpu", "operator": "Equal", "value": namespace, "effect": "NoSchedule"}]
    cluster.create(body)
    wait_until(
        lambda: sum(tr.get("status", {}).get("phase") == "Running" for tr in cluster.trials().values()) == 2,
        timeout=60,
        what="two trials running",
    )
    # Killed while two trials run: they finish while it is away, and what they spent must be
    # counted to their pods' end, not to the operator's return.
    operator.kill()
    time.sleep(7)
    operator.start()
    exp = wait_finished(cluster, "gpus", timeout=120)
    assert condition(exp, "Succeeded")["reason"] == "ComputeBudgetReached"

    trials = cluster.trials()
    pods = cluster.pods()
    spent = 0.0
    intervals = []
    for name, tr in trials.items():
        st = tr["status"]
        assert st.get("requests") in (None, {"cpu": 0.1, GPU: 1.0}), st
        if not st.get("startTime"):
            continue  # never ran
        start = t(st["startTime"])
        pod_status = pods[name].status if name in pods else None
        terminated = pod_status.container_statuses[0].state.terminated if pod_status else None
        if st["phase"] == "Succeeded":
            # Recorded to the container's own finish, whenever the operator saw it.
            assert terminated is not None
            assert st["runSeconds"] == (terminated.finished_at - start).total_seconds(), (name, st)
        end = start.timestamp() + st["runSeconds"]
        spent += st["runSeconds"]
        intervals.append((start.timestamp(), end))
    recorded = {r["resource"]: r["seconds"] for r in exp["status"]["spent"]["resources"]}
    assert recorded[GPU] == pytest.approx(spent, abs=0.01)
    assert recorded["cpu"] == pytest.approx(spent * 0.1, abs=0.01)
    # The limit was reached, and passed by no more than the moment the operator took to stop what ran.
    assert limit <= spent <= limit + 3, spent
    # Nothing started once the budget was spent: the moment the trials' GPU-seconds reached the limit.
    moments = sorted({s for s, _ in intervals} | {e for _, e in intervals})
    reached = next(m for m in moments if sum(max(0.0, min(e, m) - s) for s, e in intervals) >= limit - 1e-6)
    assert all(s <= reached + 1 for s, _ in intervals), (reached, intervals)
    assert any(tr["status"].get("reason") == "ExperimentFinished" for tr in trials.values())

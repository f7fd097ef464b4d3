"""The informers the experiment loops read: a namespace's Trials, and only its trial pods."""

from __future__ import annotations

import asyncio

from hpo_operator.api.vocabulary import GROUP, L_EXPERIMENT, VERSION
from hpo_operator.controller.slim import slim_custom_object, slim_pod
from hpo_operator.kube import client as kubeapi
from hpo_operator.kube.client import PODS, TRIALS
from hpo_operator.kube.informer import Informer


def pod(name: str, labels: dict) -> dict:
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "i"}], "nodeName": "no-such-node"},
    }


def trial(name: str, experiment: str) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Trial",
        "metadata": {"name": name},
        "spec": {"experimentName": experiment, "parameters": [{"name": "x", "value": "1"}]},
    }


async def until(predicate, timeout: float = 20) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


def test_informers_list_then_follow_and_select_trial_pods_on_the_server(kubeconfig, namespace, crds, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", kubeconfig)

    async def scenario() -> None:
        api = await kubeapi.connect()
        woken: list = []
        # Made before the informers start: found by the first listing.
        await api.create("trials", namespace, trial("early", "exp-a"))
        trials = Informer(
            api, namespace, TRIALS, lambda t: t["spec"].get("experimentName"), slim_custom_object, woken.append
        )
        pods = Informer(
            api,
            namespace,
            PODS,
            lambda p: p["metadata"]["labels"][L_EXPERIMENT],
            slim_pod,
            woken.append,
            label_selector=L_EXPERIMENT,
        )
        tasks = [asyncio.create_task(i.run()) for i in (trials, pods)]
        try:
            await asyncio.wait_for(trials.synced.wait(), 20)
            await asyncio.wait_for(pods.synced.wait(), 20)
            assert set(trials.objects["exp-a"]) == {"early"}
            assert "managedFields" not in trials.objects["exp-a"]["early"]["metadata"]

            await api.create("trials", namespace, trial("late", "exp-b"))
            await api.create_pod(namespace, pod("trial-pod", {L_EXPERIMENT: "exp-b"}))
            await api.create_pod(namespace, pod("other-pod", {"app": "unrelated"}))
            await until(
                lambda: "late" in trials.objects.get("exp-b", {}) and "trial-pod" in pods.objects.get("exp-b", {})
            )
            assert "exp-b" in woken
            # The unrelated pod never reached the informer: the API server filtered it.
            await asyncio.sleep(1)
            assert [n for objs in pods.objects.values() for n in objs] == ["trial-pod"]
            # A pod keeps only what the planner reads.
            assert set(pods.objects["exp-b"]["trial-pod"]["spec"]) == {"nodeName", "containers"}

            await api.delete_pod(namespace, "trial-pod")
            await api._json(api.custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, "trials", "early")
            await until(lambda: "exp-a" not in trials.objects)
            # The pod is bound to a node that does not exist, so its deletion completes at once
            # only with grace 0; either way it is marked for deletion or gone.
            await until(
                lambda: (
                    "trial-pod" not in pods.objects.get("exp-b", {})
                    or pods.objects["exp-b"]["trial-pod"]["metadata"].get("deletionTimestamp")
                )
            )
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await api.close()

    asyncio.run(scenario())

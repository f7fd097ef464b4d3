"""Checkpoints: a volume per configuration, mounted into each of its attempts, so that a retry
resumes where the failed attempt stopped. On KWOK: the claims (one per configuration, named
deterministically, found again after an operator SIGKILL between claim and pod), the mounts, the
environment and retention. On the real node (marker realnode): examples/real-checkpoint.yaml, a
real OOMKill and an eviction, resumed from what the failed attempt saved.

The local cluster has no storage provisioner: the tests create static hostPath PersistentVolumes of
a storage class of their own, which the claims bind to (the PV controller of the local
kube-controller-manager binds them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.support.experiments import GROUP, VERSION, by_config, experiment, fails_space, oom_killed_first
from tests.support.kube import Cluster, wait_until

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "real-checkpoint.yaml"


def checkpointed(name: str, storage_class: str, annotations: dict, **spec) -> dict:
    body = experiment(
        name,
        fails_space(1),
        annotations={"sim.hpo.dev/message": '{"loss": ${params.fails}}', **annotations},
        algorithm={"name": "grid", "seed": 1},
        max_trials=2,
        parallel=2,
        retryPolicy={"maxRetries": 2, "backoffSeconds": 0},
        **spec,
    )
    tt = body["spec"]["trialTemplate"]
    tt["template"]["spec"]["containers"][0]["args"] = ["--save-to=${trial.checkpointDir}/model"]
    tt["checkpoint"] = {
        "volumeClaimTemplate": {"storageClassName": storage_class, "size": "10Mi"},
        "mountPath": "/ckpt",
    }
    return body


def claims(api, namespace: str) -> dict[str, client.V1PersistentVolumeClaim]:
    return {
        c.metadata.name: c
        for c in client.CoreV1Api(api).list_namespaced_persistent_volume_claim(namespace).items
        if not c.metadata.deletion_timestamp
    }


def env_of(pod: client.V1Pod) -> dict[str, str]:
    return {e.name: e.value for e in pod.spec.containers[0].env or []}


def test_each_configuration_gets_one_claim_that_every_attempt_mounts(api, namespace, operator, kwok_nodes, volumes):
    vols = volumes(4)
    cluster = Cluster(api, namespace)
    # fails=1 is OOMKilled on attempt 1 and retried; fails=0 succeeds at once.
    cluster.create(
        checkpointed(
            "ckpt",
            vols.storage_class,
            {**oom_killed_first("${params.fails}"), "sim.hpo.dev/duration": "1s"},
        )
    )
    # While the retry runs, both claims exist (deleted once their configuration succeeded).
    seen: dict[str, str] = {}
    pods_seen: dict[str, client.V1Pod] = {}

    def record():
        for name, c in claims(api, namespace).items():
            seen[name] = c.metadata.labels["hpo.dev/config"]
        pods_seen.update(cluster.pods())
        exp = cluster.get("ckpt")
        return exp.get("status", {}).get("phase") in ("Succeeded", "Failed") and exp

    exp = wait_until(record, timeout=120, interval=0.1, what="the experiment to finish")
    assert exp["status"]["phase"] == "Succeeded", exp["status"]

    groups = by_config(cluster.trials(), "fails")
    assert [t["status"]["phase"] for t in groups["1"]] == ["Failed", "Succeeded"]
    assert [t["status"]["phase"] for t in groups["0"]] == ["Succeeded"]
    configs = {t["metadata"]["labels"]["hpo.dev/config"]: v for v, ts in groups.items() for t in ts}
    # One claim per configuration, named after the experiment and the configuration.
    assert seen == {f"ckpt-ckpt-{config}": config for config in configs}
    for trials in groups.values():
        claim = f"ckpt-ckpt-{trials[0]['metadata']['labels']['hpo.dev/config']}"
        for t in trials:
            pod = pods_seen[t["metadata"]["name"]]
            (volume,) = [v for v in pod.spec.volumes if v.name == "hpo-checkpoint"]
            assert volume.persistent_volume_claim.claim_name == claim
            mounts = {m.name: m.mount_path for m in pod.spec.containers[0].volume_mounts}
            assert mounts["hpo-checkpoint"] == "/ckpt"
            assert pod.spec.containers[0].args == ["--save-to=/ckpt/model"]
            env = env_of(pod)
            assert env["HPO_CHECKPOINT_DIR"] == "/ckpt"
            assert ("HPO_RESUME" in env) == (t["spec"]["attempt"] > 1)
    # DeleteOnSuccess: both configurations succeeded, so neither claim is kept.
    wait_until(lambda: not claims(api, namespace), timeout=60, what="the claims to be deleted")


def test_an_operator_killed_between_claim_and_pod_duplicates_nothing(
    api, namespace, operator, kwok_nodes, volumes, kubectl
):
    """A quota refusing pods holds the operator right after its claims: SIGKILLed there, the next
    one finds the claims (409) and creates each pod once."""
    vols = volumes(2)
    core = client.CoreV1Api(api)
    core.create_namespaced_resource_quota(namespace, {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}})
    cluster = Cluster(api, namespace)
    cluster.create(checkpointed("sigkill", vols.storage_class, {"sim.hpo.dev/duration": "1s"}))
    wait_until(
        lambda: len(claims(api, namespace)) == 2 and len(cluster.trials()) == 2,
        timeout=60,
        what="the claims of both configurations, and no pod",
    )
    assert not cluster.pods()
    operator.kill()
    core.delete_namespaced_resource_quota("no-pods", namespace)
    operator.start()
    exp = cluster.wait_finished("sigkill", timeout=120)
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    trials = cluster.trials()
    assert sorted(trials) == ["sigkill-0000", "sigkill-0001"]
    assert set(cluster.pods()) == set(trials)


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"volumeClaimTemplate": {"size": "lots"}, "mountPath": "/ckpt"}, "size"),
        ({"volumeClaimTemplate": {"size": "1Gi", "accessMode": "ReadOnlyMany"}, "mountPath": "/ckpt"}, "accessMode"),
        ({"volumeClaimTemplate": {"size": "1Gi"}, "mountPath": "ckpt"}, "mountPath"),
        ({"volumeClaimTemplate": {"size": "1Gi"}, "mountPath": "/ckpt", "retention": "Sometimes"}, "retention"),
        ({"mountPath": "/ckpt"}, "volumeClaimTemplate"),
    ],
)
def test_bad_checkpoint_specs_are_refused_at_apply(kubectl, namespace, crds, spec, field):
    body = checkpointed("bad", "any", {})
    body["spec"]["trialTemplate"]["checkpoint"] = spec
    out = kubectl.apply(body, namespace, check=False)
    assert out.returncode != 0 and field in out.stderr, out.stderr


def test_a_checkpoint_is_refused_for_a_resource_trial(kubectl, namespace, crds):
    body = checkpointed("bad", "any", {})
    tt = body["spec"]["trialTemplate"]
    tt["resource"] = {
        "apiVersion": "x.dev/v1",
        "kind": "Run",
        "manifest": {},
        "successCondition": {"type": "Done"},
        "failureCondition": {"type": "Failed"},
    }
    del tt["template"]
    out = kubectl.apply(body, namespace, check=False)
    assert out.returncode != 0 and "checkpoint is for pod and Job trials" in out.stderr, out.stderr


# --- on the real node ----------------------------------------------------------------------------


def history_steps(trial: dict, name: str) -> list[int]:
    return [m["step"] for m in trial["status"].get("metricHistory") or [] if m["name"] == name]


@pytest.mark.realnode
def test_the_example_resumes_an_oom_killed_configuration_from_its_checkpoint(
    api, restricted, operator, real_node, volumes, kubectl, kubeconfig
):
    # In a namespace that enforces Pod Security's restricted level, as the example's pods meet it.
    namespace = restricted
    volumes(2, "hpo-checkpoint-local")
    cluster = Cluster(api, namespace)
    kubectl.run("apply", "-n", namespace, "-f", str(EXAMPLE))
    exp = cluster.wait_finished("real-checkpoint", timeout=300)
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    groups = by_config(cluster.trials(), "lr")
    first, retry = groups["0.3"]
    assert (first["status"]["phase"], first["status"]["failureClass"]) == ("Failed", "OOMKilled")
    assert history_steps(first, "loss") == [1, 2]  # epoch 3 never finished
    assert retry["status"]["phase"] == "Succeeded" and retry["spec"]["attempt"] == 2
    assert retry["status"]["resumedFrom"] == {"trial": first["metadata"]["name"], "attempt": 1, "step": 2}
    # The configuration's history: epochs 1-2 from the first attempt, 3-6 from the retry, once each.
    assert history_steps(retry, "loss") == [1, 2, 3, 4, 5, 6]
    (other,) = groups["0.1"]
    assert history_steps(other, "loss") == [1, 2, 3, 4, 5, 6] and "resumedFrom" not in other["status"]
    # Seen as users see it: the RESUMED column of -o wide, and kubectl hpo describe.
    table = kubectl.run("get", "trials", "-n", namespace, "-o", "wide").stdout.splitlines()
    header = table[0].split()
    row = next(line.split() for line in table if line.startswith(retry["metadata"]["name"] + " "))
    assert row[header.index("RESUMED")] == "2"
    script = Path(sys.executable).with_name("kubectl-hpo")
    described = subprocess.run(
        [str(script), "describe", "real-checkpoint", "--kubeconfig", kubeconfig, "-n", namespace],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert described.returncode == 0, described.stderr
    line = next(x for x in described.stdout.splitlines() if retry["metadata"]["name"] in x and "Succeeded" in x)
    assert "step 2" in line and "RESUMED" in described.stdout, described.stdout
    # DeleteOnSuccess: both configurations succeeded.
    wait_until(lambda: not claims(api, namespace), timeout=60, what="the claims to be deleted")


@pytest.mark.realnode
def test_an_evicted_trial_resumes_and_deleting_the_experiment_removes_its_claims(
    api, namespace, operator, real_node, volumes
):
    volumes(2, "hpo-checkpoint-local")
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"]["name"] = "evicted"
    spec = body["spec"]
    spec["parameters"] = [{"name": "lr", "type": "discrete", "values": ["0.1"]}]
    spec["maxTrialCount"], spec["parallelTrialCount"] = 1, 1
    spec["trialTemplate"]["checkpoint"]["retention"] = "Keep"
    spec["trialTemplate"]["template"]["spec"]["containers"][0]["env"] = [{"name": "EPOCH_SECONDS", "value": "2"}]
    cluster = Cluster(api, namespace)
    cluster.create(body)
    core = client.CoreV1Api(api)

    def trained_two_epochs():
        try:
            log = core.read_namespaced_pod_log("evicted-0000", namespace)
        except client.ApiException:
            return False
        return "step=3 " in (log or "")  # so epoch 2's checkpoint is saved (each epoch prints, then saves)

    wait_until(trained_two_epochs, timeout=120, what="two epochs of the first attempt saved")
    # Preempted: the Eviction API marks the pod DisruptionTarget, so the failure is Infrastructure.
    core.create_namespaced_pod_eviction(
        "evicted-0000",
        namespace,
        client.V1Eviction(metadata=client.V1ObjectMeta(name="evicted-0000", namespace=namespace)),
    )
    exp = cluster.wait_finished("evicted", timeout=240)
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    first, retry = by_config(cluster.trials(), "lr")["0.1"]
    assert first["status"]["failureClass"] == "Infrastructure"
    assert retry["status"]["resumedFrom"]["step"] >= 2
    assert history_steps(retry, "loss")[-1] == 6
    assert len(claims(api, namespace)) == 1  # Keep: still there ...
    cluster.custom.delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "experiments", "evicted", propagation_policy="Foreground"
    )
    wait_until(lambda: not claims(api, namespace), timeout=120, what="the claims to go with the experiment")

"""Population-based training on the local cluster: what `kubectl apply` refuses and `kubectl explain`
says; a population run on KWOK nodes (the claims, the copy step in each segment's pod, the lineage
in kubectl); the operator SIGKILLed while a generation is half made; a parent's checkpoint claim
deleted before its child copied it; and, on the real node, Katib's simple-pbt example converted
and run with a program of ours.

The claims bind to static hostPath PersistentVolumes (tests/support/kube.py Volumes): the local cluster has
no storage provisioner. KWOK pods run no program, so on KWOK the copy step is only checked in the
pod spec; the real node runs it (here, and examples/pbt.yaml in test_examples.py). Every run's
Trials are checked against the rule (tests/support/population.py decisions_problems): each segment is what
the generation before it decides."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from hpo_operator.convert.katib import convert_yaml
from tests.support import population as sim
from tests.support.experiments import GROUP, VERSION, condition, experiment, sim_pod
from tests.support.kube import Cluster, wait_until

REPO = Path(__file__).resolve().parents[2]
KATIB = REPO / "tests" / "fixtures" / "katib"
pytestmark = pytest.mark.usefixtures("current_crds")


def pbt(name: str, storage_class: str, population: int, generations: int, *, parallel: int | None = None, **kw) -> dict:
    """A pbt experiment on KWOK nodes: segment g of member m reports q = h0 (maximised), after
    `duration`; its pod template is what a real trial's would be (the operator adds the copy step)."""
    duration = kw.pop("duration", "1s")
    return experiment(
        name,
        sim.toy_space(),
        max_trials=population * generations,
        parallel=parallel or population,
        algorithm={"name": "pbt", "seed": 11, "settings": sim.pbt_settings(population, 5)},
        objective=dict(sim.OBJECTIVE),
        retryPolicy={"maxRetries": 1, "backoffSeconds": 0},
        trialTemplate={
            "checkpoint": {
                "volumeClaimTemplate": {"storageClassName": storage_class, "size": "1Mi"},
                "mountPath": "/ckpt",
            },
            "template": sim_pod(
                {"sim.hpo.dev/duration": duration, "sim.hpo.dev/message": '{"q": ${params.h0}}'},
                ["--until=${trial.endStep}", "--member=${trial.member}"],
            ),
        },
        **kw,
    )


def claims(api, namespace: str) -> dict[str, client.V1PersistentVolumeClaim]:
    """The claims, but those being deleted (the operator's part is done: the API server removes them
    once no pod uses them)."""
    return {
        c.metadata.name: c
        for c in client.CoreV1Api(api).list_namespaced_persistent_volume_claim(namespace).items
        if not c.metadata.deletion_timestamp
    }


def checked(cluster: Cluster, name: str) -> tuple[dict, dict[str, dict]]:
    """The finished experiment and its Trials, which must be what the rule decides."""
    exp = cluster.get(name)
    trials = {n: t for n, t in cluster.trials().items() if t["spec"]["experimentName"] == name}
    assert sim.decisions_problems(exp["spec"], exp["metadata"]["uid"], trials) == []
    return exp, trials


# --- at apply -----------------------------------------------------------------------------------------


def refused(kubectl, namespace: str, body: dict) -> str:
    out = kubectl.apply(body, namespace, check=False)
    assert out.returncode != 0, "applied"
    return out.stderr


def with_settings(body: dict, **settings: str) -> dict:
    body["spec"]["algorithm"]["settings"] = [{"name": k, "value": v} for k, v in settings.items()]
    return body


@pytest.mark.parametrize(
    "change, said",
    [
        (lambda b: with_settings(b), "pbt needs the setting populationSize, a whole number from 2 to 1000"),
        (lambda b: with_settings(b, populationSize="1"), "pbt needs the setting populationSize"),
        (lambda b: with_settings(b, populationSize="many"), "pbt needs the setting populationSize"),
        (
            lambda b: b["spec"].update(maxTrialCount=10),
            "pbt: maxTrialCount counts segments, populationSize x generations, so it must be a multiple",
        ),
        (
            lambda b: b["spec"].update(
                objective={
                    "metrics": [{"metricName": "q", "type": "maximize"}, {"metricName": "t", "type": "minimize"}]
                }
            ),
            "pbt ranks the members by one objective",
        ),
        (
            lambda b: b["spec"].update(earlyStopping={"algorithm": "median"}),
            "pbt itself decides at every generation which members go on",
        ),
        (lambda b: b["spec"]["trialTemplate"].pop("checkpoint"), "pbt needs trialTemplate.checkpoint"),
        (
            lambda b: b["spec"]["trialTemplate"]["checkpoint"]["volumeClaimTemplate"].update(
                accessMode="ReadWriteOncePod"
            ),
            "ReadWriteOncePod lets one pod at a time mount it",
        ),
        (
            lambda b: b["spec"].update(parameters=[{"name": "opt", "type": "categorical", "values": ["a", "b"]}]),
            "pbt explores by perturbing int and double parameters: give at least one",
        ),
        (
            lambda b: b["spec"]["algorithm"]["settings"].append({"name": "mutationProb", "value": "0.1"}),
            "pbt: populationSize, perturbationInterval, truncationQuantile, resampleProbability, perturbationFactors",
        ),
    ],
)
def test_what_pbt_cannot_take_is_refused_at_apply_with_the_reason(kubectl, namespace, crds, change, said):
    body = pbt("bad", "any", 4, 3)
    change(body)
    assert said in refused(kubectl, namespace, body)


def test_a_pbt_experiment_applies_and_its_segments_are_immutable(api, kubectl, namespace, crds):
    assert kubectl.apply(pbt("good", "any", 4, 3), namespace, check=False).returncode == 0
    cluster = Cluster(api, namespace)
    trial = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Trial",
        "metadata": {"name": "mine"},
        "spec": {"experimentName": "nothing", "parameters": [], "segment": {"member": 0, "generation": 0}},
    }
    cluster.create(trial, "trials")
    with pytest.raises(client.ApiException) as e:
        cluster.patch("mine", {"spec": {"segment": {"member": 1}}}, "trials")
    assert e.value.status == 422 and "segment is immutable" in e.value.body
    bad = {
        **trial,
        "metadata": {"name": "orphan"},
        "spec": {**trial["spec"], "segment": {"member": 0, "generation": 2}},
    }
    with pytest.raises(client.ApiException) as e:
        cluster.create(bad, "trials")
    assert "a later one names its parent segment and member" in e.value.body


def test_kubectl_explain_says_what_max_trial_count_counts_for_pbt(kubectl, crds):
    explained = " ".join(kubectl.run("explain", "experiment.spec.maxTrialCount").stdout.split())
    assert "With algorithm pbt it counts segments: populationSize x generations" in explained
    explained = " ".join(kubectl.run("explain", "experiment.spec.algorithm.name").stdout.split())
    assert "pbt: population-based training" in explained
    explained = " ".join(kubectl.run("explain", "trial.spec.segment").stdout.split())
    assert "parentMember" in explained and "exploited" in explained


# --- on KWOK ------------------------------------------------------------------------------------------


def test_a_population_runs_exactly_its_segments_each_from_its_parents_claim(
    api, namespace, operator, kwok_nodes, volumes, kubectl, kubeconfig
):
    vols = volumes(9)
    cluster = Cluster(api, namespace)
    cluster.create(pbt("pbt", vols.storage_class, 3, 3))
    seen_claims: set[str] = set()
    pods: dict[str, client.V1Pod] = {}

    def record():
        seen_claims.update(claims(api, namespace))
        pods.update(cluster.pods())
        exp = cluster.get("pbt")
        return exp.get("status", {}).get("phase") in ("Succeeded", "Failed") and exp

    exp = wait_until(record, timeout=180, interval=0.2, what="the population to finish")
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    assert condition(exp, "Succeeded")["reason"] == "MaxTrialsReached"
    exp, trials = checked(cluster, "pbt")
    assert sorted(trials) == [f"pbt-g{g:03d}-m{m:03d}" for g in range(3) for m in range(3)]
    assert exp["status"]["configurations"] == 9
    # A claim per segment, named after it; DeleteOnSuccess leaves the last generation's.
    assert seen_claims == {f"pbt-ckpt-g{g:03d}-m{m:03d}" for g in range(3) for m in range(3)}
    wait_until(
        lambda: set(claims(api, namespace)) == {f"pbt-ckpt-g002-m{m:03d}" for m in range(3)},
        timeout=60,
        what="the earlier generations' claims to go",
    )
    for name, t in trials.items():
        seg, pod = t["spec"]["segment"], pods[name]
        assert t["metadata"]["labels"]["hpo.dev/member"] == str(seg["member"])
        (step,) = pod.spec.init_containers
        assert step.name == "hpo-checkpoint-copy" and step.image == "trainer:1"
        mounts = {v.name: v.persistent_volume_claim for v in pod.spec.volumes if v.persistent_volume_claim}
        assert mounts["hpo-checkpoint"].claim_name == f"pbt-ckpt-g{seg['generation']:03d}-m{seg['member']:03d}"
        if seg["generation"]:
            parent = trials[seg["parent"]]["spec"]["segment"]
            assert mounts["hpo-checkpoint-parent"].claim_name == (
                f"pbt-ckpt-g{parent['generation']:03d}-m{parent['member']:03d}"
            )
            assert mounts["hpo-checkpoint-parent"].read_only
        else:
            assert "hpo-checkpoint-parent" not in mounts
        assert pod.spec.containers[0].args == [f"--until={5 * (seg['generation'] + 1)}", f"--member={seg['member']}"]
    assert any(t["spec"]["segment"].get("exploited") for t in trials.values())
    # As users see it: kubectl get trials -o wide, and the lineage.
    wide = kubectl.run("get", "trials", "-n", namespace, "-o", "wide").stdout.splitlines()
    header = wide[0].split()
    assert header[-4:-1] == ["MEMBER", "GENERATION", "PARENT"]
    script = Path(sys.executable).with_name("kubectl-hpo")
    shown = subprocess.run(
        [str(script), "trials", "pbt", "--lineage", "--kubeconfig", kubeconfig, "-n", namespace],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split()[:3] == ["SEGMENT", "MEMBER", "GENERATION"] and len(lines) == 10
    for t in trials.values():
        if t["spec"]["segment"].get("exploited"):
            line = next(x for x in lines if t["metadata"]["name"] in x)
            assert ("├─ " in line or "└─ " in line) and f"exploited m{t['spec']['segment']['parentMember']}" in line


def trial_quota(api, namespace: str, count: int | None) -> None:
    """At most `count` Trials in the namespace (None: no limit)."""
    core = client.CoreV1Api(api)
    if count is None:
        core.delete_namespaced_resource_quota("trials", namespace)
        return
    body = {"metadata": {"name": "trials"}, "spec": {"hard": {f"count/trials.{GROUP}": str(count)}}}
    try:
        core.replace_namespaced_resource_quota("trials", namespace, {**body, "metadata": {"name": "trials"}})
    except client.ApiException as e:
        if e.status != 404:
            raise
        core.create_namespaced_resource_quota(namespace, body)


def test_an_operator_killed_while_a_generation_is_half_made_makes_exactly_the_rest(
    api, namespace, operator, kwok_nodes, volumes
):
    """A quota on Trials lets the round that decides a generation create only some of its
    segments (the API server refuses the others): the operator is SIGKILLed there, mid-decision,
    and the next one makes exactly the missing segments, as the rule decided them."""
    vols = volumes(12)
    cluster = Cluster(api, namespace)
    trial_quota(api, namespace, 6)  # generation 0 (4) and half of generation 1
    cluster.create(pbt("pbt", vols.storage_class, 4, 3))
    refused = re.compile(r"creating trial pbt-g\d+-m\d+ failed: 403")
    for made, next_quota in ((6, 10), (10, None)):
        wait_until(lambda made=made: len(cluster.trials()) == made, timeout=120, what=f"{made} segments made")
        # The generation's round was refused its last creates (this process's log): it failed and
        # is retried; no experiment status counted the missing segments.
        wait_until(
            lambda: refused.search(operator.log().rsplit("--- start", 1)[-1]),
            timeout=60,
            what="the quota refusing a segment's create",
        )
        operator.kill()
        assert len(cluster.trials()) == made
        trial_quota(api, namespace, next_quota)
        operator.start()
    exp = cluster.wait_finished("pbt", timeout=180)
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    exp, trials = checked(cluster, "pbt")
    assert len(trials) == 12 and exp["status"]["configurations"] == 12
    assert operator.starts == 3


# A KWOK pod with this annotation "true" runs until it is turned off (hack/kwok/stages.yaml).
HANG = "sim.hpo.dev/hang"


def release(cluster: Cluster, keep: str | None = None) -> None:
    """Lets every hanging pod but `keep` end: KWOK ends it once its hang annotation is off."""
    for name, pod in cluster.pods().items():
        if name != keep and (pod.metadata.annotations or {}).get(HANG) == "true":
            cluster.core.patch_namespaced_pod(name, cluster.ns, {"metadata": {"annotations": {HANG: "false"}}})


def test_a_segment_whose_parents_claim_was_deleted_fails_and_its_member_exploits_at_the_next_generation(
    api, namespace, operator, kwok_nodes, volumes
):
    vols = volumes(6)
    cluster = Cluster(api, namespace)
    # One trial at a time, and every pod runs until the test ends it: member 0's generation-1
    # segment (started first: the oldest) holds the slot, so member 1's waits, unstarted, for as
    # long as the test wants. With seed 11 member 0 exploits member 1 at generation 1, so both
    # copy from the claim deleted below: member 0's must have mounted it, member 1's must not.
    body = pbt("pbt", vols.storage_class, 2, 3, parallel=1)
    body["spec"]["trialTemplate"]["template"]["metadata"]["annotations"][HANG] = "true"
    cluster.create(body)
    held, waiting = "pbt-g001-m000", "pbt-g001-m001"

    def holding():
        exp = cluster.get("pbt")
        assert exp.get("status", {}).get("phase") not in ("Succeeded", "Failed"), exp["status"]
        release(cluster, keep=held)
        trials = cluster.trials()
        assert waiting not in cluster.pods(), f"{waiting} started before {held}"
        # The operator writes Running once it has seen the pod run: from then on every round of
        # it sees the pod's volumes mounted, whatever it sees of the claim.
        running = trials.get(held, {}).get("status", {}).get("phase") == "Running"
        return running and waiting in trials and trials[waiting]

    segment = wait_until(holding, timeout=120, what=f"{held} to run while {waiting} waits for the slot")["spec"][
        "segment"
    ]
    lost = f"pbt-ckpt-g000-m{segment['parentMember']:03d}"
    assert cluster.get(held, "trials")["spec"]["segment"]["parent"] == segment["parent"]  # both copy from it
    client.CoreV1Api(api).delete_namespaced_persistent_volume_claim(lost, namespace)
    cluster.wait_trial(waiting, ("Failed",), timeout=60)
    assert waiting not in cluster.pods()  # failed before it started: the slot was never free

    def ending():
        release(cluster)
        exp = cluster.get("pbt")
        return exp.get("status", {}).get("phase") in ("Succeeded", "Failed") and exp

    exp = wait_until(ending, timeout=180, what="experiment pbt to finish")
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    exp, trials = checked(cluster, "pbt")
    assert len(trials) == 6  # exactly population x generations: the lost segment is not re-run
    st = trials["pbt-g001-m001"]["status"]
    assert (st["phase"], st["reason"], st["failureClass"]) == ("Failed", "CheckpointLost", "Startup")
    assert lost in st["message"] and not st.get("retriedBy")
    after = trials["pbt-g002-m001"]["spec"]["segment"]
    assert after == {
        "member": 1,
        "generation": 2,
        "parent": "pbt-g001-m000",
        "parentMember": 0,
        "exploited": True,
    }
    assert trials["pbt-g002-m001"]["status"]["phase"] == "Succeeded"


# --- on the real node: Katib's simple-pbt, converted --------------------------------------------------

# The contract of Katib's simple-pbt program (its image is Katib's and does not exist here): train
# from the checkpoint directory it is given, save to it, print Validation-accuracy. Ours trains a
# one-parameter model whose accuracy grows with the epochs and the learning rate.
PROGRAM = r"""
import json, os, sys
args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:])
lr, epochs, directory = float(args["lr"]), int(args["epochs"]), args["checkpoint"]
state = os.path.join(directory, "state.json")
w, done = 0.0, 0
if os.path.exists(state):
    with open(state) as f:
        saved = json.load(f)
    w, done = saved["w"], saved["epochs"]
    print(f"resumed_step={done}", flush=True)
for epoch in range(done + 1, done + epochs + 1):
    w += lr * (1 - w)
    print(f"epoch {epoch}: step={epoch} Validation-accuracy={w:.6f}", flush=True)
with open(state + ".tmp", "w") as f:
    json.dump({"w": w, "epochs": done + epochs}, f)
os.replace(state + ".tmp", state)
"""


@pytest.mark.realnode
def test_katibs_simple_pbt_example_converts_and_runs(api, restricted, operator, real_node, volumes, kubectl):
    namespace = restricted
    vols = volumes(2)
    [converted] = convert_yaml((KATIB / "simple-pbt.yaml").read_text())
    body = converted.manifest
    body["metadata"].pop("namespace")
    spec = body["spec"]
    spec["trialTemplate"]["checkpoint"]["volumeClaimTemplate"]["storageClassName"] = vols.storage_class
    example = yaml.safe_load((REPO / "examples" / "pbt.yaml").read_text())["spec"]["trialTemplate"]["template"]
    pod = spec["trialTemplate"]["job"]["spec"]["template"]
    for key in ("nodeSelector", "tolerations", "dnsPolicy", "securityContext"):
        pod["spec"][key] = example["spec"][key]
    (container,) = pod["spec"]["containers"]
    command = container["command"]
    # Katib's image and program, replaced by ours (the same arguments), in the real node's image.
    assert command[:2] == ["python3", "/opt/pbt/pbt_test.py"]
    container.update(
        image="hpo.local/trial:1",
        imagePullPolicy="Never",
        command=["python3", "-c", PROGRAM, *command[2:]],
        securityContext=example["spec"]["containers"][0]["securityContext"],
        resources={"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "64Mi"}},
    )
    Cluster(api, namespace).create(body)
    cluster = Cluster(api, namespace)
    exp = cluster.wait_finished("simple-pbt", timeout=300)
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    exp, trials = checked(cluster, "simple-pbt")
    assert len(trials) == 2
    for t in trials.values():
        lr = float(t["spec"]["parameters"][0]["value"])
        expected = 1 - (1 - lr) ** 20  # 20 epochs from an empty checkpoint
        assert t["status"]["objectiveValue"] == pytest.approx(expected, abs=1e-6)
        assert {m["name"] for m in t["status"]["metrics"]} >= {"Validation-accuracy"}
    assert exp["status"]["currentOptimalTrial"]["objectiveValue"] == max(
        t["status"]["objectiveValue"] for t in trials.values()
    )

"""Every example applies cleanly: the API server validates it (schema and CEL) without storing it.
The pods each example's trials run are admitted in a namespace that enforces Pod Security's
`restricted` level, and the examples that run here run in such a namespace."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.api.vocabulary import API_VERSION, L_CONFIG, L_EXPERIMENT
from hpo_operator.workloads.kinds import build_workload, pod_templates, runtime_replicated_jobs, trainjob_runtime
from tests.support import population as sim
from tests.support.experiments import condition, real_experiment, sklearn_space
from tests.support.kube import Cluster, TrialPhaseCounts

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


# API groups of the training controllers (hack/training.sh): an example that creates their
# objects applies only where they run.
TRAINING_GROUPS = ("kueue.x-k8s.io/", "trainer.kubeflow.org/", "jobset.x-k8s.io/")


def needs_training_controllers(path: Path) -> bool:
    return any(
        doc and str(doc.get("apiVersion", "")).startswith(TRAINING_GROUPS)
        for doc in yaml.safe_load_all(path.read_text())
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_applies_cleanly(path, crds, namespace, kubectl, request):
    if needs_training_controllers(path):
        request.getfixturevalue("training_controllers")
    out = kubectl.run("apply", "--dry-run=server", "-n", namespace, "-f", str(path), check=False)
    assert out.returncode == 0, out.stderr


def first_value(parameter: dict) -> str:
    values = parameter.get("values")
    return str(values[0]) if values else str(parameter["min"])


def trial_pods(path: Path, namespace: str) -> list[dict]:
    """The pods an example's first trial runs, as the operator builds its workload: the pod, or a
    pod of each pod template in its Job or resource (for a TrainJob, its runtime's, in the same
    file)."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    experiment = next(d for d in docs if d["kind"] == "Experiment")
    name = experiment["metadata"]["name"]
    spec = ExperimentSpec.model_validate(experiment["spec"])
    trial = {
        "apiVersion": API_VERSION,
        "kind": "Trial",
        "metadata": {
            "name": f"{name}-0000",
            "namespace": namespace,
            "uid": "00000000-0000-0000-0000-000000000000",
            "labels": {L_EXPERIMENT: name, L_CONFIG: "c0"},
        },
        "spec": {
            "experimentName": name,
            "attempt": 1,
            "parameters": [{"name": p["name"], "value": first_value(p)} for p in experiment["spec"]["parameters"]],
        },
    }
    if spec.algorithm.name == "pbt":  # a later segment: with the copy step and its parent's claim
        trial["spec"]["segment"] = {"member": 0, "generation": 1, "parent": f"{name}-g000-m001", "parentMember": 1}
    runtime = trainjob_runtime(spec, namespace)
    runtimes = [d for d in docs if runtime and d["kind"] == runtime[0].kind and d["metadata"]["name"] == runtime[2]]
    kind, body = build_workload(spec, name, trial, runtime_replicated_jobs(runtimes[0]) if runtimes else None)
    if kind.is_pod:
        return [body]
    templates = pod_templates(body) + [t for r in runtimes for t in pod_templates(r)]
    assert templates, f"{path.name}: no pod template found"
    return [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": f"{name}-", **{k: v for k, v in t.get("metadata", {}).items() if k != "name"}},
            "spec": t["spec"],
        }
        for t in templates
    ]


def test_a_namespace_enforcing_restricted_refuses_a_pod_that_does_not_meet_it(api, restricted):
    """Pod Security admission is on here: the tests below would prove nothing otherwise."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root"},
        "spec": {"containers": [{"name": "c", "image": "example.org/train:1.0"}]},
    }
    with pytest.raises(client.ApiException) as refused:
        client.CoreV1Api(api).create_namespaced_pod(restricted, pod, dry_run="All")
    message = json.loads(refused.value.body)["message"]
    assert refused.value.status == 403 and 'violates PodSecurity "restricted:latest"' in message, message


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_each_examples_trial_pods_are_admitted_where_restricted_is_enforced(path, api, crds, restricted):
    core = client.CoreV1Api(api)
    for pod in trial_pods(path, restricted):
        try:
            core.create_namespaced_pod(restricted, pod, dry_run="All")
        except client.ApiException as e:
            pytest.fail(f"{path.name}: a trial's pod is refused: {json.loads(e.body)['message']}")


def no_token(pod: client.V1Pod) -> bool:
    """The pod mounts no ServiceAccount token (the API server adds the kube-api-access volume
    unless automountServiceAccountToken is false)."""
    return pod.spec.automount_service_account_token is False and not any(
        v.name.startswith("kube-api-access") for v in pod.spec.volumes or []
    )


def test_the_simulated_examples_run_to_the_documented_end(api, restricted, operator, kwok_nodes, kubectl):
    namespace = restricted
    cluster = Cluster(api, namespace)
    for name in ("grid", "retries", "job-trials"):
        kubectl.run("apply", "-n", namespace, "-f", str(EXAMPLES[0].parent / f"{name}.yaml"))
    grid, retries = cluster.wait_finished("grid"), cluster.wait_finished("retries")
    assert condition(grid, "Succeeded")["reason"] == "SearchSpaceExhausted"
    assert grid["status"]["configurations"] == 10
    assert retries["status"]["phase"] == "Succeeded"
    assert (
        retries["status"]["configurations"],
        retries["status"]["failedConfigurations"],
        retries["status"]["trialsRetried"],
    ) == (4, 1, 5)
    jobs = cluster.wait_finished("job-trials")
    assert jobs["status"]["phase"] == "Succeeded", jobs["status"]
    trials = {n: t for n, t in cluster.trials().items() if n.startswith("job-trials-")}
    retried = [t for t in trials.values() if t["status"]["phase"] == "Failed"]
    # Every configuration with layers=1 was OOMKilled once and recovered; each trial ran 2 pods.
    assert retried and all(t["status"]["failureClass"] == "OOMKilled" and t["status"].get("retriedBy") for t in retried)
    assert jobs["status"]["trialsSucceeded"] == 6 and len(trials) == 6 + len(retried)
    pods = [p for p in cluster.pods().values() if p.metadata.labels.get("hpo.dev/experiment") == "job-trials"]
    assert len(pods) == 2 * len(trials)
    # Trial pods, and a Job trial's pods, mount no ServiceAccount token: the operator's default.
    assert pods and all(no_token(p) for p in cluster.pods().values())


def test_the_trainjob_example_runs_to_the_documented_end(
    training_controllers, api, restricted, operator, kwok_nodes, kubectl
):
    namespace = restricted
    cluster = Cluster(api, namespace)
    path = EXAMPLES[0].parent / "trainjob-trials.yaml"
    kubectl.run("apply", "-n", namespace, "-f", str(path))
    try:
        exp = cluster.wait_finished("trainjob-trials", timeout=240)
    finally:
        kubectl.run("delete", "clustertrainingruntime", "hpo-example-torch", "--wait=false", check=False)
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    trials = cluster.trials()
    retried = [t for t in trials.values() if t["status"]["phase"] == "Failed"]
    # Every configuration with layers=1 had node 0 OOMKilled once and recovered.
    assert retried and all(t["status"]["failureClass"] == "OOMKilled" and t["status"].get("retriedBy") for t in retried)
    assert all(
        {p["name"]: p["value"] for p in t["spec"]["parameters"]}["layers"] == "1" and t["spec"]["attempt"] == 1
        for t in retried
    )
    assert exp["status"]["trialsSucceeded"] == 6 and len(trials) == 6 + len(retried)
    for t in trials.values():
        if t["status"]["phase"] == "Succeeded":  # node 0's loss, not node 1's 1000
            lr = {p["name"]: p["value"] for p in t["spec"]["parameters"]}["lr"]
            assert t["status"]["objectiveValue"] == float(lr)
    pods = list(cluster.pods().values())
    per_trial = Counter(p.metadata.labels["hpo.dev/trial"] for p in pods)
    assert set(per_trial) == set(trials)
    # Two nodes each; a failed trial keeps node 0's pod at least (node 1's, if it still ran when
    # node 0 was OOMKilled, is deleted with the failed Job: how far it got is the machine's timing).
    for name, t in trials.items():
        assert per_trial[name] in ((2,) if t["status"]["phase"] == "Succeeded" else (1, 2)), name
    assert all(no_token(p) for p in pods)  # as the example's runtime says


def test_the_multi_objective_example_finds_its_feasible_front(api, restricted, operator, kwok_nodes, kubectl):
    namespace = restricted
    cluster = Cluster(api, namespace)
    kubectl.run("apply", "-n", namespace, "-f", str(EXAMPLES[0].parent / "multi-objective.yaml"))
    exp = cluster.wait_finished("multi-objective")
    status = exp["status"]
    assert status["phase"] == "Succeeded" and status["trialsSucceeded"] == 12, status
    assert "currentOptimalTrial" not in status
    trials = {n: t["status"] for n, t in cluster.trials().items() if n.startswith("multi-objective-")}
    layers_width = {
        n: {p["name"]: int(p["value"]) for p in t["spec"]["parameters"]}
        for n, t in cluster.trials().items()
        if n in trials
    }
    # What the example's comment says each trial reports, and whether it fits in 6 GB.
    for name, st in trials.items():
        lw = layers_width[name]
        assert st["objectiveValues"] == [float(f"0.{lw['layers']}{lw['width']}"), lw["layers"] * 10]
        assert st["feasible"] is (lw["width"] <= 6)
    # NSGA-II's first generation is seeded random sampling: it includes a width of 7.
    assert any(not st["feasible"] for st in trials.values())
    # The front: for each number of layers that ran feasibly, its widest feasible trial.
    widest = {}
    for name, lw in layers_width.items():
        if trials[name]["feasible"] and lw["width"] > widest.get(lw["layers"], (0, ""))[0]:
            widest[lw["layers"]] = (lw["width"], name)
    front = status["paretoFront"]
    assert front and status["paretoFrontSize"] == len(front) == len(widest)
    assert {p["trialName"] for p in front} == {name for _, name in widest.values()}
    assert status["hypervolume"] > 0
    # kubectl get -o wide shows the front's size and each trial's objectives and feasibility (the
    # default view leaves out what only some experiments fill).
    row = kubectl.run("get", "experiment", "multi-objective", "-n", namespace, "-o", "wide").stdout
    assert "FRONT" in row and f" {len(front)} " in row.splitlines()[1] + " "
    assert "FRONT" not in kubectl.run("get", "experiment", "multi-objective", "-n", namespace).stdout
    wide = ("get", "trials", "-n", namespace, "-l", "hpo.dev/experiment=multi-objective")
    rows = kubectl.run(*wide, "-o", "wide").stdout
    assert "OBJECTIVES" in rows and "FEASIBLE" in rows and "val_acc=" in rows
    assert "OBJECTIVES" not in kubectl.run(*wide).stdout


def test_the_kueue_example_runs_two_trials_at_a_time_and_queues_the_others(
    api, restricted, operator, kwok_nodes, kubectl, training_controllers
):
    namespace = restricted
    cluster = Cluster(api, namespace)
    phases = TrialPhaseCounts(api, namespace)
    path = EXAMPLES[0].parent / "kueue.yaml"
    kubectl.run("apply", "-n", namespace, "-f", str(path))
    try:
        exp = cluster.wait_finished("kueue", timeout=180)
    finally:
        most = phases.stop()
        kubectl.run("delete", "-n", namespace, "-f", str(path), "--wait=false", check=False)
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    assert (exp["status"]["trialsSucceeded"], exp["status"].get("trialsFailed", 0), exp["status"]["trials"]) == (
        8,
        0,
        8,
    )
    # As its comment says: two admitted at a time (the ClusterQueue's 2 CPUs), the others Queued
    # (all five at first, before Kueue admits any), never more than parallelTrialCount.
    assert most.get("Running", 0) <= 2 and 3 <= most.get("Queued", 0) <= 5, most


@pytest.mark.realnode
def test_the_real_node_examples_trial_runs_where_restricted_is_enforced(api, restricted, operator, real_node):
    """examples/real-sklearn.yaml's pod template, one trial, really run in the image hpo.local/trial:1
    (user 65534) under runAsNonRoot and the runtime's seccomp profile, with no token mounted."""
    cluster = Cluster(api, restricted)
    cluster.create(real_experiment("digits", parameters=sklearn_space("300")))  # podRetention: Keep, as the example
    exp = cluster.wait_finished("digits", timeout=240)
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    pod = cluster.pods()["digits-0000"]
    assert pod.spec.node_name == real_node
    assert pod.spec.security_context.run_as_non_root is True
    assert pod.spec.security_context.seccomp_profile.type == "RuntimeDefault"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0
    assert no_token(pod)


def history_steps(trial: dict, name: str) -> list[int]:
    return [m["step"] for m in trial["status"].get("metricHistory") or [] if m["name"] == name]


@pytest.mark.realnode
def test_the_pbt_example_trains_its_population_and_retries_a_segment_from_its_own_start(
    api, current_crds, restricted, operator, real_node, volumes, kubectl, kubeconfig
):
    namespace = restricted
    volumes(20, "hpo-checkpoint-local")
    cluster = Cluster(api, namespace)
    kubectl.run("apply", "-n", namespace, "-f", str(EXAMPLES[0].parent / "pbt.yaml"))
    exp = cluster.wait_finished("pbt", timeout=900)
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    trials = cluster.trials()
    assert sim.decisions_problems(exp["spec"], exp["metadata"]["uid"], trials) == []
    assert len(trials) == 21 and exp["status"]["configurations"] == 20  # 4 x 5 segments, one retried
    # Member 1's generation-2 segment: OOMKilled after saving step 10; its retry copied its parent's
    # checkpoint (step 8) again and trained steps 9-12 from there.
    first, retry = trials["pbt-g002-m001"], trials["pbt-g002-m001-a2"]
    assert (first["status"]["phase"], first["status"]["failureClass"]) == ("Failed", "OOMKilled")
    assert history_steps(first, "q") == [9, 10]
    parent = first["spec"]["segment"]["parent"]
    assert retry["spec"]["segment"] == first["spec"]["segment"] and retry["status"]["phase"] == "Succeeded"
    assert retry["status"]["resumedFrom"]["trial"] == parent and retry["status"]["resumedFrom"]["step"] == 8
    assert history_steps(retry, "q") == [9, 10, 11, 12]
    # Every later segment started at its parent's last step, and trained its four.
    for name, t in trials.items():
        seg = t["spec"]["segment"]
        if t["status"]["phase"] != "Succeeded":
            continue
        assert history_steps(t, "q")[-1] == 4 * (seg["generation"] + 1), name
        if seg["generation"]:
            assert t["status"]["resumedFrom"] == {
                "trial": seg["parent"],
                "attempt": trials[seg["parent"]]["spec"]["attempt"],
                "step": 4 * seg["generation"],
            }, name
    # The population did better than any of its first members would have alone (q at step 20 with
    # their first hyperparameters, the toy's closed form).
    best = exp["status"]["currentOptimalTrial"]
    assert best["trialName"].startswith("pbt-g004-")

    def alone(t: dict) -> float:
        h = {p["name"]: float(p["value"]) for p in t["spec"]["parameters"]}
        return 1.2 - sum((0.9 * (1 - 0.1 * h[k]) ** 20) ** 2 for k in ("h0", "h1"))

    assert best["objectiveValue"] > max(alone(trials[f"pbt-g000-m{m:03d}"]) for m in range(4))
    # Its lineage, as kubectl hpo shows it.
    script = Path(sys.executable).with_name("kubectl-hpo")
    shown = subprocess.run(
        [str(script), "trials", "pbt", "--lineage", "--kubeconfig", kubeconfig, "-n", namespace],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert shown.returncode == 0 and len(shown.stdout.splitlines()) == 21, shown.stdout + shown.stderr
    assert "Succeeded   " in shown.stdout and "pbt-g002-m001-a2" in shown.stdout

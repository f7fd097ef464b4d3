"""Population-based training against random search and a grid, through the operator on the local
cluster's real node (make cluster-real), at equal numbers of training steps (bench/README.md).

- toy: the PBT paper's toy problem (examples/pbt.yaml's program, without its deliberate OOMKill):
  pbt with 4 members x 5 generations of 4 steps, against 4 random configurations and a 2 x 2 grid
  (h0, h1 in {0.25, 0.75}) trained 20 steps each: 80 steps for each method. The curve is the best
  Q(θ) after every 16 steps of the whole population (pbt: after each generation; the others:
  after each 4 steps of their 4 trials).
- sklearn: SGDClassifier.partial_fit on scikit-learn's digits (70% train, 15% validation, 15%
  test), learning rate (eta0, constant) and alpha: pbt with 4 members x 8 generations of one epoch,
  against 4 random configurations of 8 epochs: 32 epochs each. pbt ranks by the validation
  accuracy; the table gives the best member's validation accuracy and its test accuracy.

Each method runs in a namespace of its own with its own operator (python -m hpo_operator), and
static hostPath PersistentVolumes for the checkpoint claims. Run:

    HPO_KUBECONFIG=.cluster/kubeconfig .venv/bin/python bench/pbt.py --seeds 1,2,3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "operator")]

from kubernetes import client, config  # noqa: E402

from tests.support import population as sim  # noqa: E402
from tests.support.kube import Cluster, OperatorProcess, Volumes, wait_until  # noqa: E402

EXAMPLE = REPO / "examples" / "pbt.yaml"

SKLEARN = r"""
import os, pickle, sys
import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import train_test_split
lr, alpha, end = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
X, y = load_digits(return_X_y=True)
X = X / 16.0
X_train, X_rest, y_train, y_rest = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
X_val, X_test, y_val, y_test = train_test_split(X_rest, y_rest, test_size=0.5, random_state=0, stratify=y_rest)
directory = os.environ.get("HPO_CHECKPOINT_DIR")
saved = os.path.join(directory, "model.pkl") if directory else None
model, epoch = None, 0
if saved and os.path.exists(saved):
    with open(saved, "rb") as f:
        model, epoch = pickle.load(f)
    print(f"resumed_step={epoch}", flush=True)
if model is None:
    model = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=lr, alpha=alpha, random_state=0)
model.set_params(eta0=lr, alpha=alpha)
classes = np.unique(y)
while epoch < end:
    epoch += 1
    order = np.random.default_rng(epoch).permutation(len(y_train))
    model.partial_fit(X_train[order], y_train[order], classes=classes)
    val, test = model.score(X_val, y_val), model.score(X_test, y_test)
    print(f"epoch {epoch}: step={epoch} val_accuracy={val:.6f} test_accuracy={test:.6f}", flush=True)
    if saved:
        with open(saved + ".tmp", "wb") as f:
            pickle.dump((model, epoch), f)
        os.replace(saved + ".tmp", saved)
"""


# The paper's setup: h is one of two masks, (1, 0) or (0, 1): a step improves one half of θ.
FOCUS = "import sys\nf = float(sys.argv[1])\nsys.argv[1:2] = [str(1 - f), str(f)]\n"


def toy_experiment(method: str, seed: int, storage_class: str, paper: bool = False) -> dict[str, Any]:
    """The toy: h0, h1 in [0, 1], 4 members (or trials) of 20 steps; or, `paper`, the paper's
    setup: one int `focus` in {0, 1} (h = (1 - focus, focus)), 2 members (or trials) of 40 steps,
    pbt resampling it at each exploit (resampleProbability 1; a perturbation leaves 0 and 1 as
    they are)."""
    body = yaml.safe_load(EXAMPLE.read_text())
    spec = body["spec"]
    container = spec["trialTemplate"]["template"]["spec"]["containers"][0]
    container["env"] = [e for e in container["env"] if e["name"] != "OOM_SEGMENT"]
    spec["trialTemplate"]["checkpoint"]["volumeClaimTemplate"]["storageClassName"] = storage_class
    spec["algorithm"]["seed"] = seed
    body["metadata"] = {"name": f"toy-{method}"}
    members, steps = (2, 40) if paper else (4, 20)
    if paper:
        spec["parameters"] = [{"name": "focus", "type": "int", "min": 0, "max": 1}]
        container["args"] = [FOCUS + container["args"][0], "${params.focus}", *container["args"][3:]]
        settings = {s["name"]: s for s in spec["algorithm"]["settings"]}
        settings["populationSize"]["value"] = "2"
        settings["resampleProbability"]["value"] = "1"
        spec.update(maxTrialCount=20, parallelTrialCount=2)
    if method == "pbt":
        return body
    # The same members' budget in one trial each, all at once, without a checkpoint.
    del spec["trialTemplate"]["checkpoint"]
    head = container["args"][0]
    values = ["${params.focus}"] if paper else ["${params.h0}", "${params.h1}"]
    container["args"] = [head, *values, str(steps), "${trial.attempt}"]
    spec.update(maxTrialCount=members, parallelTrialCount=members)
    spec["algorithm"] = {"name": method, "seed": seed}
    if method == "grid" and not paper:
        grid = {"type": "double", "min": 0.25, "max": 0.75, "step": 0.5}
        spec["parameters"] = [{"name": n, **grid} for n in ("h0", "h1")]
    return body


def sklearn_experiment(method: str, seed: int, storage_class: str) -> dict[str, Any]:
    body = toy_experiment(method, seed, storage_class)
    body["metadata"] = {"name": f"sgd-{method}"}
    spec = body["spec"]
    spec["objective"] = {"type": "maximize", "metricName": "val_accuracy", "additionalMetricNames": ["test_accuracy"]}
    spec["parameters"] = [
        {"name": "lr", "type": "double", "min": 1e-4, "max": 1.0, "log": True},
        {"name": "alpha", "type": "double", "min": 1e-6, "max": 1e-2, "log": True},
    ]
    container = spec["trialTemplate"]["template"]["spec"]["containers"][0]
    container["resources"] = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}}
    container["env"] = [{"name": "OPENBLAS_NUM_THREADS", "value": "1"}]
    end = "${trial.endStep}" if method == "pbt" else "8"
    container["args"] = [SKLEARN, "${params.lr}", "${params.alpha}", end]
    if method == "pbt":
        settings = {s["name"]: s for s in spec["algorithm"]["settings"]}
        settings["perturbationInterval"]["value"] = "1"
        spec["maxTrialCount"] = 32
        spec["trialTemplate"]["checkpoint"]["volumeClaimTemplate"]["size"] = "64Mi"
    return body


def history(trial: dict[str, Any], metric: str) -> dict[int, float]:
    return {m["step"]: m["value"] for m in trial["status"].get("metricHistory") or [] if m["name"] == metric}


class Pruned(Exception):
    """The cluster's Trial CRD dropped spec.segment meanwhile (another checkout applied its own)."""


def run(api: client.ApiClient, kubeconfig: str, body: dict[str, Any], volumes: int, log: Path) -> dict[str, Any]:
    """run_once(), again (at most 3 times) when another checkout's CRD dropped the segments."""
    for attempt in range(6):
        try:
            return run_once(api, kubeconfig, body, volumes, log)
        except Pruned:
            print(f"(the cluster's Trial CRD dropped spec.segment: again, attempt {attempt + 2})", file=sys.stderr)
    raise RuntimeError("the cluster's Trial CRD keeps dropping spec.segment")


def current_crds(kubeconfig: str) -> None:
    """This checkout's CRDs: on a shared cluster another checkout's may drop a Trial's spec.segment."""
    kubectl = [str(Path.home() / ".cache/hpo-operator/bin/kubectl"), "--kubeconfig", kubeconfig]

    def applied() -> bool:
        subprocess.run(
            [*kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds")],
            check=True,
            capture_output=True,
        )
        found = subprocess.run([*kubectl, "get", "crd", "trials.hpo.dev", "-o", "yaml"], capture_output=True, text=True)
        return "parentMember" in found.stdout

    wait_until(applied, timeout=60, interval=2, what="this checkout's Trial CRD")


def run_once(api: client.ApiClient, kubeconfig: str, body: dict[str, Any], volumes: int, log: Path) -> dict[str, Any]:
    """Runs one experiment in a namespace of its own; returns its status and Trials."""
    current_crds(kubeconfig)
    core = client.CoreV1Api(api)
    namespace = f"hpo-bench-pbt-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace, "labels": {"app.kubernetes.io/part-of": "hpo-bench"}}})
    wait_until(lambda: core.list_namespaced_service_account(namespace).items, timeout=60, what="default account")
    storage = Volumes(api, f"hpo-bench-{uuid.uuid4().hex[:6]}", volumes)
    spec = body["spec"]
    if "checkpoint" in spec["trialTemplate"]:
        spec["trialTemplate"]["checkpoint"]["volumeClaimTemplate"]["storageClassName"] = storage.storage_class
    operator = OperatorProcess(kubeconfig, namespace, log)
    operator.start()
    cluster = Cluster(api, namespace)
    try:
        started = time.monotonic()
        cluster.create(body)
        exp = cluster.wait_finished(body["metadata"]["name"], timeout=1800)
        seconds = time.monotonic() - started
        trials = {n: t for n, t in cluster.trials().items()}
        if spec["algorithm"]["name"] == "pbt":
            if any("segment" not in t["spec"] for t in trials.values()):
                raise Pruned()
            problems = sim.decisions_problems(exp["spec"], exp["metadata"]["uid"], trials)
            assert problems == [], problems
        return {"status": exp["status"], "trials": trials, "seconds": seconds, "spec": spec}
    finally:
        operator.stop()
        core.delete_namespace(namespace)
        storage.delete()


def best_curve(result: dict[str, Any], metric: str, points: list[int]) -> list[float]:
    """The best value of `metric` after each of `points` (steps of one member or trial)."""
    trials = [t for t in result["trials"].values() if (t.get("status") or {}).get("phase") == "Succeeded"]
    curve = []
    for step in points:
        values = [v for t in trials for s, v in history(t, metric).items() if s <= step]
        curve.append(max(values) if values else float("nan"))
    return curve


def best_trial(result: dict[str, Any], metric: str, also: str | None = None) -> tuple[float, float | None]:
    """The best final value of `metric` (a segment's or a trial's last report), with `also` of it."""
    best: tuple[float, float | None] = (float("-inf"), None)
    for t in result["trials"].values():
        if (t.get("status") or {}).get("phase") != "Succeeded":
            continue
        found = {m["name"]: m["value"] for m in t["status"].get("metrics") or []}
        if found.get(metric, float("-inf")) > best[0]:
            best = (found[metric], found.get(also) if also else None)
    return best


def memory_toy(seeds: list[int]) -> None:
    """The toy through the planner without a cluster (tests/support/population.py for pbt, the planner's
    simulation with Optuna's samplers for random and grid): the best Q after 20 steps of each of 4
    members or trials, many seeds."""
    from hpo_operator.api.spec import ExperimentSpec
    from tests.support.simulate import InMemoryExperiment

    def hyper(params: dict[str, float]) -> dict[str, float]:
        return {"h0": 1 - params["focus"], "h1": params["focus"]} if "focus" in params else params

    print("\n| setup | method (in memory) | runs | best Q: mean | min | max |")
    print("|---|---|---|---|---|---|")
    for paper in (True, False):
        steps = 40 if paper else 20
        found: dict[str, list[float]] = {"pbt": [], "random": [], "grid": []}
        for seed in seeds:
            body = toy_experiment("pbt", seed, "", paper)
            del body["spec"]["trialTemplate"]["checkpoint"]["volumeClaimTemplate"]["storageClassName"]
            body["spec"]["metricsCollector"] = {
                "source": "Auto"
            }  # the simulated pods report in their termination message
            cluster = sim.PopulationCluster(ExperimentSpec.model_validate(body["spec"]), hyper=hyper).run()
            found["pbt"].append(max(t["status"]["objectiveValue"] for t in cluster.trials.values()))
            for method in ("random", "grid") if seed == seeds[0] else ("random",):
                spec = ExperimentSpec.model_validate(toy_experiment(method, seed, "", paper)["spec"])

                def alone(values: dict[str, str], steps: int = steps) -> float:
                    h = hyper({k: float(v) for k, v in values.items()})
                    return sim.q(sim.toy(sim.START, h, steps))

                run = InMemoryExperiment(spec, alone).run()
                found[method].append(max(alone(values) for values in run.launched))
        for method, values in found.items():
            mean = sum(values) / len(values)
            setup = "paper" if paper else "box"
            print(f"| {setup} | {method} | {len(values)} | {mean:.4f} | {min(values):.4f} | {max(values):.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", default=os.environ.get("HPO_KUBECONFIG") or str(REPO / ".cluster/kubeconfig"))
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--only", choices=("toy", "sklearn", "memory"), default=None)
    parser.add_argument("--methods", default="pbt,random,grid", help="the methods to run, comma-separated")
    args = parser.parse_args()
    if args.only == "memory":
        return memory_toy([int(s) for s in args.seeds.split(",")])
    api = config.new_client_from_config(config_file=args.kubeconfig)
    seeds = [int(s) for s in args.seeds.split(",")]
    logs = Path(tempfile.mkdtemp(prefix="hpo-bench-pbt-"))
    print(f"operator logs: {logs}")
    if args.only in (None, "toy"):
        for paper in (True, False):
            members, points = (2, [8, 16, 24, 32, 40]) if paper else (4, [4, 8, 12, 16, 20])
            print(f"\n{'the paper: focus in {0, 1}' if paper else 'h0, h1 in [0, 1]'}")
            print("\n| method | seed | " + " | ".join(f"{members * p} steps" for p in points) + " | wall time |")
            print("|---|---|" + "---|" * (len(points) + 1))
            for method in [m for m in ("pbt", "random", "grid") if m in args.methods.split(",")]:
                for seed in seeds if method != "grid" else seeds[:1]:
                    body = toy_experiment(method, seed, "", paper)
                    log = logs / f"toy-{'paper' if paper else 'box'}-{method}-{seed}.log"
                    result = run(api, args.kubeconfig, body, 20, log)
                    curve = best_curve(result, "q", points)
                    cells = " | ".join(f"{v:.4f}" for v in curve)
                    print(f"| {method} | {seed} | {cells} | {result['seconds']:.0f} s |", flush=True)
    if args.only in (None, "sklearn"):
        print("\n| method | seed | best val_accuracy | its test_accuracy | segments or trials | wall time |")
        print("|---|---|---|---|---|---|")
        for method in [m for m in ("pbt", "random") if m in args.methods.split(",")]:
            for seed in seeds:
                body = sklearn_experiment(method, seed, "")
                result = run(api, args.kubeconfig, body, 32, logs / f"sgd-{method}-{seed}.log")
                val, test = best_trial(result, "val_accuracy", "test_accuracy")
                count = len(result["trials"])
                print(
                    f"| {method} | {seed} | {val:.4f} | {test:.4f} | {count} | {result['seconds']:.0f} s |",
                    flush=True,
                )


if __name__ == "__main__":
    main()

"""Experiments and Trials with realistic statuses, made without the operator: for the dashboard's
unit tests, its read-only browser tests, and bench/dashboard_scale.py. And ReviewAnswers, the
API server's answers to the dashboard's reviews for its unit tests.

The statuses are what the operator writes (see hpo_operator/planner/): a configuration OOMKilled
once and recovered by a retry, one evicted twice (Infrastructure) and recovered, one failing with
the program's own error (Error, not retried), trials stopped early, some still running or pending;
succeeded and running trials carry a metric history with steps.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client

from tests.support.experiments import GROUP, VERSION

START = datetime(2026, 11, 20, 9, 0, 0, tzinfo=UTC)
OPTIMIZERS = ["sgd", "adam", "rmsprop"]


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


# Several objectives (make(..., multi=True)): loss against latency, under a memory bound. More
# layers cost loss but save latency; a learning rate below the loss's best saves a little latency
# too; four layers need 8 GB and break the bound (those trials succeed, infeasible).
OBJECTIVES = [
    {"metricName": "loss", "type": "minimize", "referenceValue": 1.5},
    {"metricName": "latency_ms", "type": "minimize", "referenceValue": 100.0},
]
MEMORY_LIMIT = 6.0


def spec(optimizers: list[str] | None = None, max_trials: int = 100, multi: bool = False) -> dict:
    objective: dict[str, Any] = {"type": "minimize", "metricName": "loss", "additionalMetricNames": ["accuracy"]}
    if multi:
        objective = {
            "metrics": OBJECTIVES,
            "constraints": [{"metricName": "memory_gb", "max": MEMORY_LIMIT}],
            "additionalMetricNames": ["accuracy"],
        }
    return {
        "objective": objective,
        "algorithm": {"name": "random", "seed": 7},
        "parameters": [
            {"name": "lr", "type": "double", "min": 0.0001, "max": 0.1, "log": True},
            {"name": "layers", "type": "int", "min": 1, "max": 4},
            {"name": "optimizer", "type": "categorical", "values": optimizers or OPTIMIZERS},
        ],
        "parallelTrialCount": min(4, max_trials),
        "maxTrialCount": max_trials,
        "maxFailedTrialCount": max(3, max_trials // 10),
        "retryPolicy": {"maxRetries": 2, "backoffSeconds": 1},
        "trialTemplate": {
            "template": {
                "spec": {
                    "containers": [{"name": "train", "image": "example.org/train:1", "args": ["--lr=${params.lr}"]}]
                }
            }
        },
    }


def _config_hash(params: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def _loss(params: dict[str, str]) -> float:
    lr, layers = float(params["lr"]), int(params["layers"])
    return round(
        abs(math.log10(lr) + 2.5) * 0.2 + 0.05 * layers + (0.1 if params["optimizer"] == OPTIMIZERS[0] else 0), 6
    )


def _multi(params: dict[str, str], loss: float) -> tuple[list[float], dict[str, float]]:
    """Several objectives' values ([loss, latency_ms]) and the metrics reported with them."""
    layers = int(params["layers"])
    latency = round(60 / layers + 200 * float(params["lr"]), 4)
    return [loss, latency], {"latency_ms": latency, "memory_gb": 2.0 * layers}


def _history(loss: float, steps: int, at: datetime) -> list[dict]:
    points = []
    for step in range(steps):
        factor = 1 + (steps - 1 - step) * 0.5
        when = iso(at + timedelta(seconds=step))
        points.append({"name": "loss", "value": round(loss * factor, 6), "step": step, "timestamp": when})
        points.append({"name": "accuracy", "value": round(1 - loss * factor / 4, 6), "step": step, "timestamp": when})
    return points


def fates(index: int, running_from: int) -> list[tuple[str, str | None, str | None, int | None]]:
    """What became of configuration `index`: its attempts' (phase, reason, failure class, exit code)."""
    ok = ("Succeeded", "Completed", None, 0)
    if index >= running_from:
        return [(("Pending", "Running", "Queued")[index % 3], None, None, None)]
    if index % 11 == 5:
        evicted = ("Failed", "Evicted", "Infrastructure", None)
        return [evicted, evicted, ok]
    if index % 7 == 3:
        return [("Failed", "OOMKilled", "OOMKilled", 137), ok]
    if index % 13 == 6:
        return [("Failed", "Error", "Error", 1)]
    if index % 17 == 8:
        return [("EarlyStopped", "EarlyStopped", None, None)]
    if index % 19 == 9:
        return [("Killed", "Timeout", None, None)]
    return [ok]


def make(
    name: str,
    configurations: int,
    *,
    seed: int = 1,
    running: int = 2,
    optimizers: list[str] | None = None,
    annotations: dict[str, str] | None = None,
    history_steps: int = 5,
    total_trials: int | None = None,
    multi: bool = False,
) -> tuple[dict, list[dict]]:
    """An Experiment (with its status) and its Trials (with theirs), not yet in any cluster. With
    `total_trials`, exactly that many Trials: configurations stop there (the last one's retries
    may be cut short). With `multi`, several objectives (OBJECTIVES) and a constraint: the
    trials carry objectiveValues and feasible, the experiment its Pareto front."""
    rng = random.Random(seed)
    choices = optimizers or OPTIMIZERS
    trials: list[dict] = []
    at = START
    running_from = configurations - running
    for index in range(configurations):
        if total_trials is not None and len(trials) >= total_trials:
            configurations = index
            break
        params = {
            "lr": repr(round(10 ** rng.uniform(-4, -1), 8)),
            "layers": str(rng.randint(1, 4)),
            "optimizer": choices[index % len(choices)],
        }
        loss = _loss({**params, "optimizer": params["optimizer"] if params["optimizer"] in OPTIMIZERS else "adam"})
        base = f"{name}-{index:04d}"
        attempts = fates(index, running_from)
        if total_trials is not None:
            attempts = attempts[: total_trials - len(trials)]
        for attempt, (phase, reason, failure_class, exit_code) in enumerate(attempts, start=1):
            trial_name = base if attempt == 1 else f"{base}-a{attempt}"
            created, started = at, at + timedelta(seconds=1)
            at += timedelta(seconds=2)
            status: dict[str, Any] = {
                "phase": phase,
                "podName": trial_name,
                "startTime": iso(started),
                "parameterSummary": ", ".join(f"{k}={v}" for k, v in params.items()),
            }
            if reason:
                status["reason"] = reason
            if failure_class:
                status["failureClass"] = failure_class
                status["message"] = f"attempt {attempt} of {trial_name}: {reason}"
            if exit_code is not None:
                status["exitCode"] = exit_code
            if phase not in ("Pending", "Running"):
                status["completionTime"] = iso(started + timedelta(seconds=30 + index % 5))
            if phase == "Succeeded":
                status["objectiveValue"] = loss
                status["metrics"] = [
                    {"name": "loss", "value": loss},
                    {"name": "accuracy", "value": round(1 - loss / 4, 6)},
                ]
                if multi:
                    values, extra = _multi(params, loss)
                    del status["objectiveValue"]
                    status["objectiveValues"] = values
                    status["feasible"] = extra["memory_gb"] <= MEMORY_LIMIT
                    status["metrics"] += [{"name": k, "value": v} for k, v in extra.items()]
            if phase in ("Succeeded", "Running", "EarlyStopped") and history_steps:
                steps = history_steps if phase == "Succeeded" else 2
                status["metricHistory"] = _history(loss, steps, started)
                if phase == "EarlyStopped" and not multi:
                    status["objectiveValue"] = status["metricHistory"][-2]["value"]
            if attempt < len(attempts):
                status["retriedBy"] = f"{base}-a{attempt + 1}"
            if phase == "Pending":
                status = {"phase": "Pending"}
            if phase == "Queued":  # its Job waits for admission by its Kueue queue
                status = {"phase": "Queued", "reason": "WaitingForAdmission"}
            trial_spec: dict[str, Any] = {
                "experimentName": name,
                "attempt": attempt,
                "suggestionIndex": index,
                "parameters": [{"name": k, "value": v} for k, v in params.items()],
            }
            if attempt > 1:
                trial_spec["retryOf"] = base if attempt == 2 else f"{base}-a{attempt - 1}"
            trials.append(
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "Trial",
                    "metadata": {
                        "name": trial_name,
                        "creationTimestamp": iso(created),
                        "labels": {
                            "hpo.dev/experiment": name,
                            "hpo.dev/trial": trial_name,
                            "hpo.dev/config": _config_hash(params),
                            "hpo.dev/attempt": str(attempt),
                            "hpo.dev/launch-reason": "Suggestion" if attempt == 1 else "Retry",
                        },
                    },
                    "spec": trial_spec,
                    "status": status,
                }
            )
    experiment = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Experiment",
        "metadata": {
            "name": name,
            "creationTimestamp": iso(START),
            "annotations": {"hpo.dev/creator": "alice", **(annotations or {})},
        },
        "spec": spec(optimizers, max_trials=configurations, multi=multi),
        "status": experiment_status(trials, configurations, multi=multi),
    }
    return experiment, trials


def pareto_status(trials: list[dict]) -> dict:
    """The front, its size and hypervolume, as the operator writes them (by core.pareto's rules)."""
    from hpo_operator.core.pareto import front, hypervolume

    directions = [o["type"] for o in OBJECTIVES]
    points = {
        t["metadata"]["name"]: t["status"]["objectiveValues"]
        for t in trials
        if t["status"]["phase"] == "Succeeded" and t["status"].get("feasible")
    }
    names = front(points, directions)
    by_name = {t["metadata"]["name"]: t for t in trials}
    return {
        "paretoFront": [
            {"trialName": n, "values": points[n], "parameters": by_name[n]["spec"]["parameters"]} for n in names[:100]
        ],
        "paretoFrontSize": len(names),
        "hypervolume": hypervolume([points[n] for n in names], directions, [o["referenceValue"] for o in OBJECTIVES]),
    }


def experiment_status(trials: list[dict], configurations: int, multi: bool = False) -> dict:
    phases = [t["status"]["phase"] for t in trials]
    done = [t for t in trials if t["status"]["phase"] == "Succeeded"]
    best = min(done, key=lambda t: t["status"]["objectiveValue"]) if done and not multi else None
    running = any(p in ("Pending", "Running", "Queued") for p in phases)
    status: dict[str, Any] = {
        "phase": "Running" if running else "Succeeded",
        "startTime": iso(START),
        "statusHistory": [{"phase": "Running", "reason": "Running", "time": iso(START)}],
        "conditions": [
            {
                "type": "Running",
                "status": "True" if running else "False",
                "reason": "Running",
                "message": "trials are running",
                "lastTransitionTime": iso(START),
            }
        ],
        "configurations": configurations,
        "failedConfigurations": 0,
        "trials": len(trials),
        "trialsPending": phases.count("Pending"),
        "trialsQueued": phases.count("Queued"),
        "trialsRunning": phases.count("Running"),
        "trialsSucceeded": phases.count("Succeeded"),
        "trialsFailed": phases.count("Failed"),
        "trialsKilled": phases.count("Killed"),
        "trialsEarlyStopped": phases.count("EarlyStopped"),
        "trialsRetried": sum(1 for t in trials if t["spec"]["attempt"] > 1),
    }
    if not running:
        end = iso(START + timedelta(hours=1))
        status["completionTime"] = end
        status["statusHistory"].append({"phase": "Succeeded", "reason": "MaxTrialsReached", "time": end})
        status["conditions"].append(
            {
                "type": "Succeeded",
                "status": "True",
                "reason": "MaxTrialsReached",
                "message": "maxTrialCount configurations ran",
                "lastTransitionTime": end,
            }
        )
    if best:
        status["currentOptimalTrial"] = {
            "trialName": best["metadata"]["name"],
            "objectiveValue": best["status"]["objectiveValue"],
            "parameters": best["spec"]["parameters"],
            "metrics": best["status"]["metrics"],
        }
    if multi:
        status.update(pareto_status(trials))
    return status


# --- into a cluster ------------------------------------------------------------------------------------


def _fresh(body: dict) -> dict:
    """What a client sends: no creation time, no status (the API server ignores both)."""
    meta = {k: v for k, v in body["metadata"].items() if k != "creationTimestamp"}
    return {k: v for k, v in body.items() if k != "status"} | {"metadata": meta}


def owner(experiment: dict) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Experiment",
        "name": experiment["metadata"]["name"],
        "uid": experiment["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def create(api: client.ApiClient, namespace: str, experiment: dict, trials: list[dict]) -> dict:
    """Creates the experiment and its trials (each adopted, as the operator's are) and writes their
    statuses through the status subresource. Creation times are the API server's own: the trials
    are created in order, so their order is kept."""
    custom = client.CustomObjectsApi(api)
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "experiments", _fresh(experiment))
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "experiments", experiment["metadata"]["name"], {"status": experiment["status"]}
    )
    for t in trials:
        create_trial(custom, namespace, t, created)
    return created


def create_trial(custom: client.CustomObjectsApi, namespace: str, trial: dict, experiment: dict) -> None:
    body = _fresh(trial)
    body["metadata"]["ownerReferences"] = [owner(experiment)]
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "trials", body)
    if trial.get("status"):
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "trials", trial["metadata"]["name"], {"status": trial["status"]}
        )


class ReviewAnswers:
    """Stands in for the API server's answers to the dashboard's reviews, for its unit tests (the
    real ones: tests/integration/test_dashboard.py): `grants` {user: namespaces it may list
    experiments in, "" for every one}, `tokens` {token: user}; records every review asked."""

    def __init__(self, grants: dict[str, set[str]], tokens: dict[str, str] | None = None, delay: float = 0.0):
        self.grants, self.tokens, self.delay = grants, tokens or {}, delay
        self.asked: list[tuple[str, str]] = []
        self.down = False

    async def __call__(self, kind: str, body: dict) -> dict:
        await asyncio.sleep(self.delay)
        if self.down:
            raise OSError("connection refused")
        if kind == "tokenreviews":
            user = self.tokens.get(body["spec"]["token"])
            self.asked.append((kind, user or "?"))
            return {"status": {"authenticated": user is not None, "user": {"username": user} if user else {}}}
        spec = body["spec"]
        ns = spec["resourceAttributes"]["namespace"]
        self.asked.append((spec["user"], ns))
        mine = self.grants.get(spec["user"], set())
        return {"status": {"allowed": "" in mine or ns in mine}}

"""An experiment run in memory, without a cluster: each round plans as handlers.reconcile does
(with the Suggester's suggest, should_stop and tell), carries the plan out on dicts, and every
pod started in a round has succeeded by the next one, its termination message giving the
objective as loss(values). Benchmarks and tests drive whole searches through it.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from typing import Callable

from . import planner
from . import times
from .models import ExperimentSpec

START = datetime(2024, 5, 1, 10, 0, 0, tzinfo=timezone.utc)
ROUND = timedelta(seconds=10)
MAX_ROUNDS = 100_000


def parameters(body: dict) -> dict[str, str]:
    return {p["name"]: p["value"] for p in body["spec"]["parameters"]}


class InMemoryExperiment:
    def __init__(self, spec: ExperimentSpec, loss: Callable[[dict[str, str]], float]):
        self.spec, self.loss = spec, loss
        self.now = START
        self.trials: dict[str, dict] = {}
        self.pods: dict[str, dict] = {}
        self.status: dict = {}
        self.launched: list[dict[str, str]] = []  # configurations, in the order their Trials were made
        self.suggester = planner.restore_suggester(spec, [], {})

    @property
    def finished(self) -> bool:
        return self.status.get("phase") in planner.FINISHED_PHASES

    def views(self) -> list[planner.TrialView]:
        return [planner.TrialView(n, b["metadata"]["uid"], copy.deepcopy(b)) for n, b in self.trials.items()]

    def restart(self) -> None:
        """What a new operator process does: a new Suggester, rebuilt from the Trials."""
        self.suggester = planner.restore_suggester(self.spec, self.views(), self.status)

    def round(self) -> None:
        exp = planner.ExperimentView("exp", "default", "uid-exp", 1, self.spec, copy.deepcopy(self.status))
        p = planner.plan(exp, self.views(), copy.deepcopy(self.pods), {}, self.now, self.suggester.suggest,
                         self.suggester.should_stop, self.suggester.tell)
        for body in p.create_trials:
            body = copy.deepcopy(body)
            name = body["metadata"]["name"]
            body["metadata"].update(uid=f"uid-{name}", creationTimestamp=times.iso(self.now))
            self.trials[name] = body
            self.launched.append(parameters(body))
        for name, status in p.trial_status.items():
            self.trials[name]["status"] = copy.deepcopy(status)
        for name in p.start_pods:
            self.pods.setdefault(name, self.pod(name, None))
        for name in p.delete_pods:
            self.pods.pop(name, None)
        self.status = copy.deepcopy(p.experiment_status)
        self.now += ROUND
        for name, pod in list(self.pods.items()):
            if pod["status"]["phase"] == "Pending":
                result = {self.spec.objective.metric_name: self.loss(parameters(self.trials[name]))}
                self.pods[name] = self.pod(name, json.dumps(result))

    def pod(self, name: str, result: str | None) -> dict:
        """A Pending pod, or (with a result) one whose container has exited 0 with that message."""
        status: dict = {"phase": "Pending" if result is None else "Succeeded", "startTime": times.iso(self.now),
                        "conditions": []}
        if result is not None:
            status["containerStatuses"] = [{"name": "train", "restartCount": 0, "ready": False, "state": {
                "terminated": {"exitCode": 0, "reason": "Completed", "message": result,
                               "startedAt": times.iso(self.now), "finishedAt": times.iso(self.now)}}}]
        return {"metadata": {"name": name, "namespace": "default", "uid": f"pod-{name}",
                             "creationTimestamp": times.iso(self.now)},
                "spec": {"containers": [{"name": "train", "image": "trainer:1"}]}, "status": status}

    def run(self, rounds: int | None = None) -> "InMemoryExperiment":
        """Runs `rounds` rounds, or until the experiment finishes (at most MAX_ROUNDS)."""
        for _ in range(rounds or MAX_ROUNDS):
            if self.finished:
                return self
            self.round()
        if rounds is None and not self.finished:
            raise RuntimeError(f"the experiment did not finish in {MAX_ROUNDS} rounds")
        return self

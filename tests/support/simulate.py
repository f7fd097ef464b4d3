"""An experiment run in memory, without a cluster: each round plans as the operator's experiment
loop does (controller/loop.py, with the Suggester's suggest, should_stop and tell), carries the plan
out on dicts, and every pod started in a round has succeeded by the next one, its termination
message giving the objective as loss(values) (or, when loss returns a dict, those metrics).
Benchmarks and tests drive whole searches through it; it lives with the tests' support, not in the
planner, which it drives from above (plan() for each round, apply.carry_out() for its writes).
"""

from __future__ import annotations

import asyncio
import atexit
import copy
import json
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from hpo_operator import planner
from hpo_operator.api.parameters import parameters_of
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.api.vocabulary import FINISHED_PHASES
from hpo_operator.core import times
from hpo_operator.planner.apply import carry_out
from hpo_operator.search.suggest import Suggester

START = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
ROUND = timedelta(seconds=10)
MAX_ROUNDS = 100_000

_runner: asyncio.Runner | None = None


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Runs a memory target's writes on one event loop kept for the process: a new loop per
    round would cost more than the round itself."""
    global _runner
    if _runner is None:
        _runner = asyncio.Runner()
        atexit.register(_runner.close)
    _runner.run(coroutine)


def exited(started: str, finished: str, message: str | None = None) -> dict[str, Any]:
    """The status of a trial's container that exited 0, with its termination message if given."""
    terminated: dict[str, Any] = {"exitCode": 0, "reason": "Completed", "startedAt": started, "finishedAt": finished}
    if message is not None:
        terminated["message"] = message
    return {"name": "train", "restartCount": 0, "ready": False, "state": {"terminated": terminated}}


class MemoryCluster:
    """Trials, pods and the Experiment's status as dicts, on which plans are carried out, stage by stage
    (apply.stages), as the executor does on the API server (statuses arrive dumped, as the API server gets them).
    `new_pod(name)` makes the pod a started trial gets."""

    def __init__(self, new_pod: Callable[[str], dict[str, Any]]):
        self.new_pod = new_pod
        self.now = START
        self.trials: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.status: dict[str, Any] = {}
        self.events: list[planner.Event] = []
        self.created: list[str] = []  # trial names, in the order they were made

    def apply(self, plan: planner.Plan) -> None:
        """The plan's writes, stage by stage, as the executor makes them on the API server (this
        class is an apply.Target: a method per kind of write)."""
        _run(carry_out(plan, self))

    async def create_trial(self, body: dict[str, Any], start: bool) -> None:
        name = body["metadata"]["name"]
        if name in self.trials:
            raise ValueError(f"trial {name} created twice")  # the API server's 409
        body = copy.deepcopy(body)
        body["metadata"].update(uid=f"uid-{name}", creationTimestamp=times.iso(self.now))
        self.trials[name] = body
        self.created.append(name)
        if start:
            await self.start(name)

    async def update_trial(self, name: str, status: dict[str, Any] | None, metadata: dict[str, Any] | None) -> None:
        if status is not None:
            self.trials[name]["status"] = copy.deepcopy(status)
        meta = self.trials[name]["metadata"]
        for key, patch in (metadata or {}).items():
            if key == "ownerReferences":
                meta[key] = patch
            else:  # a merge patch: null removes the key
                merged = {**(meta.get(key) or {}), **patch}
                meta[key] = {k: v for k, v in merged.items() if v is not None}

    async def start(self, name: str) -> None:
        if name not in self.trials:
            raise ValueError(f"pod {name} started for a trial that does not exist")
        self.pods.setdefault(name, self.new_pod(name))

    async def delete_workload(self, name: str) -> None:
        self.pods.pop(name, None)

    async def set_queue_active(self, name: str, active: bool) -> None:
        if not active:
            await self.delete_workload(name)  # no Kueue here: the executor's fallback

    async def delete_claim(self, name: str) -> None:
        pass  # no volumes here

    async def write_experiment_status(self, status: dict[str, Any]) -> None:
        self.status = copy.deepcopy(status)

    def post_events(self, events: list[planner.Event]) -> None:
        self.events.extend(events)

    def views(self) -> list[planner.TrialView]:
        return [planner.TrialView(n, b["metadata"]["uid"], copy.deepcopy(b)) for n, b in self.trials.items()]

    def pod_of(self, name: str, status: dict[str, Any], image: str = "trainer:1") -> dict[str, Any]:
        """Trial `name`'s pod, made now, with one container (train) and `status`."""
        return {
            "metadata": {
                "name": name,
                "namespace": "default",
                "uid": f"pod-{name}",
                "creationTimestamp": times.iso(self.now),
            },
            "spec": {"containers": [{"name": "train", "image": image}]},
            "status": status,
        }

    def experiment(self, spec: ExperimentSpec) -> planner.ExperimentView:
        """The Experiment (exp in default) as a round reads it, with the status written last."""
        return planner.ExperimentView("exp", "default", "uid-exp", 1, spec, copy.deepcopy(self.status))

    def round_input(
        self,
        exp: planner.ExperimentView,
        suggester: Suggester,
        logs: Mapping[str, str] | None = None,
        now: datetime | None = None,
    ) -> planner.RoundInput:
        """What the operator's loop gives plan() (controller/loop.py): the Trials and pods held here
        (copies: the plan's writes must not change what it read), the Suggester's suggest, should_stop
        and tell, the trials' `logs` (none by default) and `now` (this cluster's clock by default)."""
        return planner.RoundInput(
            experiment=exp,
            trials=self.views(),
            pods=copy.deepcopy(self.pods),
            now=self.now if now is None else now,
            suggest=suggester.suggest,
            should_stop=suggester.should_stop,
            tell=suggester.tell,
            logs=logs or {},
        )


class InMemoryExperiment(MemoryCluster):
    def __init__(self, spec: ExperimentSpec, loss: Callable[[dict[str, str]], float | dict[str, float]]):
        super().__init__(lambda name: self.pod(name, None))
        self.spec, self.loss = spec, loss
        self.suggester = planner.restore_suggester(spec, [], {})

    @property
    def launched(self) -> list[dict[str, str]]:
        """The configurations, in the order their Trials were made."""
        return [parameters_of(self.trials[name]["spec"]["parameters"]) for name in self.created]

    @property
    def finished(self) -> bool:
        return self.status.get("phase") in FINISHED_PHASES

    def restart(self) -> None:
        """What a new operator process does: a new Suggester, rebuilt from the Trials."""
        self.suggester = planner.restore_suggester(self.spec, self.views(), self.status)

    def round(self) -> None:
        self.apply(planner.plan(self.round_input(self.experiment(self.spec), self.suggester)))
        self.now += ROUND
        for name, pod in list(self.pods.items()):
            if pod["status"]["phase"] == "Pending":
                found = self.loss(parameters_of(self.trials[name]["spec"]["parameters"]))
                # A number is the (single) objective; a dict, the metrics reported (several objectives, constraints).
                result = found if isinstance(found, dict) else {self.spec.objective.names[0]: found}
                self.pods[name] = self.pod(name, json.dumps(result))

    def pod(self, name: str, result: str | None) -> dict[str, Any]:
        """A Pending pod, or (with a result) one whose container has exited 0 with that message."""
        status: dict[str, Any] = {
            "phase": "Pending" if result is None else "Succeeded",
            "startTime": times.iso(self.now),
            "conditions": [],
        }
        if result is not None:
            status["containerStatuses"] = [exited(times.iso(self.now), times.iso(self.now), result)]
        return self.pod_of(name, status)

    def run(self, rounds: int | None = None) -> InMemoryExperiment:
        """Runs `rounds` rounds, or until the experiment finishes (at most MAX_ROUNDS)."""
        for _ in range(rounds or MAX_ROUNDS):
            if self.finished:
                return self
            self.round()
        if rounds is None and not self.finished:
            raise RuntimeError(f"the experiment did not finish in {MAX_ROUNDS} rounds")
        return self

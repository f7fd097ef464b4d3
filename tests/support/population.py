"""Population-based training without a cluster, for the planner's tests: a pbt experiment whose
rounds are planned by planner.plan() and carried out on dicts (simulate.MemoryCluster), with the
checkpoint claims as dicts too and a trial program that trains the PBT paper's toy problem from
the checkpoint its copy step would give it.

The toy (Jaderberg et al., 2017, section 4.1): maximise Q(θ) = 1.2 − θ₀² − θ₁² by gradient ascent
on the surrogate Q̂(θ|h) = 1.2 − h₀θ₀² − h₁θ₁², from θ = (0.9, 0.9); the hyperparameters h decide
which part of θ a step improves.

The operator can be killed after any number of writes (`kill_at`): the writes of a round are then
carried out one by one, in the executor's order, and the rest of the round is lost, as when the
process is SIGKILLed; the next round is a new process's first."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from hpo_operator import planner
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.core import times
from hpo_operator.planner import apply as writes
from hpo_operator.workloads import checkpoint
from hpo_operator.workloads import population as segments
from tests.support.simulate import ROUND, MemoryCluster

EXP, EXP_UID = "exp", "uid-exp"
START = (0.9, 0.9)
STEP_SIZE = 0.05


def toy_space() -> list[dict[str, Any]]:
    """The toy's hyperparameters h0, h1, each in [0, 1]; its quality q is maximised (OBJECTIVE)."""
    return [{"name": h, "type": "double", "min": 0, "max": 1} for h in ("h0", "h1")]


OBJECTIVE = {"type": "maximize", "metricName": "q"}


def pbt_settings(population: int, interval: int) -> list[dict[str, str]]:
    """algorithm.settings of pbt: `population` members, a generation every `interval` steps."""
    return [
        {"name": "populationSize", "value": str(population)},
        {"name": "perturbationInterval", "value": str(interval)},
    ]


def spec(population: int = 4, generations: int = 3, interval: int = 4, **overrides: Any) -> ExperimentSpec:
    """A pbt experiment over the toy's h0, h1 in [0, 1]; overrides use the API's camelCase."""
    body: dict[str, Any] = {
        "objective": dict(OBJECTIVE),
        "algorithm": {"name": "pbt", "seed": 7, "settings": pbt_settings(population, interval)},
        "parameters": toy_space(),
        "parallelTrialCount": population,
        "maxTrialCount": population * generations,
        "retryPolicy": {"maxRetries": 2, "backoffSeconds": 0},
        "trialTemplate": {
            "checkpoint": {"volumeClaimTemplate": {"size": "1Mi"}, "mountPath": "/ckpt"},
            "template": {"spec": {"containers": [{"name": "train", "image": "trainer:1"}]}},
        },
    }
    body.update(overrides)
    return ExperimentSpec.model_validate(body)


def toy(theta: tuple[float, float], h: dict[str, float], steps: int) -> tuple[float, float]:
    """`steps` steps of gradient ascent on Q̂(θ|h)."""
    t0, t1 = theta
    for _ in range(steps):
        t0, t1 = t0 - STEP_SIZE * 2 * h["h0"] * t0, t1 - STEP_SIZE * 2 * h["h1"] * t1
    return t0, t1


def q(theta: tuple[float, float]) -> float:
    return 1.2 - theta[0] ** 2 - theta[1] ** 2


class Killed(Exception):
    """The operator was SIGKILLed between two writes."""


class PopulationCluster(MemoryCluster):
    """A pbt experiment's Trials, pods and checkpoint claims in memory. A started pod runs in the
    next round: its copy step (the parent's claim, or an empty start) then the toy program for the
    segment's steps, which saves (θ, step) to the segment's claim and reports q; `oom` names
    (segment key, attempt) pairs whose program is OOMKilled instead, after writing a half-trained θ."""

    def __init__(
        self,
        spec: ExperimentSpec,
        oom: frozenset[tuple[str, int]] = frozenset(),
        hyper: Callable[[dict[str, float]], dict[str, float]] | None = None,
        one_by_one: bool = False,
    ):
        super().__init__(lambda name: self.pod(name, "Pending"))
        self.spec, self.oom = spec, oom
        # The toy's h from a trial's parameters (default: its h0 and h1).
        self.hyper = hyper or (lambda params: params)
        self.claims: dict[str, tuple[float, float] | None] = {}
        self.kill_at: int | None = None  # the write after which the operator dies (once)
        # Writes one at a time, without an event loop of its own (a caller that runs one: a browser test).
        self.one_by_one = one_by_one
        self.writes = 0
        self.kills = 0
        self.starts: list[tuple[str, tuple[float, float] | None]] = []  # (trial, θ its program started from)

    # --- the operator's side ------------------------------------------------------------------------

    def round(self) -> None:
        exp = planner.ExperimentView(EXP, "default", EXP_UID, 1, self.spec, copy.deepcopy(self.status))
        plan = planner.plan(
            planner.RoundInput(
                experiment=exp,
                trials=self.views(),
                pods=copy.deepcopy(self.pods),
                now=self.now,
                suggest=lambda i: None,
                volumes=set(self.claims),
            )
        )
        try:
            self.apply(plan)
        except Killed:
            self.kills += 1
        self.now += ROUND
        self.run_pods()

    def apply(self, plan: planner.Plan) -> None:
        if self.kill_at is None and not self.one_by_one:
            super().apply(plan)
            for name in plan.delete_volumes:
                self.claims.pop(name, None)
            return
        # One write at a time, in the executor's order, so that a kill can fall between any two.
        for stage in writes.stages(plan):
            for w in stage:
                if isinstance(w, writes.CreateTrial):
                    body = copy.deepcopy(w.body)
                    status = body.pop("status", None)
                    self.tick()
                    self.sync(self.create_trial(body, False))
                    self.tick()
                    self.sync(self.update_trial(body["metadata"]["name"], status, None))
                    if w.start:
                        self.tick()
                        self.sync(self.start(body["metadata"]["name"]))
                    continue
                self.tick()
                if isinstance(w, writes.DeleteClaim):
                    self.claims.pop(w.name, None)
                else:
                    self.sync(writes.perform(w, self))

    def tick(self) -> None:
        self.writes += 1
        if self.kill_at is not None and self.writes == self.kill_at + 1:
            self.kill_at = None  # once
            raise Killed()

    @staticmethod
    def sync(coroutine) -> None:
        try:
            coroutine.send(None)
        except StopIteration:
            pass

    async def start(self, name: str) -> None:
        # The executor makes the segment's claim before its pod (a 409 when it exists).
        key = self.trials[name]["metadata"]["labels"]["hpo.dev/config"]
        self.claims.setdefault(checkpoint.claim_name(EXP, key), None)
        await super().start(name)

    # --- the cluster's side: pods run -----------------------------------------------------------------

    def run_pods(self) -> None:
        for name, pod in list(self.pods.items()):
            if pod["status"]["phase"] != "Pending":
                continue
            trial = self.trials[name]
            seg = trial["spec"]["segment"]
            key = trial["metadata"]["labels"]["hpo.dev/config"]
            own = checkpoint.claim_name(EXP, key)
            parent = segments.parent_claim(EXP, segments.Segment.model_validate(seg))
            if parent is not None and self.claims.get(parent) is None:
                self.pods[name] = self.pod(name, "Failed", copy_exit=segments.COPY_LOST)  # nothing whole to copy
                continue
            start = START if parent is None else self.claims[parent]
            assert start is not None
            self.starts.append((name, start))
            h = self.hyper({p["name"]: float(p["value"]) for p in trial["spec"]["parameters"]})
            steps = segments.end_step(self.spec, seg["generation"]) - segments.end_step(
                self.spec, seg["generation"] - 1
            )
            if (key, trial["spec"]["attempt"]) in self.oom:
                self.claims[own] = toy(start, h, steps // 2)  # written before it died
                self.pods[name] = self.pod(name, "Failed", exit_code=137, reason="OOMKilled")
                continue
            theta = toy(start, h, steps)
            self.claims[own] = theta
            self.pods[name] = self.pod(name, "Succeeded", message=json.dumps({"q": q(theta)}))

    def pod(
        self,
        name: str,
        phase: str,
        message: str | None = None,
        exit_code: int = 0,
        reason: str = "Completed",
        copy_exit: int | None = None,
    ) -> dict[str, Any]:
        status: dict[str, Any] = {"phase": phase, "startTime": times.iso(self.now), "conditions": []}
        at = times.iso(self.now)
        if copy_exit is not None:
            status["initContainerStatuses"] = [
                {
                    "name": segments.COPY_CONTAINER,
                    "state": {"terminated": {"exitCode": copy_exit, "reason": "Error", "message": "not whole"}},
                }
            ]
            status["containerStatuses"] = [{"name": "train", "state": {"waiting": {"reason": "PodInitializing"}}}]
        elif phase in ("Succeeded", "Failed"):
            term = {"exitCode": exit_code, "reason": reason, "startedAt": at, "finishedAt": at}
            if message is not None:
                term["message"] = message
            status["containerStatuses"] = [{"name": "train", "state": {"terminated": term}}]
        return {
            "metadata": {"name": name, "namespace": "default", "uid": f"pod-{name}", "creationTimestamp": at},
            "spec": {"containers": [{"name": "train", "image": "trainer:1"}]},
            "status": status,
        }

    def run(self, rounds: int = 500, between: Callable[[PopulationCluster], None] | None = None) -> PopulationCluster:
        for _ in range(rounds):
            if self.status.get("phase") in ("Succeeded", "Failed") and not any(
                p["status"]["phase"] == "Pending" for p in self.pods.values()
            ):
                return self
            self.round()
            if between is not None:
                between(self)
        raise AssertionError(f"the experiment did not finish in {rounds} rounds: {self.status.get('phase')}")

    # --- reading it -----------------------------------------------------------------------------------

    def lineage(self) -> dict[str, tuple[Any, ...]]:
        """Every Trial as what was decided for it: segment, parameters, attempt, phase, objective."""
        return {
            name: (
                json.dumps(t["spec"].get("segment"), sort_keys=True),
                tuple((p["name"], p["value"]) for p in t["spec"]["parameters"]),
                t["spec"]["attempt"],
                (t.get("status") or {}).get("phase"),
                (t.get("status") or {}).get("objectiveValue"),
            )
            for name, t in sorted(self.trials.items())
        }

    def segment_keys(self) -> list[str]:
        return sorted({t["metadata"]["labels"]["hpo.dev/config"] for t in self.trials.values()})


# --- on the cluster: a pbt experiment's Trials, checked against the rule ---------------------------------


def decisions_problems(spec_body: dict[str, Any], uid: str, trials: dict[str, dict[str, Any]]) -> list[str]:
    """What is wrong with a pbt experiment's Trials, as the rule (search/population.py) decides from
    them: exactly populationSize x generations segments; generation 0's values its members' first
    draws; each later segment's parent, exploit and values those the generation before decides;
    every attempt of a segment the same segment. Empty when all is right."""
    from hpo_operator.search import population as rule

    spec = ExperimentSpec.model_validate(spec_body)
    plan = rule.schedule(spec, uid)
    attempts: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for t in trials.values():
        seg = t["spec"].get("segment")
        if seg is None:
            return [f"trial {t['metadata']['name']} has no segment"]
        attempts.setdefault((seg["generation"], seg["member"]), []).append(t)
    problems = []
    wanted = {(g, m) for g in range(plan.generations) for m in range(plan.population)}
    if set(attempts) != wanted:
        problems.append(f"segments {sorted(set(attempts) ^ wanted)} missing or extra")
        return problems

    def values(t: dict[str, Any]) -> dict[str, str]:
        return {p["name"]: p["value"] for p in t["spec"]["parameters"]}

    for key, runs in attempts.items():
        runs.sort(key=lambda t: t["spec"]["attempt"])
        if len({json.dumps(t["spec"]["segment"], sort_keys=True) for t in runs}) != 1:
            problems.append(f"segment {key}: its attempts train different segments")
        if len({json.dumps(values(t), sort_keys=True) for t in runs}) != 1:
            problems.append(f"segment {key}: its attempts run different values")
    for m in range(plan.population):
        first = attempts[(0, m)][0]
        if values(first) != rule.initial(spec.parameters, plan, m):
            problems.append(f"member {m}: generation 0's values are not its first draw")
    for g in range(1, plan.generations):
        results: dict[int, float | None] = {}
        succeeded: dict[int, str] = {}
        for m in range(plan.population):
            done = [t for t in attempts[(g - 1, m)] if (t.get("status") or {}).get("phase") == "Succeeded"]
            results[m] = done[0]["status"].get("objectiveValue") if done else None
            if done:
                succeeded[m] = done[0]["metadata"]["name"]
        steps = rule.next_generation(
            spec.parameters,
            plan,
            g,
            results,
            {m: values(attempts[(g - 1, m)][0]) for m in range(plan.population)},
            str(spec.objective.type),
        )
        assert steps is not None, f"generation {g - 1} has no result, yet generation {g} exists"
        for step in steps:
            t = attempts[(g, step.member)][0]
            seg = t["spec"]["segment"]
            seen = (seg.get("parent"), seg.get("parentMember"), bool(seg.get("exploited")), values(t))
            due = (succeeded.get(step.parent_member), step.parent_member, step.exploited, step.values)
            if seen != due:
                problems.append(f"segment {(g, step.member)}: {seen}, but the rule decides {due}")
    return problems

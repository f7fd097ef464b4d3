"""The CPU of one experiment's rounds, without a cluster: what the planner costs per round and per
trial as the experiment grows, with what the operator's loop keeps between rounds and without it.

An in-memory cluster (tests/support/simulate.py) stores Trials and pods as an informer does (a new
object for each change, never one changed in place). Each round plans over all of them and its
writes are carried out; then K running pods succeed and the pods started last round start running.
Two ways, each a run of its own with the same seed:

- kept: as controller/loop.py plans: a Trial's view is kept while its body is the same object
  (planner.kept_views), and the search is not told again the results it holds (RoundInput.told);
- afresh: a new view of every Trial each round (of the same bodies: nothing copied), and every
  decided result told again, as a round that keeps nothing.

CPU is time.process_time() around the observation of the pods and plan(), in milliseconds: per
round (mean) and per trial (the sum over the run divided by the Trials made). Cases are N×P×K:
N trials, P in parallel, K pods finishing between rounds.

    .venv/bin/python bench/round_cpu.py [--cases 20x10x1,200x20x2,1000x200x5] [--repeat 3]

This is a benchmark: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from hpo_operator import planner  # noqa: E402
from hpo_operator.api.spec import ExperimentSpec  # noqa: E402
from hpo_operator.core import times  # noqa: E402
from hpo_operator.search.suggest import Suggester  # noqa: E402
from tests.support.simulate import MemoryCluster, exited  # noqa: E402

DEFAULT_CASES = "20x10x1,200x20x2,1000x200x5"


class InformedCluster(MemoryCluster):
    """Trials replaced, not changed in place, when their status is written (as an informer sees them)."""

    async def update_trial(self, name: str, status: dict[str, Any] | None, metadata: dict[str, Any] | None) -> None:
        self.trials[name] = copy.deepcopy(self.trials[name])
        await super().update_trial(name, status, metadata)


def spec_of(trials: int, parallel: int) -> ExperimentSpec:
    return ExperimentSpec.model_validate(
        {
            "objective": {"type": "minimize", "metricName": "loss"},
            "algorithm": {"name": "random", "seed": 1},
            "parameters": [{"name": "x", "type": "double", "min": -5, "max": 5}],
            "parallelTrialCount": parallel,
            "maxTrialCount": trials,
            "trialTemplate": {
                "primaryContainerName": "train",
                "template": {"spec": {"containers": [{"name": "train", "image": "trainer:1"}]}},
            },
        }
    )


def run(trials: int, parallel: int, finishing: int, kept: bool) -> tuple[int, int, float]:
    """Rounds, Trials made and the CPU seconds of their planning."""
    spec = spec_of(trials, parallel)
    search = Suggester(spec)
    cluster = InformedCluster(lambda name: cluster.pod_of(name, {"phase": "Pending", "conditions": []}))
    views: dict[str, planner.TrialView] = {}
    cpu, rounds = 0.0, 0
    while cluster.status.get("phase") not in ("Succeeded", "Failed"):
        started = time.process_time()
        if kept:
            views = planner.kept_views(list(cluster.trials.values()), views)
            given = list(views.values())
        else:
            given = [planner.TrialView(n, b["metadata"]["uid"], b) for n, b in cluster.trials.items()]
        exp = planner.ExperimentView("exp", "default", "uid-exp", 1, spec, cluster.status)
        plan = planner.plan(
            planner.RoundInput(
                experiment=exp,
                trials=given,
                pods=cluster.pods,
                now=cluster.now,
                suggest=search.suggest,
                should_stop=search.should_stop,
                tell=search.tell,
                told=search.told() if kept else None,
            )
        )
        cpu += time.process_time() - started
        cluster.apply(plan)
        rounds += 1
        cluster.now += timedelta(seconds=1)
        now = times.iso(cluster.now)
        done = 0
        for name, pod in list(cluster.pods.items()):
            phase = pod["status"]["phase"]
            if phase == "Pending":
                cluster.pods[name] = {**pod, "status": {"phase": "Running", "startTime": now, "conditions": []}}
            elif phase == "Running" and done < finishing:
                done += 1
                message = json.dumps({"loss": 1.0})
                status = {"phase": "Succeeded", "startTime": now, "conditions": []}
                cluster.pods[name] = {**pod, "status": {**status, "containerStatuses": [exited(now, now, message)]}}
    return rounds, len(cluster.trials), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=DEFAULT_CASES, help=f"N×P×K cases (default {DEFAULT_CASES})")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case and way; the fastest is shown")
    args = parser.parse_args()
    print("| case (N×P×K) | way    | rounds | planner ms/round | planner ms/trial |")
    print("|--------------|--------|--------|------------------|------------------|")
    for case in args.cases.split(","):
        n, p, k = (int(x) for x in case.split("x"))
        for kept in (False, True):
            best = min((run(n, p, k, kept) for _ in range(args.repeat)), key=lambda r: r[2])
            rounds, made, cpu = best
            way = "kept" if kept else "afresh"
            per_round, per_trial = 1000 * cpu / rounds, 1000 * cpu / made
            print(f"| {case:<12} | {way:<6} | {rounds:>6} | {per_round:>16.2f} | {per_trial:>16.2f} |")


if __name__ == "__main__":
    main()

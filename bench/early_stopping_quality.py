"""Early stopping with several objectives on the tabular benchmarks: the hypervolume a search finds
within a fixed number of training steps, with and without the asha rule (successive halving on the
objectives' non-dominated rank, search/rungs.py), through the operator's planner.

The tables (tests/support/tabular.py) hold each configuration's final metrics only, so a trial here trains
for STEPS steps along a curve made from them (the same for every run, seeded by the configuration):
- val_acc climbs to its final value as final * (1 - exp(-k s / STEPS)) / (1 - exp(-k)), k between
  0.5 and 4 drawn from the configuration's key: a slow starter can end on top, so early ranks are
  an imperfect guess, as they are in real training;
- train_time grows linearly to its final value (the time trained so far);
- latency and model_size are the architecture's: known from the first step.
Every round each running trial trains one step and prints `step=s name=value ...` (the operator
reads it as it would a pod's log); a trial that reaches STEPS succeeds with its final metrics. The
search stops once its trials have trained BUDGET steps in all; the hypervolume is that of the
succeeded trials (tests/support/tabular.py: objectives scaled to [0, 1] by the table, reference (1, 1)).

    .venv/bin/python bench/early_stopping_quality.py [--budget-trials 32] [--seeds 5] [--parallel 8]

This is a benchmark: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.tabular_quality import MULTI, parse_case  # noqa: E402
from hpo_operator import planner  # noqa: E402
from hpo_operator.api.parameters import parameters_of  # noqa: E402
from hpo_operator.api.spec import EarlyStopping, ExperimentSpec  # noqa: E402
from hpo_operator.core import times  # noqa: E402
from tests.support import tabular  # noqa: E402
from tests.support.search_runs import experiment_spec, table  # noqa: E402
from tests.support.simulate import START, MemoryCluster, exited  # noqa: E402

STEPS = 27  # rungs at 1, 3, 9, 27 with reductionFactor 3
ROUND = timedelta(seconds=10)
LINEAR = {"train_time"}
CONSTANT = {"latency", "model_size"}


def rate(key: str) -> float:
    digest = hashlib.sha256(key.encode()).digest()
    return 0.5 + 3.5 * int.from_bytes(digest[:4], "big") / 2**32


def at_step(case_table: tabular.Table, config: dict[str, str], objectives: list[str], step: int) -> dict[str, float]:
    final = case_table.evaluate(config)
    k = rate(case_table.key(config))
    out = {}
    for name in objectives:
        if name in CONSTANT:
            out[name] = final[name]
        elif name in LINEAR:
            out[name] = final[name] * step / STEPS
        else:
            out[name] = final[name] * (1 - math.exp(-k * step / STEPS)) / (1 - math.exp(-k))
    return out


class CurveExperiment(MemoryCluster):
    """An experiment whose trials train step by step (one a round), printing their metrics."""

    def __init__(self, spec: ExperimentSpec, case: Any, budget: int):
        super().__init__(lambda name: self.pending(name))
        self.spec, self.case, self.budget = spec, case, budget
        self.suggester = planner.restore_suggester(spec, [], {})
        self.steps: dict[str, int] = {}
        self.trained = 0

    def pending(self, name: str) -> dict[str, Any]:
        return self.pod_of(name, {"phase": "Pending", "conditions": []}, image="bench")

    def log(self, name: str) -> str:
        config = parameters_of(self.trials[name]["spec"]["parameters"])
        lines = []
        for s in range(1, self.steps.get(name, 0) + 1):
            values = at_step(self.case.table, config, self.case.objectives, s)
            # Step s was printed s rounds after the trial started running.
            stamp = times.iso(START + timedelta(seconds=self.started[name]) + ROUND * s)
            lines.append(f"{stamp} step={s} " + " ".join(f"{k}={v:.6g}" for k, v in values.items()))
        return "\n".join(lines)

    def round(self) -> None:
        logs = {n: self.log(n) for n, p in self.pods.items() if p["status"]["phase"] in ("Running", "Succeeded")}
        self.apply(planner.plan(self.round_input(self.experiment(self.spec), self.suggester, logs)))
        self.now += ROUND
        for name, pod in self.pods.items():
            phase = pod["status"]["phase"]
            if phase == "Pending":
                self.started[name] = (self.now - START).total_seconds()
                pod["status"] = {"phase": "Running", "startTime": times.iso(self.now), "conditions": []}
                self.steps[name] = 0
            if pod["status"]["phase"] == "Running":
                self.steps[name] += 1
                self.trained += 1
                if self.steps[name] == STEPS:
                    pod["status"] = {
                        "phase": "Succeeded",
                        "startTime": pod["status"]["startTime"],
                        "conditions": [],
                        "containerStatuses": [exited(pod["status"]["startTime"], times.iso(self.now))],
                    }

    def run(self) -> CurveExperiment:
        self.started: dict[str, float] = {}
        while self.trained < self.budget and self.status.get("phase") not in ("Succeeded", "Failed"):
            self.round()
        return self

    def found(self) -> list[dict[str, float]]:
        """The final metrics of the trials that succeeded within the budget."""
        out = []
        for body in self.trials.values():
            st = body.get("status") or {}
            if st.get("phase") == "Succeeded":
                out.append({m["name"]: float(m["value"]) for m in st.get("metrics") or []})
        return out

    def count(self, phase: str) -> int:
        return sum(1 for b in self.trials.values() if (b.get("status") or {}).get("phase") == phase)


def make_spec(case: Any, algorithm: str, seed: int, parallel: int, stopping: bool) -> ExperimentSpec:
    spec = experiment_spec(case.table.parameters(), case.directed, algorithm, seed, 10_000, parallel)
    changes: dict[str, Any] = {"metrics_collector": spec.metrics_collector.model_copy(update={"source": "StdoutLog"})}
    if stopping:
        changes["early_stopping"] = EarlyStopping(algorithm="asha", min_resource=1, reduction_factor=3)
    return spec.model_copy(update=changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-trials", type=int, default=32, help="the budget: this many full trials' steps")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--multi", default=";".join(MULTI))
    parser.add_argument("--algorithms", default="random,tpe")
    args = parser.parse_args()
    if not tabular.available():
        sys.exit(tabular.MISSING)
    budget = args.budget_trials * STEPS
    rows = []
    started = time.perf_counter()
    for text in args.multi.split(";"):
        case = parse_case(text)
        for algorithm in args.algorithms.split(","):
            cell: dict[bool, list[tuple[float, int, int]]] = {False: [], True: []}
            for seed in range(args.seeds):
                for stopping in (False, True):
                    run = CurveExperiment(make_spec(case, algorithm, seed, args.parallel, stopping), case, budget).run()
                    volume = case.table.hypervolume(run.found(), case.objectives) if run.found() else 0.0
                    cell[stopping].append((volume, run.count("Succeeded"), run.count("EarlyStopped")))
            without = statistics.median(v for v, _, _ in cell[False])
            with_rule = statistics.median(v for v, _, _ in cell[True])
            rows.append(
                [
                    case.table.name,
                    " / ".join(case.objectives),
                    algorithm,
                    f"{without:.4f}",
                    f"{with_rule:.4f}",
                    f"{statistics.median(n for _, n, _ in cell[False]):.0f}",
                    f"{statistics.median(n for _, n, _ in cell[True]):.0f} + "
                    f"{statistics.median(s for _, _, s in cell[True]):.0f}",
                    f"{sum(w[0] >= o[0] for w, o in zip(cell[True], cell[False], strict=True))}/{args.seeds}",
                ]
            )
            print(f"  {case.table.name} {algorithm}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print(
        f"\nSeveral objectives, {budget} training steps ({args.budget_trials} trials of {STEPS} steps), parallel "
        f"{args.parallel}: hypervolume of the succeeded trials (scaled, reference (1, 1), higher is better), "
        f"median over seeds 0..{args.seeds - 1}; asha with minResource 1, reductionFactor 3\n"
    )
    header = [
        "problem",
        "objectives",
        "algorithm",
        "HV without",
        "HV with asha",
        "succeeded without",
        "succeeded + stopped with",
        "seeds with >= without",
    ]
    print(table(header, rows))
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

"""Tuning quality through the operator's suggestion path, against Optuna used directly.

Runs Branin (2-D) and Hartmann-6 (6-D) with random, tpe and cmaes over several seeds. The
operator's side is tests/support/search_runs.py's: tests.support.simulate.InMemoryExperiment, i.e.
planner.plan() round by round, as the operator's experiment loop runs it, against Trials and pods
in memory that succeed one round after they start, reporting {"loss": f(x)}. The direct side is
optuna.create_study() + optimize() with the same sampler class, seed and (default) settings, and an
objective that calls suggest_float in parameter order over the ranges of
samplers.distribution().

Prints best-found after 10/25/50 trials (mean ± std over seeds), and whether the operator's
sequence of configurations equals Optuna's exactly (it must, at parallelTrialCount 1). A last row
set runs the operator at parallelTrialCount 4.

    .venv/bin/python bench/tuning_quality.py [--trials 50] [--seeds 5] [--parallel 4]

This is a benchmark: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna  # noqa: E402
from optuna.distributions import FloatDistribution, IntDistribution  # noqa: E402

from hpo_operator.api.spec import ExperimentSpec  # noqa: E402
from hpo_operator.search.samplers import distribution  # noqa: E402
from tests.support import search_runs  # noqa: E402  (puts operator/ on the path)
from tests.support.search_runs import table  # noqa: E402

# --- objective functions (standard definitions) ----------------------------------------------------


def branin(x: list[float]) -> float:
    """Branin-Hoo on x1 in [-5, 10], x2 in [0, 15]; global minimum 0.397887 at three points."""
    x1, x2 = x
    b = 5.1 / (4 * math.pi**2)
    c = 5 / math.pi
    t = 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


HARTMANN_ALPHA = [1.0, 1.2, 3.0, 3.2]
HARTMANN_A = [
    [10, 3, 17, 3.5, 1.7, 8],
    [0.05, 10, 17, 0.1, 8, 14],
    [3, 3.5, 1.7, 10, 17, 8],
    [17, 8, 0.05, 10, 0.1, 14],
]
HARTMANN_P = [
    [1312, 1696, 5569, 124, 8283, 5886],
    [2329, 4135, 8307, 3736, 1004, 9991],
    [2348, 1451, 3522, 2883, 3047, 6650],
    [4047, 8828, 8732, 5743, 1091, 381],
]


def hartmann6(x: list[float]) -> float:
    """Hartmann 6-D on [0, 1]^6; global minimum -3.32237."""
    total = 0.0
    for alpha, a_row, p_row in zip(HARTMANN_ALPHA, HARTMANN_A, HARTMANN_P, strict=True):
        inner = sum(a * (xj - p * 1e-4) ** 2 for a, xj, p in zip(a_row, x, p_row, strict=True))
        total += alpha * math.exp(-inner)
    return -total


@dataclass
class Problem:
    name: str
    f: Callable[[list[float]], float]
    bounds: list[tuple[float, float]]
    optimum: float

    @property
    def names(self) -> list[str]:
        return [f"x{i + 1}" for i in range(len(self.bounds))]

    def loss(self, values: dict[str, str]) -> float:
        return self.f([float(values[n]) for n in self.names])


PROBLEMS = {
    "branin": Problem("branin", branin, [(-5.0, 10.0), (0.0, 15.0)], 0.397887),
    "hartmann6": Problem("hartmann6", hartmann6, [(0.0, 1.0)] * 6, -3.32237),
}
ALGORITHMS = ["random", "tpe", "cmaes"]


def experiment_spec(problem: Problem, algorithm: str, seed: int, trials: int, parallel: int) -> ExperimentSpec:
    parameters = [
        {"name": n, "type": "double", "min": lo, "max": hi}
        for n, (lo, hi) in zip(problem.names, problem.bounds, strict=True)
    ]
    return search_runs.experiment_spec(parameters, [("loss", "minimize")], algorithm, seed, trials, parallel)


# --- the operator's side: plan() against an in-memory cluster --------------------------------------


def operator_run(
    problem: Problem, algorithm: str, seed: int, trials: int, parallel: int = 1
) -> list[tuple[list[float], float]]:
    run = search_runs.operator_run(
        experiment_spec(problem, algorithm, seed, trials, parallel), lambda values: {"loss": problem.loss(values)}
    )
    return [([float(values[n]) for n in problem.names], metrics["loss"]) for values, metrics in run]


# --- the direct side ---------------------------------------------------------------------------


def direct_sampler(algorithm: str, seed: int) -> optuna.samplers.BaseSampler:
    return {
        "random": optuna.samplers.RandomSampler,
        "tpe": optuna.samplers.TPESampler,
        "cmaes": optuna.samplers.CmaEsSampler,
    }[algorithm](seed=seed)


def direct_run(problem: Problem, algorithm: str, seed: int, trials: int) -> list[tuple[list[float], float]]:
    spec = experiment_spec(problem, algorithm, seed, trials, 1)

    def objective(trial: optuna.Trial) -> float:
        x = []
        for p in spec.parameters:
            d = distribution(p)
            if isinstance(d, FloatDistribution):
                x.append(trial.suggest_float(p.name, d.low, d.high, step=d.step, log=d.log))
            else:
                assert isinstance(d, IntDistribution)
                x.append(float(trial.suggest_int(p.name, d.low, d.high, step=d.step, log=d.log)))
        return problem.f(x)

    study = optuna.create_study(direction="minimize", sampler=direct_sampler(algorithm, seed))
    study.optimize(objective, n_trials=trials)
    return [([t.params[n] for n in problem.names], t.value) for t in study.trials]


# --- reporting ---------------------------------------------------------------------------------


def best_after(run: list[tuple[list[float], float]], n: int) -> float:
    return min(value for _, value in run[:n])


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def first_difference(a: list[tuple[list[float], float]], b: list[tuple[list[float], float]]) -> int | None:
    for i, ((xa, _), (xb, _)) in enumerate(zip(a, b, strict=False)):
        if xa != xb:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def match_text(pairs: list[tuple[list, list]]) -> str:
    diffs = [first_difference(op, di) for op, di in pairs]
    same = sum(d is None for d in diffs)
    if same == len(pairs):
        return f"yes ({same}/{len(pairs)})"
    firsts = sorted(d for d in diffs if d is not None)
    where = str(firsts[0]) if firsts[0] == firsts[-1] else f"{firsts[0]}..{firsts[-1]}"
    return f"NO ({same}/{len(pairs)}; first differs at trial {where})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=50, help="trials per run (default 50)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per cell (default 5: seeds 0..4)")
    parser.add_argument("--parallel", type=int, default=4, help="parallelTrialCount of the last row set (0: skip)")
    parser.add_argument("--functions", default="branin,hartmann6")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    args = parser.parse_args()

    checkpoints = sorted({c for c in (10, 25, 50) if c < args.trials} | {args.trials})
    seeds = list(range(args.seeds))
    problems = [PROBLEMS[name] for name in args.functions.split(",")]
    algorithms = args.algorithms.split(",")
    started = time.perf_counter()

    best_cols = [f"best@{c}" for c in checkpoints]
    rows, parallel_rows = [], []
    for problem in problems:
        for algorithm in algorithms:
            ops = [operator_run(problem, algorithm, s, args.trials) for s in seeds]
            directs = [direct_run(problem, algorithm, s, args.trials) for s in seeds]
            rows.append(
                [problem.name, algorithm, "1"]
                + [mean_std([best_after(r, c) for r in ops]) for c in checkpoints]
                + [mean_std([best_after(r, c) for r in directs]) for c in checkpoints]
                + [match_text(list(zip(ops, directs, strict=False)))]
            )
            if args.parallel > 1:
                par = [operator_run(problem, algorithm, s, args.trials, parallel=args.parallel) for s in seeds]
                parallel_rows.append(
                    [problem.name, algorithm, str(args.parallel)]
                    + [mean_std([best_after(r, c) for r in par]) for c in checkpoints]
                    + [mean_std([best_after(r, c) for r in directs]) for c in checkpoints]
                    + ["n/a (parallel)"]
                )

    print(
        f"Tuning quality: {args.trials} trials, seeds {seeds[0]}..{seeds[-1]}, best-found mean ± std over seeds "
        f"(known optima: branin 0.397887, hartmann6 -3.32237)\n"
    )
    header = (
        ["function", "algorithm", "parallel"]
        + [f"operator {c}" for c in best_cols]
        + [f"direct {c}" for c in best_cols]
        + ["exact match (seeds)"]
    )
    print(table(header, rows + parallel_rows))
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

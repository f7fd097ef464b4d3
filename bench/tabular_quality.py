"""Tuning quality on real tabular benchmarks (HPOBench, NAS-Bench-201), through the operator's
suggestion path and through Optuna directly, at parallelism 1 and 8.

Single objective (val_acc): Bayesmark's normalised score after N trials, 0 the table's optimum and
1 random search's median. Several objectives: the hypervolume after N trials, objectives scaled
to [0, 1] by the table's ranges, reference point (1, 1). Medians over seeds. tests/support/tabular.py says
how the tables become problems and how the scores are computed; tests/support/search_runs.py how each side runs.

    .venv/bin/python bench/tabular_quality.py [--trials 64] [--seeds 5] [--parallel 8] [--full]

This is a benchmark: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import tabular  # noqa: E402
from tests.support.search_runs import Config, Run, direct_run, experiment_spec, first_difference, operator_run, table  # noqa: E402

SINGLE = [
    "hpobench/australian",
    "hpobench/blood_transfusion",
    "hpobench/car",
    "hpobench/credit_g",
    "hpobench/kc1",
    "hpobench/phoneme",
    "hpobench/segment",
    "hpobench/vehicle",
    "nb201/cifar10",
    "nb201/cifar100",
    "nb201/imagenet",
]
MULTI = [
    "nb201/cifar10:val_acc,latency",
    "nb201/cifar100:val_acc,model_size",
    "hpobench/australian:val_acc,train_time",
    "hpobench/vehicle:val_acc,train_time",
]
# The four ways each search runs: (column, through the operator?, parallelism).
SIDES = [
    ("operator p1", True, 1),
    ("operator pP", True, None),
    ("optuna seq", False, 1),
    ("optuna batchP", False, None),
]


@dataclass
class Case:
    table: tabular.Table
    objectives: list[str]

    @property
    def directed(self) -> list[tuple[str, str]]:
        return [(m, self.table.directions()[m]) for m in self.objectives]


def parse_case(text: str, default_objectives: str = "val_acc") -> Case:
    name, _, objectives = text.partition(":")
    family, _, dataset = name.partition("/")
    return Case(tabular.Table.load(family, dataset), (objectives or default_objectives).split(","))


def runs(case: Case, algorithm: str, seed: int, args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Run]:
    """The same search four ways: the operator at parallelism 1 and P, Optuna sequential and in batches of P."""
    out = {}
    for column, through_operator, parallel in SIDES:
        parallel = parallel or args.parallel
        if through_operator:
            spec = experiment_spec(
                case.table.parameters(), case.directed, algorithm, seed, args.trials, parallel, options
            )
            out[column] = operator_run(spec, case.table.evaluate)
        else:
            out[column] = direct_run(
                case.table.distributions(),
                case.directed,
                case.table.evaluate,
                algorithm,
                seed,
                args.trials,
                batch=parallel,
                options=options,
            )
    return out


def first_repeat(configs: Sequence[Config]) -> int | None:
    seen = set()
    for i, config in enumerate(configs):
        key = tuple(sorted(config.items()))
        if key in seen:
            return i
        seen.add(key)
    return None


def same_until_repeat(ours: Run, theirs: Run) -> bool:
    """The operator suggested exactly what Optuna did, up to Optuna's first repeated configuration
    (which the operator skips, asking again, while Optuna spends a trial on it)."""
    a, b = [c for c, _ in ours], [c for c, _ in theirs]
    diff = first_difference(a, b)
    repeat = first_repeat(b)
    return diff is None or (repeat is not None and diff >= repeat)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def options_for(algorithm: str, args: argparse.Namespace) -> dict[str, Any]:
    if algorithm == "tpe" and args.no_constant_liar:
        return {"constant_liar": False}
    if algorithm == "nsga2":
        return {"population_size": args.population}
    return {}


def measure(
    cases: list[Case],
    algorithms: list[str],
    args: argparse.Namespace,
    score: Callable[[Case, Run], tuple[float, ...]],
) -> dict[tuple[str, str], dict[str, Any]]:
    """Every case, algorithm and seed, four ways; per cell the per-seed scores, and how many seeds
    the operator matched Optuna exactly (until a repeat)."""
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for case in cases:
        for algorithm in algorithms:
            started = time.perf_counter()
            cell: dict[str, Any] = {column: [] for column, _, _ in SIDES}
            cell["match1"] = cell["matchP"] = 0
            for seed in range(args.seeds):
                four = runs(case, algorithm, seed, args, options_for(algorithm, args))
                for column, run in four.items():
                    cell[column].append(score(case, run))
                cell["match1"] += same_until_repeat(four["operator p1"], four["optuna seq"])
                cell["matchP"] += same_until_repeat(four["operator pP"], four["optuna batchP"])
            results[(case.table.name + ":" + ",".join(case.objectives), algorithm)] = cell
            print(f"  {case.table.name} {algorithm}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return results


def single_score(trials: int) -> Callable[[Case, Run], tuple[float, ...]]:
    def score(case: Case, run: Run) -> tuple[float, ...]:
        (metric, direction) = case.directed[0]
        return (case.table.normalised_score(metric, tabular.best(run, metric, direction), trials),)

    return score


def multi_score(trials: int) -> Callable[[Case, Run], tuple[float, ...]]:
    def score(case: Case, run: Run) -> tuple[float, ...]:
        volume = case.table.hypervolume([m for _, m in run], case.objectives)
        return volume, case.table.hypervolume_score(volume, case.objectives, trials)

    return score


def verdict(ok: bool) -> str:
    return "yes" if ok else "NO"


def single_table(results: dict, args: argparse.Namespace) -> str:
    p = args.parallel
    header = ["problem", "algorithm", "operator p1", f"operator p{p}", "optuna seq", f"optuna batch{p}"]
    header += [f"p1 = seq, p{p} = batch{p}", f"aim: p{p} within 0.1 of p1", f"aim: p{p} <= batch{p}"]
    rows = []
    means: dict[str, dict[str, list[float]]] = {}
    for (name, algorithm), cell in results.items():
        meds = {c: median([s[0] for s in cell[c]]) for c, _, _ in SIDES}
        for c, m in meds.items():
            means.setdefault(algorithm, {}).setdefault(c, []).append(m)
        rows.append(
            [name.split(":")[0], algorithm]
            + [f"{meds[c]:.3f}" for c, _, _ in SIDES]
            + [f"{cell['match1']}/{args.seeds}, {cell['matchP']}/{args.seeds}"]
            + aims(algorithm, meds["operator p1"], meds["operator pP"], meds["optuna batchP"])
        )
    for algorithm, cols in means.items():
        meds = {c: statistics.mean(v) for c, v in cols.items()}
        rows.append(
            ["mean of the medians", algorithm]
            + [f"{meds[c]:.3f}" for c, _, _ in SIDES]
            + [""]
            + aims(algorithm, meds["operator p1"], meds["operator pP"], meds["optuna batchP"])
        )
    return table(header, rows)


def aims(algorithm: str, p1: float, pp: float, batch: float, lower_is_better: bool = True) -> list[str]:
    if algorithm == "random":
        return ["", ""]  # nothing to aim at: random search ignores the results
    if not lower_is_better:
        p1, pp, batch = -p1, -pp, -batch
    return [verdict(pp - p1 <= 0.1), verdict(pp <= batch)]


def multi_table(results: dict, args: argparse.Namespace) -> str:
    p = args.parallel
    header = ["problem", "objectives", "algorithm", "operator p1", f"operator p{p}", "optuna seq"]
    header += [f"optuna batch{p}", f"p1 = seq, p{p} = batch{p}", f"aim: p{p} HV >= 0.9 p1", f"aim: p{p} >= batch{p}"]
    rows = []
    for (name, algorithm), cell in results.items():
        problem, objectives = name.split(":")
        hv = {c: median([s[0] for s in cell[c]]) for c, _, _ in SIDES}
        sc = {c: median([s[1] for s in cell[c]]) for c, _, _ in SIDES}
        if algorithm == "random":
            aim = ["", ""]
        else:
            aim = [
                verdict(hv["operator pP"] >= 0.9 * hv["operator p1"]),
                verdict(hv["operator pP"] >= hv["optuna batchP"]),
            ]
        rows.append(
            [problem, objectives.replace(",", " / "), algorithm]
            + [f"{hv[c]:.4f} ({sc[c]:.2f})" for c, _, _ in SIDES]
            + [f"{cell['match1']}/{args.seeds}, {cell['matchP']}/{args.seeds}"]
            + aim
        )
    return table(header, rows)


def front_table(cases: list[Case], trials: int) -> str:
    rows = []
    for case in cases:
        t = case.table
        rows.append(
            [t.name, " / ".join(case.objectives), str(len(t.front(case.objectives)))]
            + [
                f"{t.best_hypervolume(case.objectives):.4f}",
                f"{t.random_median_hypervolume(case.objectives, trials):.4f}",
            ]
        )
    return table(["problem", "objectives", "front size", "front HV", f"random median HV @{trials}"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=64, help="trials per search (default 64)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per cell (default 5: seeds 0..4)")
    parser.add_argument("--parallel", type=int, default=8, help="the parallel columns' parallelism (default 8)")
    parser.add_argument("--single", default=",".join(SINGLE), help="family/dataset,... ('' skips the table)")
    parser.add_argument("--multi", default=";".join(MULTI), help="family/dataset:m1,m2;... ('' skips the table)")
    parser.add_argument("--single-algorithms", default="tpe,random")
    parser.add_argument("--multi-algorithms", default="tpe,nsga2,random")
    parser.add_argument("--population", type=int, default=16, help="nsga2's populationSize (default 16)")
    parser.add_argument(
        "--no-constant-liar", action="store_true", help="tpe with constantLiar false (Optuna's default is true)"
    )
    parser.add_argument("--full", action="store_true", help="a bigger run: 128 trials, 10 seeds")
    args = parser.parse_args()
    if args.full:
        args.trials, args.seeds = 128, 10
    if not tabular.available():
        sys.exit(tabular.MISSING)

    started = time.perf_counter()
    liar = ", tpe with constantLiar false" if args.no_constant_liar else ""
    if args.single:
        cases = [parse_case(name) for name in args.single.split(",")]
        results = measure(cases, args.single_algorithms.split(","), args, single_score(args.trials))
        print(
            f"\nSingle objective (val_acc, maximised): normalised score after {args.trials} trials, median over "
            f"seeds 0..{args.seeds - 1} (0 the table's optimum, 1 random search's median; lower is better){liar}\n"
        )
        print(single_table(results, args))
    if args.multi:
        cases = [parse_case(text) for text in args.multi.split(";")]
        results = measure(cases, args.multi_algorithms.split(","), args, multi_score(args.trials))
        print(
            f"\nSeveral objectives: hypervolume after {args.trials} trials (objectives scaled to [0, 1] by the table's "
            f"range, train_time by its log; reference point (1, 1); higher is better), and in brackets the "
            f"normalised hypervolume score (0 the table's front, 1 random search's median); median over seeds "
            f"0..{args.seeds - 1}; nsga2 populationSize {args.population}{liar}\n"
        )
        print(multi_table(results, args))
        print()
        print(front_table(cases, args.trials))
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

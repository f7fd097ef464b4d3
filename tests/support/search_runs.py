"""The two sides every tuning benchmark compares: a search run through the operator's suggestion
path, and the same search run by Optuna directly; and the table they print.

- **Operator**: tests.support.simulate.InMemoryExperiment, i.e. planner.plan() round by
  round as the operator's experiment loop (controller/loop.py) runs it, with a Suggester, against
  Trials and pods in memory. Every pod started in a round has succeeded by the next one, its
  termination message the JSON of the metrics `evaluate` returns for the Trial's parameters (every
  objective's, with several). With parallelTrialCount P, each round finishes the P trials of the
  last and starts the next P.
- **Direct**: an Optuna study with the same sampler class, seed and settings, built here (not by
  the operator's samplers.py), over the same distributions: `study.optimize()` one trial at a
  time, or Optuna's own batches (ask P, evaluate them, tell P).

A run is the list of (configuration, metrics) in the order the trials were made. It lives with the
tests' support because the benchmarks (bench/) and their unit test (tests/unit/test_bench_tabular.py)
both use it.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "operator") not in sys.path:
    sys.path.insert(0, str(REPO / "operator"))

import optuna  # noqa: E402
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution  # noqa: E402

from hpo_operator.api.spec import ExperimentSpec  # noqa: E402
from tests.support.simulate import InMemoryExperiment  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

Config = dict[str, str]  # a configuration as the operator writes it: parameter -> text
Metrics = dict[str, float]
Run = list[tuple[Config, Metrics]]
Evaluate = Callable[[Config], Metrics]

SAMPLERS: dict[str, type[optuna.samplers.BaseSampler]] = {
    "random": optuna.samplers.RandomSampler,
    "tpe": optuna.samplers.TPESampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "gp": optuna.samplers.GPSampler,  # needs PyTorch: the gp extra (docs/search-algorithms.md)
}


def camel(name: str) -> str:
    """An Optuna keyword (constant_liar) as the spec's setting name (constantLiar)."""
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


def setting_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def experiment_spec(
    parameters: list[dict[str, Any]],
    objectives: Sequence[tuple[str, str]],
    algorithm: str,
    seed: int,
    trials: int,
    parallel: int = 1,
    options: Mapping[str, Any] | None = None,
) -> ExperimentSpec:
    """The Experiment a user would write: `objectives` are (metric, minimize|maximize), one or
    several; `options` the sampler's Optuna keywords, written as the algorithm's settings."""
    if len(objectives) == 1:
        objective: dict[str, Any] = {"type": objectives[0][1], "metricName": objectives[0][0]}
    else:
        objective = {"metrics": [{"metricName": m, "type": d} for m, d in objectives]}
    algo: dict[str, Any] = {"name": algorithm, "seed": seed}
    if options:
        algo["settings"] = [{"name": camel(k), "value": setting_text(v)} for k, v in options.items()]
    return ExperimentSpec.model_validate(
        {
            "objective": objective,
            "algorithm": algo,
            "parameters": parameters,
            "parallelTrialCount": parallel,
            "maxTrialCount": trials,
            "trialTemplate": {
                "primaryContainerName": "train",
                "template": {"spec": {"containers": [{"name": "train", "image": "bench"}]}},
            },
        }
    )


# --- the operator's side -------------------------------------------------------------------------


def operator_run(spec: ExperimentSpec, evaluate: Evaluate) -> Run:
    """The experiment run to its end by the planner; its Trials' configurations in creation order,
    with the metrics the operator recorded in each Trial's status (parsed from its pod's
    termination message: the objectives, and any additionalMetricNames)."""
    run = InMemoryExperiment(spec, evaluate).run()
    out = []
    for name, values in zip(run.created, run.launched, strict=True):
        recorded = run.trials[name].get("status", {}).get("metrics") or []
        out.append((values, {m["name"]: float(m["value"]) for m in recorded}))
    return out


# --- the direct side ---------------------------------------------------------------------------


def direct_sampler(algorithm: str, seed: int, options: Mapping[str, Any] | None = None) -> optuna.samplers.BaseSampler:
    return SAMPLERS[algorithm](seed=seed, **dict(options or {}))


def _suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    """What a user's objective calls for this distribution."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)


def _text(params: Mapping[str, Any]) -> Config:
    return {name: str(value) for name, value in params.items()}


def _result(metrics: Metrics, objectives: Sequence[tuple[str, str]]) -> float | list[float]:
    values = [metrics[m] for m, _ in objectives]
    return values[0] if len(values) == 1 else values


def direct_run(
    distributions: Mapping[str, BaseDistribution],
    objectives: Sequence[tuple[str, str]],
    evaluate: Evaluate,
    algorithm: str,
    seed: int,
    trials: int,
    batch: int = 1,
    options: Mapping[str, Any] | None = None,
) -> Run:
    """Optuna on its own: `study.optimize()` at batch 1; at batch P, rounds of P asks, then the P
    evaluations told (Optuna's batch optimisation). Parameters are suggested in the given order."""
    study = optuna.create_study(directions=[d for _, d in objectives], sampler=direct_sampler(algorithm, seed, options))
    run: Run = []
    if batch == 1:

        def objective(trial: optuna.Trial) -> float | list[float]:
            config = _text({n: _suggest(trial, n, d) for n, d in distributions.items()})
            metrics = evaluate(config)
            run.append((config, metrics))
            return _result(metrics, objectives)

        study.optimize(objective, n_trials=trials)
        return run
    while len(run) < trials:
        asked = [study.ask() for _ in range(min(batch, trials - len(run)))]
        configs = [_text({n: _suggest(t, n, d) for n, d in distributions.items()}) for t in asked]
        for trial, config in zip(asked, configs, strict=True):
            metrics = evaluate(config)
            run.append((config, metrics))
            study.tell(trial, _result(metrics, objectives))
    return run


# --- comparing and printing ----------------------------------------------------------------------


def first_difference(a: Sequence[Config], b: Sequence[Config]) -> int | None:
    """The first index where two sequences of configurations differ (None: equal)."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, columns padded to their widest cell."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])

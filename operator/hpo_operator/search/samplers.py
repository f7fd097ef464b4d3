"""The search algorithm's Optuna objects, built from an experiment's spec: each parameter's
distribution, the sampler (algorithm.name, seed and settings), the pruner (earlyStopping), and the
checks that refuse what the CRD schema could not (a grid too large, settings Optuna rejects).

The Suggester (suggest.py) drives them.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from hpo_operator.api.algorithms import SettingsError, parse_settings
from hpo_operator.api.parameters import Parameter
from hpo_operator.api.spec import ExperimentSpec

# Optuna logs every trial at INFO; the operator's log keeps only its warnings. Set here, where the
# search floor first imports Optuna, so every importer of the floor gets it.
optuna.logging.set_verbosity(optuna.logging.WARNING)

MAX_GRID_POINTS_PER_PARAMETER = 100_000
# Optuna's GridSampler holds every combination in memory (about 75 bytes each).
MAX_GRID_POINTS = 1_000_000


class SearchSpaceError(ValueError):
    """The search space or algorithm settings cannot be used (reported as a condition)."""


SAMPLERS = {
    "random": optuna.samplers.RandomSampler,
    "tpe": optuna.samplers.TPESampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": optuna.samplers.QMCSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "nsga3": optuna.samplers.NSGAIIISampler,
    "gp": optuna.samplers.GPSampler,
}

# gp: Optuna's GPSampler fits its Gaussian process with PyTorch, which the operator's default image
# leaves out (it is gigabytes: see docs/search-algorithms.md). Where it is missing the experiment
# is refused as InvalidSpec with this, rather than failing at its first model-based suggestion.
GP_NEEDS = (
    "algorithm gp needs PyTorch, which this operator does not have: run the operator's gp image "
    "flavour (the chart's image.flavour: gp, image tag <version>-gp; make image FLAVOUR=gp) or install "
    "its gp extra (pip install 'hpo-operator[gp]'); or use tpe"
)


def torch_available() -> bool:
    """Whether PyTorch can be imported here (looked up, not imported: importing it takes seconds)."""
    return importlib.util.find_spec("torch") is not None


def distribution(param: Parameter) -> BaseDistribution:
    if param.type == "int":
        return IntDistribution(
            int(param.min),
            int(param.max),
            log=param.log,  # type: ignore[arg-type]
            step=int(param.step or 1),
        )
    if param.type == "double":
        return FloatDistribution(param.min, param.max, log=param.log, step=param.step)  # type: ignore[arg-type]
    return CategoricalDistribution(list(param.values or []))


def grid_values(param: Parameter) -> list[Any]:
    if param.type in ("categorical", "discrete"):
        return list(param.values or [])
    step = param.step or 1
    count = int(math.floor((param.max - param.min) / step + 1e-9)) + 1  # type: ignore[operator]
    if count > MAX_GRID_POINTS_PER_PARAMETER:
        raise SearchSpaceError(f"grid search: parameter {param.name} has {count} points; give it a larger step")
    values = [param.min + i * step for i in range(count)]  # type: ignore[operator]
    return [int(v) for v in values] if param.type == "int" else [round(v, 12) for v in values]


def sampler_options(spec: ExperimentSpec) -> dict[str, Any]:
    """The sampler's keyword arguments from algorithm.settings, parsed and checked by the
    algorithm's settings model (hpo_operator.api.algorithms)."""
    settings = {s.name: s.value for s in spec.algorithm.settings or []}
    try:
        return parse_settings(spec.algorithm.name, settings)
    except SettingsError as e:
        raise SearchSpaceError(str(e)) from None


def make_sampler(spec: ExperimentSpec, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The experiment's sampler, seeded with algorithm.seed (or `seed`, when given)."""
    options = sampler_options(spec)
    seed = spec.algorithm.seed if seed is None else seed
    if spec.algorithm.name == "grid":
        space = {p.name: grid_values(p) for p in spec.parameters}
        size = math.prod(len(v) for v in space.values())
        if size > MAX_GRID_POINTS:
            raise SearchSpaceError(
                f"grid search: {size} combinations is more than {MAX_GRID_POINTS}; "
                "give the parameters larger steps or fewer values"
            )
        return optuna.samplers.GridSampler(space, seed=seed)
    if spec.algorithm.name == "pbt":
        # Population-based training decides without a sampler (search/population.py); its settings
        # were checked above. The study only keeps the interface every experiment has.
        return optuna.samplers.RandomSampler(seed=seed)
    sampler = SAMPLERS[spec.algorithm.name]
    name = spec.algorithm.name
    if name == "gp" and not torch_available():
        raise SearchSpaceError(GP_NEEDS)
    if spec.algorithm.name in ("cmaes", "qmc"):
        # Their fallback for what they cannot sample (categoricals) must be seeded too, or a
        # seeded experiment would not be reproducible.
        options.setdefault("independent_sampler", optuna.samplers.RandomSampler(seed=seed))
        options.setdefault("warn_independent_sampling", False)
    if spec.algorithm.name == "qmc":
        options.setdefault("warn_asynchronous_seeding", False)
    try:
        return sampler(seed=seed, **options)
    except ValueError as e:  # combinations Optuna refuses, e.g. group without multivariate
        raise SearchSpaceError(f"algorithm {name}: {e}") from None


# The early-stopping settings' defaults (the CRD has none: see api/spec.py, EarlyStopping).
MEDIAN_MIN_TRIALS_REQUIRED = 3
REDUCTION_FACTOR = 3


def make_pruner(spec: ExperimentSpec) -> optuna.pruners.BasePruner:
    stopping = spec.early_stopping
    if stopping is None or spec.objective.multi:
        # Several objectives: Optuna's pruners take one; the operator judges them (rungs.py).
        return optuna.pruners.NopPruner()
    if stopping.algorithm == "median":
        required = stopping.min_trials_required
        return optuna.pruners.MedianPruner(
            n_startup_trials=MEDIAN_MIN_TRIALS_REQUIRED if required is None else required,
            n_warmup_steps=stopping.warmup_steps or 0,
        )
    reduction_factor = stopping.reduction_factor or REDUCTION_FACTOR
    if stopping.algorithm == "hyperband":
        # maxResource left out is Optuna's "auto": the last step of the first finished trial(s),
        # which the pruner has whole, since a result is told with its trial's whole curve.
        return optuna.pruners.HyperbandPruner(
            min_resource=stopping.min_resource or 1,
            max_resource=stopping.max_resource or "auto",
            reduction_factor=reduction_factor,
        )
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=stopping.min_resource or "auto", reduction_factor=reduction_factor
    )


def grid_size(spec: ExperimentSpec) -> int | None:
    if spec.algorithm.name != "grid":
        return None
    return math.prod(len(grid_values(p)) for p in spec.parameters)


def check(spec: ExperimentSpec) -> None:
    """Raises SearchSpaceError for what the CRD schema could not refuse."""
    make_sampler(spec)
    make_pruner(spec)

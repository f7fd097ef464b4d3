"""Population-based training's exploit and explore (Jaderberg et al., 2017), as pure functions.

A population of members trains in generations of segments. When every member's segment of a
generation has ended, the members are ranked by their objective: the worst `truncationQuantile` of
them (and every member whose segment failed: it left no checkpoint to go on from) exploit, each
copying the checkpoint and hyperparameters of one of the best `truncationQuantile`, chosen at
random, and explore, perturbing each hyperparameter (a number times one of `perturbationFactors`;
a categorical or discrete value moved to a neighbouring one) or, with `resampleProbability`,
drawing it afresh from the search space. The others go on from their own checkpoint with their own
hyperparameters.

Every random draw comes from a generator seeded by the experiment's seed, the generation and the
member (no Optuna, no state kept between calls): the same results give the same decisions in any
process, in any order, after any restart. The planner (planner/population.py) asks these functions
and records their answers in the Trials it creates.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hpo_operator.api.algorithms import pbt_settings
from hpo_operator.api.parameters import Parameter
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.core.space import format_value


@dataclass(frozen=True)
class Schedule:
    """A pbt experiment's settings, with their defaults, and the seed its draws start from."""

    population: int
    generations: int
    interval: int  # steps per segment
    quantile: float
    resample_probability: float
    factors: tuple[float, ...]
    seed: int

    def end_step(self, generation: int) -> int:
        """The step a segment of this generation trains to."""
        return (generation + 1) * self.interval

    @property
    def truncated(self) -> int:
        """How many members exploit, and how many may be exploited, at each generation."""
        return max(1, math.floor(self.population * self.quantile + 1e-9))


def schedule(spec: ExperimentSpec, experiment_uid: str) -> Schedule:
    """The schedule of a pbt experiment. Without algorithm.seed the seed comes from the experiment's
    uid: fixed for the experiment's life, so an operator restart decides as the first process did.
    Raises SettingsError (api.algorithms) for settings it cannot use."""
    settings = pbt_settings({s.name: s.value for s in spec.algorithm.settings or []})
    seed = spec.algorithm.seed
    if seed is None:
        seed = int.from_bytes(hashlib.sha256(experiment_uid.encode()).digest()[:4], "big")
    return Schedule(
        population=settings.population_size,
        generations=max(spec.max_trial_count // settings.population_size, 1),
        interval=settings.perturbation_interval,
        quantile=settings.truncation_quantile,
        resample_probability=settings.resample_probability,
        factors=tuple(settings.perturbation_factors),
        seed=seed,
    )


def draws(seed: int, generation: int, member: int) -> random.Random:
    """The generator of one member's decisions at one generation. (A text seed is hashed with
    SHA-512 by Python, the same in every process.)"""
    return random.Random(f"pbt/{seed}/{generation}/{member}")


# --- one hyperparameter ----------------------------------------------------------------------------


def _bounds(param: Parameter) -> tuple[float, float]:
    assert param.min is not None and param.max is not None  # the schema gives int and double both
    return float(param.min), float(param.max)


def _on_grid(param: Parameter, value: float) -> float:
    """The value clamped to [min, max], on the step's grid when there is one, whole for an int."""
    low, high = _bounds(param)
    value = min(max(value, low), high)
    if param.step:
        steps = math.floor((high - low) / param.step + 1e-9)
        value = low + min(max(round((value - low) / param.step), 0), steps) * param.step
    if param.type == "int":
        value = float(min(max(math.floor(value + 0.5), math.ceil(low)), math.floor(high)))
    return value


def sample(param: Parameter, rng: random.Random) -> str:
    """A value drawn from the search space, as random search draws it: uniform, or uniform on a log
    scale; a step's grid; any of a list's values."""
    if param.type in ("categorical", "discrete"):
        return rng.choice(list(param.values or []))
    low, high = _bounds(param)
    if param.log:
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    elif param.type == "int" or param.step:
        step = param.step or 1.0
        value = low + step * rng.randint(0, math.floor((high - low) / step + 1e-9))
    else:
        value = rng.uniform(low, high)
    return format_value(param, _on_grid(param, value))


def perturb(param: Parameter, value: str, rng: random.Random, factors: Sequence[float]) -> str:
    """A value near the given one: a number times one of the factors (kept within the bounds, on
    the step's grid); a categorical or discrete value moved one place up or down its list."""
    if param.type in ("categorical", "discrete"):
        values = list(param.values or [])
        index = values.index(value) if value in values else 0
        return values[min(max(index + rng.choice((-1, 1)), 0), len(values) - 1)]
    return format_value(param, _on_grid(param, float(value) * rng.choice(list(factors))))


def explore(
    params: Sequence[Parameter], values: Mapping[str, str], rng: random.Random, plan: Schedule
) -> dict[str, str]:
    """New hyperparameters from a parent's: each resampled with resampleProbability, else perturbed."""
    out = {}
    for p in params:
        if rng.random() < plan.resample_probability:
            out[p.name] = sample(p, rng)
        else:
            out[p.name] = perturb(p, values[p.name], rng, plan.factors)
    return out


# --- a generation ----------------------------------------------------------------------------------


def initial(params: Sequence[Parameter], plan: Schedule, member: int) -> dict[str, str]:
    """A member's first hyperparameters: random search's draw."""
    rng = draws(plan.seed, 0, member)
    return {p.name: sample(p, rng) for p in params}


def ranked(results: Mapping[int, float | None], direction: str) -> list[int]:
    """The members with a result, best first (ties by member); those without one are left out."""
    sign = -1.0 if direction == "maximize" else 1.0
    scored = [(sign * value, member) for member, value in results.items() if value is not None]
    return [member for _, member in sorted(scored)]


@dataclass(frozen=True)
class Step:
    """What one member does in a new generation: the segment it starts from (its parent's member)
    and the hyperparameters it trains with."""

    member: int
    parent_member: int
    exploited: bool
    values: dict[str, str]


def next_generation(
    params: Sequence[Parameter],
    plan: Schedule,
    generation: int,
    results: Mapping[int, float | None],
    values: Mapping[int, Mapping[str, str]],
    direction: str,
) -> list[Step] | None:
    """Every member's step into `generation`, from the generation before: `results` is each
    member's objective there (None: its segment failed for good), `values` its hyperparameters.
    None when no member has a result: there is no checkpoint to go on from."""
    order = ranked(results, direction)
    if not order:
        return None
    k = plan.truncated
    top = order[:k]
    bottom = set(order[-k:]) - set(top)
    steps = []
    for member in range(plan.population):
        if member in top or (member not in bottom and results.get(member) is not None):
            steps.append(Step(member, member, False, dict(values[member])))
            continue
        rng = draws(plan.seed, generation, member)
        parent = rng.choice(top)
        steps.append(Step(member, parent, True, explore(params, values[parent], rng, plan)))
    return steps

"""The study the dashboard's plots draw: an Optuna study rebuilt from an experiment's Trials.

Every Trial that ran becomes one Optuna trial, numbered in creation order: a Succeeded trial with
its objective is COMPLETE, an EarlyStopped one PRUNED, a Failed or Killed one FAIL, an unfinished one
RUNNING (Refused trials never ran and are left out). Retries are trials of their own, so a
configuration recovered on its third attempt shows as two failures and one result, as it happened.
With several objectives the study has them all (its directions and metric names from the spec),
and a trial that broke the spec's constraints (status.feasible false) carries a violated
constraint, which Optuna's plots draw as infeasible.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from hpo_operator.api.parameters import Parameter, parameters_of
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.api.vocabulary import UNFINISHED_PHASES
from hpo_operator.search.samplers import distribution

from .data import creation_order

optuna.logging.set_verbosity(optuna.logging.ERROR)

# The constraint an infeasible trial breaks, as Optuna's plots read it (any value above 0 breaks it).
INFEASIBLE = "constraints"


def plain(text: str) -> str:
    """Text for plotly: plotly.js reads a few HTML-like tags in labels and hover texts (<br>, <b>,
    <a href>); escaped, a user's value shows as the characters it is, and entities are decoded
    back by plotly when drawing."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _distribution(p: Parameter) -> optuna.distributions.BaseDistribution:
    if p.type == "categorical":
        return CategoricalDistribution([plain(v) for v in p.values or []])
    return distribution(p)


def parameter_value(p: Parameter, text: str) -> Any:
    if p.type == "int":
        return int(float(text))
    if p.type == "double":
        return float(text)
    return plain(text) if p.type == "categorical" else text


class _Snapshot(optuna.study.Study):
    """A study that hands out its own trials instead of deep copies. Optuna copies every trial
    each time a plot reads the study (defensively: a running study's trials change); this one is
    built for drawing and never changes, and the copies were 90% of a 10,000-trial plot's time."""

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[optuna.trial.FrozenTrial]:
        return super().get_trials(deepcopy=False, states=states)


class UnknownObjective(ValueError):
    """A figure asked for an objective the experiment does not have."""


@dataclass
class TrialStudy:
    """A study rebuilt from an experiment's Trials; trial number i is the Trial names[i]."""

    study: optuna.Study
    names: list[str]
    metric: str
    parameters: list[Parameter]
    distributions: dict[str, optuna.distributions.BaseDistribution]
    objectives: list[str] = field(default_factory=list)  # the spec's, in its order
    directions: list[str] = field(default_factory=list)  # minimize or maximize, each

    def trials(self, *states: TrialState) -> list[optuna.trial.FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states or None)

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    def objective(self, name: str | None) -> int:
        """The index of objective `name` (None: the first); an unknown name is a ValueError."""
        if name is None:
            return 0
        if name not in self.objectives:
            raise UnknownObjective(f"no objective {name!r}: the objectives are {', '.join(self.objectives)}")
        return self.objectives.index(name)

    def value(self, trial: optuna.trial.FrozenTrial, index: int) -> float:
        return trial.values[index] if self.multi else trial.value  # type: ignore[return-value]

    def maximize(self, index: int) -> bool:
        return self.directions[index] == "maximize"


def parse_spec(spec: dict) -> ExperimentSpec:
    return ExperimentSpec.model_validate(spec)


def _finite(values: Any, count: int) -> list[float] | None:
    if not isinstance(values, list) or len(values) != count:
        return None
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values]


def _state(status: dict, objectives: int = 1) -> tuple[TrialState, list[float] | None]:
    """The trial's state and its objectives' values (a list, one value per objective)."""
    phase = status.get("phase") or "Pending"
    if objectives > 1:
        values = _finite(status.get("objectiveValues"), objectives)
    else:
        values = _finite([status.get("objectiveValue")], 1)
    if phase == "Succeeded" and values is not None:
        return TrialState.COMPLETE, values
    if phase == "EarlyStopped":
        return TrialState.PRUNED, None
    if phase in UNFINISHED_PHASES:
        return TrialState.RUNNING, None
    return TrialState.FAIL, None


def step_values(status: dict, metric: str) -> dict[int, float]:
    return {
        int(m["step"]): float(m["value"])
        for m in status.get("metricHistory") or []
        if m.get("name") == metric and m.get("step") is not None and m.get("value") is not None
    }


def build_study(
    spec: dict,
    trials: Iterable[dict],
    *,
    metric: str | None = None,
    state: TrialState | None = None,
    with_history: bool = False,
) -> TrialStudy:
    """The study of `trials` (dicts) under the experiment's `spec`; `metric` names the value the
    intermediate values come from (default: the objective's), `state` forces every trial's state
    (the metric curves show each trial's history whatever became of it)."""
    parsed = parse_spec(spec)
    parameters = list(parsed.parameters)
    distributions = {p.name: _distribution(p) for p in parameters}
    objectives, directions = parsed.objective.names, parsed.objective.directions
    metric = metric or objectives[0]
    # The metric curves force every trial RUNNING: no values, so one direction will do.
    several = len(objectives) > 1 and state is None
    frozen, names = [], []
    for t in creation_order(trials):
        status = t.get("status") or {}
        if status.get("phase") == "Refused":
            continue
        given = parameters_of((t.get("spec") or {}).get("parameters"))
        try:
            params = {p.name: parameter_value(p, str(given[p.name])) for p in parameters}
            trial_state, values = _state(status, len(objectives) if several else 1)
            if state is not None:
                trial_state, values = state, (values if state == TrialState.COMPLETE else None)
            infeasible = trial_state == TrialState.COMPLETE and status.get("feasible") is False
            frozen.append(
                create_trial(
                    state=trial_state,
                    values=values,
                    params=params,
                    distributions=distributions,
                    user_attrs={"trial": t["metadata"]["name"]},
                    intermediate_values=step_values(status, metric) if with_history else None,
                    constraints={INFEASIBLE: 1.0 if infeasible else 0.0} if parsed.objective.constraints else None,
                )
            )
        except (KeyError, ValueError, TypeError):
            continue  # not a point of this search space (a user's Trial the operator refused)
        names.append(t["metadata"]["name"])
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, directions=directions if several else directions[:1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(objectives if several else [metric])
    study.add_trials(frozen)
    return TrialStudy(
        _Snapshot(study_name=study.study_name, storage=storage),
        names,
        metric,
        parameters,
        distributions,
        objectives=list(objectives),
        directions=list(directions),
    )

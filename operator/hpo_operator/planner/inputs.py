"""What one round of plan() reads, by name: the round's protocol on the way in (apply.py's writes
are its way out). The operator's loop (controller/loop.py) fills every field; tests and the
in-memory cluster leave the optional ones to their defaults, which plan() works out the same way."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hpo_operator.core import metrics
from hpo_operator.core.podstate import PodObservation
from hpo_operator.search.suggest import Outcome
from hpo_operator.workloads.observe import Observed

from .state import ExperimentView, Refusal, TrialView


@dataclass(frozen=True)
class RoundInput:
    """Everything plan() reads of one round, each field named (a round's input used to be a
    dozen positional arguments, easy to pass in the wrong order)."""

    # The Experiment as read: its spec parsed, and its stored status.
    experiment: ExperimentView
    # Its Trials, each as the view the planner reads (any order: the round sorts them by age).
    trials: list[TrialView]
    # Per trial name, its pod; for a Job or resource trial, its primary pod (or, while it has none,
    # the workload's name, namespace and uid): the planner reads its status only through `workloads`.
    pods: dict[str, dict[str, Any]]
    # The round's only clock: every time the plan writes or compares is this one.
    now: datetime
    # Suggestion i's parameter values, or None once the search space is used up.
    suggest: Callable[[int], dict[str, str] | None]
    # Whether suggestion i's running trial should stop early, given its {step: value} history
    # (None: never).
    should_stop: Callable[[int, dict[int, float]], bool] | None = None
    # Hears each decided result before any later suggestion is asked; the same results are also
    # listed in plan.tells (None: nobody listens).
    tell: Callable[[int, Outcome], None] | None = None
    # The suggestions whose result `tell` already heard (Suggester.told()): a configuration all of
    # whose suggestions are in it is not told again, nor its result worked out (None: every decided
    # result is told, as a new process's first round does). Telling a known result changes nothing.
    told: Set[int] | None = None
    # Log text by trial (a running pod's read with timestamps); read only when `outputs` is None.
    logs: Mapping[str, str] = field(default_factory=dict)
    # The checkpoint claims that exist (None: not known, so none is removed).
    volumes: set[str] | None = None
    # What each unfinished trial's pod says, as observe_pods() gives it (None: observed by plan(),
    # the same way).
    observations: Mapping[str, PodObservation] | None = None
    # The trials whose pod (or Job, or resource) was refused since the last round, by the API server
    # or the author check, with the reason (None: none).
    refused: Mapping[str, Refusal] | None = None
    # What each trial's output reported, as read_outputs() gives it (None: read by plan() from
    # `logs`; the loop parses them off its event loop and passes them, so no text is parsed there).
    outputs: Mapping[str, metrics.Output] | None = None
    # For a Job or resource trial, what its workload and pods say (workloads.observe), by trial name
    # (None: every trial in `pods` is judged by its pod).
    workloads: Mapping[str, Observed] | None = None

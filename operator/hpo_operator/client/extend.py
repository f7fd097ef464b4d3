"""Extending an experiment (`kubectl hpo extend`): its limits raised past what it launched and
spent, so that a finished experiment goes on with the same search, new trials numbered after its
last."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubernetes.client import ApiException

from .connection import Session
from .dictable import Dictable
from .errors import InvalidInput, translate
from .experiments import get_experiment_object, list_objects
from .spending import spending


@dataclass
class Extension(Dictable):
    """What extend changed: each limit's old and new value, by the spec's field."""

    experiment: str
    namespace: str
    changes: dict[str, tuple[Any, Any]]
    goes_on: bool  # a finished experiment that goes on (the operator decides; this is what it will see)


# Why a finished experiment would not go on, whatever limit is raised.
_STAYS = {
    "SearchSpaceExhausted": "its grid is done: copy it with a larger search space (kubectl hpo copy --warm-start)",
}


def extension(
    obj: dict,
    trials: Sequence[dict] = (),
    *,
    more_trials: int | None = None,
    more_seconds: int | None = None,
    more_resource_seconds: dict[str, float] | None = None,
    goal: float | None = None,
    now: datetime | None = None,
) -> tuple[dict, Extension]:
    """The merge patch that extends an experiment, and what it changes: `more_trials`
    configurations past what it launched (or its maxTrialCount, if larger), `more_seconds` of
    running time past what it spent (or its limit), `more_resource_seconds` per resource past what its
    trials spent, a new goal. Refuses (InvalidInput) what would not continue it: nothing to raise, a
    finished grid, a failed experiment, a goal reached that stays reached."""
    name, ns = obj["metadata"]["name"], obj["metadata"]["namespace"]
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if not (more_trials or more_seconds or more_resource_seconds or goal is not None):
        raise InvalidInput("give --trials, --duration, --compute or --goal: what to extend the experiment by")
    phase = status.get("phase")
    reason = next((c.get("reason") for c in status.get("conditions") or [] if c.get("type") == phase), None)
    if phase == "Failed":
        raise InvalidInput(f"experiment {name} failed ({reason}): a failed experiment does not go on")
    if phase == "Succeeded" and reason in _STAYS:
        raise InvalidInput(f"experiment {name} ended {reason}: {_STAYS[reason]}")
    if phase == "Succeeded" and reason == "GoalReached" and goal is None:
        raise InvalidInput(
            f"experiment {name} reached its goal: raising a limit does not continue it; give --goal with a harder one"
        )
    patch_spec: dict[str, Any] = {}
    changes: dict[str, tuple[Any, Any]] = {}
    if more_trials:
        if more_trials < 0:
            raise InvalidInput("--trials must be positive")
        old = int(spec.get("maxTrialCount") or 0)
        new = max(old, int(status.get("configurations") or 0)) + more_trials
        patch_spec["maxTrialCount"] = new
        changes["maxTrialCount"] = (old, new)
    budget: dict[str, Any] = {}
    old_budget = spec.get("budget") or {}
    spent = spending(obj, list(trials), now)
    if more_seconds:
        if more_seconds < 0:
            raise InvalidInput("--duration must be positive")
        old = old_budget.get("maxDurationSeconds")
        new = int(math.ceil(max(old or 0, spent.duration_seconds))) + more_seconds
        budget["maxDurationSeconds"] = new
        changes["budget.maxDurationSeconds"] = (old, new)
    if more_resource_seconds:
        used = {r.resource: r.seconds for r in spent.resources}
        limits = old_budget.get("maxResourceSeconds") or {}
        raised = {}
        for resource, more in more_resource_seconds.items():
            if more <= 0:
                raise InvalidInput(f"--compute {resource}: the resource-seconds to add must be positive")
            old = limits.get(resource)
            raised[resource] = float(math.ceil(max(old or 0, used.get(resource, 0.0)) + more))
            changes[f"budget.maxResourceSeconds.{resource}"] = (old, raised[resource])
        budget["maxResourceSeconds"] = raised
    if budget:
        patch_spec["budget"] = budget
    if goal is not None:
        objective = spec.get("objective") or {}
        if objective.get("metrics"):
            raise InvalidInput(f"experiment {name} has several objectives: a Pareto front has no goal")
        patch_spec["objective"] = {"goal": goal}
        changes["objective.goal"] = (objective.get("goal"), goal)
    # The values were worked out from this version: a change made meanwhile makes the patch fail (409).
    patch = {"metadata": {"resourceVersion": obj["metadata"].get("resourceVersion")}, "spec": patch_spec}
    return patch, Extension(name, ns, changes, goes_on=phase == "Succeeded")


def extend_experiment(
    s: Session,
    name: str,
    namespace: str | None = None,
    *,
    more_trials: int | None = None,
    more_seconds: int | None = None,
    more_resource_seconds: dict[str, float] | None = None,
    goal: float | None = None,
) -> Extension:
    """Raises an experiment's limits (see extension()): a Succeeded experiment that ended at a limit
    then goes on with the same search, new trials numbered after its last."""
    obj = get_experiment_object(s, name, namespace)
    ns = obj["metadata"]["namespace"]
    trials: list[dict] = []
    if more_resource_seconds:
        trials = [t for t in list_objects(s, "trials", ns) if (t.get("spec") or {}).get("experimentName") == name]
    patch, result = extension(
        obj,
        trials,
        more_trials=more_trials,
        more_seconds=more_seconds,
        more_resource_seconds=more_resource_seconds,
        goal=goal,
    )
    try:
        s.patch("experiments", ns, name, patch)
    except ApiException as e:
        if e.status == 409:
            raise translate(e).__class__(f"experiment {name} changed while it was being extended: try again") from None
        raise translate(e, kind="experiment", name=name, namespace=ns) from None
    return result

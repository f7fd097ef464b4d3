"""What an experiment says when no round can decide for it: a spec that is invalid (what the CRD's
schema cannot check: validate_spec; the one rule for every invalid spec: plan_invalid_spec), and a
watch the API server refuses the operator (plan_watch_forbidden, then watched_again once it is
allowed). Plans of their own, made from the status alone (no trials are read), which the operator's
loop also uses for the specs that cannot reach plan().

Imports population.py (pbt's placeholders and rules); experiment.reject_spec() applies
plan_invalid_spec() within a round."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from hpo_operator.api.spec import PLACEHOLDER_PATTERN, ExperimentSpec
from hpo_operator.api.status import ExperimentStatus, Spent
from hpo_operator.api.vocabulary import WATCH_FORBIDDEN, WATCHED, WORKLOADS_WATCHED, ExperimentPhase
from hpo_operator.core import spend, times
from hpo_operator.core.conditions import get_condition, set_condition

from . import population
from .state import Event, Plan


def validate_spec(spec: ExperimentSpec) -> list[str]:
    """What the CRD's schema cannot check; each error is a sentence for a condition message."""
    errors = []
    names = {p.name for p in spec.parameters}
    for kind, key in re.findall(PLACEHOLDER_PATTERN, repr(spec.trial_template.source())):
        if kind == "params" and key not in names:
            errors.append(f"the trial template uses ${{params.{key}}}, which is not a declared parameter")
        known: tuple[str, ...] = ("name", "attempt")
        if spec.trial_template.checkpoint:
            known += ("checkpointDir",)
        if population.is_pbt(spec):
            known += ("member", "generation", "endStep")
        if kind == "trial" and key not in known:
            errors.append(f"unknown placeholder ${{trial.{key}}} (use {' or '.join('trial.' + k for k in known)})")
        if kind == "experiment" and key != "name":
            errors.append(f"unknown placeholder ${{experiment.{key}}} (use experiment.name)")
    containers = [c.get("name") for c in spec.trial_template.containers() or []]
    primary = spec.trial_template.primary_container_name
    if primary and spec.trial_template.containers() is not None and primary not in containers:
        errors.append(
            f"primaryContainerName {primary} is not a container of the template ({', '.join(map(str, containers))})"
        )
    errors += population.validate(spec)
    return sorted(set(errors))


def plan_invalid_spec(
    status: ExperimentStatus | Mapping[str, Any], generation: int | None, message: str, now: datetime
) -> Plan:
    """What an invalid spec changes: the experiment is Failed, its condition Failed says InvalidSpec
    and why (`message`), and a Warning Event InvalidSpec says it once per finding. Nothing runs.

    The one rule for every invalid spec: reject_spec() applies it to what validate_spec() finds,
    and the operator's loop to the specs that cannot reach plan(): one that does not parse, and one
    whose search space the search algorithm refuses. For those the Plan is all there is: the
    status read with only its phase and that condition changed (no trials were read to count)."""
    old = status if isinstance(status, ExperimentStatus) else ExperimentStatus.model_validate(status)
    failed = get_condition(old.conditions, "Failed")
    new = old.model_copy(
        update=dict(
            phase=ExperimentPhase.failed,
            conditions=set_condition(old.conditions, "Failed", True, "InvalidSpec", message, now, generation),
            spent=running_time_until(old, now),
        )
    )
    events = (
        [] if failed is not None and failed.message == message else [Event(None, "Warning", "InvalidSpec", message)]
    )
    return Plan(experiment_status=new, events=events)


def running_time_until(status: ExperimentStatus, now: datetime) -> Spent | None:
    """status.spent with the running time counted up to now, for a change of phase made without the
    trials (an invalid spec): the time after it is then counted in the new phase (core/spend.py)."""
    old = status.spent
    if old is None:
        return None
    duration = spend.duration(old.duration_seconds, old.time, status.phase, now)
    return old.model_copy(update=dict(duration_seconds=round(duration, 3), time=times.micro(now)))


def plan_watch_forbidden(
    status: ExperimentStatus | Mapping[str, Any], generation: int | None, message: str, now: datetime
) -> Plan:
    """What an experiment says while the API server refuses the operator a watch it needs
    (`message`: which, where, and what to grant): the condition WorkloadsWatched False with reason
    WatchForbidden, and a Warning Event WatchForbidden once per refusal. Nothing else changes: its
    trials cannot be seen, so no round runs; a new experiment's phase is Created meanwhile."""
    old = status if isinstance(status, ExperimentStatus) else ExperimentStatus.model_validate(status)
    watched = get_condition(old.conditions, WORKLOADS_WATCHED)
    conditions = set_condition(old.conditions, WORKLOADS_WATCHED, False, WATCH_FORBIDDEN, message, now, generation)
    new = old.model_copy(update=dict(phase=old.phase or ExperimentPhase.created, conditions=conditions))
    said = watched is not None and watched.status == "False" and watched.message == message
    return Plan(experiment_status=new, events=[] if said else [Event(None, "Warning", WATCH_FORBIDDEN, message)])


def watched_again(status: Mapping[str, Any], generation: int | None, now: datetime) -> Mapping[str, Any]:
    """The status a round starts from once every watch it needs has listed: WorkloadsWatched True
    again if a refusal had set it False (else the status as it is, the same object)."""
    conditions = status.get("conditions") or []
    if not any(c.get("type") == WORKLOADS_WATCHED and c.get("status") == "False" for c in conditions):
        return status
    old = ExperimentStatus.model_validate(status)
    conditions = set_condition(
        old.conditions, WORKLOADS_WATCHED, True, WATCHED, "every watch the experiment needs is allowed", now, generation
    )
    return {**status, "conditions": [c.dump() for c in conditions]}

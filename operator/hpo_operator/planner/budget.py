"""Budgets: what the experiment has spent in running time and compute (core/spend.py derives both
from the Experiment's status and its Trials), whether a limit of spec.budget is reached, when the
next one will be at the current pace, and the status's `spent`.

Steps over one RoundState (state.py), which is all they import of the planner; experiment.py's
advance() and reopen() decide by them, and finish_status() records them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from hpo_operator.api.status import ExperimentStatus, ResourceSpent, Spent
from hpo_operator.api.vocabulary import EndReason, ExperimentPhase
from hpo_operator.core import spend, times

from .state import RoundState


@dataclass
class Spending:
    """The experiment's spending at the round's time."""

    duration: float  # running time, seconds
    resources: dict[str, float]  # resource-seconds per resource
    rate: dict[str, float]  # what the running trials request, per resource: resource-seconds per second


class Budget:
    """The round's spending and the spec's limits."""

    def __init__(self, state: RoundState):
        self.state = state
        self.limits = state.spec.budget

    @cached_property
    def spending(self) -> Spending:
        state = self.state
        old = state.exp_status.spent
        duration = spend.duration(
            old.duration_seconds if old else None, old.time if old else None, state.exp_status.phase, state.now
        )
        changed, uid = state.status, state.exp.uid  # (state.current(t), inlined: a loop over every trial)
        resources, rate = spend.compute(
            (
                spend.Run(
                    state.phase(t),
                    st.start_time,
                    st.run_seconds,
                    st.completion_time,
                    st.requests or {},
                )
                for t in state.trials + state.new_trials
                if uid in t.controllers and (st := changed.get(t.name) or t.typed_status).requests
            ),
            state.now,
        )
        return Spending(duration, resources, rate)

    def reached(self) -> tuple[EndReason, str] | None:
        """The limit reached first, with a sentence for the condition; None while none is."""
        limits = self.limits
        if limits is None:
            return None
        spent = self.spending
        cap = limits.max_duration_seconds
        if cap is not None and spent.duration >= cap:
            return (
                EndReason.max_duration_reached,
                f"it ran {spend.hours(spent.duration)} (maxDurationSeconds {cap}, suspended time not counted)",
            )
        for resource, limit in sorted((limits.max_resource_seconds or {}).items()):
            used = spent.resources.get(resource, 0.0)
            if used >= limit:
                return (
                    EndReason.compute_budget_reached,
                    f"its trials spent {used:.0f} {resource}-seconds (maxResourceSeconds {limit:g})",
                )
        return None

    def seconds_left(self) -> float | None:
        """How long until a limit is reached at the current pace (the running trials' requests);
        None when nothing spends toward one."""
        limits = self.limits
        if limits is None:
            return None
        spent = self.spending
        left: list[float] = []
        if limits.max_duration_seconds is not None and self.state.exp_status.phase in (
            None,
            ExperimentPhase.created,
            ExperimentPhase.running,
        ):
            left.append(limits.max_duration_seconds - spent.duration)
        for resource, limit in (limits.max_resource_seconds or {}).items():
            rate = spent.rate.get(resource, 0.0)
            if rate > 0:
                left.append((limit - spent.resources.get(resource, 0.0)) / rate)
        return min(left) if left else None


def record(state: RoundState, status: ExperimentStatus, budget: Budget) -> None:
    """status.spent: written anew with any other change of the status (a change of phase among them,
    which is what keeps the running time exact: core/spend.py), and on its own at most every
    spend.REFRESH_SECONDS while its values change (trials run). The running time is counted in the
    phase read, up to this round; the round's new phase counts from here on."""
    old = state.exp_status.spent
    spent = budget.spending
    resources = [ResourceSpent(resource=k, seconds=round(v, 3)) for k, v in sorted(spent.resources.items())]
    fresh = Spent(
        duration_seconds=round(spent.duration, 3),
        resources=resources or None,
        time=times.micro(state.now),
        summary=spend.summary(spent.resources) or None,
    )
    if old is None:
        status.spent = fresh
        return
    same_values = old.duration_seconds == fresh.duration_seconds and old.resources == fresh.resources
    others_changed = status.model_copy(update={"spent": old}) != state.exp_status
    due = (state.now - (times.parse_or_none(old.time) or state.now)).total_seconds() >= spend.REFRESH_SECONDS
    if others_changed or (due and not same_values):
        status.spent = fresh
    else:
        status.spent = old

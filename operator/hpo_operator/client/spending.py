"""What an experiment has spent (describe's and the dashboard's "spent"): its running time and,
per resource its trials request, resource-seconds, with the budget's limits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from hpo_operator.core import spend, times

from .dictable import Dictable


@dataclass
class ResourceSpending(Dictable):
    resource: str
    seconds: float  # resource-seconds the trials spent
    limit: float | None  # spec.budget.maxResourceSeconds, if it limits this resource


@dataclass
class Spending(Dictable):
    """What an experiment has spent, worked out now from its status and Trials as the operator does
    (core/spend.py): its running time and, per resource its trials request, resource-seconds."""

    duration_seconds: float
    max_duration_seconds: int | None
    resources: list[ResourceSpending]
    running_trials: str | None  # spec.budget.runningTrials, with a budget


def spending(obj: dict, trials: list[dict], now: datetime | None = None) -> Spending:
    """What the experiment has spent by `now` (default: now), from its status and its Trials."""
    now = now or times.now()
    status = obj.get("status") or {}
    recorded = status.get("spent") or {}
    budget = (obj.get("spec") or {}).get("budget") or {}
    limits = budget.get("maxResourceSeconds") or {}
    used, _ = spend.compute((spend.Run.of(t.get("status")) for t in trials), now)
    names = sorted({*used, *limits})
    return Spending(
        duration_seconds=round(
            spend.duration(recorded.get("durationSeconds"), recorded.get("time"), status.get("phase"), now), 3
        ),
        max_duration_seconds=budget.get("maxDurationSeconds"),
        resources=[ResourceSpending(r, round(used.get(r, 0.0), 3), limits.get(r)) for r in names],
        running_trials=(budget.get("runningTrials") or "Stop") if budget else None,
    )


def spending_lines(spent: Spending) -> list[str]:
    """What describe and the dashboard print: the running time, then each resource, with limits."""
    limit = spent.max_duration_seconds
    lines = [
        f"running time {spend.hours(spent.duration_seconds)}"
        + (f" of {spend.hours(limit)}" if limit else "")
        + " (suspended time not counted)"
    ]
    for r in spent.resources:
        line = f"{r.resource} {spend.resource_amount(r.resource, r.seconds)} ({r.seconds:,.0f} resource-seconds"
        line += f" of {r.limit:,.0f})" if r.limit is not None else ")"
        lines.append(line)
    return lines

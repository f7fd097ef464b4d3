"""`kubectl hpo describe`'s view of an experiment (and the dashboard's experiment header): its
summary, the spec in short, conditions, status history, best trial, trials, and what was spent."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hpo_operator.api.parameters import parameters_of
from hpo_operator.core import times

from .dictable import Dictable
from .spending import Spending, spending
from .views import ExperimentSummary, TrialSummary, experiment_summary, objective_text, trial_summary


@dataclass
class PhaseChange(Dictable):
    phase: str
    reason: str | None
    time: datetime | None


@dataclass
class ConditionView(Dictable):
    type: str
    status: str
    reason: str | None
    message: str | None
    last_transition_time: datetime | None


@dataclass
class ExperimentDetail(Dictable):
    """describe: the summary, the spec in short, conditions, status history, best trial, trials,
    and what was spent."""

    summary: ExperimentSummary
    spec: dict[str, Any]
    conditions: list[ConditionView]
    status_history: list[PhaseChange]
    best: dict[str, Any] | None
    trials: list[TrialSummary] = field(default_factory=list)
    spent: Spending | None = None


def constraint_texts(objective: dict) -> list[str]:
    """Each constraint as "memory_gb <= 16", "1 <= latency_ms <= 50"."""
    out = []
    for c in objective.get("constraints") or []:
        low, high, name = c.get("min"), c.get("max"), c.get("metricName", "")
        if low is not None and high is not None:
            out.append(f"{low:g} <= {name} <= {high:g}")
        elif high is not None:
            out.append(f"{name} <= {high:g}")
        elif low is not None:
            out.append(f"{name} >= {low:g}")
    return out


def spec_summary(spec: dict) -> dict[str, Any]:
    """The spec in the words describe prints."""
    objective = spec.get("objective") or {}
    algorithm = spec.get("algorithm") or {}
    retry = spec.get("retryPolicy") or {}
    params = []
    for p in spec.get("parameters") or []:
        if p.get("type") in ("int", "double"):
            extra = [f"step {p['step']:g}"] if p.get("step") else []
            extra += ["log"] if p.get("log") else []
            text = f"{p.get('type')} [{p.get('min'):g}, {p.get('max'):g}]" + (f" ({', '.join(extra)})" if extra else "")
        else:
            text = f"{p.get('type')} {{{', '.join(p.get('values') or [])}}}"
        params.append({"name": p.get("name"), "range": text})
    goal = objective.get("goal")
    result = {
        "objective": (objective_text(objective) or "") + (f" (goal {goal:g})" if goal is not None else ""),
        "constraints": constraint_texts(objective),
        "additionalMetrics": list(objective.get("additionalMetricNames") or []),
        "algorithm": algorithm.get("name") or "random",
        "seed": algorithm.get("seed"),
        "parameters": params,
        "maxTrialCount": spec.get("maxTrialCount"),
        "parallelTrialCount": spec.get("parallelTrialCount", 1),
        "maxFailedTrialCount": spec.get("maxFailedTrialCount"),
        "retryPolicy": {
            "maxRetries": retry.get("maxRetries", 2),
            "retryOn": retry.get("retryOn", ["Infrastructure", "OOMKilled"]),
        },
        "maxTrialDurationSeconds": spec.get("maxTrialDurationSeconds"),
        "suspend": bool(spec.get("suspend")),
        "warmStartFrom": spec.get("warmStartFrom"),
        "earlyStopping": (spec.get("earlyStopping") or {}).get("algorithm"),
        "budget": spec.get("budget") or None,
    }
    return {k: v for k, v in result.items() if v not in (None, [])}


def experiment_detail(obj: dict, trials: list[dict], now: datetime | None = None) -> ExperimentDetail:
    status = obj.get("status") or {}
    conditions = [
        ConditionView(
            c.get("type", ""),
            c.get("status", ""),
            c.get("reason"),
            c.get("message") or None,
            times.parse_or_none(c.get("lastTransitionTime")),
        )
        for c in status.get("conditions") or []
    ]
    history = [
        PhaseChange(h.get("phase", ""), h.get("reason"), times.parse_or_none(h.get("time")))
        for h in status.get("statusHistory") or []
    ]
    best = status.get("currentOptimalTrial")
    if best:
        best = {
            "trialName": best.get("trialName"),
            "objectiveValue": best.get("objectiveValue"),
            "parameters": {k: str(v) for k, v in parameters_of(best.get("parameters")).items()},
            "metrics": parameters_of(best.get("metrics")),
        }
    return ExperimentDetail(
        summary=experiment_summary(obj),
        spec=spec_summary(obj.get("spec") or {}),
        conditions=conditions,
        status_history=history,
        best=best or None,
        trials=[trial_summary(t) for t in trials],
        spent=spending(obj, trials, now),
    )

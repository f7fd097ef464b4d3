"""What the client returns: dataclasses built from Experiment and Trial objects (pure functions);
describe's view of an experiment, its Pareto front and what it spent have their own modules
(describe.py, pareto.py, spending.py).

`to_dict()` (dictable.py) gives each in the camelCase shape `-o json|yaml` prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hpo_operator.api.parameters import parameters_of
from hpo_operator.api.vocabulary import A_CREATOR, A_ORIGINAL, L_BOOKMARKED, L_CONFIG, L_LAUNCH
from hpo_operator.core import times

from .dictable import Dictable

# Labels every trial carries that say nothing about it in particular.
BORING_LABELS = ("app.kubernetes.io/managed-by", "app.kubernetes.io/part-of")

__all__ = [
    "ExperimentSummary",
    "TrialSummary",
    "MetricPoint",
    "RestartResult",
    "experiment_summary",
    "trial_row",
    "trial_summary",
    "metric_points",
    "objective_text",
]


@dataclass
class ExperimentSummary(Dictable):
    """One row of ListHpoExperiments."""

    name: str
    namespace: str
    phase: str
    reason: str | None
    creator: str | None
    created: datetime | None
    labels: dict[str, str]
    bookmarked: bool
    original: str | None
    suspend: bool
    warm_start_from: str | None
    max_trial_count: int | None
    parallel_trial_count: int | None
    configurations: int
    trials: int
    trial_status: dict[str, int]  # PAI's TrialStatus: trials per phase
    objective: str | None  # "minimize loss"
    best_trial: str | None
    best_value: float | None
    started: datetime | None
    completed: datetime | None
    pareto_front_size: int | None = None  # several objectives: trials on the front
    hypervolume: float | None = None


@dataclass
class MetricPoint(Dictable):
    trial: str
    name: str
    value: float
    step: int | None = None
    timestamp: datetime | None = None


@dataclass
class TrialSummary(Dictable):
    """One run of PAI's ListRuns."""

    name: str
    namespace: str
    experiment: str
    phase: str
    reason: str | None
    message: str | None
    attempt: int
    retry_of: str | None
    retried_by: str | None
    launch_reason: str | None
    config: str | None
    parameters: dict[str, str]
    objective_value: float | None
    metrics: dict[str, float]
    labels: dict[str, str]
    created: datetime | None
    started: datetime | None
    completed: datetime | None
    pod_name: str | None
    adopted: bool
    restart_condition: dict | None = None
    metric_history: list[MetricPoint] | None = None
    resumed_from: dict | None = None  # {trial, attempt, step}: a checkpoint it continued from
    objective_values: dict[str, float] | None = None  # several objectives: each one's value, by name
    feasible: bool | None = None  # with constraints: whether the trial met them
    segment: dict | None = None  # pbt: its member, generation and parent segment (spec.segment)


@dataclass
class RestartResult(Dictable):
    """RestartHpoTrials' answer for one trial (or one requested configuration)."""

    trial: str
    outcome: str  # Accepted, Refused, Pending (no answer yet), NotFound
    reason: str
    message: str
    decided_by: str  # client (refused before asking) or operator
    new_trial: str | None = None


def objective_text(objective: dict) -> str | None:
    """ "minimize loss", or "maximize val_acc, minimize latency_ms" for several objectives."""
    if objective.get("metrics"):
        return ", ".join(f"{m.get('type', '')} {m.get('metricName', '')}".strip() for m in objective["metrics"])
    return f"{objective.get('type', '')} {objective.get('metricName', '')}".strip() or None


def _meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def experiment_phase(obj: dict) -> str:
    return ((obj.get("status") or {}).get("phase")) or "Created"


def experiment_summary(obj: dict) -> ExperimentSummary:
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    labels = dict(meta.get("labels") or {})
    annotations = meta.get("annotations") or {}
    history = status.get("statusHistory") or []
    reason = history[-1].get("reason") if history else None
    if reason is None:
        for cond in status.get("conditions") or []:
            if cond.get("status") == "True" and cond.get("type") == status.get("phase"):
                reason = cond.get("reason")
    counts = {
        "Pending": status.get("trialsPending") or 0,
        "Queued": status.get("trialsQueued") or 0,
        "Running": status.get("trialsRunning") or 0,
        "Succeeded": status.get("trialsSucceeded") or 0,
        "Failed": status.get("trialsFailed") or 0,
        "Killed": status.get("trialsKilled") or 0,
        "EarlyStopped": status.get("trialsEarlyStopped") or 0,
        "Retried": status.get("trialsRetried") or 0,
    }
    objective = spec.get("objective") or {}
    best = status.get("currentOptimalTrial") or {}
    return ExperimentSummary(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        phase=experiment_phase(obj),
        reason=reason,
        creator=annotations.get(A_CREATOR),
        created=times.parse_or_none(meta.get("creationTimestamp")),
        labels=labels,
        bookmarked=labels.get(L_BOOKMARKED) == "true",
        original=annotations.get(A_ORIGINAL),
        suspend=bool(spec.get("suspend")),
        warm_start_from=spec.get("warmStartFrom"),
        max_trial_count=spec.get("maxTrialCount"),
        parallel_trial_count=spec.get("parallelTrialCount"),
        configurations=status.get("configurations") or 0,
        trials=status.get("trials") or 0,
        trial_status=counts,
        objective=objective_text(objective),
        best_trial=best.get("trialName"),
        best_value=best.get("objectiveValue"),
        started=times.parse_or_none(status.get("startTime")),
        completed=times.parse_or_none(status.get("completionTime")),
        pareto_front_size=status.get("paretoFrontSize"),
        hypervolume=status.get("hypervolume"),
    )


def metric_points(trial: dict) -> list[MetricPoint]:
    """A trial's metric history (values with a step) and its final values, oldest first."""
    name = _meta(trial).get("name", "")
    status = trial.get("status") or {}
    points = [
        MetricPoint(name, m["name"], m["value"], m.get("step"), times.parse_or_none(m.get("timestamp")))
        for m in status.get("metricHistory") or []
        if "name" in m and "value" in m
    ]
    seen = {(p.name, p.step, p.value) for p in points}
    for m in status.get("metrics") or []:
        if "name" in m and "value" in m and (m["name"], m.get("step"), m["value"]) not in seen:
            points.append(
                MetricPoint(name, m["name"], m["value"], m.get("step"), times.parse_or_none(m.get("timestamp")))
            )
    return points


def trial_row(obj: dict) -> dict[str, Any]:
    """A Trial read once, for every view of it: the dashboard's trials table serves this row as it
    is (JSON, times as the API server wrote them) and trial_summary() builds the plugin's
    TrialSummary on it. Besides what a TrialSummary shows, what the recovery view shows: failure
    class, exit code, the objectives' values in the experiment's order, and how many values the
    metric history holds."""
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    labels = meta.get("labels") or {}
    return {
        "name": meta.get("name", ""),
        "phase": status.get("phase") or "Pending",
        "reason": status.get("reason"),
        "failureClass": status.get("failureClass"),
        "message": status.get("message") or None,
        "exitCode": status.get("exitCode"),
        "objective": status.get("objectiveValue"),
        "objectiveValues": status.get("objectiveValues"),
        "feasible": status.get("feasible"),
        "attempt": int(spec.get("attempt") or 1),
        "launchReason": labels.get(L_LAUNCH),
        "config": labels.get(L_CONFIG),
        "retryOf": spec.get("retryOf"),
        "retriedBy": status.get("retriedBy"),
        "params": {k: str(v) for k, v in parameters_of(spec.get("parameters")).items()},
        "metrics": parameters_of(status.get("metrics")),
        "steps": len(status.get("metricHistory") or []),
        "created": meta.get("creationTimestamp"),
        "started": status.get("startTime"),
        "completed": status.get("completionTime"),
        "adopted": any(
            o.get("kind") == "Experiment" and o.get("controller") for o in meta.get("ownerReferences") or []
        ),
    }


def trial_summary(obj: dict, history: bool = False) -> TrialSummary:
    """The plugin's view of a Trial: its trial_row(), times parsed, with what only the plugin shows."""
    row = trial_row(obj)
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    labels = dict(meta.get("labels") or {})
    restart = next((c for c in status.get("conditions") or [] if c.get("type") == "RestartAccepted"), None)
    return TrialSummary(
        name=row["name"],
        namespace=meta.get("namespace", ""),
        experiment=spec.get("experimentName", ""),
        phase=row["phase"],
        reason=row["reason"],
        message=row["message"],
        attempt=row["attempt"],
        retry_of=row["retryOf"],
        retried_by=row["retriedBy"],
        launch_reason=row["launchReason"],
        config=row["config"],
        parameters=row["params"],
        objective_value=row["objective"],
        metrics=row["metrics"],
        labels={k: v for k, v in labels.items() if k not in BORING_LABELS},
        created=times.parse_or_none(row["created"]),
        started=times.parse_or_none(row["started"]),
        completed=times.parse_or_none(row["completed"]),
        pod_name=status.get("podName"),
        adopted=row["adopted"],
        restart_condition=dict(restart) if restart else None,
        metric_history=metric_points(obj) if history else None,
        resumed_from=dict(status["resumedFrom"]) if status.get("resumedFrom") else None,
        objective_values=_objective_values(obj),
        feasible=row["feasible"],
        segment=dict(spec["segment"]) if isinstance(spec.get("segment"), dict) else None,
    )


def _objective_values(trial: dict) -> dict[str, float] | None:
    """Several objectives' values by name: the trial's objectiveValues, named from its metrics (the
    trial does not carry its experiment's spec; the summary names them in the same order)."""
    status = trial.get("status") or {}
    values = status.get("objectiveValues")
    if not values:
        return None
    names = [pair.split("=", 1)[0] for pair in (status.get("objectiveSummary") or "").split(", ") if "=" in pair]
    if len(names) != len(values):
        names = [f"objective{i + 1}" for i in range(len(values))]
    return dict(zip(names, values, strict=True))


def format_params(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def format_number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_when(value: datetime | None) -> str:
    return times.display(value)

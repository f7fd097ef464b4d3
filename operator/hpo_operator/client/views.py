"""What the client returns: dataclasses built from Experiment and Trial objects (pure functions).

`to_dict()` gives each in the camelCase shape `-o json|yaml` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hpo_operator.api.vocabulary import A_CREATOR, A_ORIGINAL, L_BOOKMARKED, L_CONFIG, L_LAUNCH
from hpo_operator.core import spend, times

# Labels every trial carries that say nothing about it in particular.
BORING_LABELS = ("app.kubernetes.io/managed-by", "app.kubernetes.io/part-of")

__all__ = [
    "ExperimentSummary",
    "ExperimentDetail",
    "TrialSummary",
    "MetricPoint",
    "RestartResult",
    "experiment_summary",
    "experiment_detail",
    "trial_summary",
    "metric_points",
    "ParetoFront",
    "ParetoPoint",
    "objective_text",
    "pareto_front_view",
]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


def _dict(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return times.iso(obj) if obj else None
    if hasattr(obj, "__dataclass_fields__"):
        return {_camel(k): _dict(getattr(obj, k)) for k in obj.__dataclass_fields__}
    if isinstance(obj, dict):
        return {k: _dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_dict(v) for v in obj]
    return obj


class _Dictable:
    def to_dict(self) -> dict:
        return _dict(self)


@dataclass
class ExperimentSummary(_Dictable):
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
class MetricPoint(_Dictable):
    trial: str
    name: str
    value: float
    step: int | None = None
    timestamp: datetime | None = None


@dataclass
class TrialSummary(_Dictable):
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
class PhaseChange(_Dictable):
    phase: str
    reason: str | None
    time: datetime | None


@dataclass
class ConditionView(_Dictable):
    type: str
    status: str
    reason: str | None
    message: str | None
    last_transition_time: datetime | None


@dataclass
class ResourceSpending(_Dictable):
    resource: str
    seconds: float  # resource-seconds the trials spent
    limit: float | None  # spec.budget.maxResourceSeconds, if it limits this resource


@dataclass
class Spending(_Dictable):
    """What an experiment has spent, worked out now from its status and Trials as the operator does
    (core/spend.py): its running time and, per resource its trials request, resource-seconds."""

    duration_seconds: float
    max_duration_seconds: int | None
    resources: list[ResourceSpending]
    running_trials: str | None  # spec.budget.runningTrials, with a budget


@dataclass
class ExperimentDetail(_Dictable):
    """describe: the summary, the spec in short, conditions, status history, best trial, trials,
    and what was spent."""

    summary: ExperimentSummary
    spec: dict[str, Any]
    conditions: list[ConditionView]
    status_history: list[PhaseChange]
    best: dict[str, Any] | None
    trials: list[TrialSummary] = field(default_factory=list)
    spent: Spending | None = None


@dataclass
class RestartResult(_Dictable):
    """RestartHpoTrials' answer for one trial (or one requested configuration)."""

    trial: str
    outcome: str  # Accepted, Refused, Pending (no answer yet), NotFound
    reason: str
    message: str
    decided_by: str  # client (refused before asking) or operator
    new_trial: str | None = None


@dataclass
class ParetoPoint(_Dictable):
    trial: str
    values: dict[str, float]  # by objective, in the spec's order
    parameters: dict[str, str]


@dataclass
class ParetoFront(_Dictable):
    """An experiment's Pareto front: the feasible succeeded trials no other beats in every
    objective, best first by the first objective."""

    experiment: str
    namespace: str
    objectives: list[dict[str, Any]]  # {metricName, type, referenceValue?} as the spec gives them
    size: int  # the whole front's
    hypervolume: float | None
    trials: list[ParetoPoint]  # the status's (its first 100) or, computed from the Trials, all

    @property
    def truncated(self) -> bool:
        return len(self.trials) < self.size


def objective_text(objective: dict) -> str | None:
    """ "minimize loss", or "maximize val_acc, minimize latency_ms" for several objectives."""
    if objective.get("metrics"):
        return ", ".join(f"{m.get('type', '')} {m.get('metricName', '')}".strip() for m in objective["metrics"])
    return f"{objective.get('type', '')} {objective.get('metricName', '')}".strip() or None


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


def pareto_front_view(obj: dict, trials: list[dict] | None = None) -> ParetoFront:
    """The front as the Experiment's status holds it; with `trials` (the experiment's Trial
    objects), computed whole from them by the operator's own rule."""
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    objectives = list((spec.get("objective") or {}).get("metrics") or [])
    names = [m.get("metricName", "") for m in objectives]
    if trials is None:
        entries = [
            (p.get("trialName", ""), p.get("values") or [], _values(p.get("parameters")))
            for p in status.get("paretoFront") or []
        ]
        size = status.get("paretoFrontSize") or 0
    else:
        from hpo_operator.core.pareto import front

        bodies = {
            _meta(t).get("name", ""): t
            for t in sorted(trials, key=lambda t: _meta(t).get("name", ""))
            if (t.get("status") or {}).get("phase") == "Succeeded"
            and len((t.get("status") or {}).get("objectiveValues") or []) == len(names)
            and (t.get("status") or {}).get("feasible") is not False
        }
        points = {n: t["status"]["objectiveValues"] for n, t in bodies.items()}
        on_front = front(points, [m.get("type", "minimize") for m in objectives])
        entries = [(n, points[n], _values((bodies[n].get("spec") or {}).get("parameters"))) for n in on_front]
        size = len(on_front)
    return ParetoFront(
        experiment=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        objectives=objectives,
        size=size,
        hypervolume=status.get("hypervolume"),
        trials=[
            ParetoPoint(name, dict(zip(names, values, strict=False)), {k: str(v) for k, v in params.items()})
            for name, values, params in entries
        ],
    )


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


def _values(items: list[dict] | None) -> dict[str, Any]:
    return {p.get("name"): p.get("value") for p in items or []}


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


def trial_summary(obj: dict, history: bool = False) -> TrialSummary:
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    labels = dict(meta.get("labels") or {})
    owners = meta.get("ownerReferences") or []
    restart = next((c for c in status.get("conditions") or [] if c.get("type") == "RestartAccepted"), None)
    return TrialSummary(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        experiment=spec.get("experimentName", ""),
        phase=status.get("phase") or "Pending",
        reason=status.get("reason"),
        message=status.get("message") or None,
        attempt=int(spec.get("attempt") or 1),
        retry_of=spec.get("retryOf"),
        retried_by=status.get("retriedBy"),
        launch_reason=labels.get(L_LAUNCH),
        config=labels.get(L_CONFIG),
        parameters={k: str(v) for k, v in _values(spec.get("parameters")).items()},
        objective_value=status.get("objectiveValue"),
        metrics=_values(status.get("metrics")),
        labels={k: v for k, v in labels.items() if k not in BORING_LABELS},
        created=times.parse_or_none(meta.get("creationTimestamp")),
        started=times.parse_or_none(status.get("startTime")),
        completed=times.parse_or_none(status.get("completionTime")),
        pod_name=status.get("podName"),
        adopted=any(o.get("kind") == "Experiment" and o.get("controller") for o in owners),
        restart_condition=dict(restart) if restart else None,
        metric_history=metric_points(obj) if history else None,
        resumed_from=dict(status["resumedFrom"]) if status.get("resumedFrom") else None,
        objective_values=_objective_values(obj),
        feasible=status.get("feasible"),
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
            "parameters": {k: str(v) for k, v in _values(best.get("parameters")).items()},
            "metrics": _values(best.get("metrics")),
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

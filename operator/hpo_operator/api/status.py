"""The status of an Experiment and of a Trial: what the operator writes, as pydantic models.

The operator reads them back from the cluster every round, so they are parsed with the same rules
as they are written; the CRDs' status schemas are generated from them (hpo_operator.api.crd).
"""

from __future__ import annotations

from pydantic import Field

from .base import Model, schema_extra
from .spec import MAX_OBJECTIVES, ExperimentSpec, ParameterAssignment, TrialSpec
from .vocabulary import ConditionStatus, ExperimentPhase, FailureClass, TrialPhase


class Condition(Model):
    type: str = Field(max_length=316)
    status: ConditionStatus
    reason: str = Field(max_length=1024)
    message: str = Field("", max_length=32768)
    last_transition_time: str = Field(json_schema_extra={"format": "date-time"})
    observed_generation: int | None = Field(None, ge=0)


_CONDITIONS = schema_extra(list_type="map", list_map_keys=["type"])


class Metric(Model):
    name: str = Field(max_length=63)
    value: float
    step: int | None = Field(None, ge=0)
    timestamp: str | None = Field(None, json_schema_extra={"format": "date-time"})


class OptimalTrial(Model):
    trial_name: str
    objective_value: float
    parameters: list[ParameterAssignment] = Field(default_factory=list)
    metrics: list[Metric] = Field(default_factory=list)


class ParetoTrial(Model):
    trial_name: str
    values: list[float] = Field(
        max_length=MAX_OBJECTIVES, description="Its objectives' values, in spec.objective.metrics' order."
    )
    parameters: list[ParameterAssignment] = Field(default_factory=list)


# The front in the status is bounded, so that an experiment of 10,000 trials stays a small object.
PARETO_FRONT_LIMIT = 100


class PhaseChange(Model):
    phase: ExperimentPhase
    reason: str | None = None
    time: str = Field(json_schema_extra={"format": "date-time"})


STATUS_HISTORY_LIMIT = 50


class ResourceSpent(Model):
    resource: str = Field(max_length=253)
    seconds: float = Field(description="Resource-seconds: what the trials requested times how long they ran.")


class Spent(Model):
    """What the experiment has spent, as of `time` (core/spend.py says how each is derived)."""

    duration_seconds: float = Field(
        0.0, description="Running time: the time the phase was Running (suspended and finished time do not count)."
    )
    resources: list[ResourceSpent] | None = Field(
        None,
        max_length=64,
        description="Per resource the trials request, its resource-seconds (retries and restarts included).",
        json_schema_extra=schema_extra(list_type="map", list_map_keys=["resource"]),
    )
    time: str = Field(json_schema_extra={"format": "date-time"})
    summary: str | None = Field(None, description="The compute spent in one line, for kubectl get -o wide.")


class ExperimentStatus(Model):
    phase: ExperimentPhase | None = Field(None, description="Created, Running, Suspended, Succeeded or Failed.")
    status_history: list[PhaseChange] | None = Field(
        None,
        max_length=STATUS_HISTORY_LIMIT,
        description=(
            f"The phases the experiment went through, with their reasons and times (the latest {STATUS_HISTORY_LIMIT})."
        ),
    )
    conditions: list[Condition] | None = Field(None, json_schema_extra=_CONDITIONS)
    observed_generation: int | None = None
    start_time: str | None = Field(None, json_schema_extra={"format": "date-time"})
    completion_time: str | None = Field(None, json_schema_extra={"format": "date-time"})
    suggestion_count: int | None = Field(None, description="Configurations suggested so far.")
    configurations: int | None = Field(
        None, description=("Configurations launched so far (counts against maxTrialCount).")
    )
    failed_configurations: int | None = Field(
        None, description=("Configurations that failed with no retry left (counts against maxFailedTrialCount).")
    )
    trials: int | None = Field(None, description="Trials, retries included.")
    trials_pending: int | None = None
    trials_queued: int | None = Field(
        None, description="Trials whose workloads wait for admission by their queue (trialTemplate.queueName)."
    )
    trials_running: int | None = None
    trials_succeeded: int | None = None
    trials_failed: int | None = None
    trials_killed: int | None = None
    trials_early_stopped: int | None = None
    trials_retried: int | None = Field(None, description="Trials that were retries of a failed trial.")
    current_optimal_trial: OptimalTrial | None = Field(
        None,
        description=(
            "One objective: the best feasible succeeded trial. Unset with several objectives (see paretoFront)."
        ),
    )
    pareto_front: list[ParetoTrial] | None = Field(
        None,
        max_length=PARETO_FRONT_LIMIT,
        description=(
            "Several objectives: the Pareto front, the feasible succeeded trials no other beats in every "
            f"objective; the first {PARETO_FRONT_LIMIT}, best first by the first objective (then by name)."
        ),
    )
    pareto_front_size: int | None = Field(None, description="Several objectives: how many trials the front has.")
    hypervolume: float | None = Field(
        None,
        description=(
            "Several objectives with a referenceValue each: the volume of objective space the whole "
            "front dominates, up to the reference point (larger is better)."
        ),
    )
    spent: Spent | None = Field(
        None,
        description=(
            "Running time and compute spent so far (spec.budget limits them): written with the "
            "status's other changes, and at least every minute while trials run."
        ),
    )


METRIC_HISTORY_LIMIT = 200


class ResumedFrom(Model):
    """Where a resumed attempt continued: the program reported the metric resumed_step."""

    trial: str | None = Field(
        None, description="The attempt whose checkpoint it found (with pbt: its parent segment's Trial)."
    )
    attempt: int = Field(ge=1)
    step: int = Field(description="The step it resumed from.")


class TrialStatus(Model):
    phase: TrialPhase | None = None
    reason: str | None = None
    message: str | None = Field(None, max_length=32768)
    failure_class: FailureClass | None = None
    conditions: list[Condition] | None = Field(None, json_schema_extra=_CONDITIONS)
    pod_name: str | None = None
    start_time: str | None = Field(None, json_schema_extra={"format": "date-time"})
    completion_time: str | None = Field(None, json_schema_extra={"format": "date-time"})
    exit_code: int | None = None
    objective_value: float | None = Field(None, description="One objective: the trial's value.")
    objective_values: list[float] | None = Field(
        None,
        max_length=MAX_OBJECTIVES,
        description="Several objectives: the trial's values, in spec.objective.metrics' order.",
    )
    objective_summary: str | None = Field(
        None, description="Several objectives: name=value pairs of the objectives, for kubectl get."
    )
    feasible: bool | None = Field(
        None, description="With constraints: whether the succeeded trial's metrics meet every constraint."
    )
    metrics: list[Metric] | None = Field(None, max_length=64, description="The latest value of each metric.")
    metric_history: list[Metric] | None = Field(
        None,
        max_length=METRIC_HISTORY_LIMIT,
        description=("Values reported with a step (oldest dropped first), for early stopping and curves."),
    )
    parameter_summary: str | None = Field(None, description="name=value pairs, for kubectl get.")
    retried_by: str | None = Field(None, description="The trial that re-runs this one, if any.")
    requests: dict[str, float] | None = Field(
        None,
        description=(
            "What one run of this trial requests in all, per resource in its base unit (cpu in cores, "
            "memory in bytes): its pods' requests (else limits), recorded when its workload is started."
        ),
    )
    run_seconds: float | None = Field(
        None,
        description=(
            "How long its workload ran, from its start to its end (its container's finish, or when the "
            "operator stopped it); set when the trial finishes."
        ),
    )
    resumed_from: ResumedFrom | None = None
    observed_generation: int | None = None


# The objects' bodies, whose schemas are the CRDs' (hpo_operator.api.crd).
class ExperimentBody(Model):
    spec: ExperimentSpec
    status: ExperimentStatus | None = None


class TrialBody(Model):
    spec: TrialSpec
    status: TrialStatus | None = None

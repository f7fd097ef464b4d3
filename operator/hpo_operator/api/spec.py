# One piece: the spec models; most lines are the descriptions and CEL rules the CRDs are made from.
"""The spec of an Experiment and of a Trial: what users write, as pydantic models.

These models (with parameters.py, the search space; template.py, what a trial runs; status.py
and external.py) are the one source of truth for the API: the CRDs in crds/ are generated from
them (hpo_operator.api.crd), and the operator parses what it reads from the cluster with them.
Rules the API server can check (bounds, enums, CEL) live here as schema annotations, so a bad
manifest is refused by `kubectl apply` rather than discovered by the operator.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import ConfigDict, Field, field_validator, model_validator

from . import population
from .algorithms import settings_rule, settings_rule_message
from .base import Model, cel, schema_extra
from .parameters import METRIC_NAME_PATTERN, Parameter
from .regex import format_problem
from .template import TrialTemplate
from .vocabulary import (
    AlgorithmName,
    BudgetRunningTrials,
    EarlyStoppingAlgorithm,
    MetricsSource,
    ObjectiveType,
    RetryableFailureClass,
)

# A placeholder in the trial template: ${params.NAME}, ${trial.name}, ${trial.attempt},
# ${experiment.name}.
PLACEHOLDER_PATTERN = r"\$\{(params|trial|experiment)\.([A-Za-z0-9_]+)\}"
# Object name limits (checked by root-level CEL rules in the CRDs). Trial and pod names are the
# experiment's name plus suffixes (-0042, -a2), and names are also label values (at most 63).
EXPERIMENT_NAME_MAX_LENGTH = 40
TRIAL_NAME_MAX_LENGTH = 56


# Several objectives: at least two (one is written with type and metricName), and at most as many
# as a front can usefully be searched and shown for.
MIN_OBJECTIVES = 2
MAX_OBJECTIVES = 8
MAX_CONSTRAINTS = 16

# objective's fields but goal are immutable: each the same, or absent in both.
OBJECTIVE_UNCHANGED_BUT_GOAL = " && ".join(
    f"(has(self.objective.{f}) == has(oldSelf.objective.{f})) "
    f"&& (!has(self.objective.{f}) || self.objective.{f} == oldSelf.objective.{f})"
    for f in ("type", "metricName", "metrics", "constraints", "additionalMetricNames")
)


class ObjectiveMetric(Model):
    """One of several objectives: a metric and its direction."""

    metric_name: str = Field(
        pattern=METRIC_NAME_PATTERN, max_length=63, description="Name of a metric the trials report."
    )
    type: ObjectiveType = Field(description="Whether this metric is minimised or maximised.")
    reference_value: float | None = Field(
        None,
        description=(
            "This objective's coordinate of the reference point for status.hypervolume: a value worse "
            "than any trial worth counting (e.g. the largest acceptable latency). Give it for every "
            "objective or for none."
        ),
    )


class MetricConstraint(Model):
    """A bound on a reported metric. A trial outside it still succeeds, but is infeasible: it
    never enters the Pareto front or the best trial."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            validations=[
                cel("has(self.min) || has(self.max)", "a constraint needs min, max or both"),
                cel(
                    "!has(self.min) || !has(self.max) || self.min <= self.max",
                    "a constraint's min must not exceed its max",
                ),
            ]
        )
    )

    metric_name: str = Field(
        pattern=METRIC_NAME_PATTERN, max_length=63, description="Name of a metric the trials report."
    )
    min: float | None = Field(None, description="Feasible trials report at least this value.")
    max: float | None = Field(None, description="Feasible trials report at most this value.")


class Objective(Model):
    """What the experiment optimises: one metric (type and metricName), or several (metrics), whose
    best trade-offs, the Pareto front, the experiment searches. Optionally with constraints."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            validations=[
                cel(
                    "has(self.metrics) ? !has(self.type) && !has(self.metricName) "
                    ": has(self.type) && has(self.metricName)",
                    "give type and metricName (one objective) or metrics (several objectives), not both",
                ),
                cel(
                    "!has(self.additionalMetricNames) || !has(self.metricName) "
                    "|| !(self.metricName in self.additionalMetricNames)",
                    "additionalMetricNames must not repeat metricName",
                ),
                cel(
                    "!has(self.additionalMetricNames) || !has(self.metrics) "
                    "|| self.metrics.all(m, !(m.metricName in self.additionalMetricNames))",
                    "additionalMetricNames must not repeat an objective of metrics",
                ),
                cel(
                    "!has(self.constraints) || self.constraints.all(c, "
                    "(!has(self.metricName) || c.metricName != self.metricName) "
                    "&& (!has(self.metrics) || self.metrics.all(m, m.metricName != c.metricName)))",
                    "a metric cannot be both an objective and a constraint",
                ),
                cel(
                    "!has(self.constraints) || !has(self.additionalMetricNames) "
                    "|| self.constraints.all(c, !(c.metricName in self.additionalMetricNames))",
                    "additionalMetricNames must not repeat a constraint's metric (constraints are recorded anyway)",
                ),
                cel(
                    "!has(self.metrics) || !has(self.goal)",
                    "goal needs a single objective: a Pareto front has no single goal (use maxTrialCount)",
                ),
                cel(
                    "!has(self.metrics) || self.metrics.all(m, has(m.referenceValue)) "
                    "|| self.metrics.all(m, !has(m.referenceValue))",
                    "give referenceValue for every objective or for none: the hypervolume needs the whole "
                    "reference point",
                ),
            ]
        )
    )

    type: ObjectiveType | None = Field(
        None, description="One objective: whether its metric is minimised or maximised (with metricName)."
    )
    metric_name: str | None = Field(
        None,
        pattern=METRIC_NAME_PATTERN,
        max_length=63,
        description="One objective: the name of the metric the trials report (with type).",
    )
    goal: float | None = Field(
        None,
        description=(
            "One objective only: stop the experiment (reason GoalReached) once a (feasible) trial's "
            "objective reaches this value: at or below it when minimising, at or above it when maximising."
        ),
    )
    metrics: list[ObjectiveMetric] | None = Field(
        None,
        min_length=MIN_OBJECTIVES,
        max_length=MAX_OBJECTIVES,
        description=(
            "Several objectives, instead of type and metricName: the experiment searches their Pareto "
            "front (the trials no other trial beats in every objective), in status.paretoFront. "
            "Every objective is a metric each trial must report. Without goal and cmaes; earlyStopping takes asha only."
        ),
        json_schema_extra=schema_extra(list_type="map", list_map_keys=["metricName"]),
    )
    constraints: list[MetricConstraint] | None = Field(
        None,
        max_length=MAX_CONSTRAINTS,
        description=(
            "Bounds on other reported metrics (e.g. memory_gb at most 16). A trial outside them "
            "succeeds but is infeasible (status.feasible false): it never enters the Pareto front or "
            "the best trial, and the search algorithm learns to avoid it (tpe, nsga2, nsga3)."
        ),
        json_schema_extra=schema_extra(list_type="map", list_map_keys=["metricName"]),
    )
    additional_metric_names: list[Annotated[str, Field(max_length=63)]] | None = Field(
        None,
        max_length=16,
        description="Other metrics to record for every trial (shown in the trial's status).",
        json_schema_extra=schema_extra(list_type="set"),
    )

    @model_validator(mode="after")
    def _one_form(self) -> Objective:
        # The CRD refuses the same at apply; this keeps specs built in Python (tests, the client)
        # from reaching the operator half-made.
        if (self.metrics is None) == (self.type is None or self.metric_name is None):
            if self.metrics is None:
                raise ValueError("give type and metricName (one objective) or metrics (several objectives)")
            raise ValueError("give type and metricName (one objective) or metrics (several objectives), not both")
        return self

    @property
    def multi(self) -> bool:
        """Several objectives: a Pareto front, no best trial."""
        return self.metrics is not None

    @property
    def names(self) -> list[str]:
        """The objectives' metric names, in the spec's order."""
        if self.metrics is not None:
            return [m.metric_name for m in self.metrics]
        assert self.metric_name is not None  # _one_form
        return [self.metric_name]

    @property
    def directions(self) -> list[str]:
        """Each objective's direction (minimize or maximize), in the spec's order."""
        if self.metrics is not None:
            return [str(m.type) for m in self.metrics]
        return [str(self.type)]

    @property
    def reference_point(self) -> list[float] | None:
        """The hypervolume's reference point, when every objective has a referenceValue."""
        if self.metrics is None or any(m.reference_value is None for m in self.metrics):
            return None
        return [float(m.reference_value) for m in self.metrics if m.reference_value is not None]

    @property
    def required_names(self) -> list[str]:
        """The metrics a succeeded trial must report (else it fails as MetricsUnavailable): every
        objective, and every constraint's metric (a trial cannot be judged feasible without it)."""
        return [*self.names, *(c.metric_name for c in self.constraints or [])]

    @property
    def recorded_names(self) -> list[str]:
        """Every metric the trials' statuses keep: objectives, constraints, additional metrics."""
        return [
            *self.names,
            *(c.metric_name for c in self.constraints or []),
            *(self.additional_metric_names or []),
        ]


class AlgorithmSetting(Model):
    name: str = Field(max_length=63, description="Setting name, passed to the search algorithm.")
    value: str = Field(max_length=1024, description="Setting value, as a string.")


class Algorithm(Model):
    """The search algorithm that suggests configurations (Optuna, computed inside the operator)."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            validations=[
                # Generated from the settings models (hpo_operator.api.algorithms), which also parse the values.
                cel(settings_rule(), settings_rule_message()),
            ]
        )
    )

    name: AlgorithmName = Field(
        AlgorithmName.random,
        description=(
            "random: independent samples. grid: every combination of the parameters' values (double "
            "parameters need a step), in seeded order; the experiment ends when the grid is done. "
            "tpe: Tree-structured Parzen Estimator (settings: multivariate, constantLiar, "
            "nStartupTrials, ...). cmaes: CMA-ES (sigma0, popsize, ...; categoricals sampled at "
            "random). qmc: quasi-Monte Carlo (qmcType sobol or halton, scramble). nsga2, nsga3: "
            "genetic algorithms for several objectives (populationSize, mutationProb, crossoverProb, "
            "swappingProb; nsga3 also dividingParameter). gp: Bayesian optimisation with a Gaussian "
            "process (nStartupTrials, deterministicObjective; several objectives, constraints and "
            "parallel trials too), where the operator has PyTorch (its image's gp flavour). With "
            "several objectives: tpe, nsga2, nsga3, gp, random, grid, qmc. pbt: population-based "
            "training: populationSize members train in segments (one Trial each) of "
            "perturbationInterval steps; after each generation the worst truncationQuantile of them "
            "copy the checkpoint and hyperparameters of one of the best truncationQuantile and perturb "
            "them (each number times one of perturbationFactors, or resampled with "
            "resampleProbability); maxTrialCount is populationSize x generations. Needs "
            "trialTemplate.checkpoint and one objective."
        ),
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=2**31 - 1,
        description=("Seed for the algorithm: the same seed gives the same sequence of configurations."),
    )
    settings: list[AlgorithmSetting] | None = Field(
        None,
        max_length=32,
        description="Algorithm-specific settings.",
        json_schema_extra=schema_extra(list_type="map", list_map_keys=["name"]),
    )


class RetryPolicy(Model):
    """How failed trials are recovered.

    A failed trial is recreated with the same parameters while no trial of that configuration has
    succeeded, its failure class is listed in retryOn, and the configuration has retries left.
    Trials that time out (maxTrialDurationSeconds) or whose pod cannot start are never retried,
    since they would fail the same way.
    """

    max_retries: int = Field(
        2, ge=0, le=20, description=("Retries per configuration: a configuration runs at most maxRetries + 1 times.")
    )
    retry_on: list[RetryableFailureClass] = Field(
        default_factory=lambda: [RetryableFailureClass.infrastructure, RetryableFailureClass.oom_killed],
        max_length=4,
        description=(
            "Failure classes that are retried: Infrastructure (Evicted, Preempted, node lost, pod "
            "deleted), OOMKilled, Error (the program's own non-zero exit), MetricsUnavailable "
            "(succeeded without reporting the objective metric)."
        ),
        json_schema_extra=schema_extra(list_type="set"),
    )
    backoff_seconds: int = Field(
        5, ge=0, le=3600, description=("Wait before the first retry; doubled for each further attempt.")
    )
    max_backoff_seconds: int = Field(300, ge=0, le=86400, description="Upper bound of the backoff.")


class EarlyStopping(Model):
    """Stop trials whose intermediate objective values (metrics with a step, read from the running
    pod's log) are unpromising. Stopped trials end as EarlyStopped and are not retried."""

    # Each setting belongs to some of the rules; one given to another rule would be silently
    # ignored, so it is refused. (Hence no schema defaults: the API server would fill in every
    # setting for every rule. The defaults are applied in search/samplers.py.)
    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            validations=[
                cel(
                    "self.algorithm == 'median' || (!has(self.minTrialsRequired) && !has(self.warmupSteps))",
                    "minTrialsRequired and warmupSteps are settings of the median rule only",
                ),
                cel(
                    "self.algorithm != 'median' || (!has(self.minResource) && !has(self.reductionFactor))",
                    "minResource and reductionFactor are settings of asha and hyperband, not of the median rule",
                ),
                cel(
                    "self.algorithm == 'hyperband' || !has(self.maxResource)",
                    "maxResource is a setting of hyperband only",
                ),
                cel(
                    "!has(self.maxResource) || self.maxResource > (has(self.minResource) ? self.minResource : 1)",
                    "hyperband: maxResource must be greater than minResource (default 1)",
                ),
            ]
        )
    )

    algorithm: EarlyStoppingAlgorithm = Field(
        description=(
            "median: stop a trial whose best value so far is worse than the median of the finished "
            "trials' values at the same step. asha: asynchronous successive halving (with several "
            "objectives, on their non-dominated rank, ties broken by crowding distance). hyperband: "
            "several successive-halving brackets, each trial in one, trading how many trials go on "
            "against how early they are judged."
        )
    )
    min_trials_required: int | None = Field(
        None, ge=0, le=1000, description="median: trials that must have finished before any is stopped (default 3)."
    )
    warmup_steps: int | None = Field(
        None, ge=0, description="median: steps a trial always runs before it may be stopped (default 0)."
    )
    min_resource: int | None = Field(
        None,
        ge=1,
        description=(
            "asha, hyperband: the first rung's step (default: asha, the last step of the first finished "
            "trial divided by 100; hyperband, 1)."
        ),
    )
    max_resource: int | None = Field(
        None,
        ge=2,
        description=(
            "hyperband: the step a trial that is never stopped reaches, e.g. its number of epochs "
            "(default: one more than the last step of the first finished trial, and nothing is "
            "stopped before one has finished; give it when trials differ in length)."
        ),
    )
    reduction_factor: int | None = Field(
        None,
        ge=2,
        le=100,
        description="asha, hyperband: 1 in reductionFactor trials goes on at each rung (default 3).",
    )


class MetricsCollector(Model):
    """Where trial metrics are read from."""

    source: MetricsSource = Field(
        MetricsSource.auto,
        description=(
            "TerminationMessage: a JSON object of metrics written to the container's termination "
            "message (/dev/termination-log). StdoutLog: lines `name=value` (several per line, "
            "separated by spaces or commas, optionally with step=N) or JSON objects on stdout. "
            "Auto: the termination message, then the log."
        ),
    )
    interval_seconds: int = Field(
        10,
        ge=1,
        le=3600,
        description=("With earlyStopping: how often the log of a running trial is read for intermediate values."),
    )
    metrics_format: list[Annotated[str, Field(min_length=1, max_length=1024)]] | None = Field(
        None,
        min_length=1,
        max_length=16,
        description=(
            "Regular expressions (RE2 syntax, as Katib's metricsFormat) that read stdout lines instead "
            "of the name=value and JSON forms: every match is one metric, its first group the name, its "
            "second the value, e.g. '([a-z_]+):\\s*([-+.0-9eE]+)'. A match named step gives the line's "
            "step. No backreferences or lookaround."
        ),
        json_schema_extra=schema_extra(
            list_type="set",
            validations=[
                # The API server's CEL compiles a regex given to find() with Go's regexp, which
                # takes RE2's syntax: a pattern RE2 refuses fails the rule with RE2's reason
                # ("Illegal regex: error parsing regexp: invalid or unsupported Perl syntax: `(?=`").
                # (find() on the empty string returns '' whether the pattern matches or not.)
                cel(
                    "self.all(f, ''.find(f) == '')",
                    "each metricsFormat regex must be one RE2 accepts: no backreferences or lookaround",
                ),
                # It counts the opening parentheses that open a group (not (?: and the like), which
                # refuses most mistakes at apply. The operator compiles them with RE2 (regex.py) and
                # counts their groups and program size (InvalidSpec).
                cel(
                    "self.all(f, size(f.findAll('[(]')) - size(f.findAll('[(][?][^P<]')) >= 2)",
                    "each metricsFormat regex needs two groups: the metric's name and its value",
                ),
            ],
        ),
    )

    @field_validator("metrics_format")
    @classmethod
    def _regexes(cls, formats: list[str] | None) -> list[str] | None:
        for index, pattern in enumerate(formats or []):
            problem = metrics_format_problem(pattern)
            if problem:
                raise ValueError(f"metricsFormat[{index}] {pattern!r}: {problem}")
        return formats


def metrics_format_problem(pattern: str) -> str | None:
    """Why a metricsFormat regex cannot be used, or None (regex.format_problem: RE2 compiles it,
    and it has two groups, the metric's name and its value)."""
    return format_problem(pattern)


# A resource's name as Kubernetes spells it (cpu, memory, nvidia.com/gpu, example.com/fpga).
RESOURCE_NAME_PATTERN = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
MAX_BUDGET_RESOURCES = 16
# A year of running time; a resource budget of 10^12 resource-seconds (a million GPUs for 11 days).
MAX_DURATION_SECONDS = 366 * 86400
MAX_RESOURCE_SECONDS = 1e12


class Budget(Model):
    """Limits in time and compute. Once one is reached no new trial starts (no suggestion, retry or
    resumed run), and the experiment ends Succeeded with that limit's reason (MaxDurationReached,
    ComputeBudgetReached); raising the limit continues it."""

    max_duration_seconds: int | None = Field(
        None,
        ge=1,
        le=MAX_DURATION_SECONDS,
        description=(
            "How long the experiment may run: the time its phase is Running, so suspended (and "
            "finished) time does not count. Kept in status.spent (durationSeconds as of time)."
        ),
    )
    max_resource_seconds: dict[str, Annotated[float, Field(gt=0, le=MAX_RESOURCE_SECONDS)]] | None = Field(
        None,
        description=(
            "Compute per resource, in resource-seconds: the sum over every trial (retries, restarts "
            "and resumed runs included) of what its workload requests (requests, else limits; times "
            "its pods: a Job's parallelism, replicas, a TrainJob's numNodes) times how long it ran, "
            "from its pod's start (queue and scheduling time excluded) to its end. E.g. "
            "{nvidia.com/gpu: 360000} is 100 GPU-hours. Kept in status.spent.resources."
        ),
        json_schema_extra={
            "maxProperties": MAX_BUDGET_RESOURCES,
            **schema_extra(
                validations=[
                    cel(
                        "self.all(k, size(k) <= 253 && k.matches('" + RESOURCE_NAME_PATTERN + "'))",
                        "maxResourceSeconds' keys are resource names, e.g. cpu, memory or nvidia.com/gpu",
                    ),
                ]
            ),
        },
    )
    running_trials: BudgetRunningTrials = Field(
        BudgetRunningTrials.stop,
        description=(
            "What the trials still running when a limit is reached do. Stop (the default): they are "
            "stopped (Killed, reason ExperimentFinished) and the experiment ends at once, so a limit "
            "is never passed by more than a moment. Finish: they run to their end, which the "
            "experiment waits for; nothing new starts meanwhile."
        ),
    )

    @field_validator("max_resource_seconds")
    @classmethod
    def _resources(cls, limits: dict[str, float] | None) -> dict[str, float] | None:
        # The CRD's CEL refuses the same at apply; this keeps specs built in Python honest too.
        if len(limits or {}) > MAX_BUDGET_RESOURCES:
            raise ValueError(f"maxResourceSeconds takes at most {MAX_BUDGET_RESOURCES} resources")
        for name in limits or {}:
            if len(name) > 253 or not re.match(RESOURCE_NAME_PATTERN, name):
                raise ValueError(f"maxResourceSeconds: {name!r} is not a resource name")
        return limits


class ExperimentSpec(Model):
    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            validations=[
                cel(
                    "self.parallelTrialCount <= self.maxTrialCount", "parallelTrialCount must not exceed maxTrialCount"
                ),
                cel(
                    "self.algorithm.name != 'grid' || self.parameters.all(p, p.type != 'double' || has(p.step))",
                    "grid search needs a step for every double parameter",
                ),
                cel(
                    "!has(self.objective.metrics) || !has(self.earlyStopping) "
                    "|| self.earlyStopping.algorithm == 'asha'",
                    "with several objectives earlyStopping takes asha only (successive halving on the "
                    "objectives' non-dominated rank): the median of several objectives is not defined, and "
                    "hyperband's brackets are not implemented for them",
                ),
                cel(
                    "!has(self.objective.metrics) || self.algorithm.name != 'cmaes'",
                    "cmaes supports a single objective only; for several use tpe, nsga2, nsga3, gp, random, grid "
                    "or qmc",
                ),
                cel("self.parameters == oldSelf.parameters", "parameters are immutable"),
                cel(
                    OBJECTIVE_UNCHANGED_BUT_GOAL,
                    "objective is immutable, but for its goal (a goal changed on a finished experiment "
                    "that reached its goal continues it)",
                ),
                cel("self.algorithm == oldSelf.algorithm", "algorithm is immutable"),
                *population.rules(),
            ]
        )
    )

    objective: Objective
    # Defaulted server-side too ({} then name: random), so the CEL rules above can read
    # self.algorithm when a manifest leaves it out.
    algorithm: Algorithm = Field(default_factory=Algorithm, json_schema_extra={"default": {}})
    parameters: list[Parameter] = Field(
        min_length=1,
        max_length=64,
        description="The search space.",
        json_schema_extra=schema_extra(list_type="map", list_map_keys=["name"]),
    )
    parallel_trial_count: int = Field(
        1, ge=1, le=1000, description=("How many trials (pods) run at once, retries and user-requested runs included.")
    )
    max_trial_count: int = Field(
        ge=1,
        le=100000,
        description=(
            "How many configurations the experiment tries. Retries of a configuration do not count; "
            "runs of a configuration requested by a user do. With algorithm pbt it counts segments: "
            "populationSize x generations (a multiple of populationSize), so maxTrialCount / "
            "populationSize is the number of generations."
        ),
    )
    max_failed_trial_count: int | None = Field(
        None,
        ge=0,
        le=100000,
        description=(
            "The experiment fails (reason TooManyFailures) once more configurations than this have "
            "finally failed, i.e. failed with no retry left. Unset: no limit."
        ),
    )
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)
    max_trial_duration_seconds: int | None = Field(
        None, ge=1, description=("A trial running longer than this is stopped as Killed (reason Timeout), not retried.")
    )
    startup_timeout_seconds: int = Field(
        300,
        ge=1,
        le=86400,
        description=(
            "A trial whose pod has not started after this long (unschedulable, image pull errors) "
            "fails with that reason and is not retried. Errors that cannot heal (bad image name, bad "
            "config) fail it at once."
        ),
    )
    warm_start_from: str | None = Field(
        None,
        max_length=253,
        description=(
            "An experiment in the same namespace whose finished trials the search algorithm learns "
            "from before suggesting (for a copy of an experiment). Trials outside this search space "
            "are skipped."
        ),
    )
    suspend: bool = Field(
        False,
        description=(
            "true: launch nothing and stop running trials; false again resumes, re-running the "
            "stopped configurations without spending their retries."
        ),
    )
    metrics_collector: MetricsCollector = Field(default_factory=MetricsCollector)
    early_stopping: EarlyStopping | None = None
    budget: Budget | None = None
    trial_template: TrialTemplate


class ParameterAssignment(Model):
    name: str = Field(max_length=63)
    value: str = Field(max_length=1024)


class TrialSpec(Model):
    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            validations=[
                cel("self.parameters == oldSelf.parameters", "parameters are immutable"),
                cel("self.experimentName == oldSelf.experimentName", "experimentName is immutable"),
                cel(
                    "has(self.segment) == has(oldSelf.segment) "
                    "&& (!has(self.segment) || self.segment == oldSelf.segment)",
                    "segment is immutable",
                ),
            ]
        )
    )

    experiment_name: str = Field(
        max_length=253,
        description=(
            "The experiment this trial belongs to. Create a Trial naming an experiment and parameters "
            "to run that configuration (refused if it already succeeded)."
        ),
    )
    parameters: list[ParameterAssignment] = Field(
        max_length=64,
        description="The configuration this trial runs.",
        json_schema_extra=schema_extra(list_type="map", list_map_keys=["name"]),
    )
    attempt: int = Field(1, ge=1, description="1 for the first run of a configuration, then 2, 3, …")
    retry_of: str | None = Field(
        None, max_length=253, description=("The trial this one re-runs (an automatic retry or a requested restart).")
    )
    suggestion_index: int | None = Field(
        None,
        ge=0,
        description=(
            "Which suggestion of the experiment's algorithm this configuration is (unset for runs requested by a user)."
        ),
    )
    segment: population.Segment | None = Field(
        None,
        description=(
            "Population-based training (algorithm pbt): the member, generation and parent segment this "
            "Trial trains; set by the operator when it creates the Trial."
        ),
    )

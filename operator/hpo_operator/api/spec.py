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

from pydantic import ConfigDict, Field, field_validator

from .algorithms import settings_rule, settings_rule_message
from .base import Model, cel, schema_extra
from .parameters import NAME_PATTERN, Parameter
from .template import TrialTemplate
from .vocabulary import AlgorithmName, EarlyStoppingAlgorithm, MetricsSource, ObjectiveType, RetryableFailureClass

# A placeholder in the trial template: ${params.NAME}, ${trial.name}, ${trial.attempt},
# ${experiment.name}.
PLACEHOLDER_PATTERN = r"\$\{(params|trial|experiment)\.([A-Za-z0-9_]+)\}"
# Object name limits (checked by root-level CEL rules in the CRDs). Trial and pod names are the
# experiment's name plus suffixes (-0042, -a2), and names are also label values (at most 63).
EXPERIMENT_NAME_MAX_LENGTH = 40
TRIAL_NAME_MAX_LENGTH = 56


class Objective(Model):
    """What the experiment optimises: one metric, minimised or maximised."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            validations=[
                cel(
                    "!has(self.additionalMetricNames) || !(self.metricName in self.additionalMetricNames)",
                    "additionalMetricNames must not repeat metricName",
                ),
            ]
        )
    )

    type: ObjectiveType = Field(description="Whether the objective metric is minimised or maximised.")
    metric_name: str = Field(
        pattern=NAME_PATTERN, max_length=63, description="Name of the objective metric the trials report."
    )
    goal: float | None = Field(
        None,
        description=(
            "Stop the experiment (reason GoalReached) once a trial's objective reaches this value: "
            "at or below it when minimising, at or above it when maximising."
        ),
    )
    additional_metric_names: list[Annotated[str, Field(max_length=63)]] | None = Field(
        None,
        max_length=16,
        description="Other metrics to record for every trial (shown in the trial's status).",
        json_schema_extra=schema_extra(list_type="set"),
    )


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
            "random). qmc: quasi-Monte Carlo (qmcType sobol or halton, scramble)."
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
            "trials' values at the same step. asha: asynchronous successive halving. hyperband: "
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
            "Regular expressions that read stdout lines instead of the name=value and JSON forms (as "
            "Katib's metricsFormat): every match is one metric, its first group the name, its second "
            "the value, e.g. '([a-z_]+):\\s*([-+.0-9eE]+)'. A match named step gives the line's step."
        ),
        json_schema_extra=schema_extra(
            list_type="set",
            validations=[
                # The API server cannot compile a Python regex; it counts the opening parentheses
                # that open a group (not (?: and the like), which refuses most mistakes at apply.
                # The operator compiles them (InvalidSpec).
                cel(
                    "self.all(f, size(f.findAll('[(]')) - size(f.findAll('[(][?][^P<]')) >= 2)",
                    "each metricsFormat regex needs two groups: the metric's name and its value",
                )
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
    """Why a metricsFormat regex cannot be used, or None: it must compile (Python's re) and have
    at least two groups, the metric's name and its value."""
    try:
        groups = re.compile(pattern).groups
    except re.error as e:
        return f"not a regular expression: {e}"
    if groups < 2:
        return f"has {groups} group{'' if groups == 1 else 's'}; it needs two, the metric's name and its value"
    return None


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
                cel("self.parameters == oldSelf.parameters", "parameters are immutable"),
                cel("self.objective == oldSelf.objective", "objective is immutable"),
                cel("self.algorithm == oldSelf.algorithm", "algorithm is immutable"),
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
            "runs of a configuration requested by a user do."
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

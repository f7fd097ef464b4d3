"""The spec of an Experiment and of a Trial: what users write, as pydantic models.

These models (with status.py and external.py) are the one source of truth for the API: the CRDs
in crds/ are generated from them (hpo_operator.api.crd), and the operator parses what it reads
from the cluster with them. Rules the API server can check (bounds, enums, CEL) live here as
schema annotations, so a bad manifest is refused by `kubectl apply` rather than discovered by the
operator.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field

from .algorithms import settings_rule, settings_rule_message
from .base import Model, cel, schema_extra
from .external import TrialResource, VolumeClaimTemplate
from .vocabulary import (
    AlgorithmName,
    CheckpointRetention,
    EarlyStoppingAlgorithm,
    MetricsSource,
    ObjectiveType,
    ParameterType,
    PodRetention,
    RetryableFailureClass,
)

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
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


NUMBER_RE = r"^[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]+)?$"


class Parameter(Model):
    """One hyperparameter and the values it may take."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            validations=[
                cel(
                    "self.type in ['int', 'double'] ? (has(self.min) && has(self.max)) : true",
                    "int and double parameters need min and max",
                ),
                cel("!has(self.min) || !has(self.max) || self.min < self.max", "min must be less than max"),
                cel(
                    "self.type in ['categorical', 'discrete'] ? (has(self.values) && size(self.values) > 0) : true",
                    "categorical and discrete parameters need a non-empty list of values",
                ),
                cel(
                    "self.type in ['categorical', 'discrete'] ? !(has(self.min) || has(self.max) || has(self.step) "
                    "|| self.log) : !has(self.values)",
                    "int and double parameters take min, max, step and log; categorical and discrete take values",
                ),
                cel(
                    f"self.type != 'discrete' || !has(self.values) || self.values.all(v, v.matches('{NUMBER_RE}'))",
                    "the values of a discrete parameter must be numbers",
                ),
                cel("!self.log || (has(self.min) && self.min > 0.0)", "a log-scale parameter needs min > 0"),
                cel("!(self.log && has(self.step))", "a log-scale parameter cannot have a step"),
                cel(
                    "self.type != 'int' || ((!has(self.min) || self.min == double(int(self.min))) && "
                    "(!has(self.max) || self.max == double(int(self.max))) && "
                    "(!has(self.step) || self.step == double(int(self.step))))",
                    "an int parameter needs whole-number min, max and step",
                ),
            ]
        )
    )

    name: str = Field(
        pattern=NAME_PATTERN,
        max_length=63,
        description=("Parameter name, used in the trial template as ${params.NAME}."),
    )
    type: ParameterType = Field(description="int, double, categorical or discrete (numbers from a list).")
    min: float | None = Field(None, description="Lower bound (int, double), inclusive.")
    max: float | None = Field(None, description="Upper bound (int, double), inclusive.")
    step: float | None = Field(
        None,
        gt=0,
        description=("Spacing of the values between min and max (int, double); needed by grid search for doubles."),
    )
    log: bool = Field(False, description="Sample on a log scale (int, double; needs min > 0).")
    values: list[Annotated[str, Field(max_length=128)]] | None = Field(
        None,
        max_length=100,
        description="The values a categorical or discrete parameter takes.",
        json_schema_extra=schema_extra(list_type="set"),
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

    algorithm: EarlyStoppingAlgorithm = Field(
        description=(
            "median: stop a trial whose best value so far is worse than the median of the other "
            "trials' values at the same step. asha: asynchronous successive halving."
        )
    )
    min_trials_required: int = Field(
        3, ge=0, le=1000, description=("median: trials that must have finished before any is stopped.")
    )
    warmup_steps: int = Field(0, ge=0, description="median: steps a trial always runs before it may be stopped.")
    min_resource: int | None = Field(None, ge=1, description="asha: the first rung's step (default: automatic).")
    reduction_factor: int = Field(3, ge=2, le=100, description="asha: the fraction of trials that go on at each rung.")


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


class Checkpoint(Model):
    """A volume per configuration that every attempt of it mounts: a retry resumes from what the
    failed attempt saved."""

    volume_claim_template: VolumeClaimTemplate
    mount_path: str = Field(
        max_length=4096,
        pattern=r"^/",
        description=(
            "Where the primary container sees the volume (absolute); also $HPO_CHECKPOINT_DIR and "
            "${trial.checkpointDir}. HPO_RESUME=1 is set from a configuration's second attempt on."
        ),
    )
    retention: CheckpointRetention = Field(
        CheckpointRetention.delete_on_success,
        description=(
            "When a configuration's claim is removed: DeleteOnSuccess once it succeeded (failed ones "
            "stay for inspection), Delete once it is done either way, Keep with the experiment. "
            "Deleting the experiment removes them all."
        ),
    )


class PrimaryPod(Model):
    labels: dict[str, str] = Field(
        min_length=1, description=("The primary pod has these labels (e.g. a replica type and index).")
    )


class TrialTemplate(Model):
    """What each trial runs: exactly one of template (a pod), job (a batch/v1 Job) or resource."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            validations=[
                cel(
                    "[has(self.template), has(self.job), has(self.resource)].filter(x, x).size() == 1",
                    "give exactly one of template (a pod), job (a batch/v1 Job) or resource",
                ),
                cel(
                    "!has(self.primaryPod) || !has(self.template)",
                    "primaryPod chooses among a Job's or resource's pods; a pod trial has one",
                ),
                cel(
                    "!has(self.checkpoint) || !has(self.resource)",
                    "checkpoint is for pod and Job trials (a resource's pods are its controller's)",
                ),
            ]
        )
    )

    primary_container_name: str | None = Field(
        None,
        max_length=63,
        description=(
            "The container whose exit decides the trial and whose metrics are read (default: the first container)."
        ),
    )
    pod_retention: PodRetention = Field(
        PodRetention.keep,
        description=(
            "Keep: finished trial pods (Jobs, resources) stay until the experiment is deleted (logs "
            "stay readable). Delete: deleted once the trial's result is recorded."
        ),
    )
    template: dict[str, Any] | None = Field(None, json_schema_extra={"x-hpo-pod-template": True})
    job: dict[str, Any] | None = Field(None, json_schema_extra={"x-hpo-job-template": True})
    resource: TrialResource | None = None
    checkpoint: Checkpoint | None = None

    def source(self) -> Any:
        """What placeholders are replaced in: the pod template, the Job, or the manifest."""
        return (
            self.template
            if self.template is not None
            else self.job
            if self.job is not None
            else self.resource.manifest
            if self.resource is not None
            else None
        )

    def containers(self) -> list[dict] | None:
        """The trial pod's containers (of a pod or Job template); None for a resource, whose pods
        may be of several templates."""
        if self.template is not None:
            return (self.template.get("spec") or {}).get("containers") or []
        if self.job is not None:
            return (((self.job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
        return None

    primary_pod: PrimaryPod | None = Field(
        None,
        description=(
            "Which of a Job's or resource's pods speaks for the trial (its log and exit: metrics, "
            "early stopping). Default: completion index 0 of an Indexed Job, else the newest pod."
        ),
    )


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

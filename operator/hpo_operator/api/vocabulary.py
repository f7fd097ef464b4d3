"""The API's vocabulary, each word spelled once: group and version, labels and annotations, phases,
launch reasons, failure classes and the spec's other closed sets. It imports nothing of the
project, Optuna or kopf, so the kubectl plugin, the models, the planner and the dashboard all read
it cheaply.

The enums are StrEnums: a member equals its word, dumps as it, and prints as it (str() and
f-strings give "Error", not "FailureClass.error"), so the planner can write members into statuses,
messages and metric labels. Models still parse into the words (use_enum_values), so what they hold
is the same whether it came from the API server or from the planner. The enums have no docstrings:
pydantic would write them into the CRDs as the fields' descriptions.
"""

from __future__ import annotations

from enum import StrEnum

GROUP = "hpo.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Labels the operator puts on Trials and their pods (and Jobs, resources, checkpoint claims).
L_EXPERIMENT = f"{GROUP}/experiment"
L_TRIAL = f"{GROUP}/trial"
L_CONFIG = f"{GROUP}/config"  # a hash of the configuration: its trials share it
L_ATTEMPT = f"{GROUP}/attempt"
L_LINEAGE = f"{GROUP}/lineage"
L_LAUNCH = f"{GROUP}/launch-reason"  # a LaunchReason
# Population-based training: the member a segment trains and its generation (on its Trial, pod and claim).
L_MEMBER = f"{GROUP}/member"
L_GENERATION = f"{GROUP}/generation"
L_BOOKMARKED = f"{GROUP}/bookmarked"  # the kubectl plugin's bookmarks
MANAGED_BY = {"app.kubernetes.io/managed-by": "hpo-operator", "app.kubernetes.io/part-of": "hpo-operator"}

# Annotations.
A_RESTART = f"{GROUP}/restart"  # a user asks for a trial to run again
# On a re-run made for a restart request: the request's value, so that a request seen again (the
# round that accepted it stopped before it could remove the annotation) is not run twice.
A_RESTART_REQUEST = f"{GROUP}/restart-request"
A_NOT_BEFORE = f"{GROUP}/not-before"  # a retry waits for its backoff until then
A_CREATOR = f"{GROUP}/creator"  # who created an experiment (the admission webhook's word where it runs)
# Who wrote an Experiment or a Trial, and who asked for a restart (hpo.dev/restart), as the API
# server told the operator's admission webhook (request.userInfo, as JSON), each with its HMAC
# signature: only the webhook and the operator write them (core/authorship.py).
A_AUTHOR = f"{GROUP}/author"
A_AUTHOR_SIGNATURE = f"{GROUP}/author-signature"
A_RESTART_AUTHOR = f"{GROUP}/restart-author"
A_RESTART_AUTHOR_SIGNATURE = f"{GROUP}/restart-author-signature"
A_ORIGINAL = f"{GROUP}/original"  # the experiment a copy was made from

# Kueue's label naming the LocalQueue a workload (pod, Job, JobSet, TrainJob) waits in: set from
# trialTemplate.queueName (Kueue's word, not ours).
L_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
L_KUEUE_JOB_UID = "kueue.x-k8s.io/job-uid"  # on the Workload Kueue makes for a Job or resource

# The finalizer on Experiments (kopf's, while it handles them).
FINALIZER = f"{GROUP}/finalizer"

# An Experiment's condition while the API server refuses the operator a watch the experiment needs
# (its trial kind's, its checkpoint claims'): False with reason WATCH_FORBIDDEN, and True with
# WATCHED once the watch lists. It appears only after such a refusal.
WORKLOADS_WATCHED = "WorkloadsWatched"
WATCH_FORBIDDEN = "WatchForbidden"
WATCHED = "Watched"


class ExperimentPhase(StrEnum):
    created = "Created"
    running = "Running"
    suspended = "Suspended"
    succeeded = "Succeeded"
    failed = "Failed"


class TrialPhase(StrEnum):
    pending = "Pending"
    queued = "Queued"  # its workload waits for admission by a queue (Kueue): not started, no timeout runs
    running = "Running"
    succeeded = "Succeeded"
    failed = "Failed"
    killed = "Killed"
    early_stopped = "EarlyStopped"
    refused = "Refused"


class LaunchReason(StrEnum):
    suggestion = "Suggestion"
    retry = "Retry"
    restart = "Restart"
    resume = "Resume"
    user = "User"


class FailureClass(StrEnum):
    infrastructure = "Infrastructure"  # evicted, preempted, node lost, pod deleted
    oom_killed = "OOMKilled"
    error = "Error"  # the program's own non-zero exit
    metrics_unavailable = "MetricsUnavailable"  # succeeded without reporting the objective
    startup = "Startup"  # the pod never started: image, config, unschedulable
    timeout = "Timeout"  # ran past maxTrialDurationSeconds, or a Job's activeDeadlineSeconds


# The classes retryPolicy.retryOn may name. Startup and Timeout are never retried: a re-run would
# end the same way.
class RetryableFailureClass(StrEnum):
    infrastructure = FailureClass.infrastructure.value
    oom_killed = FailureClass.oom_killed.value
    error = FailureClass.error.value
    metrics_unavailable = FailureClass.metrics_unavailable.value


EXPERIMENT_PHASES = tuple(p.value for p in ExperimentPhase)
TRIAL_PHASES = tuple(p.value for p in TrialPhase)
FINISHED_PHASES = (ExperimentPhase.succeeded.value, ExperimentPhase.failed.value)  # of an experiment
TERMINAL_PHASES = frozenset(
    p.value
    for p in (TrialPhase.succeeded, TrialPhase.failed, TrialPhase.killed, TrialPhase.early_stopped, TrialPhase.refused)
)  # of a trial
UNFINISHED_PHASES = tuple(p for p in TRIAL_PHASES if p not in TERMINAL_PHASES)  # of a trial


# The spec's closed sets: their values are what users write.
class ObjectiveType(StrEnum):
    minimize = "minimize"
    maximize = "maximize"


class AlgorithmName(StrEnum):
    random = "random"
    grid = "grid"
    tpe = "tpe"
    cmaes = "cmaes"
    qmc = "qmc"
    nsga2 = "nsga2"
    nsga3 = "nsga3"
    pbt = "pbt"
    gp = "gp"


class ParameterType(StrEnum):
    int = "int"
    double = "double"
    categorical = "categorical"
    discrete = "discrete"


class MetricsSource(StrEnum):
    auto = "Auto"
    termination_message = "TerminationMessage"
    stdout = "StdoutLog"


class EarlyStoppingAlgorithm(StrEnum):
    median = "median"
    asha = "asha"
    hyperband = "hyperband"


# What a budget's end does to the trials still running (spec.budget.runningTrials).
class BudgetRunningTrials(StrEnum):
    stop = "Stop"
    finish = "Finish"


# The reasons an experiment ends Succeeded with: a limit of its spec was reached (raising the limit
# continues it: see planner/experiment.py, reopen), its goal was reached, or its grid is done.
class EndReason(StrEnum):
    goal_reached = "GoalReached"
    max_trials_reached = "MaxTrialsReached"
    max_duration_reached = "MaxDurationReached"
    compute_budget_reached = "ComputeBudgetReached"
    search_space_exhausted = "SearchSpaceExhausted"


class PodRetention(StrEnum):
    keep = "Keep"
    delete = "Delete"


class CheckpointRetention(StrEnum):
    delete_on_success = "DeleteOnSuccess"
    delete = "Delete"
    keep = "Keep"


# Kubernetes' own closed sets, where our schema embeds them.
class ConditionStatus(StrEnum):  # metav1.Condition's status
    true = "True"
    false = "False"
    unknown = "Unknown"


class AccessMode(StrEnum):  # a PersistentVolumeClaim's access modes, as a checkpoint's claim takes them
    read_write_once = "ReadWriteOnce"
    read_write_once_pod = "ReadWriteOncePod"
    read_write_many = "ReadWriteMany"

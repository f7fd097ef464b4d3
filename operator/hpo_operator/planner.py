"""The experiment's decisions, as a pure function of what the cluster holds.

`plan()` takes an Experiment, its Trials and their pods (and the logs of pods that finished) and
returns what to change: Trial statuses, Trials and pods to create, pods to delete, the Experiment
status and Events. It reads no clock but `now` and calls no API, so every rule below is unit-tested
without a cluster, and the kopf handlers only carry the plan out.

Rules (README.md, "Budgets and recovery", documents them for users):
- A configuration is a set of parameter values; its trials share the label hpo.dev/config.
- maxTrialCount counts configurations launched, suggested or requested by a user; retries,
  restarts and resumed runs of a configuration do not count.
- A failed trial is re-run (a new Trial, attempt + 1, spec.retryOf naming it) while no trial of its
  configuration has succeeded, its failure class is in retryPolicy.retryOn and the configuration
  has retries left; the retry waits backoffSeconds * 2^(retries so far), capped.
- A configuration finally fails when its latest trial failed and will not be re-run;
  maxFailedTrialCount counts those, and the experiment fails once there are more of them.
- parallelTrialCount bounds the trials with a pod that has not finished, of any kind.
- Trial names are deterministic ({experiment}-{suggestion:04d}, retries {lineage}-a{attempt}),
  so an operator that restarts after creating something, but before recording it, collides with
  what it made instead of duplicating it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping, Sequence

from . import checkpoint
from . import metrics as metricslib
from .conditions import get_condition, now_iso, set_condition
from .api import (A_NOT_BEFORE, A_RESTART, A_RESTART_REQUEST, API_VERSION, FINISHED_PHASES, L_ATTEMPT,
                  L_CONFIG, L_EXPERIMENT, L_LAUNCH, L_LINEAGE, L_TRIAL, MANAGED_BY, TERMINAL_PHASES)
from .models import METRIC_HISTORY_LIMIT, PLACEHOLDER_PATTERN, STATUS_HISTORY_LIMIT, ExperimentSpec
from .podstate import observe, parse_time, stranded
from .space import InvalidConfiguration, config_hash, normalize_assignment, summary
from .suggest import Outcome, Recorded, Suggester

REQUEST_KEY_LENGTH = 1024
MAX_ASKS_PER_ROUND = 1000
# A sampler that keeps proposing configurations the experiment already has is treated as having
# exhausted the space after this many suggestions per configuration budget.
DUPLICATE_SUGGESTION_FACTOR = 10


class TrialView:
    """A Trial's body with what the planner reads of it, each worked out once: an experiment holds
    thousands of Trials, and the same view serves every round until the Trial changes."""

    def __init__(self, name: str, uid: str, body: dict):
        self.name = name
        self.uid = uid
        self._body = body

    def __repr__(self) -> str:
        return f"TrialView({self.name!r}, {self.uid!r})"

    @property
    def body(self) -> dict:
        return self._body

    @body.setter
    def body(self, body: dict) -> None:
        self._body = body
        for cached in [k for k in self.__dict__ if not k.startswith("_") and k not in ("name", "uid")]:
            del self.__dict__[cached]

    @cached_property
    def meta(self) -> dict:
        return self.body.get("metadata") or {}

    @cached_property
    def spec(self) -> dict:
        return self.body.get("spec") or {}

    @cached_property
    def status(self) -> dict:
        return self.body.get("status") or {}

    @cached_property
    def labels(self) -> dict:
        return self.meta.get("labels") or {}

    @cached_property
    def annotations(self) -> dict:
        return self.meta.get("annotations") or {}

    @property
    def phase(self) -> str:
        return self.status.get("phase") or "Pending"

    @cached_property
    def attempt(self) -> int:
        return int(self.spec.get("attempt") or 1)

    @cached_property
    def values(self) -> dict[str, str]:
        return {p["name"]: p["value"] for p in self.spec.get("parameters") or []}

    @cached_property
    def controllers(self) -> tuple[str, ...]:
        return tuple(r.get("uid") for r in self.meta.get("ownerReferences") or [] if r.get("controller"))

    def owned_by(self, uid: str) -> bool:
        return uid in self.controllers

    def owned_by_another(self, uid: str) -> bool:
        """Controlled by something else, e.g. an experiment of the same name that was deleted."""
        return any(c != uid for c in self.controllers)

    @cached_property
    def suggestion_index(self) -> int | None:
        """The suggestion this trial runs; never taken from a trial a user wrote."""
        index = self.spec.get("suggestionIndex")
        if index is None or self.labels.get(L_LAUNCH) in (None, "User"):
            return None
        return int(index)


@dataclass
class Event:
    target: str | None  # a trial name, or None for the experiment
    type: str
    reason: str
    message: str


@dataclass
class Plan:
    trial_status: dict[str, dict] = field(default_factory=dict)
    trial_metadata: dict[str, dict] = field(default_factory=dict)
    create_trials: list[dict] = field(default_factory=list)
    start_pods: list[str] = field(default_factory=list)
    delete_pods: list[str] = field(default_factory=list)
    delete_volumes: list[str] = field(default_factory=list)  # checkpoint claims retention removes
    experiment_status: dict = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    tells: list[tuple[int, Outcome]] = field(default_factory=list)
    requeue_after: float | None = None

    def requeue(self, seconds: float) -> None:
        seconds = max(seconds, 0.5)
        self.requeue_after = seconds if self.requeue_after is None else min(self.requeue_after, seconds)


@dataclass
class ExperimentView:
    name: str
    namespace: str
    uid: str
    generation: int
    spec: ExperimentSpec
    status: dict


def validate_spec(spec: ExperimentSpec) -> list[str]:
    """What the CRD's schema cannot check; each error is a sentence for a condition message."""
    errors = []
    names = {p.name for p in spec.parameters}
    for kind, key in re.findall(PLACEHOLDER_PATTERN, repr(spec.trial_template.source())):
        if kind == "params" and key not in names:
            errors.append(f"the trial template uses ${{params.{key}}}, which is not a declared parameter")
        known = ("name", "attempt", "checkpointDir") if spec.trial_template.checkpoint else ("name", "attempt")
        if kind == "trial" and key not in known:
            errors.append(f"unknown placeholder ${{trial.{key}}} (use {' or '.join('trial.' + k for k in known)})")
        if kind == "experiment" and key != "name":
            errors.append(f"unknown placeholder ${{experiment.{key}}} (use experiment.name)")
    containers = [c.get("name") for c in spec.trial_template.containers() or []]
    primary = spec.trial_template.primary_container_name
    if primary and spec.trial_template.containers() is not None and primary not in containers:
        errors.append(f"primaryContainerName {primary} is not a container of the template "
                      f"({', '.join(map(str, containers))})")
    return sorted(set(errors))


def backoff_seconds(spec: ExperimentSpec, retries_so_far: int) -> int:
    policy = spec.retry_policy
    return min(policy.backoff_seconds * (2 ** retries_so_far), policy.max_backoff_seconds)


def is_better(spec: ExperimentSpec, a: float, b: float) -> bool:
    return a < b if spec.objective.type == "minimize" else a > b


def goal_reached(spec: ExperimentSpec, value: float) -> bool:
    goal = spec.objective.goal
    if goal is None:
        return False
    return value <= goal if spec.objective.type == "minimize" else value >= goal


def needs_log(spec: ExperimentSpec, trial: TrialView, pod: dict | None) -> str | None:
    """Whether the planner wants this pod's log: "final" (read once, after it succeeded),
    "running" (read every metricsCollector.intervalSeconds, for early stopping) or None."""
    if pod is None or trial.phase in TERMINAL_PHASES:
        return None
    obs = observe(pod, spec.trial_template.primary_container_name)
    if obs.phase == "Running" and spec.early_stopping is not None:
        return "running"
    if obs.phase == "Failed" and spec.trial_template.checkpoint is not None \
            and spec.metrics_collector.source != "TerminationMessage":
        return "final"  # what the failed attempt reported, for the attempt that resumes it
    if obs.phase != "Succeeded" or spec.metrics_collector.source == "TerminationMessage":
        return None
    if spec.metrics_collector.source == "StdoutLog":
        return "final"
    found = metricslib.parse_termination_message(obs.termination_message, [spec.objective.metric_name])
    return None if found else "final"


class _Statuses(dict):
    """Trial statuses as this round leaves them. A trial's is copied from its view when first
    looked up, so that a round copies the statuses it may change, not those of every trial."""

    def __init__(self, views: dict[str, TrialView]):
        super().__init__()
        self.views = views

    def __missing__(self, name: str) -> dict:
        status = self[name] = dict(self.views[name].status)
        return status


class _Planner:
    def __init__(self, exp: ExperimentView, trials: list[TrialView], pods: dict[str, dict],
                 logs: dict[str, str], now: datetime, suggest: Callable[[int], dict[str, str] | None],
                 should_stop: Callable[[int, dict[int, float]], bool], tell: Callable[[int, Outcome], None],
                 volumes: set[str] | None = None):
        self.exp, self.spec, self.now = exp, exp.spec, now
        self.volumes = volumes
        self.should_stop, self.tell = should_stop, tell
        self.trials = sorted(trials, key=lambda t: (t.meta.get("creationTimestamp") or "", t.name))
        self.pods, self.logs, self.suggest = pods, logs, suggest
        self.plan = Plan()
        self.views = {t.name: t for t in self.trials}
        self.status = _Statuses(self.views)
        # Only these can be active this round (a trial never leaves a final phase), with the trials
        # made this round.
        self.unfinished = [t for t in self.trials if t.phase not in TERMINAL_PHASES]
        self.has_pod: dict[str, bool] = {t.name: t.name in pods for t in self.trials}
        self.finished = (exp.status.get("phase") in FINISHED_PHASES
                         and (get_condition(exp.status.get("conditions"), "Failed") or {}).get("reason") != "InvalidSpec")
        self.wanted = [self.spec.objective.metric_name, *(self.spec.objective.additional_metric_names or [])]
        self.checkpoint = self.spec.trial_template.checkpoint
        if self.checkpoint is not None:
            self.wanted.append(checkpoint.RESUMED_STEP)
        self.new_trials: list[TrialView] = []
        self.failed_keys: set[str] = set()
        self._groups: dict[str, list[TrialView]] | None = None

    # --- trial status ------------------------------------------------------------------------

    def current(self, t: TrialView) -> dict:
        """The trial's status as this round has it so far, for reading (self.status[name] to change it)."""
        st = self.status.get(t.name)
        return t.status if st is None else st

    def phase(self, t: TrialView) -> str:
        return self.current(t).get("phase") or "Pending"

    def set_status(self, t: TrialView, **changes: Any) -> None:
        st = self.status[t.name]
        before = st.get("phase")
        st.update({k: v for k, v in changes.items()})
        phase = st.get("phase") or "Pending"
        done = phase in TERMINAL_PHASES
        if done and not st.get("completionTime"):
            st["completionTime"] = now_iso(self.now)
        succeeded = "True" if phase == "Succeeded" else ("False" if done else "Unknown")
        st["conditions"] = set_condition(st.get("conditions"), "Succeeded", succeeded,
                                         st.get("reason") or phase, st.get("message") or "", self.now)
        if before != phase and done:
            kind = "Normal" if phase in ("Succeeded", "EarlyStopped") else "Warning"
            text = st.get("message") or st.get("reason") or phase
            if phase == "Succeeded":
                text = f"objective {self.spec.objective.metric_name}={st.get('objectiveValue')}"
            self.plan.events.append(Event(t.name, kind, f"Trial{phase}", text))

    def kill(self, t: TrialView, reason: str, message: str) -> None:
        if self.has_pod[t.name]:
            self.plan.delete_pods.append(t.name)
            self.has_pod[t.name] = False
        self.set_status(t, phase="Killed", reason=reason, message=message, failureClass=None)

    def observe_trials(self) -> None:
        for t in self.trials:
            if not self.current(t).get("parameterSummary") and t.values:
                self.status[t.name]["parameterSummary"] = summary(t.values)
            if self.phase(t) in TERMINAL_PHASES:
                pod = self.pods.get(t.name)
                if pod is not None and not pod["metadata"].get("deletionTimestamp") and (
                        not self._pod_done(t) or self.spec.trial_template.pod_retention == "Delete"):
                    # Its result is recorded: what still runs (a sidecar) is stopped.
                    self.plan.delete_pods.append(t.name)
                continue
            if t.owned_by_another(self.exp.uid):
                continue  # not ours: left to its owner, or to the garbage collector
            if not t.owned_by(self.exp.uid):
                self.admit_user_trial(t)
                continue
            pod = self.pods.get(t.name)
            if pod is None:
                if self.phase(t) == "Running":
                    self.set_status(t, phase="Failed", reason="PodDeleted", failureClass="Infrastructure",
                                    message="the trial's pod disappeared while it was running")
                continue
            self.observe_pod(t, pod)

    def _pod_done(self, t: TrialView) -> bool:
        status = (self.pods.get(t.name) or {}).get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            return True
        # A kubelet reports the containers terminated a moment before it sets the pod's phase.
        containers = status.get("containerStatuses") or []
        return bool(containers) and all((c.get("state") or {}).get("terminated") for c in containers)

    def observe_pod(self, t: TrialView, pod: dict) -> None:
        obs = observe(pod, self.spec.trial_template.primary_container_name, self.now)
        if obs.recheck_in is not None:
            self.plan.requeue(obs.recheck_in)
        # A Job's or resource's primary pod has a name of its own.
        common = dict(podName=pod["metadata"].get("name") or t.name, exitCode=obs.exit_code)
        if obs.start_time:
            common["startTime"] = obs.start_time
        if obs.phase == "Failed" and self.checkpoint is not None:
            # What the failed attempt reported, so that the attempt resuming it continues it.
            samples = self.final_samples(t, obs)
            history = self.continued(t, self.history(samples, obs.finish_time))
            if history:
                common["metricHistory"] = history
            found = metricslib.latest(samples)
            if found:
                common["metrics"] = [self.metric(s, obs.finish_time) for s in found.values()]
            common.update(self.resumed_from(t, found))
        if obs.phase == "Succeeded":
            samples = self.final_samples(t, obs)
            found = metricslib.latest(samples)
            metrics = [self.metric(s, obs.finish_time) for s in found.values()]
            objective = found.get(self.spec.objective.metric_name)
            history = self.continued(t, self.history(samples, obs.finish_time))
            if history:
                common["metricHistory"] = history
            common.update(self.resumed_from(t, found))
            if objective is None:
                self.set_status(t, phase="Failed", reason="MetricsUnavailable", failureClass="MetricsUnavailable",
                                message=f"the trial succeeded but reported no {self.spec.objective.metric_name} "
                                        f"metric ({self.spec.metrics_collector.source})",
                                metrics=metrics or None, **common)
            else:
                self.set_status(t, phase="Succeeded", reason="Completed", message="", failureClass=None,
                                objectiveValue=objective.value, metrics=metrics, **common)
            return
        if obs.phase == "Failed":
            self.set_status(t, phase="Failed", reason=obs.reason, message=obs.message,
                            failureClass=obs.failure_class, **common)
            return
        if obs.phase == "Running":
            limit = self.spec.max_trial_duration_seconds
            started = parse_time(obs.start_time)
            if limit and started:
                over = (self.now - started).total_seconds() - limit
                if over >= 0:
                    self.kill(t, "Timeout", f"the trial ran longer than maxTrialDurationSeconds ({limit}s)")
                    self.status[t.name].update(failureClass="Timeout")
                    return
                self.plan.requeue(-over)
            if self.phase(t) != "Running":
                self.set_status(t, phase="Running", reason="Running", message="", **common)
            if self.logs.get(t.name) and self.spec.early_stopping:
                self.check_progress(t)
            return
        # Pending: the pod has not started.
        if obs.fatal:
            self._fail_startup(t, obs.reason, obs.message)
            return
        since = parse_time(obs.stuck_since)
        if obs.failure_class == "Startup" and since:
            left = self.spec.startup_timeout_seconds - (self.now - since).total_seconds()
            if left <= 0:
                self._fail_startup(t, obs.reason, f"not started after {self.spec.startup_timeout_seconds}s: {obs.message}")
                return
            self.plan.requeue(left)
        self.status[t.name].update(phase="Pending", reason=obs.reason, message=obs.message, podName=t.name)

    def final_samples(self, t: TrialView, obs: Any) -> list[metricslib.Sample]:
        """A finished attempt's metrics: its termination message and, by metricsCollector.source,
        its log."""
        samples = metricslib.parse_termination_message(obs.termination_message, self.wanted)
        if self.spec.metrics_collector.source == "StdoutLog" or (
                self.spec.metrics_collector.source == "Auto"
                and self.spec.objective.metric_name not in {s.name for s in samples}):
            samples = (samples if self.spec.metrics_collector.source == "Auto" else []) + \
                metricslib.parse_log(self.logs.get(t.name, ""), self.wanted)
        return samples

    def continued(self, t: TrialView, history: list[dict]) -> list[dict]:
        """With a checkpoint, an attempt's history continues the one it re-runs (which continues
        the ones before it): the configuration's history."""
        if self.checkpoint is None:
            return history
        previous = self.views.get(t.spec.get("retryOf") or "")
        earlier = (self.current(previous).get("metricHistory") or []) if previous is not None else []
        return checkpoint.merged_history(earlier, history)[-METRIC_HISTORY_LIMIT:] if earlier else history

    def resumed_from(self, t: TrialView, found: dict[str, metricslib.Sample]) -> dict:
        """status.resumedFrom, when the program says it resumed (metric resumed_step)."""
        step = found.get(checkpoint.RESUMED_STEP) if self.checkpoint is not None else None
        if step is None:
            return {}
        resumed = {"attempt": max(t.attempt - 1, 1), "step": int(step.value)}
        if t.spec.get("retryOf"):
            resumed["trial"] = t.spec["retryOf"]
        return {"resumedFrom": resumed}

    def retention(self) -> None:
        """Checkpoint claims that checkpoint.retention removes now."""
        if self.checkpoint is None or self.volumes is None:
            return
        configs = {}
        for key, trials in self.groups().items():
            settled = all(self.phase(x) in TERMINAL_PHASES for x in trials)
            configs[key] = (settled, self.succeeded(trials), key in self.failed_keys)
        self.plan.delete_volumes = checkpoint.volumes_to_delete(self.checkpoint.retention, configs, self.volumes,
                                                                 self.exp.name)

    @staticmethod
    def metric(sample: metricslib.Sample, default_time: str | None) -> dict:
        metric = {"name": sample.name, "value": sample.value}
        if sample.step is not None:
            metric["step"] = sample.step
        if sample.timestamp or default_time:
            metric["timestamp"] = sample.timestamp or default_time
        return metric

    def history(self, samples: list[metricslib.Sample], default_time: str | None) -> list[dict]:
        stepped = [self.metric(s, default_time) for s in samples if s.step is not None]
        return stepped[-METRIC_HISTORY_LIMIT:]

    def check_progress(self, t: TrialView) -> None:
        """Intermediate values of a running trial: recorded, and shown to the early-stopping rule."""
        samples = metricslib.parse_log(self.logs[t.name], self.wanted, timestamps=True)
        if not samples:
            return
        st = self.status[t.name]
        st["metrics"] = [self.metric(s, None) for s in metricslib.latest(samples).values()]
        history = self.continued(t, self.history(samples, None))
        st["metricHistory"] = history or None
        objective = self.spec.objective.metric_name
        steps = {s.step: s.value for s in samples if s.name == objective and s.step is not None}
        if self.checkpoint is not None:
            # Early stopping judges the configuration: its earlier attempts' steps too.
            steps = {**{m["step"]: m["value"] for m in history if m["name"] == objective}, **steps}
        index = t.suggestion_index
        if index is None or not steps or not self.should_stop(index, steps):
            return
        last = steps[max(steps)]
        if self.has_pod[t.name]:
            self.plan.delete_pods.append(t.name)
            self.has_pod[t.name] = False
        self.set_status(t, phase="EarlyStopped", reason="EarlyStopped", objectiveValue=last,
                        message=f"stopped at step {max(steps)} by the {self.spec.early_stopping.algorithm} "
                                f"rule ({objective}={last})")

    def _fail_startup(self, t: TrialView, reason: str, message: str) -> None:
        self.plan.delete_pods.append(t.name)
        self.has_pod[t.name] = False
        self.set_status(t, phase="Failed", reason=reason, message=message or reason, failureClass="Startup",
                        podName=t.name)

    # --- configurations ----------------------------------------------------------------------

    def config_of(self, t: TrialView) -> str:
        return t.labels.get(L_CONFIG) or config_hash(t.values)

    def groups(self) -> dict[str, list[TrialView]]:
        """The experiment's trials by configuration. Made once a round and kept up to date as
        trials are made (new_trial) or adopted (admit_user_trial): callers must not change it."""
        if self._groups is None:
            self._groups = {}
            for t in self.trials + self.new_trials:
                if self.phase(t) != "Refused" and t.owned_by(self.exp.uid):
                    self._groups.setdefault(self.config_of(t), []).append(t)
        return self._groups

    @staticmethod
    def latest(trials: list[TrialView]) -> TrialView:
        """The configuration's most recent run (trials made this round have no timestamp yet)."""
        return max(trials, key=lambda x: (x.meta.get("creationTimestamp") or "~", x.attempt))

    def succeeded(self, trials: list[TrialView]) -> bool:
        return any(self.phase(t) == "Succeeded" for t in trials)

    def admit_user_trial(self, t: TrialView) -> None:
        """A Trial a user created to run a configuration: adopt it, or refuse it with a reason."""
        try:
            values = normalize_assignment(self.spec.parameters, t.values)
        except InvalidConfiguration as e:
            return self.refuse(t, "InvalidParameters", str(e))
        key = config_hash(values)
        same = self.groups().get(key, [])
        if self.succeeded(same):
            winner = next(x.name for x in same if self.phase(x) == "Succeeded")
            return self.refuse(t, "ConfigurationAlreadySucceeded",
                               f"this configuration already succeeded in trial {winner}")
        if any(self.phase(x) not in TERMINAL_PHASES for x in same):
            return self.refuse(t, "ConfigurationActive", "this configuration is already running or queued")
        labels = {**MANAGED_BY, L_EXPERIMENT: self.exp.name, L_CONFIG: key, L_ATTEMPT: str(t.attempt),
                  L_LINEAGE: t.name, L_LAUNCH: "User", L_TRIAL: t.name}
        self.plan.trial_metadata[t.name] = {"labels": labels, "ownerReferences": [self.owner_ref()]}
        # Seen as adopted for the rest of this round (a new body: the given one is the watch's).
        t.body = {**t.body, "metadata": {**t.meta, "labels": {**t.labels, **labels},
                                         "ownerReferences": [self.owner_ref()]}}
        self._groups = None
        self.set_status(t, phase="Pending", reason="Queued", message="waiting for a free trial slot",
                        parameterSummary=summary(values))
        self.plan.events.append(Event(None, "Normal", "ConfigurationAccepted",
                                      f"trial {t.name} will run {summary(values)}"))

    def refuse(self, t: TrialView, reason: str, message: str) -> None:
        self.set_status(t, phase="Refused", reason=reason, message=message)
        # Labelled like the experiment's own trials, so a selector finds it too.
        self.plan.trial_metadata[t.name] = {"labels": {L_EXPERIMENT: self.exp.name}}
        self.plan.events.append(Event(None, "Warning", "ConfigurationRefused", f"trial {t.name}: {message}"))

    def owner_ref(self) -> dict:
        return {"apiVersion": API_VERSION, "kind": "Experiment", "name": self.exp.name, "uid": self.exp.uid,
                "controller": True, "blockOwnerDeletion": True}

    def new_trial(self, name: str, values: dict[str, str], attempt: int, launch: str, lineage: str,
                  retry_of: str | None = None, index: int | None = None, not_before: datetime | None = None,
                  config: str | None = None, annotations: dict[str, str] | None = None) -> TrialView:
        labels = {**MANAGED_BY, L_EXPERIMENT: self.exp.name, L_CONFIG: config or config_hash(values),
                  L_ATTEMPT: str(attempt), L_LINEAGE: lineage, L_LAUNCH: launch, L_TRIAL: name}
        annotations = dict(annotations or {})
        if not_before:
            annotations[A_NOT_BEFORE] = now_iso(not_before)
        spec: dict[str, Any] = {"experimentName": self.exp.name, "attempt": attempt,
                                "parameters": [{"name": k, "value": v} for k, v in values.items()]}
        if retry_of:
            spec["retryOf"] = retry_of
        if index is not None:
            spec["suggestionIndex"] = index
        body = {"apiVersion": API_VERSION, "kind": "Trial",
                "metadata": {"name": name, "namespace": self.exp.namespace, "labels": labels,
                             "annotations": annotations, "ownerReferences": [self.owner_ref()]},
                "spec": spec}
        t = TrialView(name, "", body)
        self.plan.create_trials.append(body)
        self.status[name] = {}
        self.has_pod[name] = False
        self.new_trials.append(t)
        if self._groups is not None:
            self._groups.setdefault(labels[L_CONFIG], []).append(t)
        reason = "Backoff" if not_before and not_before > self.now else "Queued"
        self.status[name].update(phase="Pending", reason=reason, parameterSummary=summary(values),
                                 message=f"retry after {now_iso(not_before)}" if reason == "Backoff" else "")
        return t

    def rerun(self, t: TrialView, launch: str, not_before: datetime | None = None,
              annotations: dict[str, str] | None = None) -> TrialView:
        lineage = t.labels.get(L_LINEAGE) or t.name
        attempt = max(x.attempt for x in self.groups()[self.config_of(t)]) + 1
        new = self.new_trial(f"{lineage}-a{attempt}", t.values, attempt, launch, lineage, retry_of=t.name,
                             index=t.suggestion_index, not_before=not_before, config=self.config_of(t),
                             annotations=annotations)
        self.status[t.name]["retriedBy"] = new.name
        return new

    def handle_restart_requests(self) -> None:
        for t in self.trials:
            if A_RESTART not in t.annotations or not t.owned_by(self.exp.uid):
                continue
            # The condition's message quotes the request's value, so a client can tell which
            # request it answers.
            key = t.annotations[A_RESTART][:REQUEST_KEY_LENGTH]
            request = key[:64]
            self.plan.trial_metadata.setdefault(t.name, {}).setdefault("annotations", {})[A_RESTART] = None
            same = self.groups().get(self.config_of(t), [])
            reruns = [x for x in same if x.spec.get("retryOf") == t.name and x.labels.get(L_LAUNCH) == "Restart"]
            answered = next((x for x in reruns if x.annotations.get(A_RESTART_REQUEST) == key), None)
            if answered is not None:
                # Accepted by a round that stopped before it could remove the annotation (the
                # re-run may even have finished since): this request is answered.
                st = self.status[t.name]
                st["retriedBy"] = st.get("retriedBy") or answered.name
                st["conditions"] = set_condition(st.get("conditions"), "RestartAccepted", True, "Restarted",
                                                 f"restarted as trial {answered.name} (request {request!r}; "
                                                 "each request value runs once: use a new value to restart "
                                                 "again)", self.now)
                continue
            refusal = None
            if self.succeeded(same):
                winner = next(x.name for x in same if self.phase(x) == "Succeeded")
                refusal = ("ConfigurationAlreadySucceeded", f"its configuration already succeeded in trial {winner}")
            elif self.phase(t) not in TERMINAL_PHASES:
                refusal = ("TrialActive", "the trial has not finished")
            elif any(self.phase(x) not in TERMINAL_PHASES for x in same):
                active = next(x.name for x in same if self.phase(x) not in TERMINAL_PHASES)
                refusal = ("ConfigurationActive", f"its configuration is already running in trial {active}")
            if refusal:
                reason, message = refusal
                st = self.status[t.name]
                st["conditions"] = set_condition(st.get("conditions"), "RestartAccepted", False, reason,
                                                 f"restart refused: {message} (request {request!r})", self.now)
                self.plan.events.append(Event(t.name, "Warning", "RestartRefused", f"restart refused: {message}"))
                continue
            new = self.rerun(t, "Restart", annotations={A_RESTART_REQUEST: key})
            st = self.status[t.name]
            st["conditions"] = set_condition(st.get("conditions"), "RestartAccepted", True, "Restarted",
                                             f"restarted as trial {new.name} (request {request!r})", self.now)
            self.plan.events.append(Event(t.name, "Normal", "RestartAccepted", f"restarted as trial {new.name}"))

    def recover_failures(self) -> set[str]:
        """Creates retries and resumed runs; returns the configurations that finally failed."""
        finally_failed: set[str] = set()
        policy = self.spec.retry_policy
        for key, trials in self.groups().items():
            if self.succeeded(trials) or any(self.phase(x) not in TERMINAL_PHASES for x in trials):
                continue
            latest = self.latest(trials)
            st = self.current(latest)
            if st.get("retriedBy") or self.phase(latest) == "EarlyStopped":
                continue  # its re-run exists but is not in view yet, or it was stopped on purpose
            if self.phase(latest) == "Killed" and st.get("reason") in ("Suspended", "ExperimentFinished") \
                    and (self.finished or self.spec.suspend):
                continue  # stopped by the experiment, not failed
            if self.finished:
                finally_failed.add(key)
                continue
            if self.phase(latest) == "Killed" and st.get("reason") == "Suspended":
                if not self.spec.suspend:
                    self.rerun(latest, "Resume")
                continue
            retries = sum(1 for x in trials if x.labels.get(L_LAUNCH) == "Retry")
            if (self.phase(latest) == "Failed" and st.get("failureClass") in policy.retry_on
                    and retries < policy.max_retries and not self.spec.suspend):
                ended = parse_time(st.get("completionTime")) or self.now
                new = self.rerun(latest, "Retry", ended + timedelta(seconds=backoff_seconds(self.spec, retries)))
                self.plan.events.append(Event(None, "Normal", "TrialRetried",
                                              f"trial {latest.name} failed ({st.get('reason')}); retrying as "
                                              f"{new.name} (retry {retries + 1} of {policy.max_retries})"))
                continue
            if self.spec.suspend and self.phase(latest) == "Failed" and st.get("failureClass") in policy.retry_on \
                    and retries < policy.max_retries:
                continue  # decided after resuming
            finally_failed.add(key)
        return finally_failed

    # --- the experiment ----------------------------------------------------------------------

    def best(self) -> TrialView | None:
        best = None
        for t in self.trials:
            value = self.current(t).get("objectiveValue")
            if self.phase(t) == "Succeeded" and value is not None:
                if best is None or is_better(self.spec, value, self.current(best)["objectiveValue"]):
                    best = t
        return best

    def active(self) -> list[TrialView]:
        return [t for t in self.unfinished + self.new_trials
                if self.phase(t) not in TERMINAL_PHASES and t.owned_by(self.exp.uid)]

    def launch(self, suggestion_count: int, configurations: int, suggestions: bool = True) -> tuple[int, int, bool]:
        """Starts pods for queued trials, then for new suggestions, within parallelTrialCount."""
        # Every unfinished pod counts, also one still shutting down after its trial was stopped,
        # but not one stranded on a lost node: it would hold its slot forever.
        busy = {name for name, pod in self.pods.items()
                if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                and not stranded(pod, self.now)}
        busy |= {t.name for t in self.active() if self.has_pod.get(t.name)}
        slots = self.spec.parallel_trial_count - len(busy)
        for t in self.active():
            if slots <= 0:
                break
            if self.has_pod.get(t.name):
                continue
            try:
                not_before = parse_time(t.annotations.get(A_NOT_BEFORE))
            except ValueError:
                not_before = None  # edited by hand into something else: do not wait
            if not_before and not_before > self.now:
                self.plan.requeue((not_before - self.now).total_seconds())
                continue
            self.start(t)
            slots -= 1
        exhausted = False
        known = self.groups()
        asks = 0
        limit = self.spec.max_trial_count * DUPLICATE_SUGGESTION_FACTOR
        while suggestions and slots > 0 and configurations < self.spec.max_trial_count and asks < MAX_ASKS_PER_ROUND:
            if suggestion_count >= limit:
                exhausted = True
                break
            values = self.suggest(suggestion_count)
            if values is None:
                exhausted = True
                break
            index = suggestion_count
            suggestion_count += 1
            asks += 1
            existing = known.get(config_hash(values))
            if existing:
                # A configuration the experiment already has: the sampler hears its result, and
                # nothing runs twice.
                outcome = self.outcome(existing, self.config_of(existing[0]) in self.failed_keys)
                if outcome:
                    self.told(index, outcome)
                continue
            name = f"{self.exp.name}-{index:04d}"
            t = self.new_trial(name, values, 1, "Suggestion", name, index=index)
            self.start(t)
            configurations += 1
            slots -= 1
        return suggestion_count, configurations, exhausted

    def start(self, t: TrialView) -> None:
        self.plan.start_pods.append(t.name)
        self.has_pod[t.name] = True
        self.status[t.name].update(phase="Pending", reason="PodCreated", message="", podName=t.name)

    def told(self, index: int, outcome: Outcome) -> None:
        # Told at once, not after the round: a suggestion asked later in this round must see it,
        # as it would in Optuna's own loop.
        self.tell(index, outcome)
        self.plan.tells.append((index, outcome))

    def outcome(self, trials: list[TrialView], finally_failed: bool = False) -> Outcome | None:
        """What the sampler is told of a configuration once it is decided."""
        for t in trials:
            st = self.current(t)
            if self.phase(t) == "Succeeded" and st.get("objectiveValue") is not None:
                return Outcome(value=st["objectiveValue"], at=st.get("completionTime"))
        latest = self.latest(trials)
        if self.phase(latest) == "EarlyStopped":
            return Outcome(pruned=True, at=self.current(latest).get("completionTime"))
        if finally_failed:
            return Outcome(failed=True, at=self.current(latest).get("completionTime"))
        return None

    def tell_results(self, finally_failed_keys: set[str]) -> None:
        for key, trials in self.groups().items():
            indexes = {t.suggestion_index for t in trials} - {None}
            outcome = self.outcome(trials, key in finally_failed_keys) if indexes else None
            if outcome:
                for i in indexes:
                    self.told(i, outcome)

    def run(self, invalid: list[str]) -> Plan:
        status = dict(self.exp.status)
        conditions = status.get("conditions")
        if not status.get("startTime"):
            status["startTime"] = now_iso(self.now)
        self.observe_trials()
        if invalid:
            message = "; ".join(invalid)
            if (get_condition(conditions, "Failed") or {}).get("message") != message:
                self.plan.events.append(Event(None, "Warning", "InvalidSpec", message))
            self.record_phase(status, "Failed", "InvalidSpec", message)
            return self.finish_status(status)

        self.handle_restart_requests()
        failed_keys = self.failed_keys = self.recover_failures()
        finally_failed = len(failed_keys)
        self.tell_results(failed_keys)

        best = self.best()
        suggestion_count = max([int(status.get("suggestionCount") or 0)] + [
            t.suggestion_index + 1 for t in self.trials if t.suggestion_index is not None and t.owned_by(self.exp.uid)])
        configurations = len(self.groups())

        if self.finished:
            # A finished experiment suggests nothing and retries nothing, but still runs the
            # restarts and configurations users ask for.
            if not self.spec.suspend:
                self.launch(suggestion_count, configurations, suggestions=False)
            configurations = len(self.groups())
        else:
            phase, reason, message, suggestion_count, configurations = self.advance(
                best, finally_failed, suggestion_count, configurations)
            if phase in FINISHED_PHASES:
                for t in self.active():
                    self.kill(t, "ExperimentFinished", f"the experiment finished ({reason})")
                status["completionTime"] = now_iso(self.now)
                self.plan.events.append(Event(None, "Normal" if phase == "Succeeded" else "Warning",
                                              f"Experiment{phase}", f"{reason}: {message}"))
            elif status.get("phase") == "Suspended" and phase == "Running":
                self.plan.events.append(Event(None, "Normal", "Resumed", "spec.suspend is false"))
            elif phase == "Suspended" and status.get("phase") != "Suspended":
                self.plan.events.append(Event(None, "Normal", "Suspended", "running trials were stopped"))
            self.record_phase(status, phase, reason, message)

        status.update(suggestionCount=suggestion_count, configurations=configurations,
                      failedConfigurations=finally_failed)
        self.retention()
        if best is not None:
            bst = self.current(best)
            status["currentOptimalTrial"] = {
                "trialName": best.name, "objectiveValue": bst["objectiveValue"],
                "parameters": best.spec.get("parameters") or [],
                "metrics": [{"name": m["name"], "value": m["value"]} for m in bst.get("metrics") or []]}
        return self.finish_status(status)

    def advance(self, best: TrialView | None, finally_failed: int, suggestion_count: int,
                configurations: int) -> tuple[str, str, str, int, int]:
        """The next phase of a running experiment, launching what it may on the way."""
        max_failed = self.spec.max_failed_trial_count
        if best is not None and goal_reached(self.spec, self.current(best)["objectiveValue"]):
            return ("Succeeded", "GoalReached", f"trial {best.name} reached the goal: "
                    f"{self.spec.objective.metric_name}={self.current(best)['objectiveValue']}",
                    suggestion_count, configurations)
        if max_failed is not None and finally_failed > max_failed:
            return ("Failed", "TooManyFailures", f"{finally_failed} configurations failed, more than "
                    f"maxFailedTrialCount ({max_failed})", suggestion_count, configurations)
        if self.spec.suspend:
            for t in self.active():
                if self.has_pod.get(t.name):
                    self.kill(t, "Suspended", "the experiment was suspended; it re-runs on resume")
            return "Suspended", "Suspended", "spec.suspend is true", suggestion_count, configurations
        suggestion_count, configurations, exhausted = self.launch(suggestion_count, configurations)
        if not self.active():
            if exhausted and configurations < self.spec.max_trial_count:
                return ("Succeeded", "SearchSpaceExhausted", f"the search space is exhausted after "
                        f"{configurations} configurations", suggestion_count, configurations)
            if configurations >= self.spec.max_trial_count:
                return ("Succeeded", "MaxTrialsReached", f"{configurations} configurations tried "
                        "(maxTrialCount)", suggestion_count, configurations)
        return ("Running", "Running", f"{configurations} of {self.spec.max_trial_count} configurations "
                "launched", suggestion_count, configurations)

    def record_phase(self, status: dict, phase: str, reason: str, message: str) -> None:
        """Sets the phase, its history and the conditions (one per phase, exactly one True)."""
        if status.get("phase") != phase:
            history = list(status.get("statusHistory") or [])
            history.append({"phase": phase, "reason": reason, "time": now_iso(self.now)})
            status["statusHistory"] = history[-STATUS_HISTORY_LIMIT:]
        status["phase"] = phase
        for type_ in ("Running", "Suspended", "Succeeded", "Failed"):
            status["conditions"] = set_condition(status.get("conditions"), type_, phase == type_, reason,
                                                 message if phase == type_ else "", self.now,
                                                 self.exp.generation)

    def finish_status(self, status: dict) -> Plan:
        counts = {"Pending": 0, "Running": 0, "Succeeded": 0, "Failed": 0, "Killed": 0, "EarlyStopped": 0}
        retried = 0
        for t in self.trials + self.new_trials:
            phase = self.phase(t)
            if phase in counts and t.owned_by(self.exp.uid):
                counts[phase] += 1
                retried += t.labels.get(L_LAUNCH) == "Retry"
        status.update(trials=sum(counts.values()), trialsPending=counts["Pending"],
                      trialsRunning=counts["Running"], trialsSucceeded=counts["Succeeded"],
                      trialsFailed=counts["Failed"], trialsKilled=counts["Killed"],
                      trialsEarlyStopped=counts["EarlyStopped"], trialsRetried=retried,
                      observedGeneration=self.exp.generation)
        self.plan.experiment_status = status
        for name, st in self.status.items():
            view = self.views.get(name)
            if view is not None and st != view.status:
                self.plan.trial_status[name] = st
        for t in self.new_trials:
            t.body["status"] = self.status[t.name]
        return self.plan


def restore_suggester(spec: ExperimentSpec, trials: list[TrialView], status: Mapping[str, Any],
                      warm: Sequence[dict] = ()) -> Suggester:
    """A new process's study for an experiment: warm-started from the succeeded trials of
    `warm` (another experiment's Trial bodies), then replayed from the experiment's own Trials."""
    suggester = Suggester(spec)
    suggester.warm_start([
        ({p["name"]: p["value"] for p in t["spec"].get("parameters") or []}, t["status"]["objectiveValue"])
        for t in warm if (t.get("status") or {}).get("phase") == "Succeeded"
        and t["status"].get("objectiveValue") is not None])
    recorded = {int(t.spec["suggestionIndex"]): Recorded(t.values, t.meta.get("creationTimestamp"))
                for t in trials if t.spec.get("suggestionIndex") is not None and t.attempt == 1}
    suggester.replay(recorded, int(status.get("suggestionCount") or 0))
    return suggester


def plan(exp: ExperimentView, trials: list[TrialView], pods: dict[str, dict], logs: dict[str, str],
         now: datetime, suggest: Callable[[int], dict[str, str] | None],
         should_stop: Callable[[int, dict[int, float]], bool] | None = None,
         tell: Callable[[int, Outcome], None] | None = None, volumes: set[str] | None = None) -> Plan:
    """`suggest(i)` gives suggestion i's values (None when the space is used up);
    `should_stop(i, {step: value})` says whether suggestion i's running trial should stop early;
    `tell(i, outcome)` hears each decided result before any later suggestion is asked (the same
    results are also listed in plan.tells); `volumes`, the checkpoint claims that exist (None: not
    known, so none is removed)."""
    return _Planner(exp, trials, pods, logs, now, suggest, should_stop or (lambda i, v: False),
                    tell or (lambda i, o: None), volumes).run(validate_spec(exp.spec))

# One piece: one round's data (views, Plan) and RoundState, the helpers every planner step shares.
"""One round's state: the views of the experiment and its trials, the Plan being built, and the
helpers every step uses (statuses, configurations, new trials and re-runs).

The bottom of the planner: the step modules (admission, queue, progress, lifecycle, launch,
experiment, ...) are plain functions that take a RoundState first, and this module imports none of
them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from operator import attrgetter
from typing import Any

from hpo_operator.api.parameters import parameters_of
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.api.status import ExperimentStatus, TrialStatus
from hpo_operator.api.vocabulary import (
    A_NOT_BEFORE,
    API_VERSION,
    FINISHED_PHASES,
    L_ATTEMPT,
    L_CONFIG,
    L_EXPERIMENT,
    L_GENERATION,
    L_LAUNCH,
    L_LINEAGE,
    L_MEMBER,
    L_TRIAL,
    MANAGED_BY,
    TERMINAL_PHASES,
    LaunchReason,
    TrialPhase,
)
from hpo_operator.core import metrics, podstate, times
from hpo_operator.core.authorship import inherited
from hpo_operator.core.conditions import get_condition, set_condition
from hpo_operator.core.podstate import PodObservation
from hpo_operator.core.space import config_hash, summary
from hpo_operator.search.suggest import Outcome
from hpo_operator.workloads import checkpoint
from hpo_operator.workloads.observe import Observed
from hpo_operator.workloads.population import mounted
from hpo_operator.workloads.requests import requested

REQUEST_KEY_LENGTH = 1024
MAX_ASKS_PER_ROUND = 1000
# A sampler that keeps proposing configurations the experiment already has is treated as having
# exhausted the space after this many suggestions per configuration budget.
DUPLICATE_SUGGESTION_FACTOR = 10


class TrialView:
    """A Trial's body with what the planner reads of it, each worked out once: an experiment holds
    thousands of Trials, and the same view serves every round until the Trial changes."""

    def __init__(self, name: str, uid: str, body: dict[str, Any]):
        self.name = name
        self.uid = uid
        self.body = body

    def __repr__(self) -> str:
        return f"TrialView({self.name!r}, {self.uid!r})"

    @property
    def body(self) -> dict[str, Any]:
        return self._body

    @body.setter
    def body(self, body: dict[str, Any]) -> None:
        self._body = body
        self.meta: dict[str, Any] = body.get("metadata") or {}
        self.spec: dict[str, Any] = body.get("spec") or {}
        self.status: dict[str, Any] = body.get("status") or {}
        self.labels: dict[str, str] = self.meta.get("labels") or {}
        self.annotations: dict[str, str] = self.meta.get("annotations") or {}
        self.phase: str = self.status.get("phase") or "Pending"
        # Read for every trial several times a round: worked out with the body, not on first use.
        self.controllers: tuple[str, ...] = tuple(
            r.get("uid") for r in self.meta.get("ownerReferences") or [] if r.get("controller")
        )
        self.age: tuple[str, str] = (self.meta.get("creationTimestamp") or "", self.name)
        # What a rule works out of this body once (e.g. the objectives' curve for early stopping).
        self.memo: dict[str, Any] = {}
        for cached in [k for k in self.__dict__ if k in CACHED]:
            del self.__dict__[cached]

    @cached_property
    def typed_status(self) -> TrialStatus:
        """The status as the model reads it; the planner copies it before changing it."""
        return TrialStatus.model_validate(self.status)

    @cached_property
    def attempt(self) -> int:
        return int(self.spec.get("attempt") or 1)

    @cached_property
    def values(self) -> dict[str, str]:
        return parameters_of(self.spec.get("parameters"))

    def owned_by(self, uid: str) -> bool:
        return uid in self.controllers

    def owned_by_another(self, uid: str) -> bool:
        """Controlled by something else, e.g. an experiment of the same name that was deleted."""
        return any(c != uid for c in self.controllers)

    @cached_property
    def segment(self) -> dict[str, Any] | None:
        """Population-based training: the segment this Trial trains (spec.segment), as written."""
        segment = self.spec.get("segment")
        return segment if isinstance(segment, dict) else None

    @cached_property
    def suggestion_index(self) -> int | None:
        """The suggestion this trial runs; never taken from a trial a user wrote."""
        index = self.spec.get("suggestionIndex")
        if index is None or self.labels.get(L_LAUNCH) in (None, LaunchReason.user):
            return None
        return int(index)


def kept_views(bodies: list[dict[str, Any]], previous: Mapping[str, TrialView]) -> dict[str, TrialView]:
    """A TrialView per Trial body, by name: the previous round's where the body is the very same
    object, a new one where it changed. Informers replace an object on each of its events and never
    change one in place, so a kept view (and what it worked out: TrialView.memo, its cached
    properties) is exactly the view of its body made afresh; only the changed trials cost a parse."""
    views = {}
    for body in bodies:
        name = body["metadata"]["name"]
        view = previous.get(name)
        if view is None or view._body is not body:
            view = TrialView(name, body["metadata"].get("uid", ""), body)
        views[name] = view
    return views


# The reason of a trial the experiment's suspension stopped (Killed), or held in its queue (Queued).
SUSPENDED = "Suspended"
# The reason of a trial stopped because its experiment ended (Killed).
FINISHED = "ExperimentFinished"

# The order of a round's trials: by creation, then name.
AGE = attrgetter("age")

# What a TrialView works out lazily, forgotten when its body is replaced.
CACHED = frozenset(name for name, value in vars(TrialView).items() if isinstance(value, cached_property))


@dataclass(frozen=True)
class Refusal:
    """Why a trial's workload was not created and never will be as it is: the API server refused
    it as invalid (InvalidPod) or forbidden (Forbidden), or its author could not be verified
    (AuthorUnknown). The trial fails with this reason and message (lifecycle.refused_create)."""

    reason: str
    message: str


@dataclass
class Event:
    target: str | None  # a trial name, or None for the experiment
    type: str
    reason: str
    message: str


@dataclass
class Plan:
    """What one round changes. The statuses are models, dumped (Model.dump) only when apply.stages()
    writes them; trial_status holds only the trials whose status this round changed."""

    trial_status: dict[str, TrialStatus] = field(default_factory=dict)
    trial_metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    create_trials: list[dict[str, Any]] = field(default_factory=list)
    # By trial name: what a trial runs (a pod, a Job or another resource) to create or to delete.
    start_workloads: list[str] = field(default_factory=list)
    delete_workloads: list[str] = field(default_factory=list)
    # Workloads held in (False) or given back to (True) their Kueue queue while the experiment is
    # suspended: the Kueue Workload's spec.active (queue.suspend_in_queue).
    queue_activations: dict[str, bool] = field(default_factory=dict)
    delete_volumes: list[str] = field(default_factory=list)  # checkpoint claims retention removes
    experiment_status: ExperimentStatus = field(default_factory=ExperimentStatus)
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
    status: dict[str, Any]


class _Statuses(dict[str, TrialStatus]):
    """Trial statuses as this round leaves them. A trial's is copied from its view when first
    looked up, so that a round copies the statuses it may change, not those of every trial."""

    def __init__(self, views: dict[str, TrialView]):
        super().__init__()
        self.views = views

    def __missing__(self, name: str) -> TrialStatus:
        # A shallow copy is enough, and a deep one was a quarter of a round's time: the steps
        # replace a status's lists and conditions (set_condition makes new ones), never change
        # them in place.
        status = self[name] = self.views[name].typed_status.model_copy()
        return status


def wanted_metrics(spec: ExperimentSpec) -> list[str]:
    """The metrics read from trials' output: every one the statuses keep, and with a checkpoint the
    step a resumed program says it resumed from."""
    names = spec.objective.recorded_names
    if spec.trial_template.checkpoint is not None:
        names.append(checkpoint.RESUMED_STEP)
    return names


class RoundState:
    """What every step reads and writes during one round; plan() makes one per round."""

    def __init__(
        self,
        exp: ExperimentView,
        trials: list[TrialView],
        pods: dict[str, dict[str, Any]],
        outputs: Mapping[str, metrics.Output],
        now: datetime,
        suggest: Callable[[int], dict[str, str] | None],
        should_stop: Callable[[int, dict[int, float]], bool],
        tell: Callable[[int, Outcome], None],
        volumes: set[str] | None = None,
        observations: Mapping[str, PodObservation] | None = None,
        refused: Mapping[str, Refusal] | None = None,
        workloads: Mapping[str, Observed] | None = None,
        told: Set[int] | None = None,
    ):
        self.exp, self.spec, self.now = exp, exp.spec, now
        # What each Job or resource trial's workload says (workloads.observe), by trial name: read
        # instead of its pod's status (see workload_deleting() and the methods after it).
        self.workloads = workloads or {}
        self.volumes = volumes
        # What each unfinished trial's pod says (lifecycle.observe_pods), and the creates the API
        # server (or the author check) refused since the last round, by trial name.
        self.observations = observations or {}
        self.refused = refused or {}
        # The suggestions whose result the search algorithm holds (RoundInput.told).
        self.told: Set[int] = told or frozenset()
        self.should_stop, self.tell = should_stop, tell
        self.trials = sorted(trials, key=AGE)
        # What each trial's output reported, read (lifecycle.read_outputs, or the loop off its event loop).
        self.pods, self.outputs, self.suggest = pods, outputs, suggest
        self.plan = Plan()
        self.views = {t.name: t for t in self.trials}
        self.status = _Statuses(self.views)
        # Only these can be active this round (a trial never leaves a final phase), with the trials
        # made this round.
        self.unfinished = [t for t in self.trials if t.phase not in TERMINAL_PHASES]
        self.has_pod: dict[str, bool] = {t.name: t.name in pods for t in self.trials}
        self.exp_status = ExperimentStatus.model_validate(exp.status)
        failed = get_condition(self.exp_status.conditions, "Failed")
        self.finished = self.exp_status.phase in FINISHED_PHASES and (failed is None or failed.reason != "InvalidSpec")
        self.wanted = wanted_metrics(self.spec)
        self.checkpoint = self.spec.trial_template.checkpoint
        self.new_trials: list[TrialView] = []
        # Suggestions asked and configurations launched so far (launch.count_launched() sets them,
        # launch.launch() counts on); the configurations that finally failed (plan() sets them).
        self.suggestion_count = 0
        self.configurations = 0
        self.failed_keys: set[str] = set()
        self._groups: dict[str, list[TrialView]] | None = None

    def current(self, t: TrialView) -> TrialStatus:
        """The trial's status as this round has it so far, for reading (self.status[name] to change it)."""
        st = self.status.get(t.name)
        return t.typed_status if st is None else st

    def phase(self, t: TrialView) -> str:
        # The hottest read of a round (several per trial): from the view unless changed this round.
        st = self.status.get(t.name)
        return t.phase if st is None else (st.phase or "Pending")

    def update(self, t: TrialView, **changes: Any) -> TrialStatus:
        """Changes status fields (by their model names), and nothing else."""
        st = self.status[t.name]
        for key, value in changes.items():
            setattr(st, key, value)
        return st

    def set_status(self, t: TrialView, ended_at: str | None = None, **changes: Any) -> None:
        """Changes status fields and keeps what follows from them: the completion time, how long its
        workload ran (from its start to `ended_at`, the container's own finish when the pod reports
        one, else now: the moment the operator stopped it or saw it end), the Succeeded condition,
        and an Event when the trial finishes."""
        before = self.status[t.name].phase
        st = self.update(t, **changes)
        phase = st.phase or "Pending"
        done = phase in TERMINAL_PHASES
        if done and not st.completion_time:
            st.completion_time = times.iso(self.now)
        if done and st.run_seconds is None and st.start_time:
            st.run_seconds = run_seconds(st.start_time, ended_at, self.now)
        succeeded = "True" if phase == TrialPhase.succeeded else ("False" if done else "Unknown")
        st.conditions = set_condition(
            st.conditions, "Succeeded", succeeded, st.reason or phase, st.message or "", self.now
        )
        if before != phase and done:
            kind = "Normal" if phase in (TrialPhase.succeeded, TrialPhase.early_stopped) else "Warning"
            text = st.message or st.reason or phase
            if phase == TrialPhase.succeeded:
                if self.spec.objective.multi:
                    text = f"objectives {st.objective_summary}"
                else:
                    text = f"objective {self.spec.objective.metric_name}={st.objective_value}"
                if st.feasible is False:
                    text += " (infeasible: outside the constraints)"
            self.plan.events.append(Event(t.name, kind, f"Trial{phase}", text))

    # What a trial's workload is doing, from its pod, or from what its Job or resource says.

    def workload_deleting(self, name: str) -> bool:
        seen = self.workloads.get(name)
        return seen.deleting if seen is not None else bool(self.pods[name]["metadata"].get("deletionTimestamp"))

    def workload_finished(self, name: str) -> bool:
        """Nothing of the trial's workload runs any more (podstate.finished)."""
        seen = self.workloads.get(name)
        return seen.finished if seen is not None else podstate.finished(self.pods[name])

    def holds_slot(self, name: str) -> bool:
        """The workload has not finished, and is not stranded on a lost node (it would hold its slot
        forever)."""
        seen = self.workloads.get(name)
        if seen is not None:
            return seen.holds_slot
        pod = self.pods[name]
        return (pod.get("status") or {}).get("phase") not in podstate.FINISHED_POD_PHASES and not podstate.stranded(
            pod, self.now
        )

    def workload_mounted(self, name: str) -> bool:
        """The workload's primary pod has mounted its volumes (population.mounted)."""
        seen = self.workloads.get(name)
        return seen.mounted if seen is not None else mounted(self.pods.get(name))

    def stop_workload(self, t: TrialView) -> None:
        """Deletes what the trial runs, if it runs anything; it holds no slot from here on."""
        if self.has_pod[t.name]:
            self.plan.delete_workloads.append(t.name)
            self.has_pod[t.name] = False

    def kill(self, t: TrialView, reason: str, message: str) -> None:
        self.stop_workload(t)
        self.set_status(t, phase=TrialPhase.killed, reason=reason, message=message, failure_class=None)

    def config_of(self, t: TrialView) -> str:
        return t.labels.get(L_CONFIG) or config_hash(t.values)

    def groups(self) -> dict[str, list[TrialView]]:
        """The experiment's trials by configuration. Made once a round and kept up to date as
        trials are made (new_trial) or adopted (regroup): callers must not change it."""
        if self._groups is None:
            groups: dict[str, list[TrialView]] = {}
            status, uid = self.status, self.exp.uid
            for t in self.trials + self.new_trials:
                st = status.get(t.name)  # (self.phase(t) and self.config_of(t), inlined: a loop over every trial)
                phase = t.phase if st is None else (st.phase or "Pending")
                if phase != TrialPhase.refused and uid in t.controllers:
                    groups.setdefault(t.labels.get(L_CONFIG) or config_hash(t.values), []).append(t)
            self._groups = groups
        return self._groups

    def regroup(self) -> None:
        """A trial's configuration or owner changed (a user's trial adopted): groups() works the
        configurations out again when next asked."""
        self._groups = None

    @staticmethod
    def latest(trials: list[TrialView]) -> TrialView:
        """The configuration's most recent run (trials made this round have no timestamp yet)."""
        return max(trials, key=lambda x: (x.meta.get("creationTimestamp") or "~", x.attempt))

    def succeeded(self, trials: list[TrialView]) -> bool:
        return any(self.phase(t) == TrialPhase.succeeded for t in trials)

    def owner_ref(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": "Experiment",
            "name": self.exp.name,
            "uid": self.exp.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def new_trial(
        self,
        name: str,
        values: dict[str, str],
        attempt: int,
        launch: LaunchReason,
        lineage: str,
        retry_of: str | None = None,
        index: int | None = None,
        not_before: datetime | None = None,
        config: str | None = None,
        annotations: dict[str, str] | None = None,
        segment: dict[str, Any] | None = None,
    ) -> TrialView:
        labels = {
            **MANAGED_BY,
            L_EXPERIMENT: self.exp.name,
            L_CONFIG: config or config_hash(values),
            L_ATTEMPT: str(attempt),
            L_LINEAGE: lineage,
            L_LAUNCH: launch,
            L_TRIAL: name,
        }
        if segment is not None:
            labels[L_MEMBER], labels[L_GENERATION] = str(segment["member"]), str(segment["generation"])
        annotations = dict(annotations or {})
        if not_before:
            annotations[A_NOT_BEFORE] = times.iso(not_before)
        spec: dict[str, Any] = {
            "experimentName": self.exp.name,
            "attempt": attempt,
            "parameters": [{"name": k, "value": v} for k, v in values.items()],
        }
        if retry_of:
            spec["retryOf"] = retry_of
        if index is not None:
            spec["suggestionIndex"] = index
        if segment is not None:
            spec["segment"] = dict(segment)
        body = {
            "apiVersion": API_VERSION,
            "kind": "Trial",
            "metadata": {
                "name": name,
                "namespace": self.exp.namespace,
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [self.owner_ref()],
            },
            "spec": spec,
        }
        t = TrialView(name, "", body)
        self.plan.create_trials.append(body)
        reason = "Backoff" if not_before and not_before > self.now else "WaitingForSlot"
        self.status[name] = TrialStatus(
            phase=TrialPhase.pending,
            reason=reason,
            parameter_summary=summary(values),
            message=f"retry after {times.iso(not_before)}" if reason == "Backoff" else "",
        )
        self.has_pod[name] = False
        self.new_trials.append(t)
        if self._groups is not None:
            self._groups.setdefault(labels[L_CONFIG], []).append(t)
        return t

    def rerun(
        self,
        t: TrialView,
        launch: LaunchReason,
        not_before: datetime | None = None,
        annotations: dict[str, str] | None = None,
    ) -> TrialView:
        lineage = t.labels.get(L_LINEAGE) or t.name
        attempt = max(x.attempt for x in self.groups()[self.config_of(t)]) + 1
        # A re-run is made for the author of what it re-runs (a user's Trial, a restart), whose
        # rights its workload is checked against; the given annotations (a restart's) come last.
        annotations = {**inherited(t.annotations), **(annotations or {})}
        new = self.new_trial(
            f"{lineage}-a{attempt}",
            t.values,
            attempt,
            launch,
            lineage,
            retry_of=t.name,
            index=t.suggestion_index,
            not_before=not_before,
            config=self.config_of(t),
            annotations=annotations,
            segment=t.segment,  # a segment's re-run trains the same segment, from the same start
        )
        self.update(t, retried_by=new.name)
        return new

    def active(self) -> list[TrialView]:
        return [
            t
            for t in self.unfinished + self.new_trials
            if self.phase(t) not in TERMINAL_PHASES and t.owned_by(self.exp.uid)
        ]

    def start(self, t: TrialView) -> None:
        self.plan.start_workloads.append(t.name)
        self.has_pod[t.name] = True
        # What its workload requests, recorded now: the template may change later, and the compute
        # a budget counts is what this run asked for.
        self.update(
            t,
            phase=TrialPhase.pending,
            reason="PodCreated",
            message="",
            pod_name=t.name,
            requests=requested(self.spec, self.exp.name, t.body) or None,
        )


def run_seconds(start: str, ended_at: str | None, now: datetime) -> float | None:
    """Seconds from a trial's start to its end (`ended_at`, else now); None for an unreadable start."""
    began = times.parse_or_none(start)
    if began is None:
        return None
    end = times.parse_or_none(ended_at) or now
    return max(0.0, round((end - began).total_seconds(), 3))

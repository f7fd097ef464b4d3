"""The experiment: validation, the best trial, the phase and its conditions, the status, and
checkpoint retention; `run()` takes one round through every step in order."""

from __future__ import annotations

import re
from typing import NamedTuple

from hpo_operator.workloads import checkpoint
from hpo_operator.api.vocabulary import EXPERIMENT_PHASES, FINISHED_PHASES, L_LAUNCH, TERMINAL_PHASES, ExperimentPhase
from hpo_operator.core import times
from hpo_operator.core.conditions import get_condition, set_condition
from hpo_operator.api.spec import PLACEHOLDER_PATTERN, ExperimentSpec, ParameterAssignment
from hpo_operator.api.status import STATUS_HISTORY_LIMIT, ExperimentStatus, Metric, OptimalTrial, PhaseChange
from .state import Event, Plan, RoundState, TrialView


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


def is_better(spec: ExperimentSpec, a: float, b: float) -> bool:
    return a < b if spec.objective.type == "minimize" else a > b


def goal_reached(spec: ExperimentSpec, value: float) -> bool:
    goal = spec.objective.goal
    if goal is None:
        return False
    return value <= goal if spec.objective.type == "minimize" else value >= goal


class Decision(NamedTuple):
    """The experiment's phase after a round, with the reason and message of its condition."""
    phase: str
    reason: str
    message: str


class ExperimentSteps(RoundState):
    def best(self) -> TrialView | None:
        best = None
        for t in self.trials:
            value = self.current(t).objective_value
            if self.phase(t) == "Succeeded" and value is not None:
                if best is None or is_better(self.spec, value, self.current(best).objective_value):
                    best = t
        return best

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

    def run(self, invalid: list[str]) -> Plan:
        status = self.exp_status.model_copy()  # shallow: see _Statuses
        if not status.start_time:
            status.start_time = times.iso(self.now)
        self.observe_trials()
        if invalid:
            message = "; ".join(invalid)
            failed = get_condition(status.conditions, "Failed")
            if failed is None or failed.message != message:
                self.plan.events.append(Event(None, "Warning", "InvalidSpec", message))
            self.record_phase(status, Decision("Failed", "InvalidSpec", message))
            return self.finish_status(status)

        self.handle_restart_requests()
        failed_keys = self.failed_keys = self.recover_failures()
        self.tell_results(failed_keys)

        best = self.best()
        self.suggestion_count = max([status.suggestion_count or 0] + [
            t.suggestion_index + 1 for t in self.trials if t.suggestion_index is not None and t.owned_by(self.exp.uid)])
        self.configurations = len(self.groups())

        if self.finished:
            # A finished experiment suggests nothing and retries nothing, but still runs the
            # restarts and configurations users ask for.
            if not self.spec.suspend:
                self.launch(suggestions=False)
            self.configurations = len(self.groups())
        else:
            decision = self.advance(best, len(failed_keys))
            if decision.phase in FINISHED_PHASES:
                for t in self.active():
                    self.kill(t, "ExperimentFinished", f"the experiment finished ({decision.reason})")
                status.completion_time = times.iso(self.now)
                self.plan.events.append(Event(None, "Normal" if decision.phase == "Succeeded" else "Warning",
                                              f"Experiment{decision.phase}", f"{decision.reason}: {decision.message}"))
            elif status.phase == "Suspended" and decision.phase == "Running":
                self.plan.events.append(Event(None, "Normal", "Resumed", "spec.suspend is false"))
            elif decision.phase == "Suspended" and status.phase != "Suspended":
                self.plan.events.append(Event(None, "Normal", "Suspended", "running trials were stopped"))
            self.record_phase(status, decision)

        status.suggestion_count = self.suggestion_count
        status.configurations = self.configurations
        status.failed_configurations = len(failed_keys)
        self.retention()
        if best is not None:
            bst = self.current(best)
            status.current_optimal_trial = OptimalTrial(
                trial_name=best.name, objective_value=bst.objective_value,
                parameters=[ParameterAssignment(name=k, value=v) for k, v in best.values.items()],
                metrics=[Metric(name=m.name, value=m.value) for m in bst.metrics or []])
        return self.finish_status(status)

    def advance(self, best: TrialView | None, finally_failed: int) -> Decision:
        """The next phase of a running experiment, launching what it may on the way."""
        max_failed = self.spec.max_failed_trial_count
        if best is not None and goal_reached(self.spec, self.current(best).objective_value):
            return Decision("Succeeded", "GoalReached", f"trial {best.name} reached the goal: "
                            f"{self.spec.objective.metric_name}={self.current(best).objective_value}")
        if max_failed is not None and finally_failed > max_failed:
            return Decision("Failed", "TooManyFailures", f"{finally_failed} configurations failed, more than "
                            f"maxFailedTrialCount ({max_failed})")
        if self.spec.suspend:
            for t in self.active():
                if self.has_pod.get(t.name):
                    self.kill(t, "Suspended", "the experiment was suspended; it re-runs on resume")
            return Decision("Suspended", "Suspended", "spec.suspend is true")
        exhausted = self.launch()
        if not self.active():
            if exhausted and self.configurations < self.spec.max_trial_count:
                return Decision("Succeeded", "SearchSpaceExhausted", f"the search space is exhausted after "
                                f"{self.configurations} configurations")
            if self.configurations >= self.spec.max_trial_count:
                return Decision("Succeeded", "MaxTrialsReached", f"{self.configurations} configurations tried "
                                "(maxTrialCount)")
        return Decision("Running", "Running", f"{self.configurations} of {self.spec.max_trial_count} "
                        "configurations launched")

    def record_phase(self, status: ExperimentStatus, decision: Decision) -> None:
        """Sets the phase, its history and the conditions (one per phase, exactly one True)."""
        phase, reason, message = decision
        if status.phase != phase:
            history = [*(status.status_history or []), PhaseChange(phase=phase, reason=reason, time=times.iso(self.now))]
            status.status_history = history[-STATUS_HISTORY_LIMIT:]
        status.phase = phase
        # One condition per phase the experiment can be in after a round.
        for type_ in (p for p in EXPERIMENT_PHASES if p != ExperimentPhase.created):
            status.conditions = set_condition(status.conditions, type_, phase == type_, reason,
                                              message if phase == type_ else "", self.now, self.exp.generation)

    def finish_status(self, status: ExperimentStatus) -> Plan:
        counts = {"Pending": 0, "Running": 0, "Succeeded": 0, "Failed": 0, "Killed": 0, "EarlyStopped": 0}
        retried = 0
        for t in self.trials + self.new_trials:
            phase = self.phase(t)
            if phase in counts and t.owned_by(self.exp.uid):
                counts[phase] += 1
                retried += t.labels.get(L_LAUNCH) == "Retry"
        status.trials = sum(counts.values())
        status.trials_pending, status.trials_running = counts["Pending"], counts["Running"]
        status.trials_succeeded, status.trials_failed = counts["Succeeded"], counts["Failed"]
        status.trials_killed, status.trials_early_stopped = counts["Killed"], counts["EarlyStopped"]
        status.trials_retried = retried
        status.observed_generation = self.exp.generation
        self.plan.experiment_status = status.dump()
        # Typed in, dumped out: only what changed is dumped, the statuses of a round's few changed
        # trials rather than of all the experiment's.
        for name, st in self.status.items():
            view = self.views.get(name)
            if view is not None and st != view.typed_status:
                self.plan.trial_status[name] = st.dump()
        for t in self.new_trials:
            t.body["status"] = self.status[t.name].dump()
        return self.plan

"""Lifecycle: what each trial's pod (or Job, or resource) says becomes the trial's status: results and
metrics, failures and their class, timeouts, startup trouble, early stopping."""

from __future__ import annotations

from typing import Any

from hpo_operator.workloads import checkpoint
from hpo_operator.core import metrics
from hpo_operator.api.vocabulary import TERMINAL_PHASES
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.api.status import METRIC_HISTORY_LIMIT, Metric, ResumedFrom
from hpo_operator.core import times
from hpo_operator.core.podstate import finished, observe
from hpo_operator.core.space import summary
from .state import RoundState, TrialView


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
    if obs.phase == "Succeeded" and metrics.log_needed(spec.metrics_collector.source, obs.termination_message,
                                                         spec.objective.metric_name):
        return "final"
    return None


class Lifecycle(RoundState):
    def observe_trials(self) -> None:
        for t in self.trials:
            if not self.current(t).parameter_summary and t.values:
                self.update(t, parameter_summary=summary(t.values))
            if self.phase(t) in TERMINAL_PHASES:
                pod = self.pods.get(t.name)
                if pod is not None and not pod["metadata"].get("deletionTimestamp") and (
                        not finished(pod) or self.spec.trial_template.pod_retention == "Delete"):
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
                    self.set_status(t, phase="Failed", reason="PodDeleted", failure_class="Infrastructure",
                                    message="the trial's pod disappeared while it was running")
                continue
            self.observe_pod(t, pod)

    def observe_pod(self, t: TrialView, pod: dict) -> None:
        obs = observe(pod, self.spec.trial_template.primary_container_name, self.now)
        if obs.recheck_in is not None:
            self.plan.requeue(obs.recheck_in)
        # A Job's or resource's primary pod has a name of its own.
        common: dict[str, Any] = dict(pod_name=pod["metadata"].get("name") or t.name, exit_code=obs.exit_code)
        if obs.start_time:
            common["start_time"] = obs.start_time
        if obs.phase == "Failed" and self.checkpoint is not None:
            # What the failed attempt reported, so that the attempt resuming it continues it.
            samples = self.final_samples(t, obs)
            history = self.continued(t, self.history(samples, obs.finish_time))
            if history:
                common["metric_history"] = history
            found = metrics.latest(samples)
            if found:
                common["metrics"] = [self.metric(s, obs.finish_time) for s in found.values()]
            common.update(self.resumed_from(t, found))
        if obs.phase == "Succeeded":
            samples = self.final_samples(t, obs)
            found = metrics.latest(samples)
            reported = [self.metric(s, obs.finish_time) for s in found.values()]
            objective = found.get(self.spec.objective.metric_name)
            history = self.continued(t, self.history(samples, obs.finish_time))
            if history:
                common["metric_history"] = history
            common.update(self.resumed_from(t, found))
            if objective is None:
                self.set_status(t, phase="Failed", reason="MetricsUnavailable", failure_class="MetricsUnavailable",
                                message=f"the trial succeeded but reported no {self.spec.objective.metric_name} "
                                        f"metric ({self.spec.metrics_collector.source})",
                                metrics=reported or None, **common)
            else:
                self.set_status(t, phase="Succeeded", reason="Completed", message="", failure_class=None,
                                objective_value=objective.value, metrics=reported, **common)
            return
        if obs.phase == "Failed":
            self.set_status(t, phase="Failed", reason=obs.reason, message=obs.message,
                            failure_class=obs.failure_class, **common)
            return
        if obs.phase == "Running":
            limit = self.spec.max_trial_duration_seconds
            started = times.parse(obs.start_time)
            if limit and started:
                over = (self.now - started).total_seconds() - limit
                if over >= 0:
                    self.kill(t, "Timeout", f"the trial ran longer than maxTrialDurationSeconds ({limit}s)")
                    self.update(t, failure_class="Timeout")
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
        since = times.parse(obs.stuck_since)
        if obs.failure_class == "Startup" and since:
            left = self.spec.startup_timeout_seconds - (self.now - since).total_seconds()
            if left <= 0:
                self._fail_startup(t, obs.reason, f"not started after {self.spec.startup_timeout_seconds}s: {obs.message}")
                return
            self.plan.requeue(left)
        self.update(t, phase="Pending", reason=obs.reason, message=obs.message, pod_name=t.name)

    def final_samples(self, t: TrialView, obs: Any) -> list[metrics.Sample]:
        """A finished attempt's metrics, from where metricsCollector.source says."""
        return metrics.final_samples(self.spec.metrics_collector.source, self.spec.objective.metric_name,
                                        obs.termination_message, self.logs.get(t.name, ""), self.wanted)

    def continued(self, t: TrialView, history: list[Metric]) -> list[Metric]:
        """With a checkpoint, an attempt's history continues the one it re-runs (which continues
        the ones before it): the configuration's history."""
        if self.checkpoint is None:
            return history
        previous = self.views.get(t.spec.get("retryOf") or "")
        earlier = (self.current(previous).metric_history or []) if previous is not None else []
        return checkpoint.merged_history(earlier, history)[-METRIC_HISTORY_LIMIT:] if earlier else history

    def resumed_from(self, t: TrialView, found: dict[str, metrics.Sample]) -> dict[str, ResumedFrom]:
        """status.resumedFrom, when the program says it resumed (metric resumed_step)."""
        step = found.get(checkpoint.RESUMED_STEP) if self.checkpoint is not None else None
        if step is None:
            return {}
        return {"resumed_from": ResumedFrom(attempt=max(t.attempt - 1, 1), step=int(step.value),
                                            trial=t.spec.get("retryOf") or None)}

    @staticmethod
    def metric(sample: metrics.Sample, default_time: str | None) -> Metric:
        return Metric(name=sample.name, value=sample.value, step=sample.step,
                      timestamp=sample.timestamp or default_time or None)

    def history(self, samples: list[metrics.Sample], default_time: str | None) -> list[Metric]:
        stepped = [self.metric(s, default_time) for s in samples if s.step is not None]
        return stepped[-METRIC_HISTORY_LIMIT:]

    def check_progress(self, t: TrialView) -> None:
        """Intermediate values of a running trial: recorded, and shown to the early-stopping rule."""
        samples = metrics.parse_log(self.logs[t.name], self.wanted, timestamps=True)
        if not samples:
            return
        history = self.continued(t, self.history(samples, None))
        self.update(t, metrics=[self.metric(s, None) for s in metrics.latest(samples).values()],
                    metric_history=history or None)
        objective = self.spec.objective.metric_name
        steps = {s.step: s.value for s in samples if s.name == objective and s.step is not None}
        if self.checkpoint is not None:
            # Early stopping judges the configuration: its earlier attempts' steps too.
            steps = {**{m.step: m.value for m in history if m.name == objective}, **steps}
        index = t.suggestion_index
        if index is None or not steps or not self.should_stop(index, steps):
            return
        last = steps[max(steps)]
        if self.has_pod[t.name]:
            self.plan.delete_pods.append(t.name)
            self.has_pod[t.name] = False
        self.set_status(t, phase="EarlyStopped", reason="EarlyStopped", objective_value=last,
                        message=f"stopped at step {max(steps)} by the {self.spec.early_stopping.algorithm} "
                                f"rule ({objective}={last})")

    def _fail_startup(self, t: TrialView, reason: str, message: str) -> None:
        self.plan.delete_pods.append(t.name)
        self.has_pod[t.name] = False
        self.set_status(t, phase="Failed", reason=reason, message=message or reason, failure_class="Startup",
                        pod_name=t.name)

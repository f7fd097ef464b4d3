"""Lifecycle: what each trial's pod (or Job, or resource) says becomes the trial's status: results and
metrics, failures and their class, timeouts, startup trouble, early stopping (progress.py), a
queue's hold (queue.py); and so does a create that the API server refused.

plan()'s first step, observe_trials(), over one RoundState (state.py). A Trial a user made is
handed to admission.admit_user_trial() as it is met, in the trials' order, so that its admission
sees the phases observed so far."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.api.status import ResumedFrom
from hpo_operator.api.vocabulary import TERMINAL_PHASES, FailureClass, MetricsSource, PodRetention, TrialPhase
from hpo_operator.core import metrics, pareto, times
from hpo_operator.core.conditions import set_condition
from hpo_operator.core.podstate import PodObservation, observe
from hpo_operator.core.space import summary
from hpo_operator.workloads import checkpoint, population
from hpo_operator.workloads.kinds import kind_of
from hpo_operator.workloads.observe import Observed

from .admission import admit_user_trial
from .progress import check_progress, continued, metric, metric_history
from .queue import admitted, held_in_queue, queue_left_at, queued
from .state import Event, Refusal, RoundState, TrialView, wanted_metrics


def observe_pods(
    spec: ExperimentSpec,
    trials: Iterable[TrialView],
    pods: dict[str, dict[str, Any]],
    now: datetime,
    workloads: Mapping[str, Observed] | None = None,
) -> dict[str, PodObservation]:
    """What each unfinished trial's pod says this round, by trial name; for a Job or resource trial,
    what its workload says (`workloads`, observed from it: workloads.observe). Observed once: the
    loop chooses the logs to read by it (needs_log) and the planner decides by it (observe_pod), so
    the two never judge one pod differently (a pod stranded on a lost node is Failed only given
    `now`)."""
    primary = spec.trial_template.primary_container_name
    workloads = workloads or {}
    observed = {}
    for t in trials:
        if t.phase in TERMINAL_PHASES or t.name not in pods:
            continue
        seen = workloads.get(t.name)
        if seen is not None:
            observed[t.name] = seen.observation
            continue
        obs = observe(pods[t.name], primary, now)
        if t.segment is not None:  # a pbt segment's checkpoint copy step may have failed
            obs = population.copy_failure(pods[t.name], obs)
        observed[t.name] = obs
    return observed


def needs_output(spec: ExperimentSpec, trial: TrialView, obs: PodObservation | None) -> str | None:
    """Whether the planner reads the output of the pod observed as `obs` (None: no pod): "final" (a
    succeeded attempt's result; with a checkpoint, what a failed attempt reported for the attempt
    that resumes it: read once), "running" (its log, every metricsCollector.intervalSeconds, for
    early stopping) or None. The loop reads them (controller/logs.py), off its event loop."""
    if obs is None or trial.phase in TERMINAL_PHASES:
        return None
    if obs.phase == "Running" and spec.early_stopping is not None:
        return "running"
    if obs.phase == "Succeeded" or (obs.phase == "Failed" and spec.trial_template.checkpoint is not None):
        return "final"
    return None


def needs_log(spec: ExperimentSpec, trial: TrialView, obs: PodObservation | None) -> str | None:
    """Whether the pod's log is read, as needs_output() says, but "final" only when the termination
    message does not hold the result (metricsCollector.source)."""
    need = needs_output(spec, trial, obs)
    if need != "final":
        return need
    assert obs is not None  # needs_output
    source = spec.metrics_collector.source
    if obs.phase == "Failed":
        return None if source == MetricsSource.termination_message else "final"
    formats = spec.metrics_collector.metrics_format or ()
    needed = metrics.log_needed(source, obs.termination_message, spec.objective.required_names, formats)
    return "final" if needed else None


def read_outputs(
    spec: ExperimentSpec,
    trials: Iterable[TrialView],
    observations: Mapping[str, PodObservation],
    logs: Mapping[str, str],
) -> dict[str, metrics.Output]:
    """What each trial's output says, read at once with no budget, from its termination message and
    `logs` (log text by trial; a running pod's read with timestamps): for callers of plan() that
    hold the text (tests, simulations). The loop reads them within a budget, off its event loop."""
    wanted = wanted_metrics(spec)
    collector = spec.metrics_collector
    formats = collector.metrics_format or ()
    outputs = {}
    for t in trials:
        obs = observations.get(t.name)
        need = needs_output(spec, t, obs)
        if need == "running" and logs.get(t.name):
            outputs[t.name] = metrics.read_running(logs[t.name], wanted, formats)
        elif need == "final":
            assert obs is not None  # needs_output
            outputs[t.name] = metrics.read_final(
                collector.source,
                spec.objective.required_names,
                obs.termination_message,
                logs.get(t.name, ""),
                wanted,
                formats,
            )
    return outputs


def observe_trials(state: RoundState) -> None:
    changed = state.status
    for t in state.trials:
        st = changed.get(t.name)  # (state.current(t) and state.phase(t), inlined: every trial, every round)
        if not (t.typed_status if st is None else st).parameter_summary and t.values:
            state.update(t, parameter_summary=summary(t.values))
            phase = state.phase(t)
        else:
            phase = t.phase if st is None else (st.phase or "Pending")
        if phase in TERMINAL_PHASES:
            if (
                t.name in state.pods
                and not state.workload_deleting(t.name)
                and (
                    not state.workload_finished(t.name)
                    or state.spec.trial_template.pod_retention == PodRetention.delete
                )
            ):
                # Its result is recorded: what still runs (a sidecar) is stopped.
                state.plan.delete_workloads.append(t.name)
            continue
        if t.owned_by_another(state.exp.uid):
            continue  # not ours: left to its owner, or to the garbage collector
        if not t.owned_by(state.exp.uid):
            admit_user_trial(state, t)
            continue
        pod = state.pods.get(t.name)
        if pod is None:
            refusal = state.refused.get(t.name)
            if refusal is not None:
                refused_create(state, t, refusal)
            elif state.phase(t) == TrialPhase.running:
                state.set_status(
                    t,
                    phase=TrialPhase.failed,
                    reason="PodDeleted",
                    failure_class=FailureClass.infrastructure,
                    message="the trial's pod disappeared while it was running",
                )
            continue
        observe_pod(state, t, pod)


def refused_create(state: RoundState, t: TrialView, refusal: Refusal) -> None:
    """The trial's pod (or Job, or resource) was refused when the last round created it (the
    executor reports it): by the API server as invalid (e.g. a label made invalid by a placeholder)
    or forbidden (the rights of the ServiceAccount it is created as, Pod Security), or by the
    operator's author check. Creating it again would fail the same way, so the trial fails now,
    before launch() would start it again. Without the report (an operator restarted since) the
    create is simply tried again, refused again, and reported again."""
    if refusal.reason == "InvalidPod":
        message = f"the API server refused the trial's {kind_of(state.spec).kind}: {refusal.message}"
        event = "PodCreateFailed"
    else:
        message = refusal.message
        event = "TrialForbidden"
    conditions = set_condition(state.current(t).conditions, "Succeeded", False, refusal.reason, message, state.now)
    state.update(
        t,
        phase=TrialPhase.failed,
        reason=refusal.reason,
        failure_class=FailureClass.startup,
        message=message,
        completion_time=times.iso(state.now),
        conditions=conditions,
    )
    # The Event says what the API server said; the trial's message says what it refused.
    state.plan.events.append(Event(t.name, "Warning", event, refusal.message))


def observe_pod(state: RoundState, t: TrialView, pod: dict[str, Any]) -> None:
    spec = state.spec
    obs = state.observations[t.name]  # observe_pods(), once per round
    if held_in_queue(state, t) and obs.phase not in ("Succeeded", "Failed"):
        if spec.suspend:
            if not obs.queued:
                # Not stopped yet: Kueue stops a deactivated workload within moments. Asked again
                # (the write may have failed), and looked at again soon.
                state.plan.queue_activations[t.name] = False
                state.plan.requeue(2)
            return
        # Resumed: given back to its queue, where it waits for admission again.
        state.plan.queue_activations[t.name] = True
        if obs.queued:
            queued(state, t, obs)
            return
    if obs.recheck_in is not None:
        state.plan.requeue(obs.recheck_in)
    # A Job's or resource's primary pod has a name of its own.
    common: dict[str, Any] = dict(pod_name=pod["metadata"].get("name") or t.name, exit_code=obs.exit_code)
    if obs.start_time:
        common["start_time"] = obs.start_time
    output = state.outputs.get(t.name)
    if needs_output(spec, t, obs) == "final" and (output is None or not output.complete):
        # Its output is still being read (the loop reads within a budget per round): decided then.
        state.plan.requeue(0.5)
        return
    if obs.phase == "Failed" and state.checkpoint is not None:
        assert output is not None  # needs_output
        # What the failed attempt reported, so that the attempt resuming it continues it.
        history = continued(state, t, metric_history(output, obs.finish_time))
        if history:
            common["metric_history"] = history
        found = output.latest
        if found:
            common["metrics"] = [metric(s, obs.finish_time) for s in found.values()]
        common.update(resumed_from(state, t, found))
    if obs.phase == "Succeeded":
        assert output is not None  # needs_output
        found = output.latest
        reported = [metric(s, obs.finish_time) for s in found.values()]
        missing = [name for name in spec.objective.required_names if name not in found]
        history = continued(state, t, metric_history(output, obs.finish_time))
        if history:
            common["metric_history"] = history
        common.update(resumed_from(state, t, found))
        skipped = output.notes.skipped()
        if missing:
            why = output.notes.unreadable_text(missing)
            state.set_status(
                t,
                phase=TrialPhase.failed,
                reason="MetricsUnavailable",
                failure_class=FailureClass.metrics_unavailable,
                message="; ".join(
                    part
                    for part in (
                        f"the trial succeeded but reported no {' or '.join(missing)} "
                        f"metric ({spec.metrics_collector.source})",
                        why,
                        skipped,
                    )
                    if part
                ),
                metrics=reported or None,
                ended_at=obs.finish_time,
                **common,
            )
        else:
            state.set_status(
                t,
                phase=TrialPhase.succeeded,
                reason="Completed",
                message=skipped,
                failure_class=None,
                metrics=reported,
                **result_fields(spec, {name: s.value for name, s in found.items()}),
                ended_at=obs.finish_time,
                **common,
            )
        return
    if obs.phase == "Failed":
        state.set_status(
            t,
            phase=TrialPhase.failed,
            reason=obs.reason,
            message=obs.message,
            failure_class=obs.failure_class,
            ended_at=obs.finish_time,
            **common,
        )
        return
    if obs.phase == "Running":
        admitted(state, t)
        limit = spec.max_trial_duration_seconds
        started = times.parse(obs.start_time)
        if limit and started:
            over = (state.now - started).total_seconds() - limit
            if over >= 0:
                state.kill(t, "Timeout", f"the trial ran longer than maxTrialDurationSeconds ({limit}s)")
                state.update(t, failure_class=FailureClass.timeout)
                return
            state.plan.requeue(-over)
        if state.phase(t) != TrialPhase.running:
            state.set_status(t, phase=TrialPhase.running, reason="Running", message="", **common)
        if output is not None and spec.early_stopping:
            check_progress(state, t, output)
        return
    # Pending: the pod has not started.
    if obs.queued:
        queued(state, t, obs)
        return
    admitted(state, t)
    if obs.fatal:
        fail_startup(state, t, obs.reason, obs.message)
        return
    since = times.parse(obs.stuck_since)
    left_queue = queue_left_at(state, t)
    if since and left_queue and left_queue > since:
        since = left_queue  # the time it waited in its queue is not startup trouble
    if obs.failure_class == "Startup" and since:
        left = spec.startup_timeout_seconds - (state.now - since).total_seconds()
        if left <= 0:
            fail_startup(state, t, obs.reason, f"not started after {spec.startup_timeout_seconds}s: {obs.message}")
            return
        state.plan.requeue(left)
    state.update(t, phase=TrialPhase.pending, reason=obs.reason, message=obs.message, pod_name=t.name)


def result_fields(spec: ExperimentSpec, found: dict[str, float]) -> dict[str, Any]:
    """A succeeded trial's result, from its metrics (every required one is there): the objective's
    value, or several objectives' values and their summary; with constraints, whether it is
    feasible."""
    objective = spec.objective
    if objective.multi:
        values = [found[name] for name in objective.names]
        fields: dict[str, Any] = dict(
            objective_values=values,
            objective_summary=", ".join(f"{n}={v:g}" for n, v in zip(objective.names, values, strict=True)),
        )
    else:
        fields = dict(objective_value=found[objective.names[0]])
    if objective.constraints:
        fields["feasible"] = pareto.feasible(objective.constraints, found)
    return fields


def resumed_from(state: RoundState, t: TrialView, found: dict[str, metrics.Sample]) -> dict[str, ResumedFrom]:
    """status.resumedFrom, when the program says it resumed (metric resumed_step)."""
    step = found.get(checkpoint.RESUMED_STEP) if state.checkpoint is not None else None
    if step is None:
        return {}
    parent = (t.segment or {}).get("parent")
    if parent:  # a pbt segment resumes from its parent segment's checkpoint, whichever attempt it runs
        view = state.views.get(parent)
        return {"resumed_from": ResumedFrom(attempt=view.attempt if view else 1, step=int(step.value), trial=parent)}
    return {
        "resumed_from": ResumedFrom(
            attempt=max(t.attempt - 1, 1), step=int(step.value), trial=t.spec.get("retryOf") or None
        )
    }


def fail_startup(state: RoundState, t: TrialView, reason: str, message: str) -> None:
    state.stop_workload(t)
    state.set_status(
        t,
        phase=TrialPhase.failed,
        reason=reason,
        message=message or reason,
        failure_class=FailureClass.startup,
        pod_name=t.name,
    )

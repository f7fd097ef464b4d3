"""Queues: a trial whose workload (a Job or resource naming a Kueue LocalQueue) waits for
admission. Held, it is Queued and takes its parallelTrialCount slot with no timeout running; a
suspended experiment's trials are held in their queue rather than stopped; a trial held again
after it started was preempted.

Steps over one RoundState (state.py), which is all they import of the planner: lifecycle's
observe_pod() calls queued(), admitted(), held_in_queue() and queue_left_at(); experiment's
decide() calls queue_suspends() and suspend_in_queue()."""

from __future__ import annotations

from datetime import datetime

from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.api.vocabulary import FailureClass, TrialPhase
from hpo_operator.core import times
from hpo_operator.core.conditions import set_condition
from hpo_operator.core.podstate import PodObservation
from hpo_operator.workloads.kinds import kind_of

from .state import SUSPENDED, RoundState, TrialView

# The trial's condition that says whether its workload waits for admission by a queue: True while
# it waits, False once admitted; its lastTransitionTime is when it left the queue, from which the
# startup timeout counts.
QUEUED_CONDITION = TrialPhase.queued


def queued(state: RoundState, t: TrialView, obs: PodObservation) -> None:
    """The trial's workload waits for admission (Kueue holds it). It takes its parallelTrialCount
    slot, so that the experiment offers its queue at most that many workloads, and no timeout runs.
    A trial that had started and is held again was preempted: its queue took the quota back and
    would re-run it unseen in the same attempt; it fails as Infrastructure instead, so that it is
    retried (resuming from its checkpoint) and counted like any other lost run."""
    current = state.current(t)
    if state.phase(t) == TrialPhase.running or current.start_time:
        state.stop_workload(t)  # now, so that its queue does not run it again beside the retry
        state.set_status(
            t,
            phase=TrialPhase.failed,
            reason="Preempted",
            failure_class=FailureClass.infrastructure,
            message=f"the trial's {kind_of(state.spec).kind} was stopped after it started ({obs.message}): "
            "its queue took the quota back",
        )
        return
    conditions = set_condition(current.conditions, QUEUED_CONDITION, True, obs.reason, obs.message, state.now)
    state.update(
        t, phase=TrialPhase.queued, reason=obs.reason, message=obs.message, pod_name=t.name, conditions=conditions
    )


def queue_suspends(spec: ExperimentSpec) -> bool:
    """Whether suspending the experiment holds its trials in their Kueue queue (a Job or resource
    that names one) rather than stopping them: Kueue deactivates the workload, releases its quota,
    and admits it again on resume. A pod cannot be held that way (Kueue would delete it)."""
    return spec.trial_template.queue_name is not None and not kind_of(spec).is_pod


def suspend_in_queue(state: RoundState, t: TrialView) -> None:
    """The experiment is suspended: the trial's workload is deactivated in its queue (Kueue stops it
    if it runs and releases its quota). The trial stays, Queued, and runs again on resume: from its
    checkpoint when it has one, from the start otherwise; its start is forgotten, so that the
    restart is not taken for a preemption."""
    if held_in_queue(state, t):
        return
    state.plan.queue_activations[t.name] = False
    current = state.current(t)
    message = (
        f"the experiment is suspended: its {kind_of(state.spec).kind} is held in queue "
        f"{state.spec.trial_template.queue_name} and runs again on resume"
    )
    conditions = set_condition(current.conditions, QUEUED_CONDITION, True, SUSPENDED, message, state.now)
    state.update(t, phase=TrialPhase.queued, reason=SUSPENDED, message=message, start_time=None, conditions=conditions)


def held_in_queue(state: RoundState, t: TrialView) -> bool:
    current = state.current(t)
    return current.phase == TrialPhase.queued and current.reason == SUSPENDED


def admitted(state: RoundState, t: TrialView) -> None:
    """A trial that was queued and no longer is: its Queued condition turns False."""
    current = state.current(t)
    if any(c.type == QUEUED_CONDITION and c.status == "True" for c in current.conditions or []):
        state.update(
            t,
            conditions=set_condition(current.conditions, QUEUED_CONDITION, False, "Admitted", "", state.now),
        )


def queue_left_at(state: RoundState, t: TrialView) -> datetime | None:
    for c in state.current(t).conditions or []:
        if c.type == QUEUED_CONDITION and c.status == "False":
            return times.parse(c.last_transition_time)
    return None

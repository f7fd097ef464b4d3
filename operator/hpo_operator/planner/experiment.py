"""The experiment: the best trial, the phase and its conditions, the status, and checkpoint
retention (an invalid spec, found by refusals.validate_spec, is refused here as a round's phase).

Steps over one RoundState (state.py), the last of the planner's step modules: decide() launches
through launch.launch(). plan() opens the round with opening_status(), and closes it with
decide() (or reject_spec() for an invalid spec), record_results(), retention() and finish_status()."""

from __future__ import annotations

from typing import NamedTuple

from hpo_operator.api.spec import ExperimentSpec, ParameterAssignment
from hpo_operator.api.status import (
    PARETO_FRONT_LIMIT,
    STATUS_HISTORY_LIMIT,
    ExperimentStatus,
    Metric,
    OptimalTrial,
    ParetoTrial,
    PhaseChange,
)
from hpo_operator.api.vocabulary import (
    EXPERIMENT_PHASES,
    FINISHED_PHASES,
    L_LAUNCH,
    TERMINAL_PHASES,
    BudgetRunningTrials,
    EndReason,
    ExperimentPhase,
    LaunchReason,
    ObjectiveType,
    TrialPhase,
)
from hpo_operator.core import pareto, times
from hpo_operator.core.conditions import get_condition, set_condition
from hpo_operator.workloads import checkpoint

from . import population
from .budget import Budget, record
from .launch import launch
from .queue import queue_suspends, suspend_in_queue
from .refusals import plan_invalid_spec
from .state import FINISHED, SUSPENDED, Event, Plan, RoundState, TrialView


def is_better(spec: ExperimentSpec, a: float, b: float) -> bool:
    return a < b if spec.objective.type == ObjectiveType.minimize else a > b


def goal_reached(spec: ExperimentSpec, value: float) -> bool:
    goal = spec.objective.goal
    if goal is None:
        return False
    return value <= goal if spec.objective.type == ObjectiveType.minimize else value >= goal


class Decision(NamedTuple):
    """The experiment's phase after a round, with the reason and message of its condition."""

    phase: ExperimentPhase
    reason: str
    message: str


def opening_status(state: RoundState) -> ExperimentStatus:
    """The Experiment's status this round writes, started from the one it read."""
    status = state.exp_status.model_copy()  # shallow: see state._Statuses
    if not status.start_time:
        status.start_time = times.iso(state.now)
    return status


def reject_spec(state: RoundState, status: ExperimentStatus, invalid: list[str]) -> None:
    """A spec validate_spec() refuses: plan_invalid_spec() decides, and the round records the phase
    as every round does (its history, and a condition for each phase: Failed's is the same)."""
    message = "; ".join(invalid)
    state.plan.events.extend(plan_invalid_spec(status, state.exp.generation, message, state.now).events)
    record_phase(state, status, Decision(ExperimentPhase.failed, "InvalidSpec", message))


def best_trial(state: RoundState) -> TrialView | None:
    """The best feasible succeeded trial of a single objective (none with several: see
    pareto_front)."""
    if state.spec.objective.multi:
        return None
    best, best_value = None, 0.0
    changed = state.status
    for t in state.trials:
        # (state.phase(t) and state.current(t), inlined: a loop over every trial, every round)
        st = changed.get(t.name)
        if st is None:
            if t.phase != TrialPhase.succeeded:
                continue
            st = t.typed_status
        elif st.phase != TrialPhase.succeeded:
            continue
        value = st.objective_value
        if value is not None and st.feasible is not False:
            if best is None or is_better(state.spec, value, best_value):
                best, best_value = t, value
    return best


def reopen(state: RoundState, status: ExperimentStatus, budget: Budget) -> None:
    """A Succeeded experiment whose end was a limit goes on once no limit holds any more: its
    maxTrialCount or budget was raised, or (GoalReached) its goal changed so that no trial reaches
    it. It continues the same search: the same study, new suggestions numbered after the last, and
    the configurations its end stopped run again (admission.recover_failures). A grid that is done,
    or an experiment that failed, stays as it is."""
    if not state.finished or state.exp_status.phase != ExperimentPhase.succeeded:
        return
    ended = get_condition(state.exp_status.conditions, ExperimentPhase.succeeded)
    reason = ended.reason if ended is not None else None
    if reason not in (
        EndReason.goal_reached,
        EndReason.max_trials_reached,
        EndReason.max_duration_reached,
        EndReason.compute_budget_reached,
    ):
        return
    spec = state.spec
    best = best_trial(state)
    best_value = state.current(best).objective_value if best is not None else None
    if best_value is not None and goal_reached(spec, best_value):
        return
    configurations = len(state.groups())
    if configurations >= spec.max_trial_count or budget.reached() is not None:
        return
    state.finished = False
    status.completion_time = None
    why = {
        EndReason.goal_reached: f"the goal changed to {spec.objective.goal}, which no trial reaches",
        EndReason.max_trials_reached: (
            f"maxTrialCount is now {spec.max_trial_count} ({configurations} configurations so far)"
        ),
    }.get(EndReason(reason), "its budget was raised")
    message = f"it ended {reason}; {why}: the search goes on"
    state.plan.events.append(Event(None, "Normal", "ExperimentExtended", message))


def decide(state: RoundState, status: ExperimentStatus, best: TrialView | None, budget: Budget) -> None:
    """The experiment's phase after this round, launching what it may on the way."""
    if state.finished:
        # A finished experiment suggests nothing and retries nothing, but still runs the
        # restarts and configurations users ask for.
        if not state.spec.suspend:
            launch(state, suggestions=False)
        state.configurations = len(state.groups())
        return
    decision = advance(state, best, len(state.failed_keys), budget)
    if decision.phase in FINISHED_PHASES:
        for t in state.active():
            state.kill(t, FINISHED, f"the experiment finished ({decision.reason})")
        status.completion_time = times.iso(state.now)
        state.plan.events.append(
            Event(
                None,
                "Normal" if decision.phase == ExperimentPhase.succeeded else "Warning",
                f"Experiment{decision.phase}",
                f"{decision.reason}: {decision.message}",
            )
        )
    elif status.phase == ExperimentPhase.suspended and decision.phase == ExperimentPhase.running:
        state.plan.events.append(Event(None, "Normal", "Resumed", "spec.suspend is false"))
    elif decision.phase == ExperimentPhase.suspended and status.phase != ExperimentPhase.suspended:
        stopped = "trials were held in their queue" if queue_suspends(state.spec) else "running trials were stopped"
        state.plan.events.append(Event(None, "Normal", "Suspended", stopped))
    record_phase(state, status, decision)


def advance(state: RoundState, best: TrialView | None, finally_failed: int, budget: Budget) -> Decision:
    """The next phase of a running experiment, launching what it may on the way."""
    spec = state.spec
    max_failed = spec.max_failed_trial_count
    best_value = state.current(best).objective_value if best is not None else None
    if best is not None and best_value is not None and goal_reached(spec, best_value):
        return Decision(
            ExperimentPhase.succeeded,
            EndReason.goal_reached,
            f"trial {best.name} reached the goal: {spec.objective.metric_name}={best_value}",
        )
    if max_failed is not None and finally_failed > max_failed:
        return Decision(
            ExperimentPhase.failed,
            "TooManyFailures",
            f"{finally_failed} configurations failed, more than maxFailedTrialCount ({max_failed})",
        )
    if spec.suspend:
        for t in state.active():
            if not state.has_pod.get(t.name):
                continue
            if queue_suspends(spec):
                suspend_in_queue(state, t)
            else:
                state.kill(t, SUSPENDED, "the experiment was suspended; it re-runs on resume")
        return Decision(ExperimentPhase.suspended, "Suspended", "spec.suspend is true")
    spent = budget.reached()
    if spent is not None:
        reason, message = spent
        assert spec.budget is not None  # reached() reaches nothing without one
        if spec.budget.running_trials == BudgetRunningTrials.finish:
            running = [t for t in state.active() if state.has_pod.get(t.name)]
            if running:
                # Nothing new starts; the running trials end on their own, and the experiment with them.
                return Decision(
                    ExperimentPhase.running,
                    "BudgetSpent",
                    f"{message}: nothing new starts; waiting for {len(running)} running trials to "
                    "finish (budget.runningTrials: Finish)",
                )
        return Decision(ExperimentPhase.succeeded, reason, message)
    if population.is_pbt(spec):
        lost = population.launch_population(state)
        if lost:
            return Decision(ExperimentPhase.failed, population.POPULATION_LOST, lost)
        exhausted = False
    else:
        exhausted = launch(state)
    left = budget.seconds_left()
    if left is not None:
        state.plan.requeue(left)
    if not state.active():
        if exhausted and state.configurations < spec.max_trial_count:
            return Decision(
                ExperimentPhase.succeeded,
                EndReason.search_space_exhausted,
                f"the search space is exhausted after {state.configurations} configurations",
            )
        if state.configurations >= spec.max_trial_count:
            return Decision(
                ExperimentPhase.succeeded,
                EndReason.max_trials_reached,
                f"{state.configurations} configurations tried (maxTrialCount)",
            )
    return Decision(
        ExperimentPhase.running, "Running", f"{state.configurations} of {spec.max_trial_count} configurations launched"
    )


def record_phase(state: RoundState, status: ExperimentStatus, decision: Decision) -> None:
    """Sets the phase, its history and the conditions (one per phase, exactly one True)."""
    phase, reason, message = decision
    if status.phase != phase:
        history = [*(status.status_history or []), PhaseChange(phase=phase, reason=reason, time=times.iso(state.now))]
        status.status_history = history[-STATUS_HISTORY_LIMIT:]
    status.phase = phase
    # One condition per phase the experiment can be in after a round.
    for type_ in (p for p in EXPERIMENT_PHASES if p != ExperimentPhase.created):
        status.conditions = set_condition(
            status.conditions,
            type_,
            phase == type_,
            reason,
            message if phase == type_ else "",
            state.now,
            state.exp.generation,
        )


def record_results(state: RoundState, status: ExperimentStatus, best: TrialView | None) -> None:
    """The round's counts of suggestions and configurations, and the best trial."""
    status.suggestion_count = state.suggestion_count
    status.configurations = state.configurations
    status.failed_configurations = len(state.failed_keys)
    pareto_front(state, status)
    if best is not None:
        bst = state.current(best)
        assert bst.objective_value is not None  # best_trial() picks only trials with a value
        status.current_optimal_trial = OptimalTrial(
            trial_name=best.name,
            objective_value=bst.objective_value,
            parameters=[ParameterAssignment(name=k, value=v) for k, v in best.values.items()],
            metrics=[Metric(name=m.name, value=m.value) for m in bst.metrics or []],
        )


# The fronts of the experiments reconciled last (see pareto.SummaryCache): the same answers as
# computing them afresh, without the cost on rounds that changed no result.
FRONTS = pareto.SummaryCache()


def pareto_front(state: RoundState, status: ExperimentStatus) -> None:
    """Several objectives: the front of the feasible succeeded trials (the first
    PARETO_FRONT_LIMIT of it, best first by the first objective), its size, and its hypervolume
    when the spec gives a reference point."""
    objective = state.spec.objective
    if not objective.multi:
        return
    width = len(objective.names)
    points: dict[str, list[float]] = {}
    views: dict[str, TrialView] = {}
    for t in state.trials:
        if state.phase(t) != TrialPhase.succeeded:
            continue
        st = state.current(t)
        values = st.objective_values
        if values and len(values) == width and st.feasible is not False:
            points[t.name], views[t.name] = values, t
    # Ties on the front fall by name (the cache orders the points by key), so that the front's
    # order among equal points does not depend on creation times.
    found = FRONTS.summary(state.exp.uid, points, objective.directions, objective.reference_point)
    status.pareto_front = [
        ParetoTrial(
            trial_name=name,
            values=list(points[name]),
            parameters=[ParameterAssignment(name=k, value=v) for k, v in views[name].values.items()],
        )
        for name in found.front[:PARETO_FRONT_LIMIT]
    ]
    status.pareto_front_size = len(found.front)
    status.hypervolume = found.hypervolume


def retention(state: RoundState) -> None:
    """Checkpoint claims that checkpoint.retention removes now."""
    if state.checkpoint is None or state.volumes is None:
        return
    if population.is_pbt(state.spec):
        return population.retention(state)
    configs = {}
    for key, trials in state.groups().items():
        settled = all(state.phase(x) in TERMINAL_PHASES for x in trials)
        configs[key] = (settled, state.succeeded(trials), key in state.failed_keys)
    state.plan.delete_volumes = checkpoint.volumes_to_delete(
        state.checkpoint.retention, configs, state.volumes, state.exp.name
    )


def finish_status(state: RoundState, status: ExperimentStatus, budget: Budget | None = None) -> Plan:
    """The trial counts, what was spent, then the round's Plan with the statuses it changed."""
    counts = {"Pending": 0, "Queued": 0, "Running": 0, "Succeeded": 0, "Failed": 0, "Killed": 0, "EarlyStopped": 0}
    retried = 0
    changed, uid = state.status, state.exp.uid
    for t in state.trials + state.new_trials:
        st = changed.get(t.name)  # (state.phase(t), inlined: a loop over every trial, every round)
        phase = t.phase if st is None else (st.phase or "Pending")
        if phase in counts and uid in t.controllers:
            counts[phase] += 1
            retried += t.labels.get(L_LAUNCH) == LaunchReason.retry
    status.trials = sum(counts.values())
    status.trials_pending, status.trials_running = counts["Pending"], counts["Running"]
    status.trials_queued = counts["Queued"]
    status.trials_succeeded, status.trials_failed = counts["Succeeded"], counts["Failed"]
    status.trials_killed, status.trials_early_stopped = counts["Killed"], counts["EarlyStopped"]
    status.trials_retried = retried
    status.observed_generation = state.exp.generation
    record(state, status, budget or Budget(state))
    state.plan.experiment_status = status
    # Only what changed goes in the Plan, so that apply.stages() dumps the statuses of a round's few
    # changed trials rather than of all the experiment's.
    for name, st in state.status.items():
        view = state.views.get(name)
        if view is not None and st != view.typed_status:
            state.plan.trial_status[name] = st
    # A new Trial's body is created whole, its first status in it.
    for t in state.new_trials:
        t.body["status"] = state.status[t.name].dump()
    return state.plan

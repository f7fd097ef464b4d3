"""Progress: what a trial reports as it runs and when it ends, its metrics and their history (with a
checkpoint, continued from the attempts it resumes), and early stopping judged by them: Optuna's
pruners for one objective, successive halving on the non-dominated rank for several
(search/rungs.py).

Steps over one RoundState (state.py), which is all they import of the planner: lifecycle's
observe_pod() records what a pod's output reported with metric(), metric_history() and continued(),
and calls check_progress() for a running trial."""

from __future__ import annotations

from hpo_operator.api.status import METRIC_HISTORY_LIMIT, Metric
from hpo_operator.api.vocabulary import TrialPhase
from hpo_operator.core import metrics, times
from hpo_operator.search import rungs
from hpo_operator.search.samplers import REDUCTION_FACTOR
from hpo_operator.workloads import checkpoint

from .state import RoundState, TrialView


def continued(state: RoundState, t: TrialView, history: list[Metric]) -> list[Metric]:
    """With a checkpoint, an attempt's history continues the one it re-runs (which continues
    the ones before it): the configuration's history."""
    if state.checkpoint is None:
        return history
    previous = state.views.get(t.spec.get("retryOf") or "")
    earlier = (state.current(previous).metric_history or []) if previous is not None else []
    return checkpoint.merged_history(earlier, history)[-METRIC_HISTORY_LIMIT:] if earlier else history


def metric(sample: metrics.Sample, default_time: str | None) -> Metric:
    return Metric(
        name=sample.name, value=sample.value, step=sample.step, timestamp=sample.timestamp or default_time or None
    )


def metric_history(output: metrics.Output, default_time: str | None) -> list[Metric]:
    return [metric(s, default_time) for s in output.history][-METRIC_HISTORY_LIMIT:]


def check_progress(state: RoundState, t: TrialView, output: metrics.Output) -> None:
    """Intermediate values of a running trial: recorded, and shown to the early-stopping rule."""
    spec = state.spec
    skipped = output.notes.skipped()
    if skipped and state.current(t).message != skipped:
        state.update(t, message=skipped)  # what of its log was not read, while it runs
    if not output.latest:
        return
    history = continued(state, t, metric_history(output, None))
    seen = {m.step for m in state.current(t).metric_history or [] if m.step is not None}
    state.update(t, metrics=[metric(s, None) for s in output.latest.values()], metric_history=history or None)
    if spec.objective.multi:
        return check_rungs(state, t, history, seen)
    objective = spec.objective.names[0]  # one objective: Optuna's pruners
    steps = {s.step: s.value for s in output.history if s.name == objective and s.step is not None}
    if state.checkpoint is not None:
        # Early stopping judges the configuration: its earlier attempts' steps too.
        steps = {**{m.step: m.value for m in history if m.name == objective and m.step is not None}, **steps}
    index = t.suggestion_index
    if index is None or not steps or not state.should_stop(index, steps):
        return
    assert spec.early_stopping is not None  # should_stop() stops nothing without it
    last = steps[max(steps)]
    state.stop_workload(t)
    state.set_status(
        t,
        phase=TrialPhase.early_stopped,
        reason="EarlyStopped",
        objective_value=last,
        message=f"stopped at step {max(steps)} by the {spec.early_stopping.algorithm} rule ({objective}={last})",
    )


def objective_curve(state: RoundState, t: TrialView) -> rungs.Curve:
    """The objectives' values by step in the trial's recorded history (worked out once per body: the
    history as the cluster holds it)."""
    found = t.memo.get("curve")
    if found is None:
        history = t.typed_status.metric_history or []
        found = t.memo["curve"] = rungs.curve(
            ((m.name, m.step, m.value, m.timestamp) for m in history), state.spec.objective.names
        )
    return found


def check_rungs(state: RoundState, t: TrialView, history: list[Metric], seen: set[int]) -> None:
    """Several objectives: successive halving on their non-dominated rank (search/rungs.py), judged
    at the rungs this round's newly read steps reach, against every other configuration's history."""
    spec = state.spec
    stopping = spec.early_stopping
    assert stopping is not None  # check_progress runs with earlyStopping only
    names = spec.objective.names
    # A value read without its time was printed by now at the latest: what others recorded before now
    # reached their rungs first.
    now = times.iso(state.now)
    own = rungs.curve(((m.name, m.step, m.value, m.timestamp or now) for m in history), names)
    new_steps = {step for step, _, _ in own} - seen
    if not new_steps:
        return
    min_resource = stopping.min_resource or rungs.auto_min_resource(first_success_steps(state))
    if min_resource is None:
        return  # nothing is judged before a trial has succeeded (ASHA's automatic minResource)
    mine = state.config_of(t)
    others: dict[str, rungs.Curve] = {}
    for other in state.trials:
        key = state.config_of(other)
        if key == mine or not other.owned_by(state.exp.uid) or state.phase(other) == TrialPhase.refused:
            continue
        c = objective_curve(state, other)
        if c and len(c) > len(others.get(key, [])):
            others[key] = c
    factor = stopping.reduction_factor or REDUCTION_FACTOR
    verdict = rungs.judge(own, new_steps, others, spec.objective.directions, min_resource, factor)
    if verdict is None:
        return
    last_step, _, values = own[-1]
    state.stop_workload(t)
    state.set_status(
        t,
        phase=TrialPhase.early_stopped,
        reason="EarlyStopped",
        objective_values=list(values),
        objective_summary=", ".join(f"{n}={v:g}" for n, v in zip(names, values, strict=True)),
        message=(
            f"stopped at step {last_step} by the asha rule on several objectives: at rung {verdict.rung} "
            f"(step {verdict.step}) {verdict.position} of the {verdict.competitors} configurations there ranked "
            f"before it (non-dominated rank, then crowding distance); the best {verdict.kept} go on"
        ),
    )


def first_success_steps(state: RoundState) -> int | None:
    """The last step the first trial to succeed reported (ASHA's automatic minResource reads it)."""
    first = min(
        (t for t in state.trials if state.phase(t) == TrialPhase.succeeded),
        key=lambda t: (state.current(t).completion_time or "~", t.name),
        default=None,
    )
    if first is None:
        return None
    c = objective_curve(state, first)
    return c[-1][0] if c else None

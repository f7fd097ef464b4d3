"""Launch: pods for queued trials and new suggestions within parallelTrialCount, and the results
the search algorithm is told.

Steps over one RoundState (state.py), which is all they import of the planner. plan() calls
tell_results() once the round's failures are known, then count_launched(); experiment.decide()
calls launch() while the experiment may still launch."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from functools import cached_property

from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.api.status import Metric, TrialStatus
from hpo_operator.api.vocabulary import A_NOT_BEFORE, LaunchReason, TrialPhase
from hpo_operator.core import pareto, times
from hpo_operator.core.space import config_hash
from hpo_operator.search.suggest import Outcome

from .state import DUPLICATE_SUGGESTION_FACTOR, MAX_ASKS_PER_ROUND, RoundState, TrialView


def count_launched(state: RoundState, suggestion_count: int) -> None:
    """Sets the suggestions asked (at least the recorded `suggestion_count`) and the configurations
    launched before this round launches anything: launch() counts on from them."""
    state.suggestion_count = max(
        [suggestion_count]
        + [t.suggestion_index + 1 for t in state.trials if t.suggestion_index is not None and t.owned_by(state.exp.uid)]
    )
    state.configurations = len(state.groups())


def launch(state: RoundState, suggestions: bool = True) -> bool:
    """Starts pods for queued trials, then for new suggestions, within parallelTrialCount
    (counting them in state.suggestion_count and state.configurations); True when the search
    space is used up."""
    spec = state.spec
    suggestion_count, configurations = state.suggestion_count, state.configurations
    # Every unfinished pod counts, also one still shutting down after its trial was stopped,
    # but not one stranded on a lost node: it would hold its slot forever.
    busy = {name for name in state.pods if state.holds_slot(name)}
    busy |= {t.name for t in state.active() if state.has_pod.get(t.name)}
    slots = spec.parallel_trial_count - len(busy)
    for t in state.active():
        if slots <= 0:
            break
        if state.has_pod.get(t.name):
            continue
        try:
            not_before = times.parse(t.annotations.get(A_NOT_BEFORE))
        except ValueError:
            not_before = None  # edited by hand into something else: do not wait
        if not_before and not_before > state.now:
            state.plan.requeue((not_before - state.now).total_seconds())
            continue
        state.start(t)
        slots -= 1
    exhausted = False
    known = state.groups()
    if suggestions:
        slots, configurations = relaunch_lost(state, known, slots, configurations)
    asks = 0
    limit = spec.max_trial_count * DUPLICATE_SUGGESTION_FACTOR
    while suggestions and slots > 0 and configurations < spec.max_trial_count and asks < MAX_ASKS_PER_ROUND:
        if suggestion_count >= limit:
            exhausted = True
            break
        values = state.suggest(suggestion_count)
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
            result = outcome(state, existing, state.config_of(existing[0]) in state.failed_keys)
            if result:
                told(state, index, result.without_steps())
            continue
        name = f"{state.exp.name}-{index:04d}"
        t = state.new_trial(name, values, 1, LaunchReason.suggestion, name, index=index)
        state.start(t)
        configurations += 1
        slots -= 1
    state.suggestion_count, state.configurations = suggestion_count, configurations
    return exhausted


def relaunch_lost(
    state: RoundState, known: dict[str, list[TrialView]], slots: int, configurations: int
) -> tuple[int, int]:
    """Launches the suggestions that were asked but never became Trials, while a later one
    did: a round cut short (the operator killed mid-round, the API server gone between two
    creates). Below suggestion_count, they would never be asked again, and a grid would run
    out with its points unused. A suggestion without a Trial that repeated a configuration the
    experiment has is not lost: it is skipped. Returns the slots and configurations left."""
    if slots <= 0 or configurations >= state.spec.max_trial_count:
        return slots, configurations  # no room: nothing is launched (the common round)
    made = {t.suggestion_index for t in state.trials if t.suggestion_index is not None and t.owned_by(state.exp.uid)}
    for index in range(state.suggestion_count):
        if slots <= 0 or configurations >= state.spec.max_trial_count:
            break
        if index in made:
            continue
        try:
            values = state.suggest(index)
        except LookupError:
            continue  # rebuilt from results after a restart: its values are not kept; a new one replaces it
        if values is None or config_hash(values) in known:
            continue
        name = f"{state.exp.name}-{index:04d}"
        t = state.new_trial(name, values, 1, LaunchReason.suggestion, name, index=index)
        state.start(t)
        known[config_hash(values)] = [t]
        configurations += 1
        slots -= 1
    return slots, configurations


def told(state: RoundState, index: int, result: Outcome) -> None:
    # Told at once, not after the round: a suggestion asked later in this round must see it,
    # as it would in Optuna's own loop.
    state.tell(index, result)
    state.plan.tells.append((index, result))


def outcome(state: RoundState, trials: list[TrialView], finally_failed: bool = False) -> Outcome | None:
    """What the sampler is told of a configuration once it is decided, with the objective's curve
    as the deciding trial's metricHistory holds it (its final log read)."""
    for t in trials:
        st = state.current(t)
        if state.phase(t) == TrialPhase.succeeded and (result := succeeded_outcome(state.spec, st)) is not None:
            return replace(result, steps=curve(state, t))
    latest = state.latest(trials)
    if state.phase(latest) == TrialPhase.early_stopped:
        return Outcome(pruned=True, at=state.current(latest).completion_time, steps=curve(state, latest))
    if finally_failed:
        return Outcome(failed=True, at=state.current(latest).completion_time, steps=curve(state, latest))
    return None


def succeeded_outcome(spec: ExperimentSpec, st: TrialStatus) -> Outcome | None:
    """What the sampler is told of a succeeded trial: its objective's value (or its objectives'
    values) and, with constraints, how far each is broken, from its metrics. None if its status
    lacks a result (written by hand, or by an operator that knew other objectives)."""
    at = st.completion_time
    constraints = None
    if spec.objective.constraints:
        found = {m.name: m.value for m in st.metrics or []}
        try:
            broken = pareto.violations(spec.objective.constraints, found)
        except KeyError:
            return None
        constraints = {c.metric_name: v for c, v in zip(spec.objective.constraints, broken, strict=True)}
    if spec.objective.multi:
        values = st.objective_values
        if values is None or len(values) != len(spec.objective.names):
            return None
        return Outcome(values=tuple(values), constraints=constraints, at=at)
    if st.objective_value is None:
        return None
    return Outcome(value=st.objective_value, constraints=constraints, at=at)


def curve(state: RoundState, t: TrialView) -> Curve | None:
    """The objective's intermediate values in the trial's metricHistory, for the pruner (none
    without earlyStopping: nothing would judge by them)."""
    if state.spec.early_stopping is None or state.spec.objective.multi:
        return None  # (several objectives: the operator's own rule reads the Trials, not the study)
    return Curve(state.current(t).metric_history or [], state.spec.objective.names[0])


class Curve(Mapping[int, float]):
    """A trial's objective values by step (of a step reported twice, the later value counts, as it
    does for the trial's result). Read from the history only when the search algorithm takes it:
    every round hands over every decided result, and each is taken once."""

    def __init__(self, history: list[Metric], name: str):
        self._history, self._name = history, name

    @cached_property
    def _steps(self) -> dict[int, float]:
        return {m.step: m.value for m in self._history if m.name == self._name and m.step is not None}

    def __getitem__(self, step: int) -> float:
        return self._steps[step]

    def __iter__(self) -> Iterator[int]:
        return iter(self._steps)

    def __len__(self) -> int:
        return len(self._steps)


def tell_results(state: RoundState, finally_failed_keys: set[str]) -> None:
    known = state.told
    for key, trials in state.groups().items():
        indexes = {t.suggestion_index for t in trials if t.suggestion_index is not None}
        if indexes <= known:
            continue  # nothing to tell (or no suggestion): the search holds every result
        result = outcome(state, trials, key in finally_failed_keys)
        if result:
            for i in indexes:
                told(state, i, result)

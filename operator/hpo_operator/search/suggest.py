# One piece: the Suggester, one class around one study: ask, tell, prune, replay, warm start.
"""Suggestions from Optuna, computed in the operator: no suggestion pod, no database.

One in-memory Optuna study per experiment, kept between reconciles. Suggestion number i of an
experiment is Optuna trial number i. Retries of a configuration are not new Optuna trials: the
sampler hears of a configuration once, when it finally succeeds, fails or is stopped early.

After an operator restart the study is rebuilt from the Trials by replaying what happened in the
order it happened: each suggestion is asked again at the time its Trial was created, and each
result is told at the time it was decided. With parallelTrialCount 1 that order is exact, so a
seeded sampler continues with the very configurations it would have suggested without the restart.

Early stopping judges a running trial against the intermediate values of the finished ones. A
running trial's steps reach the pruner only as often as its log is read, so a result is told with
the trial's whole curve (its metricHistory, from its final log read): the pruner then holds every
finished trial's curve, whatever the reads saw, and a study rebuilt after a restart holds them too.

With several objectives the study has one direction per objective and a result is their values
in the spec's order. Constraints reach the sampler as each result's constraint values (Optuna's
Trial.set_constraint: 0 or less is met); samplers that use them (tpe, nsga2, nsga3) learn to avoid
infeasible configurations, the others ignore them.

The study's sampler, pruner and distributions are built from the spec in samplers.py.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo_operator.api.parameters import Parameter
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.core.space import format_value
from hpo_operator.search.samplers import distribution, grid_size, make_pruner, make_sampler

log = logging.getLogger(__name__)

# After a restart, up to this many suggestions are replayed (exactly the same sequence goes on);
# beyond it the study is rebuilt from the recorded results (see Suggester._rebuild_from_results).
REPLAY_LIMIT = int(os.environ.get("HPO_REPLAY_LIMIT", "1000"))
# The samplers whose ask grows with the trials (TPE and GP fit their models to all of them, CMA-ES walks
# every generation); random, qmc and grid asks cost the same at any size.
REBUILT_ALGORITHMS = ("tpe", "cmaes", "gp")
STUDY_NAME = "experiment"


def _typed(param: Parameter, text: str) -> Any:
    if param.type == "int":
        number = float(text)
        if number != int(number):
            raise ValueError(f"{text} is not a whole number")
        return int(number)
    if param.type == "double":
        return float(text)
    return text


@dataclass
class Outcome:
    """What became of a suggested configuration, as far as the sampler should know."""

    value: float | None = None  # the objective, if it succeeded
    # With several objectives, their values (in the spec's order) instead of `value`.
    values: tuple[float, ...] | None = None
    # With constraints: how far each is broken (0 or less: met), by metric, if it succeeded.
    constraints: Mapping[str, float] | None = None
    failed: bool = False  # finally failed (retries spent)
    pruned: bool = False  # stopped early
    at: str | None = None  # when it was decided (RFC 3339), for replaying the history in order
    # The objective's intermediate values (step -> value): the trial's metricHistory. A suggestion
    # that repeated a configuration ran nothing, and is told the result without them.
    steps: Mapping[int, float] | None = None

    def without_steps(self) -> Outcome:
        return replace(self, steps=None)

    @property
    def succeeded(self) -> bool:
        return self.value is not None or self.values is not None

    def result(self) -> float | list[float]:
        """What Optuna is told: the value, or the values of several objectives."""
        if self.values is not None:
            return list(self.values)
        assert self.value is not None
        return self.value


# A warm-start entry with constraint values: (values, objective or objectives, constraints).
Warm = tuple[Mapping[str, str], float | Sequence[float], Mapping[str, float] | None]


@dataclass
class Recorded:
    """A suggestion that became a Trial: its values and when its Trial was created."""

    values: Mapping[str, str]
    created: str | None = None


class Suggester:
    def __init__(self, spec: ExperimentSpec):
        self.spec = spec
        self.params = spec.parameters
        self.distributions = {p.name: distribution(p) for p in spec.parameters}
        # A fixed study name: Hyperband puts trial n in the bracket its name and n hash to, and a
        # study rebuilt after a restart must put every trial in the same bracket again.
        self.study = optuna.create_study(
            study_name=STUDY_NAME,
            directions=spec.objective.directions,
            sampler=make_sampler(spec),
            pruner=make_pruner(spec),
        )
        # Rung-based pruners (asha, hyperband) record a trial's value at each rung when asked at
        # that step; the median rule keeps no records, and asking it again would only cost time.
        self._records_rungs = isinstance(
            self.study.pruner, (optuna.pruners.SuccessiveHalvingPruner, optuna.pruners.HyperbandPruner)
        )
        self.grid_size = grid_size(spec)
        self._asked: dict[int, optuna.Trial] = {}
        self._keys: dict[int, tuple] = {}  # each asked index's configuration
        # And the other way: each configuration's indexes (a dict for their order).
        self._indexes: dict[tuple, dict[int, None]] = {}
        self._told: set[int] = set()
        self._recorded: dict[int, Recorded] = {}
        self._recorded_count = 0
        self._pending: dict[int, Outcome] = {}
        self._ready = True
        self._rebuild = False
        # Configurations of suggestions rebuilt from their results: no optuna.Trial is kept for them.
        self._values: dict[int, dict[str, str]] = {}
        # The steps reported to each running Optuna trial, by its number: the planner hands over a
        # trial's whole curve every round, and Optuna warns of every step reported twice.
        self._reported: dict[int, set[int]] = {}

    @property
    def count(self) -> int:
        self._materialize()
        return len(self._asked)

    def exhausted(self) -> bool:
        return self.grid_size is not None and self.count >= self.grid_size

    def _ask(self) -> dict[str, str]:
        # Suggestion i is the i-th ask (warm-start trials come before it in Optuna's numbering).
        index = len(self._asked)
        self._asked[index] = self.study.ask(self.distributions)
        values = self.values(index)
        self._set_key(index, values)
        return values

    def _set_key(self, index: int, values: Mapping[str, str]) -> None:
        old = self._keys.get(index)
        if old is not None:
            self._indexes[old].pop(index, None)
        key = self._keys[index] = tuple(sorted(values.items()))
        self._indexes.setdefault(key, {})[index] = None

    def _adopt(self, index: int, values: Mapping[str, str]) -> None:
        if self.spec.algorithm.name == "grid":
            return  # a grid point is identified by its number, not by its values
        try:
            fixed = {p.name: _typed(p, values[p.name]) for p in self.params}
        except (KeyError, ValueError):
            return
        self.study.tell(self._asked[index], state=TrialState.FAIL, skip_if_finished=True)
        self.study.enqueue_trial(fixed)
        self._asked[index] = self.study.ask(self.distributions)
        self._set_key(index, self.values(index))

    def warm_start(self, finished: Sequence[tuple[Mapping[str, str], float | Sequence[float]] | Warm]) -> int:
        """Teaches the sampler finished configurations of another experiment (values, objective or
        objectives, and optionally constraint values); returns how many fit this search space and
        these objectives. Grid search has nothing to learn."""
        if self.spec.algorithm.name == "grid":
            return 0
        taught = 0
        for entry in finished:
            values, objective = entry[0], entry[1]
            constraints = entry[2] if len(entry) > 2 else None
            result = [float(objective)] if isinstance(objective, (int, float)) else [float(v) for v in objective]
            if len(result) != len(self.study.directions):
                continue  # not a result of these objectives
            try:
                params = {p.name: _typed(p, values[p.name]) for p in self.params}
                self.study.add_trial(
                    optuna.trial.create_trial(
                        params=params,
                        distributions=self.distributions,
                        values=result,
                        constraints=dict(constraints) if constraints else None,
                    )
                )
            except (KeyError, ValueError):
                continue  # not a configuration of this search space
            taught += 1
        return taught

    def values(self, index: int) -> dict[str, str]:
        trial = self._asked[index]
        if trial is None:
            return self._values[index]
        return {p.name: format_value(p, trial.params[p.name]) for p in self.params}

    def replay(self, recorded: Mapping[int, Recorded | Mapping[str, str]], count: int = 0) -> None:
        """Prepares the rebuild after a restart. `recorded` maps the suggestion indexes that became
        Trials to their values (and creation times); `count` is how many suggestions were made
        in all. The results told before the first suggestion are replayed with them, in order."""
        self._recorded = {i: r if isinstance(r, Recorded) else Recorded(r) for i, r in recorded.items()}
        self._recorded_count = max([count] + [i + 1 for i in recorded])
        self._ready = not self._recorded_count
        # Samplers that learn from every result are rebuilt from the results past REPLAY_LIMIT;
        # the others' asks cost the same at any size, so they are always replayed exactly.
        self._rebuild = self._recorded_count > REPLAY_LIMIT and self.spec.algorithm.name in REBUILT_ALGORITHMS

    def _materialize(self) -> None:
        if self._ready:
            return
        self._ready = True
        if self._rebuild:
            return self._rebuild_from_results()
        # A suggestion that made no Trial repeated a configuration the experiment had; it was
        # asked in the round of the next suggestion that made one, and told at once what was
        # known of that configuration.
        # Suggestion i was asked before any later one's Trial was created: its time is the earliest
        # creation among it and the ones after it. (Trials of one round are created concurrently,
        # so their creation times need not follow their numbers; the asks must.)
        times: dict[int, str] = {}
        following = "~"  # sorts after any timestamp
        for index in reversed(range(self._recorded_count)):
            rec = self._recorded.get(index)
            if rec and rec.created:
                following = min(rec.created, following)
            times[index] = following
        events = [(times[i], 1, i) for i in range(self._recorded_count)]
        events += [(outcome.at or "~", 0, i) for i, outcome in self._pending.items()]
        by_values = {tuple(sorted(r.values.items())): i for i, r in self._recorded.items()}
        waiting: dict[int, Outcome] = {}
        told_at: dict[int, str] = {}
        for time, kind, index in sorted(events):
            if kind == 0:
                told_at[index] = time
                if index in self._asked:
                    self._tell(index, self._pending[index])
                else:
                    waiting[index] = self._pending[index]
                continue
            rec = self._recorded.get(index)
            values = self._ask()
            if rec is not None and values != dict(rec.values):
                # An unseeded sampler, or parallel asks interleaved in ways a replay cannot know.
                # The recorded values ran: the replayed ask is dropped (it still advanced the
                # sampler as the original did) and Optuna is handed the values that ran, so that
                # their results are told to them.
                log.info("suggestion %d replays as %s but ran as %s", index, values, dict(rec.values))
                self._adopt(index, rec.values)
            if index in waiting:
                self._tell(index, waiting.pop(index))
            if rec is None:
                same = by_values.get(tuple(sorted(values.items())))
                if same is not None and same in told_at and same in self._pending:
                    self._tell(index, self._pending[same].without_steps())
        self._pending.clear()

    def _rebuild_from_results(self) -> None:
        """After a restart with many suggestions: Optuna is handed each recorded configuration
        with its result (add_trial), instead of the sampler being asked again for every one
        (a TPE ask grows with the trials, so replaying 10,000 would take many minutes). Unfinished
        ones are asked again with their values fixed, so their results can be told. The sampler
        then goes on from a seed made of algorithm.seed and the number of suggestions: still
        reproducible, but not the sequence an uninterrupted run would have suggested."""
        seed = self.spec.algorithm.seed
        self.study.sampler = make_sampler(
            self.spec, seed=None if seed is None else (seed * 1_000_003 + self._recorded_count) % 2**32
        )
        for index in range(self._recorded_count):
            rec = self._recorded.get(index)
            outcome = self._pending.get(index)
            self._asked[index] = None
            if rec is None:
                self._told.add(index)  # repeated a configuration; its result went to that one
                continue
            values = dict(rec.values)
            try:
                params = {p.name: _typed(p, values[p.name]) for p in self.params}
            except (KeyError, ValueError):
                self._told.add(index)
                continue
            self._values[index] = values
            self._set_key(index, values)
            if outcome is None or (not outcome.succeeded and not outcome.failed and not outcome.pruned):
                self.study.enqueue_trial(params)
                self._asked[index] = self.study.ask(self.distributions)
                continue
            if outcome.pruned:
                state, result = TrialState.PRUNED, None
            elif outcome.succeeded:
                state, result = TrialState.COMPLETE, outcome.result()
            else:
                state, result = TrialState.FAIL, None
            # The curve goes in whole; a rung-based pruner's records of it are not rebuilt here
            # (they are made only by asking it step by step, which the replay does).
            self.study.add_trial(
                optuna.trial.create_trial(
                    params=params,
                    distributions=self.distributions,
                    value=result if not isinstance(result, list) else None,
                    values=result if isinstance(result, list) else None,
                    state=state,
                    intermediate_values=dict(outcome.steps or {}),
                    constraints=dict(outcome.constraints) if outcome.constraints and result is not None else None,
                )
            )
            self._told.add(index)
        self._pending.clear()

    def suggest(self, index: int) -> dict[str, str] | None:
        """Values for suggestion `index` (asking as many as needed), None once a grid is used up."""
        self._materialize()
        if index < len(self._asked):
            return self.values(index)
        values = None
        while len(self._asked) <= index:
            if self.exhausted():
                return None
            values = self._ask()
        return values

    def told(self) -> frozenset[int]:
        """The suggestions whose result the study already holds (or holds for when it is rebuilt):
        telling them again changes nothing, so a round need not work their results out again."""
        return frozenset(self._told | self._pending.keys())

    def tell(self, index: int, outcome: Outcome) -> None:
        if not self._ready:
            self._pending.setdefault(index, outcome)
            return
        self._tell(index, outcome)

    def _tell(self, index: int, outcome: Outcome) -> None:
        if index in self._told or index not in self._asked:
            return
        if not outcome.succeeded and not outcome.failed and not outcome.pruned:
            return
        self._told.add(index)
        trial = self._asked[index]
        if trial is not None:
            # The steps no log read saw while it ran, before it finishes (a finished trial takes no
            # more); a rung-based pruner is asked at each, as in Optuna's own loop, so that it
            # records the rungs this trial passed. Its answer no longer matters.
            try:
                self._report(trial, outcome.steps or {}, ask=self._records_rungs)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # already finished in the study (a replayed ask that was replaced): nothing to add
            self._reported.pop(trial.number, None)  # should_stop asks no more of it
            # CMA-ES does not use constraints and warns of every trial that has them.
            if outcome.succeeded and self.spec.algorithm.name != "cmaes":
                self._constrain(trial, outcome.constraints or {})
        try:
            if outcome.pruned:
                self.study.tell(self._asked[index], state=TrialState.PRUNED, skip_if_finished=True)
            elif outcome.succeeded:
                self.study.tell(self._asked[index], outcome.result(), skip_if_finished=True)
            else:
                self.study.tell(self._asked[index], state=TrialState.FAIL, skip_if_finished=True)
        except RuntimeError as e:
            # GridSampler calls study.stop() once the grid is done, which only works inside
            # study.optimize(); the result is recorded before that, and stopping is ours to decide.
            if "Study.stop" not in str(e):
                raise
        # Suggestions that repeated this configuration while it ran made no Trial of their own:
        # they learn its result now, or they would stay RUNNING in the study for good (and
        # constant-liar TPE would keep counting them as pending).
        # (Looked up by configuration: a scan of every index here made each tell cost the study's size.)
        key = self._keys.get(index)
        same = self._indexes.get(key, ()) if key is not None else ()
        for other in [i for i in same if i not in self._told]:
            self._tell(other, outcome.without_steps())

    @staticmethod
    def _constrain(trial: optuna.Trial, constraints: Mapping[str, float]) -> None:
        """The result's constraint values, which the sampler reads once the trial is told."""
        for name, value in constraints.items():
            try:
                trial.set_constraint(name, value)
            except optuna.exceptions.UpdateFinishedTrialError:
                return  # a replayed ask that was replaced: its result goes to the one that replaced it

    def should_stop(self, index: int, values: Mapping[int, float]) -> bool:
        """Reports a running trial's intermediate objective values (step -> value) and asks the
        pruner whether to stop it."""
        self._materialize()
        trial = self._asked.get(index)
        if trial is None or index in self._told or not values or self.spec.objective.multi:
            # (Several objectives: no Optuna pruner takes them; the planner judges by search/rungs.py.)
            return False
        return self._report(trial, values, ask=True)

    def _report(self, trial: optuna.Trial, values: Mapping[int, float], ask: bool) -> bool:
        """Reports the steps not reported yet, in order; with `ask`, asks the pruner after each until
        it answers stop, as Optuna's own loop does (so that a read that saw several new steps is
        judged at each of them, and a rung-based pruner records each rung at its own step, the same
        way when a restart replays the trial). True if it answered stop."""
        reported = self._reported.setdefault(trial.number, set())
        stop = False
        for step, value in sorted(values.items()):
            if step in reported:
                continue
            trial.report(value, step)
            reported.add(step)
            if ask and not stop and trial.should_prune():
                stop = True
        return stop

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

The rules live in one module per concept, each a step over one round's state (state.py):
lifecycle.py (what pods say), admission.py (user trials, restarts, retries), launch.py (new pods and
suggestions) and experiment.py (phase, counts, best trial, status), whose `run()` takes them in order.
apply.py's `apply_plan()` carries a Plan out, in the one order every caller uses (the executor on the
API server, simulate.MemoryCluster on dicts).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Mapping, Sequence

from hpo_operator.api.vocabulary import (A_NOT_BEFORE, A_RESTART, A_RESTART_REQUEST, FINISHED_PHASES, L_ATTEMPT, L_CONFIG, L_EXPERIMENT,
                   L_LAUNCH, L_LINEAGE, L_TRIAL, MANAGED_BY, TERMINAL_PHASES)
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.search.suggest import Outcome, Recorded, Suggester
from .admission import Admission, backoff_seconds
from .apply import apply_plan
from .experiment import ExperimentSteps, goal_reached, is_better, validate_spec
from .launch import Launch
from .lifecycle import Lifecycle, needs_log
from .state import (DUPLICATE_SUGGESTION_FACTOR, MAX_ASKS_PER_ROUND, REQUEST_KEY_LENGTH, Event, ExperimentView, Plan,
                    RoundState, TrialView)


__all__ = [
    "A_NOT_BEFORE", "A_RESTART", "A_RESTART_REQUEST", "FINISHED_PHASES", "L_ATTEMPT", "L_CONFIG", "L_EXPERIMENT",
    "L_LAUNCH", "L_LINEAGE", "L_TRIAL", "MANAGED_BY", "TERMINAL_PHASES", "DUPLICATE_SUGGESTION_FACTOR",
    "MAX_ASKS_PER_ROUND", "REQUEST_KEY_LENGTH", "Event", "ExperimentView", "Plan", "RoundState", "TrialView",
    "apply_plan", "backoff_seconds", "goal_reached", "is_better", "needs_log", "validate_spec", "plan", "restore_suggester",
]


class _Planner(ExperimentSteps, Launch, Admission, Lifecycle):
    """One round of one experiment: the steps of every module over one RoundState."""


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


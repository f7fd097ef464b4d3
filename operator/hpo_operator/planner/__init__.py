"""The experiment's decisions, as a pure function of what the cluster holds.

`plan()` takes one round's input, each part named (inputs.RoundInput: an Experiment, its Trials and
their pods, what their output reported, the search algorithm's calls) and returns what to change:
Trial statuses, Trials and pods to create, pods to delete, the Experiment status and Events. It
reads no clock but `now` and calls no API, so every rule below is unit-tested without a cluster,
and the executor (controller/executor.py) only carries the plan out.

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

The rules live in one module per concept, each a set of plain functions over one round's state
(state.RoundState), each importing only the modules before it: state.py (the round's data and its
shared helpers) → admission.py (user trials, restarts, retries) → queue.py (workloads a queue
holds) → progress.py (metrics and their history, early stopping) → lifecycle.py (what pods say) →
launch.py (new pods and suggestions, results told) → population.py (pbt: a generation's segments)
→ refusals.py (an invalid spec, a refused watch) → budget.py (time and compute spent, and their
limits) → experiment.py (phase, counts, best trial, status); inputs.py names what a round reads.
`plan()` below calls their steps, in this order:
  1. experiment.opening_status: the Experiment's status to write, started from the one read;
  2. lifecycle.observe_trials: pods (and creates the API server refused) become Trial statuses;
     users' Trials are adopted or refused;
     (an invalid spec stops here: experiment.reject_spec, then finish_status; a spec that cannot
     reach plan() is refused by the same rule, refusals.plan_invalid_spec, and so is one whose
     trial kind the platform did not enable, api.trial_kinds.refusal; an experiment whose watch the
     API server refuses waits, saying so: refusals.plan_watch_forbidden, and watched_again;)
  3. experiment.reopen: a Succeeded experiment whose limit was raised (or goal changed) goes on;
     admission.handle_restart_requests: restarts users ask for;
  4. admission.recover_failures: retries and resumed runs; the configurations that finally failed;
  5. launch.tell_results: decided results, told to the search algorithm;
  6. experiment.best_trial and launch.count_launched: the best trial, what was launched so far;
  7. experiment.decide: the phase (a budget.Budget's limits among the reasons to end), launching pods
     and suggestions on the way (launch.launch; for pbt, population.launch_population, which makes
     the segments a generation needs);
  8. experiment.record_results and experiment.retention: counts, best trial (or Pareto front),
     checkpoint claims;
  9. experiment.finish_status: trial counts, what was spent (budget.record), and the Plan with the
     statuses the round changed.
apply.py's `stages()` turns a Plan into its writes, in the one order every caller uses, and
`carry_out()` hands each to its kind's method of a Target (the executor on the API server; the
in-memory cluster of the tests and benchmarks, tests/support/simulate.py, on dicts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from hpo_operator.api.parameters import parameters_of
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.api.vocabulary import TrialPhase
from hpo_operator.core import metrics, pareto
from hpo_operator.core.podstate import PodObservation
from hpo_operator.search.suggest import Outcome, Recorded, Suggester

from .admission import backoff_seconds, handle_restart_requests, recover_failures
from .budget import Budget
from .experiment import (
    best_trial,
    decide,
    finish_status,
    goal_reached,
    is_better,
    opening_status,
    record_results,
    reject_spec,
    reopen,
    retention,
)
from .inputs import RoundInput
from .launch import count_launched, tell_results
from .lifecycle import needs_log, needs_output, observe_pods, observe_trials, read_outputs
from .refusals import plan_invalid_spec, plan_watch_forbidden, validate_spec, watched_again
from .state import (
    MAX_ASKS_PER_ROUND,
    Event,
    ExperimentView,
    Plan,
    Refusal,
    RoundState,
    TrialView,
    kept_views,
    wanted_metrics,
)

__all__ = [
    "MAX_ASKS_PER_ROUND",
    "Event",
    "ExperimentView",
    "Plan",
    "TrialView",
    "backoff_seconds",
    "goal_reached",
    "is_better",
    "kept_views",
    "needs_log",
    "needs_output",
    "wanted_metrics",
    "observe_pods",
    "validate_spec",
    "plan",
    "plan_invalid_spec",
    "plan_watch_forbidden",
    "Refusal",
    "RoundInput",
    "restore_suggester",
    "warm_results",
    "watched_again",
]


def restore_suggester(
    spec: ExperimentSpec, trials: list[TrialView], status: Mapping[str, Any], warm: Sequence[dict[str, Any]] = ()
) -> Suggester:
    """A new process's study for an experiment: warm-started from the succeeded trials of
    `warm` (another experiment's Trial bodies), then replayed from the experiment's own Trials."""
    suggester = Suggester(spec)
    suggester.warm_start(warm_results(spec, warm))
    recorded = {
        int(t.spec["suggestionIndex"]): Recorded(t.values, t.meta.get("creationTimestamp"))
        for t in trials
        if t.spec.get("suggestionIndex") is not None and t.attempt == 1
    }
    suggester.replay(recorded, int(status.get("suggestionCount") or 0))
    return suggester


def warm_results(
    spec: ExperimentSpec, bodies: Sequence[dict[str, Any]]
) -> list[tuple[dict[str, str], float | list[float], dict[str, float] | None]]:
    """What another experiment's succeeded Trials teach this one's sampler: each configuration with
    this experiment's objective (its objectiveValue) or objectives (each read from the trial's
    metrics by name, so the other experiment may list them in another order), and with this
    experiment's constraints' values. A trial that lacks one of these metrics is left out."""
    out: list[tuple[dict[str, str], float | list[float], dict[str, float] | None]] = []
    objective = spec.objective
    for t in bodies:
        status = t.get("status") or {}
        if status.get("phase") != TrialPhase.succeeded:
            continue
        values = parameters_of(t["spec"].get("parameters"))
        found = {m["name"]: m["value"] for m in status.get("metrics") or [] if "name" in m and "value" in m}
        if not objective.multi:
            found[objective.names[0]] = status.get("objectiveValue")
        if any(found.get(name) is None for name in objective.required_names):
            continue
        result: float | list[float] = (
            [float(found[n]) for n in objective.names] if objective.multi else float(found[objective.names[0]])
        )
        constraints = None
        if objective.constraints:
            broken = pareto.violations(objective.constraints, found)
            constraints = {c.metric_name: v for c, v in zip(objective.constraints, broken, strict=True)}
        out.append((values, result, constraints))
    return out


def plan(given: RoundInput) -> Plan:
    """The round's Plan, from what it reads (inputs.RoundInput, whose fields say what each one is
    and what its default means).

    The steps run in the order the module's docstring gives; each reads the statuses the steps
    before it set (state.status), so the order is part of the rules."""
    exp, trials, pods, now = given.experiment, given.trials, given.pods, given.now
    invalid = validate_spec(exp.spec)
    observations = given.observations
    if observations is None:
        observations = observe_pods(exp.spec, trials, pods, now, given.workloads)
    outputs = given.outputs
    if outputs is None:
        outputs = read_outputs(exp.spec, trials, observations, given.logs)
    state = RoundState(
        exp,
        trials,
        pods,
        outputs,
        now,
        given.suggest,
        given.should_stop or (lambda i, v: False),
        given.tell or (lambda i, o: None),
        volumes=given.volumes,
        observations=observations,
        refused=given.refused,
        workloads=given.workloads,
        told=given.told,
    )
    status = opening_status(state)
    observe_trials(state)
    if invalid:
        reject_spec(state, status, invalid)
        return finish_status(state, status)
    budget = Budget(state)
    reopen(state, status, budget)
    handle_restart_requests(state)
    state.failed_keys = recover_failures(state)
    tell_results(state, state.failed_keys)
    best = best_trial(state)
    count_launched(state, status.suggestion_count or 0)
    decide(state, status, best, budget)
    record_results(state, status, best)
    retention(state)
    return finish_status(state, status, budget)

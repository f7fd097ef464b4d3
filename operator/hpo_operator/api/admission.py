"""The operator's refusals of a run, decided from a configuration's runs as (name, phase) pairs.

The planner applies them (planner/admission.py), and the kubectl plugin applies the same rules so
that it answers, in the operator's own words, a request it can already see is refused. They live
here, outside the planner, because importing the planner loads Optuna: the plugin starts for every
kubectl call and must not pay for that. Keep this module's imports to the API's vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

from .vocabulary import TERMINAL_PHASES


def configuration_refusal(same: Sequence[tuple[str, str]]) -> tuple[str, str] | None:
    """Why a new run of a configuration (a Trial a user created) is refused, or None."""
    winner = next((name for name, phase in same if phase == "Succeeded"), None)
    if winner:
        return "ConfigurationAlreadySucceeded", f"this configuration already succeeded in trial {winner}"
    if any(phase not in TERMINAL_PHASES for _, phase in same):
        return "ConfigurationActive", "this configuration is already running or queued"
    return None


def restart_refusal(phase: str, same: Sequence[tuple[str, str]]) -> tuple[str, str] | None:
    """Why restarting a trial in `phase` is refused, or None."""
    winner = next((name for name, p in same if p == "Succeeded"), None)
    if winner:
        return "ConfigurationAlreadySucceeded", f"its configuration already succeeded in trial {winner}"
    if phase not in TERMINAL_PHASES:
        return "TrialActive", "the trial has not finished"
    active = next((name for name, p in same if p not in TERMINAL_PHASES), None)
    if active:
        return "ConfigurationActive", f"its configuration is already running in trial {active}"
    return None


# Population-based training: a segment's run is decided by the population (planner/population.py),
# whose next generation reads how each segment ended. Another run of a segment, or a configuration
# of the user's own, would have no place in it.
POPULATION_REFUSED = "PopulationBasedTraining"


def population_refusal(what: str) -> tuple[str, str]:
    """Why `what` (a Trial of the user's, a restart) is refused in a pbt experiment."""
    return (
        POPULATION_REFUSED,
        f"{what} is not taken by a pbt experiment: its population decides every segment it runs, and "
        "each generation is decided from how the one before ended",
    )

"""Population-based training's words in the API: a Trial's segment (which member it trains, in which
generation, from whose checkpoint) and the rules the API server checks at `kubectl apply` for an
Experiment with algorithm pbt. The settings are in algorithms.py, with every algorithm's.

A segment is written into the Trial's spec when the operator creates the Trial, never later: the
operator's decisions are a pure function of the Trials, and a Trial's spec is created whole, where
a status written after it could be lost to a crash in between.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from .algorithms import MAX_POPULATION, MIN_POPULATION
from .base import Model, cel, schema_extra
from .vocabulary import AlgorithmName

PBT = AlgorithmName.pbt.value
# The digits populationSize may have: CEL's int() is then never asked to read a huge number.
_DIGITS = len(str(MAX_POPULATION))
_SIZE = "s.name == 'populationSize' && s.value.matches('^[0-9]{1," + str(_DIGITS) + "}$')"


def _pbt_only(rule: str) -> str:
    return f"self.algorithm.name != '{PBT}' || ({rule})"


def rules() -> list[dict[str, Any]]:
    """The CEL rules on an ExperimentSpec that refuse what population-based training cannot take,
    each with its reason."""
    return [
        cel(
            _pbt_only(
                "has(self.algorithm.settings) && self.algorithm.settings.exists(s, "
                f"{_SIZE} && int(s.value) >= {MIN_POPULATION} && int(s.value) <= {MAX_POPULATION})"
            ),
            f"pbt needs the setting populationSize, a whole number from {MIN_POPULATION} to {MAX_POPULATION}: "
            "how many members train side by side",
        ),
        cel(
            _pbt_only(
                "!has(self.algorithm.settings) || self.algorithm.settings.all(s, "
                f"!({_SIZE}) || int(s.value) == 0 || self.maxTrialCount % int(s.value) == 0)"
            ),
            "pbt: maxTrialCount counts segments, populationSize x generations, so it must be a multiple "
            "of populationSize",
        ),
        cel(
            _pbt_only("!has(self.objective.metrics)"),
            "pbt ranks the members by one objective (type and metricName), not several",
        ),
        cel(
            _pbt_only("!has(self.earlyStopping)"),
            "pbt itself decides at every generation which members go on: earlyStopping is not for pbt",
        ),
        cel(
            _pbt_only("has(self.trialTemplate.checkpoint)"),
            "pbt needs trialTemplate.checkpoint: every segment starts from a checkpoint, its member's own "
            "or a copy of a better member's",
        ),
        cel(
            _pbt_only(
                "!has(self.trialTemplate.checkpoint) || "
                "self.trialTemplate.checkpoint.volumeClaimTemplate.accessMode != 'ReadWriteOncePod'"
            ),
            "pbt: members copy a checkpoint while others read it, and ReadWriteOncePod lets one pod at a "
            "time mount it; use ReadWriteOnce (every segment on one node) or ReadWriteMany",
        ),
        cel(
            _pbt_only("self.parameters.exists(p, p.type in ['int', 'double'])"),
            "pbt explores by perturbing int and double parameters: give at least one (categorical and "
            "discrete ones are only resampled or moved to a neighbouring value)",
        ),
    ]


class Segment(Model):
    """Population-based training: the part of a member's training this Trial runs."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            validations=[
                cel(
                    "self.generation == 0 ? !has(self.parent) && !has(self.parentMember) "
                    ": has(self.parent) && has(self.parentMember)",
                    "a segment of generation 0 starts empty; a later one names its parent segment and member",
                ),
            ]
        )
    )

    member: int = Field(ge=0, lt=MAX_POPULATION, description="The member of the population it trains.")
    generation: int = Field(ge=0, description="Its generation: 0 for a member's first segment, then 1, 2, ...")
    parent: str | None = Field(
        None,
        max_length=253,
        description=(
            "The Trial (a segment of the generation before) whose checkpoint this segment starts from: "
            "its member's own last segment, or, after an exploit, a better member's."
        ),
    )
    parent_member: int | None = Field(None, ge=0, lt=MAX_POPULATION, description="The parent segment's member.")
    exploited: bool = Field(
        False,
        description=(
            "True when the member copied another member's checkpoint and hyperparameters (the parent "
            "is that member's segment) and perturbed them."
        ),
    )

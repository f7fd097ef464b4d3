"""The search space: one hyperparameter and the values it may take, as a pydantic model.

Part of the Experiment's spec (spec.py), and a CRD source like it: the cross-field rules (bounds,
which type takes which fields) are CEL rules the API server checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any

from pydantic import ConfigDict, Field

from .base import Model, cel, schema_extra
from .vocabulary import ParameterType

# A parameter's name, usable as ${params.NAME} in the trial template (and a metric's name).
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# A metric's name: not a placeholder, so it may also hold the characters the stdout reader takes in a
# `name=value` pair (core/metrics.py), such as Katib's Validation-accuracy or a framework's loss/train.
METRIC_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_./-]*$"

NUMBER_RE = r"^[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]+)?$"


class Parameter(Model):
    """One hyperparameter and the values it may take."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            validations=[
                cel(
                    "self.type in ['int', 'double'] ? (has(self.min) && has(self.max)) : true",
                    "int and double parameters need min and max",
                ),
                cel("!has(self.min) || !has(self.max) || self.min < self.max", "min must be less than max"),
                cel(
                    "self.type in ['categorical', 'discrete'] ? (has(self.values) && size(self.values) > 0) : true",
                    "categorical and discrete parameters need a non-empty list of values",
                ),
                cel(
                    "self.type in ['categorical', 'discrete'] ? !(has(self.min) || has(self.max) || has(self.step) "
                    "|| self.log) : !has(self.values)",
                    "int and double parameters take min, max, step and log; categorical and discrete take values",
                ),
                cel(
                    f"self.type != 'discrete' || !has(self.values) || self.values.all(v, v.matches('{NUMBER_RE}'))",
                    "the values of a discrete parameter must be numbers",
                ),
                cel("!self.log || (has(self.min) && self.min > 0.0)", "a log-scale parameter needs min > 0"),
                cel("!(self.log && has(self.step))", "a log-scale parameter cannot have a step"),
                cel(
                    "self.type != 'int' || ((!has(self.min) || self.min == double(int(self.min))) && "
                    "(!has(self.max) || self.max == double(int(self.max))) && "
                    "(!has(self.step) || self.step == double(int(self.step))))",
                    "an int parameter needs whole-number min, max and step",
                ),
            ]
        )
    )

    name: str = Field(
        pattern=NAME_PATTERN,
        max_length=63,
        description=("Parameter name, used in the trial template as ${params.NAME}."),
    )
    type: ParameterType = Field(description="int, double, categorical or discrete (numbers from a list).")
    min: float | None = Field(None, description="Lower bound (int, double), inclusive.")
    max: float | None = Field(None, description="Upper bound (int, double), inclusive.")
    step: float | None = Field(
        None,
        gt=0,
        description=("Spacing of the values between min and max (int, double); needed by grid search for doubles."),
    )
    log: bool = Field(False, description="Sample on a log scale (int, double; needs min > 0).")
    values: list[Annotated[str, Field(max_length=128)]] | None = Field(
        None,
        max_length=100,
        description="The values a categorical or discrete parameter takes.",
        json_schema_extra=schema_extra(list_type="set"),
    )


def parameters_of(items: Iterable[Mapping[str, Any]] | None) -> dict[str, Any]:
    """A list of name/value pairs as a dict by name: a Trial's spec.parameters (and the parameters
    a best trial or a Pareto point repeats in the Experiment's status), or a trial's metrics. An
    entry without a name is left out: a reader shows what it can."""
    return {p["name"]: p.get("value") for p in items or () if "name" in p}

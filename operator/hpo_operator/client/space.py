"""The search space from typed Python values, for notebooks: double(), integer(), categorical() and
discrete() each give a Space, which experiment_spec() (build.py) turns into the API's Parameter
under its name. Pure, and checked as it is made: a mistake is reported before anything is created."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from hpo_operator.api.parameters import NAME_PATTERN, Parameter
from hpo_operator.api.vocabulary import ParameterType

from .errors import InvalidInput, validated

# What a parameter's value is in Python: the trial's text read back as this type.
PythonType = Literal["int", "float", "str"]


@dataclass(frozen=True)
class Space:
    """The values one parameter may take; its name is the key it is given under in `parameters`.
    Made by double(), integer(), categorical() and discrete()."""

    type: ParameterType
    min: float | None = None
    max: float | None = None
    step: float | None = None
    log: bool = False
    values: tuple[str, ...] | None = None

    def parameter(self, name: str) -> Parameter:
        """The API's Parameter of this space under `name`."""
        if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
            raise InvalidInput(
                f"invalid parameter name {name!r}: use letters, digits and _ (not first), as a Python identifier"
            )
        values = list(self.values) if self.values is not None else None
        return validated(
            Parameter,
            f"parameter {name}",
            name=name,
            type=self.type,
            min=self.min,
            max=self.max,
            step=self.step,
            log=self.log,
            values=values,
        )


def python_type(parameter: Parameter) -> PythonType:
    """What a trial's value of this parameter is in Python: int, float or str (a discrete
    parameter's values are ints when all are whole numbers)."""
    if parameter.type == ParameterType.int:
        return "int"
    if parameter.type == ParameterType.double:
        return "float"
    if parameter.type == ParameterType.discrete:
        return "int" if all(_whole_text(v) for v in parameter.values or ()) else "float"
    return "str"


def _whole_text(text: str) -> bool:
    return re.fullmatch(r"[-+]?[0-9]+", text) is not None


def _number(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput(f"{what} must be a finite number, not {value!r}")
    return float(value)


def _range(kind: str, low: object, high: object, step: object, log: bool) -> tuple[float, float, float | None]:
    lo, hi = _number(f"{kind}(): min", low), _number(f"{kind}(): max", high)
    if lo >= hi:
        raise InvalidInput(f"{kind}({low!r}, {high!r}): min must be less than max")
    st = None if step is None else _number(f"{kind}(): step", step)
    if st is not None and st <= 0:
        raise InvalidInput(f"{kind}(): step must be positive, not {step!r}")
    if log and lo <= 0:
        raise InvalidInput(f"{kind}({low!r}, {high!r}, log=True): a log scale needs min > 0")
    if log and st is not None:
        raise InvalidInput(f"{kind}(): a log-scale parameter cannot have a step")
    return lo, hi, st


def double(min: float, max: float, *, step: float | None = None, log: bool = False) -> Space:
    """A real number in [min, max]; `log` samples on a log scale (min > 0); `step` spaces the
    values (grid search needs one)."""
    lo, hi, st = _range("double", min, max, step, log)
    return Space(ParameterType.double, lo, hi, st, log)


def integer(min: int, max: int, *, step: int | None = None, log: bool = False) -> Space:
    """A whole number in [min, max] (both included)."""
    for what, value in (("min", min), ("max", max), ("step", step)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidInput(f"integer(): {what} must be an int, not {value!r}")
    lo, hi, st = _range("integer", min, max, step, log)
    return Space(ParameterType.int, lo, hi, st, log)


def _unique(kind: str, values: tuple[str, ...]) -> tuple[str, ...]:
    if not values:
        raise InvalidInput(f"{kind}(): give at least one value")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise InvalidInput(f"{kind}(): {', '.join(repeated)} is given twice")
    return values


def categorical(values: Sequence[str]) -> Space:
    """One of these strings (passed to the trial as a str)."""
    if isinstance(values, str):
        raise InvalidInput(f"categorical({values!r}): give a list of strings, not one string")
    for v in values:
        if not isinstance(v, str):
            raise InvalidInput(f"categorical(): {v!r} is not a string (numbers go in discrete())")
    return Space(ParameterType.categorical, values=_unique("categorical", tuple(values)))


def discrete(values: Sequence[float]) -> Space:
    """One of these numbers (passed to the trial as an int when all are whole, else as a float)."""
    if isinstance(values, str):
        raise InvalidInput(f"discrete({values!r}): give a list of numbers, not a string")
    for v in values:
        _number("discrete(): a value", v)
    texts = tuple(json.dumps(v) if isinstance(v, int) else repr(float(v)) for v in values)
    return Space(ParameterType.discrete, values=_unique("discrete", texts))

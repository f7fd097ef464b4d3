"""The search space: typed parameter values, their canonical text, and configuration identity.

Trials carry parameter values as strings (what a pod's args and env need). Two trials run "the same
configuration" when their values are equal after normalising each by its parameter's type, so
"0.10" and "0.1" of a double are one configuration; the configuration hash is computed from those
normal forms.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping

from hpo_operator.api.parameters import Parameter
from hpo_operator.api.spec import ParameterAssignment


class InvalidConfiguration(ValueError):
    """A parameter assignment that does not fit the experiment's search space."""


def format_value(param: Parameter, value: str | float) -> str:
    """The canonical text of a value: a number for int and double, the value itself otherwise."""
    if param.type == "int":
        return str(int(value))
    if param.type == "double":
        return repr(float(value) + 0.0)  # + 0.0 turns -0.0 into 0.0
    return str(value)


def normalize(param: Parameter, text: str) -> str:
    """The canonical text of a value, or InvalidConfiguration if it is outside the space."""
    if param.type in ("int", "double"):
        try:
            number = float(text)
        except ValueError:
            raise InvalidConfiguration(f"{param.name}: {text!r} is not a number") from None
        if not math.isfinite(number):
            raise InvalidConfiguration(f"{param.name}: {text!r} is not a finite number")
        if param.type == "int" and number != int(number):
            raise InvalidConfiguration(f"{param.name}: {text!r} is not a whole number")
        low, high = param.min, param.max
        assert low is not None and high is not None  # the spec's rules give int and double both bounds
        if not (low <= number <= high):
            raise InvalidConfiguration(f"{param.name}: {text} is outside [{low:g}, {high:g}]")
        if param.step:
            steps = (number - low) / param.step
            if abs(steps - round(steps)) > 1e-9 * max(1.0, abs(steps)):
                raise InvalidConfiguration(
                    f"{param.name}: {text} is not min {low:g} plus a multiple of step {param.step:g}"
                )
        return format_value(param, number)
    if param.type == "discrete":
        try:
            number = float(text)
        except ValueError:
            raise InvalidConfiguration(f"{param.name}: {text!r} is not a number") from None
        for allowed in param.values or []:
            if float(allowed) == number:
                return allowed
        raise InvalidConfiguration(f"{param.name}: {text} is not one of {', '.join(param.values or [])}")
    if text not in (param.values or []):
        raise InvalidConfiguration(f"{param.name}: {text!r} is not one of {', '.join(param.values or [])}")
    return text


def normalize_assignment(params: list[Parameter], values: Mapping[str, str]) -> dict[str, str]:
    """Checks a whole configuration against the space; returns it in canonical form and order."""
    by_name = {p.name: p for p in params}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        raise InvalidConfiguration(f"unknown parameters: {', '.join(unknown)}")
    missing = [p.name for p in params if p.name not in values]
    if missing:
        raise InvalidConfiguration(f"missing parameters: {', '.join(missing)}")
    return {p.name: normalize(p, values[p.name]) for p in params}


def config_hash(values: Mapping[str, str]) -> str:
    canonical = json.dumps(sorted(values.items()), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def assignments(values: Mapping[str, str]) -> list[ParameterAssignment]:
    return [ParameterAssignment(name=k, value=v) for k, v in values.items()]


def summary(values: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())

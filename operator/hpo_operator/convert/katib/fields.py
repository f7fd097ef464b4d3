"""Reading a Katib document's fields strictly (an unknown field or a wrong type is an error that
names it, never dropped silently), and the state one document's conversion keeps."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .output import KatibConversionError, Note


def _number_text(value: Any, path: str) -> float:
    """A Katib number (written as a string, or a YAML number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise KatibConversionError(path, f"{value!r} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise KatibConversionError(path, f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise KatibConversionError(path, f"{value!r} is not a finite number")
    return number


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _plain(number: float) -> int | float:
    """A whole number as an int, so that the YAML says 3, not 3.0."""
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


def _known(obj: Any, path: str, keys: Iterable[str]) -> dict[str, Any]:
    """obj as a mapping whose keys are all known (an unknown one would be dropped silently)."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise KatibConversionError(path, f"must be an object, not {type(obj).__name__}")
    allowed = set(keys)
    for key in obj:
        if key not in allowed:
            raise KatibConversionError(f"{path}.{key}" if path else str(key), "unknown field (not Katib v1beta1)")
    return obj


def _list(obj: Any, path: str) -> list[Any]:
    if obj is None:
        return []
    if not isinstance(obj, list):
        raise KatibConversionError(path, f"must be a list, not {type(obj).__name__}")
    return obj


def _settings(items: Any, path: str) -> list[tuple[str, str, str]]:
    """Katib's name/value settings as (name, value, path of the setting)."""
    result = []
    seen: set[str] = set()
    for i, item in enumerate(_list(items, path)):
        here = f"{path}[{i}]"
        item = _known(item, here, ("name", "value"))
        name, value = item.get("name"), item.get("value")
        if not isinstance(name, str) or not name:
            raise KatibConversionError(f"{here}.name", "missing")
        if name in seen:
            raise KatibConversionError(f"{here}.name", f"{name} is given twice")
        seen.add(name)
        if value is None or isinstance(value, (dict, list)):
            raise KatibConversionError(f"{here}.value", "must be a string")
        result.append((name, str(value), here))
    return result


@dataclass
class _Document:
    """One Katib document being converted: what the steps (conversion.py and the mixins it is made
    of) share."""

    doc: Any
    gp: bool = True  # bayesianoptimization becomes gp (else tpe)
    notes: list[Note] = field(default_factory=list)
    # Katib parameter name -> ours (ours are identifiers: they are ${params.NAME} placeholders).
    renamed: dict[str, str] = field(default_factory=dict)
    # Katib's pbt settings, until the budgets and the trial template are known (population()).
    pbt: dict[str, Any] | None = None

    def note(self, path: str, text: str) -> None:
        self.notes.append(Note(path, text))

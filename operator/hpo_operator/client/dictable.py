"""The base of the client's return types: `to_dict()`, a dataclass in the camelCase shape
`-o json|yaml` prints (times as metav1.Time text)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hpo_operator.core import times


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


def _dict(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return times.iso(obj) if obj else None
    if hasattr(obj, "__dataclass_fields__"):
        return {_camel(k): _dict(getattr(obj, k)) for k in obj.__dataclass_fields__}
    if isinstance(obj, dict):
        return {k: _dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_dict(v) for v in obj]
    return obj


class Dictable:
    def to_dict(self) -> dict:
        return _dict(self)

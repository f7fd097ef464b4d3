"""Status conditions in the shape of metav1.Condition."""

from __future__ import annotations

from datetime import datetime

from . import times


MAX_MESSAGE = 32768  # metav1.Condition's limit


def set_condition(conditions: list[dict] | None, type_: str, status: bool | str, reason: str,
                  message: str, now: datetime, generation: int | None = None) -> list[dict]:
    """Returns the list with `type_` set; lastTransitionTime moves only when the status changes."""
    status_text = status if isinstance(status, str) else ("True" if status else "False")
    message = message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 1] + "…"
    result = [dict(c) for c in conditions or []]
    for cond in result:
        if cond.get("type") == type_:
            if cond.get("status") != status_text:
                cond["lastTransitionTime"] = times.iso(now)
            cond.update(status=status_text, reason=reason, message=message)
            if generation is not None:
                cond["observedGeneration"] = generation
            return result
    new = {"type": type_, "status": status_text, "reason": reason, "message": message,
           "lastTransitionTime": times.iso(now)}
    if generation is not None:
        new["observedGeneration"] = generation
    result.append(new)
    return result


def get_condition(conditions: list[dict] | None, type_: str) -> dict | None:
    for cond in conditions or []:
        if cond.get("type") == type_:
            return cond
    return None

"""Status conditions (metav1.Condition) on the models' Condition."""

from __future__ import annotations

from datetime import datetime

from hpo_operator.api.status import Condition
from hpo_operator.api.vocabulary import ConditionStatus
from hpo_operator.core import times

MAX_MESSAGE = 32768  # metav1.Condition's limit


def set_condition(
    conditions: list[Condition] | None,
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None = None,
) -> list[Condition]:
    """A new list with `type_` set; lastTransitionTime moves only when the status changes. The
    given list and its conditions are left as they are (they may be a view's)."""
    status_text = status if isinstance(status, str) else ("True" if status else "False")
    message = message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"
    result = list(conditions or [])
    for i, cond in enumerate(result):
        if cond.type == type_:
            changed = cond.model_copy(update=dict(status=status_text, reason=reason, message=message))
            if cond.status != status_text:
                changed.last_transition_time = times.iso(now)
            if generation is not None:
                changed.observed_generation = generation
            result[i] = changed
            return result
    result.append(
        Condition(
            type=type_,
            status=ConditionStatus(status_text),
            reason=reason,
            message=message,
            last_transition_time=times.iso(now),
            observed_generation=generation,
        )
    )
    return result


def get_condition(conditions: list[Condition] | None, type_: str) -> Condition | None:
    return next((cond for cond in conditions or [] if cond.type == type_), None)

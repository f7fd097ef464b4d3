"""Which of an experiment's writes can wait, and until when: its status's counters, its trials'
statuses while they wait to start, and its routine Events.

Every round of an experiment works out its Experiment's status afresh from its Trials. Most rounds
change only counts (trials pending, running, succeeded; the configurations; the best trial), and a
hundred small experiments writing theirs every round write more than the trials themselves. So a
status change is written at once only when something else changed (the phase, a condition's status
or reason, the observed generation, a time, anything this module does not name), or when the
suggestions asked run ahead of the Trials (the one count the Trials cannot give back after a
restart); a change of counts alone waits: at most one such write per STATUS_INTERVAL per
experiment, and across all experiments at most STATUS_WRITES_PER_SECOND, the longest waiting first.
What waits is only ever a count the next round would work out again from the Trials: an operator
killed meanwhile loses nothing, its successor writes the counts its first round finds.

A trial's status changes while it waits to start (its first status, PodCreated; then why its pod
waits, ContainerCreating) wait too, TRIAL_STATUS_INTERVAL from the first: a pod that starts within
that time is written once, as running. Any other change of a trial's status is written at once.

The routine Events that come with every trial (TrialCreated, TrialSucceeded, TrialEarlyStopped) are
gathered the same way, across rounds: one Event per reason naming the trials, at most one batch per
EVENT_INTERVAL per experiment and EVENTS_PER_SECOND across them, and at once before any other Event
of the experiment (its phase, a refusal) and when it finishes.
"""

from __future__ import annotations

import heapq
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

STATUS_INTERVAL = float(os.environ.get("HPO_STATUS_INTERVAL", "1"))
STATUS_WRITES_PER_SECOND = float(os.environ.get("HPO_STATUS_WRITES_PER_SECOND", "10"))
EVENT_INTERVAL = float(os.environ.get("HPO_EVENT_INTERVAL", "30"))
EVENTS_PER_SECOND = float(os.environ.get("HPO_EVENTS_PER_SECOND", "5"))
# A trial's status while it waits to start (HPO_TRIAL_STATUS_INTERVAL).
TRIAL_STATUS_INTERVAL = float(os.environ.get("HPO_TRIAL_STATUS_INTERVAL", "1"))

# A turn may be taken this much early (timers and float turns are not exact to the microsecond).
EARLY = 0.001

# The Experiment status fields that are counts of what the Trials hold (or follow from their results):
# a change of only these can wait. suggestionCount is one while the Trials account for it (see urgent).
COUNTERS = frozenset(
    {
        "trials",
        "trialsPending",
        "trialsQueued",
        "trialsRunning",
        "trialsSucceeded",
        "trialsFailed",
        "trialsKilled",
        "trialsEarlyStopped",
        "trialsRetried",
        "configurations",
        "failedConfigurations",
        "suggestionCount",
        "currentOptimalTrial",
        "paretoFront",
        "paretoFrontSize",
        "hypervolume",
        # What was spent is worked out again from the Trials and the phase as written (core/spend.py):
        # it changes with every round while trials run, and a change of phase, which its exactness
        # needs written with it, is written at once anyway.
        "spent",
    }
)

# The Normal Events that come with every trial: gathered on the Experiment, naming the trials.
ROUTINE = ("TrialCreated", "TrialSucceeded", "TrialEarlyStopped")
# Per reason and batch, the trials named in full; the rest are counted.
NAMED_PER_EVENT = 20


def _condition_states(conditions: Any) -> list[tuple[Any, ...]]:
    """Conditions without their messages: a message that only restates counts ("12 of 20
    configurations launched") changes with them; a new status or reason is a change of state."""
    return [
        (c.get("type"), c.get("status"), c.get("reason"), c.get("lastTransitionTime"), c.get("observedGeneration"))
        for c in conditions or []
        if isinstance(c, dict)
    ]


def urgent(stored: Mapping[str, Any], new: Mapping[str, Any], suggestions_made: Callable[[], int]) -> bool:
    """Whether the change from the stored status to the new one must be written at once.
    suggestions_made(): how many suggestions the Trials account for (the highest suggestionIndex
    + 1), asked only when suggestionCount changed."""
    for key in stored.keys() | new.keys():
        old, value = stored.get(key), new.get(key)
        if old == value:
            continue
        if key == "conditions":
            if _condition_states(old) != _condition_states(value):
                return True
        elif key == "suggestionCount":
            # Suggestions that made no Trial (a configuration the experiment already had): only the
            # status remembers them, and a restart that forgot them would ask them again.
            if (value or 0) > suggestions_made():
                return True
        elif key not in COUNTERS:
            return True
    return False


def trial_may_wait(stored: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether a Trial's status change may wait (TRIAL_STATUS_INTERVAL): the trial is waiting to
    start before and after it (no status yet, or Pending), so only the reason it waits changes, and
    the next change (it runs, usually within the second) carries it anyway. Any other change (it
    runs, is queued, ends) is written at once."""
    return (stored.get("phase") or "Pending") == "Pending" and new.get("phase") == "Pending"


class Pacer:
    """Spaces writes that can wait across all experiments: at most `rate` a second (0: no bound).
    Time is cut into turns of 1/rate seconds, each taken by one write at most; an experiment asks
    for one turn at a time, the first free one from when it may write."""

    def __init__(self, rate: float):
        self.spacing = 1 / rate if rate > 0 else 0.0
        self.taken: set[int] = set()
        self.order: list[int] = []  # the same turns, a heap: the past ones are forgotten

    def _turn(self, t: float, up: bool) -> int:
        x = t / self.spacing
        return math.ceil(x - 1e-9) if up else math.floor(x + 1e-9)

    def _forget_before(self, turn: int) -> None:
        while self.order and self.order[0] < turn:
            self.taken.discard(heapq.heappop(self.order))

    def _take(self, turn: int) -> None:
        self.taken.add(turn)
        heapq.heappush(self.order, turn)

    def take(self, now: float) -> bool:
        """Whether a write may go now (and takes that turn)."""
        if not self.spacing:
            return True
        turn = self._turn(now, up=False)
        self._forget_before(turn)
        if turn in self.taken:
            return False
        self._take(turn)
        return True

    def reserve(self, earliest: float) -> float:
        """The time of the first free turn from `earliest` on, taken."""
        if not self.spacing:
            return earliest
        turn = self._turn(earliest, up=True)
        while turn in self.taken:
            turn += 1
        self._take(turn)
        return turn * self.spacing


@dataclass
class Deferral:
    """One experiment's writes that wait: when it last wrote, and when it may next."""

    interval: float
    last: float = -math.inf
    turn: float | None = None  # the turn reserved for what waits (None: nothing waits)

    def may_write(self, now: float, pacer: Pacer) -> bool:
        """Whether something that can wait may be written now; if not, a turn is reserved for it
        (pending() says when)."""
        if self.turn is not None:
            return now >= self.turn - EARLY
        if now >= self.last + self.interval and pacer.take(now):
            return True
        self.turn = pacer.reserve(max(now, self.last + self.interval))
        return False

    def wrote(self, now: float) -> None:
        self.last, self.turn = now, None

    def pending(self) -> float | None:
        return self.turn


@dataclass
class RoutineEvents:
    """One experiment's routine Events, gathered across rounds until posted: per reason, the
    entries ("trial x: objective loss=0.1") and how many there were."""

    deferral: Deferral = field(default_factory=lambda: Deferral(EVENT_INTERVAL))
    entries: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, entry: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        named = self.entries.setdefault(reason, [])
        if len(named) < NAMED_PER_EVENT:
            named.append(entry)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def due(self, now: float, pacer: Pacer) -> bool:
        return bool(self.counts) and self.deferral.may_write(now, pacer)

    def take(self, now: float) -> list[tuple[str, str]]:
        """The gathered Events as (reason, message), one per reason, and forgets them."""
        taken = [(reason, message(self.entries[reason], self.counts[reason])) for reason in self.counts]
        self.entries, self.counts = {}, {}
        self.deferral.wrote(now)
        return taken

    def pending(self) -> float | None:
        return self.deferral.pending() if self.counts else None


def message(entries: Iterable[str], count: int) -> str:
    """One Event's message for `count` routine entries of a reason, of which `entries` are named."""
    named = list(entries)
    if count == 1 and named:
        return named[0]
    text = f"{count} trials: " + "; ".join(e.removeprefix("trial ") for e in named)
    return text + (f"; and {count - len(named)} more" if count > len(named) else "")

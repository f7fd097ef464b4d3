"""What an experiment's executor wrote that the watch has not shown yet, and what it has not written
yet because it may wait (coalesce.py decides which): its state between rounds, kept apart from the
executor that makes the API calls.
"""

from __future__ import annotations

from .coalesce import (
    EVENTS_PER_SECOND,
    STATUS_INTERVAL,
    STATUS_WRITES_PER_SECOND,
    TRIAL_STATUS_INTERVAL,
    Deferral,
    Pacer,
    RoutineEvents,
)


class Pacing:
    """The turns of what waits, shared by every experiment of the process (coalesce.Pacer): the
    status writes of counts alone, and the routine Events."""

    def __init__(self, status_rate: float = STATUS_WRITES_PER_SECOND, event_rate: float = EVENTS_PER_SECOND):
        self.status = Pacer(status_rate)
        self.events = Pacer(event_rate)


class PendingWrites:
    """What this operator wrote for one experiment that the watch has not shown yet, and what it has
    not written yet.

    The watched state lags behind our own writes by a watch event. Without this, the round after a
    write would decide again on the old state: harmless for the objects (their names are
    deterministic, so a second create collides) but it would repeat Events and writes. A status of
    new counts alone, and the routine Events, wait here for their turn (coalesce.py); each round
    starts from the newest status, written or not.
    """

    def __init__(self, pacing: Pacing | None = None) -> None:
        self.pacing = pacing or Pacing(0, 0)
        self.experiment_status: dict | None = None  # our last status write
        self.deferred: dict | None = None  # a newer status, of counts alone, that waits for its turn
        self.status_deferral = Deferral(STATUS_INTERVAL)
        self.events = RoutineEvents()
        self.observed: dict = {}  # the status the watch showed last
        self.trial_status: dict[str, dict] = {}
        # Trial statuses that wait (coalesce.trial_may_wait): the status the API server holds, the
        # newest one, and when it may be written.
        self.trial_waiting: dict[str, tuple[dict, dict, float]] = {}
        self.trials: dict[str, dict] = {}
        # Per trial, the last body made with one of these statuses laid over it: (the watched body,
        # the status, the body made).
        self.overlaid: dict[str, tuple[dict, dict, dict]] = {}

    def trial_bodies(self, watched: dict[str, dict]) -> list[dict]:
        """The watched Trials, with our newer writes laid over them, and the statuses that wait
        (shallow copies: nothing that the watch holds is changed)."""
        for name in [n for n in self.trials if n in watched]:
            del self.trials[name]
        bodies = {**self.trials, **watched} if self.trials else watched
        for name in [n for n in self.trial_waiting if n not in bodies]:
            del self.trial_waiting[name]  # deleted meanwhile
        if not self.trial_status and not self.trial_waiting:
            self.overlaid.clear()
            return list(bodies.values())
        result = []
        overlaid = {}
        for name, body in bodies.items():
            status = None
            mine = self.trial_status.get(name)
            if mine is not None:
                if (body.get("status") or {}) == mine:
                    del self.trial_status[name]
                else:
                    status = mine
            waiting = self.trial_waiting.get(name) if self.trial_waiting else None
            if waiting is not None:
                status = waiting[1]
            if status is not None:
                # The same body as last round while neither it nor the status laid over it changed,
                # so the round's view of it (and what the view worked out) is kept.
                kept = self.overlaid.get(name)
                if kept is not None and kept[0] is body and kept[1] is status:
                    body = kept[2]
                else:
                    base, body = body, {**body, "status": status}
                    kept = (base, status, body)
                overlaid[name] = kept
            result.append(body)
        self.overlaid = overlaid
        return result

    def wait_trial(self, name: str, stored: dict, status: dict, now: float) -> None:
        """The trial's newest status waits, written at the turn its first waiting one got."""
        waiting = self.trial_waiting.get(name)
        self.trial_waiting[name] = (stored, status, waiting[2] if waiting else now + TRIAL_STATUS_INTERVAL)

    def wrote_trial_status(self, name: str, status: dict) -> None:
        self.trial_status[name] = status
        self.trial_waiting.pop(name, None)

    def echo(self, name: str, before: dict | None, now: dict) -> bool:
        """Whether a Trial's new version only shows what we wrote: our create (before None), or our
        last status write with nothing else changed. A round for it would find nothing new (the
        next one lays the same writes over the watch anyway), so its event wakes none."""
        if before is None:
            made = self.trials.get(name)
            return made is not None and same_but_status(made, now)
        status = self.trial_status.get(name)
        return status is not None and (now.get("status") or {}) == status and same_but_status(before, now)

    def status(self, observed: dict) -> dict:
        """The status a round starts from: the one that waits, else our last write until the watch
        shows it, else the watched one."""
        self.observed = observed
        if self.experiment_status is not None and observed == self.experiment_status:
            self.experiment_status = None
        if self.deferred is not None:
            return self.deferred
        return observed if self.experiment_status is None else self.experiment_status

    def stored(self) -> dict:
        """The status the API server holds: our last write, or the watched one."""
        return self.observed if self.experiment_status is None else self.experiment_status

    def wrote_status(self, status: dict, now: float) -> None:
        self.experiment_status = status
        self.deferred = None
        self.status_deferral.wrote(now)

    def next_turn(self) -> float | None:
        """When something that waits may be written (time.monotonic()); None: nothing waits."""
        turns = [t for t in (self.status_deferral.pending() if self.deferred else None, self.events.pending()) if t]
        if self.trial_waiting:
            turns.append(min(w[2] for w in self.trial_waiting.values()))
        return min(turns) if turns else None


def same_but_status(a: dict, b: dict) -> bool:
    """Whether two versions of an object differ in their status (and resourceVersion) alone."""
    meta_a, meta_b = a.get("metadata") or {}, b.get("metadata") or {}
    if any(a.get(k) != b.get(k) for k in a.keys() | b.keys() if k not in ("status", "metadata")):
        return False
    ignored = ("resourceVersion", "managedFields")
    return all(meta_a.get(k) == meta_b.get(k) for k in meta_a.keys() | meta_b.keys() if k not in ignored)


def status_patch(old: dict, new: dict) -> dict:
    """A merge patch from old to new (keys that disappeared are set to null)."""
    patch = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch


def pruned(status: dict) -> dict:
    """A status as the API server stores it: merge patches drop null fields."""
    return {k: v for k, v in status.items() if v is not None}

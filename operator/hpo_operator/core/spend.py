"""What an experiment has spent: its running time, and the compute its trials requested while they
ran. The planner's budget (planner/budget.py) decides by these, and the plugin and the dashboard
show them; all three compute them here, from what the cluster holds, never from memory:

- **Running time** (spec.budget.maxDurationSeconds): the time the experiment's phase was Running.
  Suspended, failed or finished time does not count. Its status keeps `spent.durationSeconds` as of
  `spent.time`, and every status write that changes the phase writes both anew: between two such
  writes the phase is the one the status says, so the time since `spent.time` counts exactly when
  that phase is Running, whatever process reads it (a restarted operator counts the time it was
  away, during which the experiment's trials ran on).
- **Compute** (spec.budget.maxResourceSeconds): over every trial, retries, restarts and resumed runs
  included, what it requests (status.requests, recorded when its workload is started: the pods the
  workload stands for, workloads/requests.py) times how long it ran: from its start
  (status.startTime, the pod's own start: time spent scheduling or waiting in a queue does not
  count) to its end (status.runSeconds, recorded when it finishes: the container's finish time as
  the pod reports it, or the moment the operator stopped it), or to now while it runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hpo_operator.api.vocabulary import TERMINAL_PHASES, TrialPhase
from hpo_operator.core import times

# The status's spent values are written with the round's other changes, and on their own at most
# this often while something runs (kubectl get shows them; the decisions never read them stale).
REFRESH_SECONDS = 60.0


@dataclass(frozen=True)
class Run:
    """What a trial's status says of its run, for spending."""

    phase: str
    start_time: str | None
    run_seconds: float | None
    completion_time: str | None
    requests: Mapping[str, float]

    @classmethod
    def of(cls, status: Mapping[str, Any] | None) -> Run:
        """From a Trial's status as the API server stores it."""
        st = status or {}
        requests = st.get("requests") or {}
        return cls(
            st.get("phase") or TrialPhase.pending,
            st.get("startTime"),
            st.get("runSeconds"),
            st.get("completionTime"),
            {str(k): float(v) for k, v in requests.items() if isinstance(v, (int, float))},
        )

    def seconds(self, now: datetime) -> float:
        """How long the trial's workload has run (so far, while it runs)."""
        if self.run_seconds is not None:
            return max(0.0, float(self.run_seconds))
        start = times.parse_or_none(self.start_time)
        if start is None:
            return 0.0  # never started: waiting to be scheduled or admitted costs nothing here
        if self.phase == TrialPhase.running:
            end = now
        elif self.phase in TERMINAL_PHASES:
            # Recorded before runSeconds existed: until the operator saw it end.
            end = times.parse_or_none(self.completion_time) or now
        else:
            return 0.0  # started once, then held in its queue again: that time ended with it
        return max(0.0, (end - start).total_seconds())

    @property
    def running(self) -> bool:
        return self.phase == TrialPhase.running and self.run_seconds is None and bool(self.start_time)


def compute(runs: Iterable[Run], now: datetime) -> tuple[dict[str, float], dict[str, float]]:
    """The resource-seconds spent per resource, and how fast they grow now (the running trials'
    requests, per second)."""
    spent: dict[str, float] = {}
    rate: dict[str, float] = {}
    for run in runs:
        if not run.requests:
            continue
        seconds = run.seconds(now)
        running = run.running
        for resource, amount in run.requests.items():
            if seconds:
                spent[resource] = spent.get(resource, 0.0) + amount * seconds
            if running:
                rate[resource] = rate.get(resource, 0.0) + amount
    return spent, rate


def duration(recorded: float | None, as_of: str | None, phase: str | None, now: datetime) -> float:
    """The experiment's running time now: `recorded` (status.spent.durationSeconds) as of `as_of`
    (status.spent.time), plus the time since, if the recorded phase is Running."""
    base = float(recorded or 0.0)
    since = times.parse_or_none(as_of)
    if phase != "Running" or since is None:
        return base
    return base + max(0.0, (now - since).total_seconds())


# --- shown to users --------------------------------------------------------------------------


def hours(seconds: float) -> str:
    """A duration for a table: 45s, 12m05s, 3h02m, 2d04h."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def resource_amount(resource: str, seconds: float) -> str:
    """Resource-seconds as a person reads them: cpu and devices in hours of one (cpu-h, gpu-h),
    memory in GiB-hours."""
    if resource == "memory" or resource.startswith("hugepages-") or resource == "ephemeral-storage":
        return f"{seconds / 3600 / 2**30:.3g} GiB-h"
    return f"{seconds / 3600:.3g} h"


def summary(resources: Mapping[str, float]) -> str:
    """The compute spent in one line, for kubectl get -o wide (memory left out: it is in describe)."""
    shown = [
        f"{name}={seconds:.0f}s"
        for name, seconds in sorted(resources.items())
        if name != "memory" and not name.startswith("hugepages-") and name != "ephemeral-storage"
    ]
    return ", ".join(shown)

"""A Plan as the writes that carry it out, in the one order every caller uses.

`stages(plan)` returns the plan's writes as data, in stages: the writes of one stage are independent
chains that run together, and a stage starts once the one before has ended. `carry_out(plan, target)`
walks those stages, and `perform(write, target)` is the one dispatch of a write to the Target's
method for its kind. The executor (controller/executor.py) is a Target whose methods are API calls
on the API server; the tests' in-memory cluster (tests/support/simulate.MemoryCluster) is one whose
methods change dicts, for benchmarks and the planner's multi-round tests. Both go through the same
stages and the same dispatch, so what the tests run is the order the operator writes in, and
neither hands control back to the planner on the way (the route from a plan to the API server only
goes down the floors):
- a new Trial is created, then its pod (the pod's ownerReference needs the Trial's uid) and its
  first status at once (CreateTrial carries both);
- a Trial's status is written before its metadata, so that a restart request is answered before
  its annotation goes (UpdateTrial carries both);
- the Experiment's status goes last, once the Trials it counts exist: an operator stopped in
  between then re-plans from the Trials, never from counts ahead of them;
- then the round's Events.

The Plan's statuses are models; the writes carry the JSON the API server stores, dumped here
(Model.dump: by alias, without None fields), once per status the round changed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from hpo_operator.api.status import TrialStatus

from .state import Event, Plan


@dataclass(frozen=True)
class CreateTrial:
    """Creates the Trial (its first status is body["status"]), then starts it if `start`."""

    body: dict[str, Any]
    start: bool


@dataclass(frozen=True)
class UpdateTrial:
    """Writes the Trial's status (when given), then merges `metadata` into it."""

    name: str
    status: dict[str, Any] | None
    metadata: dict[str, Any] | None


@dataclass(frozen=True)
class StartTrial:
    """Creates the workload (pod, Job or resource) of an existing Trial."""

    name: str


@dataclass(frozen=True)
class DeleteWorkload:
    name: str


@dataclass(frozen=True)
class SetQueueActive:
    """Deactivates (active False) or reactivates the Kueue Workload of the trial's workload; with no
    such Workload, a deactivation deletes the workload instead."""

    name: str
    active: bool


@dataclass(frozen=True)
class DeleteClaim:
    name: str


@dataclass(frozen=True)
class WriteExperimentStatus:
    status: dict[str, Any]


@dataclass(frozen=True)
class PostEvents:
    events: list[Event]


Write = (
    CreateTrial
    | UpdateTrial
    | StartTrial
    | DeleteWorkload
    | SetQueueActive
    | DeleteClaim
    | WriteExperimentStatus
    | PostEvents
)


def stages(plan: Plan) -> list[list[Write]]:
    """The plan's writes: the independent chains, then the Experiment's status, then the Events."""
    new = {body["metadata"]["name"] for body in plan.create_trials}
    starts = set(plan.start_workloads)
    chains: list[Write] = [CreateTrial(body, body["metadata"]["name"] in starts) for body in plan.create_trials]
    chains += [
        UpdateTrial(name, _dumped(plan.trial_status.get(name)), plan.trial_metadata.get(name))
        for name in {*plan.trial_status, *plan.trial_metadata}
    ]
    chains += [StartTrial(name) for name in plan.start_workloads if name not in new]
    chains += [DeleteWorkload(name) for name in plan.delete_workloads]
    chains += [SetQueueActive(name, active) for name, active in plan.queue_activations.items()]
    chains += [DeleteClaim(name) for name in plan.delete_volumes]
    return [chains, [WriteExperimentStatus(plan.experiment_status.dump())], [PostEvents(plan.events)]]


class Target(Protocol):
    """Where a plan's writes are carried out: one method per kind of write, each taking the
    write's fields (the executor's make API calls; the in-memory cluster's change dicts)."""

    async def create_trial(self, body: dict[str, Any], start: bool) -> None: ...

    async def update_trial(self, name: str, status: dict[str, Any] | None, metadata: dict[str, Any] | None) -> None: ...

    async def start(self, name: str) -> None: ...

    async def delete_workload(self, name: str) -> None: ...

    async def set_queue_active(self, name: str, active: bool) -> None: ...

    async def delete_claim(self, name: str) -> None: ...

    async def write_experiment_status(self, status: dict[str, Any]) -> None: ...

    def post_events(self, events: list[Event]) -> None: ...


async def perform(write: Write, target: Target) -> None:
    """Carries out one write: the target's method for its kind, with its fields."""
    match write:
        case CreateTrial(body, start):
            await target.create_trial(body, start)
        case UpdateTrial(name, status, metadata):
            await target.update_trial(name, status, metadata)
        case StartTrial(name):
            await target.start(name)
        case DeleteWorkload(name):
            await target.delete_workload(name)
        case SetQueueActive(name, active):
            await target.set_queue_active(name, active)
        case DeleteClaim(name):
            await target.delete_claim(name)
        case WriteExperimentStatus(status):
            await target.write_experiment_status(status)
        case PostEvents(events):
            target.post_events(events)


async def carry_out(plan: Plan, target: Target) -> None:
    """The plan's writes on the target, stage by stage; the writes of a stage run together."""
    for stage in stages(plan):
        await asyncio.gather(*(perform(w, target) for w in stage))


def _dumped(status: TrialStatus | None) -> dict[str, Any] | None:
    return None if status is None else status.dump()

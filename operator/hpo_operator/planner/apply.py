"""Carrying a Plan out: one order of writes, whatever the writes go to.

The executor carries plans out on the API server; simulate.MemoryCluster carries them out on dicts,
for benchmarks and the planner's multi-round tests. Both go through apply_plan(), so what the tests
run is the order the operator writes in:
- a new Trial is created, then its pod (the pod's ownerReference needs the Trial's uid) and its
  first status at once (the target's create_trial does both);
- a Trial's status is written before its metadata, so that a restart request is answered before
  its annotation goes (update_trial);
- the Experiment's status goes last, once the Trials it counts exist: an operator stopped in
  between then re-plans from the Trials, never from counts ahead of them;
- then the round's Events.
Everything else is independent, so each object's writes form a chain and the chains run together.

The Plan's statuses are models; a Target gets them as the JSON the API server stores, dumped here
(Model.dump: by alias, without None fields), once per status the round changed.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from hpo_operator.api.status import TrialStatus

from .state import Event, Plan


class Target(Protocol):
    async def create_trial(self, body: dict[str, Any], start: bool) -> None:
        """Creates the Trial (its first status is body["status"]), then starts it if `start`."""

    async def update_trial(self, name: str, status: dict[str, Any] | None, metadata: dict[str, Any] | None) -> None:
        """Writes the Trial's status (when given), then merges `metadata` into it."""

    async def start(self, name: str) -> None:
        """Creates the workload of an existing Trial."""

    async def delete_workload(self, name: str) -> None: ...

    async def delete_claim(self, name: str) -> None: ...

    async def write_experiment_status(self, status: dict[str, Any]) -> None: ...

    def post_events(self, events: list[Event]) -> None: ...


async def apply_plan(plan: Plan, target: Target) -> None:
    new = {body["metadata"]["name"] for body in plan.create_trials}
    starts = set(plan.start_pods)
    await asyncio.gather(
        *[target.create_trial(body, start=body["metadata"]["name"] in starts) for body in plan.create_trials],
        *[
            target.update_trial(name, _dumped(plan.trial_status.get(name)), plan.trial_metadata.get(name))
            for name in {*plan.trial_status, *plan.trial_metadata}
        ],
        *[target.start(name) for name in plan.start_pods if name not in new],
        *[target.delete_workload(name) for name in plan.delete_pods],
        *[target.delete_claim(name) for name in plan.delete_volumes],
    )
    await target.write_experiment_status(plan.experiment_status.dump())
    target.post_events(plan.events)


def _dumped(status: TrialStatus | None) -> dict[str, Any] | None:
    return None if status is None else status.dump()

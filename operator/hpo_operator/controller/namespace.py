"""One namespace's informers, and what an experiment's round reads from them.

Each namespace with an experiment has an informer for its Trials (all of them, so that a user's
Trial is seen) and one for its trial pods (selected by label on the API server: no other pod reaches
the operator); Jobs, other trial resources and checkpoint claims get one once an experiment uses
them. The informers index their objects by experiment and wake that experiment's loop on a change.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from hpo_operator.api.vocabulary import L_EXPERIMENT
from hpo_operator.kube.client import PODS, TRIALS, KubeClient, Resource
from hpo_operator.kube.informer import Informer
from hpo_operator.workloads.kinds import Kind
from .slim import slim_custom_object, slim_pod, slim_workload

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, experiment name)


def by_experiment(obj: dict) -> str | None:
    """The experiment an object is indexed under: the one its label names."""
    return (obj["metadata"].get("labels") or {}).get(L_EXPERIMENT)


class Namespace:
    """The informers of one namespace: its Trials (all, so that a user's Trial is seen) and its
    trial pods (selected by label on the API server: no other pod reaches the operator)."""

    def __init__(self, api: KubeClient, namespace: str, wake: Callable[[Key], None]):
        self.api, self.name, self.wake = api, namespace, wake
        self.trials = Informer(api, namespace, TRIALS, lambda t: (t.get("spec") or {}).get("experimentName"),
                               slim_custom_object, self.changed)
        self.pods = Informer(api, namespace, PODS, by_experiment, slim_pod, self.changed, label_selector=L_EXPERIMENT)
        # Jobs or other resources that trials run as, watched once an experiment uses that kind.
        self.workloads: dict[Resource, Informer] = {}
        self.tasks = [self.start(i) for i in (self.trials, self.pods)]

    def changed(self, experiment: str | None) -> None:
        self.wake((self.name, experiment))

    def start(self, informer: Informer) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(informer.run(), name=f"{informer.kind} in {self.name}")
        task.add_done_callback(lambda t: self.ended(informer, t))
        return task

    def ended(self, informer: Informer, task: asyncio.Task) -> None:
        """An informer's loop ends only when cancelled (its experiments are gone); anything else
        leaves it down for good, which the liveness probe then reports."""
        if task.cancelled():
            return
        informer.health.stopped(task.exception())
        log.error("%s: the informer stopped (%r); the liveness probe fails from now on", informer.health.where,
                  task.exception())

    def informers(self) -> list[Informer]:
        return [self.trials, self.pods, *self.workloads.values()]

    def workload(self, resource: Resource) -> Informer:
        informer = self.workloads.get(resource)
        if informer is None:
            informer = self.workloads[resource] = Informer(self.api, self.name, resource, by_experiment,
                                                           slim_workload, self.changed, label_selector=L_EXPERIMENT)
            self.tasks.append(self.start(informer))
        return informer

    async def synced(self) -> None:
        await self.trials.synced.wait()
        await self.pods.synced.wait()

    async def watch_kind(self, kind: Kind) -> Resource:
        """The resource of a trial kind, watched in the namespace from now on (and listed once)."""
        plural = kind.plural or await self.api.plural_of(kind.api_version, kind.kind)
        resource = (kind.group, kind.version, plural)
        await self.workload(resource).synced.wait()
        return resource

    def trials_of(self, experiment: str) -> dict[str, dict]:
        return dict(self.trials.objects.get(experiment) or {})

    def pods_of(self, experiment: str) -> dict[str, dict]:
        return dict(self.pods.objects.get(experiment) or {})

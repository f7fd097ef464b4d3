"""One namespace's informers, and the per-trial pods an experiment's round reads from them.

Namespace starts the informers of a namespace with experiments and answers a round's lookups
(its Trials, its pods, the resource of a trial kind). For a trial that runs as a Job or another
resource, WorkloadObservations observes that resource and its pods (workloads/observe.py), and keeps
the observation while the informers hold the same objects; it lives here because it relies on what
the informers promise, a new dict for every change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from hpo_operator.api import trial_kinds
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.api.vocabulary import L_EXPERIMENT, L_TRIAL
from hpo_operator.kube.client import CLAIMS, PODS, TRIALS, KubeClient, Resource
from hpo_operator.kube.informer import Informer
from hpo_operator.workloads.kinds import Kind, primary_labels
from hpo_operator.workloads.observe import Observed, observe_workload

from .slim import slim_custom_object, slim_pod, slim_workload

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, experiment name)


def by_experiment(obj: dict) -> str | None:
    """The experiment an object is indexed under: the one its label names."""
    return (obj["metadata"].get("labels") or {}).get(L_EXPERIMENT)


class WatchForbidden(Exception):
    """The API server refuses the operator a watch an experiment needs (401, 403): its RBAC does not
    grant that kind in the namespace. The experiment waits for `listed` (the informer, retried with
    a long backoff, listed at last), and says why meanwhile (message)."""

    def __init__(self, informer: Informer, entry: str | None):
        group, _, plural = informer.resource
        exception = informer.health.exception
        self.listed = informer.synced
        self.message = trial_kinds.watch_forbidden(
            f"{plural}.{group}" if group else plural,
            informer.namespace,
            getattr(exception, "status", None),
            entry,
        )
        super().__init__(self.message)


class Namespace:
    """The informers of one namespace: its Trials (all, so that a user's Trial is seen) and its
    trial pods (selected by label on the API server: no other pod reaches the operator)."""

    def __init__(
        self,
        api: KubeClient,
        namespace: str,
        wake: Callable[[Key], None],
        wake_all: Callable[[str], None] | None = None,
        echo: Callable[[Key, str, dict | None, dict], bool] | None = None,
    ):
        self.api, self.name, self.wake = api, namespace, wake
        # Wakes every experiment of the namespace: a watch they wait for has listed (or is refused).
        self.wake_all = wake_all or (lambda namespace: None)
        # Whether a Trial's change is only the experiment's own write coming back (no round for it).
        self.echo = echo
        self.trials = Informer(
            api,
            namespace,
            TRIALS,
            lambda t: (t.get("spec") or {}).get("experimentName"),
            slim_custom_object,
            self.changed,
            health_changed=self.health_changed,
            echo=self.trial_echo if echo is not None else None,
        )
        self.pods = Informer(
            api,
            namespace,
            PODS,
            by_experiment,
            slim_pod,
            self.changed,
            label_selector=L_EXPERIMENT,
            health_changed=self.health_changed,
        )
        # Jobs or other resources that trials run as, watched once an experiment uses that kind.
        self.workloads: dict[Resource, Informer] = {}
        self.tasks = [self.start(i) for i in (self.trials, self.pods)]

    def changed(self, experiment: str | None) -> None:
        self.wake((self.name, experiment))

    def trial_echo(self, experiment: str | None, name: str, before: dict | None, now: dict) -> bool:
        assert self.echo is not None
        return experiment is not None and self.echo((self.name, experiment), name, before, now)

    def health_changed(self) -> None:
        """A watch went down or listed again: the experiments that wait for it (a round never plans
        on a watch that is down, and none waits in a worker) are woken to look again."""
        self.wake_all(self.name)

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
        log.error(
            "%s: the informer stopped (%r); the liveness probe fails from now on",
            informer.health.where,
            task.exception(),
        )

    def informers(self) -> list[Informer]:
        return [self.trials, self.pods, *self.workloads.values()]

    def own_informers(self) -> list[Informer]:
        """The watches of the operator's own objects, which every experiment needs and the chart
        always grants: down for long, they mean the process is unwell (the liveness probe). The
        others (a trial kind's, the checkpoint claims') depend on what the platform granted."""
        return [self.trials, self.pods]

    def workload(self, resource: Resource) -> Informer:
        informer = self.workloads.get(resource)
        if informer is None:
            # Patient: a refusal is the platform's RBAC, which changes in minutes, not seconds.
            informer = self.workloads[resource] = Informer(
                self.api,
                self.name,
                resource,
                by_experiment,
                slim_workload,
                self.changed,
                label_selector=L_EXPERIMENT,
                patient=True,
                health_changed=self.health_changed,
            )
            self.tasks.append(self.start(informer))
        return informer

    def synced(self) -> bool:
        """Whether the Trials and pods watches have listed since their last failure."""
        return self.trials.synced.is_set() and self.pods.synced.is_set()

    async def watch_kind(self, kind: Kind) -> Resource | None:
        """The resource of a trial kind, watched in the namespace from now on; None until it has
        listed (health_changed() wakes the experiments then). Raises WatchForbidden while the API
        server refuses that watch."""
        plural = kind.plural or await self.api.plural_of(kind.api_version, kind.kind)
        resource = (kind.group, kind.version, plural)
        listed = self.listed(self.workload(resource), trial_kinds.chart_entry((kind.group, kind.kind), plural))
        return resource if listed else None

    def watch_claims(self) -> bool:
        """Whether the checkpoint claims' informer has listed (WatchForbidden while that is refused)."""
        return self.listed(self.workload(CLAIMS), None)

    def listed(self, informer: Informer, entry: str | None) -> bool:
        """Whether the informer has listed since its last failure; raises WatchForbidden while the
        API server refuses it (`entry`: the trialKinds entry that would grant it)."""
        health = informer.health
        if health.synced.is_set():
            return True
        if health.forbidden.is_set():
            raise WatchForbidden(informer, entry)
        return False

    def trials_of(self, experiment: str) -> dict[str, dict]:
        return dict(self.trials.objects.get(experiment) or {})

    def pods_of(self, experiment: str) -> dict[str, dict]:
        return dict(self.pods.objects.get(experiment) or {})

    def workload_observations(
        self,
        experiment: str,
        spec: ExperimentSpec,
        kind: Kind,
        resource: Resource,
        kept: WorkloadObservations,
        now: datetime,
    ) -> dict[str, Observed]:
        """Per trial, what its Job or resource and their pods say (workloads/observe.py), observed
        anew only where they changed since `kept` last saw them."""
        return kept.observe(
            kind,
            spec,
            self.workload(resource).objects.get(experiment) or {},
            (self.pods.objects.get(experiment) or {}).values(),
            now,
        )


@dataclass
class WorkloadObservations:
    """The observations of an experiment's Job or resource trials, each kept while its workload and
    pods are the same objects as when it was made: the informers store a new dict for every change
    they see, so an unchanged trial costs a lookup instead of a new observation each round (as a
    pod trial's pod is the informer's own dict). A workload being deleted is observed every round:
    whether its pods were stranded on a lost node depends on the round's clock."""

    template: tuple = ()  # what every observation was made with: (kind, the trial resource, primary labels, container)
    kept: dict[str, tuple[dict, tuple[dict, ...], Observed]] = field(default_factory=dict)

    def observe(
        self, kind: Kind, spec: ExperimentSpec, workloads: dict[str, dict], pods: Iterable[dict], now: datetime
    ) -> dict[str, Observed]:
        tt = spec.trial_template
        primary = primary_labels(spec)
        template = (kind, tt.resource, primary, tt.primary_container_name)
        if template != self.template:  # the experiment's template was edited: observe every trial again
            self.template, self.kept = template, {}
        pods_by_trial: dict[str, list[dict]] = {}
        for pod in pods:
            trial = (pod["metadata"].get("labels") or {}).get(L_TRIAL)
            if trial:
                pods_by_trial.setdefault(trial, []).append(pod)
        kept, observed = {}, {}
        for name, body in workloads.items():
            its_pods = tuple(pods_by_trial.get(name, ()))
            entry = self.kept.get(name)
            if (
                entry is None
                or entry[0] is not body
                or not _same(entry[1], its_pods)
                or body["metadata"].get("deletionTimestamp")
            ):
                seen = observe_workload(
                    kind.kind, body, list(its_pods), tt.resource, primary, tt.primary_container_name, now
                )
                entry = (body, its_pods, seen)
            kept[name] = entry
            observed[name] = entry[2]
        self.kept = kept  # a trial whose workload is gone is dropped with it
        return observed


async def first_set(*events: asyncio.Event, timeout: float | None = None) -> None:
    """Returns once any of the events is set, or after `timeout` seconds (None: no limit)."""
    if any(e.is_set() for e in events):
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def _same(a: tuple[dict, ...], b: tuple[dict, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))

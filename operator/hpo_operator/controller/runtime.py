"""What the operator holds in memory: the watched Trials and pods, and one loop per Experiment.

Informers (informer.py) keep each namespace's Trials and trial pods and wake the experiment whose
object changed; its loop reads them (no listing, no deep copies: the planner changes nothing it is
given), asks
planner.plan() what to do, and has the executor carry it out. All state lives in the cluster: what
is kept between rounds is only the Optuna study (rebuilt from the Trials after a restart), the log
cache, and our writes that the watch has not shown yet.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from pydantic import ValidationError

from hpo_operator import planner
from hpo_operator.controller import telemetry
from hpo_operator.core import times
from hpo_operator.core.conditions import set_condition
from .executor import Executor, PendingWrites, PostEvent
from hpo_operator.kube.informer import Informer, WatchHealth
from hpo_operator.kube.client import CLAIMS, PODS, TRIALS, TRANSPORT_ERRORS, KubeClient, ApiException, Resource, failure_reason
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.api.status import ExperimentStatus
from hpo_operator.api.vocabulary import FINISHED_PHASES, L_EXPERIMENT, L_TRIAL
from hpo_operator.search.suggest import SearchSpaceError, Suggester
from hpo_operator.workloads.kinds import Kind, kind_of, trial_pod_view

RECONCILE_INTERVAL = float(os.environ.get("HPO_RECONCILE_INTERVAL", "5"))
IDLE_INTERVAL = 300.0
# After failed rounds the loop waits RECONCILE_INTERVAL * 2^(failures - 1), up to this; a watch
# event still wakes it at once.
MAX_ERROR_DELAY = 60.0
# Experiments with more Trials than this are planned in a thread.
THREAD_PLAN_TRIALS = 500
# Rounds of one experiment start at least this far apart (or twice the last plan's time).
MIN_ROUND_GAP = float(os.environ.get("HPO_MIN_ROUND_GAP", "0.05"))
# A watch down this long is logged as a Warning (and its return as well).
UNREACHABLE_WARN_SECONDS = float(os.environ.get("HPO_UNREACHABLE_WARN_SECONDS", "30"))
# A watch down this long makes the liveness probe fail, so that the kubelet restarts the operator:
# whatever keeps it down (a client state gone bad, a task that ended) goes with the process.
WATCH_DOWN_LIVENESS_SECONDS = float(os.environ.get("HPO_WATCH_DOWN_LIVENESS_SECONDS", "300"))
# Metrics count from the end of a log ("the last value counts"): read its tail.
LOG_TAIL_LINES = 5000
LOG_LIMIT_BYTES = 4 << 20

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, experiment name)


def compact(node: Any) -> Any:
    """A JSON tree with its keys and short strings interned. Parsed JSON has its own copy of every
    key ("metadata", "hpo.dev/experiment", ...) in every object: at 10,000 Trials and their pods,
    that is a third of what they take."""
    if isinstance(node, dict):
        return {sys.intern(k): compact(v) for k, v in node.items()}
    if isinstance(node, list):
        return [compact(v) for v in node]
    if isinstance(node, str) and len(node) <= SHORT_STRING:
        return sys.intern(node)
    return node


SHORT_STRING = 24


def slim_pod(body: dict) -> dict:
    """The part of a pod the planner reads (podstate.observe, the planner's slot count). A pod's
    managedFields and spec are most of its size, and an experiment may keep thousands of them."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    slim_status = {k: status[k] for k in ("phase", "reason", "message", "startTime") if k in status}
    if status.get("conditions"):
        slim_status["conditions"] = [{k: c[k] for k in ("type", "status", "reason", "message") if k in c}
                                     for c in status["conditions"]]
    if status.get("containerStatuses"):
        slim_status["containerStatuses"] = [{"name": c.get("name"), "state": c.get("state") or {}}
                                            for c in status["containerStatuses"]]
    return compact({
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "labels", "creationTimestamp",
                                          "deletionTimestamp") if k in meta},
        "spec": {"nodeName": spec.get("nodeName"),
                 "containers": [{"name": c.get("name")} for c in spec.get("containers") or []]},
        "status": slim_status,
    })


def slim_workload(body: dict) -> dict:
    """The part of a Job (or another trial resource) the operator reads: its conditions."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    return compact({
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "labels", "creationTimestamp",
                                          "deletionTimestamp") if k in meta},
        "status": {"conditions": [{k: c[k] for k in ("type", "status", "reason", "message") if k in c}
                                  for c in status.get("conditions") or []]},
    })


def slim_trial(body: dict) -> dict:
    meta = body.get("metadata") or {}
    return compact({**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}})


def error_delay(failures: int) -> float:
    return min(RECONCILE_INTERVAL * 2 ** max(failures - 1, 0), MAX_ERROR_DELAY)


@dataclass
class WorkloadViews:
    """The pod-shaped views of an experiment's Job or resource trials, each kept while its
    workload and pods are the same objects as when it was made: the informers store a new dict for
    every change they see, so an unchanged trial costs a lookup instead of a new view each round
    (as a pod trial's pod is the informer's own dict)."""

    template: tuple = ()  # what every view was made with: (kind, the trial resource, primary labels)
    kept: dict[str, tuple[dict, tuple[dict, ...], dict | None]] = field(default_factory=dict)

    def views(self, kind: Kind, spec: ExperimentSpec, workloads: dict[str, dict],
              pods: Iterable[dict]) -> dict[str, dict]:
        tt = spec.trial_template
        primary = tt.primary_pod.labels if tt.primary_pod else None
        template = (kind, tt.resource, primary)
        if template != self.template:  # the experiment's template was edited: make every view again
            self.template, self.kept = template, {}
        pods_by_trial: dict[str, list[dict]] = {}
        for pod in pods:
            trial = (pod["metadata"].get("labels") or {}).get(L_TRIAL)
            if trial:
                pods_by_trial.setdefault(trial, []).append(pod)
        kept, views = {}, {}
        for name, body in workloads.items():
            its_pods = tuple(pods_by_trial.get(name, ()))
            entry = self.kept.get(name)
            if entry is None or entry[0] is not body or not _same(entry[1], its_pods):
                entry = (body, its_pods, trial_pod_view(kind, name, body, list(its_pods), tt.resource, primary))
            kept[name] = entry
            if entry[2] is not None:
                views[name] = entry[2]
        self.kept = kept  # a trial whose workload is gone is dropped with it
        return views


def _same(a: tuple[dict, ...], b: tuple[dict, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


@dataclass
class ExperimentLoop:
    """One experiment's reconcile loop and what it keeps between rounds."""
    runtime: "Runtime"
    key: Key
    uid: str
    body: dict
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    suggester: Suggester | None = None
    logs: dict[tuple[str, str], tuple[float, str]] = field(default_factory=dict)
    written: PendingWrites = field(default_factory=PendingWrites)
    views: dict[str, planner.TrialView] = field(default_factory=dict)
    workload_views: WorkloadViews = field(default_factory=WorkloadViews)
    failures: int = 0
    plan_seconds: float = 0.0
    task: asyncio.Task | None = None

    async def ready(self) -> None:
        """Waits until every informer a round reads has listed since its last failure: a round never
        plans on a view that went stale while a watch was down (it could not write meanwhile either)."""
        ns = self.runtime.namespace(self.key[0])
        await ns.synced()
        tt = (self.body.get("spec") or {}).get("trialTemplate") or {}
        if "job" in tt or "resource" in tt:  # (a pod trial's experiment skips validating its spec here)
            kind = self.kind()
            if kind is not None and not kind.is_pod:
                await self.runtime.workloads(self.key[0], kind)
        if tt.get("checkpoint"):
            await ns.workload(CLAIMS).synced.wait()

    async def run(self) -> None:
        try:
            while True:
                self.wake.clear()
                started = time.monotonic()
                try:
                    await self.ready()
                    with telemetry.RECONCILE_SECONDS.time():
                        delay = await self.reconcile()
                    telemetry.RECONCILE_TOTAL.labels("success").inc()
                    self.failures = 0
                except ApiException as e:
                    # Deletion of the experiment cancels this task; anything else is retried.
                    telemetry.RECONCILE_TOTAL.labels("error").inc()
                    self.failures += 1
                    delay = error_delay(self.failures)
                    log.warning("%s/%s: reconcile failed (%s %s), retrying in %.0fs", *self.key, e.status,
                                e.reason, delay)
                except TRANSPORT_ERRORS as e:
                    # The API server restarting, or a connection cut: said once per round, without a
                    # traceback; the informers' re-listing wakes the loop when it is back.
                    telemetry.RECONCILE_TOTAL.labels("error").inc()
                    self.failures += 1
                    delay = error_delay(self.failures)
                    log.warning("%s/%s: reconcile failed (%s: %s), retrying in %.0fs", *self.key, failure_reason(e),
                                type(e).__name__, delay)
                except Exception:
                    telemetry.RECONCILE_TOTAL.labels("error").inc()
                    self.failures += 1
                    delay = error_delay(self.failures)
                    log.exception("%s/%s: reconcile failed, retrying in %.0fs", *self.key, delay)
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout=delay)
                except asyncio.TimeoutError:
                    pass
                # Under a stream of events, let a few gather rather than plan for each: a round
                # costs in proportion to the experiment's trials, however few of them changed.
                # The planner then takes at most a third of the time.
                rest = max(MIN_ROUND_GAP, 2 * self.plan_seconds) - (time.monotonic() - started)
                if rest > 0:
                    await asyncio.sleep(rest)
        finally:
            telemetry.experiment_phase(self.uid, None)

    async def reconcile(self) -> float:
        namespace, name = self.key
        rt = self.runtime
        now = times.now()
        raw = {**self.body}
        status = raw["status"] = self.written.status(raw.get("status") or {})
        generation = raw["metadata"].get("generation") or 0
        try:
            spec = ExperimentSpec.model_validate(raw.get("spec") or {})
        except ValidationError as e:
            await self.report_invalid(raw, status, str(e), now)
            return RECONCILE_INTERVAL
        trials = self.trial_views(self.written.trial_bodies(rt.trials_of(self.key)))
        kind = kind_of(spec)
        resource = None if kind.is_pod else await rt.workloads(namespace, kind)
        # A dict of its own (the planner reads it in a thread): per trial, its pod, or the pod-shaped
        # view of its Job or resource.
        pods = (rt.pods_of(self.key) if resource is None
                else rt.trial_views_of(self.key, spec, kind, resource, self.workload_views))
        if self.suggester is None:
            origin = spec.warm_start_from
            warm = list(rt.trials_of((namespace, origin)).values()) if origin else []
            try:
                # In a thread, like the plan: rebuilding a large study after a restart takes seconds.
                self.suggester = await asyncio.to_thread(planner.restore_suggester, spec, trials, status, warm)
            except SearchSpaceError as e:
                await self.report_invalid(raw, status, str(e), now)
                return RECONCILE_INTERVAL
        suggester = self.suggester
        logs = await self.read_logs(spec, trials, pods)
        view = planner.ExperimentView(name, namespace, self.uid, generation, spec, status)
        volumes = None
        if spec.trial_template.checkpoint is not None:
            claims = rt.namespace(namespace).workload(CLAIMS)
            if claims.synced.is_set():
                volumes = {n for n, c in (claims.objects.get(name) or {}).items()
                           if not c["metadata"].get("deletionTimestamp")}
        planning = time.monotonic()
        args = (view, trials, pods, logs, now, suggester.suggest, suggester.should_stop, suggester.tell, volumes)
        if len(trials) > THREAD_PLAN_TRIALS:
            # Off the event loop, which serves the informers and every other experiment
            # meanwhile; only this experiment's loop uses its suggester.
            plan = await asyncio.to_thread(planner.plan, *args)
        else:
            # A small plan takes a millisecond or two: less than handing it to one of the few
            # threads the event loop has, for which a hundred experiments would queue.
            plan = planner.plan(*args)
        self.plan_seconds = time.monotonic() - planning
        await Executor(rt.api, raw, spec, trials, self.written, rt.post_event, resource or PODS).run(plan)
        st = plan.experiment_status
        telemetry.experiment_phase(self.uid, st.get("phase"))
        if st.get("phase") in FINISHED_PHASES and not (st.get("trialsRunning") or st.get("trialsPending")):
            return IDLE_INTERVAL  # nothing to watch for but events, which wake the loop anyway
        return plan.requeue_after or RECONCILE_INTERVAL

    def kind(self) -> Kind | None:
        try:
            return kind_of(ExperimentSpec.model_validate(self.body.get("spec") or {}))
        except (ValidationError, ValueError):
            return None  # reported by the round

    def trial_views(self, bodies: list[dict]) -> list[planner.TrialView]:
        """A view per Trial, the last round's where its body has not changed since (a view works
        out what the planner reads of a Trial once)."""
        views = {}
        for body in bodies:
            name = body["metadata"]["name"]
            view = self.views.get(name)
            if view is None or view.body is not body:
                view = planner.TrialView(name, body["metadata"].get("uid", ""), body)
            views[name] = view
        self.views = views
        return list(views.values())

    async def report_invalid(self, raw: dict, status: dict, message: str, now: datetime) -> None:
        old = ExperimentStatus.model_validate(status)
        new = old.model_copy(update=dict(phase="Failed", conditions=set_condition(
            old.conditions, "Failed", True, "InvalidSpec", message, now, raw["metadata"].get("generation"))))
        if new != old:
            self.runtime.post_event(raw, "Warning", "InvalidSpec", message)
            await self.runtime.api.patch_status("experiments", self.key[0], self.key[1],
                                                {"phase": "Failed", "conditions": new.dump()["conditions"]})

    async def read_logs(self, spec: ExperimentSpec, trials: list[planner.TrialView],
                        pods: dict[str, dict]) -> dict[str, str]:
        """Logs the planner wants: a finished pod's once, a running pod's every intervalSeconds."""
        result: dict[str, str] = {}
        now = time.monotonic()
        used = set()
        reads = []
        for t in trials:
            pod = pods.get(t.name)
            need = planner.needs_log(spec, t, pod)
            if need is None:
                continue
            key = (pod["metadata"]["uid"], need)
            used.add(key)
            cached = self.logs.get(key)
            stale = need == "running" and (cached is None or now - cached[0] >= spec.metrics_collector.interval_seconds)
            if cached is None or stale:
                containers = pod["spec"].get("containers") or [{}]
                container = spec.trial_template.primary_container_name or containers[0].get("name")
                reads.append(self.read_log(key, t.name, pod["metadata"]["name"], pod["metadata"]["namespace"],
                                           container, need, now))
            else:
                result[t.name] = cached[1]
        for name, text in await asyncio.gather(*reads):
            result[name] = text
        for key in [k for k in self.logs if k not in used]:
            del self.logs[key]  # finished with: the planner recorded what it needed
        return result

    async def read_log(self, key: tuple[str, str], trial: str, pod: str, namespace: str, container: str | None,
                       need: str, now: float) -> tuple[str, str]:
        cached = self.logs.get(key)
        try:
            text = await self.runtime.api.pod_log(namespace, pod, container=container, tail_lines=LOG_TAIL_LINES,
                                                  limit_bytes=LOG_LIMIT_BYTES, timestamps=need == "running")
        except ApiException:
            text = cached[1] if cached else ""  # no log to read yet, or none at all
        self.logs[key] = (now, text)
        return trial, text


class Namespace:
    """The informers of one namespace: its Trials (all, so that a user's Trial is seen) and its
    trial pods (selected by label on the API server: no other pod reaches the operator)."""

    def __init__(self, api: KubeClient, namespace: str, wake: Callable[[Key], None]):
        self.api, self.name, self.wake = api, namespace, wake
        self.trials = Informer(api, namespace, TRIALS, lambda t: (t.get("spec") or {}).get("experimentName"),
                               slim_trial, self.changed)
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


def by_experiment(obj: dict) -> str | None:
    return (obj["metadata"].get("labels") or {}).get(L_EXPERIMENT)


class Runtime:
    """Every experiment's loop, and the informers they read the Trials and pods from: one pair per
    namespace that has an experiment."""

    def __init__(self, api: KubeClient, post_event: PostEvent):
        self.api = api
        self.post_event = post_event
        self.namespaces: dict[str, Namespace] = {}
        self.loops: dict[Key, ExperimentLoop] = {}
        self.monitor = asyncio.get_running_loop().create_task(self.watch_health(), name="watch health")
        telemetry.watch_source(self.watches)

    def watches(self) -> list[tuple[str, WatchHealth]]:
        """Every informer's health, with its namespace."""
        return [(ns.name, i.health) for ns in self.namespaces.values() for i in ns.informers()]

    def longest_down(self, now: float) -> tuple[WatchHealth | None, int]:
        """The watch down the longest (None: all are up), and how many are down."""
        down = [h for _, h in self.watches() if h.down_since is not None]
        return max(down, key=lambda h: h.down_for(now), default=None), len(down)

    def unhealthy(self, now: float | None = None) -> str | None:
        """Why the liveness probe should fail, if it should: an informer down for too long."""
        now = now or time.monotonic()
        worst, _ = self.longest_down(now)
        if worst is not None and worst.down_for(now) >= WATCH_DOWN_LIVENESS_SECONDS:
            return f"{worst.where} has been down for {worst.down_for(now):.0f} s: {worst.error}"
        return None

    async def watch_health(self) -> None:
        """Says when the watches have been down for UNREACHABLE_WARN_SECONDS (the API server restarting,
        unreachable, or refusing us), and when they are all back: a user who sees experiments stand
        still finds why in the log, not only in kopf's retries."""
        outage: float | None = None  # monotonic start of the outage that was reported
        while True:
            await asyncio.sleep(1)
            now = time.monotonic()
            longest, down = self.longest_down(now)
            if longest is not None and outage is None:
                if longest.down_for(now) >= UNREACHABLE_WARN_SECONDS:
                    outage = longest.down_since
                    log.warning("cannot watch the API server for %.0f s (%d of %d watches down; %s: %s); "
                                "experiments wait, and go on once it answers", longest.down_for(now), down,
                                len(self.watches()), longest.where, longest.error)
            elif longest is None and outage is not None:
                log.warning("the API server answers again after %.0f s: every watch listed again, experiments go on",
                            now - outage)
                outage = None

    def namespace(self, name: str) -> Namespace:
        ns = self.namespaces.get(name)
        if ns is None:
            ns = self.namespaces[name] = Namespace(self.api, name, self.wake)
        return ns

    def trials_of(self, key: Key) -> dict[str, dict]:
        return dict(self.namespace(key[0]).trials.objects.get(key[1]) or {})

    def pods_of(self, key: Key) -> dict[str, dict]:
        return dict(self.namespace(key[0]).pods.objects.get(key[1]) or {})

    async def workloads(self, namespace: str, kind: Kind) -> Resource:
        """The resource of a trial kind, watched in the namespace from now on (and listed once)."""
        plural = kind.plural or await self.api.plural_of(kind.api_version, kind.kind)
        resource = (kind.group, kind.version, plural)
        await self.namespace(namespace).workload(resource).synced.wait()
        return resource

    def trial_views_of(self, key: Key, spec: ExperimentSpec, kind: Kind, resource: Resource,
                       cache: WorkloadViews) -> dict[str, dict]:
        """Per trial, the pod-shaped view of its Job or resource and their pods (workload.py)."""
        ns = self.namespace(key[0])
        return cache.views(kind, spec, ns.workload(resource).objects.get(key[1]) or {},
                           (ns.pods.objects.get(key[1]) or {}).values())

    def wake(self, key: Key) -> None:
        loop = self.loops.get(key)
        if loop is not None:
            loop.wake.set()

    def on_experiment(self, deleted: bool, namespace: str, name: str, uid: str, body: dict) -> None:
        key = (namespace, name)
        loop = self.loops.get(key)
        if deleted or (body.get("metadata") or {}).get("deletionTimestamp"):
            # Nothing to do on deletion: ownerReferences let the garbage collector remove the
            # trials and pods.
            if loop is not None:
                self.stop(key)
            return
        if loop is not None and loop.uid != uid:
            self.stop(key)  # an experiment deleted and created again under the same name
            loop = None
        if loop is None or loop.task is None or loop.task.done():
            self.namespace(namespace)
            loop = self.loops[key] = ExperimentLoop(self, key, uid, slim_trial(body))
            loop.task = asyncio.get_running_loop().create_task(loop.run(), name=f"experiment {namespace}/{name}")
        loop.body = slim_trial(body)
        loop.wake.set()

    def stop(self, key: Key) -> None:
        loop = self.loops.pop(key, None)
        if loop is not None and loop.task is not None:
            loop.task.cancel()
        if not any(k[0] == key[0] for k in self.loops):
            # No experiment left in the namespace: nothing there to watch for.
            for task in self.namespaces.pop(key[0]).tasks if key[0] in self.namespaces else ():
                task.cancel()

    async def stop_all(self) -> None:
        tasks = [loop.task for loop in self.loops.values() if loop.task is not None]
        tasks += [t for ns in self.namespaces.values() for t in ns.tasks]
        self.loops.clear()
        self.namespaces.clear()
        tasks.append(self.monitor)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.api.close()

    def size(self) -> int:
        return len(self.loops)

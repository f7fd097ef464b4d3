"""kopf handlers: thin wiring between the cluster and the planner.

Each Experiment gets a loop that reconciles it whenever one of its Trials or pods changes (or
every HPO_RECONCILE_INTERVAL seconds): it reads Trials and pods from kopf indexes (no listing),
asks planner.plan() what to do and carries the plan out. All state lives in the cluster; the only
memory kept between rounds is the Optuna study, rebuilt from the Trials after a restart.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import time
from datetime import datetime, timezone
from typing import Any

import kopf
from kubernetes import client, config
from pydantic import ValidationError

from . import planner, telemetry
from .conditions import now_iso, set_condition
from .models import GROUP, TERMINAL_PHASES, VERSION, ExperimentSpec
from .suggest import SearchSpaceError, Suggester
from .template import build_pod

RECONCILE_INTERVAL = float(os.environ.get("HPO_RECONCILE_INTERVAL", "5"))
IDLE_INTERVAL = 300.0
# Metrics count from the end of a log ("the last value counts"): read its tail.
LOG_TAIL_LINES = 5000
LOG_LIMIT_BYTES = 4 << 20


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    # The chart's namespace mode grants nothing cluster-scoped: kopf must not list namespaces or
    # CRDs (it would retry each 403 for about a minute before falling back to the named namespaces).
    if os.environ.get("HPO_CLUSTER_SCANNING", "").lower() == "false":
        settings.scanning.disabled = True
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    memo.api = client.ApiClient()
    memo.wakeups = {}
    memo.suggesters = {}
    memo.logs = {}
    memo.written = {}
    memo.loops = {}
    memo.bodies = {}
    port = telemetry.start_server()
    if port:
        logging.getLogger(__name__).info("serving Prometheus metrics on port %d", port)


@kopf.on.probe(id="experiments")
def probe_experiments(memo: kopf.Memo, **_: Any) -> int:
    return len(memo.get("wakeups", {}))


# --- indexes: what each experiment's loop reads instead of listing ----------------------

# Indexing also wakes the experiment's loop: kopf updates an index before anything else
# sees the event, so the loop that wakes reads the new state.

@kopf.index(GROUP, VERSION, "trials")
async def trials_by_experiment(namespace: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict:
    experiment = (body.get("spec") or {}).get("experimentName")
    _wake(memo, namespace, experiment)
    return {(namespace, experiment): copy.deepcopy(dict(body))}


@kopf.index("", "v1", "pods", labels={planner.L_EXPERIMENT: kopf.PRESENT})
async def pods_by_experiment(namespace: str, labels: kopf.Labels, body: kopf.Body, memo: kopf.Memo,
                       **_: Any) -> dict:
    _wake(memo, namespace, labels[planner.L_EXPERIMENT])
    return {(namespace, labels[planner.L_EXPERIMENT]): copy.deepcopy(dict(body))}


def _wake(memo: kopf.Memo, namespace: str, experiment: str | None) -> None:
    event = memo.get("wakeups", {}).get((namespace, experiment))
    if event is not None:
        event.set()


class Written:
    """What this operator wrote for one experiment and the watch has not shown yet.

    Indexes and the experiment's body lag behind our own writes by a watch event. Without this, the
    round after a write would decide again on the old state: harmless for the objects (their names
    are deterministic, so a second create collides) but it would repeat Events.
    """

    def __init__(self) -> None:
        self.experiment_status: dict | None = None
        self.trial_status: dict[str, dict] = {}
        self.trials: dict[str, dict] = {}

    def trial_bodies(self, indexed: list[dict]) -> list[dict]:
        seen = {t["metadata"]["name"]: t for t in indexed}
        for name in [n for n in self.trials if n in seen]:
            del self.trials[name]
        result = []
        for name, body in {**self.trials, **seen}.items():
            body = copy.deepcopy(body)
            mine = self.trial_status.get(name)
            if mine is not None:
                if (body.get("status") or {}) == mine:
                    del self.trial_status[name]
                else:
                    body["status"] = copy.deepcopy(mine)
            result.append(body)
        return result

    def status(self, observed: dict) -> dict:
        if self.experiment_status is None or observed == self.experiment_status:
            self.experiment_status = None
            return observed
        return copy.deepcopy(self.experiment_status)


# --- one loop per experiment ---------------------------------------------------------------
# A task per experiment rather than a kopf daemon: kopf guards daemons with a finalizer, which
# would leave experiments (and their namespaces) stuck in deletion whenever the operator is not
# running. Nothing here needs to act on deletion: ownerReferences let the garbage collector
# remove the trials and pods.

@kopf.on.event(GROUP, VERSION, "experiments")
async def track_experiment(event: dict, name: str, namespace: str, uid: str, body: kopf.Body, memo: kopf.Memo,
                     logger: logging.Logger, trials_by_experiment: kopf.Index,
                     pods_by_experiment: kopf.Index, **_: Any) -> None:
    key = (namespace, name)
    loop = memo.loops.get(key)
    if event.get("type") == "DELETED" or body.get("metadata", {}).get("deletionTimestamp"):
        if loop is not None:
            loop.cancel()
        return
    memo.bodies[key] = copy.deepcopy(dict(body))
    if loop is None or loop.done() or loop.get_name() != uid:
        if loop is not None:
            loop.cancel()  # an experiment deleted and created again under the same name
        memo.loops[key] = asyncio.get_running_loop().create_task(
            run_experiment(name, namespace, uid, memo, logger, trials_by_experiment, pods_by_experiment),
            name=uid)
    _wake(memo, namespace, name)


@kopf.on.cleanup()
async def stop_loops(memo: kopf.Memo, **_: Any) -> None:
    loops = list(memo.get("loops", {}).values())
    for loop in loops:
        loop.cancel()
    await asyncio.gather(*loops, return_exceptions=True)


async def run_experiment(name: str, namespace: str, uid: str, memo: kopf.Memo, logger: logging.Logger,
                         trials_by_experiment: kopf.Index, pods_by_experiment: kopf.Index) -> None:
    key = (namespace, name)
    wake = memo.wakeups.setdefault(key, asyncio.Event())
    try:
        while True:
            wake.clear()
            body = memo.bodies[key]
            try:
                with telemetry.RECONCILE_SECONDS.time():
                    origin = (body.get("spec") or {}).get("warmStartFrom")
                    delay = await reconcile(name, namespace, uid, body, memo, logger,
                                            list(trials_by_experiment.get(key, [])),
                                            list(pods_by_experiment.get(key, [])),
                                            list(trials_by_experiment.get((namespace, origin), [])) if origin else [])
                telemetry.RECONCILE_TOTAL.labels("success").inc()
            except client.ApiException as e:
                # Deletion of the experiment cancels this task; anything else is retried.
                telemetry.RECONCILE_TOTAL.labels("error").inc()
                logger.warning("reconcile failed, retrying: %s %s", e.status, e.reason)
                delay = RECONCILE_INTERVAL
            except Exception:
                telemetry.RECONCILE_TOTAL.labels("error").inc()
                logger.exception("reconcile failed, retrying")
                delay = RECONCILE_INTERVAL
            try:
                await asyncio.wait_for(wake.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass
    finally:
        if memo.loops.get(key) is asyncio.current_task():
            del memo.loops[key]
            memo.bodies.pop(key, None)
            memo.wakeups.pop(key, None)
        memo.suggesters.pop(uid, None)
        memo.written.pop(uid, None)
        memo.logs.pop(uid, None)
        telemetry.experiment_phase(uid, None)


def _suggester(memo: kopf.Memo, uid: str, spec: ExperimentSpec, trials: list[planner.TrialView],
               status: dict, warm: list[dict]) -> Suggester:
    """The experiment's in-memory study; after a restart, replayed from its Trials."""
    suggester = memo.suggesters.get(uid)
    if suggester is None:
        suggester = planner.restore_suggester(spec, trials, status, warm)
        memo.suggesters[uid] = suggester
    return suggester


async def reconcile(name: str, namespace: str, uid: str, body: dict, memo: kopf.Memo,
                    logger: logging.Logger, trial_bodies: list[dict], pod_bodies: list[dict],
                    warm: list[dict]) -> float:
    now = datetime.now(timezone.utc)
    raw = copy.deepcopy(dict(body))
    written = memo.written.setdefault(uid, Written())
    status = raw["status"] = written.status(raw.get("status") or {})
    generation = raw["metadata"].get("generation") or 0
    try:
        spec = ExperimentSpec.model_validate(raw.get("spec") or {})
    except ValidationError as e:
        await _report_invalid(memo, raw, status, str(e), now)
        return RECONCILE_INTERVAL
    trials = [planner.TrialView(t["metadata"]["name"], t["metadata"]["uid"], copy.deepcopy(t))
              for t in written.trial_bodies(trial_bodies)]
    pods = {p["metadata"]["name"]: p for p in pod_bodies}
    try:
        # In a thread, like the plan: rebuilding a large study after a restart takes seconds.
        suggester = await asyncio.to_thread(_suggester, memo, uid, spec, trials, status, warm)
    except SearchSpaceError as e:
        await _report_invalid(memo, raw, status, str(e), now)
        return RECONCILE_INTERVAL
    logs = await _logs(memo, memo.logs.setdefault(uid, {}), spec, trials, pods)
    view = planner.ExperimentView(name, namespace, uid, generation, spec, status)
    # Off the event loop, which serves every other experiment meanwhile; only this experiment's
    # loop uses its suggester.
    plan = await asyncio.to_thread(planner.plan, view, trials, pods, logs, now, suggester.suggest,
                                   suggester.should_stop, suggester.tell)
    await Executor(memo, raw, spec, trials, written).run(plan)
    telemetry.experiment_phase(uid, plan.experiment_status.get("phase"))
    st = plan.experiment_status
    if st.get("phase") in planner.FINISHED_PHASES and not (st.get("trialsRunning") or st.get("trialsPending")):
        return IDLE_INTERVAL  # nothing to watch for but events, which wake the loop anyway
    return plan.requeue_after or RECONCILE_INTERVAL


async def _report_invalid(memo: kopf.Memo, raw: dict, status: dict, message: str, now: datetime) -> None:
    conditions = set_condition(status.get("conditions"), "Failed", True, "InvalidSpec", message, now,
                               raw["metadata"].get("generation"))
    if status.get("phase") != "Failed" or status.get("conditions") != conditions:
        kopf.event(raw, type="Warning", reason="InvalidSpec", message=message[:1024])
        await _patch_status(memo, "experiments", raw, {"phase": "Failed", "conditions": conditions})


async def _logs(memo: kopf.Memo, cache: dict, spec: ExperimentSpec, trials: list[planner.TrialView],
                pods: dict[str, dict]) -> dict[str, str]:
    """Logs the planner wants: a finished pod's once, a running pod's every intervalSeconds."""
    core = client.CoreV1Api(memo.api)
    result = {}
    now = time.monotonic()
    used = set()
    for t in trials:
        pod = pods.get(t.name)
        need = planner.needs_log(spec, t, pod)
        if need is None:
            continue
        key = (pod["metadata"]["uid"], need)
        used.add(key)
        cached = cache.get(key)
        stale = need == "running" and (cached is None or now - cached[0] >= spec.metrics_collector.interval_seconds)
        if cached is None or stale:
            container = spec.trial_template.primary_container_name or pod["spec"]["containers"][0]["name"]
            try:
                text = await asyncio.to_thread(
                    core.read_namespaced_pod_log, t.name, pod["metadata"]["namespace"],
                    container=container, tail_lines=LOG_TAIL_LINES, limit_bytes=LOG_LIMIT_BYTES,
                    timestamps=need == "running")
            except client.ApiException:
                text = cached[1] if cached else ""  # no log to read yet, or none at all
            cached = cache[key] = (now, text)
        result[t.name] = cached[1]
    for key in [k for k in cache if k not in used]:
        del cache[key]  # finished with: the planner recorded what it needed
    return result


async def _patch_status(memo: kopf.Memo, plural: str, obj: dict, status: dict) -> None:
    api = client.CustomObjectsApi(memo.api)
    meta = obj["metadata"]
    await asyncio.to_thread(api.patch_namespaced_custom_object_status, GROUP, VERSION, meta["namespace"],
                            plural, meta["name"], {"status": status})


def _status_patch(old: dict, new: dict) -> dict:
    """A merge patch from old to new (keys that disappeared are set to null)."""
    patch = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch


def _pruned(status: dict) -> dict:
    """A status as the API server stores it: merge patches drop null fields."""
    return {k: v for k, v in status.items() if v is not None}


class Executor:
    """Carries a plan out, tolerating objects that already exist or are already gone.

    One failed action does not stop the others: a pod the API server refuses (a quota, a policy,
    an invalid manifest) must not keep the experiment's status from being written or other pods
    from being stopped.
    """

    def __init__(self, memo: kopf.Memo, experiment: dict, spec: ExperimentSpec,
                 trials: list[planner.TrialView], written: Written):
        self.memo = memo
        self.written = written
        self.experiment = experiment
        self.spec = spec
        self.trials = {t.name: t.body for t in trials}
        self.custom = client.CustomObjectsApi(memo.api)
        self.core = client.CoreV1Api(memo.api)
        self.namespace = experiment["metadata"]["namespace"]
        self.uid = experiment["metadata"]["uid"]
        self.failures: list[client.ApiException] = []

    async def call(self, fn: Any, *args: Any, ok: tuple[int, ...] = (), **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except client.ApiException as e:
            if e.status in ok:
                return None
            raise

    async def attempt(self, what: str, fn: Any, *args: Any, ok: tuple[int, ...] = (), **kwargs: Any) -> Any:
        """Like call(), but a failure is recorded and reported instead of ending the round."""
        try:
            return await self.call(fn, *args, ok=ok, **kwargs)
        except client.ApiException as e:
            self.failures.append(e)
            logging.getLogger(__name__).warning("%s failed: %s %s", what, e.status, e.reason)
            return e

    async def run(self, plan: planner.Plan) -> None:
        for body in plan.create_trials:
            await self.create_trial(body)
        for name, status in plan.trial_status.items():
            old = (self.trials.get(name) or {}).get("status") or {}
            patch = _status_patch(old, status)
            if status.get("phase") in TERMINAL_PHASES and old.get("phase") not in TERMINAL_PHASES:
                telemetry.TRIALS_FINISHED.labels(status["phase"], status.get("failureClass") or "").inc()
            if patch:
                result = await self.attempt(f"status of trial {name}", self.custom.patch_namespaced_custom_object_status,
                                            GROUP, VERSION, self.namespace, "trials", name, {"status": patch}, ok=(404,))
                if not isinstance(result, client.ApiException):
                    self.written.trial_status[name] = _pruned(status)
        # After the statuses, so that a restart request's answer is there when its annotation goes.
        for name, meta_patch in plan.trial_metadata.items():
            await self.attempt(f"metadata of trial {name}", self.custom.patch_namespaced_custom_object, GROUP,
                               VERSION, self.namespace, "trials", name, {"metadata": meta_patch}, ok=(404,))
        for name in plan.start_pods:
            await self.start_pod(name)
        for name in plan.delete_pods:
            await self.attempt(f"deleting pod {name}", self.core.delete_namespaced_pod, name, self.namespace,
                               propagation_policy="Background", ok=(404,))
        old = self.experiment.get("status") or {}
        patch = _status_patch(old, plan.experiment_status)
        if patch:
            await _patch_status(self.memo, "experiments", self.experiment, patch)
            self.written.experiment_status = _pruned(plan.experiment_status)
        for event in plan.events:
            target = self.experiment if event.target is None else self.trials.get(event.target)
            if target is not None and target.get("metadata", {}).get("uid"):
                kopf.event(target, type=event.type, reason=event.reason, message=event.message[:1024])
        if self.failures:
            raise self.failures[0]  # counted as a failed reconcile, retried after the interval

    async def start_pod(self, name: str) -> None:
        trial = self.trials.get(name)
        if trial is None or not trial["metadata"].get("uid"):
            return  # not ours, or not visible yet; the next round starts it
        pod = build_pod(self.spec, self.experiment["metadata"]["name"], trial)
        result = await self.attempt(f"creating pod {name}", self.core.create_namespaced_pod,
                                    self.namespace, pod, ok=(409,))
        if not isinstance(result, client.ApiException):
            return
        reason = _api_reason(result)
        if result.status in (400, 422):
            # The manifest itself is wrong (e.g. a label made invalid by a placeholder): running
            # it again would fail the same way. Reported on the trial, so not a failed round.
            self.failures.pop()
            now = datetime.now(timezone.utc)
            message = f"the API server refused the trial's pod: {reason}"
            current = self.written.trial_status.get(name) or trial.get("status") or {}
            status = {"phase": "Failed", "reason": "InvalidPod", "failureClass": "Startup", "message": message,
                      "completionTime": now_iso(now),
                      "conditions": set_condition(current.get("conditions"), "Succeeded", False, "InvalidPod",
                                                  message, now)}
            result = await self.attempt(f"status of trial {name}", self.custom.patch_namespaced_custom_object_status,
                                        GROUP, VERSION, self.namespace, "trials", name, {"status": status}, ok=(404,))
            if not isinstance(result, client.ApiException):
                self.written.trial_status[name] = _pruned({**current, **status})
        kopf.event(trial, type="Warning", reason="PodCreateFailed", message=reason[:1024])

    async def create_trial(self, body: dict) -> None:
        name = body["metadata"]["name"]
        status = body.pop("status", None)
        created = await self.attempt(f"creating trial {name}", self.custom.create_namespaced_custom_object,
                                     GROUP, VERSION, self.namespace, "trials", body, ok=(409,))
        if isinstance(created, client.ApiException):
            return
        if created is None:
            # Made in an earlier round that was cut short: use it if it is ours.
            created = await self.call(self.custom.get_namespaced_custom_object, GROUP, VERSION,
                                      self.namespace, "trials", name)
            if not planner.TrialView(name, "", created).owned_by(self.uid):
                kopf.event(self.experiment, type="Warning", reason="NameConflict",
                           message=f"trial {name} exists but does not belong to this experiment")
                return
        else:
            telemetry.TRIALS_CREATED.labels(body["metadata"]["labels"].get(planner.L_LAUNCH, "")).inc()
            kopf.event(self.experiment, type="Normal", reason="TrialCreated",
                       message=f"trial {name}: {(status or {}).get('parameterSummary', '')}"[:1024])
        self.trials[name] = created
        self.written.trials[name] = created
        if status and not created.get("status"):
            await self.attempt(f"status of trial {name}", self.custom.patch_namespaced_custom_object_status,
                               GROUP, VERSION, self.namespace, "trials", name, {"status": status}, ok=(404,))
            created["status"] = status
            self.written.trial_status[name] = _pruned(status)


def _api_reason(e: client.ApiException) -> str:
    try:
        return json.loads(e.body).get("message") or str(e.reason)
    except (TypeError, ValueError, AttributeError):
        return f"{e.status} {e.reason}"
